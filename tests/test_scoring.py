"""Per-token scoring and base/tuned comparison, on the real bundled model through llama.cpp."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import write_random_lora

from diptych.models import scoring
from diptych.models.engine import Engine, EngineError, SamplingParams

QUESTION = [{"role": "user", "content": "Name a colour of the sky."}]
SHORT = SamplingParams(max_tokens=16, seed=11)
MODEL_SAMPLING = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                                repeat_penalty=1.0, max_tokens=12, seed=5)


@pytest.fixture(scope="module")
def base(bundled_model):
    e = Engine(bundled_model, n_ctx=512, n_threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def twin(bundled_model):
    """A second engine on the same base; tests set and remove its adapter."""
    e = Engine(bundled_model, n_ctx=512, n_threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def lora(bundled_model, tmp_path_factory):
    return write_random_lora(tmp_path_factory.mktemp("lora") / "random.gguf", bundled_model)


@pytest.fixture(scope="module")
def answer(base):
    done = base.generate(QUESTION, SHORT, top_logprobs=3)
    assert done.n_tokens >= 4, done.text
    return done


def test_same_weights_give_exactly_zero_ratios(base, twin, answer):
    twin.set_adapter(None)
    result = scoring.compare(base, twin, QUESTION, scoring.answer_ids(answer))
    assert result.summary.n_tokens == answer.n_tokens
    assert all(t.log_ratio == 0.0 and t.logp_base == t.logp_tuned for t in result.tokens)
    assert result.summary.sum_log_ratio == 0.0


def test_scores_match_the_streamed_logprobs(base, answer):
    streamed = np.array([t.logprob for t in answer.tokens if t.id >= 0])
    ids = scoring.answer_ids(answer)
    # Evaluated one token at a time, as generation does: the same numbers.
    alone = scoring.score(base, QUESTION, ids, top_k=3, rows_per_decode=1)
    assert np.abs(np.array([s.logprob for s in alone]) - streamed).max() < 1e-5
    assert [text for text, _ in alone[0].top] == [text for text, _ in answer.tokens[0].top]
    # In one batch, llama.cpp's kernels round differently and the deep layers amplify it
    # (see the scoring module's notes): close, not equal. The first token is predicted by
    # the prompt's last position, which both evaluate in the same batch: equal.
    batched = np.array([s.logprob for s in scoring.score(base, QUESTION, ids)])
    assert batched[0] == pytest.approx(streamed[0], abs=1e-5)
    assert np.abs(batched - streamed).max() < 1.0
    assert np.abs(batched - streamed).mean() < 0.15
    assert all(s.logprob <= 0 and s.top[0][1] >= s.top[-1][1] for s in alone)


def test_generation_after_scoring_is_unchanged(base, answer):
    scoring.score(base, QUESTION, "Blue, mostly.")
    again = base.generate(QUESTION, SHORT, top_logprobs=3)
    assert again.text == answer.text
    assert [t.logprob for t in again.tokens] == [t.logprob for t in answer.tokens]


def test_random_lora_moves_the_ratios(base, twin, lora, answer):
    twin.set_adapter(lora)
    try:
        ids = scoring.answer_ids(answer)
        first = scoring.compare(base, twin, QUESTION, ids, top_k=2)
        again = scoring.compare(base, twin, QUESTION, ids, top_k=2)
    finally:
        twin.set_adapter(None)
    ratios = [t.log_ratio for t in first.tokens]
    assert any(abs(r) > 1e-3 for r in ratios) and all(math.isfinite(r) for r in ratios)
    assert ratios == [t.log_ratio for t in again.tokens]  # deterministic
    s = first.summary
    assert s.sum_log_ratio == pytest.approx(sum(ratios))
    assert abs(s.max_log_ratio) == max(abs(r) for r in ratios)
    assert first.tokens[0].p_tuned == pytest.approx(math.exp(first.tokens[0].logp_tuned))
    assert "random" in first.tuned_label


def test_kl_label_only_for_an_unmodified_sample_of_the_tuned_model(base, twin):
    done = twin.generate(QUESTION, MODEL_SAMPLING)
    ids = scoring.answer_ids(done)
    assert scoring.compare(base, twin, QUESTION, ids, tuned_sampling=MODEL_SAMPLING).summary.kl_estimate
    assert not scoring.compare(base, twin, QUESTION, ids, tuned_sampling=SHORT).summary.kl_estimate
    assert not scoring.compare(base, twin, QUESTION, done.text,
                               tuned_sampling=MODEL_SAMPLING).summary.kl_estimate


def test_text_is_tokenized_alone_without_control_tokens(base):
    text = " Blue.<end_of_turn>\nGreen"
    scored = scoring.score(base, QUESTION, text, top_k=0)
    ids = base.tokenize(text, special=False)
    assert [s.id for s in scored] == ids
    assert "".join(s.text for s in scored) == text
    assert base.tokenize("<end_of_turn>")[0] not in ids  # typed text, not the control token
    assert scoring.score(base, QUESTION, "") == []


def test_too_long_is_a_clear_error(base):
    with pytest.raises(EngineError, match="more than this model's context"):
        scoring.score(base, QUESTION, "word " * 600)


def diptych(*args):
    return subprocess.run([sys.executable, "-m", "diptych", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_scores_with_a_bare_gguf_adapter(lora, data_dir):
    out = diptych("--data-dir", str(data_dir), "score", "--adapter", str(lora),
                  "--prompt", "Name a colour of the sky.", "--response", "Blue, mostly.", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "".join(t["text"] for t in result["tokens"]) == "Blue, mostly."
    assert any(t["log_ratio"] != 0 for t in result["tokens"])
    assert result["summary"]["n_tokens"] == len(result["tokens"])
    assert result["summary"]["kl_estimate"] is False

    missing = diptych("--data-dir", str(data_dir), "score", "--adapter", "nope",
                      "--prompt", "hi", "--response", "hello")
    assert missing.returncode == 2 and "no adapter named 'nope'" in missing.stderr
    unnamed = diptych("score", "--prompt", "hi", "--response", "hello")
    assert unnamed.returncode == 2 and "--adapter is required" in unnamed.stderr
