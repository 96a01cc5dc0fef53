"""Before/after measurements every job stores in its meta.json.

- ``preference``: on held-out pairs, how often the model finds the chosen answer likelier
  than the rejected one (mean log-probability per token, so length does not decide), and
  the mean per-token KL divergence of the tuned model from the base on those answers.
- ``reward_model``: how often a reward model scores the chosen answer higher.
- ``answers`` (SFT): on held-out answers, their mean log-probability per token and the KL.
- ``labels`` (KTO): on held-out labelled answers, the log-probability margin of desirable
  over undesirable ones, and the KL.
- ``generation``: mean task reward of greedy answers to held-out prompts, and the KL of the
  tuned model from the base on its own answers.

The base is the same PEFT model with its adapter switched off (``disable_adapter``), so
no second copy of the weights is needed. Sequences are built exactly as TRL builds them:
the tokenizer's chat template, no added special tokens.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from trl.data_utils import common_prefix_length


@contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]


def _sequence(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """Token ids of prompt + completion, and where the completion starts (as in TRL's DPO)."""
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    full = _ids(tokenizer, prompt + completion)
    return full, common_prefix_length(prompt_ids, full)


def _logprobs(model, ids: list[int], start: int) -> torch.Tensor:
    """Log-softmax over the vocabulary at each position that predicts a token from ``start`` on."""
    x = torch.tensor([ids], device=_device(model))
    return F.log_softmax(model(input_ids=x).logits[0, start - 1:-1].float(), dim=-1)


def _completion(model, ids: list[int], start: int) -> tuple[float, float]:
    """(mean log-prob per completion token, mean per-token KL(tuned || base))."""
    tuned = _logprobs(model, ids, start)
    with model.disable_adapter():
        base = _logprobs(model, ids, start)
    target = torch.tensor(ids[start:], device=tuned.device)
    logp = tuned.gather(1, target[:, None]).mean()
    kl = (tuned.exp() * (tuned - base)).sum(-1).mean()
    return float(logp), float(kl)


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def preference(model, tokenizer, pairs: list[dict]) -> dict:
    """Pair accuracy, mean log-prob margin (chosen - rejected, per token) and KL on ``pairs``."""
    wins, margins, kls = [], [], []
    with _eval_mode(model):
        for pair in pairs:
            chosen = _completion(model, *_sequence(tokenizer, pair["prompt"], pair["chosen"]))
            rejected = _completion(model, *_sequence(tokenizer, pair["prompt"], pair["rejected"]))
            wins.append(float(chosen[0] > rejected[0]))
            margins.append(chosen[0] - rejected[0])
            kls += [chosen[1], rejected[1]]
    return {"pair_accuracy": _mean(wins), "margin": _mean(margins), "kl": _mean(kls), "n": len(pairs)}


def answers(model, tokenizer, examples: list[dict]) -> dict:
    """Held-out answers: mean log-prob per token (higher: the model writes them more
    readily) and the mean per-token KL from the base."""
    logps, kls = [], []
    with _eval_mode(model):
        for e in examples:
            logp, kl = _completion(model, *_sequence(tokenizer, e["prompt"], e["completion"]))
            logps.append(logp)
            kls.append(kl)
    return {"answer_logp": _mean(logps), "kl": _mean(kls), "n": len(examples)}


def labels(model, tokenizer, examples: list[dict]) -> dict:
    """Held-out labelled answers: mean log-prob per token of desirable minus undesirable
    answers (``margin``), and the mean per-token KL from the base."""
    scores = {True: [], False: []}
    kls = []
    with _eval_mode(model):
        for e in examples:
            logp, kl = _completion(model, *_sequence(tokenizer, e["prompt"], e["completion"]))
            scores[bool(e["label"])].append(logp)
            kls.append(kl)
    good, bad = _mean(scores[True]), _mean(scores[False])
    return {"desirable_logp": good, "undesirable_logp": bad,
            "margin": None if good is None or bad is None else good - bad,
            "kl": _mean(kls), "n": len(examples)}


def reward_model(model, tokenizer, pairs: list[dict]) -> dict:
    """How often a sequence-classification reward model scores the chosen answer higher."""
    from . import turns

    def score(messages, truncated):  # a cut answer as it was trained on: not ended
        x = torch.tensor([turns.as_scored(tokenizer, messages, not truncated)], device=_device(model))
        return float(model(input_ids=x).logits[0, 0])

    wins, margins = [], []
    with _eval_mode(model):
        for pair in pairs:
            margin = (score(pair["prompt"] + pair["chosen"], pair.get("chosen_truncated"))
                      - score(pair["prompt"] + pair["rejected"], pair.get("rejected_truncated")))
            wins.append(float(margin > 0))
            margins.append(margin)
    return {"pair_accuracy": _mean(wins), "margin": _mean(margins), "n": len(pairs)}


def generation(model, tokenizer, examples: list[dict], reward_fn, max_new_tokens: int) -> dict:
    """Greedy answers to ``examples`` (dicts with ``prompt`` and the reward's columns):
    mean reward, KL from the base on those answers, and a few samples to show."""
    rewards, kls, samples = [], [], []
    with _eval_mode(model):
        for example in examples:
            prompt_ids = _ids(tokenizer, example["prompt"], add_generation_prompt=True)
            x = torch.tensor([prompt_ids], device=_device(model))
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)[0].tolist()
            text = tokenizer.decode(out[len(prompt_ids):], skip_special_tokens=True)
            columns = {k: [v] for k, v in example.items() if k != "prompt"}
            completion = [{"role": "assistant", "content": text}]
            rewards.append(float(reward_fn(prompts=[example["prompt"]], completions=[completion],
                                           **columns)[0]))
            if len(out) > len(prompt_ids):
                kls.append(_completion(model, out, len(prompt_ids))[1])
            if len(samples) < 3:
                samples.append({"prompt": example["prompt"][-1]["content"], "answer": text})
    return {"reward": _mean(rewards), "kl": _mean(kls), "n": len(examples), "samples": samples}


def answer_kl(model, tokenizer, examples: list[dict], key: str = "completion") -> float | None:
    """Mean per-token KL(tuned || base) on the answers ``example[key]`` of ``examples``: the
    live "KL from base" of kinds whose trainer logs none (DPO, SFT)."""
    with _eval_mode(model):
        kls = [_completion(model, *_sequence(tokenizer, e["prompt"], e[key]))[1] for e in examples]
    return _mean(kls)
