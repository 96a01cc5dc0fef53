"""The llama.cpp engine behind each pane: load a GGUF, set a LoRA, stream tokens, score text.

One ``Engine`` wraps one ``llama_cpp.Llama`` (one model + one context). A ``Llama`` is not
safe to call from two threads at once, so an engine refuses a second concurrent call
instead of corrupting its state. The base weights are memory-mapped, so two engines on the
same file share the page cache.

LoRA adapters are set on the context through llama.cpp's adapter API rather than
``Llama(lora_path=...)``: that keeps mmap on, and switching adapters costs reading the
small adapter file, not reloading the base.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import math
import os
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from . import catalog, native, templates
from .native import default_threads
from .errors import UserError
from .limits import SEED_MAX

# llama.cpp reports the reason a load failed only through its log: keep the last lines.
_LOG_TAIL: deque[str] = deque(maxlen=40)
_log_callback = None


def _install_log_capture() -> None:
    global _log_callback
    import llama_cpp

    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):  # noqa: ARG001 - ctypes signature
        if level in (2, 3):  # warnings and errors
            _LOG_TAIL.append(text.decode("utf-8", "replace").strip())

    _log_callback = capture  # keep a reference: ctypes does not
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))


def _last_log_error() -> str:
    lines = [line for line in _LOG_TAIL if line]
    return lines[-1] if lines else "no reason given"


class EngineError(UserError, RuntimeError):
    """An engine operation that could not be done, with a message for the user."""


class EngineBusy(EngineError):
    """The engine is already generating or scoring in another thread."""


class SamplingError(UserError, ValueError):
    """Sampling parameters llama.cpp cannot use, with a message naming the field."""


@dataclass
class SamplingParams:
    """How an engine samples; every field is checked when made (SamplingError) and again
    before each answer, since the fields can be set afterwards."""

    temperature: float = 0.8  # 0 or more; 0: always the likeliest token
    top_p: float = 0.95  # 0 to 1; 1: no cut
    top_k: int = 40  # 0 or more; 0: no cut
    min_p: float = 0.05  # 0 to 1; 0: no cut
    repeat_penalty: float = 1.1  # more than 0; 1: none
    max_tokens: int = 256  # 1 or more
    seed: int | None = None  # 0 to SEED_MAX; None: a fresh random seed for every answer
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SamplingError naming the first field out of range."""
        def number(name, low, high=math.inf, low_open=False):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value > high \
                    or value < low or (low_open and value == low):
                bounds = (f"more than {low:g}" if low_open else f"{low:g} or more") \
                    if high == math.inf else f"from {low:g} to {high:g}"
                raise SamplingError(f"sampling parameter {name} must be a number {bounds}, "
                                    f"not {value!r}")

        def integer(name, low, high=None):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low \
                    or (high is not None and value > high):
                bounds = f"{low} or more" if high is None else f"from {low} to {high}"
                raise SamplingError(f"sampling parameter {name} must be an integer {bounds}, "
                                    f"not {value!r}")

        number("temperature", 0.0)
        number("top_p", 0.0, 1.0)
        integer("top_k", 0)
        number("min_p", 0.0, 1.0)
        number("repeat_penalty", 0.0, low_open=True)
        integer("max_tokens", 1)
        if self.seed is not None:
            integer("seed", 0, SEED_MAX)
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise SamplingError(f"sampling parameter stop must be a list of strings, "
                                f"not {self.stop!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Token:
    id: int
    text: str  # the text this token adds to the answer (may be "" mid-UTF-8 sequence)
    logprob: float | None = None
    top: list[tuple[str, float]] | None = None  # the likeliest alternatives


@dataclass
class Completion:
    text: str
    n_tokens: int
    n_prompt_tokens: int
    ttft_s: float
    tokens_per_s: float
    total_s: float
    finish_reason: str  # "stop", "length" or "cancelled"
    seed: int
    tokens: list[Token] = field(default_factory=list, repr=False)


class Engine:
    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        template: templates.ChatTemplate | None = None,
        adapter: str | os.PathLike | None = None,
        adapter_scale: float = 1.0,
    ):
        self.info = catalog.read_info(model_path)
        if self.info.general_type == "adapter":
            raise catalog.ModelFileError(
                f"{self.info.path.name} is a LoRA adapter, not a model: "
                "open it as the tuned pane's adapter instead."
            )
        self.template = template or self.info.default_template()
        self.n_threads = n_threads or default_threads()
        self.adapter_path: Path | None = None
        self.adapter_scale = 1.0
        self._adapter = None
        self._lock = threading.Lock()
        self._llama = self._load(n_ctx)
        if adapter:
            self.set_adapter(adapter, adapter_scale)

    # -- loading -------------------------------------------------------------------------

    def _load(self, n_ctx: int):
        t0 = time.perf_counter()
        native.extra_buffers_for(self.info.path)  # checked here, so its one line is not wrapped
        _install_log_capture()
        _LOG_TAIL.clear()
        n_ctx = min(n_ctx, self.info.context_length or n_ctx)
        try:
            llama = native.llama(
                self.info.path,
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                use_mmap=True,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise catalog.ModelFileError(
                f"llama.cpp could not load {self.info.path.name} "
                f"(architecture '{self.info.architecture}'): {_last_log_error()}"
            ) from exc
        self.load_s = time.perf_counter() - t0
        return llama

    @property
    def n_ctx(self) -> int:
        return self._llama.n_ctx()

    @property
    def adapter_name(self) -> str | None:
        """An adapter's registered name (its folder) or its file name."""
        if self.adapter_path is None:
            return None
        path = self.adapter_path
        return path.parent.name if path.name == "adapter.gguf" else path.stem

    @property
    def label(self) -> str:
        if self.adapter_path is None:
            return f"{self.info.name} · no adapter"
        scale = f" ×{self.adapter_scale:g}" if self.adapter_scale != 1.0 else ""
        return f"{self.info.name} + LoRA {self.adapter_name}{scale}"

    @property
    def n_vocab(self) -> int:
        return self._llama.n_vocab()

    @property
    def n_batch(self) -> int:
        """The most tokens one decode takes."""
        return self._llama.n_batch

    @property
    def model(self):
        """The loaded llama.cpp model (a ``llama_cpp`` ``LlamaModel``: weights and
        vocabulary), for a second context over the same mmap'd weights."""
        return self._llama._model

    def set_threads(self, n_threads: int) -> None:
        self.n_threads = max(1, int(n_threads))
        self._llama._ctx.set_n_threads(self.n_threads, self.n_threads)

    def set_adapter(self, path: str | os.PathLike | None, scale: float = 1.0) -> float:
        """Apply a GGUF LoRA to this context (None removes it). Returns seconds taken.

        The base weights stay loaded; only the adapter file is read.
        """
        import llama_cpp

        with self.exclusive():
            t0 = time.perf_counter()
            if path is not None:
                path = Path(path)
                _check_adapter(path, self.info.path)
            self._adapter = apply_lora(self._llama.model, self._llama.ctx, path, scale, self._adapter)
            self.adapter_path = path
            self.adapter_scale = scale if path is not None else 1.0
            # The cached KV of earlier prompts was computed with the old weights.
            self._llama.reset()
            return time.perf_counter() - t0

    def close(self) -> None:
        import llama_cpp

        with self._lock:
            if self._adapter:
                llama_cpp.llama_set_adapters_lora(self._llama.ctx, None, 0, None)
                llama_cpp.llama_adapter_lora_free(self._adapter)
                self._adapter = None
            self._llama.close()

    # -- prompts -------------------------------------------------------------------------

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return templates.render(self.template, messages, add_generation_prompt)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text``, with no BOS added.

        ``special``: parse special tokens written as text (``<end_of_turn>``), as in a
        rendered prompt, where the template writes them (BOS included). False tokenizes
        plain text, such as an answer or a word, in which they are ordinary characters.
        """
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def detokenize(self, ids: list[int], special: bool = False) -> str:
        """The text of ``ids``; ``special``: spell control tokens (``<eos>``) too."""
        return self._llama.detokenize(ids, special=special).decode("utf-8", "replace")

    def token_text(self, token_id: int) -> str:
        return self.detokenize([token_id], special=True)

    # -- generation ----------------------------------------------------------------------

    def stream(
        self,
        prompt: str | list[dict],
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        top_logprobs: int = 0,
    ) -> Iterator[Token | Completion]:
        """Yield ``Token``s as they are sampled, then one final ``Completion``.

        ``prompt`` is a rendered string or a list of messages (rendered with this
        engine's template). Setting ``cancel`` stops the stream before the next token.
        ``top_logprobs`` > 0 also reports each token's log-probability and alternatives.
        """
        params = params or SamplingParams()
        params.validate()
        if not isinstance(prompt, str):
            prompt = self.render(prompt)
        with self.exclusive():
            yield from self._stream(prompt, params, cancel, top_logprobs)

    def generate(self, prompt, params=None, cancel=None, top_logprobs: int = 0) -> Completion:
        """Run :meth:`stream` to the end and return its ``Completion``."""
        for item in self.stream(prompt, params, cancel, top_logprobs):
            if isinstance(item, Completion):
                return item
        raise AssertionError("stream ended without a completion")

    def _stream(self, prompt, params, cancel, top_logprobs):
        import llama_cpp

        llama = self._llama
        t0 = time.perf_counter()
        prompt_tokens = self.tokenize(prompt)
        room = llama.n_ctx() - len(prompt_tokens)
        if room <= 1:
            raise EngineError(
                f"the conversation is {len(prompt_tokens)} tokens, more than this model's "
                f"context of {llama.n_ctx()}: start a new conversation"
            )
        max_tokens = min(params.max_tokens, room)
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        llama.set_seed(seed)
        stops = tuple(s for s in (*params.stop, *self.template.stop) if s)
        hold = max((len(s) for s in stops), default=1) - 1
        vocab = llama._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")("replace")

        text = ""  # everything decoded so far
        shown = 0  # how much of ``text`` has been yielded
        tokens: list[Token] = []
        finish = "length"
        t_first = t_last = None
        gen = llama.generate(
            prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
        )
        try:
            for token_id in gen:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                now = time.perf_counter()
                t_first = t_first or now
                t_last = now
                if llama_cpp.llama_vocab_is_eog(vocab, token_id):
                    finish = "stop"
                    break
                logprob, top = (None, None)
                if top_logprobs:
                    logprob, top = self._logprobs_of_last(token_id, top_logprobs)
                text += decoder.decode(llama.detokenize([token_id], special=True))
                cut = _find_stop(text, stops)
                if cut is not None:
                    text = text[:cut]
                    finish = "stop"
                visible = len(text) if finish == "stop" else max(shown, len(text) - hold)
                token = Token(token_id, text[shown:visible], logprob, top)
                shown = visible
                tokens.append(token)
                yield token
                if finish == "stop" or len(tokens) >= max_tokens:
                    break
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
        finally:
            gen.close()
        if shown < len(text):  # the held-back tail turned out not to be a stop string
            tokens.append(Token(-1, text[shown:]))
            yield tokens[-1]
        n = sum(1 for t in tokens if t.id >= 0)
        decode_s = (t_last - t_first) if t_first and t_last else 0.0
        yield Completion(
            text=text,
            n_tokens=n,
            n_prompt_tokens=len(prompt_tokens),
            ttft_s=(t_first - t0) if t_first else 0.0,
            tokens_per_s=((n - 1) / decode_s) if n > 1 and decode_s > 0 else 0.0,
            total_s=time.perf_counter() - t0,
            finish_reason=finish,
            seed=seed,
            tokens=tokens,
        )

    def _logprobs_of_last(self, token_id: int, k: int):
        """Log-probability of the token just sampled, and the top ``k`` alternatives."""
        logp = log_softmax(self.logits(-1))
        top = np.argpartition(-logp, k)[:k]
        top = top[np.argsort(-logp[top])]
        return float(logp[token_id]), [(self.token_text(int(i)), float(logp[i])) for i in top]

    # -- direct evaluation, for code that reads the logits itself (scoring, the judge) ---
    # These change the context's state: call them inside ``exclusive()``.

    @contextlib.contextmanager
    def exclusive(self):
        """Hold this engine for the calls inside; EngineBusy if another thread holds it."""
        if not self._lock.acquire(blocking=False):
            raise EngineBusy("this model is busy in another call")
        try:
            yield
        finally:
            self._lock.release()

    def clear(self) -> None:
        """Empty the context, so that the next generation evaluates its prompt from scratch."""
        self._llama.reset()
        self._llama._ctx.kv_cache_clear()

    def eval(self, ids: list[int]) -> None:
        """Evaluate ``ids`` after the tokens the context holds (in batches of ``n_batch``);
        ``logits(-1)`` then holds the prediction that follows them."""
        self._llama.eval(ids)

    def decode(self, batch) -> None:
        """Decode a ``llama_cpp`` ``LlamaBatch`` the caller filled (tokens, positions,
        sequences, the rows that want logits). Unlike ``eval``, the context's record of
        its tokens is not updated: ``clear()`` when done."""
        self._llama._ctx.decode(batch)

    def logits(self, row: int = -1) -> np.ndarray:
        """Logits row ``row`` of the last decode (-1: the last one): a view of llama.cpp's
        buffer, valid until the next decode."""
        return np.ctypeslib.as_array(self._llama._ctx.get_logits_ith(row), shape=(self.n_vocab,))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def apply_lora(model, ctx, path: Path | None, scale: float, previous):
    """Apply the GGUF LoRA at ``path`` (None: none) to the llama.cpp context ``ctx`` of
    ``model``, free the ``previous`` adapter handle, and return the new one (or None).
    On failure nothing changes and EngineError says why."""
    import llama_cpp

    new = None
    if path is not None:
        _LOG_TAIL.clear()
        new = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
        if not new:
            raise EngineError(f"llama.cpp refused the adapter {Path(path).name}: {_last_log_error()}")
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(new)
        scales = (ctypes.c_float * 1)(scale)
        rc = llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)
    else:
        rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
    if rc != 0:
        if new:
            llama_cpp.llama_adapter_lora_free(new)
        raise EngineError(f"llama.cpp could not apply the adapter (code {rc})")
    if previous:
        llama_cpp.llama_adapter_lora_free(previous)
    return new


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(cuts) if cuts else None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, in float32, normalised in float64.

    ``exp`` runs in float32 and sums in float64: six times faster than a float64
    log-softmax of 262k entries, and equal to it within 1e-7.
    """
    peak = logits.max(axis=-1, keepdims=True)
    lse = peak.astype(np.float64) + np.log(
        np.exp(logits - peak).sum(axis=-1, keepdims=True, dtype=np.float64))
    return logits - lse.astype(np.float32)


def _check_adapter(path: Path, base_path: Path) -> None:
    """Refuse an adapter that is not a GGUF LoRA for this base, with a specific reason."""
    from . import adapters

    adapters.check_compatible(path, base_path)
