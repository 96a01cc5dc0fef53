"""The GGUF the panes run, loaded for PyTorch: cached once, tokenized exactly like llama.cpp."""

from __future__ import annotations

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
    assert [p.name for p in weights_cache.iterdir()] == [folder.name]  # no temporary leftovers
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
    from llama_cpp import Llama
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
    llama = Llama(str(bundled_model), vocab_only=True, verbose=False)
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
