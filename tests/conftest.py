"""Shared fixtures: the real bundled model, an isolated data dir and weight cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from diptych.models.adapters import AdapterInfo
    from diptych.training.store import Store

# Tests never need a display, and never reach a model hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def bundled_model():
    from diptych.models.catalog import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory):
    """One converted-weights cache for the whole run: only the first job pays the conversion."""
    path = tmp_path_factory.mktemp("weights-cache")
    os.environ["DIPTYCH_CACHE"] = str(path)
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DIPTYCH_HOME", str(path))
    return path


@pytest.fixture
def tiny_gguf(tmp_path):
    """A well-formed GGUF of an architecture llama.cpp does not know."""
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "notanarch")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Eight questions, each with a direct answer the user preferred to a question asked back.
QA = [
    ("What is the capital of France?", "The capital of France is Paris.", "What is the capital of Spain?"),
    ("How many legs does a spider have?", "A spider has eight legs.", "How many legs does an ant have?"),
    ("What color is the sky?", "The sky is blue.", "Why is the sky blue?"),
    ("Name a yellow fruit.", "A banana is yellow.", "Which fruits are red?"),
    ("What is two plus three?", "Two plus three is five.", "What is two plus four?"),
    ("Who wrote Hamlet?", "Shakespeare wrote Hamlet.", "Who wrote Macbeth?"),
    ("What do bees make?", "Bees make honey.", "Do bees sting?"),
    ("Which planet is closest to the Sun?", "Mercury is closest to the Sun.", "Which planet is largest?"),
]


@pytest.fixture
def voted(data_dir, weights_cache):
    """A data dir whose store holds 8 votes (the answer beats the question back), and their
    export as JSON lines."""
    from diptych.training.preferences import export_jsonl
    from diptych.training.store import Store

    with Store.open(data_dir) as store:
        for question, answer, asked_back in QA:
            conversation = store.new_conversation()
            store.add_user_message(conversation, 0, question)
            shown = dict(model="gemma", model_path=None, model_hash=None, adapter_path=None,
                         adapter_scale=None, template_name="gemma", template_source=None,
                         params={}, prompt_messages=[{"role": "user", "content": question}],
                         n_tokens=None, ttft_s=None, tokens_per_s=None, finish_reason="stop")
            left = store.add_response(conversation, 0, "left", "base", asked_back, adapter=None, **shown)
            right = store.add_response(conversation, 0, "right", "tuned", answer, adapter="t", **shown)
            store.record_vote(left, right, "right", blind=True)
        export_jsonl(store, data_dir / "pairs.jsonl")
    return data_dir


@pytest.fixture(scope="session")
def random_lora(bundled_model, weights_cache, tmp_path_factory):
    """A PEFT LoRA on every linear layer with non-trivial random lora_B, no training needed."""
    import torch
    from peft import LoraConfig, get_peft_model

    from diptych.training.base_weights import load_base

    model, tokenizer = load_base(bundled_model)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    folder = tmp_path_factory.mktemp("peft")
    peft_model.save_pretrained(folder)
    return peft_model.eval(), tokenizer, folder


def record_sample_vote(store: Store, choice: str = "left", *, left: str | None = None,
                       right: str | None = "v1", prompt: str = "What is 2+2?",
                       system: str = "", blind: bool = True, better_text: str | None = None,
                       created_at: str | None = None) -> int:
    """One turn answered by ``left`` and ``right`` (adapter names; None = base) and voted on."""
    cid = store.new_conversation(system, blind)
    store.add_user_message(cid, 0, prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    ids = []
    for side, adapter in (("left", left), ("right", right)):
        ids.append(store.add_response(
            cid, 0, side, "tuned" if adapter else "base", f"{adapter or 'base'} says 4",
            model="gemma-3-270m", model_path="/models/gemma.gguf", model_hash="ab12",
            adapter=adapter, adapter_path=f"/adapters/{adapter}" if adapter else None,
            adapter_scale=1.0 if adapter else None, template_name="gemma",
            template_source="{{ messages }}", params={"temperature": 0.8, "seed": 7},
            prompt_messages=messages, n_tokens=5, ttft_s=0.05, tokens_per_s=61.5,
            finish_reason="stop"))
    return store.record_vote(*ids, choice, blind, better_text, created_at=created_at)


# -- helpers several test files use -----------------------------------------------

def write_random_lora(path, base_path, rank=8, seed=0):
    """A GGUF LoRA on ``blk.0.attn_q`` with random A and B, shaped for the base model."""
    import gguf
    import numpy as np

    from diptych.models import catalog

    fields, table = catalog.read_header_fields(base_path)
    n_in, n_out = next(t[1] for t in table if t[0] == "blk.0.attn_q.weight")
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), fields["general.architecture"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    # numpy shapes are the GGUF dims reversed: lora_a [n_in, r], lora_b [r, n_out]
    writer.add_tensor("blk.0.attn_q.weight.lora_a",
                      rng.normal(0, 0.05, (rank, n_in)).astype(np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b",
                      rng.normal(0, 0.05, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_small_gguf(path, floats: dict | None = None, template: str | None = None):
    """A small well-formed llama GGUF (key/values of each kind, two tensors), with the
    float keys ``floats`` (name without the architecture -> value) and a chat template."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("small")
    writer.add_context_length(64)
    writer.add_embedding_length(4)
    writer.add_block_count(1)
    writer.add_head_count(1)
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c", "d", "e", "f", "g", "h"])
    writer.add_float32("some.float", 0.5)
    for key, value in (floats or {}).items():
        writer.add_float32(f"llama.{key}", value)
    writer.add_bool("some.flag", True)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def patched_copy(source, target, key: str, value: float):
    """A copy of the GGUF ``source`` whose float32 key ``key`` holds ``value`` instead."""
    import shutil
    import struct

    shutil.copyfile(source, target)
    with open(source, "rb") as f:
        head = f.read(1 << 20)
    name = key.encode()
    at = head.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    assert struct.unpack_from("<I", head, at)[0] == 6, f"{key} is not a float32"
    with open(target, "r+b") as f:
        f.seek(at + 4)
        f.write(struct.pack("<f", value))
    return target


def train(data_dir, *args) -> subprocess.Popen:
    """``diptych train ARGS --progress jsonl`` started as the app starts it."""
    # stderr goes to a file: a full pipe nobody reads while we wait on stdout would block the job
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "diptych", "--data-dir", str(data_dir), "train", *args,
         "--progress", "jsonl"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    process.log = log
    return process


def finish(process) -> tuple[int, list[dict], str]:
    out, _ = process.communicate(timeout=600)
    lines = [json.loads(line) for line in out.splitlines()]  # stdout holds JSON lines only
    process.log.seek(0)
    return process.returncode, lines, process.log.read()


def run_job(data_dir, *args) -> tuple[list[dict], AdapterInfo]:
    """A job run to its end; its progress lines and the adapter it registered."""
    from diptych.models import adapters
    from diptych.training import job

    code, lines, err = finish(train(data_dir, *args))
    assert code == 0, err[-3000:]
    assert [line["phase"] for line in lines if line["phase"] not in ("train", "eval")] == \
        ["load", "eval_before", "eval_after", "save", "done"]
    assert all(set(job.Progress.KEYS) <= set(line) for line in lines)
    return lines, adapters.resolve(lines[-1]["adapter"], data_dir)


def steps(lines) -> list[dict]:
    return [line for line in lines if line["phase"] == "train" and line["loss"] is not None]


@pytest.fixture
def home(tmp_path):
    """A data directory holding three votes."""
    path = tmp_path / "home"
    from diptych.training.store import Store

    with Store.open(path) as store:
        record_sample_vote(store, "right")
        record_sample_vote(store, "better", better_text="Four.")
        record_sample_vote(store, "tie")
    return path


# ``python -c OFFLINE LOG JSON`` runs ``diptych ARGS`` for each list of ARGS in the JSON
# list, one after the other in this one process (so the imports are paid once), stopping
# at the first that fails, and writes each name lookup or connection to a host other than
# this machine into LOG: commands must make none.
OFFLINE = textwrap.dedent("""
    import socket, sys

    LOCAL = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
    log = open(sys.argv[1], "a", encoding="utf-8", buffering=1)

    def local_address(address):
        return isinstance(address, (str, bytes)) or (isinstance(address, tuple) and address[0] in LOCAL)

    def hook(event, args):
        if event == "socket.getaddrinfo" and args[0] not in LOCAL:
            log.write(f"getaddrinfo {args[0]!r} {args[1]!r}\\n")
        elif event == "socket.connect":
            sock, address = args
            if sock.family != getattr(socket, "AF_UNIX", None) and not local_address(address):
                log.write(f"connect {address!r}\\n")

    sys.addaudithook(hook)
    import json
    from diptych.cli import main
    for argv in json.loads(sys.argv[2]):
        print("$ diptych " + " ".join(argv), file=sys.stderr, flush=True)
        sys.argv = ["diptych", *argv]
        code = main(argv)
        if code:
            sys.exit(code)
""")


def users_environment() -> dict:
    """This process's environment without what the tests set for the hub: as a user's shell."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("HF_", "TRANSFORMERS_")) and k != "CI"}
