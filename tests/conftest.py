"""Shared fixtures: the real bundled model, an isolated data dir and weight cache."""

from __future__ import annotations

import os

import pytest

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
