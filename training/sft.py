"""SFT on the answers you wrote: the cheapest way to teach a base model to answer.

Supervised fine-tuning makes the model imitate examples: here each answer the user wrote
("Write a better answer…"), after the conversation it answers, with the loss on the answer
only (TRL's SFTTrainer on prompt-completion data). ``--chosen`` adds the winners of
left/right votes. A base model that never ends its turn learns from a few written answers
to answer and stop; the result is a LoRA like any other, and a starting point for the
other kinds (``diptych train dpo --from NAME``).

A fifth of the answers (at least one) is held out: before and after training, their mean
log-probability per token and the KL from the base on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import kinds, turns, unpaired
from .errors import JobError
from .job import Job, JobConfig, sha256_of, split_eval


@dataclass
class Config(JobConfig):
    data: str | None = None  # JSON lines (unpaired, pairs, or prompt + completion); None: the store
    chosen: bool = False  # also the chosen answers of left/right votes
    epochs: float = 3.0
    bf16: bool = True


def _from_file(path: Path, chosen: bool) -> list[dict]:
    """Written (or, with ``chosen``, all desirable) answers of an unpaired file, plain
    prompt-completion lines, or the chosen answers of a pair file."""
    from .kto import _first_record

    if isinstance(_first_record(path), dict) and "completion" in _first_record(path):
        return [line for line in unpaired.read_jsonl(path, label_required=False)
                if line.get("label", True) and (chosen or line.get("side", "written") == "written")]
    from .preferences import read_jsonl

    return [{**pair, "completion": pair["chosen"], "completion_meta": pair.get("chosen_meta")}
            for pair in read_jsonl(path)
            if "chosen" in pair and (chosen or pair.get("choice", "better") == "better")]


def load_examples(cfg: Config) -> tuple[list[dict], dict]:
    """(prompt-completion examples with ``truncated``, a description for meta.json)."""
    from .parent import newer, votes_since

    since = votes_since(cfg)
    if cfg.data:
        path = Path(cfg.data).expanduser()
        if not path.is_file():
            raise JobError(f"{path}: no such data file")
        lines, source = _from_file(path, cfg.chosen), str(path.resolve())
    else:
        from .store import Store

        with Store.open(cfg.data_dir) as store:
            lines = [line for line in newer(unpaired.records(store), since)
                     if line["side"] == "written"
                     or (cfg.chosen and line["label"] and line["choice"] in ("left", "right"))]
            left_out = store.left_out()
        source = ("store" if since is None else f"store, votes since {since}") + left_out
    examples, seen = [], set()
    for line in lines:
        example = {"prompt": line["prompt"], "completion": line["completion"],
                   "truncated": turns.unfinished(line.get("completion_meta"))}
        key = json.dumps(example, sort_keys=True)  # a written answer exported as two pairs counts once
        if key not in seen:
            seen.add(key)
            examples.append(example)
    if not examples:
        what = "written or chosen answers" if cfg.chosen else "written answers"
        raise JobError(f"no {what} in {source}: write a better answer in the app "
                       "(or pass --chosen to learn from the answers you chose too)")
    return examples, {"source": source, "examples": len(examples), "chosen": cfg.chosen,
                      "sha256": sha256_of(examples)}


def evaluate_answers(model, tokenizer, examples: list[dict]) -> dict:
    """Held-out answers: mean log-prob per token (higher: the model writes them more
    readily) and the mean per-token KL from the base."""
    from . import evaluate

    logps, kls = [], []
    with evaluate._eval_mode(model):
        for e in examples:
            logp, kl = evaluate._completion(model, *evaluate._sequence(tokenizer, e["prompt"], e["completion"]))
            logps.append(logp)
            kls.append(kl)
    return {"answer_logp": evaluate._mean(logps), "kl": evaluate._mean(kls), "n": len(examples)}


def train(job: Job) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from . import evaluate
    from .base_weights import load_base
    from .dpo import kl_every

    cfg: Config = job.cfg
    examples, data = load_examples(cfg)
    train_examples, eval_examples, held_out = split_eval(examples, cfg.eval_size, cfg.seed)

    model, tokenizer = load_base(job.base)
    trainer = turns.keeping_unfinished(SFTTrainer, {"truncated": ("input_ids", "labels", "completion_mask")})(
        model=model,
        args=job.training_args(SFTConfig, cpu_bf16=cfg.bf16, max_length=cfg.max_length,
                               completion_only_loss=True),
        train_dataset=Dataset.from_list(train_examples),
        processing_class=tokenizer,
        peft_config=job.lora("CAUSAL_LM"),
        callbacks=job.callbacks,
    )
    policy = trainer.accelerator.unwrap_model(trainer.model)
    job.track_kl(trainer, lambda: evaluate.answer_kl(policy, tokenizer, eval_examples[:1]), every=kl_every(trainer))
    metrics = job.fit(trainer, lambda: evaluate_answers(policy, tokenizer, eval_examples))
    data.update(train=len(train_examples), eval=len(eval_examples), held_out=held_out)
    return {"data": data, "metrics": metrics}


KIND = kinds.Kind(
    name="sft", title="SFT: imitate the answers you wrote (a LoRA for the tuned pane)",
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
