"""Sample many answers at once through llama.cpp: GRPO's groups, and greedy evaluations.

A pane's :class:`~diptych.models.engine.Engine` decodes one answer at a time. GRPO needs
a group of answers to each of a few prompts, from the policy as it is now (the base plus
the LoRA being trained). :class:`GroupSampler` opens a second llama.cpp context over the
engine's weights (mmap'd, so nothing is loaded twice) that holds one sequence per answer:

1. each prompt is decoded once, into the first sequence of its group, and its KV cells
   are shared with the group's other sequences (``llama_memory_seq_cp`` on a unified KV
   cache: no copy);
2. then every unfinished sequence adds one token per ``llama_decode`` call, all in one
   batch. On two CPU cores a batch of 8 rows costs little more than one row (the weights
   are read once per step instead of once per answer), which is where the speed comes
   from;
3. each sequence has its own sampler chain (top-k, top-p, min-p, temperature, then a
   seeded draw; or greedy) and stops at an end-of-generation token, which is kept as the
   answer's last id, as ``transformers.generate`` keeps it, or at ``max_tokens``.

Prompts come as token ids, so a trainer can hand over exactly the ids of its own
tokenizer. Each sampled token also gets its log-probability under the temperature-scaled
distribution of the model that sampled it (llama.cpp's, on the quantized weights), before
any top-k/top-p/min-p cut: the quantity a trainer compares with its own log-probabilities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine import Engine, EngineError, apply_lora


@dataclass
class Sample:
    ids: list[int] = field(default_factory=list)  # the answer's tokens, the stop token included
    logprobs: list[float] = field(default_factory=list)  # one per id
    finish_reason: str = "length"  # "stop" (an end-of-generation token) or "length"


@dataclass(frozen=True)
class GroupSampling:
    """How a GroupSampler draws: no repeat penalty or stop strings (an answer ends at an
    end-of-generation token), and ``seed`` + i seeds the i-th sequence of a call. The
    panes' engine samples with ``engine.SamplingParams`` instead."""

    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no cut
    min_p: float = 0.0
    max_tokens: int = 48
    seed: int = 0


class GroupSampler:
    """Batched sampling of several answers per prompt on ``engine``'s model, with a LoRA."""

    def __init__(self, engine: Engine, n_seq: int, n_ctx: int = 4096, n_threads: int | None = None):
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        self.engine = engine
        self.n_seq = n_seq
        self._model = engine.model
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = min(n_ctx, 512)
        params.n_seq_max = n_seq
        params.kv_unified = True  # a group shares its prompt's KV cells
        threads = n_threads or len(os.sched_getaffinity(0))
        params.n_threads = params.n_threads_batch = threads
        self._context = LlamaContext(model=self._model, params=params, verbose=False)
        self._batch = LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=n_seq, verbose=False)
        self.n_ctx = n_ctx
        self.n_batch = params.n_batch
        self.n_vocab = engine.n_vocab
        self._vocab = self._model.vocab
        self._adapter = None
        self.adapter_path: Path | None = None

    # -- the LoRA ------------------------------------------------------------------------

    def set_adapter(self, path: str | os.PathLike | None) -> None:
        """Apply a GGUF LoRA (None: the bare base) to this context; the previous one is freed."""
        self._adapter = apply_lora(self._model.model, self._context.ctx, path, 1.0, self._adapter)
        self.adapter_path = Path(path) if path is not None else None

    def close(self) -> None:
        import llama_cpp

        if self._context is None:
            return
        llama_cpp.llama_set_adapters_lora(self._context.ctx, None, 0, None)
        if self._adapter:
            llama_cpp.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        self._batch.close()
        self._context.close()
        self._context = None

    # -- sampling ------------------------------------------------------------------------

    def sample(self, prompts: list[list[int]], n: int, sampling: GroupSampling) -> list[list[Sample]]:
        """``n`` answers to each prompt (token ids); one list of ``Sample`` per prompt."""
        if not prompts:
            return []
        if len(prompts) * n > self.n_seq:
            raise EngineError(f"{len(prompts)} prompts x {n} answers is more than the "
                              f"{self.n_seq} sequences this sampler holds")
        need = sum(len(p) for p in prompts) + len(prompts) * n * sampling.max_tokens
        if need > self.n_ctx:
            raise EngineError(f"{need} tokens of prompts and answers do not fit this sampler's "
                              f"context of {self.n_ctx}")
        if any(not p for p in prompts):
            raise EngineError("an empty prompt: nothing to continue from")
        samplers = [self._sampler(sampling, sampling.seed + i) for i in range(len(prompts) * n)]
        try:
            return self._run(prompts, n, sampling, samplers)
        finally:
            import llama_cpp

            for s in samplers:
                llama_cpp.llama_sampler_free(s)
            llama_cpp.llama_memory_clear(self._context.memory, True)

    def _run(self, prompts, n, sampling, samplers) -> list[list[Sample]]:
        import llama_cpp

        mem = self._context.memory
        llama_cpp.llama_memory_clear(mem, True)
        samples = [[Sample() for _ in range(n)] for _ in prompts]
        flat = [s for group in samples for s in group]
        pos = [0] * len(flat)  # each sequence's next position
        for p, ids in enumerate(prompts):
            first = p * n
            row = self._decode_prompt(ids, first)
            for k in range(n):  # every answer starts from the prompt's one decode
                if k:
                    llama_cpp.llama_memory_seq_cp(mem, first, first + k, -1, -1)
                pos[first + k] = len(ids)
                self._take(flat, samplers, first + k, row, sampling)
        running = [seq for seq, s in enumerate(flat) if not self._done(s, sampling)]
        while running:
            b = self._batch.batch
            b.n_tokens = len(running)
            for j, seq in enumerate(running):
                b.token[j], b.pos[j], b.n_seq_id[j], b.seq_id[j][0] = flat[seq].ids[-1], pos[seq], 1, seq
                b.logits[j] = True
                pos[seq] += 1
            self._decode()
            for j, seq in enumerate(running):
                self._take(flat, samplers, seq, j, sampling)
            running = [seq for seq in running if not self._done(flat[seq], sampling)]
        return samples

    def _decode_prompt(self, ids: list[int], seq: int) -> int:
        """Decode a prompt into ``seq`` in chunks of the batch size; the row of its last logits."""
        b = self._batch.batch
        size = self.n_batch
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            b.n_tokens = len(chunk)
            for j, token in enumerate(chunk):
                b.token[j], b.pos[j], b.n_seq_id[j], b.seq_id[j][0] = token, start + j, 1, seq
                b.logits[j] = start + j == len(ids) - 1
            self._decode()
        return len(ids) - 1 - (len(ids) - 1) // size * size

    def _decode(self) -> None:
        import llama_cpp

        rc = llama_cpp.llama_decode(self._context.ctx, self._batch.batch)
        if rc != 0:
            raise EngineError(f"llama.cpp could not decode the batch (code {rc})")

    def _take(self, flat: list[Sample], samplers, seq: int, row: int,
              sampling: GroupSampling) -> None:
        """Draw sequence ``seq``'s next token from logits row ``row``; record it and its log-prob."""
        import llama_cpp

        token = llama_cpp.llama_sampler_sample(samplers[seq], self._context.ctx, row)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._context.ctx, row),
                                       shape=(self.n_vocab,))
        sample = flat[seq]
        sample.ids.append(int(token))
        sample.logprobs.append(_logprob(logits, int(token), sampling.temperature))
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            sample.finish_reason = "stop"

    @staticmethod
    def _done(sample: Sample, sampling: GroupSampling) -> bool:
        return sample.finish_reason == "stop" or len(sample.ids) >= sampling.max_tokens

    def _sampler(self, sampling: GroupSampling, seed: int):
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda s: llama_cpp.llama_sampler_chain_add(chain, s)  # noqa: E731
        if sampling.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
            return chain
        if sampling.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        if sampling.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
        add(llama_cpp.llama_sampler_init_dist(seed % 2**32))
        return chain


def _logprob(logits: np.ndarray, token: int, temperature: float) -> float:
    """log softmax(logits / T)[token] (T = 1 for greedy answers)."""
    x = logits / temperature if temperature > 0 else logits
    m = float(x.max())
    return float(x[token] - m - np.log(np.exp(x - m, dtype=np.float32).sum(dtype=np.float64)))
