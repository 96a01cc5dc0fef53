"""Hardening against hostile or damaged inputs: chat templates that never end or make
huge values, GGUF headers whose hyperparameters disagree with their tensors, and the
files the CLI reads (adapters, databases, import files) that must give one line and exit
code 2 instead of a traceback or a native abort."""

from __future__ import annotations

import re
import time

import pytest

from diptych.models import templates

HELLO = [{"role": "user", "content": "Hello"}]


# -- 1. chat templates on a time and size budget ------------------------------------------

NESTED_LOOPS = ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}"
                "{% endfor %}{{ messages[0]['content'] }}")


def test_a_template_that_loops_for_ages_is_refused_in_time(monkeypatch):
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.3, raising=False)
    model_template = templates.for_model("gemma3", NESTED_LOOPS, "<bos>", "<eos>")
    t0 = time.monotonic()
    with pytest.raises(templates.TemplateRenderError, match="refused: it took more than") as err:
        templates.render(model_template, HELLO)
    assert time.monotonic() - t0 < 2
    assert "\n" not in str(err.value) and "'gguf'" in str(err.value)


@pytest.mark.parametrize("source, problem", [
    ("{{ 'a' * 10**11 }}", "a repeated string of 100,000,000,000 characters"),
    ("{{ ([0] * 10**12) | length }}", "a repeated list"),
    ("{{ 'x'.center(10**11) }}", "a padding or width"),
    ("{{ '%100000000000d' % 1 }}", "a formatted field"),
    ("{{ (['x' * 1000000] * 100000) | join }}", "a joined string"),
    ("{{ 7 ** 3000000 }}", "an integer of about"),
    ("{% for i in range(100000) %}{% endfor %}", "a range of 100,000 items"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nests too deeply"),
])
def test_a_template_that_makes_huge_values_is_refused(source, problem):
    t0 = time.monotonic()
    with pytest.raises(templates.TemplateRenderError, match="refused") as err:
        templates.render(templates.ChatTemplate("gguf", source), HELLO)
    assert problem in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - t0 < 2


def test_a_recursive_loop_or_macro_that_explodes_is_stopped(monkeypatch):
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.3, raising=False)
    for source in (
        "{% for x in range(300) recursive %}{% if loop.depth < 3 %}{{ loop(range(300)) }}"
        "{% endif %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(21) }}",
    ):
        t0 = time.monotonic()
        with pytest.raises(templates.TemplateRenderError, match="took more than"):
            templates.render(source, HELLO)
        assert time.monotonic() - t0 < 2


def test_a_users_override_that_hangs_is_refused_when_set(monkeypatch):
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.3, raising=False)
    with pytest.raises(templates.TemplateRenderError, match="refused"):
        templates.custom(NESTED_LOOPS, templates.BUILTIN["gemma"])
    # an override that only fails on other messages is still taken
    picky = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('no system') }}{% endif %}"
    assert templates.custom(picky, templates.BUILTIN["gemma"]).source == picky


def test_the_budget_leaves_ordinary_templates_alone():
    long_chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hello " * 200}
                 for i in range(401)]
    prompt = templates.render(templates.BUILTIN["gemma"], long_chat)
    assert prompt.count("<start_of_turn>") == 402
    loops = "{% for m in messages %}{% for c in m['content'] %}{% endfor %}{% endfor %}ok"
    assert templates.render(loops, long_chat) == "ok"
    assert templates.render("{{ range(3) | list }} {{ '%5d' % 7 }} {{ 'ab' * 2 }}", HELLO) \
        == "[0, 1, 2]     7 abab"


# -- 2. GGUF headers whose hyperparameters disagree with their tensors ---------------------

def write_model(path, *, block_count=1, width=8, context=64, heads=2, kv_heads=1, blocks=None,
                alignment=None):
    """A tiny gemma3-shaped GGUF (no real weights): the header and tensor table are what
    is checked. ``blocks`` is how many blk.N layers of tensors it holds (default: all)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("crafted")
    writer.add_block_count(block_count)
    writer.add_embedding_length(width)
    writer.add_context_length(context)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_feed_forward_length(16)
    if alignment is not None:
        writer.add_uint32("general.alignment", alignment)  # the header only: data stays at 32
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    for i in range(block_count if blocks is None else blocks):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.zeros(8, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_tiny_well_formed_model_and_the_bundled_one_pass(tmp_path, bundled_model):
    from diptych.models import catalog

    assert catalog.read_info(write_model(tmp_path / "ok.gguf", block_count=2)).name == "crafted"
    assert catalog.read_info(bundled_model).architecture == "gemma3"


@pytest.mark.parametrize("kwargs, reason", [
    (dict(block_count=1000000, blocks=1), "block_count is 1000000, not a whole number from 1 to 512"),
    (dict(block_count=4, blocks=2), "block_count says 4 layers but the file holds tensors of blocks 0 to 1"),
    (dict(block_count=2, blocks=3), "block_count says 2 layers"),
    (dict(width=12), "embedding_length is 12 but token_embd.weight is 8 wide"),
    (dict(context=0), "context_length is 0"),
    (dict(heads=0), "head_count is 0"),
    (dict(heads=3, kv_heads=2), "not a multiple of head_count_kv"),
])
def test_hyperparameters_that_disagree_with_the_tensors_are_refused(tmp_path, kwargs, reason):
    from diptych.models import catalog

    path = write_model(tmp_path / "crafted.gguf", **kwargs)
    with pytest.raises(catalog.ModelFileError) as err:
        catalog.read_info(path)
    message = str(err.value)
    assert reason in message and "crafted.gguf" in message and "\n" not in message


def run_cli(*args, timeout=120):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "diptych", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_chat_with_a_crafted_model_is_one_line_not_an_abort(tmp_path, data_dir):
    path = write_model(tmp_path / "crafted.gguf", block_count=1000000, blocks=1)
    done = run_cli("--data-dir", data_dir, "--model", path, "chat", "--prompt", "Hi")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and "crafted.gguf" in done.stderr, done.stderr


# -- 3. one line, exit 2, instead of a traceback ---------------------------------------------

def set_tensor_type(path, name: str, ggml_type: int) -> None:
    """Overwrite the type of tensor ``name`` in the file's tensor table."""
    import struct

    data = bytearray(path.read_bytes())
    entry = name.encode()
    at = data.index(struct.pack("<Q", len(entry)) + entry) + 8 + len(entry)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, ggml_type)
    path.write_bytes(bytes(data))


def test_alignment_0_or_an_unknown_tensor_type_is_one_line(tmp_path, data_dir):
    from diptych.models import catalog

    zero = write_model(tmp_path / "zero.gguf", alignment=0)
    odd = write_model(tmp_path / "odd.gguf")
    set_tensor_type(odd, "token_embd.weight", 999)
    for path, reason in ((zero, "general.alignment is 0, not a power of two"),
                         (odd, "tensor token_embd.weight has an unknown type (999)")):
        with pytest.raises(catalog.ModelFileError, match=re.escape(reason)):
            catalog.read_info(path)
        done = run_cli("--data-dir", data_dir, "--model", path, "chat", "--prompt", "Hi")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
        assert path.name in done.stderr and reason in done.stderr


def cli_error(capsys, *argv) -> str:
    """The one line ``diptych argv`` printed on stderr as it exited with code 2."""
    from diptych.cli import main

    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_a_corrupt_or_too_new_database_is_one_line_naming_it(tmp_path, capsys):
    import os
    import sqlite3

    from diptych import paths
    from diptych.training.store import Store

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    db = paths.db_path(corrupt)
    db.write_bytes(os.urandom(4096))
    line = cli_error(capsys, "--data-dir", corrupt, "data", "stats")
    assert str(db) in line and "file is not a database" in line

    newer = tmp_path / "newer"
    Store.open(newer).close()
    with sqlite3.connect(paths.db_path(newer)) as conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('diptych', 'm999_future', '2099-01-01')")
    conn.close()
    line = cli_error(capsys, "--data-dir", newer, "data", "stats")
    assert str(paths.db_path(newer)) in line and "newer version" in line


def test_deep_nesting_or_a_huge_integer_in_an_import_is_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    huge = tmp_path / "huge.jsonl"
    huge.write_text('\n{"prompt": ' + "9" * 5000 + "}\n", encoding="utf-8")
    home = tmp_path / "home"
    line = cli_error(capsys, "--data-dir", home, "data", "import", deep)
    assert "deep.jsonl: line 1: nested too deeply" in line
    line = cli_error(capsys, "--data-dir", home, "data", "import", huge)
    assert "huge.jsonl: line 2: the integer 9999" in line and "5000 digits" in line


def exported_lines(data_dir) -> list[dict]:
    import json

    from diptych.training.preferences import records
    from diptych.training.store import Store

    with Store.open(data_dir) as store:
        return json.loads(json.dumps(records(store, include_ties=True)))


def test_infinity_and_nan_in_imported_metadata_are_refused_with_a_line_number(tmp_path, voted):
    import json

    from diptych.training.preferences import ImportFormatError, import_jsonl
    from diptych.training.store import Store

    lines = exported_lines(voted)
    for constant in ("NaN", "Infinity", "-Infinity", "1e999"):
        bad = tmp_path / "bad.jsonl"
        text = [json.dumps(r) for r in lines]
        text[1] = text[1].replace('"params": {}', '"params": {"temperature": %s}' % constant, 1)
        assert constant in text[1]
        bad.write_text("\n".join(text) + "\n", encoding="utf-8")
        fresh = tmp_path / f"fresh-{constant}"
        with Store.open(fresh) as store, pytest.raises(ImportFormatError, match="^line 2: "):
            import_jsonl(store, bad)
        with Store.open(fresh) as store:
            assert store.db["votes"].count == 0  # all or none


def peft_folder(path, config: dict | None = None):
    """A PEFT LoRA folder for the bundled Gemma: one q_proj LoRA of rank 2."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    q = "base_model.model.model.layers.0.self_attn.q_proj"
    path.mkdir()
    save_file({f"{q}.lora_A.weight": np.zeros((2, 640), np.float32),
               f"{q}.lora_B.weight": np.zeros((1024, 2), np.float32)},
              path / "adapter_model.safetensors")
    settings = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4}
    (path / "adapter_config.json").write_text(json.dumps(config if config is not None else settings))
    return path


def test_export_gguf_of_a_damaged_adapter_is_one_line(tmp_path, capsys, bundled_model):
    good = peft_folder(tmp_path / "good")
    weights = (good / "adapter_model.safetensors").read_bytes()
    for name, data in (("cut", weights[: len(weights) // 2]), ("noise", b"\xff" * 300),
                       ("lying", b"\x10" + b"\x00" * 7 + b'{"a": 1}' + b" " * 8)):
        folder = peft_folder(tmp_path / name)
        (folder / "adapter_model.safetensors").write_bytes(data)
        line = cli_error(capsys, "--model", bundled_model, "adapters", "export-gguf", folder)
        assert str(folder / "adapter_model.safetensors") in line
        assert "damaged or truncated safetensors file" in line
    for name, config, reason in (
        ("no-r", {"peft_type": "LORA", "lora_alpha": 4}, "has no 'r'"),
        ("zero-r", {"peft_type": "LORA", "r": 0, "lora_alpha": 4}, "has 0 as 'r'"),
        ("rslora-no-r", {"peft_type": "LORA", "lora_alpha": 4, "use_rslora": True}, "has no 'r'"),
        ("no-alpha", {"peft_type": "LORA", "r": 2}, "has no 'lora_alpha'"),
        ("list", [1, 2], "not a JSON object"),
    ):
        folder = peft_folder(tmp_path / name, config)
        line = cli_error(capsys, "--model", bundled_model, "adapters", "export-gguf", folder)
        assert str(folder / "adapter_config.json") in line and reason in line
    from diptych.cli import main

    assert main(["--model", str(bundled_model), "adapters", "export-gguf", str(good)]) == 0
    assert (good / "adapter.gguf").is_file()


class FakeEngine:
    """Stands in for llama.cpp: an engine whose context holds ``n_ctx`` characters."""

    n_ctx = 32

    def __init__(self, model, adapter=None):
        from diptych.models import catalog

        self.info = catalog.read_info(model)
        self.template = self.info.default_template()

    def generate(self, messages, params):
        from diptych.models.engine import EngineError

        prompt = templates.render(self.template, messages)
        if len(prompt) >= self.n_ctx:
            raise EngineError(f"the conversation is {len(prompt)} tokens, more than this "
                              f"model's context of {self.n_ctx}: start a new conversation")
        raise AssertionError("not reached in these tests")


def test_chat_with_a_prompt_longer_than_the_context_is_one_line(tmp_path, data_dir, capsys,
                                                                monkeypatch):
    from diptych.models import engine

    monkeypatch.setattr(engine, "Engine", FakeEngine)
    model = write_model(tmp_path / "small.gguf")
    line = cli_error(capsys, "--model", model, "chat", "--prompt", "word " * 100,
                     "--max-tokens", "8")  # an answer the context could hold, a prompt it can't
    assert line.startswith("diptych: error: small.gguf: the conversation is ")
    assert "more than this model's context of 32" in line


def test_chat_with_a_template_over_budget_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    import gguf
    import numpy as np

    from diptych.models import engine

    monkeypatch.setattr(engine, "Engine", FakeEngine)
    path = tmp_path / "hostile.gguf"
    writer = gguf.GGUFWriter(str(path), "notanarch")
    writer.add_context_length(64)
    writer.add_chat_template("{{ 'a' * 10**11 }}")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    line = cli_error(capsys, "--model", path, "chat", "--prompt", "Hi")
    # refused as the file is read, before llama.cpp compiles the template
    assert line.startswith("diptych: error: hostile.gguf cannot be used: its chat template")
    assert "refused: it makes a repeated string" in line


# -- 4. smaller ones ---------------------------------------------------------------------

def test_deleting_a_symlinked_adapter_leaves_no_deleted_link(tmp_path, data_dir, capsys):
    from diptych import paths
    from diptych.cli import main
    from diptych.models import adapters

    elsewhere = tmp_path / "elsewhere" / "shared-lora"
    elsewhere.mkdir(parents=True)
    (elsewhere / adapters.GGUF_NAME).write_bytes(b"GGUF")
    folder = paths.adapters_dir(data_dir)
    (folder / "shared").symlink_to(elsewhere, target_is_directory=True)
    assert [a.name for a in adapters.list_adapters(data_dir)] == ["shared"]

    assert main(["--data-dir", str(data_dir), "adapters", "delete", "shared"]) == 0
    assert list(folder.iterdir()) == []  # no .deleted-shared-PID link for ever
    assert (elsewhere / adapters.GGUF_NAME).is_file()  # someone else's folder is not emptied
    assert "was left" in capsys.readouterr().out
    assert adapters.list_adapters(data_dir) == []


@pytest.mark.parametrize("argv", [
    ("adapters", "list", "--json"),
    ("data", "export"),
    ("--help",),
])
def test_a_closed_pipe_ends_the_cli_quietly(tmp_path, voted, argv):
    import subprocess
    import sys

    from diptych import paths

    for i in range(3):  # something to list
        (paths.adapters_dir(voted) / f"a{i}").mkdir()
        (paths.adapters_dir(voted) / f"a{i}" / "adapter.gguf").write_bytes(b"GGUF")
    process = subprocess.Popen([sys.executable, "-m", "diptych", "--data-dir", str(voted), *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head -c 10` does once it has its bytes
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Broken pipe" not in err and "BrokenPipeError" not in err, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
