"""The adapter registry: the LoRA adapters training made, and checks before llama.cpp loads one.

Each adapter is a folder ``<data dir>/adapters/<name>/`` holding the PEFT files
(``adapter_config.json``, ``adapter_model.safetensors``), the GGUF LoRA the tuned pane
runs (``adapter.gguf``; a reward model has none), and ``meta.json``: the job's kind and
config, the data it used and its sha256, metrics before and after, the base model's
sha256 and name, when it was made and how long it took, and ``drift``: its mean
per-token KL from the base on prompt sets (``diptych.models.drift``), measured by the job
and again on demand. meta.json is only ever replaced whole.

A training job writes into a hidden temporary folder and renames it into place when
complete, so folders starting with ``.`` are never listed. Headers are read with
the catalog's header reader: no weights are loaded, and no torch is imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from diptych import paths

from . import catalog

GGUF_NAME = "adapter.gguf"
META_NAME = "meta.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AdapterError(catalog.ModelFileError):
    """An adapter that cannot be found or used, with a message that says why."""


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path  # the adapter's folder (for a bare .gguf file: the file itself)
    gguf_path: Path | None  # None for a reward model: it is not run by llama.cpp
    kind: str  # "dpo", "grpo", "reward", or "lora" for a bare GGUF file
    created_at: str
    base_hash: str | None
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def check_name(name: str) -> str:
    """``name`` if it can be a folder name on every platform, else AdapterError."""
    if not NAME_RE.match(name or ""):
        raise AdapterError(
            f"{name!r} is not a valid adapter name: use up to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def _read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or edited by hand into something else
        return {}


def _from_dir(path: Path) -> AdapterInfo:
    meta = _read_meta(path)
    gguf = path / GGUF_NAME
    created = meta.get("created_at") or _mtime(path)
    return AdapterInfo(
        name=path.name, path=path, gguf_path=gguf if gguf.is_file() else None,
        kind=meta.get("kind", "lora"), created_at=created,
        base_hash=(meta.get("base") or {}).get("sha256"), metrics=meta.get("metrics", {}), meta=meta,
    )


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def _registered(path: Path) -> bool:
    return (path.is_dir() and not path.name.startswith(".")
            and ((path / META_NAME).is_file() or (path / GGUF_NAME).is_file()))


def list_adapters(root: str | os.PathLike | None = None) -> list[AdapterInfo]:
    """Registered adapters, newest first; unfinished jobs' temporary folders are skipped."""
    found = [_from_dir(p) for p in paths.adapters_dir(root).iterdir() if _registered(p)]
    return sorted(found, key=lambda a: a.created_at, reverse=True)


def resolve(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> AdapterInfo:
    """A registered name, an adapter folder, or a bare GGUF LoRA file."""
    text = str(name_or_path)
    if NAME_RE.match(text) and _registered(paths.adapters_dir(root) / text):
        return _from_dir(paths.adapters_dir(root) / text)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_dir(path.resolve())
    if path.is_file():
        path = path.resolve()
        return AdapterInfo(name=path.stem, path=path, gguf_path=path, kind="lora",
                           created_at=_mtime(path), base_hash=None)
    names = ", ".join(a.name for a in list_adapters(root)) or "none yet"
    raise AdapterError(f"no adapter named {text!r} (registered: {names}) and no such file or folder")


def _named(name: str, root) -> Path:
    path = paths.adapters_dir(root) / check_name(name)
    if not _registered(path):
        raise AdapterError(f"no adapter named {name!r}")
    return path


def rename(name: str, new_name: str, root: str | os.PathLike | None = None) -> AdapterInfo:
    source = _named(name, root)
    target = source.parent / check_name(new_name)
    if target.exists():
        raise AdapterError(f"an adapter named {new_name!r} already exists")
    os.rename(source, target)
    meta = _read_meta(target)
    if meta:
        meta["name"] = new_name
        _write_meta(target, meta)
    return _from_dir(target)


def _write_meta(folder: Path, meta: dict) -> None:
    """Replace meta.json whole: a reader sees the old file or the new one, never half."""
    tmp = folder / f".{META_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / META_NAME)


def record_drift(info: AdapterInfo, results: dict[str, dict]) -> AdapterInfo:
    """Store drift measurements (``{"held_out": Drift.to_dict(), ...}``) in the adapter's
    meta.json, keeping the other sets' earlier results."""
    if not info.path.is_dir():
        raise AdapterError(f"{info.path.name} is a bare GGUF file, not an adapter folder: "
                           "there is no meta.json to keep the measurement in")
    meta = _read_meta(info.path)
    meta["drift"] = {**(meta.get("drift") or {}), **results}
    _write_meta(info.path, meta)
    return _from_dir(info.path)


def drift_kl(info: AdapterInfo, which: str = "held_out") -> float | None:
    """The adapter's stored mean per-token KL from the base on one prompt set, if measured."""
    value = ((info.meta.get("drift") or {}).get(which) or {}).get("kl")
    return float(value) if isinstance(value, (int, float)) else None


def delete(name: str, root: str | os.PathLike | None = None) -> None:
    path = _named(name, root)
    # Unregister at once (a rename is atomic), then remove the files at leisure.
    doomed = path.parent / f".deleted-{name}-{os.getpid()}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def describe(info: AdapterInfo) -> str:
    """The line an adapter gets in pickers and lists: name, kind, date, key metric."""
    metric = key_metric(info)
    date = (info.created_at or "")[:16].replace("T", " ")
    return f"{info.name} · {info.kind} · {date}" + (f" · {metric}" if metric else "")


def key_metric(info: AdapterInfo) -> str:
    """One short line for lists: how far the adapter moved what its job measured."""
    before, after = info.metrics.get("before", {}), info.metrics.get("after", {})
    parts = []
    for key, label, fmt in (("reward", "reward", "{:.2f}"), ("pair_accuracy", "pair acc", "{:.0%}")):
        if after.get(key) is not None:
            was = fmt.format(before[key]) + "→" if before.get(key) is not None else ""
            parts.append(f"{label} {was}{fmt.format(after[key])}")
            break
    kl = drift_kl(info)
    if kl is not None:
        parts.append(f"KL {kl:.3f}")
    elif after.get("kl") is not None:
        parts.append(f"KL {after['kl']:.3f}")
    return ", ".join(parts) or "no metrics"


def check_compatible(adapter_gguf_path: str | os.PathLike, base_gguf_path: str | os.PathLike) -> None:
    """Raise AdapterError unless the file is a GGUF LoRA whose tensors fit this base."""
    adapter_path = Path(adapter_gguf_path)
    try:
        info = catalog.read_info(adapter_path)
    except catalog.ModelFileError as exc:
        raise AdapterError(f"not a usable LoRA adapter: {exc}") from exc
    base = catalog.read_info(base_gguf_path)
    name = adapter_path.name
    if info.general_type != "adapter":
        raise AdapterError(f"{name} is a full model (general.type '{info.general_type}'), "
                           "not a LoRA adapter")
    fields, table = catalog.read_header_fields(adapter_path)
    kind = fields.get("adapter.type")
    if kind != "lora":
        raise AdapterError(f"{name} is a '{kind}' adapter; only LoRA adapters are supported")
    if info.architecture != base.architecture:
        raise AdapterError(f"{name} is a LoRA for '{info.architecture}' models, but the base "
                           f"model {base.path.name} is '{base.architecture}'")
    base_shapes = {t[0]: list(t[1]) for t in catalog.read_header_fields(base.path)[1]}
    tensors = {t[0]: list(t[1]) for t in table}
    targets = [n[: -len(".lora_a")] for n in tensors if n.endswith(".lora_a")]
    if not targets:
        raise AdapterError(f"{name} holds no LoRA tensors")
    for target in targets:
        a, b = tensors[target + ".lora_a"], tensors.get(target + ".lora_b")
        if b is None:
            raise AdapterError(f"{name}: {target}.lora_a has no matching lora_b")
        if target not in base_shapes:
            raise AdapterError(f"{name}: {target} is not a tensor of the base model {base.path.name}")
        # GGUF shapes list the fastest dimension first: base [n_in, n_out], lora_a [n_in, r],
        # lora_b [r, n_out]; llama.cpp checks the same when it loads the adapter.
        w = base_shapes[target]
        if len(a) != 2 or len(b) != 2 or a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            raise AdapterError(
                f"{name}: {target} LoRA shapes {a} x {b} do not fit the base tensor {w} "
                f"of {base.path.name} (made for another model size?)"
            )
