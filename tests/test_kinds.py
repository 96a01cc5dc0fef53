"""A job kind is described once: its flags reach the CLI and the Train tab's form from its
description alone, and the counts the Train tab shows follow design.md's table."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
from every_vote import fill
from helpers import record_sample_vote

from diptych.cli import build_parser
from diptych.training import kinds
from diptych.training.job import JobConfig
from diptych.training.store import Store


@dataclass
class FakeConfig(JobConfig):
    knob: int = 7
    style: str = "plain"
    loud: bool = False
    motto: str | None = None


FAKE = kinds.Kind(
    name="fake", title="Fake: a kind that only exists in this test", help="a fake kind",
    config=FakeConfig, train=lambda job: {}, data="pairs", writes_gguf=True,
    options=(kinds.Option("knob", "how far to turn it", kinds.positive(int), label="Knob"),
             kinds.Option("style", "plain or fancy", choices=("plain", "fancy"), label="Style"),
             kinds.Option("loud", "say it louder", action="store_true", label="Loud"),
             kinds.Option("motto", "a motto", label="Motto")),
)


@pytest.fixture
def fake_kind():
    kinds.register(FAKE)
    yield FAKE
    kinds.unregister(FAKE.name)


def parse(argv):
    args = build_parser().parse_args(argv)
    return kinds.config_from(kinds.get(args.train_kind), vars(args))


def test_a_kinds_flags_reach_the_cli_from_its_description(fake_kind):
    cfg = parse(["train", "fake", "--name", "f", "--knob", "3", "--style", "fancy", "--loud",
                 "--motto", "go", "--from", "v1", "--lr", "0.01"])
    assert cfg == FakeConfig(name="f", knob=3, style="fancy", loud=True, motto="go",
                             from_adapter="v1", lr=0.01)
    assert parse(["train", "fake", "--name", "f"]) == FakeConfig(name="f")  # unset: the defaults
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "fake", "--knob", "0"])


def test_a_kinds_flags_reach_the_form_from_its_description(qtbot, fake_kind, tmp_path):
    from diptych.desktop.training_panel import TrainingPanel

    panel = TrainingPanel(tmp_path)
    qtbot.addWidget(panel)
    panel.kind.setCurrentIndex(panel.kind.findData("fake"))
    assert panel.fields["knob"].specialValueText() == "default (7)"
    panel.fields["knob"].setValue(4)
    panel.fields["style"].setCurrentIndex(panel.fields["style"].findData("fancy"))
    panel.fields["loud"].setChecked(True)
    panel.fields["motto"].setText("go on")
    command = panel.command()
    assert command[command.index("train"):command.index("train") + 4] == ["train", "fake", "--name",
                                                                          panel.name.text()]
    cfg = parse(command[command.index("train"):])  # the form's command line, parsed by the CLI
    assert (cfg.knob, cfg.style, cfg.loud, cfg.motto) == (4, "fancy", True, "go on")
    # another kind hides the fake kind's rows and leaves its flags out
    panel.kind.setCurrentIndex(panel.kind.findData("dpo"))
    assert not panel.form.isRowVisible(panel.fields["knob"]) and "--knob" not in panel.command()
    assert panel.form.isRowVisible(panel.fields["beta"]) and panel.name.text().startswith("dpo-")


def test_every_real_kind_has_its_form_rows_and_cli_flags(qtbot, tmp_path):
    from diptych.desktop.training_panel import TrainingPanel

    panel = TrainingPanel(tmp_path)
    qtbot.addWidget(panel)
    parser_kinds = build_parser().subcommands.choices["train"].subcommands.choices
    assert list(parser_kinds) == list(kinds.kinds())
    assert len(kinds.kinds()) == len(kinds.MODULES)  # each module one kind, in MODULES' order
    for name, kind in kinds.kinds().items():
        flags = {a for action in parser_kinds[name]._actions for a in action.option_strings}
        assert {o.cli_flag for o in kind.all_options()} <= flags and "--from" in flags
        panel.kind.setCurrentIndex(panel.kind.findData(name))
        shown = {f for f in panel.fields if panel.form.isRowVisible(panel.field_rows[f])}
        assert shown == {o.field for o in kind.all_options() if o.label}


def test_a_new_kind_is_one_module_and_its_line_in_modules(monkeypatch, capsys, qtbot, data_dir):
    module = types.ModuleType("diptych.training.fake_scorer")
    module.KIND = kinds.Kind(
        name="fake-scorer", short="Fake scorer", title="Fake scorer: only in this test",
        help="a fake kind that writes no GGUF", config=FakeConfig, train=lambda job: {},
        data="pairs", writes_gguf=False,
        options=(kinds.Option("knob", "how far to turn it", kinds.positive(int)),))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(kinds, "MODULES", (*kinds.MODULES, "fake_scorer"))

    found = kinds.get("fake-scorer")
    assert (found.short, found.writes_gguf) == ("Fake scorer", False)
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["train", "fake-scorer", "--help"])
    assert exit.value.code == 0
    shown = capsys.readouterr().out
    assert "a fake kind that writes no GGUF" in shown and "--knob" in shown and "--seed" in shown
    assert parse(["train", "fake-scorer", "--name", "f", "--knob", "2"]) == FakeConfig(name="f", knob=2)

    # the Train tab lists it, with its short name in what the votes give each kind
    from diptych.desktop import ops
    from diptych.desktop.training_panel import TrainingPanel

    with Store.open(data_dir) as store:
        record_sample_vote(store)
        panel = TrainingPanel(data_dir, store)
        qtbot.addWidget(panel)
        ops.wait_for_queries()
        assert panel.kind.findData("fake-scorer") >= 0
        assert "Fake scorer: 1 usable pairs" in panel.vote_counts.text()  # DPO, ..., Fake scorer
        panel.kind.setCurrentIndex(panel.kind.findData("fake-scorer"))
        assert "--knob" not in panel.command()
        ops.wait_for_queries()  # the counts the new kind asked for, before the store closes


def test_a_kind_gets_its_short_name_from_its_name_unless_it_gives_one():
    assert FAKE.short == "FAKE"
    assert kinds.get("reward").short == "Reward model"


def test_an_option_that_sets_no_config_field_fails_as_the_kind_is_built():
    with pytest.raises(TypeError, match="kind 'broken': its options knobb set no field of FakeConfig"):
        kinds.Kind(name="broken", title="", help="", config=FakeConfig, train=lambda job: {},
                   data="pairs", writes_gguf=True,
                   options=(kinds.Option("knobb", "a typo of knob", kinds.positive(int)),))


def test_counts_follow_the_table_of_which_vote_feeds_which_job(data_dir):
    with Store.open(data_dir) as store:
        fill(store)  # 2 left, 2 right, a tie, a both-bad, 2 written answers
        counts = store.pair_counts()
    found = kinds.example_counts(counts)
    assert found["pairs"] == {"n": 8}  # 4 votes + 2 written answers x 2 shown answers
    assert found["labels"] == {"n": 12, "desirable": 6, "undesirable": 6}
    assert found["answers"] == {"n": 2}
    assert kinds.example_counts(counts, tie="desirable", chosen=True)["labels"]["desirable"] == 8
    assert kinds.example_counts(counts, chosen=True)["answers"] == {"n": 6}
    assert kinds.describe_count(kinds.get("kto"), counts) == "12 labels (6 desirable, 6 undesirable)"


def test_grpo_continuing_an_adapter_takes_the_skill_jobs_grpo_settings_unless_told():
    from diptych.training import reinforce, skill

    def config(*argv):
        args = build_parser().parse_args(["train", "grpo", "--name", "x", *argv])
        return kinds.config_from(kinds.get("grpo"), vars(args))

    fresh, continuing = config(), config("--from", "warm")
    assert (fresh.lr, fresh.lr_ramp) == (3e-4, 0.0)
    for name, value in reinforce.CONTINUING.items():
        assert getattr(continuing, name) == value == getattr(skill.Config(), name)
    told = config("--from", "warm", "--lr", "5e-5", "--lr-ramp", "0", "--temperature", "0.7")
    assert (told.lr, told.lr_ramp, told.temperature) == (5e-5, 0.0, 0.7)
    assert told.scale_rewards == reinforce.CONTINUING["scale_rewards"]
