"""A reward model on the user's votes: the base with a scoring head and a LoRA.

Where DPO turns pairs straight into a policy, this learns a function that scores any
(prompt, answer) so that chosen answers score above rejected ones (Bradley-Terry loss,
TRL's RewardTrainer). GRPO can then use it as its reward (``diptych train grpo
--reward-model NAME``) on prompts it never saw voted on.

The model is the same dequantized base loaded as a sequence classifier with one output;
the LoRA adapts the body and the new head (``score``) is trained in full and saved with
the adapter. A fifth of the pairs (at least one) is held out to measure pair accuracy
before (an untrained head: a coin toss) and after. No GGUF is written: llama.cpp runs
language models, not scorers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from diptych.models import adapters, catalog

from . import kinds, turns
from .errors import JobError
from .examples import UNFINISHED_COLUMNS, load_pairs
from .job import Job, JobConfig, split_eval


@dataclass
class Config(JobConfig):
    data: str | None = None  # JSON lines of preference pairs; None: the votes in the store
    lr: float = 1e-4


def train(job: Job) -> dict:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from . import evaluate
    from .base_weights import load_base

    cfg: Config = job.cfg
    pairs, data = load_pairs(cfg)
    train_pairs, eval_pairs, held_out = split_eval(pairs, cfg.eval_size, cfg.seed)

    model, tokenizer = load_base(job.base, reward_head=True)
    trainer = turns.keeping_unfinished(RewardTrainer, UNFINISHED_COLUMNS)(
        model=model,
        args=job.training_args(RewardConfig, max_length=cfg.max_length),
        train_dataset=Dataset.from_list(train_pairs),
        processing_class=tokenizer,
        peft_config=job.lora("SEQ_CLS"),  # PEFT trains and saves the new `score` head in full
        callbacks=job.callbacks,
    )
    scorer = trainer.accelerator.unwrap_model(trainer.model)
    metrics = job.fit(trainer, lambda: evaluate.reward_model(scorer, tokenizer, eval_pairs))

    data.update(train=len(train_pairs), eval=len(eval_pairs), held_out=held_out)
    return {"data": data, "metrics": metrics}


def load(name_or_path: str, base_gguf, data_dir=None, device=None):
    """(model, tokenizer) of a trained reward adapter on ``base_gguf``, merged, for scoring."""
    from peft import PeftModel

    from .base_weights import load_base

    info = adapters.resolve(name_or_path, data_dir)
    if info.kind != "reward":
        raise JobError(f"{info.name} is a {info.kind} adapter, not a reward model "
                       "(make one with 'diptych train reward')")
    if info.base_hash and info.base_hash != catalog.file_hash(base_gguf):
        raise JobError(f"reward model {info.name} was trained on another base model "
                       f"({info.meta.get('base', {}).get('name', 'unknown')})")
    model, tokenizer = load_base(base_gguf, reward_head=True)
    model = PeftModel.from_pretrained(model, info.path).merge_and_unload().eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def as_reward_function(model, tokenizer, rank: bool = False):
    """A reward model as a TRL reward function: the score of prompt + completion, or with
    ``rank`` each answer's rank among the answers to the same prompt (0 the lowest, 1 the
    highest): only the order the model puts a group in counts, not how far apart its scores
    are, so one answer it scores wildly does not drown the others' differences."""
    import torch

    def reward_model(prompts, completions, **_) -> list[float]:
        texts = [tokenizer.apply_chat_template(p + c, tokenize=False)
                 for p, c in zip(prompts, completions)]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            scores = model(**batch.to(model.device)).logits[:, 0].float().tolist()
        return ranks_within_groups(prompts, scores) if rank else scores

    return reward_model


def ranks_within_groups(prompts: list, scores: list[float]) -> list[float]:
    """Each score's rank among the scores of the same prompt, scaled to 0..1 (ties share
    their mean rank; a prompt answered once gets 0.5)."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(json.dumps(prompt, sort_keys=True), []).append(i)
    out = [0.5] * len(scores)
    for members in groups.values():
        if len(members) < 2:
            continue
        for i in members:
            below = sum(scores[j] < scores[i] for j in members)
            ties = sum(scores[j] == scores[i] for j in members) - 1
            out[i] = (below + ties / 2) / (len(members) - 1)
    return out


KIND = kinds.Kind(
    name="reward", short="Reward model", title="Reward model: learn to score answers like you do (for GRPO)",
    help="a reward model on preference pairs, for grpo --reward-model",
    config=Config, train=train, data="pairs", writes_gguf=False,
    options=(kinds.DATA_FILE, kinds.MAX_LENGTH, kinds.NEW_VOTES),
)
