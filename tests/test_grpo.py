"""GRPO with rollouts through llama.cpp and rewards the user writes, on the bundled model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import llama_logprobs, mean_kl, run_job, steps

from diptych.models import scoring
from diptych.models.engine import Engine, SamplingParams
from diptych.models.group_sampler import GroupSampler, GroupSampling

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "rewards"
PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def engine(bundled_model):
    engine = Engine(bundled_model, n_ctx=256, n_threads=2)
    yield engine
    engine.close()


def test_a_greedy_group_is_the_engines_greedy_answer(engine):
    sampler = GroupSampler(engine, n_seq=6)
    try:
        ids = engine.tokenize(engine.render(PROMPT))
        groups = sampler.sample([ids, ids], 3, GroupSampling(temperature=0.0, max_tokens=12))
        sampled = sampler.sample([ids], 6, GroupSampling(temperature=1.0, max_tokens=12, seed=1))[0]
    finally:
        sampler.close()
    alone = engine.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=12, repeat_penalty=1.0))
    expected = [t.id for t in alone.tokens if t.id >= 0]
    # Rows of a batch round a little differently from one row alone (about 0.02 nats here;
    # see test_scoring), so greedy paths agree where the model is sure and may part where two
    # tokens are nearly tied. Each answer's log-probs are those of its own tokens, though.
    for group in groups:
        for sample in group:
            assert sample.ids[:3] == expected[:3]
            assert len(sample.logprobs) == len(sample.ids) and all(lp <= 0 for lp in sample.logprobs)
            scored = [t.logprob for t in scoring.score(engine, PROMPT, sample.ids)]
            assert np.abs(np.array(scored) - np.array(sample.logprobs)).mean() < 0.1
    assert len({tuple(s.ids) for s in sampled}) > 1  # seeded per sequence: a group differs
    for sample in sampled:
        assert sample.finish_reason in ("stop", "length") and len(sample.ids) <= 12
        if sample.finish_reason == "stop":  # the end-of-turn token is kept, as TRL keeps EOS
            assert engine.detokenize(sample.ids[-1:], special=True) in ("<eos>", "<end_of_turn>")


def test_rollout_ids_are_the_trainers_tokens(bundled_model, weights_cache, tmp_path):
    from diptych.training.base_weights import load_tokenizer
    from diptych.training.rollouts import LlamaCppRollouts

    tokenizer = load_tokenizer(bundled_model)
    rollouts = LlamaCppRollouts(bundled_model, tokenizer, num_generations=4, max_seqs=8,
                                sampling=GroupSampling(temperature=1.0, max_tokens=16),
                                workdir=tmp_path)
    try:
        prompts = [[{"role": "user", "content": "What is the capital of France?"}],
                   [{"role": "user", "content": "Tell me about the sea."}]]
        for prompt in prompts:  # the trainer's prompt ids are llama.cpp's for the same text
            ids = rollouts.prompt_ids(prompt)
            assert ids == rollouts.engine.tokenize(rollouts.engine.render(prompt))
            assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
        groups = rollouts.sampler.sample([rollouts.prompt_ids(p) for p in prompts], 4,
                                         GroupSampling(temperature=1.0, max_tokens=16, seed=3))
    finally:
        rollouts.close()
    for group in groups:
        for sample in group:  # sampled ids mean the same text to both tokenizers
            cpp = rollouts.engine.detokenize(sample.ids, special=True)
            assert tokenizer.decode(sample.ids, skip_special_tokens=False) == cpp
            assert tokenizer.convert_ids_to_tokens(sample.ids)  # every id is in the vocabulary


def dry_run(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diptych", "train", "grpo", "--dry-run", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_dry_run_prints_scored_answers_and_trains_nothing(data_dir):
    result = dry_run("--reward-fn", "examples/rewards/format_length.py:short_statement",
                     "--max-completion-length", "12")
    assert result.returncode == 0, result.stderr[-2000:]
    scored = [line for line in result.stdout.splitlines() if line.startswith("[reward ")]
    assert len(scored) == 3 * 4  # three prompts, four answers each
    assert "nothing was trained" in result.stdout
    assert not (data_dir / "adapters").exists() or not any((data_dir / "adapters").iterdir())

    result = dry_run("--task", "arith", "--max-completion-length", "8", "--progress", "jsonl")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    samples = [line for line in lines if line["phase"] == "sample"]
    assert lines[-1]["phase"] == "done" and lines[-1]["dry_run"] and len(samples) == 12
    assert all(0 <= s["reward"] <= 1 and set(s["rewards"]) == {"arith"} for s in samples)


BAD_REWARDS = {
    "raises.py": ("def reward(prompts, completions, **kw):\n    return [1 / 0 for _ in completions]\n",
                  "raises.py:2 (reward): the reward raised ZeroDivisionError"),
    "short.py": ("def reward(prompts, completions, **kw):\n    return [1.0]\n",
                 "returned 1 values for 4 answers"),
    "text.py": ("def reward(prompts, completions, **kw):\n    return ['good'] * len(completions)\n",
                "the reward for answer 1 is 'good', not a finite number"),
    "broken.py": ("def reward(prompts, completions, **kw)\n    return []\n",
                  "broken.py:1: the reward file does not parse"),
    "imports.py": ("import no_such_module_here\n", "imports.py:1: the reward file failed to import"),
}


@pytest.mark.parametrize("name", BAD_REWARDS)
def test_a_bad_reward_file_is_one_line_naming_it(name, tmp_path, data_dir):
    from diptych.training.grpo import Config, dry_run as run_dry

    source, message = BAD_REWARDS[name]
    (tmp_path / name).write_text(source)
    from diptych.training.errors import JobError

    with pytest.raises(JobError) as caught:
        run_dry(Config(reward_fn=[f"{tmp_path / name}:reward"], num_generations=4,
                       max_completion_length=4, data_dir=str(data_dir)))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_reports_a_bad_reward_in_one_line(tmp_path, data_dir):
    (tmp_path / "r.py").write_text("def other(prompts, completions, **kw):\n    return []\n")
    result = dry_run("--reward-fn", f"{tmp_path / 'r.py'}:reward", "--max-completion-length", "4")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"diptych: error: {tmp_path / 'r.py'}: has no function named 'reward'"]


def test_a_judge_reward_is_a_probability_that_ranks_answers(bundled_model):
    from diptych.models.judge import Judge

    judge = Judge(bundled_model, "The answer is polite.")  # tone: what a 270M judge can tell
    try:
        question = [{"role": "user", "content": "Can you help me?"}]
        good = judge.score(question, "Of course, I am glad to help.")
        bad = judge.score(question, "No. Figure it out yourself.")
    finally:
        judge.close()
    assert 0 <= bad <= 1 and 0 <= good <= 1
    assert good > bad


def test_a_short_grpo_job_samples_through_llama_cpp_and_exports_with_parity(data_dir, weights_cache,
                                                                           bundled_model):
    import torch
    from peft import PeftModel

    from diptych.training.base_weights import load_base

    # the task's prompts (and their target column), the user's reward on them
    lines, info = run_job(data_dir, "grpo", "--name", "own-reward", "--task", "reverse_words",
                          "--reward-fn", str(EXAMPLES / "reverse_words.py") + ":reversed_words",
                          "--steps", "2", "--batch-size", "4", "--num-generations", "4",
                          "--max-completion-length", "12", "--eval-size", "2", "--max-prompts", "4",
                          "--eval-every", "1", "--lr", "0.002", "--no-drift")
    trained = steps(lines)
    assert [s["step"] for s in trained] == [1, 2] and all(s["sampler"] == "llama.cpp" for s in trained)
    assert all(s["reward_std"] is not None for s in trained)
    evals = [line for line in lines if line["phase"] == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2]  # before, every step, after
    assert all(0 <= e["reward"] <= 1 and e["samples"] for e in evals)
    assert evals[-1]["samples"][0]["prompt"].startswith("Reverse the order of the words")
    assert info.meta["data"]["sampler"] == "llama.cpp" and info.meta["data"]["source"] == "task:reverse_words"
    assert info.meta["data"]["reward"].endswith("reverse_words.py:reversed_words")
    after = info.meta["metrics"]["after"]
    assert 0 <= after["reward"] <= 1 and after["n"] == 2 and info.gguf_path.is_file()

    # The registered GGUF LoRA is the PEFT adapter, as llama.cpp runs it.
    model, tokenizer = load_base(bundled_model)
    peft_model = PeftModel.from_pretrained(model, info.path).eval()
    text = [{"role": "user", "content": "Describe a quiet morning."},
            {"role": "assistant", "content": "The street is still and the air is cool."}]
    ids = tokenizer.apply_chat_template(text, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        x = torch.tensor([ids])
        pt_lora = torch.log_softmax(peft_model(input_ids=x).logits[0].double(), -1).numpy()
        with peft_model.disable_adapter():
            pt_base = torch.log_softmax(peft_model(input_ids=x).logits[0].double(), -1).numpy()
    kl_base = mean_kl(llama_logprobs(bundled_model, ids), pt_base)
    kl_lora = mean_kl(llama_logprobs(bundled_model, ids, info.gguf_path), pt_lora)
    kl_effect = mean_kl(pt_lora, pt_base)
    print(f"\nKL base {kl_base:.4f}, KL lora {kl_lora:.4f}, LoRA effect {kl_effect:.4f}")
    assert kl_effect > 0.05  # two steps at this rate move the model
    assert kl_lora <= 2 * kl_base + 0.01
    assert np.isfinite(kl_lora)
