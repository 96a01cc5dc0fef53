"""``diptych data``: look at, export and import the votes.

- ``diptych data stats [--json]``: vote counts, each adapter's win rate against the
  base and (for a version made with ``--from``) against its parent, Bradley-Terry ratings.
- ``diptych data export [--out FILE] [--include-ties]``: preference pairs as JSON lines
  (TRL's conversational format), to stdout unless ``--out``.
- ``diptych data export --format unpaired [--ties skip|desirable]``: every vote as
  labelled answers (TRL's unpaired format: ``prompt``, ``completion``, ``label``), as KTO
  trains on them.
- ``diptych data import FILE``: add the votes of a file in either format, all or none.
- ``diptych data queue SOURCE [--count N]``: queue a prompt set (a file, ``task:NAME``,
  ``history``, ``held-out``) and answer it with the base and ``--adapter``, for voting
  later in the app's Queue tab (``diptych.models.vote_queue``).

A bad file or a database from a newer Diptych is a one-line error and exit code 2,
with nothing changed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

from diptych.models.limits import SEED_MAX, seed

from . import at_least, temperature

USAGE_ERROR = 2


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="vote statistics, export and import")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    stats = commands.add_parser("stats", help="vote counts, win rates and ratings")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=lambda args: _run(args, _stats))

    export = commands.add_parser("export", help="write preference pairs as JSON lines")
    export.add_argument("--out", help="file to write (default: stdout)")
    export.add_argument("--include-ties", action="store_true",
                        help="also write ties and both-bad votes (not pairs)")
    export.add_argument("--format", choices=["pairs", "unpaired"], default="pairs",
                        help="pairs: prompt, chosen, rejected (DPO); unpaired: prompt, completion, "
                             "label, every vote as labelled answers (KTO)")
    export.add_argument("--ties", choices=["skip", "desirable"], default="skip",
                        help="unpaired: what a tie gives (default: nothing)")
    export.set_defaults(handler=lambda args: _run(args, _export))

    imp = commands.add_parser("import", help="add the votes of a JSON lines file")
    imp.add_argument("file", help="a file written by 'diptych data export' (either format)")
    imp.set_defaults(handler=lambda args: _run(args, _import))

    queue = commands.add_parser("queue", help="answer a prompt set with both contenders, to "
                                "vote on in the app's Queue tab")
    queue.add_argument("source", metavar="SOURCE",
                       help="a file (one prompt a line, or .jsonl with a 'prompt' on each "
                            "line), task:NAME, history (your chat prompts) or held-out")
    queue.add_argument("--count", type=at_least(1), default=20,
                       help="how many prompts to queue (default: 20)")
    queue.add_argument("--blind", action="store_true",
                       help="draw which side shows which contender for each prompt, and hide "
                            "the names in the app until the vote")
    queue.add_argument("--system", default="", help="system prompt")
    queue.add_argument("--max-tokens", type=at_least(1), default=256,
                       help="at most this many tokens in each answer (default: 256, the app's)")
    queue.add_argument("--temperature", type=temperature, default=0.8,
                       help="0 or more; 0: always the likeliest token (default: 0.8)")
    queue.add_argument("--seed", type=seed, default=None,
                       help=f"same seed for both, 0 to {SEED_MAX} (default: random)")
    queue.set_defaults(handler=lambda args: _run(args, _queue))


def _run(args, action) -> int:
    # Imported here: every subcommand module is loaded to build the parser, and
    # sqlite-utils pulls in pandas when it is installed.
    from diptych import paths
    from diptych.models.errors import error_line
    from diptych.training.preferences import ImportFormatError
    from diptych.training.store import Store, StoreVersionError

    try:
        with Store.open(args.data_dir) as store:
            return action(store, args)
    except BrokenPipeError:
        raise  # the reader of stdout went away: the CLI's entry ends quietly
    except (StoreVersionError, ImportFormatError, sqlite3.DatabaseError, OSError) as exc:
        where = ""
        if isinstance(exc, ImportFormatError):
            where = f"{args.file}: "
        elif isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, StoreVersionError):
            where = f"{paths.db_path(args.data_dir)}: "  # an error SQLite met after opening it
        print(error_line(f"{where}{exc}"), file=sys.stderr)
        return USAGE_ERROR


def _stats(store, args) -> int:
    from diptych.training.winrates import summary

    report = summary(store, parents=_parents(args.data_dir))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    counts = report["counts"]
    print(f"{counts['votes']} votes: {counts['left']} left, {counts['right']} right, "
          f"{counts['better']} better answers, {counts['tie']} ties, {counts['both_bad']} both bad")
    print(f"{counts['pairs']} preference pairs for training")
    _winrate_table("adapter vs base", "first vote", report["adapters"],
                   lambda row: row["first_vote_at"][:16])
    _winrate_table("version vs parent", "parent", report["versus_parent"],
                   lambda row: row["parent"])
    if report["ratings"]:
        print("\nrating (Elo scale, base = 0)   95% CI          games")
        for row in report["ratings"]:
            print(f"{row['model']:<22} {row['rating']:>+7.0f}  "
                  f"[{row['low']:+.0f}, {row['high']:+.0f}]{'':<6} {row['games']:>5}")
    return 0


def _winrate_table(title: str, last: str, rows: list[dict], last_value) -> None:
    if not rows:
        return
    print(f"\n{title:<22} wins losses ties  win rate (95% CI)      {last}")
    for row in rows:
        rate = ("-" if row["win_rate"] is None else
                f"{row['win_rate']:.0%} ({row['low']:.0%}-{row['high']:.0%})")
        print(f"{row['adapter']:<22} {row['wins']:>4} {row['losses']:>6} {row['ties']:>4}  "
              f"{rate:<22} {last_value(row)}")


def _parents(data_dir) -> dict[str, str]:
    """Which adapter each version continues (none where the adapters folder cannot be made:
    a read-only data folder without one has no adapters)."""
    from diptych.models import adapters
    from diptych.training.lineage import parents

    try:
        return parents(adapters.list_adapters(data_dir))
    except OSError:
        return {}


def _export(store, args) -> int:
    from diptych.training import unpaired
    from diptych.training.preferences import export_jsonl

    if args.format == "unpaired":
        count = unpaired.export_jsonl(store, args.out or sys.stdout, ties=args.ties)
    else:
        count = export_jsonl(store, args.out or sys.stdout, include_ties=args.include_ties)
    print(f"exported {count} records" + (f" to {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def _import(store, args) -> int:
    from diptych.training import unpaired
    from diptych.training.preferences import import_jsonl

    read = unpaired.import_jsonl if unpaired.is_unpaired_file(args.file) else import_jsonl
    count = read(store, args.file)
    print(f"imported {count} records from {args.file}", file=sys.stderr)
    return 0


def _queue(store, args) -> int:
    from diptych.models import adapters, catalog
    from diptych.models.engine import SamplingParams
    from diptych.models.errors import UserError, one_line
    from diptych.models.session import Contender, Session, SessionError
    from diptych.models.vote_queue import VoteQueue
    from diptych.training import prompt_sets

    # Everything that can be refused is, before anything is queued.
    found = prompt_sets.load(args.source, args.count, store)
    model = args.model or catalog.bundled_model_path()
    adapter = (adapters.runnable_gguf(adapters.resolve(args.adapter, args.data_dir))
               if args.adapter else None)
    session = Session(store)
    cancel = threading.Event()
    try:
        session.settings.system_prompt = args.system
        session.settings.params = SamplingParams(temperature=args.temperature,
                                                 max_tokens=args.max_tokens, seed=args.seed)
        session.set_blind(args.blind)
        session.load(model, {"right": Contender.of(adapter)} if adapter else None)
        context = session.engines["left"].n_ctx
        if args.max_tokens >= context:
            raise SessionError(f"--max-tokens {args.max_tokens:,} is more than {Path(model).name} "
                               f"can write: its context holds {context:,} tokens, prompt included")
        queue_id = prompt_sets.enqueue(store, found)
        queue = VoteQueue(session, store.queue(queue_id), store.queue_items(queue_id))
        answered = 0
        for item in queue.items:
            started = time.perf_counter()
            try:
                queue.answer_later(item, cancel).result()
                answered += 1
                print(f"answered {item.position + 1} of {len(queue.items)} "
                      f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
            except UserError as exc:  # this prompt only (too long for the context, …)
                print(f"prompt {item.position + 1}: not answered: {one_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        cancel.set()  # what is answered stays; the app answers the rest
        raise
    finally:
        session.close()
    print(f"queued {len(queue.items)} prompts of {found.title}, {answered} pairs answered: "
          "vote on them in the app's Queue tab", file=sys.stderr)
    return 0
