import pytest

from diptych.models import templates


def test_gemma_prompt_is_exact():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    prompt = templates.render(templates.BUILTIN["gemma"], messages)
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis.<eos>\n"
        "<start_of_turn>user\nAnd of Italy?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_without_generation_prompt_ends_after_last_turn():
    messages = [{"role": "user", "content": "Hi"}]
    prompt = templates.render(templates.BUILTIN["gemma"], messages, add_generation_prompt=False)
    assert prompt == "<bos><start_of_turn>user\nHi<end_of_turn>\n"


def test_family_defaults_and_gguf_template_wins():
    assert templates.for_model("gemma3").name == "gemma"
    assert templates.for_model("qwen2").name == "chatml"
    assert templates.for_model("mystery").name == "plain"
    own = templates.for_model("gemma3", "{{ messages[0]['content'] }}")
    assert own.name == "gguf"
    assert templates.render(own, [{"role": "user", "content": "x"}]) == "x"


def test_bad_template_is_a_clear_error():
    with pytest.raises(templates.TemplateRenderError, match="does not parse"):
        templates.custom("{% for %}", templates.BUILTIN["gemma"])
    broken = templates.ChatTemplate("t", "{{ raise_exception('no system role') }}")
    with pytest.raises(templates.TemplateRenderError, match="no system role"):
        templates.render(broken, [{"role": "user", "content": "x"}])
