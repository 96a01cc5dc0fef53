"""How long scoring a 200-token answer takes, against generating it and a token-by-token loop.

1. generate: the engine samples a 200-token answer (fixed seed, ``max_tokens=200``, no
   stop strings; a seed whose answer does not end early is picked first, untimed).
2. score one: ``scoring.score`` of that answer under one engine.
3. score both: ``scoring.compare`` under two engines in parallel threads, as the app does
   (the tuned one with ``--adapter`` if given, else a second engine on the same base).
4. token loop: the reference way to score: evaluate the prompt, then the answer one token
   at a time, reading and normalising the logits after each.

Engines use the app's thread count (cores / 2 each) unless ``--threads`` says otherwise.
Run: ``python bench/scoring_bench.py [--rounds 3] [--adapter FILE.gguf] [--threads N]``;
prints medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

from diptych.models import scoring
from diptych.models.catalog import bundled_model_path
from diptych.models.engine import Engine, SamplingParams, log_softmax

PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
N_TOKENS = 200


def answer_200(engine: Engine) -> tuple[SamplingParams, float]:
    """Parameters whose answer runs the full 200 tokens, and the generation time."""
    for seed in range(100):
        params = SamplingParams(max_tokens=N_TOKENS, seed=seed, stop=())
        done = engine.generate(PROMPT, params)
        if done.n_tokens == N_TOKENS:
            return params, done
    raise SystemExit("no seed in 0..99 gave a 200-token answer")


def token_loop(engine: Engine, ids: list[int]) -> list[float]:
    """Score ``ids`` the slow way: one decode per token, logits read at every step."""
    engine.clear()
    engine.eval(engine.tokenize(engine.render(PROMPT)))
    logprobs = []
    for token in ids:
        logprobs.append(float(log_softmax(engine.logits(-1))[token]))
        engine.eval([token])
    engine.clear()
    return logprobs


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--adapter", help="a GGUF LoRA for the tuned engine")
    parser.add_argument("--threads", type=int, default=None, help="threads per engine")
    args = parser.parse_args()

    model = bundled_model_path()
    base = Engine(model, n_ctx=1024, n_threads=args.threads)
    tuned = Engine(model, n_ctx=1024, n_threads=args.threads, adapter=args.adapter)
    params, first = answer_200(base)
    ids = scoring.answer_ids(first)

    times = {"generate": [], "score one": [], "score both": [], "token loop": []}
    for _ in range(args.rounds):
        times["generate"].append(timed(lambda: base.generate(PROMPT, params)))
        times["score one"].append(timed(lambda: scoring.score(base, PROMPT, ids)))
        times["score both"].append(timed(lambda: scoring.compare(base, tuned, PROMPT, ids)))
        times["token loop"].append(timed(lambda: token_loop(base, ids)))
    median = {k: statistics.median(v) for k, v in times.items()}

    print(f"{N_TOKENS}-token answer (seed {params.seed}), prompt {first.n_prompt_tokens} tokens, "
          f"{base.n_threads} thread(s) per engine, tuned: {tuned.label}, "
          f"median of {args.rounds}")
    for name, seconds in median.items():
        print(f"  {name:11s} {seconds:7.3f} s  {N_TOKENS / seconds:7.1f} tokens/s")
    print(f"  generation / score one:   {median['generate'] / median['score one']:.1f}x")
    print(f"  generation / score both:  {median['generate'] / median['score both']:.1f}x")
    print(f"  token loop / score one:   {median['token loop'] / median['score one']:.1f}x")


if __name__ == "__main__":
    main()
