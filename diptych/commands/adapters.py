"""``diptych adapters``: the LoRA adapters training made.

- ``list [--json]``: newest first, with kind, age and the key before/after metric.
- ``export-gguf DIR [--out FILE]``: turn any PEFT LoRA folder into a GGUF LoRA for the
  base model (top-level ``--model``, default the bundled one); default ``DIR/adapter.gguf``.
- ``drift NAME [--max-tokens N] [--json]``: measure the adapter's mean per-token KL from
  the base on the held-out prompts and the user's recent prompts, and store it in its
  meta.json (see ``diptych.models.drift``).
- ``rename OLD NEW`` and ``delete NAME``.

Bad input is a one-line error and exit code 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from . import at_least

USAGE_ERROR = 2


def register(subparsers) -> None:
    parser = subparsers.add_parser("adapters", help="list, export, rename or delete LoRA adapters")
    commands = parser.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="the registered adapters, newest first")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=lambda args: _run(args, _list))

    export = commands.add_parser("export-gguf", help="write a PEFT LoRA folder as a GGUF LoRA")
    export.add_argument("dir", help="a folder with adapter_config.json and adapter_model.safetensors")
    export.add_argument("--out", help="the GGUF file to write (default: DIR/adapter.gguf)")
    export.set_defaults(handler=lambda args: _run(args, _export))

    drift = commands.add_parser("drift", help="measure and store an adapter's KL from the base")
    drift.add_argument("name", help="a registered adapter, or an adapter folder")
    drift.add_argument("--max-tokens", type=at_least(1), default=None,
                       help="tokens each sampled answer may have (default: 48)")
    drift.add_argument("--json", action="store_true", help="print the results as JSON")
    drift.set_defaults(handler=lambda args: _run(args, _drift))

    rename = commands.add_parser("rename", help="give an adapter a new name")
    rename.add_argument("old")
    rename.add_argument("new")
    rename.set_defaults(handler=lambda args: _run(args, _rename))

    delete = commands.add_parser("delete", help="remove an adapter and its files")
    delete.add_argument("name")
    delete.set_defaults(handler=lambda args: _run(args, _delete))


def _run(args, action) -> int:
    from diptych.models.adapters import AdapterError
    from diptych.models.errors import error_line

    try:
        return action(args)
    except BrokenPipeError:
        raise  # the reader of stdout went away: the CLI's entry ends quietly
    except (AdapterError, ValueError, OSError) as exc:  # ExportError is a ValueError
        print(error_line(exc), file=sys.stderr)
        return USAGE_ERROR


def _list(args) -> int:
    from diptych.models import adapters

    found = adapters.list_adapters(args.data_dir)
    if args.json:
        from diptych.training.lineage import lineage

        rows = [{**asdict(a), "path": str(a.path), "gguf_path": a.gguf_path and str(a.gguf_path),
                 "key_metric": adapters.key_metric(a), "lineage": lineage(a, args.data_dir)}
                for a in found]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("no adapters yet: train one with 'diptych train dpo --name NAME'")
    from diptych.training.lineage import lineage

    for a in found:
        damaged = f"  (damaged: {a.problem})" if a.problem else ""
        chain = lineage(a, args.data_dir)  # the adapters it continues: v1 -> v2 -> v3
        continues = f"  (from {' -> '.join(chain[:-1])})" if len(chain) > 1 else ""
        print(f"{a.name:24} {a.kind:7} {a.created_at[:16].replace('T', ' ')}  "
              f"{adapters.key_metric(a)}{continues}{damaged}")
    return 0


def _export(args) -> int:
    from pathlib import Path

    from diptych.models.catalog import bundled_model_path
    from diptych.training.export_gguf import export

    out = Path(args.out) if args.out else Path(args.dir) / "adapter.gguf"
    written = export(args.dir, out, args.model or bundled_model_path())
    print(written)
    return 0


def _drift(args) -> int:
    from diptych.models import adapters, catalog, drift
    from diptych.models.engine import EngineError
    from diptych.training.store import Store, StoreVersionError

    info = adapters.resolve(args.name, args.data_dir)
    gguf = adapters.runnable_gguf(info)  # a reward model does not generate: no drift
    adapters.check_meta_writable(info)  # before the measurement, not after it
    try:
        with Store.open(args.data_dir) as store:
            recent = store.recent_prompts(drift.RECENT)
    except StoreVersionError as exc:
        raise ValueError(str(exc)) from exc

    def progress(name, done, total):
        print(f"\r{drift.SETS[name]}: {done}/{total}", end="\n" if done == total else "",
              file=sys.stderr, flush=True)

    try:
        results = drift.measure_adapter(args.model or catalog.bundled_model_path(), gguf,
                                        recent, max_tokens=args.max_tokens or drift.MAX_TOKENS,
                                        progress=progress)
    except EngineError as exc:
        raise ValueError(str(exc)) from exc
    stored = {name: d.to_dict() for name, d in results.items()}
    if info.path.is_dir():
        adapters.record_drift(info, stored)
    if args.json:
        print(json.dumps({"adapter": info.name, "drift": stored}, indent=2))
        return 0
    for name, d in results.items():
        print(f"{info.name}: KL from the base {d.kl:.4f} nats/token on {drift.SETS[name]} "
              f"({d.prompts} prompts, {d.tokens} tokens, {d.seconds:.1f} s)")
    if not info.path.is_dir():
        print("(a bare GGUF file: the result was not stored)")
    return 0


def _rename(args) -> int:
    from diptych.models import adapters

    info = adapters.rename(args.old, args.new, args.data_dir)
    print(f"renamed {args.old} -> {info.name}")
    return 0


def _delete(args) -> int:
    from diptych.models import adapters

    kept = adapters.delete(args.name, args.data_dir)
    print(f"deleted {args.name}" + (f" (a link: the folder it named, {kept}, was left)"
                                    if kept else ""))
    return 0
