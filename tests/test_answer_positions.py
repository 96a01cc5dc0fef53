"""TRL's fused LM head, made to project only the scored positions on a CPU
(training/answer_positions.py), gives the log-probs and gradients of the full logits."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402


def test_the_compact_head_gives_the_full_logits_log_probs_and_gradients(tmp_path, weights_cache):
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from diptych.training import answer_positions
    from diptych.training.base_weights import load_base

    model, _ = load_base(tiny_models.build("llama", tmp_path / "tiny.gguf"))
    add_fused_lm_head(model)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # a LoRA that moves the model
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :7] = -100  # the prompt

    def grads(log_probs):
        model.zero_grad()
        log_probs.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    scored = labels[:, 1:] != -100
    reference = full.gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0] * scored
    expected = grads(reference)

    from trl.trainer import utils

    answer_positions.apply()
    answer_positions.apply()  # twice: still one wrapper
    assert utils._use_triton(torch.device("cpu")) and not utils._use_triton.__wrapped__(torch.device("cpu"))
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    assert out.log_probs.shape == scored.shape
    torch.testing.assert_close(out.log_probs * scored, reference.detach(), atol=1e-4, rtol=1e-4)
    got = grads(out.log_probs * scored)
    assert got.keys() == expected.keys() and got
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-3)
