"""On a CPU too, TRL's fused LM head projects only the positions it scores.

TRL's trainers (GRPO, DPO, KTO, SFT) get per-token log-probabilities from a fused, chunked
LM head (``trl.trainer.utils.add_fused_lm_head``) that never materialises the whole
``(batch, length, vocabulary)`` logits. On CUDA and XPU it projects only the positions
whose label counts (the answer tokens); on any other device it projects every position,
prompt and padding included, so that the tile shapes stay the same from batch to batch for
accelerators that compile them (Neuron). A CPU compiles nothing, and with a 262,144-word
vocabulary the LM head is most of a step: a GRPO step of short answers to longer prompts
projects several times the positions it scores. :func:`apply` makes the CPU take the
compact path; the per-token results are the same (``tests/test_answer_positions.py``).

TRL decides this in one module-level predicate, imported by name into
``trl.trainer.utils``; that binding is the one replaced here, so TRL's own kernels keep
their device choice.
"""

from __future__ import annotations


def apply() -> None:
    """Score only the counted positions on a CPU as well (idempotent)."""
    from trl.trainer import utils

    original = utils._use_triton
    if getattr(original, "diptych_compact", False):
        return

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    compact.diptych_compact = True
    compact.__wrapped__ = original
    utils._use_triton = compact
