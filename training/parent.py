"""Rounds that continue an adapter: ``diptych train KIND --from ADAPTER``.

The new job's LoRA starts from the parent's weights instead of zeros. Everything else is
as in a fresh job: TRL builds its own LoRA from the job's settings (so the parent must
have the same shape: rank, alpha, target layers, and the same base file), and the
reference for the KL term stays the base (the LoRA switched off), not the parent. The
parent's folder is only read. meta.json records the parent, and :func:`lineage` follows
those records back to the first adapter (v1 -> v2 -> v3; ``lineage.py``, which the app
imports without the training stack).
"""

from __future__ import annotations

import json
from pathlib import Path

from diptych.models import adapters, catalog

from .errors import JobError
from .lineage import lineage  # noqa: F401  (here too: the lineage is this module's subject)

# Which adapters a kind can continue: a language-model LoRA, or a reward model's.
TASK_TYPES = {True: "CAUSAL_LM", False: "SEQ_CLS"}


def resolve(name: str, data_dir, base: Path, writes_gguf: bool) -> adapters.AdapterInfo:
    """The parent adapter, checked against this job's base and kind (JobError otherwise)."""
    try:
        info = adapters.resolve(name, data_dir)
    except adapters.AdapterError as exc:
        raise JobError(f"--from: {exc}") from None
    config = _adapter_config(info)
    if config.get("task_type") != TASK_TYPES[writes_gguf]:
        what = "a reward model" if config.get("task_type") == "SEQ_CLS" else "a chat LoRA"
        raise JobError(f"--from {info.name}: it is {what}; this job kind cannot continue it")
    if info.base_hash and info.base_hash != catalog.file_hash(base):
        raise JobError(f"--from {info.name}: it was trained on another base model "
                       f"({info.meta.get('base', {}).get('name', 'unknown')}), not {base.name}")
    _check_files(info, config)
    return info


def _check_files(info: adapters.AdapterInfo, config: dict) -> None:
    """Refuse a damaged parent before the job loads and tokenizes anything: a rank or alpha
    that is no LoRA's, weights whose file is cut short (its header and size are read only)."""
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise JobError(f"--from {info.name}: its adapter_config.json has {key} = {value!r}, "
                           "not a positive number")
    from safetensors import SafetensorError, safe_open

    path = info.path / "adapter_model.safetensors"
    try:
        with safe_open(path, "numpy") as weights:
            if not list(weights.keys()):
                raise JobError(f"--from {info.name}: {path} holds no weights")
    except (OSError, SafetensorError) as exc:
        raise JobError(f"--from {info.name}: cannot read {path}: {exc}") from None


def _adapter_config(info: adapters.AdapterInfo) -> dict:
    path = info.path / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"--from {info.name}: cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise JobError(f"--from {info.name}: {path} is not a JSON object")
    return config


def check_shape(info: adapters.AdapterInfo, lora) -> None:
    """Refuse a parent whose LoRA has another rank or alpha than this job's ``LoraConfig``."""
    config = _adapter_config(info)
    for key, flag in (("r", "--lora-r"), ("lora_alpha", "--lora-r (alpha is twice the rank)")):
        if config.get(key) != getattr(lora, key):
            raise JobError(f"--from {info.name}: its LoRA has {key} = {config.get(key)}, this job "
                           f"{getattr(lora, key)}; give the same {flag}")


def load_into(model, info: adapters.AdapterInfo) -> None:
    """Copy the parent's LoRA (and any trained head) into the PEFT model TRL built."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from .export_gguf import ExportError

    path = info.path / "adapter_model.safetensors"
    try:
        weights = load_file(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"--from {info.name}: cannot read {path}: {exc}") from None
    wanted = {k for k in model.state_dict() if "lora_" in k}
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as exc:  # a size mismatch: another shape
        raise JobError(f"--from {info.name}: its LoRA does not fit this job's "
                       f"({' '.join(str(exc).split())[:160]})") from None
    missing = [k for k in result.missing_keys if k in wanted]
    if result.unexpected_keys or missing:
        raise JobError(f"--from {info.name}: its LoRA covers other layers than this job's "
                       f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)")


def record(info: adapters.AdapterInfo) -> dict:
    """What meta.json says about the parent."""
    return {"name": info.name, "path": str(info.path), "created_at": info.created_at,
            "kind": info.kind}


def votes_since(cfg) -> str | None:
    """With ``--new-votes``: when the parent (``--from``) was made, so that a round trains on
    the votes cast since; None otherwise."""
    if not getattr(cfg, "new_votes", False):
        return None
    if not cfg.from_adapter:
        raise JobError("--new-votes trains on the votes cast since the --from adapter was made: "
                       "give --from ADAPTER")
    if getattr(cfg, "data", None):
        raise JobError("--new-votes picks votes from the store: leave out --data")
    try:
        return adapters.resolve(cfg.from_adapter, cfg.data_dir).created_at
    except adapters.AdapterError as exc:
        raise JobError(f"--from: {exc}") from None


def newer(records: list[dict], since: str | None) -> list[dict]:
    """The records (export lines with the vote's ``created_at``) of votes cast after ``since``."""
    if since is None:
        return records
    from datetime import datetime

    after = datetime.fromisoformat(since)
    return [r for r in records if datetime.fromisoformat(r["created_at"]) > after]
