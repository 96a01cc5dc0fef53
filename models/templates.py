"""The one conversation -> prompt renderer.

Both the llama.cpp panes and the trainers turn a list of chat messages into the model's
prompt through :func:`render`, so what the model saw in training is what it sees in
the app. A template is a Jinja string in the Hugging Face chat-template dialect (the same
one GGUF files carry in ``tokenizer.chat_template``), so TRL can be handed the very same
string as ``tokenizer.chat_template``.

Special tokens are written as text by the template (``<bos>`` included); whoever
tokenizes the result parses special tokens and adds no BOS of its own.

A template comes from a model file or from the user, so it runs in Jinja's sandbox (no
attribute tricks, no mutation) and on a budget: the sandbox stops code, not CPU or
memory. Every render has :data:`MAX_RENDER_SECONDS` of wall-clock time, checked at each
loop step, call, filter and intercepted operator (no thread is left running); ``range``
makes at most :data:`MAX_RANGE` items; ``*``, ``**``, ``%``, string widths, ``join``
and ``replace`` are checked before they run, every value after, and the output as it
is written. A template over budget is refused with a one-line TemplateRenderError.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

from jinja2 import nodes, pass_context
from jinja2.exceptions import TemplateError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from .errors import UserError

MAX_RENDER_SECONDS = 2.0  # a real conversation renders in milliseconds
MAX_CHARS = 16_000_000  # the longest string a template may make, and its whole output
MAX_ITEMS = 100_000  # the longest list, tuple or dict
MAX_RANGE = 10_000  # items one range() may make
MAX_POWER_BITS = 100_000  # the largest integer ``**`` may make

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


class TemplateRenderError(UserError, ValueError):
    """A chat template that does not parse or fails on the given messages."""


class TemplateBudgetError(TemplateRenderError):
    """A chat template refused because rendering it took too long or made too much."""


class _OverBudget(TemplateError):
    """A render that ran out of time or made a value too large; says which."""


class _Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _OverBudget(f"took more than {self.seconds:g} s to render "
                              "(a loop that does not end?)")


# The budget of the render running in this thread (None outside render(): no limit on time).
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget",
                                                                        default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick()


def _too_big(what: str, size: int, limit: int, unit: str) -> _OverBudget:
    return _OverBudget(f"makes {what} of {size:,} {unit}, more than the {limit:,} allowed")


def _check_size(value):
    """``value``, unless it is a string or container over the size limits."""
    if isinstance(value, (str, bytes)) and len(value) > MAX_CHARS:
        raise _too_big("a string", len(value), MAX_CHARS, "characters")
    if isinstance(value, (list, tuple, dict, set)) and len(value) > MAX_ITEMS:
        raise _too_big("a list", len(value), MAX_ITEMS, "items")
    return value


def _check_count(value) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_CHARS:
        raise _too_big("a padding or width", value, MAX_CHARS, "characters")


_FORMAT_NUMBER = re.compile(r"\d+")


def _check_format(fmt, args=(), kwargs=None) -> None:
    """A %- or {}-format whose widths (in the format or its arguments) fit the limit."""
    if isinstance(fmt, str):
        for number in _FORMAT_NUMBER.findall(fmt):
            if len(number) > 8 or int(number) > MAX_CHARS:
                raise _too_big("a formatted field", int(number), MAX_CHARS, "characters")
    if not isinstance(args, (tuple, list, dict)):
        args = (args,)
    values = list(args.values()) if isinstance(args, dict) else list(args)
    for value in values + list((kwargs or {}).values()):
        _check_count(value)


def _safe_range(*args):
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise _too_big("a range", len(items), MAX_RANGE, "items")
    return items


def _check_repeat(left, right) -> None:
    """``left * right`` where one side is a sequence: its length fits the limits."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            size = len(seq) * max(int(times), 0)
            limit, unit = ((MAX_CHARS, "characters") if isinstance(seq, str)
                           else (MAX_ITEMS, "items"))
            if size > limit:
                raise _too_big("a repeated " + ("string" if isinstance(seq, str) else "list"),
                               size, limit, unit)


def _check_power(left, right) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        bits = right * abs(left).bit_length()
        if bits > MAX_POWER_BITS:
            raise _OverBudget(f"makes an integer of about {bits:,} bits with '**', more than "
                              f"the {MAX_POWER_BITS:,} allowed")


def _check_join(items, sep: str = "") -> None:
    if isinstance(items, (list, tuple)):
        size = sum(len(x) for x in items if isinstance(x, str)) + len(sep) * len(items)
        if size > MAX_CHARS:
            raise _too_big("a joined string", size, MAX_CHARS, "characters")


def _check_replace(text, old, new, count=-1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        size = len(text) + hits * max(len(new) - len(old), 0)
        if size > MAX_CHARS:
            raise _too_big("a replaced string", size, MAX_CHARS, "characters")


# str methods that can make a long string from a short one, and the check of each call.
_STR_METHODS = {
    "center": lambda s, width=0, *a: _check_count(width),
    "ljust": lambda s, width=0, *a: _check_count(width),
    "rjust": lambda s, width=0, *a: _check_count(width),
    "zfill": lambda s, width=0, *a: _check_count(width),
    "expandtabs": lambda s, tabsize=8, *a: _check_count(s.count("\t") * tabsize
                                                        if isinstance(tabsize, int) else 0),
    "replace": lambda s, old="", new="", count=-1, *a: _check_replace(s, old, new, count),
    "join": lambda s, items=(), *a: _check_join(items, s),
}


def _checked_filter(name: str, func):
    """A filter that ticks the clock, checks its arguments where it can make a long
    string from a short one, and checks the size of what it returns."""
    pre = {
        "center": lambda value, width=80, *a, **k: _check_count(width),
        "indent": lambda value, width=4, *a, **k: _check_count(
            width if isinstance(width, int) else len(str(width))),
        "format": lambda value, *args, **kwargs: _check_format(value, args, kwargs),
        "join": lambda value, d="", *a, **k: _check_join(
            value if isinstance(value, (list, tuple)) else [], d if isinstance(d, str) else ""),
        "replace": lambda value, old="", new="", count=None, *a, **k: _check_replace(
            value, old, new, -1 if count is None else count),
    }.get(name)
    passes_first = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)
    def checked(*args, **kwargs):
        _tick()
        if pre is not None:
            pre(*args[1 if passes_first else 0:], **kwargs)
        return _check_size(func(*args, **kwargs))

    return checked


@pass_context
def _budgeted_iter(context, iterable):
    """What every ``{% for %}`` loops over: the same items, with the clock ticked at each."""
    if iterable is None or not hasattr(iterable, "__iter__"):
        return iterable  # let Jinja say what is wrong with it
    return _ticking(iterable)


def _ticking(iterable):
    for item in iterable:
        _tick()
        yield item


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with a render budget: see the module docstring."""

    intercepted_binops = frozenset(("*", "**", "%", "+", "//"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.globals["range"] = _safe_range
        self.filters = {name: _checked_filter(name, f) for name, f in self.filters.items()}
        self.filters["_budgeted_iter"] = _budgeted_iter

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_budgeted_iter", [], [], None, None,
                                     lineno=loop.iter.lineno)
        return tree

    def call_binop(self, context, op, left, right):
        _tick()
        if op == "*":
            _check_repeat(left, right)
        elif op == "**":
            _check_power(left, right)
        elif op == "%" and isinstance(left, str):
            _check_format(left, right)
        return _check_size(super().call_binop(context, op, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's signature
        _tick()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (_ticking(args[0]), *args[1:])
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name in ("format", "format_map"):
                _check_format(owner, args, kwargs)
            elif name in _STR_METHODS:
                _STR_METHODS[name](owner, *args, **kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


@lru_cache(maxsize=32)
def _compile(source: str):
    env = _BudgetedEnvironment(trim_blocks=True, lstrip_blocks=True)

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
    budget = _Budget(MAX_RENDER_SECONDS)
    token = _BUDGET.set(budget)
    chunks = None
    try:
        compiled = _compile(template.source)
        chunks = compiled.generate(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=template.bos_token,
            eos_token=template.eos_token,
        )
        out, size = [], 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_CHARS:
                raise _too_big("a prompt", size, MAX_CHARS, "characters")
            budget.tick()
            out.append(chunk)
        return "".join(out)
    except _OverBudget as exc:
        raise TemplateBudgetError(f"chat template '{template.name}' refused: it {exc}") from None
    except TemplateError as exc:
        raise TemplateRenderError(f"chat template '{template.name}' failed: {exc}") from exc
    except (TypeError, ValueError, LookupError, AttributeError, ZeroDivisionError) as exc:
        # what the template itself got wrong (1 + 'a', 1 / 0, a huge int as text)
        raise TemplateRenderError(f"chat template '{template.name}' failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    except (MemoryError, RecursionError, OverflowError) as exc:
        what = {MemoryError: "ran out of memory", RecursionError: "nests too deeply",
                OverflowError: "made a number too large"}[type(exc)]
        raise TemplateBudgetError(f"chat template '{template.name}' refused: it {what} "
                                  f"({type(exc).__name__})") from None
    finally:
        if chunks is not None:
            chunks.close()
        _BUDGET.reset(token)


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
    template = ChatTemplate("custom", source, base.stop, base.bos_token, base.eos_token)
    try:  # a template that cannot render even a short conversation in budget is refused now
        render(template, [{"role": "user", "content": "Hello"}])
    except TemplateBudgetError:
        raise
    except TemplateRenderError:
        pass  # it may need other messages (a system prompt, say): judged when rendered
    return template


def check_model_template(source: str) -> None:
    """TemplateRenderError unless llama.cpp's Python binding can take ``source`` as a model
    file's template: ``llama_cpp.Llama`` compiles every template of the file as it loads
    it, outside any budget, in a sandbox that folds constant expressions at compile time
    (``{{ 'A' * 2000000000 }}`` is built then, and written into the compiled code). So the
    source must parse as it parses it, and what it would fold must fit the limits above."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,  # as Jinja2ChatFormatter makes its environment
        extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, "jinja2.ext.loopcontrols"])
    try:
        tree = env.parse(source)
    except TemplateError as exc:
        raise TemplateRenderError(f"does not parse: {exc}") from None
    budget = _BUDGET.set(_Budget(MAX_RENDER_SECONDS))
    try:
        _check_folds(tree)
    except _OverBudget as exc:
        raise TemplateBudgetError(f"refused: it {exc}") from None
    except (MemoryError, RecursionError, OverflowError) as exc:
        raise TemplateBudgetError(f"refused: it makes a value too large to build "
                                  f"({type(exc).__name__})") from None
    finally:
        _BUDGET.reset(budget)


class _NotConstant(Exception):
    pass


def _check_folds(node: nodes.Node) -> None:
    """Build each constant expression under ``node`` as Jinja's optimizer would, under the
    render checks (_OverBudget): the largest ones only, descending where a part varies."""
    if isinstance(node, nodes.Expr):
        try:
            _constant(node)
            return
        except _NotConstant:
            pass
    for child in node.iter_child_nodes():
        _check_folds(child)


_FOLDING = _BudgetedEnvironment()  # its filters check their arguments before they run


def _constant(node: nodes.Expr):
    """The value ``node`` folds into, each operation checked before it runs."""
    _tick()
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.Tuple, nodes.List)):
        items = [_constant(item) for item in node.items]
        return tuple(items) if isinstance(node, nodes.Tuple) else items
    if isinstance(node, nodes.BinExpr):
        left, right = _constant(node.left), _constant(node.right)
        if node.operator == "*":
            _check_repeat(left, right)
        elif node.operator == "**":
            _check_power(left, right)
        elif node.operator == "%" and isinstance(left, str):
            _check_format(left, right)
        try:
            return _check_size(nodes._binop_to_func[node.operator](left, right))
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise _NotConstant() from exc  # Jinja does not fold what raises
    if isinstance(node, nodes.Concat):
        return _check_size("".join(str(_constant(part)) for part in node.nodes))
    if isinstance(node, nodes.Filter) and node.node is not None and node.name in _FOLDING.filters:
        value = _constant(node.node)
        args = [_constant(arg) for arg in node.args]
        kwargs = {pair.key: _constant(pair.value) for pair in node.kwargs}
        func = _FOLDING.filters[node.name]
        if getattr(func, "jinja_pass_arg", None) is not None or node.dyn_args or node.dyn_kwargs:
            raise _NotConstant()  # needs a context or an environment: not folded here
        try:
            return func(value, *args, **kwargs)
        except _OverBudget:
            raise
        except Exception as exc:  # noqa: BLE001 - Jinja does not fold what raises
            raise _NotConstant() from exc
    raise _NotConstant()


def _check(source: str) -> None:
    try:
        _compile(source)
    except TemplateError as exc:
        raise TemplateRenderError(f"chat template does not parse: {exc}") from exc
