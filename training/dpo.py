"""DPO on the user's votes: a LoRA that makes the chosen answers likelier than the rejected ones.

Direct Preference Optimization needs no reward model: each pair (prompt, chosen,
rejected) pushes up the chosen answer's log-probability relative to the rejected one's,
both measured against the base model, and ``beta`` sets how far from the base the
adapter may go (smaller: further). TRL's DPOTrainer does the work; with a PEFT LoRA the
reference model is the same weights with the adapter switched off, so only one copy of
the model is in memory.

The pairs come from the votes in the store, or from a JSON lines file in TRL's
conversational preference format (``diptych data export`` writes one). A fifth of them
(at least one) is held out to measure, before and after training, how often the model
prefers the chosen answer and how far (KL per token) it moved from the base.

Defaults are sized for a few minutes on two CPU cores with about a dozen pairs: LoRA
rank 16 on every linear layer, 5 epochs, batch 4, learning rate 2e-4 (a LoRA learns at
rates ten times a full fine-tune's). On 12 pairs of "answer, don't ask back" votes this
turns the base's questions into one-line answers that mostly end their turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import kinds, turns
from .examples import UNFINISHED_COLUMNS, load_pairs
from .job import Job, JobConfig, kl_every, several_epochs, split_eval

@dataclass
class Config(JobConfig):
    data: str | None = None  # JSON lines of preference pairs; None: the votes in the store
    epochs: float = 5.0
    beta: float = 0.1  # strength of the pull back to the base (smaller: the adapter goes further)
    # An SFT loss on the chosen answers (RPO) beside the DPO loss. DPO alone only ranks the
    # two answers: on 12 pairs it answers directly but ends 1 of 32 held-out answers by
    # itself. This term teaches the adapter to write the chosen kind of answer and then end
    # its turn (31 of 32).
    sft_weight: float = 2.0
    # bf16 autocast on CPUs with bf16 instructions (job.cpu_has_bf16); fp32 elsewhere
    bf16: bool = True


def train(job: Job) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from . import evaluate

    cfg: Config = job.cfg
    pairs, data = load_pairs(cfg)
    train_pairs, eval_pairs, held_out = split_eval(pairs, cfg.eval_size, cfg.seed)

    model, tokenizer = job.load_base()
    started = time.monotonic()
    trainer = turns.keeping_unfinished(DPOTrainer, UNFINISHED_COLUMNS)(
        model=model,
        args=job.training_args(DPOConfig, cpu_bf16=cfg.bf16, beta=cfg.beta, max_length=cfg.max_length,
                               loss_type=["sigmoid", "sft"], loss_weights=[1.0, cfg.sft_weight],
                               precompute_ref_log_probs=several_epochs(cfg, len(train_pairs))),
        train_dataset=Dataset.from_list(train_pairs),
        processing_class=tokenizer,
        peft_config=job.lora("CAUSAL_LM"),
        callbacks=job.callbacks,
    )
    prepared = round(time.monotonic() - started, 1)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    job.track_kl(trainer, lambda: evaluate.answer_kl(policy, tokenizer, eval_pairs[:1], "chosen"),
                 every=kl_every(trainer))
    metrics = job.fit(trainer, lambda: evaluate.preference(policy, tokenizer, eval_pairs))
    metrics["train"]["prepare_seconds"] = prepared  # tokenizing, and the reference log-probs

    data.update(train=len(train_pairs), eval=len(eval_pairs), held_out=held_out)
    return {"data": data, "metrics": metrics}


KIND = kinds.Kind(
    name="dpo", short="DPO", title="DPO: make the answers you chose likelier (a LoRA for the tuned pane)",
    help="DPO on preference pairs: a LoRA for the tuned pane",
    config=Config, train=train, data="pairs", writes_gguf=True,
    options=(kinds.DATA_FILE, kinds.MAX_LENGTH, kinds.NO_DRIFT, kinds.BETA, kinds.NEW_VOTES, kinds.FP32),
)
