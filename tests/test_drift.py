"""An adapter's KL from the base on prompt sets: measured through llama.cpp, stored in meta.json."""

from __future__ import annotations

import json

import pytest
from helpers import register_adapter, write_random_lora

from diptych import paths
from diptych.cli import main
from diptych.models import adapters, drift
from diptych.models.engine import Engine

PROMPTS = drift.held_out_prompts()[:2]


@pytest.fixture(scope="module")
def lora(bundled_model, tmp_path_factory):
    return write_random_lora(tmp_path_factory.mktemp("lora") / "random.gguf", bundled_model)


@pytest.fixture(scope="module")
def engines(bundled_model):
    base, tuned = Engine(bundled_model, n_ctx=512), Engine(bundled_model, n_ctx=512)
    yield base, tuned
    base.close()
    tuned.close()


def test_no_adapter_is_exactly_zero_and_an_adapter_is_not(engines, lora):
    base, tuned = engines
    tuned.set_adapter(None)
    same = drift.measure(base, tuned, PROMPTS, max_tokens=16)
    assert same.kl == 0.0 and same.prompts == 2 and 2 < same.tokens <= 32
    tuned.set_adapter(lora)
    moved = drift.measure(base, tuned, PROMPTS, max_tokens=16)
    again = drift.measure(base, tuned, PROMPTS, max_tokens=16)
    assert moved.kl > 0.001 and moved.kl == again.kl  # a fixed seed per prompt: repeatable
    assert drift.measure(base, tuned, PROMPTS, max_tokens=16, seed=1).kl != moved.kl
    with pytest.raises(ValueError, match="no prompts"):
        drift.measure(base, tuned, [], max_tokens=16)


def test_the_held_out_set_is_disjoint_from_training_prompts():
    from diptych.training import tasks

    held_out = {p[-1]["content"] for p in drift.held_out_prompts()}
    assert len(held_out) == 16
    assert not held_out & set(tasks.lines("questions.txt"))


def test_record_keeps_other_sets_and_needs_a_folder(data_dir, lora):
    info = register_adapter(data_dir, lora)
    info = adapters.record_drift(info, {"held_out": {"kl": 0.25}})
    info = adapters.record_drift(info, {"recent": {"kl": 0.5}})
    assert adapters.drift_kl(info) == 0.25 and adapters.drift_kl(info, "recent") == 0.5
    assert info.meta["kind"] == "dpo"  # the rest of meta.json is kept
    assert adapters.key_metric(info) == "KL 0.250"
    assert {p.name for p in info.path.iterdir()} == {adapters.GGUF_NAME, adapters.META_NAME}  # no temp file
    with pytest.raises(adapters.AdapterError, match="bare GGUF file"):
        adapters.record_drift(adapters.resolve(str(lora)), {"held_out": {"kl": 1.0}})


def test_cli_measures_both_sets_and_stores_them(voted, lora, capsys, monkeypatch):
    monkeypatch.setattr(drift, "held_out_prompts", lambda: PROMPTS)  # a short set: the wiring
    monkeypatch.setattr(drift, "RECENT", 3)
    register_adapter(voted, lora)
    assert main(["--data-dir", str(voted), "adapters", "drift", "drifty", "--max-tokens", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["drift"]
    assert out["held_out"]["prompts"] == 2 and out["recent"]["prompts"] == 3
    assert out["held_out"]["kl"] > 0 and out["held_out"]["max_tokens"] == 8
    assert adapters.resolve("drifty", voted).meta["drift"] == out

    # a reward model does not generate; a bare file is measured but not stored
    (paths.adapters_dir(voted) / "judge").mkdir()
    (paths.adapters_dir(voted) / "judge" / "adapter_config.json").write_text('{"task_type": "SEQ_CLS"}')
    (paths.adapters_dir(voted) / "judge" / adapters.META_NAME).write_text('{"kind": "reward"}')
    assert main(["--data-dir", str(voted), "adapters", "drift", "judge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no GGUF LoRA" in err
    assert main(["--data-dir", str(voted), "adapters", "drift", str(lora), "--max-tokens", "4"]) == 0
    assert "was not stored" in capsys.readouterr().out
