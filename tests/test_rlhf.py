"""RLHF from votes: a reward model, a warm-up on the chosen answers, then GRPO on the reward
model's ranking, as one job and one adapter (training/rlhf.py).

The jobs run on a tiny random-weight llama (tests/tiny_models.py) as the app runs them: a
subprocess with ``--progress jsonl``. Its votes prefer one answer to another in every pair,
which a few reward-model steps at a high learning rate learn to tell apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import cancel_in_stage, finish, record_sample_vote, train

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402

from diptych.models import adapters  # noqa: E402
from diptych.training import rlhf  # noqa: E402
from diptych.training.errors import JobError  # noqa: E402
from diptych.training.store import Store  # noqa: E402

SMALL = ["--reward-steps", "4", "--reward-lr", "0.01", "--warmup-steps", "2", "--warmup-batch-size", "2",
         "--steps", "2", "--num-generations", "2", "--batch-size", "2", "--max-completion-length", "4",
         "--max-length", "48", "--eval-every", "1", "--no-drift"]
VOTES = 10  # two prompts held out: the least an RLHF job takes (rlhf.MIN_PAIRS, MIN_HELD_OUT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, weights_cache) -> Path:
    return tiny_models.build("llama", tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
def votes(data_dir):
    """A data dir with VOTES votes, each on its own prompt, each for the right answer."""
    with Store.open(data_dir) as store:
        for i in range(VOTES):
            record_sample_vote(store, "right", prompt=f"Who wrote this, number {i}?")
    return data_dir


def pair(i: int, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": f"Who wrote this, number {i}?"}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_an_rlhf_job_trains_a_reward_model_warms_up_then_reinforces_one_adapter(tiny, votes):
    code, lines, err = finish(train(votes, "rlhf", "--model", str(tiny), "--name", "liked", *SMALL))
    assert code == 0, err[-3000:]
    phases = [line["phase"] for line in lines if line["phase"] not in ("train", "eval")]
    assert phases == ["load", "prepare", "eval_before", "stage", "stage", "eval_after", "save", "done"]
    warmup, grpo = [line for line in lines if line["phase"] == "stage"]
    assert (warmup["stage"], warmup["step"], warmup["n"]) == ("warmup", 4, 2)
    assert warmup["pair_accuracy"] > 0.5  # reported before GRPO starts
    assert (grpo["stage"], grpo["step"], grpo["total"]) == ("grpo", 6, 8)
    trained = [line for line in lines if line["phase"] == "train" and line["loss"] is not None]
    assert [(t["step"], t["stage"]) for t in trained] == \
        [(1, "reward"), (2, "reward"), (3, "reward"), (4, "reward"), (5, "warmup"), (6, "warmup"),
         (7, "grpo"), (8, "grpo")]
    assert all(t["total"] == 8 for t in trained)
    evals = [line for line in lines if line["phase"] == "eval"]
    assert [e["step"] for e in evals] == [4, 6, 7, 8]  # the base, warmed up, every GRPO step, after
    assert all(e["n"] == 2 and e["kl"] is not None for e in evals)

    info = adapters.resolve("liked", votes)
    assert info.kind == "rlhf" and info.gguf_path.is_file()
    assert [p.name for p in (votes / "adapters").iterdir()] == ["liked"]  # one adapter, no scorer
    metrics, data = info.meta["metrics"], info.meta["data"]
    assert metrics["reward_model"]["after"]["pair_accuracy"] == warmup["pair_accuracy"]
    assert metrics["reward_model"]["after"]["n"] == 2
    assert (metrics["before"]["reward"], metrics["warmup"]["reward"], metrics["after"]["reward"]) == \
        (evals[0]["reward"], evals[1]["reward"], evals[-1]["reward"])
    assert {k: metrics["train"][k]["steps"] for k in ("reward_model", "warmup", "grpo")} == \
        {"reward_model": 4, "warmup": 2, "grpo": 2}
    assert metrics["train"]["steps"] == 8
    assert (data["source"], data["pairs"], data["train"], data["eval_pairs"]) == ("store", VOTES, 8, 2)
    assert data["warmup"]["examples"] == 8 and data["prompts"] == {**data["prompts"], "source": "votes", "train": 8}
    assert info.meta["config"]["reward_steps"] == 4 and info.meta["config"]["warmup_steps"] == 2


@pytest.mark.parametrize("stage", ["reward", "warmup", "grpo"])
def test_cancel_in_any_phase_leaves_nothing(tiny, votes, stage):
    # more GRPO steps than the others: the job must still be running when the signal lands
    process = train(votes, "rlhf", "--model", str(tiny), "--name", "gone", *SMALL, "--steps", "20")
    cancel_in_stage(process, stage, votes)


def test_a_reward_model_no_better_than_chance_stops_the_job_in_one_line(tiny, data_dir, tmp_path):
    # the held-out pairs prefer what every training pair rejects: a reward model that learnt
    # the training pairs orders them all wrong
    pairs = [pair(i, "Shakespeare wrote Hamlet.", "What is the capital of France?") for i in range(VOTES)]
    _, held = rlhf.split(pairs, None, 0)
    held_keys = {json.dumps(p["prompt"]) for p in held}
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p if json.dumps(p["prompt"]) not in held_keys else
                                       {**p, "chosen": p["rejected"], "rejected": p["chosen"]}) + "\n"
                            for p in pairs), encoding="utf-8")
    code, lines, err = finish(train(data_dir, "rlhf", "--model", str(tiny), "--name", "noise",
                                    "--data", str(path), *SMALL))
    assert code == 2 and lines[-1]["phase"] == "error", err[-3000:]
    assert "orders 0 of 2 held-out pairs right (0.00), no better than a coin toss" in lines[-1]["error"]
    assert "\n" not in lines[-1]["error"] and "stage" not in [line["phase"] for line in lines]
    assert not any((data_dir / "adapters").iterdir())


def test_bad_data_or_too_few_pairs_is_one_line(tiny, votes, tmp_path, capsys):
    from diptych.cli import main

    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(pair(i, "Yes.", "No.")) + "\n" for i in range(rlhf.MIN_PAIRS - 1)))
    (tmp_path / "bad.jsonl").write_text(json.dumps(pair(0, "Yes.", "No.")) + "\nnot json\n")
    with Store.open(tmp_path / "empty"):
        pass
    for home, args, message in [
        (votes, ["--data", str(tmp_path / "bad.jsonl")], "line 2: not valid JSON"),
        (votes, ["--data", str(few)], "7 preference pairs on 7 prompts are too few for a reward model"),
        (votes, ["--eval-size", str(VOTES)], "10 preference pairs on 10 prompts are too few"),
        (tmp_path / "empty", [], "no preference pairs in store"),
    ]:
        assert main(["--data-dir", str(home), "--model", str(tiny), "train", "rlhf", "--name", "x", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("diptych: error: "), err
        assert sum(line.startswith("diptych") for line in err) == 1 and "Traceback" not in "\n".join(err)
    assert not any((votes / "adapters").iterdir())


def test_grpo_prompts_leave_the_held_out_prompts_out(tmp_path):
    pairs = [pair(i, "Yes.", "No.") for i in range(VOTES)]
    train_pairs, held = rlhf.split(pairs, None, 0)
    assert len(held) == 2 and not {json.dumps(p["prompt"]) for p in held} & {json.dumps(p["prompt"]) for p in train_pairs}
    # a written answer gives two pairs of one prompt: both on one side of the split
    doubled = pairs + [{**p, "rejected": [{"role": "assistant", "content": "Maybe."}]} for p in pairs]
    train_pairs, held = rlhf.split(doubled, None, 0)
    assert len(held) == 4 and len({json.dumps(p["prompt"]) for p in held}) == 2
    assert len(rlhf.warmup_examples([{**p, "chosen_truncated": False} for p in train_pairs])) == 8
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(p["prompt"][0]["content"] for p in pairs) + "\nA prompt nobody voted on.\n")
    examples, source = rlhf.grpo_prompts(rlhf.Config(prompts_from=str(prompts)), train_pairs, held)
    assert source == str(prompts) and len(examples) == VOTES + 1 - 2  # the held-out two left out
    with pytest.raises(JobError, match="no prompts in votes that are not held out"):
        rlhf.grpo_prompts(rlhf.Config(), [], held)
    with pytest.raises(JobError, match="1 training prompts are fewer than one GRPO step takes \\(2: "):
        rlhf.grpo_prompts(rlhf.Config(), train_pairs[:1], held)


def test_the_dry_run_scores_answers_of_the_base_and_the_chosen_answers(tiny, votes):
    code, lines, err = finish(train(votes, "rlhf", "--model", str(tiny), "--dry-run", *SMALL))
    assert code == 0, err[-3000:]
    samples = [line for line in lines if line["phase"] == "sample"]
    assert len(samples) == 2 * 2 + 2  # two held-out prompts, two answers each; their chosen answers
    assert [s["answer"] for s in samples[-2:]] == ["v1 says 4", "v1 says 4"]
    assert all(set(s["rewards"]) == {"reward_model"} for s in samples)
    done = lines[-1]
    assert done["phase"] == "done" and done["dry_run"] and done["n"] == 2 and done["pair_accuracy"] > 0.5
    # the means it prints are those of the samples (on a random tiny model, whether the
    # chosen answers score above the base's samples is a toss: not asserted)
    scores = [s["rewards"]["reward_model"] for s in samples]
    assert done["base"] == pytest.approx(sum(scores[:4]) / 4) and done["chosen"] == pytest.approx(sum(scores[4:]) / 2)
    assert not (votes / "adapters").exists() or not any((votes / "adapters").iterdir())


def test_a_cut_answer_is_scored_as_the_reward_model_learnt_it_without_its_end_of_turn(
        bundled_model, weights_cache):
    """The reward model trains on cut answers without the template's end-of-turn tokens
    (turns.py); scored whole, a cut answer would look ended by itself, which a taste that
    likes answers that end pays for. The job's held-out check and GRPO's reward score both
    kinds of answer as they were trained."""
    from types import SimpleNamespace

    import torch

    from diptych.training import evaluate, reward_functions, turns
    from diptych.training.base_weights import load_tokenizer

    tokenizer = load_tokenizer(bundled_model)
    stop = tokenizer.get_vocab()["<end_of_turn>"]

    class Length(torch.nn.Module):  # a reward model that scores an input by its length
        device = torch.device("cpu")

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            return SimpleNamespace(logits=mask.sum(1, keepdim=True).float())

    prompt = [{"role": "user", "content": "Name a colour."}]
    answer = [{"role": "assistant", "content": "Blue is a colour"}]
    text_ids = tokenizer("Blue is a colour", add_special_tokens=False)["input_ids"]
    whole = len(turns.as_scored(tokenizer, prompt + answer, ended=True))
    suffix = len(turns.end_of_turn_ids(tokenizer))
    assert suffix and len(turns.as_scored(tokenizer, prompt + answer, ended=False)) == whole - suffix

    score = reward_functions.as_reward_function(Length(), tokenizer)
    cut, ended = score([prompt, prompt], [answer, answer], completion_ids=[text_ids, text_ids + [stop]])
    assert (ended, cut) == (whole, whole - suffix)
    assert score([prompt], [answer]) == [whole]  # no token ids: taken as ended
    pair = {"prompt": prompt, "chosen": answer, "rejected": answer,
            "chosen_truncated": False, "rejected_truncated": True}
    assert evaluate.reward_model(Length(), tokenizer, [pair])["margin"] == suffix
