"""Plain helpers the tests share (fixtures are in conftest.py): votes, small GGUF files,
random LoRAs, jobs run as the app runs them, the app driven as a user drives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from diptych.models.adapters import AdapterInfo
    from diptych.training.store import Store


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


def cancel_in_stage(process, stage: str, data_dir) -> None:
    """SIGTERM a job of several phases at its first training step in ``stage``; it must end
    cancelled and register nothing."""
    import signal

    for line in process.stdout:
        event = json.loads(line)
        if event["phase"] == "train" and event.get("stage") == stage and event["loss"] is not None:
            process.send_signal(signal.SIGTERM)
            break
    code, lines, _ = finish(process)
    assert code == 128 + signal.SIGTERM and lines[-1]["phase"] == "cancelled"
    assert not any((data_dir / "adapters").iterdir())


def run_job(data_dir, *args) -> tuple[list[dict], AdapterInfo]:
    """A job run to its end; its progress lines and the adapter it registered."""
    from diptych.models import adapters
    from diptych.training import job

    code, lines, err = finish(train(data_dir, *args))
    assert code == 0, err[-3000:]
    assert [line["phase"] for line in lines if line["phase"] not in ("train", "eval")] == \
        ["load", "prepare", "eval_before", "eval_after", "save", "done"]
    assert all(set(job.Progress.KEYS) <= set(line) for line in lines)
    return lines, adapters.resolve(lines[-1]["adapter"], data_dir)


def steps(lines) -> list[dict]:
    return [line for line in lines if line["phase"] == "train" and line["loss"] is not None]


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


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def mean_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean per-token KL(p || q) of log-prob rows."""
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def llama_logprobs(base, ids, lora=None) -> np.ndarray:
    from diptych.models import native

    llama = native.llama(base, n_ctx=256, logits_all=True, verbose=False, n_threads=2,
                  **({"lora_path": str(lora)} if lora else {}))
    try:
        llama.eval(ids)
        return log_softmax(np.array(llama.scores[: len(ids)]))
    finally:
        llama.close()


@contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process: a read-only bind mount for root (who
    writes through permissions), the permissions for anyone else."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", folder, folder], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here to make a read-only folder")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
        yield
    finally:
        subprocess.run(["umount", folder], check=True)


def register_lora(data_dir, name, base, seed=0):
    """A registered adapter: a small random GGUF LoRA in ``adapters/<name>/``."""
    import json

    from diptych import paths

    folder = paths.adapters_dir(data_dir) / name
    folder.mkdir(parents=True)
    write_random_lora(folder / "adapter.gguf", base, seed=seed)
    (folder / "meta.json").write_text(json.dumps({"name": name, "kind": "dpo"}))
    return folder


def send(qtbot, win, text):
    from PySide6.QtCore import Qt

    win.prompt.setPlainText(text)
    with qtbot.waitSignal(win.controller.busy_changed, timeout=5_000):
        qtbot.keyClick(win.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def wait_idle(qtbot, win, timeout=60_000):
    qtbot.waitUntil(lambda: not win.controller.busy, timeout=timeout)


def register_adapter(data_dir, lora, name="drifty"):
    """A registered adapter whose GGUF LoRA is a copy of ``lora``."""
    from diptych import paths
    from diptych.models import adapters


    folder = paths.adapters_dir(data_dir) / name
    folder.mkdir(parents=True)
    (folder / adapters.GGUF_NAME).write_bytes(lora.read_bytes())
    (folder / adapters.META_NAME).write_text(json.dumps({"kind": "dpo", "metrics": {"after": {}}}))
    return adapters.resolve(name, data_dir)


def open_window(qtbot, data_dir, max_tokens: int):
    """The app's window on the bundled model, shown, both panes loaded (``max_tokens`` an answer)."""
    import argparse

    from diptych.desktop.app import build_window

    win = build_window(argparse.Namespace(data_dir=str(data_dir), model=None, adapter=None))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.settings.max_tokens.setValue(max_tokens)
    qtbot.waitUntil(lambda: len(win.controller.engines) == 2, timeout=30_000)
    return win

