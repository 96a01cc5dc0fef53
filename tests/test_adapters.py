"""The adapter registry and the checks made before llama.cpp loads an adapter.

The LoRA files here are written with the gguf package's own writer, with shapes read from
the real bundled model's header: no torch, no training needed.
"""

from __future__ import annotations

import json
import os

import gguf
import numpy as np
import pytest

from diptych import paths
from diptych.cli import main
from diptych.models import adapters, catalog

RANK = 4


def write_lora(path, tensors: dict, arch: str = "gemma3"):
    """A GGUF LoRA: ``tensors`` maps GGUF names to numpy arrays (numpy order: rows first)."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    for name, array in tensors.items():
        writer.add_tensor(name, array.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def lora_for(base, target: str = "blk.0.attn_q.weight", n_in_delta: int = 0) -> dict:
    """LoRA tensors for one base tensor; ``n_in_delta`` makes lora_a the wrong width."""
    shapes = {name: dims for name, dims, _, _ in catalog.read_header_fields(base)[1]}
    n_in, n_out = shapes[target]  # GGUF order: fastest dimension first
    rng = np.random.default_rng(0)
    return {f"{target}.lora_a": rng.normal(size=(RANK, n_in + n_in_delta)),
            f"{target}.lora_b": rng.normal(size=(n_out, RANK))}


def test_a_fitting_lora_passes(bundled_model, tmp_path):
    path = write_lora(tmp_path / "ok.gguf", lora_for(bundled_model))
    adapters.check_compatible(path, bundled_model)


@pytest.mark.parametrize("case, message", [
    ("wrong shapes", "do not fit the base tensor"),
    ("other architecture", "LoRA for 'llama' models"),
    ("not a GGUF", "not a GGUF file"),
    ("a full model", "full model"),
    ("unknown tensor", "not a tensor of the base model"),
    ("half a pair", "no matching lora_b"),
    ("no tensors", "holds no LoRA tensors"),
])
def test_incompatible_adapters_are_refused(bundled_model, tmp_path, case, message):
    path = tmp_path / "bad.gguf"
    if case == "wrong shapes":
        write_lora(path, lora_for(bundled_model, n_in_delta=-320))
    elif case == "other architecture":
        write_lora(path, lora_for(bundled_model), arch="llama")
    elif case == "not a GGUF":
        path.write_text('{"peft_type": "LORA"}')
    elif case == "a full model":
        path = bundled_model
    elif case == "unknown tensor":
        tensors = lora_for(bundled_model)
        write_lora(path, {k.replace("blk.0.", "blk.99."): v for k, v in tensors.items()})
    elif case == "half a pair":
        tensors = lora_for(bundled_model)
        write_lora(path, {k: v for k, v in tensors.items() if k.endswith("lora_a")})
    else:
        write_lora(path, {})
    with pytest.raises(adapters.AdapterError, match=message):
        adapters.check_compatible(path, bundled_model)


def make_adapter(root, name, kind="dpo", created_at="2026-01-01T00:00:00+00:00", metrics=None):
    folder = paths.adapters_dir(root) / name
    folder.mkdir()
    meta = {"name": name, "kind": kind, "created_at": created_at,
            "base": {"sha256": "abc", "name": "Gemma"}, "metrics": metrics or {}}
    (folder / adapters.META_NAME).write_text(json.dumps(meta))
    if kind != "reward":
        (folder / adapters.GGUF_NAME).write_bytes(b"GGUF")
    return folder


def test_registry_lists_resolves_renames_and_deletes(data_dir, tmp_path):
    make_adapter(data_dir, "old", created_at="2026-01-01T00:00:00+00:00")
    make_adapter(data_dir, "new", created_at="2026-02-01T00:00:00+00:00")
    make_adapter(data_dir, "judge", kind="reward", created_at="2026-01-15T00:00:00+00:00")
    # an unfinished job's folder and a stray file are not adapters
    (paths.adapters_dir(data_dir) / ".partial-wip-123").mkdir()
    (paths.adapters_dir(data_dir) / "notes.txt").write_text("x")

    found = adapters.list_adapters()
    assert [a.name for a in found] == ["new", "judge", "old"]
    assert found[1].gguf_path is None and found[0].gguf_path.name == "adapter.gguf"
    assert found[0].base_hash == "abc"

    assert adapters.resolve("new").path == found[0].path
    assert adapters.resolve(str(found[2].path)).name == "old"
    bare = write_lora(tmp_path / "mine.gguf", {})
    info = adapters.resolve(str(bare))
    assert (info.name, info.kind, info.gguf_path) == ("mine", "lora", bare.resolve())
    with pytest.raises(adapters.AdapterError, match="registered: new, judge, old"):
        adapters.resolve("missing")

    renamed = adapters.rename("old", "older")
    assert renamed.meta["name"] == "older" and not (renamed.path.parent / "old").exists()
    with pytest.raises(adapters.AdapterError, match="already exists"):
        adapters.rename("older", "new")
    with pytest.raises(adapters.AdapterError, match="not a valid adapter name"):
        adapters.rename("older", "../escape")

    adapters.delete("older")
    assert [a.name for a in adapters.list_adapters()] == ["new", "judge"]
    with pytest.raises(adapters.AdapterError, match="no adapter named"):
        adapters.delete("older")


def test_key_metric():
    info = adapters.AdapterInfo("a", None, None, "dpo", "", None, metrics={
        "before": {"pair_accuracy": 0.25, "kl": 0.0}, "after": {"pair_accuracy": 0.75, "kl": 0.0423}})
    assert adapters.key_metric(info) == "pair acc 25%→75%, KL 0.042"
    info = adapters.AdapterInfo("g", None, None, "grpo", "", None, metrics={
        "before": {"reward": 0.1}, "after": {"reward": 0.35, "kl": 0.01}})
    assert adapters.key_metric(info) == "reward 0.10→0.35, KL 0.010"
    assert adapters.key_metric(adapters.AdapterInfo("x", None, None, "lora", "", None)) == "no metrics"


def test_adapters_cli(data_dir, capsys):
    make_adapter(data_dir, "one", metrics={"after": {"pair_accuracy": 1.0}})
    assert main(["adapters", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "one" and rows[0]["key_metric"] == "pair acc 100%"
    assert main(["adapters", "rename", "one", "two"]) == 0
    assert main(["adapters", "list"]) == 0
    assert "two" in capsys.readouterr().out
    assert main(["adapters", "delete", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no adapter named 'nope'" in err
    assert main(["adapters", "delete", "two"]) == 0
    assert os.listdir(paths.adapters_dir(data_dir)) == []
