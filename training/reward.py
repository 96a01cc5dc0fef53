"""A reward model on the user's votes: the base with a scoring head and a LoRA.

Where DPO turns pairs straight into a policy, this learns a function that scores any
(prompt, answer) so that chosen answers score above rejected ones (Bradley-Terry loss,
TRL's RewardTrainer). GRPO can then use it as its reward (``diptych train grpo
--reward-model NAME``; ``reward_functions.reward_model``) on prompts it never saw voted on.

The model and its trainer are ``reward_model.py``'s (shared with ``rlhf.py``). A fifth
of the pairs (at least one) is held out to measure pair accuracy before (an untrained
head: a coin toss) and after. No GGUF is written: llama.cpp runs language models, not
scorers.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import kinds, reward_model
from .examples import load_pairs
from .job import Job, JobConfig, split_eval


@dataclass
class Config(JobConfig):
    data: str | None = None  # JSON lines of preference pairs; None: the votes in the store
    lr: float = 1e-4


def train(job: Job) -> dict:
    from . import evaluate

    cfg: Config = job.cfg
    pairs, data = load_pairs(cfg)
    train_pairs, eval_pairs, held_out = split_eval(pairs, cfg.eval_size, cfg.seed)

    model, tokenizer = job.load_base(reward_head=True)
    trainer = reward_model.trainer(job, model, tokenizer, train_pairs)
    scorer = trainer.accelerator.unwrap_model(trainer.model)
    metrics = job.fit(trainer, lambda: evaluate.reward_model(scorer, tokenizer, eval_pairs))

    data.update(train=len(train_pairs), eval=len(eval_pairs), held_out=held_out)
    return {"data": data, "metrics": metrics}


KIND = kinds.Kind(
    name="reward", short="Reward model", title="Reward model: learn to score answers like you do (for GRPO)",
    help="a reward model on preference pairs, for grpo --reward-model",
    config=Config, train=train, data="pairs", writes_gguf=False,
    options=(kinds.DATA_FILE, kinds.MAX_LENGTH, kinds.NEW_VOTES),
)
