"""Answers that did not end their turn are trained without the end-of-turn tokens.

An answer cut off by the token limit (finish reason ``length``) or stopped by the user
(``cancelled``) never ended its turn: training on it as rendered, ``<eos>`` included,
would teach the model to stop where it was cut. TRL renders every completion through the
chat template, which always closes the turn, so each job's trainer is wrapped
(:func:`keeping_unfinished`) to cut the template's end-of-turn tokens off the tokenized
completions of such answers, in every kind and role: chosen, rejected, desirable,
undesirable, SFT target.
"""

from __future__ import annotations

UNFINISHED = ("length", "cancelled")  # finish reasons of answers that did not end their turn


def unfinished(meta) -> bool:
    """Whether a response's ``*_meta`` (or None: a written or imported answer) says it was cut off."""
    return isinstance(meta, dict) and meta.get("finish_reason") in UNFINISHED


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token ids the chat template writes after an answer's text (Gemma: ``<eos>\\n``)."""
    marker = "Answer."
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Question?"}, {"role": "assistant", "content": marker}],
        tokenize=False)
    suffix = text[text.rindex(marker) + len(marker):]
    return tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []


def cut(ids: list[int], suffix: list[int]) -> list[int]:
    """``ids`` without a trailing ``suffix``."""
    n = len(suffix)
    return list(ids[:-n]) if n and len(ids) > n and list(ids[-n:]) == suffix else list(ids)


def as_scored(tokenizer, messages: list[dict], ended: bool) -> list[int]:
    """Token ids of a conversation whose last message is an answer, as a reward model is
    trained on it: without the end-of-turn tokens where the answer did not end its turn."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return ids if ended else cut(ids, end_of_turn_ids(tokenizer))


def ended_by_itself(tokenizer, completion_ids: list[int]) -> bool:
    """Whether sampled answer tokens end with a stop token (TRL's and the llama.cpp
    rollouts' answers keep the token they stopped at; one cut at the limit ends on text).
    Any special token counts: which ones stop depends on the template (``<eos>``,
    ``<end_of_turn>``, ``<|im_end|>``, ...)."""
    if not completion_ids:
        return False
    last = completion_ids[-1]
    added = tokenizer.added_tokens_decoder.get(last)
    return last in tokenizer.all_special_ids or bool(added is not None and added.special)


def cut_unfinished(dataset, tokenizer, columns: dict[str, tuple[str, ...]]):
    """For each ``flag -> id columns`` of ``columns``: where the row's flag is true, the
    end-of-turn tokens cut off each of those columns (the first holds the token ids; the
    others, such as labels or a loss mask, are cut by as many where the row has them)."""
    suffix = end_of_turn_ids(tokenizer)
    present = {flag: cols for flag, cols in columns.items() if flag in dataset.column_names}
    if not suffix or not present:
        return dataset

    def strip(row):
        out = {}
        for flag, (ids_column, *others) in present.items():
            if row[flag]:
                ids = cut(row[ids_column], suffix)
                n = len(row[ids_column]) - len(ids)
                out[ids_column] = ids
                for other in others:
                    if other in row:
                        out[other] = list(row[other][: len(row[other]) - n])
        return out

    return dataset.map(strip)


def keeping_unfinished(trainer_class, columns: dict[str, tuple[str, ...]]):
    """A subclass of a TRL trainer whose prepared datasets have unfinished answers cut
    (see :func:`cut_unfinished`)."""

    class Trainer(trainer_class):
        def _prepare_dataset(self, dataset, processing_class, *args, **kwargs):
            dataset = super()._prepare_dataset(dataset, processing_class, *args, **kwargs)
            return cut_unfinished(dataset, processing_class, columns)

    Trainer.__name__ = Trainer.__qualname__ = trainer_class.__name__
    return Trainer
