"""The jobs on a CUDA GPU against the same jobs on the CPU, and the parity of an adapter
trained on the GPU as llama.cpp runs it.

    python bench/cuda_check.py [--model FILE.gguf] [--steps 4] [--grpo-steps 2] [--json FILE]

Runs, each in a fresh child process (``python -m diptych train ...``, the command the app
runs), once on the GPU and once with ``CUDA_VISIBLE_DEVICES=""`` on the CPU:

- ``train dpo`` on 12 preference pairs (``--steps``, batch 4),
- ``train reward`` on the same pairs (``--steps``),
- ``train grpo --task length`` (``--grpo-steps``; on CUDA TRL's own generation samples,
  on the CPU llama.cpp: each job's ``auto`` sampler),

and prints seconds a step for each (``meta.json``: ``metrics.train.s_per_step``, the
trainer's own loop only) and the CPU/GPU ratio. Then the parity check of
``tests/test_export_gguf.py`` on the GPU-trained DPO adapter: PEFT on the dequantized base
(on the CPU, fp32) against llama.cpp running the Q4_K_M base with the exported GGUF LoRA,
mean per-token KL over a chat: ``KL_lora <= 2 * KL_base + 0.01``.

Without a GPU it says so and exits 1 (``--allow-cpu`` runs the CPU half and the parity
check alone: a check of this script; with a tiny model from ``tests/tiny_models.py`` it
takes 20 s on two cores). Not yet run on a GPU: expect a few minutes for the bundled
model, most of it the CPU half, the jobs' imports and the first conversion of the GGUF.
On a GPU machine: ``python bench/cuda_check.py --json cuda_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training_bench import write_pairs  # the training benchmark's twelve pairs

TEXT = [{"role": "user", "content": "Write one sentence about the sea."},
        {"role": "assistant", "content": "The sea is wide and deep, and its waves never stop moving."}]


def job(kind: str, extra: list[str], device: str, work: Path, model: str | None) -> dict:
    """Run one job on ``device`` ("cuda" or "cpu"); its meta.json plus the wall time."""
    env = {**os.environ, "DIPTYCH_CACHE": str(work / "cache")}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    name = f"{kind}-{device}"
    argv = [sys.executable, "-m", "diptych", "--data-dir", str(work / "home"), "train", kind,
            "--name", name, "--progress", "jsonl", *extra] + (["--model", model] if model else [])
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    meta = json.loads((work / "home" / "adapters" / name / "meta.json").read_text())
    sampler = meta.get("data", {}).get("sampler")
    print(f"{name:12} {meta['metrics']['train']['s_per_step']:7.2f} s/step  "
          f"({wall:.0f} s in all{', sampler ' + sampler if sampler else ''})", flush=True)
    return {"s_per_step": meta["metrics"]["train"]["s_per_step"], "wall_s": round(wall, 1),
            "sampler": sampler, "folder": str(work / "home" / "adapters" / name)}


def _log_softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _kl(p, q) -> float:
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def parity(folder: Path, model_path: Path, work: Path) -> dict:
    """PEFT (CPU, fp32) vs llama.cpp + the adapter's GGUF LoRA, as tests/test_export_gguf.py."""
    os.environ["DIPTYCH_CACHE"] = str(work / "cache")
    import torch
    from diptych.models import native
    from peft import PeftModel

    from diptych.training.base_weights import load_base

    model, tokenizer = load_base(model_path)
    peft_model = PeftModel.from_pretrained(model, folder).eval()
    ids = tokenizer.apply_chat_template(TEXT, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        x = torch.tensor([ids])
        pt_lora = _log_softmax(peft_model(input_ids=x).logits[0].double().numpy())
        with peft_model.disable_adapter():
            pt_base = _log_softmax(peft_model(input_ids=x).logits[0].double().numpy())

    def cpp(lora=None):
        llama = native.llama(model_path, n_ctx=256, logits_all=True, verbose=False,
                      **({"lora_path": str(lora)} if lora else {}))
        try:
            llama.eval(ids)
            return _log_softmax(llama.scores[: len(ids)])
        finally:
            llama.close()

    kl_base, kl_lora = _kl(cpp(), pt_base), _kl(cpp(folder / "adapter.gguf"), pt_lora)
    effect = _kl(pt_lora, pt_base)
    ok = kl_lora <= 2 * kl_base + 0.01
    print(f"parity: KL base {kl_base:.4f}, KL lora {kl_lora:.4f} (limit {2 * kl_base + 0.01:.4f}), "
          f"LoRA effect {effect:.4f}: {'ok' if ok else 'FAILED'}", flush=True)
    return {"kl_base": kl_base, "kl_lora": kl_lora, "effect": effect, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a base GGUF (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=4, help="DPO and reward steps")
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--allow-cpu", action="store_true", help="without a GPU, run the CPU half")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()

    import torch

    from diptych.models.catalog import bundled_model_path

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA: "
          f"{torch.cuda.get_device_name(0) if cuda else 'none'}", flush=True)
    if not cuda and not args.allow_cpu:
        print("no CUDA device: nothing to compare (--allow-cpu checks the script on the CPU)")
        return 1
    model_path = Path(args.model or bundled_model_path()).resolve()
    devices = ["cuda", "cpu"] if cuda else ["cpu"]
    with tempfile.TemporaryDirectory(prefix="diptych-cuda-") as tmp:
        work = Path(tmp)
        pairs = write_pairs(work / "pairs.jsonl")
        runs = {
            "dpo": ["--data", str(pairs), "--steps", str(args.steps), "--eval-size", "2", "--no-drift"],
            "reward": ["--data", str(pairs), "--steps", str(args.steps), "--eval-size", "2"],
            "grpo": ["--task", "length", "--steps", str(args.grpo_steps), "--eval-size", "2",
                     "--no-drift"],
        }
        model = str(model_path) if args.model else None
        results: dict = {"model": str(model_path), "device": torch.cuda.get_device_name(0) if cuda else None}
        for kind, extra in runs.items():
            results[kind] = {device: job(kind, extra, device, work, model) for device in devices}
            if cuda:
                ratio = results[kind]["cpu"]["s_per_step"] / max(results[kind]["cuda"]["s_per_step"], 1e-9)
                results[kind]["cpu_over_cuda"] = round(ratio, 2)
                print(f"{kind}: the CPU takes {ratio:.1f}x the GPU's time a step", flush=True)
        trained = Path(results["dpo"][devices[0]]["folder"])
        results["parity"] = parity(trained, model_path, work)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if results["parity"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
