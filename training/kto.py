"""KTO on every vote: each answer labelled desirable or undesirable, paired or not.

Kahneman-Tversky Optimization needs no pairs: it makes desirable answers likelier and
undesirable ones less likely, each measured against the base (``beta`` sets how far the
adapter may go) and against a running estimate of the KL from the base. So every vote
counts (``unpaired.py``): the winner and loser of a left/right vote, both answers of a
both-bad vote, a written answer; ties give nothing unless ``--ties desirable``. TRL's
KTOTrainer does the work, with a PEFT LoRA whose switched-off self is the reference.

The two kinds of labels are rarely as many: the rarer one's weight is raised so that
``desirable_weight x desirable = undesirable_weight x undesirable`` (the KTO paper's
advice: that ratio in [1, 4/3]); ``--desirable-weight`` / ``--undesirable-weight`` set them
by hand. A fifth of the labelled answers (at least one) is held out: before and after
training, the mean log-probability per token of held-out desirable minus undesirable
answers, and the KL from the base on them.

Data: the votes in the store, or ``--data FILE.jsonl`` in TRL's unpaired format
(``diptych data export --format unpaired``) or its pair format (the chosen answer
desirable, the rejected one not).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import kinds, turns, unpaired
from .examples import load_labels
from .job import Job, JobConfig, several_epochs, split_eval


@dataclass
class Config(JobConfig):
    data: str | None = None  # JSON lines, unpaired or pairs; None: the votes in the store
    ties: str = "skip"  # skip | desirable: what a tie gives
    epochs: float = 3.0
    beta: float = 0.1
    desirable_weight: float | None = None  # None: from the counts
    undesirable_weight: float | None = None
    bf16: bool = True


def weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight): the rarer label weighed up to balance the counts."""
    if not desirable or not undesirable:
        return 1.0, 1.0
    if desirable < undesirable:
        return round(undesirable / desirable, 3), 1.0
    return 1.0, round(desirable / undesirable, 3)


def _with_kl_completions(dataset, batch_size: int):
    """TRL's mismatched completions for the KL estimate, rebuilt from the (cut) completions."""
    if "KL_completion_ids" not in dataset.column_names:
        return dataset

    def rotate(batch):
        batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
        return batch

    return dataset.map(rotate, batched=True, batch_size=batch_size)


def train(job: Job) -> dict:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from . import evaluate

    cfg: Config = job.cfg
    examples, data = load_labels(cfg)
    train_examples, eval_examples, held_out = split_eval(examples, cfg.eval_size, cfg.seed)
    counted = sum(e["label"] for e in train_examples)
    auto = weights(counted, len(train_examples) - counted)
    desirable_weight = cfg.desirable_weight or auto[0]
    undesirable_weight = cfg.undesirable_weight or auto[1]

    class Trainer(turns.keeping_unfinished(KTOTrainer, {"truncated": ("completion_ids",)})):
        def _prepare_dataset(self, dataset, processing_class, args, *rest, **kwargs):
            dataset = super()._prepare_dataset(dataset, processing_class, args, *rest, **kwargs)
            return _with_kl_completions(dataset, args.per_device_train_batch_size)

    model, tokenizer = job.load_base()
    trainer = Trainer(
        model=model,
        args=job.training_args(KTOConfig, cpu_bf16=cfg.bf16, beta=cfg.beta, max_length=cfg.max_length,
                               desirable_weight=desirable_weight,
                               undesirable_weight=undesirable_weight,
                               precompute_ref_log_probs=several_epochs(cfg, len(train_examples))),
        train_dataset=Dataset.from_list(train_examples),
        processing_class=tokenizer,
        peft_config=job.lora("CAUSAL_LM"),
        callbacks=job.callbacks,
    )
    policy = trainer.accelerator.unwrap_model(trainer.model)
    metrics = job.fit(trainer, lambda: evaluate.labels(policy, tokenizer, eval_examples))
    data.update(train=len(train_examples), eval=len(eval_examples), held_out=held_out,
                desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    return {"data": data, "metrics": metrics}


KIND = kinds.Kind(
    name="kto", short="KTO", title="KTO: every vote as a label, desirable or not (ties, both-bad too)",
    help="KTO on every vote as a desirable or undesirable answer: a LoRA for the tuned pane",
    config=Config, train=train, data="labels", writes_gguf=True,
    options=(
        kinds.DATA_FILE, kinds.MAX_LENGTH, kinds.NO_DRIFT, kinds.BETA,
        kinds.Option("ties", "what a tie gives: nothing (skip, the default) or both answers "
                     "desirable", choices=unpaired.TIES, label="Ties"),
        kinds.NEW_VOTES,
        kinds.Option("desirable_weight", "loss weight of desirable answers (default: from the counts)",
                     kinds.positive(float)),
        kinds.Option("undesirable_weight", "loss weight of undesirable answers (default: from the counts)",
                     kinds.positive(float)),
        kinds.FP32,
    ),
)
