"""What training costs: the base weights' first load, our DPO job against plain TRL, GRPO's step,
KTO's and SFT's steps.

    python bench/training_bench.py [--parts abcd] [--steps 10] [--repeats 2]
                                   [--cached-repeats 3] [--grpo-steps 4] [--json FILE]

Quick check: ``python bench/training_bench.py --steps 2 --repeats 1 --cached-repeats 1
--grpo-steps 2``. Every measurement runs in a fresh child process.

(a) Base weights: ``diptych.training.base_weights.load_base`` on the bundled GGUF with an
    empty ``DIPTYCH_CACHE`` (dequantize the GGUF, save safetensors, then load them)
    against the reference, the same call once that cache exists (median of
    ``--cached-repeats``). Imports are timed apart and left out of both. Parts (b) and (c)
    then use that cache; without (a) they use ``$DIPTYCH_CACHE`` or the default cache.

(b) DPO: our job, ``python -m diptych train dpo --data pairs.jsonl --steps N --eval-size 2
    --progress jsonl`` (it also evaluates before and after, and writes the GGUF LoRA),
    against the reference, a plain TRL script with the same configuration: the same
    weights from the cache folder via ``AutoModelForCausalLM.from_pretrained``, the same
    tokenizer and chat template, the same LoRA (the job's ``Config`` defaults: rank,
    alpha, dropout, all linear layers), the same ``DPOConfig`` (beta, the sigmoid + SFT
    loss and weights, learning rate, batch size, max length, seed, steps, no gradient
    checkpointing) and the same 10 training pairs (12 pairs, 2 held out by the job's own
    ``split_eval``). Steps/s times ``trainer.train()`` only: for our job
    ``meta["metrics"]["train"]["seconds"]``, for the script a timer around the call. Also
    shown: seconds a step after the first (the first also warms up kernels and memory,
    and our job's evaluation before training has already warmed some), from when the
    job's per-step progress lines arrive and from a step-end callback in the script.
    Peak RSS is the child's ``ru_maxrss`` from ``os.wait4``. Runs alternate, ``--repeats``
    each; medians shown.

(c) GRPO: a step of our job with its rollouts through llama.cpp (``train grpo --task
    reverse_words --steps N --sampler llama.cpp``) against the reference, the identical
    job with TRL's own generation (``--sampler transformers``: ``GRPOTrainer`` sampling
    with ``transformers.generate``, as a plain TRL script does), in the same run: the
    same weights, LoRA, data, rewards and ``GRPOConfig`` (the job's defaults, bf16
    autocast where the CPU has bf16 instructions). Each runs in a child process that
    records TRL's own profiling timers (``trl.extras.profiling``: TRL only sends them to
    wandb/mlflow/trackio, so the child patches ``ProfilingContext._log_metrics`` to keep
    them), times our ``rollout_func``, and times each optimizer step (a callback's
    ``on_step_begin``/``on_step_end``). A step splits into sampling, rewards, the
    reference model's (and old policy's) log-probs, the rest of TRL's generation phase,
    and optimisation (loss forward, backward, optimizer). Medians over the steps after
    the first. The floor: when training ends, the same child runs a bare forward and
    backward of each step's tokens (prompt + answers as TRL padded them, the mean log-prob
    of the answer tokens through the same fused LM head, same autocast) through the
    trained LoRA model, and nothing else: no sampling, rewards, advantages or optimizer;
    our step over that is how close a GRPO step is to the compute it cannot avoid. Also: a step's answers sampled by llama.cpp in one batch (``GroupSampler``)
    against the reference, the same answers one after another through a pane's
    ``Engine``: tokens per second.

(d) KTO and SFT: our jobs (``train kto`` and ``train sft --chosen --data pairs.jsonl``, which read
    the pairs as 24 labelled answers and 12 answers) with bf16 autocast where the CPU has
    bf16 instructions, against the reference, the same job with ``--fp32``: seconds a step.

Part (b) also runs our job with ``--fp32`` and shows the held-out pair accuracy and
log-prob margin after training for both, so a faster step is not bought with accuracy.

Defaults take about 8 minutes on two CPU cores: (a) about 1.5 minutes, (b) 4 runs of
about 0.5-1 minute, (c) about 2.5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Twelve questions, each with a direct answer preferred to a question asked back.
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "What is the capital of Spain?"),
    ("How many legs does a spider have?", "A spider has eight legs.", "How many legs does an ant have?"),
    ("What color is the sky?", "The sky is blue.", "Why is the sky blue?"),
    ("Name a yellow fruit.", "A banana is yellow.", "Which fruits are red?"),
    ("What is two plus three?", "Two plus three is five.", "What is two plus four?"),
    ("Who wrote Hamlet?", "Shakespeare wrote Hamlet.", "Who wrote Macbeth?"),
    ("What do bees make?", "Bees make honey.", "Do bees sting?"),
    ("Which planet is closest to the Sun?", "Mercury is closest to the Sun.", "Which planet is largest?"),
    ("How many days are in a week?", "A week has seven days.", "How many days are in a month?"),
    ("What animal says moo?", "A cow says moo.", "What animal says woof?"),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "What is the opposite of big?"),
    ("Where do penguins live?", "Most penguins live in the Southern Hemisphere, many in Antarctica.",
     "Where do polar bears live?"),
]


def pair_records() -> list[dict]:
    """PAIRS as preference pairs in TRL's conversational format."""
    return [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": b}]} for q, a, b in PAIRS]


def write_pairs(path: Path) -> Path:
    """``pair_records()`` as JSON lines at ``path``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_records()), encoding="utf-8")
    return path


LOAD_CHILD = r"""
import json, time
t0 = time.perf_counter()
from diptych.models.catalog import bundled_model_path
from diptych.training.base_weights import load_base
imports = time.perf_counter() - t0
t0 = time.perf_counter()
load_base(bundled_model_path())
print(json.dumps({"import_s": imports, "load_s": time.perf_counter() - t0}))
"""

PLAIN_DPO_CHILD = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer
step_ends = []
class StepEnds(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        step_ends.append(time.perf_counter())
t0 = time.perf_counter()
tokenizer = AutoTokenizer.from_pretrained(cfg["weights"])
tokenizer.chat_template = cfg["template"]
tokenizer.add_bos_token = False
model = AutoModelForCausalLM.from_pretrained(cfg["weights"], dtype=torch.float32)
cuda = torch.cuda.is_available()
args = DPOConfig(
    output_dir=cfg["out"], save_strategy="no", report_to="none", logging_steps=1,
    disable_tqdm=True, per_device_train_batch_size=cfg["batch_size"],
    learning_rate=cfg["lr"], max_steps=cfg["steps"], seed=cfg["seed"], use_cpu=not cuda,
    bf16=cuda and torch.cuda.is_bf16_supported(), gradient_checkpointing=False,
    beta=cfg["beta"], max_length=cfg["max_length"], loss_type=["sigmoid", "sft"],
    loss_weights=[1.0, cfg["sft_weight"]],
)
lora = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                  target_modules=cfg["lora_targets"], task_type="CAUSAL_LM")
pairs = [json.loads(line) for line in open(cfg["data"], encoding="utf-8")]
t1 = time.perf_counter()
trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                     processing_class=tokenizer, peft_config=lora, callbacks=[StepEnds()])
prepare_s = time.perf_counter() - t1
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
result = trainer.train()
print(json.dumps({"train_s": time.perf_counter() - t0, "steps": result.global_step,
                  "load_s": load_s, "prepare_s": prepare_s, "step_ends": step_ends}))
"""

GRPO_CHILD = r"""
import json, sys, time
from transformers import TrainerCallback
from trl.extras import profiling
from diptych import cli
from diptych.training import job

out_path, argv = sys.argv[1], sys.argv[2:]
events, steps, logged = [], [], []

def keep(self, duration):  # TRL's profiling timers, kept instead of sent to a tracker
    end = time.perf_counter()
    events.append({"name": self.name.split(".", 1)[-1], "start": end - duration, "end": end})

profiling.ProfilingContext._log_metrics = keep

from diptych.training import rollouts
sample = rollouts.LlamaCppRollouts.__call__
def timed(self, *a, **k):  # our sampler, timed like TRL's own generate
    t0 = time.perf_counter()
    try:
        return sample(self, *a, **k)
    finally:
        events.append({"name": "rollout_func", "start": t0, "end": time.perf_counter()})
rollouts.LlamaCppRollouts.__call__ = timed

from trl import GRPOTrainer
batches, floor = [], []
compute_loss = GRPOTrainer.compute_loss
def kept(self, model, inputs, *a, **k):  # each step's tokens, for the floor below
    batches.append({k: inputs[k].detach().clone() for k in
                    ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")})
    return compute_loss(self, model, inputs, *a, **k)
GRPOTrainer.compute_loss = kept

def bare_step(model, args, batch):
    # The floor: one plain LoRA forward and backward of the same padded tokens, the loss
    # on the answer tokens through the same fused LM head the step uses, same autocast.
    import torch
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :batch["prompt_ids"].size(1)] = -100
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0

class StepTimer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()
    def on_step_end(self, args, state, control, **kwargs):
        steps.append({"start": self.t0, "end": time.perf_counter()})
    def on_log(self, args, state, control, logs=None, **kwargs):
        logged.append(dict(logs or {}))
    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.train()
        for batch in batches[1:]:  # the steps the medians count
            floor.append(bare_step(model, args, batch))

init = job.Job.__init__
def patched(self, *a, **k):
    init(self, *a, **k)
    self.callbacks.append(StepTimer())
job.Job.__init__ = patched

code = cli.main(argv)
with open(out_path, "w") as f:
    json.dump({"code": code, "events": events, "steps": steps, "logs": logged, "floor": floor}, f)
sys.exit(code)
"""


def child(argv: list[str], env: dict, log) -> tuple[list, float, int, int]:
    """Run a child; (its stdout lines with their arrival times, wall seconds, peak RSS in
    bytes, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    out = [(time.perf_counter(), line) for line in proc.stdout if line.strip()]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    return out, time.perf_counter() - t0, usage.ru_maxrss * 1024, proc.returncode


def checked(result, what: str, log_path: Path):
    out, wall, rss, code = result
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{what} failed with exit code {code}:\n{tail}")
    return out, wall, rss


def last_json(lines: list) -> dict:
    return json.loads(lines[-1][1])


def median(values):
    return statistics.median(values) if values else None


def steady(step_ends: list[float]) -> float | None:
    """Seconds a step after the first one (which also warms up kernels and allocations)."""
    return (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1) if len(step_ends) > 1 else None


# -- (a) -----------------------------------------------------------------------------------

def part_a(cache: Path, env: dict, log, log_path: Path, repeats: int) -> dict:
    env = {**env, "DIPTYCH_CACHE": str(cache)}
    runs = []
    for i in range(1 + repeats):
        out, wall, rss = checked(child([sys.executable, "-c", LOAD_CHILD], env, log),
                                 "load_base", log_path)
        runs.append({**last_json(out), "rss": rss})
    first, cached = runs[0], runs[1:]
    result = {"first_s": first["load_s"], "cached_s": median([r["load_s"] for r in cached]),
              "import_s": median([r["import_s"] for r in runs]),
              "first_rss": first["rss"], "cached_rss": median([r["rss"] for r in cached])}
    print(f"(a) base weights: first load {result['first_s']:.1f} s (dequantize + save + load), "
          f"cached load {result['cached_s']:.1f} s (reference, median of {repeats}); "
          f"imports ({result['import_s']:.1f} s) not counted")
    print(f"    ratio first/cached: {result['first_s'] / result['cached_s']:.1f}; peak RSS "
          f"{result['first_rss'] / 2**20:.0f} vs {result['cached_rss'] / 2**20:.0f} MiB")
    return result


# -- (b) -----------------------------------------------------------------------------------

def part_b(work: Path, env: dict, log, log_path: Path, args) -> dict:
    from diptych.models import catalog
    from diptych.models.catalog import bundled_model_path
    from diptych.training.dpo import Config
    from diptych.training.job import split_eval

    cfg = Config()
    batch_size = args.batch_size or cfg.batch_size
    max_length = args.max_length or cfg.max_length
    data = write_pairs(work / "pairs.jsonl")
    train_pairs, _, _ = split_eval(pair_records(), 2, cfg.seed)  # what our job trains on
    train_data = work / "train.jsonl"
    train_data.write_text("".join(json.dumps(r) + "\n" for r in train_pairs), encoding="utf-8")

    # The weights folder our job loads: make sure it exists, then hand it to the script.
    probe = ("import sys; from diptych.models.catalog import bundled_model_path as b; "
             "from diptych.training.base_weights import ensure_cached; print(ensure_cached(b()))")
    out, _, _ = checked(child([sys.executable, "-c", probe], env, log), "ensure_cached", log_path)
    weights = out[-1][1].strip()
    model = bundled_model_path()
    plain_cfg = {
        "weights": weights, "template": catalog.read_info(model).default_template().source,
        "data": str(train_data), "out": str(work / "plain-out"), "steps": args.steps,
        "batch_size": batch_size, "max_length": max_length, "lr": cfg.lr, "seed": cfg.seed,
        "beta": cfg.beta, "sft_weight": cfg.sft_weight, "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha or 2 * cfg.lora_r, "lora_dropout": cfg.lora_dropout,
        "lora_targets": cfg.lora_targets,
    }
    ours, ours_fp32, plain = [], [], []
    for i in range(args.repeats):  # alternate, so noise on this machine hits both alike
        for rows, extra in ((ours, []), (ours_fp32, ["--fp32"])):
            home = work / f"home-{i}{''.join(extra)}"
            command = [sys.executable, "-m", "diptych", "--data-dir", str(home), "train", "dpo",
                       "--name", f"bench-{i}", "--data", str(data), "--steps", str(args.steps),
                       "--batch-size", str(batch_size), "--max-length", str(max_length),
                       "--eval-size", "2", "--no-drift", "--progress", "jsonl", *extra]
            out, wall, rss = checked(child(command, env, log), "our DPO job", log_path)
            metrics = last_json(out)["metrics"]
            train = metrics["train"]
            step_ends = [t for t, line in out if json.loads(line)["phase"] == "train"
                         and json.loads(line)["step"]]
            rows.append({"steps": train["steps"], "train_s": train["seconds"],
                         "prepare_s": train.get("prepare_seconds", 0.0),
                         "steady_s_per_step": steady(step_ends), "wall_s": wall, "rss": rss,
                         "held_out_accuracy": metrics["after"]["pair_accuracy"],
                         "held_out_margin": metrics["after"]["margin"]})
        out, wall, rss = checked(
            child([sys.executable, "-c", PLAIN_DPO_CHILD, json.dumps(plain_cfg)], env, log),
            "plain TRL DPO", log_path)
        result = last_json(out)
        plain.append({**result, "steady_s_per_step": steady(result.pop("step_ends")),
                      "wall_s": wall, "rss": rss})

    def summary(rows):
        return {"steps_per_s": median([r["steps"] / r["train_s"] for r in rows]),
                # with the trainer's set-up: tokenizing, and our job's reference log-probs
                "steps_per_s_with_setup": median([r["steps"] / (r["train_s"] + r["prepare_s"])
                                                  for r in rows]),
                "s_per_step": median([r["train_s"] / r["steps"] for r in rows]),
                "steady_s_per_step": median([r["steady_s_per_step"] for r in rows
                                             if r["steady_s_per_step"] is not None]),
                "wall_s": median([r["wall_s"] for r in rows]),
                "peak_rss": median([r["rss"] for r in rows]), "runs": rows}

    result = {"ours": summary(ours), "ours_fp32": summary(ours_fp32), "plain": summary(plain),
              "steps": args.steps, "batch_size": batch_size, "max_length": max_length,
              "train_pairs": len(train_pairs), "cpu_bf16": _cpu_bf16()}
    o, p = result["ours"], result["plain"]
    for key in ("ours", "ours_fp32"):
        rows = result[key]["runs"]
        result[key]["held_out_accuracy"] = median([r["held_out_accuracy"] for r in rows])
        result[key]["held_out_margin"] = median([r["held_out_margin"] for r in rows])
    print(f"(b) DPO, {args.steps} steps of batch {batch_size} on {len(train_pairs)} pairs, "
          f"max length {max_length}, median of {args.repeats}; our job autocasts to bf16: "
          f"{'yes' if result['cpu_bf16'] else 'no (no bf16 instructions: fp32)'}")
    for label, row in (("our job (diptych train dpo)", o), ("our job, --fp32", result["ours_fp32"]),
                       ("plain TRL script (reference)", p)):
        after = row["steady_s_per_step"]
        print(f"    {label:30s} {row['steps_per_s']:.3f} steps/s ({row['s_per_step']:.2f} s/step"
              + (f"; {after:.2f} after the first" if after else "") + "), "
              f"peak RSS {row['peak_rss'] / 2**20:6.0f} MiB, whole process {row['wall_s']:.0f} s")
    for label, key in (("our job", "ours"), ("our job, --fp32", "ours_fp32")):
        row = result[key]
        print(f"    held-out pairs after training, {label:16s} accuracy {row['held_out_accuracy']:.2f}, "
              f"log-prob margin {row['held_out_margin']:+.3f}")
    print(f"    counting the trainer's set-up (tokenizing; our job also computes the reference "
          f"log-probs once there): ours {o['steps_per_s_with_setup']:.3f} steps/s, --fp32 "
          f"{result['ours_fp32']['steps_per_s_with_setup']:.3f}, plain {p['steps_per_s_with_setup']:.3f}: "
          f"ratio ours/plain {o['steps_per_s_with_setup'] / p['steps_per_s_with_setup']:.2f}")
    print(f"    ratio ours/plain: steps/s {o['steps_per_s'] / p['steps_per_s']:.2f}"
          + (f" ({p['steady_s_per_step'] / o['steady_s_per_step']:.2f} after the first step)"
             if o["steady_s_per_step"] and p["steady_s_per_step"] else "")
          + f", peak RSS {o['peak_rss'] / p['peak_rss']:.2f}, "
          f"whole process {o['wall_s'] / p['wall_s']:.2f}")
    return result


def _cpu_bf16() -> bool:
    from diptych.training.job import cpu_has_bf16

    return cpu_has_bf16()


# -- (d) -----------------------------------------------------------------------------------

def part_d(work: Path, env: dict, log, log_path: Path, args) -> dict:
    """KTO and SFT: seconds a step of our jobs on the same pairs, with bf16 autocast where
    the CPU has it and with --fp32 (the reference)."""
    data = write_pairs(work / "pairs-d.jsonl")
    result = {}
    print(f"(d) KTO (24 labelled answers) and SFT (12 answers), {args.steps} steps of batch 4, "
          f"median of {args.repeats}")
    for kind in ("kto", "sft"):
        runs = {"bf16": [], "fp32": []}
        for i in range(args.repeats):
            for label, extra in (("bf16", []), ("fp32", ["--fp32"])):
                home = work / f"home-{kind}-{label}-{i}"
                command = [sys.executable, "-m", "diptych", "--data-dir", str(home), "train", kind,
                           "--name", "bench", "--data", str(data), "--steps", str(args.steps),
                           "--batch-size", "4", "--eval-size", "2", "--no-drift",
                           "--progress", "jsonl", *(["--chosen"] if kind == "sft" else []), *extra]
                out, wall, rss = checked(child(command, env, log), f"our {kind} job", log_path)
                metrics = last_json(out)["metrics"]
                step_ends = [t for t, line in out if json.loads(line)["phase"] == "train"
                             and json.loads(line)["step"]]
                runs[label].append({"s_per_step": metrics["train"]["s_per_step"],
                                    "steady_s_per_step": steady(step_ends), "after": metrics["after"]})
        result[kind] = {label: {"s_per_step": median([r["s_per_step"] for r in rows]),
                                "steady_s_per_step": median([r["steady_s_per_step"] for r in rows
                                                             if r["steady_s_per_step"] is not None]),
                                "runs": rows} for label, rows in runs.items()}
        b, f = result[kind]["bf16"], result[kind]["fp32"]
        print(f"    {kind}: {b['s_per_step']:.2f} s/step with bf16 autocast, {f['s_per_step']:.2f} with "
              f"--fp32 (reference): {f['s_per_step'] / b['s_per_step']:.2f}x")
    return result


# -- (c) -----------------------------------------------------------------------------------

def _inside(event: dict, spans: list[dict]) -> bool:
    return any(s["start"] <= event["start"] and event["end"] <= s["end"] for s in spans)


def step_split(profile: dict) -> list[dict]:
    """Per optimizer step: its wall time and what TRL's timers say it was spent on."""
    events = profile["events"]
    prepare = [e for e in events if e["name"] == "_prepare_inputs"]
    rows = []
    for step in profile["steps"]:
        mine = [e for e in events if _inside(e, [step])]
        gen_spans = [e for e in mine if e["name"] == "_prepare_inputs"]
        seconds = lambda name, inside=None: sum(  # noqa: E731
            e["end"] - e["start"] for e in mine if e["name"] == name
            and (inside is None or _inside(e, gen_spans) == inside))
        total = step["end"] - step["start"]
        generation = seconds("_prepare_inputs")
        rows.append({
            "step_s": total, "generation_s": generation,
            "sampling_s": seconds("transformers.generate") + seconds("rollout_func"),
            "rewards_s": seconds("_calculate_rewards"),
            "ref_logps_s": seconds("_get_per_token_logps_and_entropies", inside=True),
            "optimisation_s": total - generation, "loss_forward_s": seconds("compute_loss"),
        })
    assert len(prepare) >= len(rows), "TRL's profiling timers did not fire"
    return rows


def grpo_run(work: Path, env: dict, log, log_path: Path, args, sampler: str) -> dict:
    """One GRPO job of ``args.grpo_steps`` steps with ``sampler``; its per-step split."""
    profile_path = work / f"grpo-profile-{sampler}.json"
    argv = ["--data-dir", str(work / f"grpo-home-{sampler}"), "train", "grpo", "--name", "bench-grpo",
            "--task", "reverse_words", "--steps", str(args.grpo_steps), "--eval-every", "100000",
            "--eval-size", "1", "--no-drift", "--sampler", sampler, "--progress", "jsonl",
            *shlex.split(args.grpo_args)]
    checked(child([sys.executable, "-c", GRPO_CHILD, str(profile_path), *argv], env, log),
            f"the GRPO job with {sampler}", log_path)
    profile = json.loads(profile_path.read_text(encoding="utf-8"))
    rows = step_split(profile)[1:]  # the first step also warms up kernels and allocations
    lengths = [entry["completions/mean_length"] for entry in profile["logs"]
               if "completions/mean_length" in entry][1:]
    med = {k: median([r[k] for r in rows]) for k in rows[0]}
    return {"median": med, "per_step": rows, "mean_completion_tokens": median(lengths),
            "floor_s": median(profile["floor"])}


def batched_vs_sequential(num_generations: int, prompts: int, max_tokens: int,
                          temperature: float) -> dict:
    """Sample a step's answers with the batched GroupSampler and, as the reference, one answer
    after another with a pane's Engine (same settings, all cores): tokens per second."""
    import random

    from diptych.models.catalog import bundled_model_path
    from diptych.models.engine import Engine, SamplingParams
    from diptych.models.group_sampler import GroupSampler, GroupSampling
    from diptych.training.tasks import reverse_words_examples

    cores = len(os.sched_getaffinity(0))
    engine = Engine(bundled_model_path(), n_ctx=512, n_threads=cores)
    examples = reverse_words_examples(prompts, random.Random(0))
    sampler = GroupSampler(engine, n_seq=num_generations * prompts)
    ids = [engine.tokenize(engine.render(e["prompt"])) for e in examples]
    t0 = time.perf_counter()
    groups = sampler.sample(ids, num_generations,
                            GroupSampling(temperature=temperature, max_tokens=max_tokens))
    batched_s = time.perf_counter() - t0
    batched_tokens = sum(len(s.ids) for g in groups for s in g)
    sampler.close()
    t0, tokens = time.perf_counter(), 0
    for i in range(num_generations * prompts):
        params = SamplingParams(temperature=temperature, top_p=1.0, top_k=0, min_p=0.0,
                                repeat_penalty=1.0, max_tokens=max_tokens, seed=i)
        tokens += engine.generate(examples[i // num_generations]["prompt"], params).n_tokens
    sequential_s = time.perf_counter() - t0
    engine.close()
    return {"batched_tok_s": batched_tokens / batched_s, "sequential_tok_s": tokens / sequential_s,
            "answers": num_generations * prompts}


def part_c(work: Path, env: dict, log, log_path: Path, args) -> dict:
    """Our GRPO step (llama.cpp rollouts) against TRL's own generation, identical configuration."""
    from diptych.training.grpo import Config
    from diptych.training.job import cpu_has_bf16

    cfg = Config()
    runs = {sampler: grpo_run(work, env, log, log_path, args, sampler)
            for sampler in ("llama.cpp", "transformers")}
    ours, plain = runs["llama.cpp"]["median"], runs["transformers"]["median"]
    print(f"(c) GRPO reverse_words, {args.grpo_steps} steps of {cfg.batch_size} answers "
          f"({cfg.num_generations} per prompt, at most {cfg.max_completion_length} tokens, "
          f"temperature {cfg.temperature}, beta {cfg.beta}, bf16 autocast "
          f"{'on' if cpu_has_bf16() else 'off'}); median per step after the first")
    for label, sampler, m in (("ours: llama.cpp rollouts", "llama.cpp", ours),
                              ("plain TRL: transformers.generate", "transformers", plain)):
        print(f"    {label:33s} step {m['step_s']:5.2f} s = sampling {m['sampling_s']:5.2f} "
              f"+ rewards {m['rewards_s']:.3f} + ref/old log-probs {m['ref_logps_s']:4.2f} "
              f"+ rest of generation {m['generation_s'] - m['sampling_s'] - m['rewards_s'] - m['ref_logps_s']:4.2f} "
              f"+ optimisation {m['optimisation_s']:5.2f} s "
              f"({runs[sampler]['mean_completion_tokens']:.0f} tokens an answer)")
    print(f"    ratio ours/plain: step {ours['step_s'] / plain['step_s']:.2f} "
          f"(goal <= 0.33), sampling {ours['sampling_s'] / plain['sampling_s']:.2f}")
    floor = runs["llama.cpp"]["floor_s"]
    print(f"    the floor, a bare LoRA forward + backward of the same tokens: {floor:.2f} s; "
          f"our step / floor {ours['step_s'] / floor:.2f} (goal <= 1.3), "
          f"its optimisation / floor {ours['optimisation_s'] / floor:.2f}")
    batch = batched_vs_sequential(cfg.num_generations, cfg.batch_size // cfg.num_generations,
                                  cfg.max_completion_length, cfg.temperature)
    print(f"    llama.cpp, a step's {batch['answers']} answers in one batch: "
          f"{batch['batched_tok_s']:.0f} tok/s; one after another (reference): "
          f"{batch['sequential_tok_s']:.0f} tok/s; ratio {batch['batched_tok_s'] / batch['sequential_tok_s']:.2f}")
    return {"config": {"batch_size": cfg.batch_size, "num_generations": cfg.num_generations,
                       "max_completion_length": cfg.max_completion_length,
                       "temperature": cfg.temperature, "beta": cfg.beta, "bf16": cpu_has_bf16()},
            "runs": runs, "ratio_step": ours["step_s"] / plain["step_s"], "batching": batch,
            "ratio_floor": ours["step_s"] / runs["llama.cpp"]["floor_s"],
            "ratio_sampling": ours["sampling_s"] / plain["sampling_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="abcd", help="which measurements: any of a, b, c, d")
    parser.add_argument("--cached-repeats", type=int, default=3, help="(a) cached loads")
    parser.add_argument("--steps", type=int, default=10, help="(b) DPO optimizer steps")
    parser.add_argument("--repeats", type=int, default=2, help="(b) runs of each side")
    parser.add_argument("--batch-size", type=int, help="(b) default: the job's")
    parser.add_argument("--max-length", type=int, help="(b) default: the job's")
    parser.add_argument("--grpo-steps", type=int, default=4, help="(c) GRPO optimizer steps per run")
    parser.add_argument("--grpo-args", default="", help="(c) more options for the GRPO job")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="diptych-training-bench-") as tmp:
        work = Path(tmp)
        log_path = work / "children.log"
        with open(log_path, "w", encoding="utf-8") as log:
            if "a" in args.parts:
                cache = work / "cache"
                results["a"] = part_a(cache, env, log, log_path, args.cached_repeats)
                env["DIPTYCH_CACHE"] = str(cache)
            if "b" in args.parts:
                results["b"] = part_b(work, env, log, log_path, args)
            if "c" in args.parts:
                results["c"] = part_c(work, env, log, log_path, args)
            if "d" in args.parts:
                results["d"] = part_d(work, env, log, log_path, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
