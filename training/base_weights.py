"""The base model's weights for PyTorch: the very GGUF the panes run, dequantized once.

transformers reads a GGUF with ``gguf_file=`` and dequantizes it to dense tensors. That
takes about 25 s for the bundled 270M model on two cores (most of it reading the 262k-token
vocabulary from the header, which ``_one_reader`` makes happen once instead of three times),
so the result is saved as safetensors + tokenizer + config in a cache folder named by the
GGUF's sha256; later jobs load it in a few seconds.

The cache is trusted only as far as its manifest (``manifest.json``: each file's size and
sha256, the GGUF's hash and the transformers version that converted it) vouches for it:

- it is written to a temporary folder and renamed into place with its manifest, so a
  conversion killed halfway leaves nothing a later job could mistake for a cache;
- on load every file is checked against the manifest (about a second for 1 GB); a folder
  with a missing, cut-short or changed file, or no manifest, is converted again;
- a conversion by another transformers version, or one whose config no longer says the
  GGUF's architecture, is converted again: the key is the GGUF *and* what its conversion
  produced;
- the temporary folders of conversions whose process is gone are removed.

The tokenizer's chat template is set to the template the panes render with
(``diptych.models.templates``), so TRL formats training examples exactly as the app
formats prompts. That template writes ``<bos>`` as text; TRL tokenizes rendered chats
with ``add_special_tokens=False`` and we also turn the tokenizer's own BOS off, so every
sequence starts with exactly one BOS, as in llama.cpp (tests/test_base_weights.py checks
that the ids equal llama.cpp's).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: conversions are not serialised, each still lands whole
    fcntl = None
import gguf
import platformdirs
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GgufConfig,
)

from diptych.models import catalog

ENV_VAR = "DIPTYCH_CACHE"
MANIFEST = "manifest.json"
TMP = ".tmp-"
_verified: set = set()  # (folder, its files' sizes and mtimes) already checked in this process


def cache_root() -> Path:
    root = os.environ.get(ENV_VAR) or Path(platformdirs.user_cache_dir("diptych", appauthor=False)) / "base"
    return Path(root).expanduser()


def cache_dir(gguf_path: str | os.PathLike) -> Path:
    """Where the dequantized weights of this exact GGUF file live (may not exist yet)."""
    return cache_root() / catalog.file_hash(gguf_path)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_manifest(folder: Path, gguf_hash: str, architecture: str) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {"gguf_sha256": gguf_hash, "architecture": architecture,
                "transformers": transformers.__version__, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def check_cache(folder: Path, gguf_hash: str, architecture: str) -> str | None:
    """Why ``folder`` is not a sound conversion of this GGUF (None when it is)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unreadable manifest"
    if manifest.get("gguf_sha256") != gguf_hash or manifest.get("architecture") != architecture:
        return "a manifest of another model"
    if manifest.get("transformers") != transformers.__version__:
        return f"converted by transformers {manifest.get('transformers')}"
    if "config.json" not in files or "model.safetensors" not in files:
        return "no weights or config listed"
    stamp = [str(folder)]
    for name, entry in sorted(files.items()):
        try:
            stat = (folder / name).stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != entry.get("size"):
            return f"{name} has {stat.st_size:,} bytes, not {entry.get('size'):,}"
        stamp.append((name, stat.st_size, stat.st_mtime_ns))
    if tuple(stamp) in _verified:
        return None
    for name, entry in files.items():
        if _sha256(folder / name) != entry.get("sha256"):
            return f"{name} has changed since it was written"
    _verified.add(tuple(stamp))
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_leftovers(root: Path) -> list[Path]:
    """Remove the temporary folders of conversions whose process is gone."""
    removed = []
    for path in root.glob(f"{TMP}*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or (int(pid) != os.getpid() and not _alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def ensure_cached(gguf_path: str | os.PathLike) -> Path:
    """The cache folder of ``gguf_path``, converting the GGUF first if it is not there or
    its manifest does not vouch for it."""
    gguf_path = Path(gguf_path).resolve()
    target = cache_dir(gguf_path)
    gguf_hash, arch = target.name, catalog.read_info(gguf_path).architecture
    if target.exists() and check_cache(target, gguf_hash, arch) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time per file: the processes of an `accelerate launch` (or two
    # jobs) wait for the first instead of each holding a dequantized copy in memory. The
    # lock is on the GGUF itself (read-only is enough), so the cache gets no lock files.
    with open(gguf_path, "rb") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        problem = check_cache(target, gguf_hash, arch) if target.exists() else None
        if target.exists() and problem is None:
            return target  # converted while this process waited
        _convert(gguf_path, target, arch, problem)
    return target


@contextmanager
def _one_reader(gguf_path: Path):
    """While converting, every ``gguf.GGUFReader(gguf_path)`` gets one shared reader.

    transformers reads the file's header three times (config, tokenizer, weights), and
    gguf-py builds each of a large vocabulary's 262,144 strings as its own field part: for
    the bundled model that is about 9 s a read. The reader is read-only (a memory map), so
    sharing it changes nothing but the time."""
    real = gguf.GGUFReader
    shared = real(gguf_path)

    def reader(path, *args, **kwargs):
        same = not args and not kwargs and Path(path).resolve() == gguf_path
        return shared if same else real(path, *args, **kwargs)

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _convert(gguf_path: Path, target: Path, arch: str, problem: str | None) -> None:
    gguf_hash = target.name
    clean_leftovers(target.parent)
    if problem is not None:  # move it aside first: a rename, so no job loads a half-removed cache
        print(f"converted weights in {target} are damaged ({problem}): converting again",
              file=sys.stderr)
        aside = target.parent / f"{TMP}damaged-{target.name}-{os.getpid()}"
        try:
            os.rename(target, aside)
        except OSError:
            pass  # another job moved it first
        shutil.rmtree(aside, ignore_errors=True)
    tmp = target.parent / f"{TMP}{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # the one slow start a user sees (a job silences the libraries' bars): say what it is
    print(f"Converting {gguf_path.name} to weights torch can train (once per model file; "
          "under a minute for a small model)…", file=sys.stderr, flush=True)
    try:
        try:
            with _one_reader(gguf_path):
                tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
                # GGUF-loaded models are marked quantized and refuse save_pretrained. Asking for a
                # dense model (dequantize=True) makes transformers drop that mark after loading, so
                # the model saves like any other. It also keeps the weights trainable on machines
                # where transformers would otherwise keep them packed in GGUF blocks.
                model = AutoModelForCausalLM.from_pretrained(
                    gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                    quantization_config=GgufConfig(dequantize=True),
                )
        except (ValueError, NotImplementedError, KeyError) as exc:  # an architecture it lacks
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise catalog.ModelFileError(
                f"{gguf_path.name}: transformers {transformers.__version__} cannot load this "
                f"'{arch}' GGUF for training ({reason})") from None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        _write_manifest(tmp, gguf_hash, arch)
        try:
            os.rename(tmp, target)
        except OSError:
            # a concurrent job's finished copy is as good as ours
            if check_cache(target, gguf_hash, arch) is not None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(gguf_path: str | os.PathLike):
    """The base's tokenizer with the panes' chat template and no BOS of its own."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_cached(gguf_path))
    tokenizer.chat_template = catalog.read_info(gguf_path).default_template().source
    tokenizer.add_bos_token = False  # the template writes it
    return tokenizer


def load_base(gguf_path: str | os.PathLike, dtype: torch.dtype = torch.float32,
              device: str | torch.device | None = None, reward_head: bool = False):
    """(model, tokenizer) for the GGUF the panes run.

    ``reward_head=True`` gives a sequence-classification model with one output (a reward
    model) on the same base weights; its head starts untrained.
    """
    path = ensure_cached(gguf_path)
    tokenizer = load_tokenizer(gguf_path)
    if reward_head:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        # Generation (GRPO's rollouts, evaluations) stops where the panes stop: at the
        # template's end-of-turn tokens as well as at EOS.
        stops = catalog.read_info(gguf_path).default_template().stop
        vocab = tokenizer.get_vocab()
        model.generation_config.eos_token_id = list(dict.fromkeys(
            [tokenizer.eos_token_id] + [vocab[s] for s in stops if s in vocab]))
    if device is not None:
        model.to(device)
    return model, tokenizer
