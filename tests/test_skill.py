"""Teach a skill: the warm-up on worked examples, then GRPO, as one job (training/skill.py).

The jobs run on a tiny random-weight llama (tests/tiny_models.py) as the app runs them: a
subprocess with ``--progress jsonl``; the dry run and the file checks on the bundled model.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from helpers import cancel_in_stage, finish, train

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402

from diptych.models import adapters  # noqa: E402
from diptych.training import skill, tasks, worked  # noqa: E402
from diptych.training.errors import JobError  # noqa: E402

SMALL = ["--task", "arith", "--warmup-steps", "3", "--warmup-examples", "6", "--warmup-batch-size", "2",
         "--steps", "2", "--max-prompts", "2", "--num-generations", "2", "--batch-size", "2",
         "--max-completion-length", "4", "--eval-size", "2", "--eval-every", "1", "--no-drift"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, weights_cache) -> Path:
    return tiny_models.build("llama", tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def test_a_skill_job_warms_up_then_reinforces_one_adapter(tiny, data_dir):
    code, lines, err = finish(train(data_dir, "skill", "--model", str(tiny), "--name", "taught", *SMALL))
    assert code == 0, err[-3000:]
    phases = [line["phase"] for line in lines if line["phase"] not in ("train", "eval")]
    assert phases == ["load", "prepare", "eval_before", "stage", "eval_after", "save", "done"]
    stage = next(line for line in lines if line["phase"] == "stage")
    warm = stage["step"]  # 3 warm-up steps of 2 worked examples
    assert warm == 3 and stage["stage"] == "grpo" and stage["total"] == warm + 2
    trained = [line for line in lines if line["phase"] == "train" and line["loss"] is not None]
    assert [(t["step"], t["stage"]) for t in trained] == \
        [(1, "warmup"), (2, "warmup"), (3, "warmup"), (4, "grpo"), (5, "grpo")]
    assert all(t["total"] == warm + 2 for t in trained)
    assert all(t["reward"] is None for t in trained[:warm]) and all(t["reward"] is not None for t in trained[warm:])
    evals = [line for line in lines if line["phase"] == "eval"]
    assert [e["step"] for e in evals] == [0, warm, warm + 1, warm + 2]  # base, warm, every step, after
    assert all(e["n"] == 2 and 0 <= e["ended"] <= 2 and e["kl"] is not None for e in evals)

    info = adapters.resolve("taught", data_dir)
    assert info.kind == "skill" and info.gguf_path.is_file()
    assert [p.name for p in (data_dir / "adapters").iterdir()] == ["taught"]
    assert not (info.path / "ref").exists()  # only the trained LoRA, not a copy of TRL's
    metrics, data = info.meta["metrics"], info.meta["data"]
    assert metrics["before"]["reward"] == evals[0]["reward"]
    assert metrics["warmup"]["reward"] == evals[1]["reward"]
    assert metrics["after"]["reward"] == evals[-1]["reward"]
    assert metrics["train"]["warmup"]["steps"] == warm and metrics["train"]["grpo"]["steps"] == 2
    assert data["warmup"]["source"] == "task:arith" and data["warmup"]["examples"] == 6
    assert info.meta["config"]["warmup_steps"] == 3 and info.meta["config"]["beta"] == 0


@pytest.mark.parametrize("stage", ["warmup", "grpo"])
def test_cancel_in_either_phase_leaves_nothing(tiny, data_dir, stage):
    process = train(data_dir, "skill", "--model", str(tiny), "--name", "gone", *SMALL)
    cancel_in_stage(process, stage, data_dir)


def test_worked_examples_keep_clear_of_the_held_out_prompts():
    task = tasks.TASKS["reverse"]
    held = task.examples(16, __import__("random").Random(0))
    cfg = skill.Config(task="reverse", warmup_examples=500)
    examples = skill.worked_examples(cfg, task, held)
    assert len(examples) == len(tasks.lines("sentences.txt")) - 16  # every other sentence
    assert not {worked.key(e) for e in examples} & {worked.key(e) for e in held}
    for e in examples:
        sentence = e["prompt"][0]["content"].split("\n", 1)[1]
        assert e["completion"] == [{"role": "assistant", "content": sentence[::-1]}]
    assert all(tasks.TASKS["length"].worked(tasks.TASKS["length"].examples(70, __import__("random").Random(0))))


BAD_FILES = {
    "not json": ("{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n", ":2: not JSON"),
    "no completion": ("{\"prompt\": \"a\"}\n", ":1: 'completion' must be a non-empty string"),
    "empty prompt": ("{\"prompt\": \" \", \"completion\": \"b\"}\n", ":1: 'prompt' must be"),
    "a list": ("[1, 2]\n", ":1: a line must be a JSON object"),
    "keys differ": ("{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                    "{\"prompt\": \"a\", \"completion\": \"b\", \"target\": \"c\"}\n", ":2: every line needs the same keys"),
    "empty": ("\n\n", "no worked examples in it"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_worked_examples_file_is_one_line(case, tmp_path):
    text, message = BAD_FILES[case]
    path = tmp_path / "examples.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JobError) as caught:
        worked.read(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_refuses_bad_worked_examples_before_loading_anything(tmp_path, capsys):
    from diptych.cli import main

    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00binary")
    home = tmp_path / "home"
    for path, message in ((tmp_path / "bin.jsonl", "not a UTF-8 text file"), (tmp_path, "not a regular file"),
                          (tmp_path / "none.jsonl", "no such worked-examples file")):
        try:  # argparse refuses it (SystemExit), before a job starts
            code = main(["--data-dir", str(home), "train", "skill", "--name", "x", "--examples", str(path)])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (home / "adapters").exists() or not any((home / "adapters").iterdir())


def test_the_dry_run_scores_the_bases_answers_and_the_worked_ones(data_dir, tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {a} + 1? Reply with the number only.",
                                        "completion": str(a + 1), "target": str(a + 1)}) + "\n"
                            for a in range(3)), encoding="utf-8")
    out = io.StringIO()
    cfg = skill.Config(task="arith", examples=str(path), num_generations=2, max_completion_length=4,
                       data_dir=str(data_dir), progress="jsonl")
    assert skill.dry_run(cfg, out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    samples = [line for line in lines if line["phase"] == "sample"]
    assert len(samples) == 3 * 2 + 3  # three prompts, two answers each; three worked answers
    assert [s["reward"] for s in samples[-3:]] == [1.0, 1.0, 1.0]  # arith pays the right numbers
    assert lines[-1]["phase"] == "done" and lines[-1]["worked"] == {"n": 3, "reward": 1.0}
