"""One training job of any kind: progress lines, clean cancellation, an adapter that appears whole.

``diptych train KIND`` runs here; each kind's module (``dpo.py``, ``kto.py``, ``sft.py``,
``reward.py``, ``grpo.py``, ``skill.py``; see ``kinds.py``) only says how to train. The runner:

1. refuses a name already taken, and removes the folders killed jobs left behind;
2. lets the trainer write its PEFT adapter into ``adapters/.partial-<name>-<pid>/``;
3. adds the GGUF LoRA (for a kind whose ``Kind.writes_gguf`` says so; not a reward model:
   llama.cpp does not run it) and meta.json;
4. renames the folder to ``adapters/<name>/``. A rename is atomic, so a job killed at
   any moment, even by SIGKILL, leaves no half-written adapter registered.

With ``--progress jsonl`` stdout carries only JSON lines, one per event, all with the
keys ``phase, step, total, loss, reward, kl, eta_s`` (null when unknown); everything the
libraries print goes to stderr. Without it a job prints on stderr the lines a person
reads (``progress.human``: "step 3/10  loss 0.52  …  ETA 1 min 05 s", and the evaluation
at the end), the Train tab's log lines; the libraries' bars, metric dicts and
deprecation warnings are silenced in both. Phases, in order:

- ``load`` (with ``processes``);
- ``prepare``: the weights are in; the trainer tokenizes (DPO: and computes the base's
  log-probs of every pair);
- ``eval_before``: the held-out measurement of the base;
- ``train``: once per step (GRPO's with ``reward_std`` and ``sampler``; skill's with
  ``stage``); among them GRPO's and skill's ``eval`` (the held-out prompts' greedy answers:
  ``reward``, ``kl``, ``samples``, ``ended``, ``full``, ``n``; step 0 is the base) and
  skill's ``stage`` (``stage: "grpo"``: the warm-up is over);
- ``eval_after``: the held-out measurement of the adapter;
- ``save``: the PEFT adapter is written, and the GGUF LoRA exported;
- ``drift``: once per prompt, with ``set``: the adapter's KL from the base measured
  through llama.cpp, as the app runs it (not for a reward model, nor with ``--no-drift``);
- then ``done`` (with ``adapter``, ``path``, ``metrics``, ``drift``, ``data``, ``parent``),
  ``cancelled``, or ``error`` (with ``error``).

A dry run (``grpo`` or ``skill`` ``--dry-run``, ``reinforce.dry_run``) writes a ``sample``
line per scored answer, then ``done`` (with ``dry_run: true``), or ``error``. SIGINT and SIGTERM stop the job at once:
the partial folder is removed, the last line is ``{"phase": "cancelled", ...}`` and the
exit code is 128 + the signal number.

The job trains on CUDA when torch sees a GPU (bf16 autocast where supported), else on
the CPU. Under ``accelerate launch`` every process trains and only the main one reports
and writes files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from diptych import paths
from diptych.models import adapters, catalog
from diptych.models.errors import EXIT_STATUS, UserError, error_line, one_line

from . import parent
from .errors import JobError
from .progress import KEYS, human, summary
from .progress import line as progress_line

PARTIAL = ".partial-"


@dataclass
class JobConfig:
    """Settings every job takes; each trainer's Config adds its own."""

    name: str = ""
    model: str | None = None  # the base GGUF; None: the bundled model
    data_dir: str | None = None
    steps: int | None = None  # optimizer steps; None: train for `epochs`
    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 4
    lora_r: int = 16
    lora_alpha: int | None = None  # None: 2 x lora_r
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # every linear layer but the (tied) output layer
    # Tokens of prompt + answer (GRPO has max_completion_length). The panes answer with up to
    # 256 tokens: cut at 128, a default round on 13 such votes takes minutes, not ten
    # (bench/round_bench.py); a cut answer is trained as unfinished (turns.py).
    max_length: int = 128
    eval_size: int | None = None  # held-out examples for the before/after evaluation
    seed: int = 0
    drift: bool = True  # measure the KL from the base on prompt sets (diptych.models.drift)
    progress: str | None = None  # "jsonl": machine-readable progress on stdout
    from_adapter: str | None = None  # start from this adapter's LoRA (training.parent)
    new_votes: bool = False  # with from_adapter: only the votes cast since it was made


class Cancelled(BaseException):
    """SIGINT or SIGTERM. A BaseException, so no library's `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"  # set per process by `accelerate launch`


class Progress:
    """Reports events: JSON lines on the real stdout, or short human lines on stderr."""

    KEYS = KEYS

    def __init__(self, jsonl: bool):
        self.out = None
        if jsonl:  # under accelerate every rank shares stdout: only rank 0 writes lines there
            if is_main_process():
                self.out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
            os.dup2(2, 1)  # whatever libraries print, in Python or C, lands on stderr
            sys.stdout = sys.stderr

    def __call__(self, phase: str, **values) -> None:
        if not is_main_process():
            return
        if self.out is not None:
            self.out.write(progress_line(phase, **values) + "\n")
            return
        if phase == "error":
            print(error_line(values["error"]), file=sys.stderr, flush=True)
            return
        from diptych.models.drift import SETS

        event = {"phase": phase, **values}
        lines = [human(event, SETS)]
        if phase == "done" and values.get("metrics"):
            lines += summary(values["metrics"], values.get("drift") or {},
                                      values.get("data") or {}, SETS)
        for text in filter(None, lines):
            print(text, file=sys.stderr, flush=True)


def _report_callback(progress: Progress, extra: dict, once: dict, span: dict):
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        """One ``train`` progress line per logged step, with an ETA from the pace so far
        (and ``extra``: what the trainer wants every line to say, such as GRPO's sampler;
        ``once``: what only the next line says, such as a KL measured at this step;
        ``span``: for a job of several phases, the steps before this trainer's and the
        job's total, so the steps count on across phases)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            progress("train", step=span["offset"], total=span["total"] or state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:  # the end-of-training summary
                return
            left = state.max_steps - state.global_step + span["after"]
            step, total = state.global_step + span["offset"], span["total"] or state.max_steps
            pace = (time.monotonic() - self.started) / max(state.global_step, 1)
            # GRPO logs the mean reward, its spread within groups and the KL to the base;
            # DPO its implicit reward margin.
            reward = logs.get("reward", logs.get("rewards/margins"))
            # and why a GRPO step may teach nothing: groups whose answers all scored the
            # same (no advantage), the size of the update, answers cut at the length limit
            grpo = {key: logs[name] for key, name in GRPO_LOGS.items() if name in logs}
            now = dict(once)
            once.clear()
            kl = logs.get("kl", now.pop("kl", None))
            progress("train", step=step, total=total, loss=logs["loss"], reward=reward,
                     kl=kl, eta_s=round(pace * left, 1), **grpo, **extra, **now)

    return Report()


GRPO_LOGS = {"reward_std": "reward_std", "zero_std": "frac_reward_zero_std",
             "grad_norm": "grad_norm", "cut": "completions/clipped_ratio"}


class Job:
    """What a trainer needs from the runner: base model, output folder, shared settings."""

    def __init__(self, kind: str, cfg: JobConfig, progress: Progress, out_dir: Path,
                 writes_gguf: bool = True):
        import torch

        from . import answer_positions

        answer_positions.apply()  # a CPU projects only the answer positions through the LM head
        self.kind, self.cfg, self.progress, self.out_dir = kind, cfg, progress, out_dir
        self.base = Path(cfg.model).expanduser() if cfg.model else catalog.bundled_model_path()
        self.main = is_main_process()
        self.cuda = torch.cuda.is_available()
        # this process's accelerator: one GPU per process under `accelerate launch`
        self.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if self.cuda else "cpu"
        self.report: dict = {}  # extra keys for every ``train`` line
        self.report_once: dict = {}  # extra keys for the next ``train`` line only
        # a job of several phases (skill.py) numbers the steps across them: the steps of
        # the phases before this one, the steps after it (for the ETA), the job's total
        self.span = {"offset": 0, "after": 0, "total": None}
        self.callbacks = [_report_callback(progress, self.report, self.report_once, self.span)]
        self.parent = None  # the adapter this job continues (--from), once checked
        self.writes_gguf = writes_gguf  # a GGUF LoRA for llama.cpp, or (a scorer) not: Kind.writes_gguf

    def load_base(self, reward_head: bool = False):
        """The base's weights and tokenizer (``base_weights.load_base``); then a ``prepare``
        line: what follows until the evaluation (tokenizing, DPO's reference log-probs) is
        the data's, not the weights'."""
        from .base_weights import load_base

        loaded = load_base(self.base, reward_head=reward_head)
        self.progress("prepare")
        return loaded

    def track_kl(self, trainer, measure: Callable[[], float], every: int) -> None:
        """Report ``measure()`` (the KL from the base on held-out answers) as the ``kl`` of
        the train line of every ``every``-th step: for kinds whose trainer logs no KL. It
        runs in bf16 autocast when training does (it is a cost the steps pay)."""
        import torch
        from transformers import TrainerCallback

        once = self.report_once
        autocast = torch.autocast("cuda" if self.cuda else "cpu", dtype=torch.bfloat16,
                                  enabled=bool(trainer.args.bf16))

        class LiveKL(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % every == 0 or state.global_step in (1, state.max_steps):
                    with autocast:
                        once["kl"] = measure()

        trainer.add_callback(LiveKL())

    def training_args(self, config_class, cpu_bf16: bool = False, **extra):
        """A TRL config (DPOConfig, RewardConfig, GRPOConfig) with the settings all jobs share.

        bf16 autocast runs on a GPU that supports it and, with ``cpu_bf16``, on a CPU with
        bf16 instructions; the weights and the LoRA stay fp32."""
        import torch

        cfg = self.cfg
        bf16 = torch.cuda.is_bf16_supported() if self.cuda else cpu_bf16 and cpu_has_bf16()
        settings = dict(
            output_dir=str(self.out_dir / "trainer"), save_strategy="no", report_to="none",
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
            max_steps=cfg.steps or -1, num_train_epochs=cfg.epochs,
            logging_steps=1, disable_tqdm=True, seed=cfg.seed,  # the progress lines say it
            use_cpu=not self.cuda, bf16=bf16,
            gradient_checkpointing=False,  # short sequences of a small model: speed over memory
        )
        return config_class(**(settings | extra))  # extra may override (a job's second phase)

    def lora(self, task_type: str):
        from peft import LoraConfig

        cfg = self.cfg
        return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
                          lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_targets,
                          task_type=task_type)

    def fit(self, trainer, measure: Callable[[], dict]) -> dict:
        """Measure, train, measure again, save the adapter: the metrics for meta.json.
        With ``--from`` the LoRA TRL built starts as the parent's."""
        if self.parent is not None:
            model = trainer.accelerator.unwrap_model(trainer.model)
            parent.check_shape(self.parent, model.peft_config["default"])
            parent.load_into(model, self.parent)
        self.progress("eval_before")
        before = measure()
        trained = self.train(trainer)
        self.progress("eval_after")
        after = measure()
        if self.main:  # the PEFT adapter alone: no copy of the tokenizer
            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(self.out_dir)
        return {"before": before, "after": after, "train": trained}

    def train(self, trainer) -> dict:
        """Run ``trainer``; its loss, steps and time. The job's progress lines are its only
        report: the Trainer's own printer of metric dicts (or progress bar) is taken out."""
        from transformers import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        started = time.monotonic()
        result = trainer.train()
        seconds = round(time.monotonic() - started, 1)
        return {"loss": result.training_loss, "steps": result.global_step, "seconds": seconds,
                "s_per_step": round(seconds / max(result.global_step, 1), 2)}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX): then autocast to bf16
    runs a LoRA forward and backward of the bundled model faster than fp32 (bench/RESULTS.md);
    without them bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def sha256_of(records) -> str:
    """A stable hash of the training data as used (JSON with sorted keys)."""
    blob = json.dumps(records, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def split_eval(items: list, eval_size: int | None, seed: int) -> tuple[list, list, bool]:
    """(train, held out, held_out?): a fifth held out (at least one) once there are 5 items;
    with fewer, the evaluation uses the training items and says so."""
    import random

    items = list(items)
    random.Random(seed).shuffle(items)
    n_eval = eval_size if eval_size is not None else max(1, round(len(items) / 5))
    if len(items) < 5 or n_eval >= len(items):
        return items, items[: n_eval or len(items)], False
    return items[n_eval:], items[:n_eval], True


def several_epochs(cfg, n_train: int) -> bool:
    """Whether training sees each pair more than once: then the base's log-probs of every
    pair are computed once before training (TRL's precompute_ref_log_probs) instead of
    again at every pass."""
    passes = cfg.epochs if cfg.steps is None else cfg.steps * cfg.batch_size / max(n_train, 1)
    return passes > 1


def planned_steps(examples: int, batch_size: int, steps: int | None, epochs: float) -> int:
    """The optimizer steps of a trainer over ``examples`` before it starts: ``steps``, or
    ``epochs`` passes of batches, counted as transformers' Trainer counts them."""
    import math

    return steps if steps and steps > 0 else math.ceil(epochs * -(-examples // batch_size))


def kl_every(trainer) -> int:
    """Steps between live KL measurements: about 5 per job, as each costs two forward
    passes (tuned and base) of a held-out answer, a tenth of a step."""
    args = trainer.args
    steps = planned_steps(len(trainer.train_dataset), args.per_device_train_batch_size,
                          args.max_steps, args.num_train_epochs)
    return max(2, -(-steps // 5))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _partial_pid(path: Path) -> int | None:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def clean_stale(root: Path) -> list[Path]:
    """Remove the temporary folders of jobs (or deletions) whose process is gone."""
    removed = []
    for path in root.iterdir():
        if path.name.startswith((PARTIAL, ".deleted-")):
            pid = _partial_pid(path)
            if pid is None or not _alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _check_free(root: Path, name: str) -> None:
    adapters.check_name(name)
    if (root / name).exists():
        raise JobError(f"an adapter named {name!r} already exists: choose another --name, "
                       f"or remove it with 'diptych adapters delete {name}'")
    for path in root.glob(f"{PARTIAL}{name}-*"):
        pid = _partial_pid(path)
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise JobError(f"a job named {name!r} is already running (pid {pid})")


@contextmanager
def _cancellable():
    """SIGINT/SIGTERM raise Cancelled inside the block until the yielded ``disarm()`` is called:
    from then on the job completes, so a late signal cannot leave it half-registered."""
    armed = [True]

    def stop(signum, frame):
        if armed[0]:
            raise Cancelled(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: armed.clear()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("diptych", "torch", "transformers", "trl", "peft")}


def _meta(job: Job, result: dict, started: float) -> dict:
    base = catalog.read_info(job.base)
    return {
        "name": job.cfg.name,
        "kind": job.kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "config": asdict(job.cfg),
        "data": result.get("data", {}),
        "metrics": result.get("metrics", {}),
        "drift": result.get("drift", {}),
        "base": {"name": base.name, "path": str(base.path), "sha256": catalog.file_hash(base.path)},
        "gguf": adapters.GGUF_NAME if job.writes_gguf else None,
        "parent": parent.record(job.parent) if job.parent is not None else None,
        "versions": _versions(),
    }


def _measure_drift(job: Job) -> dict:
    """The new adapter's KL from the base on the held-out prompts and the user's recent ones."""
    import gc

    from diptych.models import drift

    from .store import Store, StoreVersionError

    gc.collect()  # the trainer and its model sit in reference cycles: free them before llama.cpp loads
    recent = []
    if paths.db_path(job.cfg.data_dir).is_file():
        try:
            with Store.open(job.cfg.data_dir) as store:
                recent = store.recent_prompts(drift.RECENT)
        except StoreVersionError as exc:
            print(f"drift on recent prompts skipped: {exc}", file=sys.stderr)
    results = drift.measure_adapter(
        job.base, job.out_dir / adapters.GGUF_NAME, recent,
        progress=lambda name, done, total: job.progress("drift", step=done, total=total, set=name))
    return {name: d.to_dict() for name, d in results.items()}


def _no_space(exc: BaseException, root: Path) -> str | None:
    """One line for a write that failed because the disk is full; None for other errors.

    Libraries say it their own way: an OSError with ENOSPC, safetensors' "No space left
    on device (os error 28)", numpy's "10240 requested and 3880 written" (no errno).
    """
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    full = any(getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
               or os.strerror(errno.ENOSPC) in str(e) for e in chain)
    short = any(re.search(r"\d+ requested and \d+ written", str(e)) for e in chain)
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = None
    if not (full or (short and free is not None and free < 2**20)):
        return None
    left = f" ({free / 2**20:.1f} MiB free)" if free is not None else ""
    return (f"no space left on the disk of {root}{left} while the job wrote its files; "
            "nothing was kept: free some space and run the job again")


MAX_STEPS = 1_000_000  # at a second a step on the smallest model, eleven days
MAX_EPOCHS = 10_000


def check_limits(cfg: JobConfig, base: Path) -> None:
    """JobError for a setting its flag's type takes but the model or the machine cannot
    honour: more tokens than the model's context, a LoRA rank above the model's width, a
    job that would not end."""
    info = catalog.read_info(base)
    fields, _ = catalog.read_header_fields(base)
    width = fields.get(f"{info.architecture}.embedding_length")
    if cfg.steps is not None and cfg.steps > MAX_STEPS:
        raise JobError(f"--steps {cfg.steps:,} is more than {MAX_STEPS:,}: the job would not end")
    if cfg.steps is None and cfg.epochs > MAX_EPOCHS:
        raise JobError(f"--epochs {cfg.epochs:g} is more than {MAX_EPOCHS:,}: the job would not end")
    if isinstance(width, int) and cfg.lora_r > width:
        raise JobError(f"--lora-r {cfg.lora_r:,} is more than {info.path.name}'s width "
                       f"({width:,}): a LoRA's rank cannot exceed the sides of its layers")
    for field, flag in (("max_length", "--max-length"),
                        ("max_completion_length", "--max-completion-length")):
        value = getattr(cfg, field, None)
        if info.context_length and value is not None and value > info.context_length:
            raise JobError(f"{flag} {value:,} is more than {info.path.name}'s context of "
                           f"{info.context_length:,} tokens")


def _unwritable(exc: BaseException) -> str | None:
    """One line for a file the job could not write for want of permission (a read-only
    data folder); None for other errors."""
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.filename}: {exc.strerror}: the job cannot write its files there"
    return None


def quiet_libraries() -> None:
    """The libraries' progress bars, info logs and deprecation warnings tell the user of a
    job nothing its progress lines do not; their errors still reach stderr."""
    import warnings

    # tqdm reads it once, when it is imported: before datasets and transformers import it
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GRPO's rollout_func is on purpose
    import datasets
    from transformers.utils import logging as transformers_logging

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def run(kind: str, cfg: JobConfig, train: Callable[[Job], dict], writes_gguf: bool) -> int:
    """Run ``train(job)`` as a job and register its adapter; returns the exit code.

    ``train`` builds a TRL trainer, runs it through ``job.fit`` (which writes the PEFT
    adapter into ``job.out_dir``) and returns ``{"data": {...}, "metrics": job.fit(...)}``.
    ``writes_gguf`` (the kind's ``Kind.writes_gguf``) adds the GGUF LoRA and the drift.
    """
    progress = Progress(cfg.progress == "jsonl")
    quiet_libraries()
    started = time.monotonic()
    out_dir = root = None
    try:
        with _cancellable() as disarm:
            root = paths.adapters_dir(cfg.data_dir)
            if is_main_process():  # the others would see rank 0's folder as a running job
                _check_free(root, cfg.name)
                clean_stale(root)
            out_dir = root / f"{PARTIAL}{cfg.name}-{os.getpid()}"
            job = Job(kind, cfg, progress, out_dir, writes_gguf)
            if not job.base.is_file():
                raise JobError(f"{job.base}: no such model file")
            check_limits(cfg, job.base)
            if cfg.from_adapter:
                job.parent = parent.resolve(cfg.from_adapter, cfg.data_dir, job.base, job.writes_gguf)
                # the rank now, not once the data is tokenized and the model loaded
                parent.check_shape(job.parent, job.lora(parent.TASK_TYPES[job.writes_gguf]))
            if job.main:
                out_dir.mkdir()
            progress("load", processes=int(os.environ.get("WORLD_SIZE", "1")))
            result = train(job)
            if not job.main:
                return 0
            progress("save")
            shutil.rmtree(out_dir / "trainer", ignore_errors=True)
            if job.writes_gguf:
                from .export_gguf import export

                export(out_dir, out_dir / adapters.GGUF_NAME, job.base)
                if cfg.drift:
                    result["drift"] = _measure_drift(job)
            meta = _meta(job, result, started)
            (out_dir / adapters.META_NAME).write_text(
                json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
            disarm()
            target = root / cfg.name
            if target.exists():
                raise JobError(f"an adapter named {cfg.name!r} appeared while this job ran; "
                               "this job's adapter was not kept")
            os.rename(out_dir, target)
            progress("done", adapter=cfg.name, path=str(target), metrics=meta["metrics"],
                     drift=meta["drift"], data=meta["data"], parent=meta["parent"])
            return 0
    except Cancelled as exc:
        progress("cancelled")
        return 128 + exc.signum
    except Exception as exc:
        full = _no_space(exc, root) if root is not None else None
        if isinstance(exc, UserError) or full or (problem := _unwritable(exc)):
            progress("error", error=full or (one_line(exc) if isinstance(exc, UserError)
                                             else problem))
            return EXIT_STATUS
        traceback.print_exc(file=sys.stderr)  # a crash: the details on stderr, one line for the app
        progress("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if out_dir is not None:  # still there unless renamed into place
            shutil.rmtree(out_dir, ignore_errors=True)
