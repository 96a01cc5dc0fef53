"""A PEFT LoRA folder -> a GGUF LoRA file that llama.cpp applies on top of the base GGUF.

The same mapping as llama.cpp's own ``convert_lora_to_gguf.py``, without its model
classes: each PEFT module name goes through the ``gguf`` package's tensor-name map for the
base's architecture (``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q``), and
``lora_A`` / ``lora_B`` are written as ``<name>.weight.lora_a`` / ``.lora_b``. llama.cpp
scales the product by ``adapter.lora.alpha / rank``, as PEFT does with ``lora_alpha / r``.

Where the converter changed a weight on its way to GGUF, the LoRA gets the same change:

- llama (and Mistral, which is llama in GGUF): ``convert_hf_to_gguf.py`` permutes the rows
  of q and k (Hugging Face's rotary halves -> llama.cpp's interleaved pairs). The LoRA's
  update is ``B @ A``, so ``lora_B``'s rows get that permutation and ``lora_A`` none.
- phi3: q, k and v are one fused ``qkv_proj`` and gate and up one ``gate_up_proj`` in
  Hugging Face as in GGUF (``attn_qkv``, ``ffn_up``), in the same row order: the LoRA maps
  one to one.
- Gemma's norm weights are stored as 1 + w, but a LoRA never targets a norm.

Any other architecture is refused with one line naming it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import gguf
import numpy as np

from diptych.models import adapters, catalog
from diptych.models.errors import UserError

SUPPORTED = ("gemma", "gemma2", "gemma3", "llama", "phi3", "qwen2", "qwen3")
# Hugging Face config ``model_type`` -> GGUF ``general.architecture``
MODEL_TYPES = {"gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3", "gemma3_text": "gemma3",
               "llama": "llama", "mistral": "llama", "phi3": "phi3", "qwen2": "qwen2",
               "qwen3": "qwen3"}
PEFT_PREFIX = "base_model.model."
PARTS = {".lora_A.weight": "lora_a", ".lora_B.weight": "lora_b"}


class ExportError(UserError, ValueError):
    """A PEFT adapter that cannot become a GGUF LoRA for this base, and why."""


def _peft_config(peft_dir: Path) -> dict:
    path = peft_dir / "adapter_config.json"
    if not path.is_file():
        raise ExportError(f"{peft_dir} is not a PEFT adapter folder: it has no adapter_config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deeply
        raise ExportError(f"{path}: not a readable adapter config "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                          ) from None
    if not isinstance(config, dict):
        raise ExportError(f"{path}: not a JSON object")
    if config.get("peft_type") != "LORA":
        raise ExportError(f"{peft_dir.name} is a {config.get('peft_type')} adapter, not a LoRA")
    if config.get("task_type") == "SEQ_CLS":
        raise ExportError(f"{peft_dir.name} is a reward model (a scoring head), not a language-model "
                          "LoRA: llama.cpp cannot run it")
    if config.get("use_dora") or config.get("alpha_pattern"):
        raise ExportError(f"{peft_dir.name} uses DoRA or per-module alphas, which GGUF LoRA cannot hold")
    # llama.cpp scales by lora_alpha / rank as PEFT does by lora_alpha / r: both must be there
    for key, kind in (("r", int), ("lora_alpha", (int, float))):
        value = config.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value) \
                or value <= 0:
            what = "has no" if key not in config else f"has {value!r} as"
            raise ExportError(f"{path}: {what} '{key}' (the LoRA's "
                              f"{'rank' if key == 'r' else 'scale'}: a positive number)")
    return config


def _load_tensors(peft_dir: Path) -> dict:
    """The adapter's tensors; ExportError naming the file when it is missing, cut short or
    not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file  # torch: reads bf16 as well as fp32

    path = peft_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise ExportError(f"{peft_dir} has no adapter_model.safetensors")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"{path}: damaged or truncated safetensors file ({reason})") from None


def _trained_on(config: dict) -> str | None:
    """The GGUF architecture of the model the adapter was trained on, when its config is at hand."""
    base = Path(config.get("base_model_name_or_path") or "") / "config.json"
    if not base.is_file():
        return None
    model_type = json.loads(base.read_text(encoding="utf-8")).get("model_type", "")
    if model_type not in MODEL_TYPES:
        raise ExportError(f"cannot map a LoRA of a '{model_type}' model to GGUF; export supports "
                          f"{', '.join(SUPPORTED)} (and mistral as llama)")
    return MODEL_TYPES[model_type]


def _gguf_name(key: str, names: gguf.TensorNameMap, arch: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` -> ``blk.0.attn_q.weight.lora_a``."""
    suffix = next((s for s in PARTS if key.endswith(s)), None)
    if suffix is None:
        raise ExportError(f"{key} is not a LoRA tensor (a trained head or embedding?): "
                          "only LoRA on linear layers can be exported")
    module = key.removeprefix(PEFT_PREFIX)[: -len(suffix)]
    mapped = names.get_name(module)
    if mapped is None:
        raise ExportError(f"{module} has no GGUF tensor name for architecture '{arch}'")
    return f"{mapped}.weight.{PARTS[suffix]}"


def export(peft_dir: str | os.PathLike, out_path: str | os.PathLike,
           base_gguf: str | os.PathLike) -> Path:
    """Write ``out_path`` (atomically) from the PEFT adapter in ``peft_dir``; returns it."""
    peft_dir = Path(peft_dir)
    config = _peft_config(peft_dir)
    arch = _check_arch(base_gguf)
    trained_on = _trained_on(config)
    try:
        adapters.check_trained_base(peft_dir, base_gguf)
    except adapters.AdapterError as exc:
        raise ExportError(str(exc)) from None
    if trained_on and trained_on != arch:
        raise ExportError(f"the adapter was trained on a '{trained_on}' model, but "
                          f"{Path(base_gguf).name} is '{arch}'")
    return write(_load_tensors(peft_dir), config, out_path, base_gguf)


def _check_arch(base_gguf) -> str:
    arch = catalog.read_info(base_gguf).architecture
    if arch not in SUPPORTED:
        raise ExportError(f"cannot map a LoRA to GGUF for '{arch}' models "
                          f"(supported: {', '.join(SUPPORTED)})")
    return arch


def llama_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` of q/k rows (``n_head``: the heads these rows hold):
    each head's two rotary halves become interleaved pairs."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def _converted(name: str, array: np.ndarray, arch: str, fields: dict) -> np.ndarray:
    """The LoRA tensor as the converter would have changed its weight (see the docstring)."""
    if arch == "llama" and name.endswith((".attn_q.weight.lora_b", ".attn_k.weight.lora_b")):
        heads = fields[f"{arch}.attention.head_count"]
        if ".attn_k." in name:
            heads = fields.get(f"{arch}.attention.head_count_kv") or heads
        if not isinstance(heads, int) or array.shape[0] % (2 * heads):
            raise ExportError(f"{name}: cannot permute {array.shape[0]} rows for {heads!r} heads")
        return llama_permute(array, heads)
    return array


def write(tensors: dict, config: dict, out_path: str | os.PathLike,
          base_gguf: str | os.PathLike, check: bool = True) -> Path:
    """Write PEFT LoRA ``tensors`` (PEFT's state-dict names, e.g. from a live model's
    ``get_peft_model_state_dict``) with ``config``'s ``lora_alpha``, ``r`` and
    ``use_rslora`` as a GGUF LoRA for ``base_gguf``, atomically. ``check=False`` skips
    reading the result back against the base (GRPO's rollouts write the same shapes at
    every step)."""
    out_path = Path(out_path)
    base = catalog.read_info(base_gguf)
    arch = _check_arch(base_gguf)
    fields = catalog.read_header_fields(base.path)[0]
    n_blocks = int(fields[f"{arch}.block_count"])
    names = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch),
                                     n_blocks)
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r
        alpha *= math.sqrt(config["r"])

    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for key in sorted(tensors):
            array = tensors[key].detach().float().cpu().numpy()
            if not np.isfinite(array).all():  # a diverged run: llama.cpp would answer garbage
                raise ExportError(f"{key.removeprefix(PEFT_PREFIX)} holds NaN or infinite values: "
                                  "the training diverged (try a lower learning rate)")
            name = _gguf_name(key, names, arch)
            writer.add_tensor(name, np.ascontiguousarray(_converted(name, array, arch, fields)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        if check:  # the check the app makes before loading: every tensor fits the base's shapes
            adapters.check_compatible(tmp, base.path)
        os.replace(tmp, out_path)
    except adapters.AdapterError as exc:
        raise ExportError(str(exc).replace(tmp.name, out_path.name)) from exc
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out_path
