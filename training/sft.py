"""SFT on the answers you wrote: the cheapest way to teach a base model to answer.

Supervised fine-tuning makes the model imitate examples: here each answer the user wrote
("Write a better answer…"), after the conversation it answers, with the loss on the answer
only (``supervised.py``: TRL's SFTTrainer on prompt-completion data). ``--chosen`` adds
the winners of left/right votes. A base model that never ends its turn learns from a few
written answers to answer and stop; the result is a LoRA like any other, and a starting
point for the other kinds (``diptych train dpo --from NAME``).

A fifth of the answers (at least one) is held out: before and after training, their mean
log-probability per token and the KL from the base on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import kinds, supervised
from .examples import load_answers
from .job import Job, JobConfig, kl_every, split_eval


@dataclass
class Config(JobConfig):
    data: str | None = None  # JSON lines (unpaired, pairs, or prompt + completion); None: the store
    chosen: bool = False  # also the chosen answers of left/right votes
    epochs: float = 3.0
    bf16: bool = True


def train(job: Job) -> dict:
    from . import evaluate

    cfg: Config = job.cfg
    examples, data = load_answers(cfg)
    train_examples, eval_examples, held_out = split_eval(examples, cfg.eval_size, cfg.seed)

    model, tokenizer = job.load_base()
    trainer = supervised.trainer(job, model, tokenizer, train_examples, cpu_bf16=cfg.bf16)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    job.track_kl(trainer, lambda: evaluate.answer_kl(policy, tokenizer, eval_examples[:1]), every=kl_every(trainer))
    metrics = job.fit(trainer, lambda: evaluate.answers(policy, tokenizer, eval_examples))
    data.update(train=len(train_examples), eval=len(eval_examples), held_out=held_out)
    return {"data": data, "metrics": metrics}


KIND = kinds.Kind(
    name="sft", short="SFT", title="SFT: imitate the answers you wrote (a LoRA for the tuned pane)",
    help="SFT on the answers you wrote (--chosen: and the ones you chose): a LoRA for the tuned pane",
    config=Config, train=train, data="answers", writes_gguf=True,
    options=(
        kinds.DATA_FILE, kinds.MAX_LENGTH, kinds.NO_DRIFT,
        kinds.Option("chosen", "also learn the chosen answers of left/right votes",
                     action="store_true", label="Also chosen answers"),
        kinds.NEW_VOTES,
        kinds.FP32,
    ),
)
