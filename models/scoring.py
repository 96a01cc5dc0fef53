"""Score a finished answer token by token, and compare the base and the tuned model on it.

:func:`score` runs the prompt and the answer through an engine's llama.cpp context in one
forward pass (in chunks) and reads the log-probability the model gives each answer token,
with its likeliest alternatives. :func:`compare` does that under the base and the tuned
engine and reports, per token, ``log p_tuned(token) - log p_base(token)``: where, and how
far, training moved the model.

Which tokens are scored. The engine generated the answer by appending sampled tokens to
the prompt's tokens, so the answer is scored the same way: the rendered prompt is
tokenized as the engine tokenizes it, and the answer is appended as its own tokens, never
re-tokenized together with the prompt (that can merge tokens across the boundary, and
parses ``<end_of_turn>`` typed by a user as a control token). The answer is either

- the token ids that were sampled (a ``Completion``'s tokens: see :func:`answer_ids`), and
  then exactly those are scored; or
- text, tokenized alone with no BOS and no special-token parsing. This is the canonical
  tokenization of the text, which is not always the sequence that was sampled: on the
  bundled model about one 60-token answer in four sampled at temperature 1 contains a
  token split the tokenizer would not make (" up" + "positive" for " upp" + "os" +
  "itive"). Both spell the same text; their log-probabilities differ.

Speed and memory. Logits are requested only at the positions that predict an answer token
(the last prompt position and every answer position but the last), so the prompt costs no
output layer. The vocabulary has 262,144 entries (1 MB of float32 a row) and llama.cpp
keeps its logits buffer at the largest size a decode asked for, so one decode asks for at
most ``ROWS`` rows.

Batch versus one-token evaluation. llama.cpp's CPU kernels give slightly different
results for a position evaluated alone than inside a batch of several (on the bundled
model the hidden states agree to 1e-8 through layer 9, then one attention output differs
by about 3e-4 relative, and the later layers amplify that to a few percent of the logits).
So these logprobs differ from the ones streamed during generation (evaluated one token at
a time) by up to about 0.3 nats on a token, 0.04-0.06 on average. Within one batch
layout everything is deterministic: both engines score with the same layout, so without
an adapter every log-ratio is exactly 0, and a non-zero ratio is the adapter's doing.

When the mean log-ratio estimates a KL. Write ``r_t = log p_tuned(y_t | y_<t) - log
p_base(y_t | y_<t)``. If ``y_t`` was drawn from the tuned model's own next-token
distribution, then ``E[r_t | y_<t] = KL(p_tuned(.|y_<t) || p_base(.|y_<t))``: each
``r_t`` is an unbiased one-sample estimate of the KL at that position (the "k1"
estimator), the mean over the answer is a Monte-Carlo estimate of the per-token
KL(tuned || base) along the tuned model's own answers, and the sum estimates the KL of
whole answers when the end-of-turn token is scored too. That holds only when all of
these do:

1. the tuned engine, with the same adapter and scale, generated the answer for this
   same prompt;
2. it sampled from the model's distribution unchanged: temperature 1, no top-k, top-p or
   min-p truncation, repeat penalty 1 (:func:`samples_model_distribution`);
3. the scored tokens are the sampled ones (ids, not re-tokenized text).

Stopping at a stop string or at ``max_tokens`` does not matter: it depends only on tokens
already drawn. For an answer from the base model, or sampled at temperature 0.8 or with
top-p, the mean is an average log-ratio, not a KL (it can even be negative), and
:attr:`Summary.kl_estimate` is False.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .engine import Completion, Engine, EngineError, SamplingParams, log_softmax

ROWS = 32  # logits rows per decode: 32 MB of float32 for this vocabulary


@dataclass
class TokenScore:
    id: int
    text: str
    logprob: float
    top: list[tuple[str, float]]  # the likeliest tokens at this position, with logprobs


@dataclass
class TokenComparison:
    id: int
    text: str
    logp_base: float
    logp_tuned: float
    log_ratio: float  # logp_tuned - logp_base: > 0 where training made the token likelier
    top_base: list[tuple[str, float]]
    top_tuned: list[tuple[str, float]]

    @property
    def p_base(self) -> float:
        return float(np.exp(self.logp_base))

    @property
    def p_tuned(self) -> float:
        return float(np.exp(self.logp_tuned))

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "logp_base": self.logp_base,
                "logp_tuned": self.logp_tuned, "log_ratio": self.log_ratio,
                "p_base": self.p_base, "p_tuned": self.p_tuned,
                "top_base": self.top_base, "top_tuned": self.top_tuned}


@dataclass
class Summary:
    n_tokens: int
    mean_log_ratio: float
    sum_log_ratio: float
    max_index: int | None  # the token whose |log ratio| is largest
    max_text: str
    max_log_ratio: float
    kl_estimate: bool  # the mean estimates per-token KL(tuned || base): see the module notes


@dataclass
class Comparison:
    tokens: list[TokenComparison]
    summary: Summary
    base_label: str = ""
    tuned_label: str = ""
    scoring_s: dict = field(default_factory=dict)  # seconds each engine took

    def to_dict(self) -> dict:
        return {"base": self.base_label, "tuned": self.tuned_label,
                "summary": vars(self.summary), "scoring_s": self.scoring_s,
                "tokens": [t.to_dict() for t in self.tokens]}


def answer_ids(completion: Completion) -> list[int]:
    """The token ids a completion sampled (without the text-only tail it may end with)."""
    return [t.id for t in completion.tokens if t.id >= 0]


def samples_model_distribution(params: SamplingParams) -> bool:
    """True when sampling with ``params`` draws from the model's own softmax, unchanged."""
    return (params.temperature == 1.0 and params.top_k <= 0 and params.top_p >= 1.0
            and params.min_p <= 0.0 and params.repeat_penalty == 1.0)


def score(engine: Engine, prompt: str | list[dict], response: str | Sequence[int],
          top_k: int = 5, *, rows_per_decode: int = ROWS) -> list[TokenScore]:
    """Per-token log-probabilities of ``response`` after ``prompt`` under ``engine``.

    ``prompt`` is rendered text or a list of messages (rendered with the engine's
    template); ``response`` is the answer's text or its sampled token ids.
    ``rows_per_decode=1`` evaluates the answer one token at a time, as generation does,
    and reproduces the streamed logprobs exactly (see the module notes); it is slower.
    """
    prompt_ids, answer = _token_ids(engine, prompt, response)
    if not answer:
        return []
    rows = []
    with engine.exclusive(), closing(_logit_chunks(engine, prompt_ids, answer,
                                                   max(1, rows_per_decode))) as chunks:
        for logits, targets in chunks:
            rows.extend(_logprobs(logits, targets, top_k))
    return [TokenScore(tok, engine.token_text(tok), logp,
                       [(engine.token_text(i), lp) for i, lp in top])
            for tok, (logp, top) in zip(answer, rows)]


def kl_per_token(base_engine: Engine, tuned_engine: Engine, prompt: str | list[dict],
                 answer: Sequence[int]) -> np.ndarray:
    """KL(p_tuned || p_base) over the whole vocabulary at each position of ``answer``.

    Unlike a log-ratio this is exact at each position, whichever token was drawn there,
    and never negative. Along answers the tuned model sampled itself, its mean is the
    per-token KL of the tuned model from the base (see ``diptych.models.drift``). Both
    engines evaluate each chunk at the same time, in two threads.
    """
    if base_engine is tuned_engine:
        raise ValueError("the base and the tuned model need an engine each")
    prompt_ids, answer = _token_ids(tuned_engine, prompt, list(answer))
    if not answer:
        return np.zeros(0)
    out = []
    # The pool is entered last so that it exits first: whatever ends the loop (an error,
    # or a job's Cancelled raised in this thread while it waits on a future), the chunk
    # generators are closed and the engines released only once no thread is inside them.
    with base_engine.exclusive(), tuned_engine.exclusive(), \
            closing(_logit_chunks(base_engine, prompt_ids, answer, ROWS)) as base, \
            closing(_logit_chunks(tuned_engine, prompt_ids, answer, ROWS)) as tuned, \
            _workers(2) as pool:
        while True:
            futures = [pool.submit(next, base, None), pool.submit(next, tuned, None)]
            base_chunk, tuned_chunk = (f.result() for f in futures)
            if base_chunk is None or tuned_chunk is None:
                break
            lb, lt = log_softmax(base_chunk[0]), log_softmax(tuned_chunk[0])
            out.append((np.exp(lt) * (lt - lb)).sum(axis=1, dtype=np.float64))
    return np.concatenate(out)


def compare(base_engine: Engine, tuned_engine: Engine, messages: str | list[dict],
            response: str | Sequence[int], top_k: int = 5,
            tuned_sampling: SamplingParams | None = None) -> Comparison:
    """Score ``response`` under both engines (in parallel) and take the per-token log-ratios.

    ``tuned_sampling``: the parameters the tuned engine sampled this very answer with, if
    it did; it only decides :attr:`Summary.kl_estimate`.
    """
    seconds = {}

    def run(name, engine):
        t0 = time.perf_counter()
        scores = score(engine, messages, response, top_k)
        seconds[name] = time.perf_counter() - t0
        return scores

    if base_engine is tuned_engine:  # one context cannot run twice at once
        base, tuned = run("base", base_engine), run("tuned", tuned_engine)
    else:
        with _workers(2) as pool:
            futures = [pool.submit(run, "base", base_engine), pool.submit(run, "tuned", tuned_engine)]
            base, tuned = (f.result() for f in futures)
    if [t.id for t in base] != [t.id for t in tuned]:
        raise EngineError("the two models tokenize this answer differently: "
                          "they do not share a vocabulary")
    tokens = [TokenComparison(b.id, b.text, b.logprob, t.logprob, t.logprob - b.logprob,
                              b.top, t.top) for b, t in zip(base, tuned)]
    sampled = tuned_sampling is not None and not isinstance(response, str)
    return Comparison(tokens, _summary(tokens, sampled and samples_model_distribution(tuned_sampling)),
                      base_engine.label, tuned_engine.label, seconds)


@contextmanager
def _workers(n: int):
    """A thread pool whose exit waits until its threads are done, even when interrupted.

    A plain ``ThreadPoolExecutor`` waits too, but a signal handler that raises (a job's
    ``Cancelled`` on SIGTERM, KeyboardInterrupt) can interrupt that wait, and then the
    caller frees what the threads still use: closing a generator a thread is inside
    fails ("generator already executing"), and freeing a llama.cpp context under a
    running decode crashes the process. Here every interruption is held until the
    threads are done, then the first one is raised.
    """
    pool = ThreadPoolExecutor(n)
    try:
        yield pool
    finally:
        interrupted = None
        while True:
            try:
                pool.shutdown(wait=True)  # bounded: the decodes already running
                break
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted


def _summary(tokens: list[TokenComparison], kl_estimate: bool) -> Summary:
    ratios = [t.log_ratio for t in tokens]
    if not ratios:
        return Summary(0, 0.0, 0.0, None, "", 0.0, False)
    top = max(range(len(ratios)), key=lambda i: abs(ratios[i]))
    return Summary(len(ratios), float(np.mean(ratios)), float(np.sum(ratios)), top,
                   tokens[top].text, ratios[top], kl_estimate)


def _token_ids(engine: Engine, prompt, response) -> tuple[list[int], list[int]]:
    if not isinstance(prompt, str):
        prompt = engine.render(prompt)
    prompt_ids = engine.tokenize(prompt)
    if not prompt_ids:
        raise ValueError("the prompt is empty: nothing predicts the first answer token")
    if isinstance(response, str):
        answer = engine.tokenize(response, special=False)
    else:
        answer = [int(t) for t in response]
        if any(not 0 <= t < engine.n_vocab for t in answer):
            raise ValueError("the answer holds token ids outside this model's vocabulary")
    total = len(prompt_ids) + len(answer)
    if total > engine.n_ctx:
        raise EngineError(f"prompt and answer are {total} tokens, more than this model's "
                          f"context of {engine.n_ctx}")
    return prompt_ids, answer


def _logit_chunks(engine: Engine, prompt_ids: list[int], answer: list[int],
                  rows_per_decode: int):
    """One pass over prompt + answer in chunks: yields (logits rows, their target tokens),
    one row for each answer token, at most ``rows_per_decode`` rows at a time.
    The caller holds the engine (``Engine.exclusive``)."""
    from llama_cpp._internals import LlamaBatch

    tokens = prompt_ids + answer[:-1]  # the last answer token predicts nothing we score
    first = len(prompt_ids) - 1  # the position that predicts answer[0]
    size = min(engine.n_batch, len(tokens))
    batch = LlamaBatch(n_tokens=size, embd=0, n_seq_max=1, verbose=False)
    engine.clear()
    try:
        for start, end in _chunks(len(tokens), first, size, rows_per_decode):
            b = batch.batch
            b.n_tokens = end - start
            for j, pos in enumerate(range(start, end)):
                b.token[j], b.pos[j], b.n_seq_id[j], b.seq_id[j][0] = tokens[pos], pos, 1, 0
                b.logits[j] = pos >= first
            engine.decode(batch)
            rows = [j for j, pos in enumerate(range(start, end)) if pos >= first]
            if rows:
                logits = np.stack([engine.logits(j) for j in rows])
                yield logits, answer[start + rows[0] - first: start + rows[-1] - first + 1]
    finally:
        batch.close()
        # The context now holds this pass, not what the engine's generation believes it
        # cached: make the next generation evaluate its prompt from scratch.
        engine.clear()


def _chunks(n: int, first: int, size: int, rows: int):
    """[start, end) ranges of at most ``size`` positions and ``rows`` logits rows each."""
    start = 0
    while start < n:
        end = min(n, start + size, max(first, start) + rows)
        yield start, end
        start = end


def _logprobs(logits: np.ndarray, targets: list[int], top_k: int):
    """Each row's log-probability of its target, and its top ``top_k``."""
    logp = log_softmax(logits)
    k = max(0, min(top_k, logits.shape[1] - 1))
    top = np.argpartition(logp, -k, axis=1)[:, -k:] if k else np.empty((len(logp), 0), int)
    result = []
    for row, target, ids in zip(logp, targets, top):
        ids = ids[np.argsort(-row[ids], kind="stable")]
        result.append((float(row[target]), [(int(i), float(row[i])) for i in ids]))
    return result
