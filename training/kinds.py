"""Job kinds, each described once: the CLI's flags and the Train tab's form come from here.

A kind (dpo, kto, sft, reward, grpo, skill, rlhf) is one module of ``diptych.training``
that defines ``Config`` (a dataclass of its settings, on top of ``job.JobConfig``), ``train(job)`` and
``KIND``, a :class:`Kind`: its help, its short name, the data it takes, whether it
writes a GGUF LoRA, and its own :class:`Option` s (each the name of a ``Config`` field:
a kind whose option has none fails as it is built). ``diptych train KIND`` builds its flags from the shared
options and the kind's (``commands/train.py``); the Train tab builds a form row for each
option with a ``label`` and the same flags on its command line
(``desktop/training_panel.py``). A new kind is one module named in :data:`MODULES`, or
one :func:`register` call.

Options set ``Config`` fields of the same name; a flag the user does not give stays
``None`` on the command line, so the kind's ``Config`` default applies.

Importing this module (and the kinds' modules) must not import torch: the CLI's parser and
the app build from it.
"""

from __future__ import annotations

import argparse
import importlib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Callable

from diptych.models import limits

MODULES = ("dpo", "kto", "sft", "reward", "grpo", "skill", "rlhf")  # diptych.training.<module>.KIND, in this order

# What a kind trains on (see design.md, "Data: which vote feeds which job").
DATA = {
    "pairs": "preference pairs",  # a left/right vote: one; a written answer: two
    "labels": "labelled answers",  # KTO: each shown or written answer, desirable or not
    "answers": "written answers",  # SFT: the user's own answers (and chosen ones, on request)
    "prompts": "prompts",  # GRPO: a task's prompts, the chat history or a file
}


def positive(kind):
    """An argparse type: a finite number above zero."""
    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def non_negative(text: str) -> float:
    """An argparse type: a finite number, zero or more."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive number, not {text}")
    return value


non_negative.__name__ = "float"


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1, below 1 (a share of the steps)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to less than 1, not {text}")
    return value


fraction.__name__ = "float"


def finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


finite.__name__ = "float"


@dataclass(frozen=True)
class Option:
    """One setting of a kind: a CLI flag, and (with ``label``) a row of the Train tab's form.

    ``widget``: ``number`` (int or float), ``text``, ``file`` (text with a file picker),
    ``choice`` (``choices``), ``check`` (a ``store_true`` flag) or ``adapter`` (a picker of
    the registered adapters; ``adapter_kind`` narrows it)."""

    field: str  # the Config field it sets
    help: str
    type: Callable | None = None  # argparse type of the value; None: a flag without one
    flag: str | None = None  # default: --the-field-name
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # argparse action: store_true, store_false, append
    group: str | None = None  # options of one group are mutually exclusive
    label: str | None = None  # the form's row label; None: only under "Other options"
    widget: str | None = None  # see the class docstring; None: from type and action
    adapter_kind: str | None = None  # widget "adapter": only adapters of this kind

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.field.replace("_", "-")

    @property
    def form_widget(self) -> str:
        if self.widget:
            return self.widget
        if self.choices:
            return "choice"
        if self.action in ("store_true", "store_false"):
            return "check"
        return "number" if self.type is not None and self.type.__name__ in ("int", "float") else "text"

    def add_to(self, parser) -> None:
        kwargs = {"dest": self.field, "help": self.help}
        if self.action in ("store_true", "store_false"):
            kwargs.update(action=self.action, default=None)
        else:
            kwargs.update(type=self.type, metavar=self.metavar, choices=self.choices)
            if self.action:
                kwargs["action"] = self.action
        parser.add_argument(self.cli_flag, **kwargs)


@dataclass(frozen=True)
class Kind:
    """A job kind: everything the CLI, the Train tab and the job runner need to know."""

    name: str  # diptych train NAME
    title: str  # the Train tab's job list
    help: str  # the CLI's one-line help
    config: type  # its Config dataclass (a job.JobConfig)
    train: Callable  # train(job) -> {"data": ..., "metrics": ...}
    data: str  # a key of DATA
    writes_gguf: bool  # a LoRA llama.cpp runs (the tuned pane can use it), or not (a scorer)
    options: tuple[Option, ...] = ()
    dry_run: Callable | None = None  # dry_run(cfg) -> exit code, for --dry-run
    short: str = ""  # a short name for the Train tab ("DPO"); "": the name in capitals
    # it trains with GRPO (the Train tab shows its held-out answers as it trains, and cannot
    # tell its time from the votes: sampling is most of it); None: whether its data are prompts
    reinforces: bool | None = None
    # defaults in place of the Config's where a job continues an adapter (--from): what
    # suits a fresh LoRA can undo a trained one
    continuing: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.short:
            object.__setattr__(self, "short", self.name.upper())
        if self.reinforces is None:
            object.__setattr__(self, "reinforces", self.data == "prompts")
        known = {f.name for f in fields(self.config)}
        unknown = [o.field for o in self.all_options() if o.field not in known]
        if unknown:  # a flag that would set nothing, or fail when the Config is built
            raise TypeError(f"kind {self.name!r}: its options {', '.join(unknown)} set no field "
                            f"of {self.config.__name__}")

    def all_options(self) -> tuple[Option, ...]:
        return COMMON + self.options

    def default(self, field: str):
        """The Config's default for ``field`` (None when it has none)."""
        for f in fields(self.config):
            if f.name == field:
                if f.default is not MISSING:
                    return f.default
                return f.default_factory() if f.default_factory is not MISSING else None
        return None


# Settings every kind takes (job.JobConfig).
COMMON = (
    Option("name", "the new adapter's name (a folder name; required unless --dry-run)"),
    Option("steps", "optimizer steps", positive(int), group="length", label="Steps"),
    Option("epochs", "passes over the data", positive(float), group="length"),
    Option("lr", "learning rate", positive(float), label="Learning rate"),
    Option("lora_r", "LoRA rank", positive(int), label="LoRA rank"),
    Option("batch_size", "examples per step", positive(int)),
    Option("eval_size", "held-out examples for the before/after evaluation", positive(int)),
    Option("seed", "random seed", limits.seed),
    Option("from_adapter", "start from this adapter's weights (same base and LoRA shape); "
           "the base stays the reference", flag="--from", metavar="ADAPTER",
           label="Start from", widget="adapter"),
    Option("progress", "machine-readable progress: one JSON object per line on stdout",
           choices=("jsonl",)),
)

# Options several kinds share.
DATA_FILE = Option("data", "training data (default: the votes in the store)", metavar="FILE.jsonl")
MAX_LENGTH = Option("max_length", "tokens of prompt + answer", positive(int))
NO_DRIFT = Option("drift", "skip measuring the new adapter's KL from the base "
                  "(about 20 s; 'diptych adapters drift' measures it later)",
                  flag="--no-drift", action="store_false")
BETA = Option("beta", "weight of the KL pull to the base", positive(float), label="KL weight (beta)")
NEW_VOTES = Option("new_votes", "with --from: train only on the votes cast since that adapter was "
                   "made (a round that continues it)", action="store_true",
                   label="Only votes since it was made")
FP32 = Option("bf16", "train in fp32 even where the CPU has bf16 instructions "
              "(bf16 autocast is used there by default)", flag="--fp32", action="store_false")

_extra: dict[str, Kind] = {}


def kinds() -> dict[str, Kind]:
    """Every job kind by name: the modules', then any registered."""
    found = {}
    for module in MODULES:
        kind = importlib.import_module(f"diptych.training.{module}").KIND
        found[kind.name] = kind
    return found | _extra


def get(name: str) -> Kind:
    return kinds()[name]


def register(kind: Kind) -> None:
    """Add a kind that lives outside MODULES (a plug-in, a test)."""
    _extra[kind.name] = kind


def unregister(name: str) -> None:
    _extra.pop(name, None)


def add_arguments(parser, kind: Kind) -> None:
    """The flags of ``kind`` on an argparse parser; unset ones parse to None."""
    groups: dict[str, object] = {}
    for option in kind.all_options():
        target = parser
        if option.group:
            if option.group not in groups:
                groups[option.group] = parser.add_mutually_exclusive_group()
            target = groups[option.group]
        option.add_to(target)


def config_from(kind: Kind, values: dict):
    """The kind's Config from parsed values; None means "the Config's default"."""
    names = {f.name for f in fields(kind.config)}
    given = {k: v for k, v in values.items() if k in names and v is not None}
    if given.get("from_adapter"):
        given = {**kind.continuing, **given}
    if "epochs" in given:  # a kind's default step count must not override --epochs
        given["steps"] = None
    return kind.config(**given)


def example_counts(counts: dict, tie: str = "skip", chosen: bool = False) -> dict[str, dict]:
    """How many examples the live votes give each kind of data, from ``Store.pair_counts()``
    (design.md's table): ``{"pairs": {"n": ..}, "labels": {"n", "desirable", "undesirable"},
    "answers": {"n": ..}}``."""
    left_right = counts.get("left", 0) + counts.get("right", 0)
    better, ties, bad = counts.get("better", 0), counts.get("tie", 0), counts.get("both_bad", 0)
    desirable = left_right + better + (2 * ties if tie == "desirable" else 0)
    undesirable = left_right + 2 * bad
    return {
        "pairs": {"n": left_right + 2 * better},
        "labels": {"n": desirable + undesirable, "desirable": desirable, "undesirable": undesirable},
        "answers": {"n": better + (left_right if chosen else 0)},
    }


def describe_count(kind: Kind, counts: dict, ties: str | None = None, chosen: bool | None = None) -> str:
    """The Train tab's line for what the votes give ``kind``, e.g. "12 usable pairs"
    (``ties``, ``chosen``: the form's settings, else the kind's defaults)."""
    found = example_counts(counts, tie=ties or kind.default("ties") or "skip",
                           chosen=bool(kind.default("chosen") if chosen is None else chosen))
    if kind.data == "pairs":
        return f"{found['pairs']['n']} usable pairs"
    if kind.data == "labels":
        labels = found["labels"]
        return f"{labels['n']} labels ({labels['desirable']} desirable, {labels['undesirable']} undesirable)"
    if kind.data == "answers":
        what = "written and chosen answers" if chosen else "written answers"
        return f"{found['answers']['n']} {what}"
    return ""
