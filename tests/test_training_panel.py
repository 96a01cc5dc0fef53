"""Start a tiny real job from the training panel and use its adapter in the tuned pane."""

import argparse

import tiny_models

from diptych.desktop import ops
from diptych.desktop.app import build_window
from diptych.models import adapters as adapter_registry

TINY = "--steps 2 --batch-size 2 --max-length 64 --eval-size 2"


def test_panel_runs_a_job_and_the_adapter_reaches_the_tuned_pane(qtbot, voted, tmp_path):
    # the app on a tiny random-weight model: what is tested is the panel's part of the
    # loop (start, plots, the adapter in the picker and the pane), not what DPO learns
    tiny = tiny_models.build("llama", tmp_path / "tiny.gguf")
    window = build_window(argparse.Namespace(data_dir=str(voted), model=str(tiny), adapter=None))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: len(window.controller.engines) == 2, timeout=30_000)
    panel = window.training
    ops.wait_for_queries()
    assert "8 usable pairs" in panel.source_count.text()
    panel.name.setText("panel-dpo")
    panel.extra.setText(TINY)
    command = panel.command()
    assert command[-8:] == TINY.split() and "--progress" in command
    panel.start_button.click()
    assert panel.running and not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=600_000)
    ops.wait_for_queries()
    assert panel.last_line["phase"] == "done", panel.log.toPlainText()[-2000:]
    assert panel.history["loss"], "progress lines with a loss arrived and were plotted"
    # issue 14, defect 5: the live "KL from base" plot of a DPO job gets points
    assert panel.history["kl"] and all(kl >= 0 for _, kl in panel.history["kl"])
    qtbot.waitUntil(lambda: panel.drawn)
    assert len(panel.plots["kl"].getData()[0]) == len(panel.history["kl"])
    assert "held-out examples" in panel.summary.text()
    # defect 7: the next job gets a name no adapter has, so a second Start works
    assert panel.name.text() != "panel-dpo" and panel.name.text().startswith("dpo-")
    assert "pair_accuracy" in panel.summary.text() or "→" in panel.summary.text()
    # the job measured the adapter's KL from the base through llama.cpp, and stored it
    assert "KL from the base per token" in panel.summary.text()
    # the new adapter is listed in the tuned pane's picker and the panel's list
    assert any("panel-dpo" in window.adapter_picker.itemText(i)
               for i in range(window.adapter_picker.count()))
    assert panel.adapter_list.count() == 1
    # "Continue …": a round that continues the new adapter on the votes cast since
    panel.adapter_list.setCurrentRow(0)
    panel.continue_button.click()
    ops.wait_for_queries()
    command = panel.command()
    assert command[command.index("--from") + 1] == "panel-dpo" and "--new-votes" in command
    assert panel.current_kind() == "dpo"
    assert panel.source_count.text() == "0 usable pairs from the votes since panel-dpo was made"
    panel.fields["new_votes"].setChecked(False)
    ops.wait_for_queries()
    assert panel.source_count.text().startswith("8 usable pairs")
    drift = adapter_registry.resolve("panel-dpo", voted).meta["drift"]
    assert drift["held_out"]["kl"] > 0 and drift["held_out"]["prompts"] == 16
    assert drift["recent"]["prompts"] == 8  # the eight questions voted on
    with qtbot.waitSignal(window.controller.engines_changed, timeout=30_000):
        panel.use_button.click()
    assert "panel-dpo" in window.panes["right"].header.text()
    assert window.controller.engines["tuned"].adapter_name == "panel-dpo"


LAST_JOB = ('{"phase": "train", "step": 1, "total": 2, "loss": 0.7, "reward": 0.1, "kl": 0.01, "eta_s": 3}',
            '{"phase": "done", "adapter": "earlier", "metrics": {"before": {"pair_accuracy": 0.5}, '
            '"after": {"pair_accuracy": 1.0}}, "drift": {}, "data": {"eval": 2, "held_out": true}}')


def test_a_failing_job_shows_its_error_and_leaves_the_app_alone(qtbot, data_dir, weights_cache):
    window = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter=None))
    qtbot.addWidget(window)
    panel = window.training
    for line in LAST_JOB:  # what the last job drew
        panel.handle_line(line)
    summary = panel.summary.text()
    assert "2 held-out examples" in summary
    panel.name.setText("no-data")  # an empty store: no pairs to learn from
    panel.start_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.last_line["phase"] == "error"
    assert panel.last_line["error"] in panel.phase.text() and "error:" in panel.log.toPlainText()
    # issue 22, item 8: the command as a user types it
    assert panel.log.toPlainText().startswith(f"$ diptych --data-dir {data_dir} train dpo ")
    # issue 14, defect 7: a failed start keeps the last job's plots and evaluation
    assert panel.history["loss"] == [(1, 0.7)] and panel.summary.text() == summary
    assert panel.adapter_list.count() == 0


def test_train_tab_defects_of_a_new_user(qtbot, data_dir, monkeypatch):
    """Issue 14, defect 7, the parts that need no job: a name already taken is refused in
    words before any job starts; the log keeps what a person reads and follows it;
    "default" says what the default is; held-out examples are mentioned; the ETA counts
    down between steps. Defect 5: KL lines reach the KL plot."""
    import time

    from PySide6.QtWidgets import QMessageBox

    from diptych import paths
    from diptych.desktop.training_panel import TrainingPanel
    from diptych.training.store import Store

    from every_vote import fill

    with Store.open(data_dir) as store:
        fill(store)
        panel = TrainingPanel(data_dir, store)
        qtbot.addWidget(panel)
        ops.wait_for_queries()
        assert "8 usable pairs; 2 held out to evaluate" in panel.source_count.text()
        assert "KTO: 12 labels" in panel.vote_counts.text()
        assert panel.steps.specialValueText() == "default (5 epochs)"
        panel.kind.setCurrentIndex(panel.kind.findData("grpo"))
        assert panel.steps.specialValueText() == "default (60)"
        panel.kind.setCurrentIndex(panel.kind.findData("sft"))
        ops.wait_for_queries()
        assert panel.source_count.text().startswith("2 written answers")
        panel.fields["chosen"].setChecked(True)
        ops.wait_for_queries()
        assert panel.source_count.text().startswith("6 written and chosen answers")

        taken = panel.name.text()
        (paths.adapters_dir(data_dir) / taken).mkdir()
        warnings = []
        monkeypatch.setattr(QMessageBox, "warning", lambda *args: warnings.append(args[2]))
        panel.start_button.click()
        assert not panel.running and "already exists" in warnings[0]
        panel.kind.setCurrentIndex(panel.kind.findData("dpo"))
        panel.kind.setCurrentIndex(panel.kind.findData("sft"))
        assert panel.name.text() == taken + "-2"  # a fresh name skips the taken one
        ops.wait_for_queries()  # the counts read the store: it stays open until they are done

    panel.log_stderr(" 50%|█████     | 1/2 [00:01<00:01,  1.20s/it]\r100%|██████████| 2/2 [00:02<00:00]\n"
                     "{'loss': '0.5', 'grad_norm': '1.95'}\n"
                     "/x/training_args.py:1541: FutureWarning: `gradient_checkpointing` is deprecated\n"
                     "  warnings.warn(f\"old\", FutureWarning)\n"
                     "Traceback (most recent call last):\n")
    assert panel.log.toPlainText().splitlines()[-1] == "Traceback (most recent call last):"
    assert "%|" not in panel.log.toPlainText() and "grad_norm" not in panel.log.toPlainText()
    for step in range(1, 301):
        panel.handle_line(f'{{"phase": "train", "step": {step}, "total": 400, "loss": 0.5, '
                          f'"reward": null, "kl": 0.002, "eta_s": 100}}')
    bar = panel.log.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == bar.maximum()  # follows the new lines
    assert panel.log.toPlainText().splitlines()[-1].startswith("step 300/400  loss 0.5")
    qtbot.waitUntil(lambda: panel.drawn)
    assert len(panel.plots["kl"].getData()[0]) == 300  # defect 5
    time.sleep(1.1)
    panel._show_eta()  # what the one-second timer does while a job runs
    assert "ETA 1 min 38 s" in panel.progress.format() or "ETA 1 min 39 s" in panel.progress.format()


def test_grpo_try_it_shows_scored_answers_and_the_live_view_draws_a_job(qtbot, data_dir):
    from pathlib import Path

    window = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter=None))
    qtbot.addWidget(window)
    panel = window.training
    panel.kind.setCurrentIndex(panel.kind.findData("grpo"))
    assert panel.try_button.isVisible() or not window.isVisible()
    example = Path(__file__).resolve().parents[1] / "examples" / "rewards" / "format_length.py"
    panel.reward_fn.setText(f"{example}:short_statement")
    panel.extra.setText("--max-completion-length 8")
    assert "--dry-run" in panel.command(dry_run=True) and "--name" not in panel.command(dry_run=True)
    assert panel.command()[panel.command().index("--reward-fn") + 1].endswith(":short_statement")
    panel.use_button.setVisible(True)  # as after an earlier job
    panel.try_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    assert panel.use_button.isHidden()  # issue 22, item 9: nothing was trained to use
    assert panel.last_line["phase"] == "done", panel.log.toPlainText()[-2000:]
    assert panel.answers.toPlainText().count("→") == 12  # 3 prompts x 4 answers, each scored
    assert "nothing was trained" in panel.summary.text()
    assert panel.adapter_list.count() == 0

    # what a GRPO job's lines draw: reward with its spread, KL, held-out answers
    for line in ('{"phase": "eval", "step": 0, "total": 4, "reward": 0.25, "samples": '
                 '[{"prompt": "Is <b>this</b> shown?", "answer": "Yes <i>as text</i>.", "reward": 0.5}]}',
                 '{"phase": "train", "step": 1, "total": 4, "loss": 0.1, "reward": 0.5, '
                 '"reward_std": 0.2, "kl": 0.01, "eta_s": 30, "sampler": "llama.cpp"}',
                 '{"phase": "eval", "step": 1, "total": 4, "reward": 0.75, "samples": []}'):
        panel.handle_line(line)
    assert panel.history["spread"] == [(1, 0.3, 0.7)]
    assert panel.history["held_out"] == [(0, 0.25), (1, 0.75)] and panel.history["kl"] == [(1, 0.01)]
    assert "Held-out answers at step 1" in panel.answers.toPlainText()
    panel.handle_line('{"phase": "eval", "step": 2, "total": 4, "reward": 0.5, "samples": '
                      '[{"prompt": "Is <b>this</b> shown?", "answer": "Yes <i>as text</i>.", "reward": 0.5}]}')
    assert "Yes <i>as text</i>." in panel.answers.toPlainText()  # exactly as written


def test_the_log_and_the_summary_are_written_for_a_person(qtbot, data_dir):
    """Issue 22, item 8: no "[eval_before]", "ETA s 1.89e+03" or "1 held-out examples …
    n: 1 → 1"."""
    from diptych.desktop.training_panel import TrainingPanel

    panel = TrainingPanel(data_dir)
    qtbot.addWidget(panel)
    for line in ('{"phase": "load"}', '{"phase": "prepare"}', '{"phase": "eval_before"}',
                 '{"phase": "train", "step": 1, "total": 400, "loss": 0.5, "kl": 0.002, "eta_s": 1890.4}',
                 '{"phase": "eval_after"}', '{"phase": "save"}',
                 '{"phase": "done", "adapter": "v1", "path": "/data/adapters/v1", "data": '
                 '{"eval": 1, "held_out": true}, "metrics": {"before": {"pair_accuracy": 0.0, "n": 1}, '
                 '"after": {"pair_accuracy": 1.0, "n": 1}}}'):
        panel.handle_line(line)
    assert panel.log.toPlainText().splitlines() == [
        "Loading the base weights…", "Preparing the data…", "Evaluating the base…",
        "step 1/400  loss 0.5  KL 0.002  ETA 31 min 30 s",
        "Evaluating the adapter…", "Saving the adapter…", "Done: the adapter is in /data/adapters/v1"]
    summary = panel.summary.text()
    assert "Evaluation on 1 held-out example (not trained on)" in summary
    assert "pair_accuracy: 0 → <b>1</b>" in summary and "n:" not in summary


def test_a_new_job_gets_a_clean_view_with_only_the_plots_it_reports(qtbot, data_dir):
    """Issue 22, item 7: the last job's curves and axis ranges go once the next job loads;
    an SFT job shows no empty reward or KL chart; a job that fails before drawing brings
    the last view back (issue 14, defect 7)."""
    from diptych.desktop.training_panel import TrainingPanel

    panel = TrainingPanel(data_dir)
    qtbot.addWidget(panel)
    panel.show()
    grpo = ('{"phase": "eval", "step": 0, "total": 40, "reward": 0.2, "kl": 0.0, "samples": []}',
            '{"phase": "stage", "stage": "grpo", "step": 30, "total": 40}',
            '{"phase": "train", "step": 31, "total": 40, "loss": 9.0, "reward": 0.5, "reward_std": 0.2, '
            '"kl": 3.0, "eta_s": 30}')
    for line in grpo:
        panel.handle_line(line)
    assert panel.plot_widgets["reward"].isVisible() and panel.plot_widgets["kl"].isVisible()
    qtbot.waitUntil(lambda: panel.drawn)
    assert len(panel.markers) == len(panel.plot_widgets)  # where GRPO starts, on every plot
    last = dict(panel.history)

    panel.monitor._stale_view = True  # what Start does
    panel.handle_line('{"phase": "load"}')
    qtbot.waitUntil(lambda: panel.drawn)
    shown = panel.plots["loss"].getData()[0]
    assert not any(panel.history.values()) and (shown is None or len(shown) == 0)
    assert panel.markers == {}
    panel.handle_line('{"phase": "train", "step": 1, "total": 3, "loss": 2.0, "eta_s": 5}')
    assert panel.plot_widgets["loss"].isVisible()
    assert not panel.plot_widgets["reward"].isVisible() and not panel.plot_widgets["kl"].isVisible()
    qtbot.waitUntil(lambda: panel.drawn)
    x_range = panel.plot_widgets["loss"].getViewBox().viewRange()[0]
    assert x_range[1] < 10, x_range  # step 1 of 3, not the last job's 31 steps

    panel.monitor.history, panel.monitor._stale_view = last, True  # as if the GRPO job were the last one
    panel.handle_line('{"phase": "load"}')
    panel.handle_line('{"phase": "error", "error": "no pairs to learn from"}')
    assert panel.history == last and panel.plot_widgets["reward"].isVisible()
    qtbot.waitUntil(lambda: panel.drawn)
    assert len(panel.markers) == len(panel.plot_widgets)


def test_the_plots_share_the_width_and_name_only_what_they_show(qtbot, data_dir):
    """Loss and KL share their row (the KL plot was squeezed to a sliver beside the
    settings dock); the held-out legend shows only where a job reports held-out rewards
    (GRPO), not over DPO's margin."""
    from diptych.desktop.training_panel import TrainingPanel

    panel = TrainingPanel(data_dir)
    qtbot.addWidget(panel)
    panel.resize(980, 760)
    panel.show()
    panel.handle_line('{"phase": "train", "step": 1, "total": 3, "loss": 1.0, "reward": 0.1}')
    qtbot.waitUntil(lambda: panel.drawn)  # the KL plot is hidden until a KL arrives
    for step in (2, 3):
        panel.handle_line(f'{{"phase": "train", "step": {step}, "total": 3, "loss": 1.0, '
                          f'"reward": 0.{step}, "kl": 0.0{step}}}')
    qtbot.waitUntil(lambda: panel.drawn)
    loss, kl = panel.plot_widgets["loss"], panel.plot_widgets["kl"]
    qtbot.waitUntil(lambda: kl.isVisible() and kl.width() > 0)
    assert abs(loss.width() - kl.width()) <= 0.1 * loss.width(), (loss.width(), kl.width())
    assert panel.monitor.legend.items == []
    panel.handle_line('{"phase": "eval", "step": 2, "total": 4, "reward": 0.4, "samples": []}')
    qtbot.waitUntil(lambda: panel.drawn)
    assert [label.text for _, label in panel.monitor.legend.items] == ["held-out"]
