"""Programmatic rewards for GRPO, each with the prompts it was made for.

- ``reverse``: reverse a sentence character by character. Reward: character-level
  similarity of the answer to the exact reversal (``difflib`` ratio, 0..1), so a nearly
  right answer earns nearly full marks and the model has a slope to climb.
- ``arith``: small arithmetic with one right number. Reward 1 for exactly that number,
  0.5 when the answer starts with it but says more, else 0.
- ``length``: answer in one short statement instead of more questions (what a base
  model tends to do). Reward: half for a length of 3 to 25 words, half for asking no
  question. It needs no known answer, so it also works on the user's own prompts.

A reward function has TRL's signature: ``(prompts, completions, **columns) -> list[float]``
with conversational completions (``[{"role": "assistant", "content": ...}]``); the
dataset's extra columns (``target``) arrive as keyword lists.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Callable


def _text(completion) -> str:
    return (completion[-1]["content"] if isinstance(completion, list) else completion).strip()


def _user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


@lru_cache(maxsize=None)
def lines(name: str) -> tuple[str, ...]:
    """The non-empty lines of a text file shipped in ``diptych.training/data``."""
    text = files("diptych.training").joinpath("data", name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


# -- reverse ------------------------------------------------------------------------

def reverse_reward(prompts, completions, target, **_) -> list[float]:
    return [difflib.SequenceMatcher(None, _text(c), t, autojunk=False).ratio()
            for c, t in zip(completions, target)]


def reverse_examples(n: int, rng: random.Random) -> list[dict]:
    sentences = rng.sample(lines("sentences.txt"), min(n, len(lines("sentences.txt"))))
    return [{"prompt": _user(f"Reverse this sentence character by character:\n{s}"),
             "target": s[::-1]} for s in sentences]


# -- arith --------------------------------------------------------------------------

NUMBER = re.compile(r"-?\d+")


def arith_reward(prompts, completions, target, **_) -> list[float]:
    rewards = []
    for completion, t in zip(completions, target):
        text = _text(completion).rstrip(".")
        first = NUMBER.match(text)
        rewards.append(1.0 if text == t else 0.5 if first and first.group() == t else 0.0)
    return rewards


def arith_examples(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        if op == "*":
            b = rng.randint(2, 12)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        shown = "×" if op == "*" else op
        out.append({"prompt": _user(f"What is {a} {shown} {b}? Reply with the number only."),
                    "target": str(value)})
    return out


# -- length -------------------------------------------------------------------------

def length_reward(prompts, completions, **_) -> list[float]:
    rewards = []
    for completion in completions:
        text = _text(completion)
        words = len(text.split())
        in_range = 3 <= words <= 25
        rewards.append(0.5 * in_range + 0.5 * (bool(text) and "?" not in text))
    return rewards


def length_examples(n: int, rng: random.Random) -> list[dict]:
    questions = rng.sample(lines("questions.txt"), min(n, len(lines("questions.txt"))))
    return [{"prompt": _user(q)} for q in questions]


@dataclass(frozen=True)
class Task:
    name: str
    reward: Callable[..., list[float]]
    examples: Callable[[int, random.Random], list[dict]]
    needs_target: bool  # its reward compares with a known answer: only its own prompts have one


TASKS = {
    "reverse": Task("reverse", reverse_reward, reverse_examples, needs_target=True),
    "arith": Task("arith", arith_reward, arith_examples, needs_target=True),
    "length": Task("length", length_reward, length_examples, needs_target=False),
}
