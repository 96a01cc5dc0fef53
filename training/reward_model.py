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

    max_length = job.cfg.max_length

    class Trainer(turns.keeping_unfinished(RewardTrainer, UNFINISHED_COLUMNS)):
        # TRL's RewardTrainer drops every pair longer than max_length, where the other kinds
        # cut it: answers that ran to the token limit (all of the bundled base's) would
        # leave no pair at all. Cut each side to max_length instead, after the end-of-turn
        # tokens of unfinished answers are off.
        def _prepare_dataset(self, dataset, *rest, **kwargs):
            dataset = super()._prepare_dataset(dataset, *rest, **kwargs)
            if not max_length:
                return dataset
            return dataset.map(lambda row: {k: row[k][:max_length] for k in ("chosen_ids", "rejected_ids")})

    return Trainer(
        model=model,
        args=job.training_args(RewardConfig, max_length=None, **args),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=job.lora("SEQ_CLS"),
        callbacks=job.callbacks,
    )
