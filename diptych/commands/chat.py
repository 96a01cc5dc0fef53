"""``diptych chat``: ask the base and the tuned model one prompt, headless."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from diptych.errors import EXIT_STATUS
from diptych.models.limits import SEED_MAX, seed

from . import at_least, temperature


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="answer one prompt with the base and the tuned model")
    p.add_argument("--prompt", required=True)
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--max-tokens", type=at_least(1), default=128, help="at most this many "
                   "tokens in each answer (default: 128)")
    p.add_argument("--seed", type=seed, default=None,
                   help=f"same seed for both, 0 to {SEED_MAX} (default: random)")
    p.add_argument("--temperature", type=temperature, default=0.8,
                   help="0 or more; 0: always the likeliest token (default: 0.8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from diptych.models import adapters, catalog, templates
    from diptych.models.engine import Engine, EngineError, SamplingParams
    from diptych.models.errors import error_line

    model = args.model or catalog.bundled_model_path()
    try:
        # a folder without a GGUF LoRA (a reward model, any other folder) is refused,
        # never run as the plain base under the tuned model's name
        adapter = (adapters.runnable_gguf(adapters.resolve(args.adapter, args.data_dir))
                   if args.adapter else None)
        engines = {"base": Engine(model), "tuned": Engine(model, adapter=adapter)}
    except (catalog.ModelFileError, adapters.AdapterError, EngineError, FileNotFoundError) as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_STATUS
    context = engines["base"].n_ctx
    if args.max_tokens >= context:  # the answer cannot outgrow the context it is written in
        print(error_line(f"--max-tokens {args.max_tokens:,} is more than {Path(model).name} can "
                         f"write: its context holds {context:,} tokens, prompt included"),
              file=sys.stderr)
        return EXIT_STATUS
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": args.prompt})
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens,
                            seed=args.seed)
    with ThreadPoolExecutor(2) as pool:  # one thread per engine: both answer at once
        futures = {role: pool.submit(e.generate, messages, params) for role, e in engines.items()}
        try:
            results = {role: f.result() for role, f in futures.items()}
        except (EngineError, templates.TemplateRenderError) as exc:
            # a prompt longer than the context, a chat template refused: the model's problem
            # with this input, one line (the other engine's answer is not wanted any more)
            print(error_line(f"{Path(model).name}: {exc}"), file=sys.stderr)
            return EXIT_STATUS
    if args.json:
        out = {"prompt": args.prompt, "model": str(engines["base"].info.path),
               "template": engines["base"].template.name}
        for role, c in results.items():
            out[role] = {
                "label": engines[role].label,
                "adapter": str(engines[role].adapter_path) if engines[role].adapter_path else None,
                "text": c.text, "n_tokens": c.n_tokens, "n_prompt_tokens": c.n_prompt_tokens,
                "ttft_s": round(c.ttft_s, 4), "tokens_per_s": round(c.tokens_per_s, 2),
                "total_s": round(c.total_s, 4), "finish_reason": c.finish_reason, "seed": c.seed,
            }
        print(json.dumps(out, ensure_ascii=False))
    else:
        for role, c in results.items():
            print(f"=== {role}: {engines[role].label}")
            print(c.text.strip())
            print(f"--- {c.n_tokens} tokens, {c.tokens_per_s:.1f} tok/s, "
                  f"first token {c.ttft_s * 1000:.0f} ms, {c.finish_reason}\n")
    return 0
