"""GRPO's answers sampled through llama.cpp, from the policy as it is at this step.

TRL's ``GRPOTrainer`` takes a ``rollout_func(prompts, trainer)``. This one, before each
generation step:

1. writes the LoRA being trained, as it is now, as a GGUF LoRA (the export the jobs use,
   from the live weights: about 15 MB, some tens of milliseconds);
2. applies it to a llama.cpp context over the same base GGUF the panes run (the base is
   never reloaded) and samples each prompt's group there, all answers of the step in one
   batch (:class:`diptych.models.group_sampler.GroupSampler`), stopping at the template's
   end of turn as the panes do.

Token ids are the trainer's: each prompt is rendered and tokenized by the trainer's own
tokenizer (the panes' template, one BOS), and the sampled ids come from the same
vocabulary. The returned ``logprobs`` are llama.cpp's log-probabilities of the sampled
tokens under the temperature-scaled distribution of the quantized model. TRL hands them
on as ``sampling_per_token_logps``; it only uses them for vLLM's importance-sampling
correction and for an off-policy mask, neither of which a job here enables, so the
policy-gradient ratio is computed from PyTorch's own log-probabilities, as in plain TRL.
The quantized model and the dequantized one differ by about 0.008 nats per token (the
export parity test), which is the off-policyness these samples carry.

The same sampler gives greedy answers to held-out prompts (``answer``) for the
evaluations and the answers shown while a job trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path

from diptych.models.engine import Engine
from diptych.models.group_sampler import GroupSampler, GroupSampling

from . import export_gguf


@dataclass
class Answer:
    text: str  # without special tokens, as TRL decodes completions for the rewards
    ids: list[int]
    finish_reason: str  # "stop" or "length"


class LlamaCppRollouts:
    def __init__(self, base_gguf: Path, tokenizer, *, num_generations: int, max_seqs: int,
                 sampling: GroupSampling, workdir: Path, n_ctx: int = 4096):
        self.base = base_gguf
        self.tokenizer = tokenizer
        self.num_generations = num_generations
        self.sampling = sampling
        self.lora_path = workdir / "rollout-lora.gguf"
        self.engine = Engine(base_gguf, n_ctx=64, n_threads=len(os.sched_getaffinity(0)))
        self.sampler = GroupSampler(self.engine, n_seq=max_seqs, n_ctx=n_ctx)
        self._synced = None  # the optimizer step whose weights the sampler holds
        self.step_offset = 0  # a job's steps before this trainer's (a warm-up's), so steps stay unique
        self.calls = 0
        self.tokens = 0

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        if self.tokenizer is None:  # no trainer (a dry run): llama.cpp's own ids, the same ones
            return self.engine.tokenize(self.engine.render(messages))
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"]

    def text(self, ids: list[int]) -> str:
        """An answer's text without special tokens, as TRL decodes it for the rewards."""
        if self.tokenizer is None:
            return self.engine.detokenize(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def sync(self, model, step: int) -> None:
        """Give the sampler the LoRA's weights as they are at optimizer step ``step``."""
        from peft import get_peft_model_state_dict

        if step == self._synced:
            return
        config = model.peft_config["default"]
        export_gguf.write(get_peft_model_state_dict(model),
                          {"lora_alpha": config.lora_alpha, "r": config.r,
                           "use_rslora": config.use_rslora},
                          self.lora_path, self.base, check=self._synced is None)
        self.sampler.set_adapter(self.lora_path)
        self._synced = step

    def __call__(self, prompts: list, trainer) -> dict:
        """TRL's rollout_func: one answer per entry of ``prompts``, in which each prompt of
        the step appears ``num_generations`` times in a row (TRL's RepeatSampler)."""
        self.sync(trainer.accelerator.unwrap_model(trainer.model), self.step_offset + trainer.state.global_step)
        groups = [(p, len(list(g))) for p, g in groupby(prompts, key=_key)]
        ids, out = [], {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for key, count in groups:
            ids.append((self.prompt_ids(_messages(key)), count))
        # Sequences of one call share a batch; groups of unequal size go in separate calls.
        for count, batch in groupby(ids, key=lambda item: item[1]):
            batch = list(batch)
            seed = self.sampling.seed + 100_003 * self.calls  # new draws at every call
            self.calls += 1
            drawn = self.sampler.sample([p for p, _ in batch], count, replace(self.sampling, seed=seed))
            for (prompt, _), group in zip(batch, drawn):
                for sample in group:
                    out["prompt_ids"].append(prompt)
                    out["completion_ids"].append(sample.ids)
                    out["logprobs"].append(sample.logprobs)
                    self.tokens += len(sample.ids)
        return out

    def answer(self, examples: list[dict], n: int, sampling: GroupSampling) -> list[list[Answer]]:
        """``n`` answers to each example's ``prompt`` with the weights last synced, a list
        per example."""
        answers = []
        per_call = max(1, self.sampler.n_seq // n)
        for start in range(0, len(examples), per_call):
            chunk = examples[start:start + per_call]
            drawn = self.sampler.sample([self.prompt_ids(e["prompt"]) for e in chunk], n,
                                        replace(sampling, seed=sampling.seed + start))
            answers += [[Answer(self.text(s.ids), s.ids, s.finish_reason) for s in group]
                        for group in drawn]
        return answers

    def close(self) -> None:
        self.sampler.close()
        self.engine.close()
        self.lora_path.unlink(missing_ok=True)


def _key(prompt):
    """A hashable stand-in for a prompt (a string or a message list)."""
    return prompt if isinstance(prompt, str) else tuple((m["role"], m["content"]) for m in prompt)


def _messages(key) -> list[dict]:
    if isinstance(key, str):
        return [{"role": "user", "content": key}]
    return [{"role": role, "content": content} for role, content in key]

