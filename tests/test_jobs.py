"""Real training jobs, run as the app runs them: ``diptych train ... --progress jsonl`` in a
subprocess, on the bundled model, with real TRL steps. Settings are tiny (1-2 steps, short
sequences) so the whole file takes a few minutes on two CPU cores."""

from __future__ import annotations

import json
import os
import signal

import tiny_models
from helpers import finish, run_job, steps, train

from diptych import paths
from diptych.models import adapters, catalog
from diptych.training import job

# The drift measurement (about 30 s) is tested once, through the training panel.


def test_a_default_dpo_job_teaches_the_tuned_model_to_answer_and_stop(voted, bundled_model):
    """The mission in one test: on eight "answer, don't ask back" votes, the job's defaults
    turn the base, which never ends a turn, into a model that answers and ends its turn,
    without writing untrained tokens such as <unused832> (see the Gemma template)."""
    from diptych.models import drift
    from diptych.models.engine import Engine, SamplingParams

    lines, info = run_job(voted, "dpo", "--name", "stops", "--no-drift")
    assert lines[-1]["path"] == str(info.path)
    trained = steps(lines)
    assert trained and trained[-1]["step"] == trained[-1]["total"]
    meta = info.meta
    assert meta["kind"] == "dpo" and meta["config"]["beta"] == 0.1
    assert meta["base"]["sha256"] == catalog.file_hash(bundled_model)
    data = meta["data"]
    assert (data["source"], data["pairs"], data["eval"], data["held_out"]) == ("store", 8, 2, True)
    assert len(data["sha256"]) == 64
    before, after = meta["metrics"]["before"], meta["metrics"]["after"]
    assert before["kl"] == 0 and after["kl"] > 0 and after["pair_accuracy"] is not None
    assert meta["drift"] == {} and not meta["config"]["drift"]  # --no-drift
    assert adapters.key_metric(info).startswith("pair acc")
    adapters.check_compatible(info.gguf_path, bundled_model)
    prompts = drift.held_out_prompts()
    ended = {}
    for name, adapter in (("base", None), ("tuned", info.gguf_path)):
        engine = Engine(bundled_model, n_ctx=512, adapter=adapter)
        try:
            answers = [engine.generate(m, SamplingParams(max_tokens=64, seed=i))
                       for i, m in enumerate(prompts)]
        finally:
            engine.close()
        assert not any("<unused" in a.text for a in answers), [a.text for a in answers]
        ended[name] = sum(a.finish_reason == "stop" for a in answers)
    assert ended["base"] <= 2 and ended["tuned"] >= 12, ended


def wait_for_training(process) -> None:
    for line in process.stdout:
        if json.loads(line)["phase"] == "train":
            return
    process.log.seek(0)
    raise AssertionError(process.log.read()[-3000:])


def test_sigterm_cancels_cleanly_and_sigkill_leaves_nothing_registered(voted, tmp_path):
    """Two jobs at once, as the app's Cancel (SIGTERM) and a kill (SIGKILL) end them (on a
    tiny random-weight model: what is tested is the job's ending, not what it learns)."""
    tiny = tiny_models.build("llama", tmp_path / "tiny.gguf")
    pairs = ["--model", str(tiny), "--data", str(voted / "pairs.jsonl"), "--steps", "5000",
             "--batch-size", "2", "--max-length", "64"]
    stopped = train(voted, "dpo", "--name", "stopped", *pairs)
    killed = train(voted, "dpo", "--name", "killed", *pairs)
    wait_for_training(stopped)
    stopped.send_signal(signal.SIGTERM)
    wait_for_training(killed)
    killed.kill()
    killed.communicate()
    code, lines, err = finish(stopped)
    assert code == 128 + signal.SIGTERM
    assert lines[-1]["phase"] == "cancelled"
    root = paths.adapters_dir(voted)
    assert adapters.list_adapters(voted) == []  # nothing registered ...
    assert [p.name for p in root.iterdir()] == [f".partial-killed-{killed.pid}"]  # ... the kill left this
    assert job.clean_stale(root) and list(root.iterdir()) == []  # what the next job does


def test_bad_input_is_one_line_and_exit_2(voted, capsys):
    from diptych.cli import main

    (paths.adapters_dir(voted) / "taken").mkdir()
    # As the app starts a job: the error is the last progress line, and the exit code 2.
    code, lines, err = finish(train(voted, "dpo", "--name", "taken"))
    assert code == 2 and lines[-1]["phase"] == "error", err[-2000:]
    assert "already exists" in lines[-1]["error"]
    # The others in this process (the imports are paid once): one line on stderr, exit 2.
    for args, message in [
        (["dpo", "--name", "x", "--data", "missing.jsonl"], "no such preference file"),
        (["grpo", "--name", "x", "--task", "reverse", "--prompts-from", "history"], "known answers"),
        (["grpo", "--name", "x", "--reward-model", "nobody"], "no adapter named 'nobody'"),
        (["dpo", "--name", "../x"], "not a valid adapter name"),
    ]:
        assert main(["--data-dir", str(voted), "train", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("diptych") and "Traceback" not in "\n".join(err)
    assert os.listdir(paths.adapters_dir(voted)) == ["taken"]
