"""The GGUF the panes run, loaded for PyTorch: cached once, tokenized exactly like llama.cpp."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from diptych.models import catalog, templates

MESSAGES = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "Héllo  there, <b>who</b> wrote\n\n'Faust'? 😀"},
    {"role": "assistant", "content": "Goethe wrote Faust."},
    {"role": "user", "content": "And   when?"},
]
CHOSEN = [{"role": "assistant", "content": "He finished it in 1831."}]
REJECTED = [{"role": "assistant", "content": "When did he write Werther?"}]


@pytest.fixture(scope="module")
def loaded(bundled_model, weights_cache):
    """(model, tokenizer, seconds of the first load, seconds of a cached load)."""
    from diptych.training.base_weights import load_base

    started = time.monotonic()
    load_base(bundled_model)  # converts, unless an earlier test already did
    first = time.monotonic() - started
    started = time.monotonic()
    model, tokenizer = load_base(bundled_model)
    cached = time.monotonic() - started
    return model, tokenizer, first, cached


def test_conversion_is_cached_by_hash(loaded, bundled_model, weights_cache):
    model, tokenizer, first, cached = loaded
    folder = weights_cache / catalog.file_hash(bundled_model)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert (folder / "manifest.json").is_file()
    # no temporary leftovers (other tests' models may share this cache)
    assert folder.is_dir() and not [p.name for p in weights_cache.iterdir() if p.name.startswith(".")]
    assert model.config.num_hidden_layers == 18 and model.config.hidden_size == 640
    assert "quantization_config" not in model.config.to_dict()  # a plain dense model
    assert cached < 15, f"a cached load took {cached:.1f}s (first load {first:.1f}s)"
    print(f"\nbase weights: first load {first:.1f}s, cached load {cached:.1f}s")


def test_interrupted_conversion_leaves_no_cache(bundled_model, tmp_path, monkeypatch):
    from diptych.training import base_weights

    class Converted:
        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model.safetensors").write_text("half written")

    def interrupt(*args):
        raise KeyboardInterrupt  # stopped after writing, before the rename

    monkeypatch.setenv("DIPTYCH_CACHE", str(tmp_path / "cache"))
    for loader in (base_weights.AutoTokenizer, base_weights.AutoModelForCausalLM):
        monkeypatch.setattr(loader, "from_pretrained", lambda *a, **k: Converted())
    monkeypatch.setattr(base_weights.os, "rename", interrupt)
    with pytest.raises(KeyboardInterrupt):
        base_weights.ensure_cached(bundled_model)
    assert list((tmp_path / "cache").iterdir()) == []


def test_template_is_the_panes(loaded, bundled_model):
    _, tokenizer, _, _ = loaded
    template = catalog.read_info(bundled_model).default_template()
    for generation_prompt in (True, False):
        assert tokenizer.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=generation_prompt
        ) == templates.render(template, MESSAGES, add_generation_prompt=generation_prompt)


def test_trl_trains_on_llama_cpp_tokens_with_one_bos(loaded, bundled_model, tmp_path):
    """The ids TRL's DPOTrainer trains on are llama.cpp's ids for the same rendered text."""
    from datasets import Dataset
    from diptych.models import native
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from diptych.training.base_weights import load_base

    model, tokenizer = load_base(bundled_model)  # the trainer wraps it: not the shared one
    pair = {"prompt": MESSAGES, "chosen": CHOSEN, "rejected": REJECTED}
    trainer = DPOTrainer(
        model=model, processing_class=tokenizer, train_dataset=Dataset.from_list([pair]),
        args=DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none"),
        peft_config=LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    example = trainer.train_dataset[0]
    template = catalog.read_info(bundled_model).default_template()
    llama = native.llama(bundled_model, vocab_only=True, verbose=False)
    try:
        for answer in ("chosen", "rejected"):
            trained = example["prompt_ids"] + example[f"{answer}_ids"]
            text = templates.render(template, MESSAGES + pair[answer], add_generation_prompt=False)
            assert trained == llama.tokenize(text.encode(), add_bos=False, special=True)
            assert trained[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in trained[1:]
        # GRPO tokenizes its prompts with the same call
        prompt_ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                   tokenize=True, return_dict=True)["input_ids"]
        text = templates.render(template, MESSAGES)
        assert prompt_ids == llama.tokenize(text.encode(), add_bos=False, special=True)
        # and plain tokenizer calls add no BOS of their own to the rendered text
        assert tokenizer(text)["input_ids"] == prompt_ids
    finally:
        llama.close()


def test_generation_stops_where_the_panes_stop(loaded):
    model, tokenizer, _, _ = loaded
    stops = set(model.generation_config.eos_token_id)
    assert {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")} <= stops


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    """A tiny Qwen2 GGUF (tests/tiny_models.py) and an empty cache of its own."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import tiny_models

    monkeypatch.setenv("DIPTYCH_CACHE", str(tmp_path / "cache"))
    return tiny_models.build("qwen2", tmp_path / "tiny.gguf"), tmp_path / "cache"


def _damage(folder: Path, how: str) -> None:
    weights = folder / "model.safetensors"
    if how == "truncated":
        with open(weights, "r+b") as fh:
            fh.truncate(weights.stat().st_size // 2)
    elif how == "changed":  # same size, one byte different: only the hash tells
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "missing file":
        (folder / "tokenizer.json").unlink()
    elif how == "no manifest":
        (folder / "manifest.json").unlink()
    elif how == "another converter":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["transformers"] = "0.0.1"
        (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", ["truncated", "changed", "missing file", "no manifest",
                                 "another converter"])
def test_a_damaged_cache_is_converted_again(tiny_cache, how, capfd):
    from diptych.training.base_weights import MANIFEST, check_cache, ensure_cached, load_base

    gguf_path, root = tiny_cache
    folder = ensure_cached(gguf_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == folder.name == catalog.file_hash(gguf_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    _damage(folder, how)
    assert check_cache(folder, folder.name, "qwen2") is not None
    assert ensure_cached(gguf_path) == folder
    assert "are damaged" in capfd.readouterr().err
    assert check_cache(folder, folder.name, "qwen2") is None
    assert [p.name for p in root.iterdir()] == [folder.name]  # nothing set aside is left
    model, _ = load_base(gguf_path)
    assert model.config.model_type == "qwen2"


def test_leftovers_of_dead_conversions_are_removed(tiny_cache):
    import subprocess
    import sys

    from diptych.training.base_weights import ensure_cached

    gguf_path, root = tiny_cache
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    root.mkdir()
    killed = root / f".tmp-{'0' * 64}-{int(dead.stdout)}"  # a conversion killed halfway
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"\0" * 4096)
    running = root / f".tmp-{'1' * 64}-{os.getppid()}"  # a live process's conversion
    running.mkdir()
    folder = ensure_cached(gguf_path)
    assert not killed.exists() and running.is_dir()
    assert sorted(p.name for p in root.iterdir()) == sorted([folder.name, running.name])
