"""How weak is a small rubric judge? P(yes) of the bundled 270M base on labelled pairs.

    python bench/judge_bench.py [--model FILE.gguf] [--json FILE]

Each case is a rubric, a question, an answer that meets the rubric and one that does not
(written by hand, see CASES). The judge (``diptych.models.judge.Judge``: P(yes) / (P(yes)
+ P(no)) of the next token) scores both. Printed: pairwise accuracy (the good answer
scores higher), against the reference of a coin toss (0.5) measured as the share of
pairs a judge with scores drawn at random would order right (exactly 0.5 in expectation);
the mean P(yes) of good and of bad answers; the share of each above 0.5; and seconds per
judgement. By rubric kind: correctness, format, tone.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

CORRECT, FORMAT, TONE = "correctness", "format", "tone"
CASES = [
    (CORRECT, "The answer is correct.", "What is the capital of France?", "Paris.", "Berlin."),
    (CORRECT, "The answer is correct.", "How many legs does a spider have?", "Eight.", "Six."),
    (CORRECT, "The answer is correct.", "What is 2 + 2?", "4", "5"),
    (CORRECT, "The answer is correct.", "What colour is the sky on a clear day?", "Blue.", "Green."),
    (CORRECT, "The answer is correct.", "Which animal says moo?", "A cow.", "A cat."),
    (CORRECT, "The answer is correct.", "What do bees make?", "Honey.", "Milk."),
    (CORRECT, "The answer is correct.", "Who wrote Hamlet?", "William Shakespeare.", "Charles Dickens."),
    (CORRECT, "The answer is correct.", "What is frozen water called?", "Ice.", "Steam."),
    (FORMAT, "The answer is a single short sentence.", "Describe the sea.",
     "The sea is wide and blue.",
     "The sea is wide. It is blue. It has waves, fish, ships, storms and tides, and it covers most "
     "of the planet, and people have sailed on it for thousands of years."),
    (FORMAT, "The answer is a single short sentence.", "What is a dog?", "A dog is a pet animal.",
     "What is a cat? What is a horse? What is a bird? What is a fish?"),
    (FORMAT, "The answer is a number.", "How many days are in a week?", "7", "Many days, I think."),
    (FORMAT, "The answer is a number.", "How many wheels does a bicycle have?", "2",
     "Bicycles are fun to ride."),
    (FORMAT, "The answer does not ask a question.", "Name a fruit.", "An apple.",
     "Which fruit do you like?"),
    (FORMAT, "The answer does not ask a question.", "Tell me about Mars.", "Mars is a red planet.",
     "What do you want to know about Mars?"),
    (FORMAT, "The answer is in English.", "Say hello.", "Hello!", "Bonjour, ça va ?"),
    (FORMAT, "The answer lists three items.", "Name three colours.", "Red, green and blue.", "Red."),
    (TONE, "The answer is polite.", "Can you help me?", "Of course, I am glad to help.",
     "No. Figure it out yourself."),
    (TONE, "The answer is polite.", "Where is the station?", "It is just down this street, on the left.",
     "Stop bothering me."),
    (TONE, "The answer is polite.", "Thank you!", "You are welcome.", "Whatever."),
    (TONE, "The answer is kind.", "I failed my exam.", "I am sorry. You can try again and do better.",
     "That is what you get for being lazy."),
    (TONE, "The answer is calm.", "My train is late.", "Trains run late sometimes; the next one will come.",
     "THIS IS A DISASTER!!! EVERYTHING IS RUINED!!!"),
    (TONE, "The answer is encouraging.", "I want to learn to swim.", "Great idea, you can do it!",
     "You will probably never learn."),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="the judge's GGUF (default: the bundled base)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    from diptych.models.catalog import bundled_model_path
    from diptych.models.judge import Judge

    model = Path(args.model) if args.model else bundled_model_path()
    judges: dict[str, Judge] = {}
    rows, seconds = [], []
    for kind, rubric, question, good, bad in CASES:
        judge = judges.get(rubric) or judges.setdefault(rubric, Judge(model, rubric))
        t0 = time.perf_counter()
        g, b = judge.score(question, good), judge.score(question, bad)
        seconds.append((time.perf_counter() - t0) / 2)
        rows.append({"kind": kind, "rubric": rubric, "question": question, "good": g, "bad": b})
    for judge in judges.values():
        judge.close()

    rng = random.Random(0)
    coin = sum(rng.random() > rng.random() for _ in range(100_000)) / 100_000

    def summary(subset):
        return {"n": len(subset), "accuracy": sum(r["good"] > r["bad"] for r in subset) / len(subset),
                "p_yes_good": sum(r["good"] for r in subset) / len(subset),
                "p_yes_bad": sum(r["bad"] for r in subset) / len(subset),
                "good_above_half": sum(r["good"] > 0.5 for r in subset) / len(subset),
                "bad_above_half": sum(r["bad"] > 0.5 for r in subset) / len(subset)}

    result = {"model": model.name, "all": summary(rows), "coin_accuracy": coin,
              "by_kind": {k: summary([r for r in rows if r["kind"] == k]) for k in (CORRECT, FORMAT, TONE)},
              "s_per_judgement": sum(seconds) / len(seconds), "rows": rows}
    a = result["all"]
    print(f"judge {model.name}: {a['n']} pairs, pairwise accuracy {a['accuracy']:.2f} "
          f"(a coin toss: {coin:.2f}; ratio {a['accuracy'] / coin:.2f})")
    print(f"    mean P(yes): good answers {a['p_yes_good']:.3f}, bad answers {a['p_yes_bad']:.3f}; "
          f"above 0.5: good {a['good_above_half']:.0%}, bad {a['bad_above_half']:.0%}")
    for kind, s in result["by_kind"].items():
        print(f"    {kind:12s} accuracy {s['accuracy']:.2f} over {s['n']} pairs "
              f"(P(yes) good {s['p_yes_good']:.3f}, bad {s['p_yes_bad']:.3f})")
    print(f"    {result['s_per_judgement'] * 1000:.0f} ms per judgement")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
