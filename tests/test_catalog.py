import os
import shutil

import pytest

from diptych.models import catalog


def test_bundled_model_metadata(bundled_model):
    info = catalog.read_info(bundled_model)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert info.chat_template is None  # so the Gemma family default is used
    assert info.default_template().name == "gemma"
    assert info.bos_token == "<bos>"
    assert info.general_type == "model"


def test_random_bytes_are_not_a_gguf(tmp_path):
    bad = tmp_path / "random.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(catalog.ModelFileError, match="is not a GGUF file"):
        catalog.read_info(bad)


def test_truncated_copy_is_refused(tmp_path, bundled_model):
    cut = tmp_path / "cut.gguf"
    with open(bundled_model, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(os.path.getsize(bundled_model) // 2))
    with pytest.raises(catalog.ModelFileError, match="is truncated"):
        catalog.read_info(cut)
    head = tmp_path / "head.gguf"
    with open(bundled_model, "rb") as src, open(head, "wb") as dst:
        dst.write(src.read(2000))
    with pytest.raises(catalog.ModelFileError, match="header could not be read"):
        catalog.read_info(head)


def test_tiny_gguf_reads(tiny_gguf):
    info = catalog.read_info(tiny_gguf)
    assert info.architecture == "notanarch" and info.n_tensors == 1


def test_file_hash_is_cached_and_content_based(tmp_path, bundled_model):
    copy = tmp_path / "copy.gguf"
    shutil.copy(bundled_model, copy)
    assert catalog.file_hash(copy) == catalog.file_hash(bundled_model)
