"""PEFT LoRA -> GGUF LoRA: llama.cpp on the Q4_K_M base + the exported file must move the
next-token distribution the way PEFT moves it on the dequantized base.

Tolerances. The two bases differ by themselves: llama.cpp computes with the Q4_K_M
blocks (and its own kernels), PyTorch with their fp32 dequantization; on this text their
mean per-token KL is about 0.01 nats. So the test compares like with like:

- the exported pair (llama.cpp + GGUF LoRA vs PEFT) may differ by no more than the bases
  do, plus a small margin: KL_lora <= 2 * KL_base + 0.01;
- the LoRA itself must be clearly visible, far beyond that noise: its KL from the base is
  at least 10x KL_lora (with lora_B ~ N(0, 0.02) it is about 0.2 nats, 25x);
- the per-token shift of the actual tokens' log-probs (LoRA minus base) agrees in
  pattern (correlation > 0.8) and in size (mean |shift| within 30%): a wrong
  orientation or scale (alpha/r) of A and B would break one of these.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import llama_logprobs, mean_kl

from diptych.models import adapters

TEXT = [{"role": "user", "content": "Write one sentence about the sea."},
        {"role": "assistant", "content": "The sea is wide and deep, and its waves never stop moving."}]


def test_llama_cpp_runs_the_lora_as_peft_does(random_lora, bundled_model):
    from diptych.training.export_gguf import export

    peft_model, tokenizer, folder = random_lora
    out = export(folder, folder / "adapter.gguf", bundled_model)
    assert out.is_file() and not list(folder.glob(".*.tmp"))
    adapters.check_compatible(out, bundled_model)

    ids = tokenizer.apply_chat_template(TEXT, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        x = torch.tensor([ids])
        pt_lora = torch.log_softmax(peft_model(input_ids=x).logits[0].double(), -1).numpy()
        with peft_model.disable_adapter():
            pt_base = torch.log_softmax(peft_model(input_ids=x).logits[0].double(), -1).numpy()
    cpp_base = llama_logprobs(bundled_model, ids)
    cpp_lora = llama_logprobs(bundled_model, ids, out)

    kl_base = mean_kl(cpp_base, pt_base)  # Q4_K_M vs dequantized fp32: the noise floor
    kl_lora = mean_kl(cpp_lora, pt_lora)  # the exported LoRA vs PEFT
    kl_effect = mean_kl(pt_lora, pt_base)  # what the LoRA does
    print(f"\nKL base {kl_base:.4f}, KL lora {kl_lora:.4f}, LoRA effect {kl_effect:.4f}")
    assert kl_lora <= 2 * kl_base + 0.01
    assert kl_effect >= 10 * kl_lora

    rows, next_ids = np.arange(len(ids) - 1), np.array(ids[1:])
    shift_pt = pt_lora[rows, next_ids] - pt_base[rows, next_ids]
    shift_cpp = cpp_lora[rows, next_ids] - cpp_base[rows, next_ids]
    assert np.corrcoef(shift_pt, shift_cpp)[0, 1] > 0.8
    assert 0.7 < np.abs(shift_cpp).mean() / np.abs(shift_pt).mean() < 1.3


def _peft_dir(tmp_path, tensors: dict, **config):
    from safetensors.torch import save_file

    tmp_path.mkdir(exist_ok=True)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    settings = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, **config}
    (tmp_path / "adapter_config.json").write_text(json.dumps(settings))
    return tmp_path


Q = "base_model.model.model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("case, message", [
    ("no config", "no adapter_config.json"),
    ("reward model", "reward model"),
    ("dora", "DoRA"),
    ("unmappable base", "cannot map a LoRA of a 'gpt2' model to GGUF"),
    ("another base file", "was trained on Other 1B"),
    ("unmapped module", "has no GGUF tensor name"),
    ("not lora", "is not a LoRA tensor"),
    ("wrong shapes", "do not fit the base tensor"),
    ("nan weights", "NaN or infinite values: the training diverged"),
])
def test_unexportable_adapters_get_a_clear_error(bundled_model, tmp_path, case, message):
    from diptych.training.export_gguf import ExportError, export

    good = {f"{Q}.lora_A.weight": torch.zeros(2, 640), f"{Q}.lora_B.weight": torch.zeros(1024, 2)}
    if case == "no config":
        folder = tmp_path
    elif case == "reward model":
        folder = _peft_dir(tmp_path, good, task_type="SEQ_CLS")
    elif case == "dora":
        folder = _peft_dir(tmp_path, good, use_dora=True)
    elif case == "unmappable base":
        (tmp_path / "base").mkdir()
        (tmp_path / "base" / "config.json").write_text('{"model_type": "gpt2"}')
        folder = _peft_dir(tmp_path / "peft", good, base_model_name_or_path=str(tmp_path / "base"))
    elif case == "another base file":  # meta.json: trained on a file with another hash
        folder = _peft_dir(tmp_path, good)
        (folder / "meta.json").write_text(json.dumps({"base": {"name": "Other 1B",
                                                                "sha256": "ab" * 32}}))
    elif case == "unmapped module":
        folder = _peft_dir(tmp_path, {"base_model.model.model.mystery.lora_A.weight": torch.zeros(2, 4)})
    elif case == "not lora":
        folder = _peft_dir(tmp_path, {**good, "base_model.model.score.weight": torch.zeros(1, 640)})
    elif case == "nan weights":
        folder = _peft_dir(tmp_path, {**good, f"{Q}.lora_B.weight": torch.full((1024, 2), float("nan"))})
    else:
        folder = _peft_dir(tmp_path, {f"{Q}.lora_A.weight": torch.zeros(2, 320),
                                      f"{Q}.lora_B.weight": torch.zeros(1024, 2)})
    out = tmp_path / "out.gguf"
    with pytest.raises(ExportError, match=message):
        export(folder, out, bundled_model)
    assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))
