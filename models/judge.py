"""A rubric judge: a local GGUF asked whether an answer meets a rubric, read as P(yes).

The judge model (any GGUF; by default the base itself) sees the rubric, the question and
the answer and is asked whether the answer meets the rubric. A model with a chat template
of its own (an instruction-tuned one) is asked in a user turn of that template; a
pre-trained model without one is shown four worked verdicts first (few-shot, plain text),
which is how a base model follows a format: on the labelled pairs of
``bench/judge_bench.py`` the bundled 270M base ranks 0.59 of them right this way, 0.50
(a coin toss) when asked in Gemma turns. Nothing is generated: one pass over the prompt
gives the next-token distribution, and the score is

    P(yes) / (P(yes) + P(no))

where P(yes) sums the probabilities of the single tokens that spell "yes" in any case,
with or without a leading space (likewise "no"). It lies in [0, 1], and unlike a sampled
verdict it is smooth: a slightly better answer scores slightly higher, which is what a
GRPO group needs to rank its answers.

How weak a small judge is, is measured: ``bench/judge_bench.py`` (see bench/RESULTS.md).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .engine import Engine, EngineError

CASE = """Rubric: {rubric}
Question: {question}
Answer: {answer}
Does the answer meet the rubric?"""
# Worked verdicts for a pre-trained judge: two yes, two no, on rubrics of other kinds.
SHOTS = [("The answer names a colour.", "What colour is grass?", "Green.", "Yes"),
         ("The answer is short.", "What is rain?",
          "Rain is water that falls from clouds in drops, and it happens when water vapour in the "
          "air cools down, gathers into droplets and becomes too heavy to float.", "No"),
         ("The answer is correct.", "What is 3 + 3?", "7", "No"),
         ("The answer is friendly.", "Hi!", "Hello, nice to meet you!", "Yes")]
FEW_SHOT = "\n\n".join(CASE.format(rubric=r, question=q, answer=a) + " " + v for r, q, a, v in SHOTS)
YES, NO = "yes", "no"


class Judge:
    def __init__(self, model_path: str | os.PathLike, rubric: str, n_ctx: int = 2048):
        if not rubric.strip():
            raise EngineError("the judge needs a rubric: say what a good answer does")
        self.rubric = rubric.strip()
        self.engine = Engine(model_path, n_ctx=n_ctx, n_threads=len(os.sched_getaffinity(0)))
        self._yes = self._spellings(YES)
        self._no = self._spellings(NO)
        if not self._yes or not self._no:
            raise EngineError(f"{self.engine.info.path.name} has no single token for yes/no: "
                              "it cannot judge")
        self._lock = threading.Lock()

    def _spellings(self, word: str) -> list[int]:
        """Ids of the single tokens that spell ``word`` (any case, optional leading space)."""
        ids = set()
        for text in {word, word.capitalize(), word.upper()}:
            for spelled in (text, " " + text):
                tokens = self.engine.tokenize(spelled, special=False)
                if len(tokens) == 1:
                    ids.add(tokens[0])
        return sorted(ids)

    def prompt(self, question, answer: str) -> str:
        if not isinstance(question, str):  # a conversation: the last user turn is the question
            question = next((m["content"] for m in reversed(question) if m["role"] == "user"), "")
        case = CASE.format(rubric=self.rubric, question=question.strip(),
                           answer=answer.strip() or "(no answer)")
        if self.engine.template.name == "gguf":  # the model's own chat template: it was tuned to follow
            return self.engine.render([{"role": "user", "content": case + " Reply Yes or No."}])
        return self.engine.template.bos_token + FEW_SHOT + "\n\n" + case

    def score(self, question, answer: str) -> float:
        """P(yes) that ``answer`` to ``question`` (text, or a message list) meets the rubric."""
        ids = self.engine.tokenize(self.prompt(question, answer))
        room = self.engine.n_ctx
        if len(ids) >= room:  # keep the end: the rubric and the question to answer are there
            ids = ids[:1] + ids[-(room - 1):]
        with self._lock, self.engine.exclusive():
            self.engine.clear()
            self.engine.eval(ids)
            x = self.engine.logits(-1).astype(np.float64)
        p = np.exp(x - x.max())
        yes, no = p[self._yes].sum(), p[self._no].sum()
        return float(yes / (yes + no)) if yes + no > 0 else 0.5

    def close(self) -> None:
        self.engine.close()
