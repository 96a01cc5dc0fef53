"""The closed loop: does RL on a user's votes redirect the model, and what does a round cost?

    python bench/loop.py [--rounds 3] [--prompts 16] [--held-out 16] [--samples 2]
                         [--max-tokens 128] [--steps N] [--job-args "..."]
                         [--grpo-steps N] [--grpo-args "..."] [--skip-grpo] [--mode retrain|continue]
                         [--json FILE]

Quick check: ``python bench/loop.py --rounds 1 --prompts 4 --held-out 2 --samples 1
--max-tokens 32 --steps 2 --grpo-steps 1 --grpo-args "--eval-size 2 --max-prompts 2"``.

The user is a script with a fixed taste. An answer scores (``taste``):

- +2 if it ended by itself (finish reason ``stop``, not the token limit) with some words;
- +1 if it does not contain the prompt's own text (compared lower-case, punctuation dropped);
- +1 if it does not end with ``?``;
- + the share of its sentences (split after ``.!?`` and at line breaks) that are not
  questions, 0 to 1.

An empty answer scores 0. The higher score wins the vote; equal scores (to 3 decimals)
are a tie. So the user prefers answers that end by themselves and do not ask back.

Prompts: ``diptych/training/data/questions.txt`` shuffled with ``random.Random(0)``;
the first ``--prompts`` are the training prompts, the last ``--held-out`` the held-out
ones (disjoint; their sum may not exceed the file's 70 lines).

Each round, exactly as the app would do it:

1. answer: both panes answer every training prompt, each pane in its own thread as in
   the app (``Engine``, one llama.cpp context each, the app's thread count). Left is the
   base, right the tuned engine (the base plus the current adapter; none in round 1).
   Sampling is the app's default ``SamplingParams`` with ``--max-tokens``; the seed is
   fixed per round, prompt and pane (``1_000_000 * round + 2 * prompt + pane``): a
   different seed per pane, else round 1 (no adapter yet) would show two identical
   answers and give no pair.
2. vote: the scripted user votes through the app's own ``Store`` (new_conversation,
   add_user_message, add_response with the same fields the chat controller records,
   record_vote) in the loop's data dir.
3. train: ``python -m diptych --data-dir DIR train dpo --name loop-round<N> --progress
   jsonl [--steps N] [job args]``, the command the Train tab runs, as a subprocess. With
   ``--mode retrain`` (the default) every round trains a fresh adapter from the base on
   all votes so far (the job's own defaults otherwise: it holds out a fifth of the pairs
   for its before/after numbers). With ``--mode continue``, from the second round on,
   the job continues the last round's adapter on that round's votes only (``--from
   loop-round<N-1> --new-votes``, what the Train tab's Continue… sets up), so a round's
   cost does not grow with the votes.
   A round with no pair yet skips training and keeps the previous adapter.
4. load: ``Engine.set_adapter`` on the tuned engine, as "Use in tuned pane" does.
5. judge: the tuned engine answers the held-out prompts ``--samples`` times each, with
   seed ``900_000 + 1000 * sample + prompt``; the base's answers with the same seeds are
   made once before round 1 (the base does not change). The scripted user compares
   each pair.

Reported per round: the tuned model's win rate over the base on held-out prompts (a tie
counts half) with its 95% Wilson interval (``diptych.training.winrates.wilson``), how
often each model's held-out answers ended by themselves, the KL from the base (the
adapter's ``meta.json``: ``drift.held_out.kl`` when the job measured it, else the job's
``metrics.after.kl`` on its held-out pairs), and the wall-clock seconds of each phase.
The reference, row 0, is measured in the same run: the base against a second sample of
the base (the tuned engine with no adapter, seeds shifted by 500): what "no change"
looks like with this many samples, about 0.5.

Then GRPO on the reverse task: ``diptych train grpo --name loop-grpo-reverse --task
reverse --progress jsonl [--steps N] [args]``, reporting the mean reward of greedy
answers to held-out sentences before and after (from the job's done line), its KL, and
the time it took.

Defaults take about 30 minutes on two CPU cores: the base's held-out answers about 2
minutes; 3 rounds of about 5-8 minutes, mostly DPO (the job's 5 epochs over the pairs
so far: about 13, 26 and 38 training pairs; ``--steps`` caps it); GRPO with the job's
defaults about 7 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from diptych.models import catalog
from diptych.models.catalog import bundled_model_path
from diptych.models.engine import Completion, Engine, SamplingParams, default_threads
from diptych.training.store import Store
from diptych.training.tasks import lines
from diptych.training.winrates import wilson

TRAIN_SEED, JUDGE_SEED, REFERENCE_SHIFT = 1_000_000, 900_000, 500


# -- the scripted user ----------------------------------------------------------------

def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def traits(prompt: str, text: str, finish_reason: str) -> dict:
    """What the scripted user looks at in an answer."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    return {"ends": finish_reason == "stop", "repeats": _plain(prompt) in _plain(text),
            "ends_with_question": text.rstrip().endswith("?"),
            "question_share": sum(s.endswith("?") for s in sentences) / max(len(sentences), 1)}


def taste(prompt: str, text: str, finish_reason: str) -> float:
    """The scripted user's score of one answer (see the module docstring)."""
    if not re.search(r"\w", text):
        return 0.0
    t = traits(prompt, text, finish_reason)
    score = 2.0 * t["ends"] + (not t["repeats"]) + (not t["ends_with_question"])
    return round(score + 1 - t["question_share"], 3)


def verdict(prompt: str, left: Completion, right: Completion) -> str:
    a = taste(prompt, left.text, left.finish_reason)
    b = taste(prompt, right.text, right.finish_reason)
    return "left" if a > b else "right" if b > a else "tie"


# -- the panes --------------------------------------------------------------------------

def messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def params(max_tokens: int, seed: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, seed=seed)


def answer(work: list[tuple[Engine, list[tuple[str, SamplingParams]]]]) -> list[list[Completion]]:
    """Each engine answers its own list in its own thread, all engines at once."""
    def run(engine, items):
        return [engine.generate(messages(prompt), p) for prompt, p in items]

    with ThreadPoolExecutor(len(work)) as pool:
        futures = [pool.submit(run, engine, items) for engine, items in work]
        return [f.result() for f in futures]


def record(store: Store, conversation: int, side: str, role: str, engine: Engine,
           prompt: str, p: SamplingParams, done: Completion) -> int:
    """Store an answer with the fields the chat controller records."""
    return store.add_response(
        conversation, 0, side, role, done.text,
        model=engine.info.name, model_path=str(engine.info.path),
        model_hash=catalog.file_hash(engine.info.path), adapter=engine.adapter_name,
        adapter_path=str(engine.adapter_path) if engine.adapter_path else None,
        adapter_scale=engine.adapter_scale if engine.adapter_path else None,
        template_name=engine.template.name, template_source=engine.template.source,
        params={**p.to_dict(), "seed": done.seed}, prompt_messages=messages(prompt),
        n_tokens=done.n_tokens, ttft_s=done.ttft_s, tokens_per_s=done.tokens_per_s,
        finish_reason=done.finish_reason,
    )


# -- jobs -------------------------------------------------------------------------------

def stream_job(data_dir: Path, argv: list[str], log: Path) -> tuple[dict, int]:
    """Run ``diptych train ...`` as the Train tab does, its steps shown on stderr (a job of
    several phases sends train lines without a loss); returns its last line and exit code."""
    command = [sys.executable, "-m", "diptych", "--data-dir", str(data_dir), "train", *argv,
               "--progress", "jsonl"]
    last = {}
    with open(log, "a", encoding="utf-8") as err:
        err.write("$ " + shlex.join(command[1:]) + "\n")
        err.flush()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True) as job:
            for line in job.stdout:
                if line.strip():
                    last = json.loads(line)
                    if last["phase"] in ("train", "stage") and last.get("step"):
                        shown = {k: last[k] for k in ("stage", "loss", "pair_accuracy") if last.get(k) is not None}
                        print(f"    step {last['step']}/{last['total']} {shown}", file=sys.stderr, flush=True)
    return last, job.returncode


def run_job(data_dir: Path, argv: list[str], log: Path) -> dict:
    """Run ``diptych train ...`` (``stream_job``); returns its ``done`` line, or ends the bench."""
    last, code = stream_job(data_dir, argv, log)
    if code != 0 or last.get("phase") != "done":
        tail = log.read_text(encoding="utf-8")[-3000:]
        raise SystemExit(f"job failed ({code}): {last.get('error')}\n{tail}")
    return last


def kl_of(adapter_dir: Path) -> tuple[float | None, str]:
    meta = json.loads((adapter_dir / "meta.json").read_text(encoding="utf-8"))
    drift = ((meta.get("drift") or {}).get("held_out") or {}).get("kl")
    if drift is not None:
        return drift, "drift.held_out"
    return ((meta.get("metrics") or {}).get("after") or {}).get("kl"), "metrics.after"


# -- the loop ---------------------------------------------------------------------------

def judge(prompts_seeds: list[tuple[str, int]], base: list[Completion],
          tuned: list[Completion]) -> dict:
    wins = ties = losses = 0
    for (prompt, _), b, t in zip(prompts_seeds, base, tuned):
        choice = verdict(prompt, b, t)
        wins += choice == "right"
        ties += choice == "tie"
        losses += choice == "left"
    n = wins + ties + losses
    low, high = wilson(wins + ties / 2, n)
    def averages(done: list[Completion]) -> dict:
        seen = [traits(p, c.text, c.finish_reason) for (p, _), c in zip(prompts_seeds, done)]
        means = {k: sum(float(t[k]) for t in seen) / len(seen)
                 for k in ("ends", "repeats", "question_share")}
        return {**means, "tokens": sum(c.n_tokens for c in done) / len(done)}

    return {"wins": wins, "ties": ties, "losses": losses, "win_rate": (wins + ties / 2) / n,
            "low": low, "high": high, "answers": {"base": averages(base), "tuned": averages(tuned)}}


def print_summary(args, rounds: list[dict], grpo: dict | None, threads: int) -> None:
    print()
    print(f"{args.prompts} training prompts a round, {args.held_out} held-out prompts x "
          f"{args.samples} samples, at most {args.max_tokens} tokens, "
          f"{threads} thread(s) per engine")
    print(f"{'round':>5} {'pairs':>5}  {'tuned win rate (95% CI)':23} {'W/T/L':>9}  "
          f"{'ends itself':>11}  {'KL':>7}  {'answer':>6} {'vote':>5} {'train':>6} {'load':>5} "
          f"{'judge':>6} {'total':>6}  seconds")
    for row in rounds:
        s = row["seconds"]
        cell = lambda k, w, d=1: f"{s[k]:{w}.{d}f}" if k in s else f"{'-':>{w}}"  # noqa: E731
        kl = "-" if row["kl"] is None else f"{row['kl']:.4f}"
        rate = f"{row['win_rate']:.2f} ({row['low']:.2f}-{row['high']:.2f})"
        print(f"{'ref' if row['round'] == 0 else row['round']:>5} {row['pairs']:5d}  {rate:23} "
              f"{row['wins']:>3}/{row['ties']}/{row['losses']:<3}  "
              f"{row['answers']['tuned']['ends']:4.2f} / {row['answers']['base']['ends']:4.2f}  {kl:>7}  "
              f"{cell('answer', 6)} {cell('vote', 5)} {cell('train', 6)} {cell('load', 5, 2)} "
              f"{cell('judge', 6)} {cell('total', 6)}")
    print("ref: the base against a second sample of the base (no change); a tie counts half a "
          "win; 'ends itself': share of held-out answers, tuned / base, that ended before the "
          "token limit")
    print("held-out answers, tuned (base): ends itself / repeats the prompt / share of "
          "sentences that are questions / mean tokens")
    for row in rounds:
        t, b = row["answers"]["tuned"], row["answers"]["base"]
        print(f"{'ref' if row['round'] == 0 else row['round']:>5}  " + "  ".join(
            f"{t[k]:.2f} ({b[k]:.2f})" for k in ("ends", "repeats", "question_share"))
            + f"  {t['tokens']:.0f} ({b['tokens']:.0f})")
    for row in rounds[1:]:
        train = row.get("train") or {}
        print(f"round {row['round']}: votes {row['votes']}, adapter {row['adapter']}, KL from "
              f"{row['kl_source']}" + (f", DPO {train['steps']} steps at {train['s_per_step']} "
                                       f"s/step" if train else ""))
    if rounds[1:] and rounds[0]["win_rate"]:
        print(f"ratio last round / reference win rate: "
              f"{rounds[-1]['win_rate'] / rounds[0]['win_rate']:.2f}")
    if grpo:
        train = grpo["train"] or {}
        kl = "-" if grpo["kl"] is None else f"{grpo['kl']:.4f}"
        print(f"GRPO reverse: held-out reward {grpo['before']:.3f} -> {grpo['after']:.3f} "
              f"(n={grpo['n']}), KL {kl}, {train.get('steps')} steps at "
              f"{train.get('s_per_step')} s/step, whole job {grpo['seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16, help="training prompts per round")
    parser.add_argument("--held-out", type=int, default=16, help="held-out prompts")
    parser.add_argument("--samples", type=int, default=2, help="judged answers per held-out prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, help="DPO steps per round (default: the job's)")
    parser.add_argument("--job-args", default="", help="more options for each DPO job")
    parser.add_argument("--grpo-steps", type=int, help="GRPO steps (default: the job's)")
    parser.add_argument("--grpo-args", default="", help="more options for the GRPO job")
    parser.add_argument("--skip-grpo", action="store_true")
    parser.add_argument("--mode", choices=["retrain", "continue"], default="retrain",
                        help="retrain: each round a fresh adapter from the base on all votes; "
                             "continue: from round 2 on, the last adapter continued (--from) on "
                             "that round's votes only")
    parser.add_argument("--data-dir", help="keep the store and adapters here (default: a temp dir)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    questions = list(lines("questions.txt"))
    random.Random(0).shuffle(questions)
    if args.held_out < 1 or args.samples < 1:
        sys.exit("--held-out and --samples must be at least 1")
    if args.prompts + args.held_out > len(questions):
        sys.exit(f"--prompts + --held-out must be at most {len(questions)}")
    train_prompts = questions[: args.prompts]
    held_out = [(q, JUDGE_SEED + 1000 * s + i) for s in range(args.samples)
                for i, q in enumerate(questions[len(questions) - args.held_out:])]

    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="diptych-loop-")
    data_dir = Path(args.data_dir or tmp.name).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "jobs.log"
    model = bundled_model_path()
    pane_threads, solo_threads = default_threads(panes=2), default_threads(panes=1)
    base = Engine(model, n_ctx=1024, n_threads=pane_threads)
    tuned = Engine(model, n_ctx=1024, n_threads=pane_threads)
    store = Store.open(data_dir)
    print(f"data dir {data_dir}; {len(train_prompts)} training prompts, {args.held_out} held-out "
          f"x {args.samples} samples, {args.max_tokens} tokens max", file=sys.stderr)

    # Round 0: the base's held-out answers (reused every round), and the reference:
    # a second sample of the base, judged against them.
    t0 = time.perf_counter()
    base_held, second = answer([
        (base, [(q, params(args.max_tokens, s)) for q, s in held_out]),
        (tuned, [(q, params(args.max_tokens, s + REFERENCE_SHIFT)) for q, s in held_out]),
    ])
    spent = time.perf_counter() - t0
    rounds = [{"round": 0, "adapter": None, "pairs": 0, "kl": 0.0, "kl_source": "no adapter",
               **judge(held_out, base_held, second), "seconds": {"judge": spent, "total": spent}}]

    for r in range(1, args.rounds + 1):
        seconds = {}
        start = t = time.perf_counter()
        print(f"round {r}: answering", file=sys.stderr, flush=True)
        work = [(engine, [(q, params(args.max_tokens, TRAIN_SEED * r + 2 * i + pane))
                          for i, q in enumerate(train_prompts)])
                for pane, engine in enumerate((base, tuned))]
        left, right = answer(work)
        seconds["answer"] = time.perf_counter() - t

        t = time.perf_counter()
        choices = []
        for i, q in enumerate(train_prompts):
            conversation = store.new_conversation("", False)
            store.add_user_message(conversation, 0, q)
            left_id = record(store, conversation, "left", "base", base, q,
                             work[0][1][i][1], left[i])
            right_id = record(store, conversation, "right", "tuned", tuned, q,
                              work[1][1][i][1], right[i])
            choices.append(verdict(q, left[i], right[i]))
            store.record_vote(left_id, right_id, choices[-1], False)
        pairs = store.pair_counts()["pairs"]
        continuing = args.mode == "continue" and any(row.get("train") for row in rounds)
        if continuing:  # the job trains on this round's votes only (--new-votes)
            pairs = sum(choice in ("left", "right") for choice in choices)
        seconds["vote"] = time.perf_counter() - t

        row = {"round": r, "votes": {c: choices.count(c) for c in ("left", "right", "tie")},
               "pairs": pairs, "adapter": tuned.adapter_name}
        if pairs:
            print(f"round {r}: training on {pairs} pairs", file=sys.stderr, flush=True)
            t = time.perf_counter()
            name = f"loop-round{r}"
            steps = ["--steps", str(args.steps)] if args.steps else []
            argv = ["dpo", "--name", name, *steps, *shlex.split(args.job_args)]
            if continuing:
                last = next(row["adapter"] for row in reversed(rounds) if row.get("train"))
                argv += ["--from", last, "--new-votes"]
            done = run_job(data_dir, argv, log)
            seconds["train"] = time.perf_counter() - t
            row["train"] = done["metrics"].get("train")
            row["adapter"] = name
            adapter_dir = Path(done["path"])
            row["kl"], row["kl_source"] = kl_of(adapter_dir)
            seconds["load"] = tuned.set_adapter(adapter_dir / "adapter.gguf")
        else:
            print(f"round {r}: no pairs yet, no training", file=sys.stderr, flush=True)
            row["kl"], row["kl_source"] = (rounds[-1].get("kl"), "previous adapter")

        print(f"round {r}: judging", file=sys.stderr, flush=True)
        t = time.perf_counter()
        tuned.set_threads(solo_threads)  # only the tuned engine has new answers to give
        [tuned_held] = answer([(tuned, [(q, params(args.max_tokens, s)) for q, s in held_out])])
        tuned.set_threads(pane_threads)
        row.update(judge(held_out, base_held, tuned_held))
        seconds["judge"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - start
        row["seconds"] = seconds
        row["sample"] = {"prompt": held_out[0][0], "base": base_held[0].text[:200],
                         "tuned": tuned_held[0].text[:200]}
        rounds.append(row)
        print(f"round {r}: win rate {row['win_rate']:.2f}, {seconds['total']:.0f} s",
              file=sys.stderr, flush=True)
    store.close()

    grpo = None
    if not args.skip_grpo:
        print("GRPO on the reverse task", file=sys.stderr, flush=True)
        t = time.perf_counter()
        steps = ["--steps", str(args.grpo_steps)] if args.grpo_steps else []
        done = run_job(data_dir, ["grpo", "--name", "loop-grpo-reverse", "--task", "reverse",
                                  *steps, *shlex.split(args.grpo_args)], log)
        metrics = done["metrics"]
        grpo = {"seconds": time.perf_counter() - t, "before": metrics["before"].get("reward"),
                "after": metrics["after"].get("reward"), "kl": metrics["after"].get("kl"),
                "n": metrics["after"].get("n"), "train": metrics.get("train"),
                "samples": metrics["after"].get("samples")}

    print_summary(args, rounds, grpo, pane_threads)
    if args.json:
        out = {"config": vars(args), "rounds": rounds, "grpo": grpo}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
