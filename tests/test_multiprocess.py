"""``accelerate launch --multi_gpu --num_processes 2 -m diptych train dpo ...`` on a machine
without a GPU: two CPU processes (gloo) train one adapter. Rank 0 alone reports and writes:
one progress stream, one adapter folder, and a loss close to one process training on the
same global batch.

(``accelerate launch --num_processes 2 --cpu`` starts one process, not two: accelerate's
plain launcher starts several CPU processes only through ``mpirun``. ``--multi_gpu`` starts
them through torchrun, and on a machine without CUDA they join with gloo on the CPU.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402

from helpers import QA  # noqa: E402


def _job(argv: list[str], env: dict) -> list[dict]:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]  # nothing but JSON lines


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not on PATH")
def test_two_processes_train_one_adapter(tmp_path, weights_cache):
    model = tiny_models.build("qwen2", tmp_path / "tiny.gguf")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
        "rejected": [{"role": "assistant", "content": b}]}) + "\n" for q, a, b in QA))
    home = tmp_path / "home"
    env = {**os.environ, "DIPTYCH_CACHE": str(weights_cache), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, on a GPU machine too
    # 8 pairs: 6 train, 2 held out; one step sees all 6 (batch 6, or 3 on each of 2 processes)
    common = ["--data-dir", str(home), "train", "dpo", "--model", str(model), "--data", str(pairs),
              "--steps", "2", "--eval-size", "2", "--no-drift", "--progress", "jsonl"]
    single = _job([sys.executable, "-m", "diptych", *common, "--name", "single",
                   "--batch-size", "6"], env)
    multi = _job(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no",
                  "-m", "diptych", *common, "--name", "multi", "--batch-size", "3"], env)

    assert multi[0]["phase"] == "load" and multi[0]["processes"] == 2
    assert single[0]["processes"] == 1
    # one stream: each phase and step once, as from a single process
    phases = [(line["phase"], line["step"]) for line in multi]
    assert phases == [(line["phase"], line["step"]) for line in single]
    assert phases[-1] == ("done", None)
    # one adapter, written whole by rank 0; nothing left by the other rank
    assert sorted(p.name for p in (home / "adapters").iterdir()) == ["multi", "single"]
    folder = home / "adapters" / "multi"
    assert {"adapter_model.safetensors", "adapter.gguf", "meta.json"} <= {p.name for p in folder.iterdir()}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["name"] == "multi" and meta["metrics"]["train"]["steps"] == 2
    # the same global batch gives about the same loss
    losses = [[line["loss"] for line in run if line["phase"] == "train" and line["step"]]
              for run in (single, multi)]
    print(f"\nloss per step: one process {losses[0]}, two processes {losses[1]}")
    for one, two in zip(*losses):
        assert abs(one - two) <= 0.05 * abs(one), losses
