"""The base model's weights for PyTorch: the very GGUF the panes run, dequantized once.

transformers reads a GGUF with ``gguf_file=`` and dequantizes it to dense tensors. That
takes about half a minute for the bundled 270M model (the tokenizer alone about ten
seconds), so the result is saved as safetensors + tokenizer + config in a cache folder
named by the GGUF's sha256; later jobs load it in a few seconds. The cache is written to a
temporary folder and renamed into place, so a conversion killed halfway leaves nothing a
later job could mistake for a cache.

The tokenizer's chat template is set to the template the panes render with
(``diptych.models.templates``), so TRL formats training examples exactly as the app
formats prompts. That template writes ``<bos>`` as text; TRL tokenizes rendered chats
with ``add_special_tokens=False`` and we also turn the tokenizer's own BOS off, so every
sequence starts with exactly one BOS, as in llama.cpp (tests/test_base_weights.py checks
that the ids equal llama.cpp's).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GgufConfig,
)

from diptych.models import catalog

ENV_VAR = "DIPTYCH_CACHE"


def cache_root() -> Path:
    root = os.environ.get(ENV_VAR) or Path(platformdirs.user_cache_dir("diptych", appauthor=False)) / "base"
    return Path(root).expanduser()


def cache_dir(gguf_path: str | os.PathLike) -> Path:
    """Where the dequantized weights of this exact GGUF file live (may not exist yet)."""
    return cache_root() / catalog.file_hash(gguf_path)


def ensure_cached(gguf_path: str | os.PathLike) -> Path:
    """The cache folder of ``gguf_path``, converting the GGUF first if it is not there."""
    target = cache_dir(gguf_path)
    if (target / "config.json").is_file():
        return target
    gguf_path = Path(gguf_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # GGUF-loaded models are marked quantized and refuse save_pretrained. Asking for a
        # dense model (dequantize=True) makes transformers drop that mark after loading, so
        # the model saves like any other. It also keeps the weights trainable on machines
        # where transformers would otherwise keep them packed in GGUF blocks.
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent job's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(gguf_path: str | os.PathLike):
    """The base's tokenizer with the panes' chat template and no BOS of its own."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_cached(gguf_path))
    tokenizer.chat_template = catalog.read_info(gguf_path).default_template().source
    tokenizer.add_bos_token = False  # the template writes it
    return tokenizer


def load_base(gguf_path: str | os.PathLike, dtype: torch.dtype = torch.float32,
              device: str | torch.device | None = None, reward_head: bool = False):
    """(model, tokenizer) for the GGUF the panes run.

    ``reward_head=True`` gives a sequence-classification model with one output (a reward
    model) on the same base weights; its head starts untrained.
    """
    path = ensure_cached(gguf_path)
    tokenizer = load_tokenizer(gguf_path)
    if reward_head:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        # Generation (GRPO's rollouts, evaluations) stops where the panes stop: at the
        # template's end-of-turn tokens as well as at EOS.
        stops = catalog.read_info(gguf_path).default_template().stop
        vocab = tokenizer.get_vocab()
        model.generation_config.eos_token_id = list(dict.fromkeys(
            [tokenizer.eos_token_id] + [vocab[s] for s in stops if s in vocab]))
    if device is not None:
        model.to(device)
    return model, tokenizer
