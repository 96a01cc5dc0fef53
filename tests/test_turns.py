"""An answer cut off by the token limit is never trained as a finished turn: the token ids
each kind's trainer trains on end with the template's end-of-turn tokens for finished
answers only (chosen, rejected, desirable, undesirable, SFT target, reward pairs)."""

from __future__ import annotations

import pytest
from every_vote import CUT_OFF, fill

from diptych.training.examples import UNFINISHED_COLUMNS, load_answers, load_labels, load_pairs
from diptych.training import dpo, kto, sft, turns
from diptych.training.store import Store


@pytest.fixture(scope="module")
def model_and_tokenizer(bundled_model, weights_cache):
    from diptych.training.base_weights import load_base

    return load_base(bundled_model)


@pytest.fixture
def every_vote(data_dir):
    with Store.open(data_dir) as store:
        fill(store)
    return data_dir


def build(trainer_class, config_class, columns, model, tokenizer, rows, **extra):
    from datasets import Dataset
    from peft import LoraConfig

    return turns.keeping_unfinished(trainer_class, columns)(
        model=model, args=config_class(output_dir="/tmp/unused", report_to="none", use_cpu=True,
                                       per_device_train_batch_size=2, max_length=128, **extra),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))


def ends(tokenizer, ids) -> bool:
    suffix = turns.end_of_turn_ids(tokenizer)
    return list(ids[-len(suffix):]) == suffix


def test_the_gemma_end_of_turn_is_eos(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    assert turns.end_of_turn_ids(tokenizer) == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("\n")]
    assert turns.cut([5, 6, 1, 107], [1, 107]) == [5, 6] and turns.cut([5, 6], [1, 107]) == [5, 6]


def test_cut_off_answers_have_no_end_of_turn_in_any_kind(model_and_tokenizer, every_vote):
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    model, tokenizer = model_and_tokenizer
    eos = tokenizer.eos_token_id

    pairs, _ = load_pairs(dpo.Config(data_dir=str(every_vote)))
    trainer = build(DPOTrainer, DPOConfig, UNFINISHED_COLUMNS, model, tokenizer, pairs)
    rows = list(trainer.train_dataset)
    for role, text in (("chosen", CUT_OFF[0]), ("rejected", CUT_OFF[1])):
        cut = [r for r in rows if r[f"{role}_truncated"]]
        assert len(cut) == 1 and tokenizer.decode(cut[0][f"{role}_ids"]).strip() == text
        assert eos not in cut[0][f"{role}_ids"]
        assert all(ends(tokenizer, r[f"{role}_ids"]) for r in rows if not r[f"{role}_truncated"])
    model = trainer.model.unload()  # the base again, for the next trainer

    examples, data = load_labels(kto.Config(data_dir=str(every_vote)))
    assert (data["desirable"], data["undesirable"]) == (6, 6)
    trainer = build(KTOTrainer, KTOConfig, {"truncated": ("completion_ids",)}, model, tokenizer, examples)
    rows = list(trainer.train_dataset)
    cut = [r for r in rows if r["truncated"]]
    assert sorted(r["label"] for r in cut) == [False, True]  # a desirable and an undesirable one
    assert all(eos not in r["completion_ids"] for r in cut)
    assert sorted(tokenizer.decode(r["completion_ids"]).strip() for r in cut) == sorted(CUT_OFF)
    assert all(ends(tokenizer, r["completion_ids"]) for r in rows if not r["truncated"])
    model = trainer.model.unload()

    examples, _ = load_answers(sft.Config(data_dir=str(every_vote), chosen=True))
    # the cut-off answer won its vote: as an SFT target it is still not a finished turn
    assert sum(e["truncated"] for e in examples) == 1
    trainer = build(SFTTrainer, SFTConfig, {"truncated": ("input_ids", "labels", "completion_mask")},
                    model, tokenizer, examples, completion_only_loss=True)
    rows = list(trainer.train_dataset)
    cut = [r for r in rows if r["truncated"]]
    assert len(cut) == 1 and eos not in cut[0]["input_ids"] and len(cut[0]["labels"]) == len(cut[0]["input_ids"])
    assert tokenizer.decode([t for t in cut[0]["labels"] if t != -100]).strip() == CUT_OFF[0]
    assert all(ends(tokenizer, r["input_ids"]) for r in rows if not r["truncated"])
    trainer.model.unload()
