"""A reward model trained on votes, against the rubric judge, on the judge bench's pairs.

    python bench/reward_model_judge.py [--json FILE]

The judge benchmark (``judge_bench.py``) asks the bundled 270M base whether an answer
meets a rubric; it orders 0.59 of its 22 hand-labelled pairs. Here the same pairs are
votes: two-fold cross-validation, each fold's reward model (``diptych train reward``,
the job's defaults, the other fold's pairs as its data; one of them held out by the job
itself) scores both answers of the pairs it did not see, and a pair is ordered right
when the better answer scores higher. The reward model sees what a vote holds, the
question and the answers, not the rubric. Printed: the share of pairs ordered right, by
rubric kind, against a coin toss (0.5).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from judge_bench import CASES


def folds() -> list[list[tuple]]:
    """Two folds, each with every other case of each rubric kind."""
    out: list[list[tuple]] = [[], []]
    seen: dict[str, int] = {}
    for case in CASES:
        kind = case[0]
        out[seen.get(kind, 0) % 2].append(case)
        seen[kind] = seen.get(kind, 0) + 1
    return out


def as_pair(case: tuple) -> dict:
    _, _, question, good, bad = case
    return {"prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}]}


def train(fold: int, cases: list[tuple], home: Path) -> float:
    data = home / f"fold{fold}.jsonl"
    data.write_text("".join(json.dumps(as_pair(c)) + "\n" for c in cases), encoding="utf-8")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "diptych", "--data-dir", str(home), "train", "reward",
                    "--name", f"rm{fold}", "--data", str(data), "--eval-size", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def ordered(fold: int, cases: list[tuple], home: Path) -> list[bool]:
    from diptych.models.catalog import bundled_model_path
    from diptych.training import reward_functions

    model, tokenizer = reward_functions.load_reward_model(f"rm{fold}", bundled_model_path(), home)
    score = reward_functions.as_reward_function(model, tokenizer)
    out = []
    for case in cases:
        pair = as_pair(case)
        good, bad = score([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])
        out.append(good > bad)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    first, second = folds()
    rows, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="diptych-rm-judge-") as tmp:
        home = Path(tmp)
        for fold, (seen, unseen) in enumerate(((first, second), (second, first))):
            seconds.append(train(fold, seen, home))
            rows += [(case[0], right) for case, right in zip(unseen, ordered(fold, unseen, home))]
    accuracy = sum(right for _, right in rows) / len(rows)
    by_kind = {kind: f"{sum(r for k, r in rows if k == kind)} of {sum(k == kind for k, _ in rows)}"
               for kind in dict.fromkeys(k for k, _ in rows)}
    print(f"pairs ordered right by a reward model trained on the other fold's votes: {accuracy:.2f} "
          f"(coin toss 0.50); " + ", ".join(f"{k} {v}" for k, v in by_kind.items())
          + f"; training {', '.join(f'{s:.0f} s' for s in seconds)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"accuracy": accuracy, "by_kind": by_kind,
                                               "train_s": seconds, "n": len(rows)}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
