"""A reward model's trainer, for the kinds that train one (``reward.py``, ``rlhf.py``).

The model is the dequantized base loaded as a sequence classifier with one output
(``Job.load_base(reward_head=True)``); TRL's RewardTrainer fits it to preference pairs
with the Bradley-Terry loss, so the chosen answer scores above the rejected one. The
LoRA adapts the body; PEFT trains the new head (``score``) in full and saves it with
the adapter. Answers that were cut off are scored without their end-of-turn tokens, as
every kind trains them (``turns.py``).
"""

from __future__ import annotations

from . import turns
from .examples import UNFINISHED_COLUMNS
from .job import Job


def trainer(job: Job, model, tokenizer, pairs: list[dict], **args):
    """TRL's RewardTrainer on ``pairs`` for ``job``; ``args`` override RewardConfig's settings
    (a job whose reward model is one phase of several has its own steps and learning rate)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    return turns.keeping_unfinished(RewardTrainer, UNFINISHED_COLUMNS)(
        model=model,
        args=job.training_args(RewardConfig, max_length=job.cfg.max_length, **args),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=job.lora("SEQ_CLS"),
        callbacks=job.callbacks,
    )
