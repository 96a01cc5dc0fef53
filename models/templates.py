"""The one conversation -> prompt renderer.

Both the llama.cpp panes and the trainers turn a list of chat messages into the model's
prompt through :func:`render`, so what the model saw in training is what it sees in
the app. A template is a Jinja string in the Hugging Face chat-template dialect (the same
one GGUF files carry in ``tokenizer.chat_template``), so TRL can be handed the very same
string as ``tokenizer.chat_template``.

Special tokens are written as text by the template (``<bos>`` included); whoever
tokenizes the result parses special tokens and adds no BOS of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Gemma's turns, except that a model turn ends with <eos> rather than <end_of_turn>. This is
# the default only for Gemma files without a template of their own: pre-trained models.
# Their <end_of_turn> was never trained: its embedding, which is also its output row, sits
# among the 6,242 <unusedN> rows (cosine 0.99 to their mean), so an adapter that learns to
# end a turn raises all of them together and writes "<unused832>" instead of stopping.
# <eos> the base already emits at the end of a document (p = 0.002 after "Paris."), and
# one DPO job teaches it to end its answers (31 of 32 held-out answers against 0 of 32).
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set first_user_prefix = '' -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + (eos_token if role == 'model' else '<end_of_turn>') + '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"""

CHATML = """{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] | trim) + '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"""

LLAMA3 = """{{ bos_token }}
{%- for message in messages -%}
{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"""

# For a family we do not know: plain text turns any base model can continue.
PLAIN = """{{ bos_token }}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}{{ (message['content'] | trim) + '\n\n' }}
{%- elif message['role'] == 'user' -%}{{ 'User: ' + (message['content'] | trim) + '\n' }}
{%- else -%}{{ 'Assistant: ' + (message['content'] | trim) + '\n' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"""


@dataclass(frozen=True)
class ChatTemplate:
    """A named Jinja chat template and the strings that end a turn in it."""

    name: str
    source: str
    stop: tuple[str, ...] = field(default_factory=tuple)
    bos_token: str = ""
    eos_token: str = ""


BUILTIN: dict[str, ChatTemplate] = {
    "gemma": ChatTemplate("gemma", GEMMA, ("<end_of_turn>", "<start_of_turn>"), "<bos>", "<eos>"),
    "chatml": ChatTemplate("chatml", CHATML, ("<|im_end|>", "<|im_start|>")),
    "llama3": ChatTemplate(
        "llama3", LLAMA3, ("<|eot_id|>", "<|start_header_id|>"), "<|begin_of_text|>"
    ),
    "plain": ChatTemplate("plain", PLAIN, ("\nUser:",)),
}

# GGUF ``general.architecture`` -> the default template of that family.
FAMILY_DEFAULTS = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "llama": "llama3",
}


class TemplateRenderError(ValueError):
    """A chat template that does not parse or fails on the given messages."""


@lru_cache(maxsize=32)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render(
    template: ChatTemplate | str,
    messages: list[dict],
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` (dicts with ``role`` and ``content``) into one prompt string."""
    if isinstance(template, str):
        template = ChatTemplate("custom", template)
    try:
        return _compile(template.source).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=template.bos_token,
            eos_token=template.eos_token,
        )
    except TemplateError as exc:
        raise TemplateRenderError(f"chat template '{template.name}' failed: {exc}") from exc


def for_model(architecture: str | None, gguf_template: str | None = None,
              bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """The template a model uses: its own GGUF template if it has one, else its family's."""
    family = BUILTIN[FAMILY_DEFAULTS.get((architecture or "").lower(), "plain")]
    if gguf_template:
        return ChatTemplate(
            "gguf", gguf_template, family.stop, bos_token or family.bos_token,
            eos_token or family.eos_token,
        )
    if bos_token and family.name == "plain":
        return ChatTemplate(family.name, family.source, family.stop, bos_token, eos_token)
    return family


def custom(source: str, base: ChatTemplate) -> ChatTemplate:
    """A user's override: their Jinja source with the model's special tokens and stops."""
    _check(source)
    return ChatTemplate("custom", source, base.stop, base.bos_token, base.eos_token)


def _check(source: str) -> None:
    try:
        _compile(source)
    except TemplateError as exc:
        raise TemplateRenderError(f"chat template does not parse: {exc}") from exc
