"""A default training round on votes cast with the app's defaults: how long each phase takes.

The app's panes answer with ``SamplingParams()`` (256 new tokens at most), and the bundled
base rarely ends an answer, so most votes hold two 256-token answers. This writes such votes
(both answers sampled by the bundled model through llama.cpp, as the panes do, one vote per
question), then runs each kind's default job on them as the Train tab does
(``diptych train KIND --name NAME --progress jsonl``, no other option), and times every
phase the job reports from its progress lines: load, prepare, eval_before, train,
eval_after, save, drift.

    python bench/round_bench.py [--kinds dpo,kto,sft] [--votes 13] [--json FILE]

SFT trains on the chosen answers (``--chosen``): votes cast by clicking write no answers.
Set DIPTYCH_CACHE to keep the converted weights between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?", "How do bees make honey?",
    "What does a compiler do?", "Who wrote Hamlet?", "How far away is the Moon?",
    "What is photosynthesis?", "How do I boil an egg?", "Why do cats purr?",
    "What is the boiling point of water?", "How does a bicycle stay upright?",
    "What causes the seasons?", "What is a prime number?", "How do vaccines work?",
    "Why is the sea salty?", "What is inflation?",
]


def cast_votes(data_dir: Path, n: int) -> dict:
    """``n`` votes on two answers of the bundled base each, sampled with the panes' defaults."""
    from diptych.models import catalog
    from diptych.models.engine import Engine, SamplingParams
    from diptych.training.store import Store

    model = catalog.bundled_model_path()
    engine = Engine(model)
    tokens, ended, started = [], 0, time.perf_counter()
    try:
        with Store.open(data_dir) as store:
            for i, question in enumerate((QUESTIONS * (n // len(QUESTIONS) + 1))[:n]):
                conversation = store.new_conversation()
                store.add_user_message(conversation, 0, question)
                messages = [{"role": "user", "content": question}]
                ids = []
                for side in ("left", "right"):
                    params = SamplingParams(seed=2 * i + (side == "right"))
                    answer = engine.generate(messages, params)
                    tokens.append(answer.n_tokens)
                    ended += answer.finish_reason == "stop"
                    ids.append(store.add_response(
                        conversation, 0, side, "base" if side == "left" else "tuned", answer.text,
                        model=engine.label, model_path=str(model), model_hash=None, adapter=None,
                        adapter_path=None, adapter_scale=None, template_name=engine.template.name,
                        template_source=None, params=vars(params) | {"stop": []},
                        prompt_messages=messages, n_tokens=answer.n_tokens, ttft_s=answer.ttft_s,
                        tokens_per_s=answer.tokens_per_s, finish_reason=answer.finish_reason))
                store.record_vote(*ids, "left" if i % 2 else "right", blind=False)
    finally:
        engine.close()
    return {"votes": n, "answers": len(tokens), "mean_tokens": round(sum(tokens) / len(tokens), 1),
            "ended": ended, "seconds": round(time.perf_counter() - started, 1)}


def run_job(data_dir: Path, kind: str) -> dict:
    """Run ``kind``'s default job; the seconds of each phase, from its first line to the next."""
    argv = [sys.executable, "-m", "diptych", "--data-dir", str(data_dir), "train", kind,
            "--name", f"bench-{kind}", "--progress", "jsonl"] + (["--chosen"] if kind == "sft" else [])
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks, last = [], None  # (phase, seconds since start) at each change of phase
    for raw in process.stdout:
        line = json.loads(raw)
        if line["phase"] != (marks[-1][0] if marks else None):
            marks.append((line["phase"], time.perf_counter() - started))
        last = line
    err = process.stderr.read()
    if process.wait() != 0 or last is None or last["phase"] != "done":
        raise SystemExit(f"{kind}: the job failed\n{err[-3000:]}")
    total = time.perf_counter() - started
    phases: dict[str, float] = {"start": round(marks[0][1], 1)}  # imports, before the first line
    for (phase, at), (_, until) in zip(marks, marks[1:] + [("end", total)]):
        phases[phase] = round(phases.get(phase, 0) + until - at, 1)
    train = last["metrics"]["train"]
    return {"kind": kind, "seconds": round(total, 1), "phases": phases,
            "steps": train.get("steps"), "s_per_step": train.get("s_per_step"),
            "prepare_seconds": train.get("prepare_seconds"), "data": last["data"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="dpo,kto,sft", help="which default jobs, in order")
    parser.add_argument("--votes", type=int, default=13, help="votes to cast (13: the round measured)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        results = {"votes": cast_votes(data_dir, args.votes)}
        print(json.dumps(results["votes"]), flush=True)
        for kind in args.kinds.split(","):
            results[kind] = run_job(data_dir, kind)
            print(json.dumps(results[kind]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
