"""``diptych score``: where, and how far, the tuned model moved on one answer, token by token."""

from __future__ import annotations

import argparse
import json
import sys

from diptych.errors import EXIT_STATUS

from . import from_to

MAX_TOP = 100  # a person reads a handful; a million per token is megabytes of JSON


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="per-token log p_tuned - log p_base of an answer to a prompt")
    # SUPPRESS: leave a top-level ``diptych --adapter X score`` in place when not given here.
    p.add_argument("--adapter", default=argparse.SUPPRESS,
                   help="the tuned model's LoRA: a registered name, a folder or a .gguf file")
    p.add_argument("--prompt", required=True)
    p.add_argument("--response", required=True, help="the answer to score")
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--top", type=from_to(0, MAX_TOP), default=5,
                   help=f"alternatives per token in --json (at most {MAX_TOP})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args) -> int:
    from diptych.models import adapters, catalog, scoring, templates
    from diptych.models.engine import Engine, EngineError
    from diptych.models.errors import error_line

    def fail(message) -> int:
        print(error_line(message), file=sys.stderr)
        return EXIT_STATUS

    if not args.adapter:
        return fail("--adapter is required: the tuned model to compare with the base")
    if not args.response:
        return fail("--response is empty: there is nothing to score")
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.prompt})
    try:
        adapter = adapters.resolve(args.adapter, args.data_dir)
        gguf = adapters.runnable_gguf(adapter)
        model = args.model or catalog.bundled_model_path()
        base = Engine(model)
        tuned = Engine(model, adapter=gguf)
        result = scoring.compare(base, tuned, messages, args.response, top_k=args.top)
    except (catalog.ModelFileError, EngineError, templates.TemplateRenderError,
            FileNotFoundError, ValueError) as exc:  # AdapterError is a ModelFileError
        return fail(exc)

    if args.json:
        out = {"prompt": args.prompt, "system": args.system, "response": args.response,
               "model": str(base.info.path), "adapter": str(adapter.gguf_path),
               **result.to_dict()}
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(f"base:  {result.base_label}\ntuned: {result.tuned_label}\n")
    print(f"{'#':>4}  {'token':<20} {'logp_base':>10} {'logp_tuned':>10} {'log_ratio':>10}")
    for i, t in enumerate(result.tokens):
        print(f"{i:>4}  {json.dumps(t.text, ensure_ascii=False)[:20]:<20} "
              f"{t.logp_base:>10.4f} {t.logp_tuned:>10.4f} {t.log_ratio:>+10.4f}")
    s = result.summary
    print(f"\n{s.n_tokens} tokens; log ratio: mean {s.mean_log_ratio:+.4f}, "
          f"sum {s.sum_log_ratio:+.4f}; largest |ratio| {s.max_log_ratio:+.4f} "
          f"at #{s.max_index} {json.dumps(s.max_text, ensure_ascii=False)}")
    print("(an answer given as text is not a sample from the tuned model: "
          "the mean is an average log-ratio, not a KL estimate)")
    return 0
