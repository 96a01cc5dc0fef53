"""Every architecture Diptych claims, end to end, on tiny random-weight GGUFs (tests/tiny_models.py):

1. llama.cpp and transformers (the converted weights training loads) read the file the
   same way: equal token ids for a rendered chat, and the same next-token distributions;
2. a random PEFT LoRA on every linear layer, exported to GGUF and applied by llama.cpp,
   moves the distribution as PEFT moves it (the criterion of test_export_gguf.py);
3. ``diptych train dpo --model FILE`` trains one step and registers a GGUF LoRA, and
   ``diptych chat --model FILE --adapter NAME`` answers with it.

Each file carries its own chat template (ChatML; Gemma's for Gemma) whose turns end with a
token that is not the file's EOS (``<|im_end|>``, ``<end_of_turn>``): the panes and the
trainers must render with it and stop there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402
from helpers import llama_logprobs, log_softmax, mean_kl  # noqa: E402

from diptych.models import catalog, templates  # noqa: E402

TEXT = [{"role": "user", "content": "Write one sentence about the sea."},
        {"role": "assistant", "content": "The sea is wide and deep, and its waves never stop moving."}]
PAIRS = [("What is the capital of France?", "The capital of France is Paris.", "Who wrote Hamlet?"),
         ("What color is the sky?", "The sky is blue.", "Why is the sky blue?"),
         ("What do bees make?", "Bees make honey.", "Do bees sting?")]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": q}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}]}) + "\n" for q, good, bad in PAIRS))
    return path


@pytest.mark.parametrize("arch", tiny_models.ARCHITECTURES)
def test_architecture_end_to_end(arch, tmp_path, weights_cache, pairs_file, capsys):
    import torch
    from diptych.models import native
    from peft import LoraConfig, get_peft_model

    from diptych.cli import main
    from diptych.training.base_weights import load_base
    from diptych.training.export_gguf import export

    started = time.monotonic()
    path = tiny_models.build(arch, tmp_path / f"tiny-{arch}.gguf")
    template = catalog.read_info(path).default_template()
    end_of_turn = "<end_of_turn>" if arch.startswith("gemma") else "<|im_end|>"
    assert template.name == "gguf" and template.stop[0] == end_of_turn

    # 1. the same ids and the same distributions in llama.cpp and transformers
    model, tokenizer = load_base(path)
    assert model.config.model_type.startswith("gemma3" if arch == "gemma3" else
                                              "llama" if arch == "mistral" else arch)
    ids = tokenizer.apply_chat_template(TEXT, tokenize=True, return_dict=True)["input_ids"]
    vocab_only = native.llama(path, vocab_only=True, verbose=False)
    try:
        rendered = templates.render(template, TEXT, add_generation_prompt=False)
        cpp_ids = vocab_only.tokenize(rendered.encode(), add_bos=False, special=True)
        # A cut-down sentencepiece vocabulary lacks some merges' steps, so the two
        # tokenizers may cut words differently there; the full one is checked in
        # test_base_weights.py. The template's special tokens must agree all the same.
        if arch.startswith("gemma"):
            specials = set(tokenizer.convert_tokens_to_ids(["<bos>", "<start_of_turn>", end_of_turn]))
            ids_, cpp_ids = [i for i in ids if i in specials], [i for i in cpp_ids if i in specials]
            assert ids_ == cpp_ids and len(ids_) >= 5
        else:
            assert ids == cpp_ids
        import llama_cpp

        end_id = tokenizer.convert_tokens_to_ids(end_of_turn)
        assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(vocab_only.model),
                                            end_id)  # the panes stop there
    finally:
        vocab_only.close()
    assert end_id in model.generation_config.eos_token_id  # and so do GRPO's rollouts
    assert end_id != tokenizer.eos_token_id

    # 2. a random LoRA on every linear layer: llama.cpp + the exported GGUF LoRA == PEFT
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    peft_dir = tmp_path / "peft"
    peft_model.save_pretrained(peft_dir)
    lora = export(peft_dir, tmp_path / "lora.gguf", path)
    with torch.no_grad():
        x = torch.tensor([ids])
        pt_lora = log_softmax(peft_model(input_ids=x).logits[0].double().numpy())
        with peft_model.disable_adapter():
            pt_base = log_softmax(peft_model(input_ids=x).logits[0].double().numpy())
    cpp_base, cpp_lora = llama_logprobs(path, ids), llama_logprobs(path, ids, lora)
    kl_base, kl_lora, effect = mean_kl(cpp_base, pt_base), mean_kl(cpp_lora, pt_lora), mean_kl(pt_lora, pt_base)
    assert kl_base < 1e-3  # f32 weights on both sides: only the kernels differ
    assert kl_lora <= 2 * kl_base + 0.01
    assert effect >= 10 * kl_lora and effect > 0.05

    # 3. the CLI: a one-step DPO job on this base, then both panes answer with it
    home = tmp_path / "home"
    assert main(["--data-dir", str(home), "train", "dpo", "--model", str(path), "--name", "one",
                 "--data", str(pairs_file), "--steps", "1", "--batch-size", "2",
                 "--eval-size", "1", "--no-drift"]) == 0
    meta = json.loads((home / "adapters" / "one" / "meta.json").read_text())
    assert meta["base"]["sha256"] == catalog.file_hash(path)
    capsys.readouterr()
    assert main(["--data-dir", str(home), "chat", "--model", str(path), "--adapter", "one",
                 "--prompt", "What is the capital of France?", "--max-tokens", "6",
                 "--temperature", "0", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["template"] == "gguf" and answer["tuned"]["adapter"].endswith("adapter.gguf")
    assert answer["base"]["n_tokens"] > 0 and answer["tuned"]["n_tokens"] > 0
    print(f"\n{arch}: KL base {kl_base:.2e}, KL lora {kl_lora:.2e}, LoRA effect {effect:.3f}; "
          f"whole path {time.monotonic() - started:.1f} s")


def test_adapter_of_another_base_is_refused(tmp_path, weights_cache, pairs_file, capsys):
    """Two files of the same shapes: the adapter's meta.json names the base it was trained on,
    so chat, score, drift and export refuse it on the other one (one line, exit 2)."""
    from diptych.cli import main

    first = tiny_models.build("qwen2", tmp_path / "first.gguf", seed=0)
    second = tiny_models.build("qwen2", tmp_path / "second.gguf", seed=1)
    home = tmp_path / "home"
    assert main(["--data-dir", str(home), "train", "dpo", "--model", str(first), "--name", "mine",
                 "--data", str(pairs_file), "--steps", "1", "--batch-size", "2",
                 "--eval-size", "1", "--no-drift"]) == 0
    folder = home / "adapters" / "mine"
    runs = {
        "chat": ["chat", "--prompt", "Hi", "--max-tokens", "2", "--adapter", "mine"],
        "score": ["score", "--adapter", "mine", "--prompt", "Hi", "--response", "Hello."],
        "drift": ["adapters", "drift", "mine"],
        "export": ["adapters", "export-gguf", str(folder), "--out", str(tmp_path / "x.gguf")],
    }
    for what, argv in runs.items():
        capsys.readouterr()
        # --model after the subcommand, as the README shows
        assert main(["--data-dir", str(home), *argv, "--model", str(second)]) == 2, what
        err = capsys.readouterr().err.strip()
        assert "was trained on" in err and "second.gguf" in err and "\n" not in err, (what, err)
    assert not (tmp_path / "x.gguf").exists()
    # before the subcommand works too, and on its own base the adapter scores
    assert main(["--data-dir", str(home), "--model", str(first), "score", "--adapter", "mine",
                 "--prompt", "Hi", "--response", "Hello.", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(first.resolve())


def test_export_refuses_an_architecture_it_cannot_map(tmp_path):
    from diptych.training.export_gguf import ExportError, export

    path = tiny_models.build("qwen2", tmp_path / "tiny.gguf")
    data = path.read_bytes().replace(b"qwen2", b"qwen9")  # same length: a well-formed file
    other = tmp_path / "other.gguf"
    other.write_bytes(data)
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4}))
    with pytest.raises(ExportError, match=r"cannot map a LoRA to GGUF for 'qwen9' models"):
        export(tmp_path, tmp_path / "out.gguf", other)


def test_training_refuses_an_architecture_transformers_cannot_load(tmp_path, weights_cache,
                                                                   pairs_file, capsys):
    from diptych.cli import main

    path = tiny_models.build("qwen2", tmp_path / "tiny.gguf")
    other = tmp_path / "other.gguf"
    other.write_bytes(path.read_bytes().replace(b"qwen2", b"qwen9"))
    home = tmp_path / "home"
    assert main(["--data-dir", str(home), "train", "dpo", "--model", str(other), "--name", "x",
                 "--data", str(pairs_file), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "cannot load this 'qwen9' GGUF for training" in err[-1] and "Traceback" not in "".join(err)
    assert not (home / "adapters" / "x").exists()


def test_reward_model_and_grpo_on_a_llama_base(tmp_path, weights_cache, pairs_file):
    """The other job kinds on a non-Gemma base: a reward model trained on the votes in the
    store, then GRPO with TRL's own generation (``--sampler transformers``, the path a CUDA
    machine takes) on a task, and with llama.cpp's, scored by that reward model, on the
    prompts of the chat history."""
    from diptych.cli import main
    from diptych.models import adapters
    from diptych.training.reinforce import Config, choose_sampler

    assert choose_sampler(Config(), cuda=True) == "transformers"
    path = tiny_models.build("llama", tmp_path / "tiny.gguf")
    home = tmp_path / "home"
    assert main(["--data-dir", str(home), "data", "import", str(pairs_file)]) == 0
    base = ["--data-dir", str(home), "train"]
    assert main([*base, "reward", "--model", str(path), "--name", "judge",
                 "--steps", "1", "--batch-size", "2", "--eval-size", "1"]) == 0
    judge = adapters.resolve("judge", home)
    assert judge.kind == "reward" and judge.gguf_path is None
    assert judge.meta["data"]["source"] == "store"
    assert judge.meta["metrics"]["after"]["pair_accuracy"] is not None
    assert (judge.path / "adapter_model.safetensors").is_file()
    grpo = ["grpo", "--model", str(path), "--steps", "1", "--max-prompts", "2",
            "--num-generations", "2", "--max-completion-length", "6", "--batch-size", "2",
            "--eval-size", "1", "--no-drift"]
    rewards = {"transformers": ["--task", "length"],
               "llama.cpp": ["--reward-model", "judge", "--prompts-from", "history"]}
    for sampler, reward in rewards.items():
        assert main([*base, *grpo, *reward, "--name", f"g-{sampler}", "--sampler", sampler]) == 0
        info = adapters.resolve(f"g-{sampler}", home)
        assert info.meta["data"]["sampler"] == sampler and info.gguf_path.is_file()
    data = adapters.resolve("g-llama.cpp", home).meta["data"]
    assert data["reward"] == "judge" and data["source"] == "history"

    # --from for these kinds too: each starts from its parent's weights (its "before" is
    # the parent's "after", on the same held-out data), the reference stays the base
    assert main([*base, "reward", "--model", str(path), "--name", "judge2", "--from", "judge",
                 "--steps", "1", "--batch-size", "2", "--eval-size", "1"]) == 0
    judge2 = adapters.resolve("judge2", home)
    assert judge2.meta["parent"]["name"] == "judge"
    assert judge2.meta["metrics"]["before"]["margin"] == pytest.approx(
        judge.meta["metrics"]["after"]["margin"], rel=1e-3, abs=1e-5)
    parent = adapters.resolve("g-transformers", home)
    assert main([*base, *grpo, *rewards["transformers"], "--name", "g2", "--from", "g-transformers",
                 "--sampler", "transformers"]) == 0
    child = adapters.resolve("g2", home)
    assert child.meta["parent"]["name"] == "g-transformers"
    before, ended = child.meta["metrics"]["before"], parent.meta["metrics"]["after"]
    assert (before["reward"], before["kl"]) == pytest.approx((ended["reward"], ended["kl"]), abs=1e-4)
    # a chat LoRA cannot continue a reward model, nor the other way round
    assert main([*base, *grpo, *rewards["transformers"], "--name", "g3", "--from", "judge"]) == 2
    assert main([*base, "reward", "--model", str(path), "--name", "judge3", "--from", "g2",
                 "--steps", "1"]) == 2


def test_answers_stop_at_the_files_end_of_turn_token(tmp_path, weights_cache):
    """A model whose likeliest token is always ChatML's <|im_end|> (not its EOS): the pane's
    engine and transformers' generation (GRPO's CUDA sampler) both stop there at once."""
    import torch

    from diptych.models.engine import Engine, SamplingParams
    from diptych.training.base_weights import load_base

    path = tiny_models.build("llama", tmp_path / "ends.gguf", ends_at_once=True)
    engine = Engine(path)
    try:
        answer = engine.generate([{"role": "user", "content": "Hello there"}],
                                 SamplingParams(temperature=0.0, max_tokens=16))
    finally:
        engine.close()
    assert engine.template.stop[0] == "<|im_end|>"
    assert (answer.text, answer.finish_reason) == ("", "stop") and answer.n_tokens <= 1

    model, tokenizer = load_base(path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello there"}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=16, do_sample=False)
    assert out[0, prompt.shape[1]:].tolist() == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_chat_with_another_model_as_a_command(tmp_path):
    """``diptych chat --prompt TEXT --model FILE`` in its own process, --model after the subcommand."""
    import subprocess

    path = tiny_models.build("phi3", tmp_path / "tiny-phi3.gguf")
    done = subprocess.run([sys.executable, "-m", "diptych", "--data-dir", str(tmp_path / "home"),
                           "chat", "--prompt", "What is the sea?", "--model", str(path),
                           "--max-tokens", "4", "--temperature", "0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["model"] == str(path.resolve()) and answer["template"] == "gguf"
    assert answer["base"]["text"] == answer["tuned"]["text"]  # no adapter: the same greedy answer
