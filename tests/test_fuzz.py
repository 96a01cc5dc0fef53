"""Fuzzing the readers of untrusted files: a GGUF header, an adapter's meta.json, a
preference JSONL. Each input is read, or refused with one line that says why; nothing
else may come out (another exception, a hang, a native abort)."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
from contextlib import contextmanager

import pytest
from helpers import record_sample_vote, write_small_gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diptych.models import adapters, catalog
from diptych.models.errors import UserError
from diptych.training import unpaired
from diptych.training.preferences import export_jsonl, import_jsonl, read_jsonl
from diptych.training.store import Store

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


class Hung(BaseException):
    """Raised into a reader that ran too long; a BaseException, so no reader catches it."""


@contextmanager
def within(seconds: float):
    def interrupt(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line_refusal(error: UserError) -> None:
    text = str(error)
    assert text.strip() and "\n" not in text.strip(), repr(text)


# -- GGUF headers -------------------------------------------------------------------

FLOAT_KEYS = {"attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 10000.0,
              "attn_logit_softcapping": 50.0}


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> bytes:
    """A small well-formed llama GGUF (header, key/values of each kind, two tensors)."""
    path = tmp_path_factory.mktemp("fuzz") / "small.gguf"
    return write_small_gguf(path, FLOAT_KEYS).read_bytes()


def _mutated(data: bytes, edits: list[tuple[int, bytes]], cut: int | None) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        at %= len(out)
        out[at:at + len(value)] = value
    return bytes(out[:cut] if cut is not None else out)


edit = st.tuples(st.integers(0, 10**6),
                 st.one_of(st.binary(min_size=1, max_size=8),
                           st.integers(0, 2**64 - 1).map(lambda v: struct.pack("<Q", v)),
                           st.integers(0, 2**32 - 1).map(lambda v: struct.pack("<I", v))))


@FUZZ
@given(edits=st.lists(edit, max_size=4), cut=st.one_of(st.none(), st.integers(0, 600)))
def test_the_gguf_reader_reads_or_refuses_in_one_line(small_gguf, tmp_path, edits, cut):
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(_mutated(small_gguf, edits, cut))
    try:
        with within(5):
            info = catalog.read_info(path)
    except catalog.ModelFileError as exc:
        one_line_refusal(exc)
    else:
        assert info.architecture


def _float_fields(data: bytes) -> dict[str, int]:
    """Each float32 key of a GGUF header -> where its value starts."""
    found = {}
    for key in ["some.float", *(f"llama.{k}" for k in FLOAT_KEYS)]:
        name = key.encode()
        at = data.index(struct.pack("<Q", len(name)) + name)
        found[key] = at + 8 + len(name) + 4
    return found


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, -1e-30, 0.0])
def test_every_float_key_with_a_bad_value_is_read_or_refused_in_one_line(small_gguf, tmp_path, value):
    for key, at in _float_fields(small_gguf).items():
        data = bytearray(small_gguf)
        data[at:at + 4] = struct.pack("<f", value)
        path = tmp_path / "floats.gguf"
        path.write_bytes(bytes(data))
        try:
            with within(5):
                catalog.read_info(path)
        except catalog.ModelFileError as exc:
            one_line_refusal(exc)
            assert key in str(exc)
        else:  # llama.cpp reads no other key; an epsilon may be 0, a divisor may not
            assert key == "some.float" or (value == 0 and "epsilon" in key), (key, value)


TEMPLATES = ["{{ 'A' * 2000000000 }}", "{{ ('A' * 100000) * 100000 }}", "{{ 'A' | center(2000000000) }}",
             "{{ [0] * 10 ** 10 }}", "{{ '%2000000000d' % 1 }}", "{{ 2 ** 1000000000 }}", "{% for %}",
             "{% if %}{% endfor %}", "{{ messages[0] ", "{% endif %}", "{{ 'A' ~ ('B' * 10 ** 9) }}"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_template_llama_cpp_would_choke_on_is_refused_in_one_line(tmp_path, template):
    path = write_small_gguf(tmp_path / "templated.gguf", FLOAT_KEYS, template)
    with within(5), pytest.raises(catalog.ModelFileError) as refused:
        catalog.read_info(path)
    one_line_refusal(refused.value)
    assert "chat template" in str(refused.value)


@FUZZ
@given(repeat=st.integers(0, 10**12), text=st.text(max_size=5), power=st.integers(0, 10**6),
       cut=st.integers(0, 40))
def test_templates_of_huge_repetitions_and_broken_syntax_are_read_or_refused(tmp_path, repeat, text,
                                                                           power, cut):
    template = f"{{{{ {text!r} * {repeat} }}}}{{{{ 3 ** {power} }}}}{{% for m in messages %}}{{% endfor %}}"
    path = write_small_gguf(tmp_path / "t.gguf", FLOAT_KEYS, template[:len(template) - cut])
    try:
        with within(5):
            catalog.read_info(path)
    except catalog.ModelFileError as exc:
        one_line_refusal(exc)


def test_the_unmutated_small_gguf_is_read(small_gguf, tmp_path):
    path = tmp_path / "small.gguf"
    path.write_bytes(small_gguf)
    assert catalog.read_info(path).architecture == "llama"


# -- adapter meta.json ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
meta_keys = st.sampled_from(["kind", "created_at", "base", "metrics", "drift", "config", "data",
                             "parent", "versions", "name", "id"])
metas = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(meta_keys, json_values, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


@FUZZ
@given(raw=metas)
def test_the_adapter_list_reads_any_meta_json(tmp_path, raw):
    folder = tmp_path / "adapters" / "fuzzed"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / adapters.META_NAME).write_bytes(raw)
    with within(5):
        found = adapters.list_adapters(tmp_path)
        for info in found:
            adapters.describe(info)
            adapters.key_metric(info)
            adapters.drift_kl(info)
    assert [info.name for info in found] == ["fuzzed"]


# -- preference JSONL -------------------------------------------------------------------

@pytest.fixture(scope="module", params=["pairs", "unpaired"])
def exported_lines(request, tmp_path_factory) -> list[dict]:
    """The exported lines of one vote in either exchange format (unpaired: one a side)."""
    folder = tmp_path_factory.mktemp("line")
    with Store(folder / "s.sqlite") as store:
        record_sample_vote(store)
        write = unpaired.export_jsonl if request.param == "unpaired" else export_jsonl
        write(store, folder / "one.jsonl")
    return [json.loads(line) for line in (folder / "one.jsonl").read_text().splitlines()]


def import_any(store: Store, path) -> int:
    """What ``diptych data import`` does: either format, told apart by its first line."""
    if unpaired.is_unpaired_file(path):
        unpaired.read_jsonl(path)
        return unpaired.import_jsonl(store, path)
    read_jsonl(path)
    return import_jsonl(store, path)


def _paths(value: object) -> list[tuple]:
    """Every key path inside a JSON value, to replace one of them."""
    found = [()]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        found += [(key, *rest) for rest in _paths(inner)]
    return found


def _replace(value, path: tuple, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@FUZZ
@given(data=st.data())
def test_the_importer_reads_or_refuses_in_one_line(exported_lines, tmp_path, data):
    lines = [json.dumps(line) for line in exported_lines]
    at = data.draw(st.integers(0, len(lines) - 1))
    exported_line = exported_lines[at]
    choice = data.draw(st.sampled_from(["replace", "drop", "bytes"]))
    if choice == "bytes":
        raw = data.draw(st.binary(max_size=200))
    else:
        path = data.draw(st.sampled_from(_paths(exported_line)[1:]))
        if choice == "drop" and isinstance(path[-1], str):
            line = json.loads(json.dumps(exported_line))
            holder = line
            for key in path[:-1]:
                holder = holder[key]
            holder.pop(path[-1])
        else:
            line = _replace(exported_line, path, data.draw(json_values))
        raw = json.dumps(line).encode()
    source = tmp_path / "fuzzed.jsonl"
    source.write_bytes(b"\n".join(l.encode() for l in lines[:at]) + (b"\n" if at else b"")
                      + raw + b"\n" + b"".join(l.encode() + b"\n" for l in lines[at + 1:]))
    try:
        with within(5):
            with Store(tmp_path / "target.sqlite") as store:
                import_any(store, source)
    except UserError as exc:
        one_line_refusal(exc)


def test_an_untouched_vote_imports(exported_lines, tmp_path):
    source = tmp_path / "vote.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in exported_lines))
    with Store(tmp_path / "target.sqlite") as store:
        assert import_any(store, source) >= 1
        assert len(store.votes()) == 1
