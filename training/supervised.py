"""Supervised training on answers, for the kinds that imitate them: SFT (``sft.py``) and
the warm-ups before GRPO (``skill.py``'s worked examples, ``rlhf.py``'s chosen answers).

TRL's SFTTrainer on prompt-completion rows with the loss on the answer only; an answer
that was cut off (``truncated``) is trained without its end-of-turn tokens (``turns.py``),
so no job teaches the model to stop mid-sentence.
"""

from __future__ import annotations

from . import turns
from .job import Job

UNFINISHED_COLUMNS = {"truncated": ("input_ids", "labels", "completion_mask")}


def trainer(job: Job, model, tokenizer, examples: list[dict], cpu_bf16: bool = True, **args):
    """TRL's SFTTrainer for ``job`` on ``examples`` (``prompt``, ``completion``, ``truncated``):
    a new LoRA on the base ``model``; ``args`` override SFTConfig's settings (a warm-up has
    its own steps, learning rate and batch size)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    return turns.keeping_unfinished(SFTTrainer, UNFINISHED_COLUMNS)(
        model=model,
        args=job.training_args(SFTConfig, cpu_bf16=cpu_bf16, max_length=job.cfg.max_length,
                               completion_only_loss=True, **args),
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=job.lora("CAUSAL_LM"),
        callbacks=job.callbacks,
    )
