"""The log-ratios ``scoring.compare`` reads from llama.cpp are the ones PEFT computes.

A random PEFT LoRA (the export test's fixture) is exported to a GGUF LoRA; the same answer
is scored by llama.cpp (Q4_K_M base, with and without the GGUF LoRA) and by PyTorch
(the dequantized fp32 base, with the adapter enabled and disabled).

Tolerance. The two bases are not the same computation: llama.cpp multiplies the Q4_K_M /
Q5_0 / Q8_0 blocks with 8-bit-quantized activations, PyTorch the fp32 dequantization of
those blocks with fp32 activations. On this answer the two differ by themselves (no
adapter) by 0.06 nats a token on average and up to 0.2-0.3 on one token; a log-ratio is a
difference of two such runs, so its per-token error is of the same size (measured: mean
0.1, largest 0.35-0.6 nats, for ratios that average 0.2-0.4 nats). Per token, then, the
numbers agree only roughly; over the answer they agree closely. The test asks:
correlation > 0.85, mean |ratio| within 25% (measured 0.85 to 1.0: 0.85 where llama.cpp
runs without repacked weight buffers, as on CPUs with AMX), mean of the ratios (the
summary line) within 0.1 nats, mean per-token error < 0.15 and largest < 0.75 nats. A wrong adapter
orientation, a wrong scale (alpha / r) or tokens aligned with the wrong positions breaks
the correlation and the sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diptych.models import scoring
from diptych.models.engine import Engine

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]
ANSWER = "The sea is wide and deep, and its waves never stop moving."


@pytest.fixture(scope="module")
def exported(random_lora, bundled_model):
    from diptych.training.export_gguf import export

    _, _, folder = random_lora
    return export(folder, folder / "adapter.gguf", bundled_model)


def peft_log_ratios(peft_model, prompt_ids: list[int], answer_ids: list[int]) -> np.ndarray:
    ids = torch.tensor([prompt_ids + answer_ids])
    rows = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
    targets = torch.tensor(answer_ids)
    with torch.no_grad():
        tuned = torch.log_softmax(peft_model(input_ids=ids).logits[0].double(), -1)
        with peft_model.disable_adapter():
            base = torch.log_softmax(peft_model(input_ids=ids).logits[0].double(), -1)
    return (tuned[rows, targets] - base[rows, targets]).numpy()


def test_log_ratios_match_peft(random_lora, exported, bundled_model):  # noqa: F811
    peft_model, _, _ = random_lora
    base = Engine(bundled_model, n_ctx=256, n_threads=1)
    tuned = Engine(bundled_model, n_ctx=256, n_threads=1, adapter=exported)
    try:
        result = scoring.compare(base, tuned, PROMPT, ANSWER)
        prompt_ids = base.tokenize(base.render(PROMPT))
    finally:
        base.close()
        tuned.close()
    cpp = np.array([t.log_ratio for t in result.tokens])
    pt = peft_log_ratios(peft_model, prompt_ids, [t.id for t in result.tokens])
    print(f"\nmean |ratio| llama.cpp {np.abs(cpp).mean():.4f}, PEFT {np.abs(pt).mean():.4f}, "
          f"per-token error mean {np.abs(cpp - pt).mean():.4f} max {np.abs(cpp - pt).max():.4f}, "
          f"correlation {np.corrcoef(cpp, pt)[0, 1]:.4f}")
    error = np.abs(cpp - pt)
    assert np.abs(pt).mean() > 0.05  # the LoRA visibly moves the answer
    assert np.corrcoef(cpp, pt)[0, 1] > 0.85
    assert 0.75 < np.abs(cpp).mean() / np.abs(pt).mean() < 1.25
    assert abs(result.summary.mean_log_ratio - pt.mean()) < 0.1
    assert error.mean() < 0.15 and error.max() < 0.75


def peft_kl(peft_model, prompt_ids: list[int], answer_ids: list[int]) -> np.ndarray:
    ids = torch.tensor([prompt_ids + answer_ids])
    rows = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
    with torch.no_grad():
        tuned = torch.log_softmax(peft_model(input_ids=ids).logits[0, rows].double(), -1)
        with peft_model.disable_adapter():
            base = torch.log_softmax(peft_model(input_ids=ids).logits[0, rows].double(), -1)
    return (tuned.exp() * (tuned - base)).sum(-1).numpy()


def test_exact_kl_matches_peft(random_lora, exported, bundled_model):
    """The full-vocabulary KL per position (what the drift measurement averages).

    A KL averages the log-ratio over the whole distribution, so the quantization noise
    that makes single-token ratios differ mostly cancels: measured, correlation 0.99 and
    the means within a few percent. Asked: correlation > 0.9, means within 15%."""
    peft_model, _, _ = random_lora
    base = Engine(bundled_model, n_ctx=256, n_threads=1)
    tuned = Engine(bundled_model, n_ctx=256, n_threads=1, adapter=exported)
    try:
        answer = tuned.tokenize(ANSWER)
        cpp = scoring.kl_per_token(base, tuned, PROMPT, answer)
        prompt_ids = base.tokenize(base.render(PROMPT))
    finally:
        base.close()
        tuned.close()
    pt = peft_kl(peft_model, prompt_ids, answer)
    print(f"\nKL per token llama.cpp mean {cpp.mean():.4f}, PEFT {pt.mean():.4f}, "
          f"correlation {np.corrcoef(cpp, pt)[0, 1]:.4f}, largest error {np.abs(cpp - pt).max():.4f}")
    assert (cpp >= 0).all() and pt.mean() > 0.01
    assert np.corrcoef(cpp, pt)[0, 1] > 0.9
    assert 0.85 < cpp.mean() / pt.mean() < 1.15
