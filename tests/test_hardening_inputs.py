"""Hardening against hostile or damaged inputs: chat templates that never end or make
huge values, GGUF headers whose hyperparameters disagree with their tensors, and the
files the CLI reads (adapters, databases, import files) that must give one line and exit
code 2 instead of a traceback or a native abort."""

from __future__ import annotations

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
