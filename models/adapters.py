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
# fullmatch, never match with "$": "$" also matches before a final newline ("nl\n")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    meta: dict = field(default_factory=dict)  # meta.json, less any field of the wrong shape
    problem: str | None = None  # why meta.json is damaged (one line); None when it is sound


def check_name(name: str) -> str:
    """``name`` if it can be a folder name on every platform, else AdapterError."""
    if not NAME_RE.fullmatch(name or ""):
        raise AdapterError(
            f"{name!r} is not a valid adapter name: use up to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def _load_meta(path: Path) -> tuple[dict | None, str | None]:
    """The folder's meta.json as a dict (None when absent or not a JSON object), and what
    is wrong with it (None when nothing is)."""
    file = path / META_NAME
    if not file.exists():
        return None, None
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"meta.json cannot be read: {exc.strerror or exc}"
    except ValueError as exc:  # edited by hand into something else, or cut short
        return None, f"meta.json is not valid JSON: {str(exc).splitlines()[0]}"
    except RecursionError:  # "[[[[..." thousands deep: the parser gives up
        return None, "meta.json nests too deeply to be read"
    if not isinstance(meta, dict):
        return None, f"meta.json holds {_json_kind(meta)}, not a JSON object"
    return meta, None


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    for types, name in ((str, "a string"), ((int, float), "a number"), (list, "a list"),
                        (dict, "an object")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_time(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


# What the readers (lists, pickers, the Stats tab, jobs --from an adapter) rely on.
_TOP_FIELDS = {"name": (str, "a string"), "kind": (str, "a string"),
               "created_at": (_is_time, "an ISO 8601 time"), "gguf": (str, "a string"),
               "metrics": (dict, "an object"), "drift": (dict, "an object"),
               "base": (dict, "an object"), "config": (dict, "an object"),
               "data": (dict, "an object"), "versions": (dict, "an object"),
               "parent": (dict, "an object")}
_METRIC_KEYS = ("reward", "pair_accuracy", "kl")  # numbers key_metric() shows


def _fits(value, check) -> bool:
    if isinstance(check, type):
        return isinstance(value, check) and not isinstance(value, bool)
    return check(value)


def _sound_meta(meta: dict) -> tuple[dict, list[str]]:
    """``meta`` without the fields of the wrong shape, and one line for each dropped."""
    meta, problems = dict(meta), []

    def drop(container: dict, key: str, where: str, wanted: str) -> None:
        problems.append(f"'{where}' is {_json_kind(container.pop(key))}, not {wanted}")

    for key, (check, wanted) in _TOP_FIELDS.items():
        if key in meta and meta[key] is None:  # null: as good as absent
            del meta[key]
        elif key in meta and not _fits(meta[key], check):
            drop(meta, key, key, wanted)
    if "metrics" in meta:
        meta["metrics"] = metrics = dict(meta["metrics"])
        for stage in ("before", "after"):
            if metrics.get(stage) is not None and not isinstance(metrics[stage], dict):
                drop(metrics, stage, f"metrics.{stage}", "an object")
            elif isinstance(metrics.get(stage), dict):
                metrics[stage] = values = dict(metrics[stage])
                for key in _METRIC_KEYS:
                    if values.get(key) is not None and not _is_number(values[key]):
                        drop(values, key, f"metrics.{stage}.{key}", "a number")
    if "drift" in meta:
        meta["drift"] = drift = dict(meta["drift"])
        for name in list(drift):
            d = drift[name]
            if not isinstance(d, dict):
                drop(drift, name, f"drift.{name}", "an object")
            elif d.get("kl") is not None and not _is_number(d["kl"]):
                drop(drift, name, f"drift.{name}.kl", "a number")
            elif d.get("measured_at") is not None and not isinstance(d["measured_at"], str):
                drop(drift, name, f"drift.{name}.measured_at", "a string")
    for field_name, keys in (("base", ("name", "path", "sha256")),
                             ("parent", ("name", "path", "created_at", "kind"))):
        if field_name in meta:
            meta[field_name] = record = dict(meta[field_name])
            for key in keys:
                if record.get(key) is not None and not isinstance(record[key], str):
                    drop(record, key, f"{field_name}.{key}", "a string")
    return meta, problems


def _read_meta(path: Path) -> tuple[dict, str | None]:
    """The folder's meta.json with every field of the wrong shape left out, and one line
    saying what was wrong with it (None when nothing was). Never raises."""
    raw, problem = _load_meta(path)
    meta, problems = _sound_meta(raw or {})
    if problems and problem is None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        problem = f"meta.json: {problems[0]}{more}"
    return meta, problem


def _from_dir(path: Path) -> AdapterInfo:
    meta, problem = _read_meta(path)
    gguf = path / GGUF_NAME
    created = meta.get("created_at") or _mtime(path)
    return AdapterInfo(
        name=path.name, path=path, gguf_path=gguf if gguf.is_file() else None,
        kind=meta.get("kind") or "lora", created_at=created,
        base_hash=(meta.get("base") or {}).get("sha256"), metrics=meta.get("metrics") or {},
        meta=meta, problem=problem,
    )


def _meta_to_update(folder: Path) -> dict:
    """meta.json as it is on disk, to change a field of; AdapterError where it cannot be
    read as a JSON object (rather than overwrite what a user may want back)."""
    raw, problem = _load_meta(folder)
    if problem is not None:
        raise AdapterError(f"{folder.name}: {problem}; not changed: fix or remove "
                           f"{folder / META_NAME}")
    return raw or {}


def check_meta_writable(info: "AdapterInfo") -> None:
    """AdapterError unless the adapter's meta.json can take a new measurement."""
    if info.path.is_dir():
        _meta_to_update(info.path)


def runnable_gguf(info: "AdapterInfo") -> Path:
    """The GGUF LoRA llama.cpp runs for this adapter; AdapterError saying what is missing."""
    if info.gguf_path is not None:
        return info.gguf_path
    if _is_scorer(info.path):
        raise AdapterError(f"{info.path}: {info.name!r} is a reward model (a scoring head, "
                           "no GGUF LoRA): llama.cpp cannot run it")
    raise AdapterError(f"{info.path}: no {GGUF_NAME} in this folder: not a GGUF LoRA adapter "
                       "(make one from a PEFT folder with 'diptych adapters export-gguf')")


def _is_scorer(folder: Path) -> bool:
    """Whether the folder's PEFT adapter is a scorer (a sequence classifier: a reward model),
    which a job writes no GGUF LoRA for, as PEFT's ``adapter_config.json`` says."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("task_type") == "SEQ_CLS"


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def _registered(path: Path) -> bool:
    return (path.is_dir() and not path.name.startswith(".")
            and ((path / META_NAME).is_file() or (path / GGUF_NAME).is_file()))


def list_adapters(root: str | os.PathLike | None = None) -> list[AdapterInfo]:
    """Registered adapters, newest first; unfinished jobs' temporary folders are skipped."""
    folder = paths.data_dir(root) / "adapters"
    if not folder.is_dir():  # listing makes nothing: a read-only data folder has no adapters
        return []
    found = [_from_dir(p) for p in folder.iterdir() if _registered(p)]
    return sorted(found, key=lambda a: a.created_at, reverse=True)


def resolve(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> AdapterInfo:
    """A registered name, an adapter folder, or a bare GGUF LoRA file."""
    text = str(name_or_path)
    if NAME_RE.fullmatch(text) and _registered(paths.adapters_dir(root) / text):
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
    raw, _ = _load_meta(target)
    if raw:  # a damaged meta.json is left as it is
        # Votes name the adapter they were cast on: its old names keep them counted.
        former = raw.get("former_names") if isinstance(raw.get("former_names"), list) else []
        raw["former_names"] = [*former, name]
        raw["name"] = new_name
        _write_meta(target, raw)
    return _from_dir(target)


def stable_id(info: AdapterInfo) -> str | None:
    """What names an adapter across renames: the sha256 of its GGUF LoRA (None without one)."""
    return catalog.file_hash(info.gguf_path) if info.gguf_path is not None else None


def names(info: AdapterInfo) -> list[str]:
    """Every name the adapter had, current first (votes keep the name they were cast on)."""
    former = info.meta.get("former_names")
    former = [n for n in former if isinstance(n, str)] if isinstance(former, list) else []
    return [info.name, *reversed(former)]


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
    meta = _meta_to_update(info.path)
    earlier = meta.get("drift") if isinstance(meta.get("drift"), dict) else {}
    meta["drift"] = {**earlier, **results}
    _write_meta(info.path, meta)
    return _from_dir(info.path)


def drift_kl(info: AdapterInfo, which: str = "held_out") -> float | None:
    """The adapter's stored mean per-token KL from the base on one prompt set, if measured."""
    value = ((info.meta.get("drift") or {}).get(which) or {}).get("kl")
    return float(value) if isinstance(value, (int, float)) else None


def delete(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """Unregister the adapter and remove its files. An adapter that is a symbolic link to
    a folder elsewhere loses only its link: the folder it names is left as it is and
    returned (None otherwise)."""
    path = _named(name, root)
    # Unregister at once (a rename is atomic), then remove the files at leisure.
    doomed = path.parent / f".deleted-{name}-{os.getpid()}"
    os.rename(path, doomed)
    if doomed.is_symlink():  # rmtree refuses a link: it would stay behind for ever
        target = Path(os.path.realpath(doomed))
        doomed.unlink()
        return target
    shutil.rmtree(doomed, ignore_errors=True)
    return None


def describe(info: AdapterInfo) -> str:
    """The line an adapter gets in pickers and lists: name, kind, date, key metric."""
    metric = key_metric(info)
    date = (info.created_at or "")[:16].replace("T", " ")
    damaged = f" · damaged: {info.problem}" if info.problem else ""
    return f"{info.name} · {info.kind} · {date}" + (f" · {metric}" if metric else "") + damaged


def key_metric(info: AdapterInfo) -> str:
    """One short line for lists: how far the adapter moved what its job measured."""
    before, after = info.metrics.get("before") or {}, info.metrics.get("after") or {}
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


def check_trained_base(folder: str | os.PathLike, base_gguf_path: str | os.PathLike) -> None:
    """Refuse an adapter folder whose meta.json says it was trained on another base file
    (a fine-tune of the same shape would pass the shape checks and answer garbage)."""
    folder, base = Path(folder), Path(base_gguf_path)
    meta, _ = _read_meta(folder)
    trained = (meta.get("base") or {}).get("sha256")
    if trained and trained != catalog.file_hash(base):
        was = (meta.get("base") or {}).get("name") or "another model"
        raise AdapterError(f"{folder.name} was trained on {was} (sha256 {trained[:12]}), "
                           f"not on {base.name} (sha256 {catalog.file_hash(base)[:12]})")


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
    check_trained_base(adapter_path.parent, base.path)
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
