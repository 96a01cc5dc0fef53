"""RLHF against DPO on the same votes of a scripted taste: does a reward model learn it, and
does GRPO on that reward model beat DPO?

    python bench/rlhf_bench.py [--votes 30] [--curve 10,20,40] [--held-out 16] [--samples 2]
                               [--max-tokens 128] [--dpo-args "..."] [--rlhf-args "..."]
                               [--reward-args "..."] [--arms dpo,rlhf] [--no-rubric] [--quick]
                               [--data-dir DIR] [--json FILE] (written after each phase)

``--quick`` runs every phase at toy sizes (a few minutes; its numbers mean nothing).

The user is ``bench/loop.py``'s scripted taste (``taste``/``verdict``: ending by itself,
not repeating the prompt, not asking back). Prompts: ``questions.txt`` shuffled with
``random.Random(0)`` as in the loop; the last ``--held-out`` are held out of everything.

1. votes: two engines on the bundled base (no adapter; a different seed per pane, the
   loop's training seeds) answer the training prompts, the scripted user votes each pair
   into a ``Store`` in a temporary data dir with the loop's ``record`` (ties are recorded
   too, as the app records them, and are not pairs). Prompts are answered in order, and
   again with the next round's seeds if the file runs out, until there are enough pairs:
   ``--votes`` for the policy jobs, and one more than the curve's largest size.
   The store's pairs are exported (``preferences.records``, what ``diptych data export``
   writes), oldest first; every job reads a prefix of that list (``--data``), so each arm
   sees exactly the same votes.
2. held out: the base answers each held-out prompt ``--samples`` times with the loop's
   judging seeds, and again with those seeds shifted by 500. The scripted user judges each
   such pair: that is the reference row (base against base: what "no change" looks like),
   and its non-tied pairs are the held-out pairs of the taste the reward models are
   measured on.
3. reward-model curve: ``diptych train reward --eval-size 1`` on the first N+1 pairs for
   each N of ``--curve`` (so N pairs train it). Its ordering accuracy on the held-out
   pairs is measured twice: as the jobs measure it (``evaluate.reward_model``: each answer
   rendered by the chat template, which closes its turn) and as it was trained (an answer
   cut by the token limit without its end-of-turn tokens, the sequence cut at the job's
   ``--max-length``, as ``turns.keeping_unfinished`` and the trainer do). Beside it,
   unless ``--no-rubric``, the rubric judge (``models.judge.Judge``, the judge bench's) on
   the same pairs with a rubric that states the taste in words.
4. policies: ``diptych train dpo`` and ``diptych train rlhf`` with their defaults on the
   first ``--votes`` pairs. Each adapter answers the held-out prompts with the base's
   first seeds; the scripted user judges it against the base and RLHF against DPO
   (wins / ties / losses; the win share counts ties apart, the win rate counts a tie
   half as the loop does). KL from the base: ``loop.kl_of`` (the job's drift measurement
   on held-out prompt sets). Job time: meta.json's ``seconds``.

Targets (reported met or missed): the reward model orders at least 80 % of held-out pairs;
RLHF wins at least 80 % of held-out prompts against the base, and at least as often as
DPO; the RLHF job takes at most 20 minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

QUICK = {"votes": 10, "curve": "8", "held_out": 3, "samples": 1, "max_tokens": 32,
         "reward_args": "--steps 2",
         "dpo_args": "--steps 2 --no-drift",
         "rlhf_args": "--steps 2 --reward-steps 4 --warmup-steps 2 --eval-every 100 "
                      "--batch-size 4 --num-generations 2 --max-completion-length 16 --no-drift"}
RUBRIC = "The answer answers the question directly, does not repeat it, and does not ask a question back."
REWARD_TARGET, WIN_TARGET, RLHF_SECONDS_TARGET = 0.8, 0.8, 20 * 60


def job(data_dir: Path, argv: list[str], log: Path) -> tuple[dict | None, str | None, float]:
    """(done line, None, seconds) of a job, or (None, its error, seconds) when it failed:
    an RLHF job that refuses its reward model is a result, not a crash of the bench."""
    from loop import stream_job

    started = time.perf_counter()
    last, code = stream_job(data_dir, argv, log)
    seconds = time.perf_counter() - started
    if code != 0 or last.get("phase") != "done":
        return None, f"job failed ({code}): {last.get('error')}", seconds
    return last, None, seconds


def write_pairs(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def held_pair(prompt: str, choice: str, left, right) -> dict:
    """A held-out pair in the jobs' format (``examples.load_pairs``)."""
    winner, loser = (left, right) if choice == "left" else (right, left)
    return {"prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": winner.text}],
            "rejected": [{"role": "assistant", "content": loser.text}],
            "chosen_truncated": winner.finish_reason != "stop",
            "rejected_truncated": loser.finish_reason != "stop"}


def as_trained(model, tokenizer, pairs: list[dict], max_length: int) -> dict:
    """Pair accuracy with each answer tokenized as the reward trainer saw it: an unfinished
    answer without the end-of-turn tokens, the sequence cut at ``max_length``."""
    import torch

    from diptych.training import turns

    suffix = turns.end_of_turn_ids(tokenizer)

    def score(prompt, answer, truncated):
        ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
        ids = (turns.cut(ids, suffix) if truncated else list(ids))[:max_length]
        with torch.no_grad():
            return float(model(input_ids=torch.tensor([ids])).logits[0, 0])

    right = [score(p["prompt"], p["chosen"], p["chosen_truncated"])
             > score(p["prompt"], p["rejected"], p["rejected_truncated"]) for p in pairs]
    return {"pair_accuracy": sum(right) / len(right), "n": len(right)}


def reward_accuracy(name: str, data_dir: Path, model_path: Path, pairs: list[dict]) -> dict:
    from diptych.training import evaluate, reward_functions

    model, tokenizer = reward_functions.load_reward_model(name, model_path, data_dir)
    scored = {"as_scored": evaluate.reward_model(model, tokenizer, pairs),
              "as_trained": as_trained(model, tokenizer, pairs, 128)}
    del model
    gc.collect()
    return scored


def rubric_accuracy(model_path: Path, pairs: list[dict]) -> dict:
    from diptych.models.judge import Judge

    judge = Judge(model_path, RUBRIC)
    started = time.perf_counter()
    try:
        right = [judge.score(p["prompt"], p["chosen"][0]["content"])
                 > judge.score(p["prompt"], p["rejected"][0]["content"]) for p in pairs]
    finally:
        judge.close()
    return {"pair_accuracy": sum(right) / len(right), "n": len(right),
            "s_per_judgement": (time.perf_counter() - started) / (2 * len(pairs))}


def share(row: dict) -> float:
    return row["wins"] / (row["wins"] + row["ties"] + row["losses"])


def arm(name: str, done: dict | None, error: str | None, seconds: float) -> dict:
    from loop import kl_of

    if done is None:
        return {"name": name, "error": error, "bench_seconds": seconds}
    path = Path(done["path"])
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    kl, kl_source = kl_of(path)
    return {"name": name, "path": str(path), "seconds": meta["seconds"], "bench_seconds": seconds,
            "kl": kl, "kl_source": kl_source, "metrics": meta["metrics"], "data": meta["data"]}


def print_table(result: dict) -> None:
    c = result["config"]
    print()
    print(f"votes: {result['votes']['pairs']} pairs for the policy jobs ({result['votes']['recorded']} "
          f"pairs recorded, {result['votes']['ties']} ties skipped, {result['votes']['seconds']:.0f} s); "
          f"held out: {c['held_out']} prompts x {c['samples']} samples, {len(result['held_pairs'])} "
          f"held-out pairs of the taste; answers up to {c['max_tokens']} tokens")
    print()
    print("reward model on the held-out pairs (share ordered right; coin toss 0.50)")
    print(f"{'trained on':>12}  {'as the jobs score':>17}  {'as trained':>10}  {'job s':>6}")
    for row in result["curve"]:
        if "error" in row:
            print(f"{row['pairs']:>6} pairs  failed: {row['error']}")
            continue
        print(f"{row['pairs']:>6} pairs  {row['as_scored']['pair_accuracy']:17.2f}  "
              f"{row['as_trained']['pair_accuracy']:10.2f}  {row['seconds']:6.0f}")
    rlhf = result["arms"].get("rlhf") or {}
    rm = ((rlhf.get("metrics") or {}).get("reward_model") or {}).get("after")
    if rm:
        print(f"{'RLHF job':>12}  {rm['pair_accuracy']:17.2f}  {'':>10}  (its own {rm['n']} held-out "
              "pairs, of the voted prompts)")
    rubric = result.get("rubric")
    if rubric:
        print(f"{'rubric judge':>12}  {rubric['pair_accuracy']:17.2f}  {'':>10}  "
              f"({rubric['s_per_judgement'] * 1000:.0f} ms a judgement; rubric: {RUBRIC!r})")
    elif result.get("rubric_skipped"):
        print(f"rubric judge: skipped ({result['rubric_skipped']})")
    print()
    print("policies on the held-out prompts, judged by the taste")
    print(f"{'':14} {'W/T/L':>9} {'win share':>9} {'win rate (95%)':>19} {'ends itself':>11} "
          f"{'KL':>7} {'job s':>6}")
    for key, label in (("reference", "base vs base"), ("dpo", "DPO vs base"), ("rlhf", "RLHF vs base"),
                       ("head_to_head", "RLHF vs DPO")):
        row = result["judged"].get(key)
        if row is None:
            a = result["arms"].get(key) or {}
            print(f"{label:14} {'-':>9}  {a.get('error') or 'not run'}")
            continue
        a = result["arms"].get(key, {})
        kl = "-" if a.get("kl") is None else f"{a['kl']:.4f}"
        secs = f"{a['seconds']:6.0f}" if a.get("seconds") is not None else f"{'-':>6}"
        print(f"{label:14} {row['wins']:>3}/{row['ties']}/{row['losses']:<3} {share(row):9.2f} "
              f"{row['win_rate']:.2f} ({row['low']:.2f}-{row['high']:.2f})    "
              f"{row['answers']['tuned']['ends']:4.2f}/{row['answers']['base']['ends']:4.2f} {kl:>7} {secs}")
    print("win share: wins / all (ties apart); win rate: a tie counts half; 'ends itself': the "
          "share of answers, this side / the other, that ended before the token limit")
    if rlhf.get("metrics"):
        m, t = rlhf["metrics"], rlhf["metrics"]["train"]
        reward = [f"{m[k]['reward']:.3f}" if (m.get(k) or {}).get("reward") is not None else "-"
                  for k in ("before", "warmup", "after")]
        print(f"RLHF job: reward-model score of greedy held-out answers {reward[0]} (base) -> "
              f"{reward[1]} (warm-up) -> {reward[2]} (GRPO); phases " + ", ".join(f"{k} {t[k]['steps']} steps {t[k]['seconds']:.0f} s"
                                             for k in ("reward_model", "warmup", "grpo")))
    print()
    for target in result["targets"]:
        print(f"target {'met   ' if target['met'] else 'MISSED'} {target['what']}: {target['measured']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=30, help="pairs the DPO and RLHF jobs train on")
    parser.add_argument("--curve", default="10,20,40", help="pairs the reward models train on")
    parser.add_argument("--held-out", type=int, default=16, help="held-out prompts")
    parser.add_argument("--samples", type=int, default=2, help="answers per held-out prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--reward-args", default="", help="more options for each reward job")
    parser.add_argument("--dpo-args", default="", help="more options for the DPO job")
    parser.add_argument("--rlhf-args", default="", help="more options for the RLHF job")
    parser.add_argument("--arms", default="dpo,rlhf", help="the policy jobs to run (dpo, rlhf or both)")
    parser.add_argument("--no-rubric", action="store_true", help="skip the rubric judge")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that it runs")
    parser.add_argument("--data-dir", help="keep the store and adapters here (default: a temp dir)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from loop import JUDGE_SEED, REFERENCE_SHIFT, TRAIN_SEED, answer, judge, params, record, verdict

    from diptych.models.catalog import bundled_model_path
    from diptych.models.engine import Engine, default_threads
    from diptych.training import preferences
    from diptych.training.store import Store
    from diptych.training.tasks import lines

    curve = sorted({int(n) for n in args.curve.split(",") if n.strip()})
    arms = [a for a in args.arms.split(",") if a.strip()]
    if not set(arms) <= {"dpo", "rlhf"}:
        sys.exit("--arms takes dpo, rlhf or both")
    questions = list(lines("questions.txt"))
    random.Random(0).shuffle(questions)
    if not 1 <= args.held_out < len(questions) or args.samples < 1:
        sys.exit(f"--held-out must be 1 to {len(questions) - 1}, --samples at least 1")
    train_prompts = questions[: len(questions) - args.held_out]
    held_out = [(q, JUDGE_SEED + 1000 * s + i) for s in range(args.samples)
                for i, q in enumerate(questions[len(questions) - args.held_out:])]
    needed = max([args.votes] + [n + 1 for n in curve])  # +1: the reward job holds one out

    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="diptych-rlhf-bench-")
    data_dir = Path(args.data_dir or tmp.name).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DIPTYCH_HOME"] = str(data_dir)  # the jobs get --data-dir too; nothing else is read
    log = data_dir / "jobs.log"
    model = bundled_model_path()
    threads = default_threads(panes=2)
    left_engine = Engine(model, n_ctx=1024, n_threads=threads)
    right_engine = Engine(model, n_ctx=1024, n_threads=threads)
    print(f"data dir {data_dir}; {needed} pairs to vote, {len(held_out)} held-out answers",
          file=sys.stderr, flush=True)

    # 1. votes
    started = time.perf_counter()
    store = Store.open(data_dir)
    pairs = ties = 0
    r = 0
    while pairs < needed:
        r += 1  # a new round: the same prompts again, with the next round's seeds
        if r > 10:
            sys.exit(f"{pairs} pairs after 10 rounds of every training prompt: the taste ties too often")
        at = 0
        while at < len(train_prompts) and pairs < needed:
            chunk = list(enumerate(train_prompts))[at: at + needed - pairs + 2]  # +2: a tie or two
            at += len(chunk)
            work = [(engine, [(q, params(args.max_tokens, TRAIN_SEED * r + 2 * i + pane)) for i, q in chunk])
                    for pane, engine in enumerate((left_engine, right_engine))]
            left, right = answer(work)
            for k, (i, q) in enumerate(chunk):
                if pairs >= needed:
                    break
                conversation = store.new_conversation("", False)
                store.add_user_message(conversation, 0, q)
                left_id = record(store, conversation, "left", "base", left_engine, q, work[0][1][k][1], left[k])
                right_id = record(store, conversation, "right", "tuned", right_engine, q, work[1][1][k][1],
                                  right[k])
                choice = verdict(q, left[k], right[k])
                store.record_vote(left_id, right_id, choice, False)
                pairs += choice != "tie"
                ties += choice == "tie"
            print(f"votes: {pairs}/{needed} pairs, {ties} ties", file=sys.stderr, flush=True)
    records = preferences.records(store)
    store.close()
    votes = {"pairs": args.votes, "recorded": len(records), "ties": ties,
             "seconds": time.perf_counter() - started}
    policy_data = write_pairs(data_dir / "votes.jsonl", records[: args.votes])

    # 2. held out: base against a second sample of the base
    print("held out: the base answers twice", file=sys.stderr, flush=True)
    base_held, second = answer([
        (left_engine, [(q, params(args.max_tokens, s)) for q, s in held_out]),
        (right_engine, [(q, params(args.max_tokens, s + REFERENCE_SHIFT)) for q, s in held_out]),
    ])
    judged = {"reference": judge(held_out, base_held, second)}
    held_pairs = [held_pair(q, c, a, b) for (q, _), a, b in zip(held_out, base_held, second)
                  if (c := verdict(q, a, b)) != "tie"]

    def save(result: dict) -> None:  # after each phase: a run cut short keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")

    result = {"config": vars(args), "votes": votes, "held_pairs": held_pairs, "curve": [],
              "arms": {}, "judged": judged}

    # 3. the policies (before the curve: they are what the bench is about) on the same votes
    for name, extra in (("dpo", args.dpo_args), ("rlhf", args.rlhf_args)):
        if name not in arms:
            continue
        print(f"{name} on {args.votes} pairs", file=sys.stderr, flush=True)
        done, error, seconds = job(data_dir, [name, "--name", f"bench-{name}", "--data", str(policy_data),
                                              *shlex.split(extra)], log)
        result["arms"][name] = arm(name, done, error, seconds)
        save(result)

    print("judging the adapters", file=sys.stderr, flush=True)
    work, names = [], []
    for name, engine in (("dpo", left_engine), ("rlhf", right_engine)):
        a = result["arms"].get(name, {})
        if "path" in a:
            engine.set_adapter(Path(a["path"]) / "adapter.gguf")
            work.append((engine, [(q, params(args.max_tokens, s)) for q, s in held_out]))
            names.append(name)
    answers = dict(zip(names, answer(work))) if work else {}
    for name, done in answers.items():
        judged[name] = judge(held_out, base_held, done)
        judged[name]["sample"] = {"prompt": held_out[0][0], "base": base_held[0].text[:300],
                                  "tuned": done[0].text[:300]}
    if len(answers) == 2:
        judged["head_to_head"] = judge(held_out, answers["dpo"], answers["rlhf"])
    for name, row in judged.items():
        print(f"{name}: {row['wins']}/{row['ties']}/{row['losses']}, win rate {row['win_rate']:.2f}",
              file=sys.stderr, flush=True)
    left_engine.close()
    right_engine.close()
    save(result)

    # 4. the reward-model curve, and the rubric judge beside it
    for n in curve:
        print(f"reward model on {n} pairs", file=sys.stderr, flush=True)
        data = write_pairs(data_dir / f"reward{n}.jsonl", records[: n + 1])
        done, error, seconds = job(data_dir, ["reward", "--name", f"reward{n}", "--data", str(data),
                                              "--eval-size", "1", *shlex.split(args.reward_args)], log)
        row = {"pairs": n, "seconds": seconds}
        if done is None:
            row["error"] = error
        elif held_pairs:
            row.update(reward_accuracy(f"reward{n}", data_dir, model, held_pairs))
        result["curve"].append(row)
        print(f"reward model on {n} pairs: {row}", file=sys.stderr, flush=True)
        save(result)
    if args.no_rubric:
        result["rubric_skipped"] = "--no-rubric"
    elif not held_pairs:
        result["rubric_skipped"] = "no held-out pair (every held-out answer pair tied)"
    else:
        result["rubric"] = rubric_accuracy(model, held_pairs)

    # targets
    best = [row for row in result["curve"] if "as_scored" in row]
    targets = []
    if best:
        acc = best[-1]["as_scored"]["pair_accuracy"]
        targets.append({"what": f"reward model orders >= {REWARD_TARGET:.0%} of held-out pairs",
                        "met": acc >= REWARD_TARGET,
                        "measured": f"{acc:.2f} trained on {best[-1]['pairs']} pairs "
                                    f"({best[-1]['as_trained']['pair_accuracy']:.2f} as trained)"})
    rlhf, dpo = judged.get("rlhf"), judged.get("dpo")
    targets.append({"what": f"RLHF wins >= {WIN_TARGET:.0%} against the base",
                    "met": bool(rlhf) and share(rlhf) >= WIN_TARGET,
                    "measured": f"{share(rlhf):.2f} ({rlhf['wins']}/{rlhf['ties']}/{rlhf['losses']})" if rlhf
                    else result["arms"].get("rlhf", {}).get("error", "not run")})
    targets.append({"what": "RLHF wins at least as often as DPO",
                    "met": bool(rlhf and dpo) and rlhf["wins"] >= dpo["wins"],
                    "measured": f"{rlhf['wins']} against {dpo['wins']} wins" if rlhf and dpo else "not both"})
    rlhf_arm = result["arms"].get("rlhf", {})
    rlhf_s = rlhf_arm.get("seconds")
    targets.append({"what": f"RLHF job <= {RLHF_SECONDS_TARGET // 60} min",
                    "met": rlhf_s is not None and rlhf_s <= RLHF_SECONDS_TARGET,
                    "measured": f"{rlhf_s:.0f} s" if rlhf_s is not None
                    else f"failed after {rlhf_arm['bench_seconds']:.0f} s" if rlhf_arm else "not run"})
    result["targets"] = targets

    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
