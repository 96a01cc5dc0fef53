"""Shared fixtures: the real bundled model, an isolated data dir and weight cache."""

from __future__ import annotations

import os

import pytest
from helpers import QA, record_sample_vote

# Tests never need a display, and never reach a model hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def bundled_model():
    from diptych.models.catalog import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory):
    """One converted-weights cache for the whole run: only the first job pays the conversion."""
    path = tmp_path_factory.mktemp("weights-cache")
    os.environ["DIPTYCH_CACHE"] = str(path)
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DIPTYCH_HOME", str(path))
    return path


@pytest.fixture
def tiny_gguf(tmp_path):
    """A well-formed GGUF of an architecture llama.cpp does not know."""
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "notanarch")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def voted(data_dir, weights_cache):
    """A data dir whose store holds 8 votes (the answer beats the question back), and their
    export as JSON lines."""
    from diptych.training.preferences import export_jsonl
    from diptych.training.store import Store

    with Store.open(data_dir) as store:
        for question, answer, asked_back in QA:
            conversation = store.new_conversation()
            store.add_user_message(conversation, 0, question)
            shown = dict(model="gemma", model_path=None, model_hash=None, adapter_path=None,
                         adapter_scale=None, template_name="gemma", template_source=None,
                         params={}, prompt_messages=[{"role": "user", "content": question}],
                         n_tokens=None, ttft_s=None, tokens_per_s=None, finish_reason="stop")
            left = store.add_response(conversation, 0, "left", "base", asked_back, adapter=None, **shown)
            right = store.add_response(conversation, 0, "right", "tuned", answer, adapter="t", **shown)
            store.record_vote(left, right, "right", blind=True)
        export_jsonl(store, data_dir / "pairs.jsonl")
    return data_dir


@pytest.fixture(scope="session")
def random_lora(bundled_model, weights_cache, tmp_path_factory):
    """A PEFT LoRA on every linear layer with non-trivial random lora_B, no training needed."""
    import torch
    from peft import LoraConfig, get_peft_model

    from diptych.training.base_weights import load_base

    model, tokenizer = load_base(bundled_model)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    folder = tmp_path_factory.mktemp("peft")
    peft_model.save_pretrained(folder)
    return peft_model.eval(), tokenizer, folder


# -- helpers several test files use -----------------------------------------------


@pytest.fixture
def home(tmp_path):
    """A data directory holding three votes."""
    path = tmp_path / "home"
    from diptych.training.store import Store

    with Store.open(path) as store:
        record_sample_vote(store, "right")
        record_sample_vote(store, "better", better_text="Four.")
        record_sample_vote(store, "tie")
    return path


@pytest.fixture
def window(qtbot, data_dir):
    """The app's window on the bundled model, both panes loaded (12 tokens an answer)."""
    from helpers import open_window

    return open_window(qtbot, data_dir, max_tokens=12)
