"""SFT on written answers, and a round that continues an adapter (--from): real jobs with
a few steps on a tiny random-weight model."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import tiny_models
from every_vote import fill
from helpers import run_job, steps

from diptych.models import adapters
from diptych.training.examples import load_answers
from diptych.training.store import Store

# The 2 written answers: too few to hold one out, so each step sees both as one batch
ONE_BATCH = ["--batch-size", "2", "--max-length", "64", "--lr", "1e-3", "--no-drift"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, weights_cache):
    """A tiny random-weight model: what is tested is what a round continues, not the base."""
    return tiny_models.build("llama", tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
def every_vote(data_dir, weights_cache):
    with Store.open(data_dir) as store:
        fill(store)
    return data_dir


def folder_hash(path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def test_sft_learns_the_written_answers_and_a_round_continues_it(every_vote, tiny):
    parent_lines, parent = run_job(every_vote, "sft", "--name", "v1", "--model", str(tiny), "--steps", "3",
                                   *ONE_BATCH)
    data = parent.meta["data"]
    assert data["examples"] == 2 and not data["chosen"] and not data["held_out"]  # too few to hold out
    assert [s["step"] for s in steps(parent_lines)] == [1, 2, 3]
    assert all(s["kl"] is not None for s in steps(parent_lines))  # the live KL from the base
    before, after = parent.meta["metrics"]["before"], parent.meta["metrics"]["after"]
    assert after["answer_logp"] > before["answer_logp"] + 0.5  # it writes them more readily
    assert parent.meta.get("parent") is None and parent.gguf_path.is_file()
    parent_losses = [s["loss"] for s in steps(parent_lines)]
    assert parent_losses[-1] < parent_losses[0] - 0.3
    before = folder_hash(parent.path)

    # --from: a round that continues v1
    lines, child = run_job(every_vote, "sft", "--name", "v2", "--model", str(tiny), "--from", "v1",
                           "--steps", "1", *ONE_BATCH)
    first = steps(lines)[0]["loss"]
    # it starts where the parent ended (one more step on the same batch), not from scratch
    assert abs(first - parent_losses[-1]) < abs(first - parent_losses[0]) / 2, (parent_losses, first)
    # the reference is still the base: the parent's weights are already a KL away from it
    assert child.meta["metrics"]["before"]["kl"] > 0.01
    assert child.meta["parent"]["name"] == "v1" and folder_hash(parent.path) == before

    listing = subprocess.run([sys.executable, "-m", "diptych", "--data-dir", str(every_vote),
                              "adapters", "list"], capture_output=True, text=True, timeout=60)
    assert "(from v1)" in listing.stdout
    from diptych.training.lineage import lineage

    assert lineage(child, every_vote) == ["v1", "v2"]

    # --new-votes: a round on the votes cast since its parent was made
    from diptych.training import sft
    from diptych.training.errors import JobError

    since = sft.Config(data_dir=str(every_vote), from_adapter="v2", new_votes=True)
    with pytest.raises(JobError, match="no written answers"):
        load_answers(since)
    with Store.open(every_vote) as store:
        conversation = store.new_conversation()
        store.add_user_message(conversation, 0, "What is ice?")
        shown = dict(model="gemma", model_path=None, model_hash=None, adapter=None, adapter_path=None,
                     adapter_scale=None, template_name="gemma", template_source=None, params={},
                     prompt_messages=[{"role": "user", "content": "What is ice?"}], n_tokens=None,
                     ttft_s=None, tokens_per_s=None, finish_reason="stop")
        ids = [store.add_response(conversation, 0, side, "base", "Is it cold?", **shown)
               for side in ("left", "right")]
        store.record_vote(*ids, "better", blind=False, better_text="Ice is frozen water.")
    examples, data = load_answers(since)
    assert [e["completion"][0]["content"] for e in examples] == ["Ice is frozen water."]
    assert data["source"].startswith("store, votes since")

    # What a job refuses before it trains (a job turns a JobError into one line, exit 2:
    # test_jobs.py), checked here without starting one for each.
    from peft import LoraConfig

    from diptych.training import parent as parents

    with pytest.raises(JobError, match="its LoRA has r = 16, this job 8"):
        parents.check_shape(parent, LoraConfig(r=8, lora_alpha=16))
    with pytest.raises(JobError, match="give --from ADAPTER"):
        parents.votes_since(sft.Config(data_dir=str(every_vote), new_votes=True))
    with pytest.raises(JobError, match="no adapter named 'nobody'"):
        parents.resolve("nobody", every_vote, parent.path, True)
    assert sorted(a.name for a in adapters.list_adapters(every_vote)) == ["v1", "v2"]
