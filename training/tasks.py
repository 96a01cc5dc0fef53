"""Programmatic rewards for GRPO, each with the prompts it was made for.

- ``reverse``: reverse a sentence character by character. Reward: character-level
  similarity of the answer to the exact reversal (``difflib`` ratio, 0..1), so a nearly
  right answer earns nearly full marks and the model has a slope to climb.
- ``reverse_words``: reverse the order of the words of a short sentence. Reward: word-level
  similarity to the reversed order (``difflib`` ratio over lower-cased words without
  punctuation), so each word in its right place counts.
- ``arith``: small arithmetic with one right number. Reward 1 for exactly that number,
  0.5 when the answer starts with it but says more; an answer that starts with another
  number earns up to 0.1 the closer it is. The base almost never answers with a number
  (its held-out reward is near 0), so without that slope every answer of a group scores
  0 and GRPO has nothing to compare: the format is learnt first, then the number.
- ``length``: answer in one short statement instead of more questions (what a base
  model tends to do). Reward: nothing for a question (or fewer than 3 words); else a
  quarter each for answering, at most 25 words, one line, and ending like a statement.
  The base's greedy answers score about 0.27 on it: they ask back or run on over lines.
  It needs no known answer, so it also works on the user's own prompts.

Each task also brings worked examples (:meth:`Task.worked`): its prompts with the answer
written out (the reversal, the number, a one-line statement), for the supervised warm-up
that makes a skill the base never samples samplable before GRPO sharpens it
(``skill.py``).

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


# -- reverse_words ------------------------------------------------------------------

WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def reverse_words_reward(prompts, completions, target, **_) -> list[float]:
    return [difflib.SequenceMatcher(None, _words(_text(c)), _words(t), autojunk=False).ratio()
            for c, t in zip(completions, target)]


def reverse_words_examples(n: int, rng: random.Random) -> list[dict]:
    sentences = [s for s in lines("sentences.txt") if 3 <= len(s.split()) <= 8]
    chosen = rng.sample(sentences, min(n, len(sentences)))
    return [{"prompt": _user(f"Reverse the order of the words in this sentence:\n{s}"),
             "target": " ".join(reversed(s.rstrip(".!?").split()))} for s in chosen]


# -- arith --------------------------------------------------------------------------

NUMBER = re.compile(r"-?\d+")


def arith_reward(prompts, completions, target, **_) -> list[float]:
    rewards = []
    for completion, t in zip(completions, target):
        text = _text(completion).rstrip(".")
        first = NUMBER.match(text)
        if text == t:
            rewards.append(1.0)
        elif first and first.group() == t:
            rewards.append(0.5)
        elif first:
            error = abs(int(first.group()) - int(t)) / max(abs(int(t)), 10)
            rewards.append(0.1 * max(0.0, 1.0 - error))
        else:
            rewards.append(0.0)
    return rewards


def arith_examples(n: int, rng: random.Random) -> list[dict]:
    """Sums and differences of numbers up to 20 and the times tables up to 9 x 9: what a
    small base model may have seen often enough to know."""
    out = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b = (rng.randint(2, 9), rng.randint(2, 9)) if op == "*" else (rng.randint(2, 20), rng.randint(2, 20))
        if op == "-":
            a, b = max(a, b), min(a, b)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        shown = "×" if op == "*" else op
        out.append({"prompt": _user(f"What is {a} {shown} {b}? Reply with the number only."),
                    "target": str(value)})
    return out


# -- length -------------------------------------------------------------------------

def length_reward(prompts, completions, **_) -> list[float]:
    return [short_statement(_text(c)) for c in completions]


def short_statement(text: str) -> float:
    """0 for a question or fewer than 3 words; else a quarter for being an answer at all and
    a quarter each for at most 25 words, one line, and a last character that ends a
    statement (an answer cut off by the token limit rarely ends on one)."""
    words = len(text.split())
    if words < 3 or "?" in text:
        return 0.0
    return 0.25 + 0.25 * (words <= 25) + 0.25 * ("\n" not in text) + 0.25 * (text[-1] in ".!")


def length_examples(n: int, rng: random.Random) -> list[dict]:
    questions = rng.sample(lines("questions.txt"), min(n, len(lines("questions.txt"))))
    return [{"prompt": _user(q)} for q in questions]


@lru_cache(maxsize=None)
def _statements() -> dict[str, str]:
    """Each of ``questions.txt``'s prompts with a one-line answer (``answers.txt``, line by line)."""
    return dict(zip(lines("questions.txt"), lines("answers.txt"), strict=True))


def length_answer(example: dict) -> str:
    return _statements()[example["prompt"][-1]["content"]]


def _target(example: dict) -> str:
    return example["target"]


@dataclass(frozen=True)
class Task:
    name: str
    title: str  # what the Train tab lists
    reward: Callable[..., list[float]]
    examples: Callable[[int, random.Random], list[dict]]
    needs_target: bool  # its reward compares with a known answer: only its own prompts have one
    answer: Callable[[dict], str] = _target  # the right answer to one of its examples

    def worked(self, examples: list[dict]) -> list[dict]:
        """``examples`` (from :attr:`examples`) as worked examples: each prompt with its
        answer as the completion, the other columns kept (the reward may want them)."""
        return [{**e, "completion": [{"role": "assistant", "content": self.answer(e)}]}
                for e in examples]


TASKS = {
    "length": Task("length", "Answer in one short statement (length and format)", length_reward,
                   length_examples, needs_target=False, answer=length_answer),
    "arith": Task("arith", "Arithmetic (the number, then the right number)", arith_reward,
                  arith_examples, needs_target=True),
    "reverse_words": Task("reverse_words", "Reverse the order of a sentence's words",
                          reverse_words_reward, reverse_words_examples, needs_target=True),
    "reverse": Task("reverse", "Reverse a sentence letter by letter (hard)", reverse_reward,
                    reverse_examples, needs_target=True),
}
