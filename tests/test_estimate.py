"""The Train tab's estimate of a job's time, from the token counts of the votes."""

from __future__ import annotations

import json

from helpers import record_sample_vote

from diptych.training import estimate
from diptych.training.store import Store


def test_the_estimate_grows_with_the_tokens_up_to_the_length_limit():
    short = estimate.job_seconds("pairs", 13, 40, max_length=128)
    long = estimate.job_seconds("pairs", 13, 256, max_length=128)
    longer = estimate.job_seconds("pairs", 13, 2000, max_length=128)
    assert short < long == longer  # the trainer cuts every sequence at max_length
    assert estimate.job_seconds("pairs", 26, 256, max_length=128) > long
    assert estimate.job_seconds("pairs", 13, 256, max_length=128, drift=False) == long - estimate.DRIFT_S
    # --steps instead of epochs: as many sequences as the steps' batches hold
    assert estimate.job_seconds("answers", 10, 100, max_length=256, steps=30, batch_size=2) == \
        estimate.job_seconds("answers", 10, 100, max_length=256, epochs=6)


def test_a_default_dpo_round_on_the_apps_answers_takes_minutes():
    # 13 votes on 256-token answers, DPO's 5 epochs, cut at 128 (bench/round_bench.py: 4.9 min)
    assert estimate.describe(estimate.job_seconds("pairs", 13, 266, max_length=128, epochs=5)) == \
        "about 5 min on two CPU cores"


def test_no_estimate_where_the_cost_is_not_the_data():
    assert estimate.job_seconds("prompts", 64, 30, max_length=128) is None  # GRPO: its sampling
    assert estimate.job_seconds("pairs", 0, 30, max_length=128) is None
    assert estimate.describe(None) == ""
    assert estimate.describe(40) == "about a minute on two CPU cores"
    assert estimate.describe(4 * 60 + 10) == "about 5 min on two CPU cores"


def test_the_store_says_how_long_the_voted_answers_are(tmp_path):
    with Store(tmp_path / "diptych.sqlite") as store:
        assert store.mean_answer_tokens() == 0.0
        record_sample_vote(store, created_at="2026-11-30T10:00:00+00:00")
        prompt = json.dumps([{"role": "user", "content": "What is 2+2?"}])
        assert store.mean_answer_tokens() == 5 + len(prompt) // 4  # n_tokens, and the prompt
        vote = record_sample_vote(store, prompt="x" * 400, created_at="2026-11-30T11:00:00+00:00")
        assert store.mean_answer_tokens("2026-11-30T10:30:00+00:00") > 100  # the long prompt's vote only
        store.delete_vote(vote)
        assert store.mean_answer_tokens() == 5 + len(prompt) // 4
