"""Streaming speed of our engine against plain llama-cpp-python, and of two panes at once.

    python bench/engine_bench.py [--tokens 200] [--rounds 3]

Prints tokens/s and time to first token of: plain ``Llama.create_completion(stream=True)``
(the reference), our ``Engine.stream`` with the same model, threads, prompt and sampling,
and both panes streaming at once; then the ratios. Rounds alternate so that noise from
this shared machine falls on both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from diptych.models.catalog import bundled_model_path
from diptych.models.engine import Completion, Engine, SamplingParams, default_threads

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def plain(llama, prompt: str, params: SamplingParams, seed: int) -> tuple[float, float, int]:
    """tokens/s after the first token, and time to first token, of plain llama-cpp-python."""
    llama.set_seed(seed)
    t0 = time.perf_counter()
    first = last = None
    n = 0
    for _ in llama.create_completion(
        prompt, max_tokens=params.max_tokens, temperature=params.temperature,
        top_p=params.top_p, top_k=params.top_k, min_p=params.min_p,
        repeat_penalty=params.repeat_penalty, stream=True,
    ):
        last = time.perf_counter()
        first = first or last
        n += 1
    return (n - 1) / (last - first), first - t0, n


def ours(engine: Engine, params: SamplingParams) -> Completion:
    return engine.generate(MESSAGES, params)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from diptych.models import native

    path = bundled_model_path()
    threads = default_threads(panes=2)
    params = SamplingParams(max_tokens=args.tokens, seed=1, stop=())
    a = Engine(path, n_threads=threads)
    b = Engine(path, n_threads=threads)
    # The reference: the same file, context size and threads, no wrapper of ours.
    llama = native.llama(path, n_ctx=a.n_ctx, n_threads=threads,
                            n_threads_batch=threads, verbose=False)
    prompt = a.render(MESSAGES)
    # Ours renders "<bos>" as text; plain create_completion adds its own BOS.
    plain_prompt = prompt.removeprefix("<bos>")

    rows = {"plain": [], "ours": [], "both": []}
    for r in range(args.rounds):
        seed = 100 + r
        params.seed = seed
        rows["plain"].append(plain(llama, plain_prompt, params, seed)[:2])
        c = ours(a, params)
        rows["ours"].append((c.tokens_per_s, c.ttft_s))
        done: list[Completion] = []
        t0 = time.perf_counter()
        workers = [threading.Thread(target=lambda e=e: done.append(ours(e, params))) for e in (a, b)]
        [w.start() for w in workers]
        [w.join() for w in workers]
        wall = time.perf_counter() - t0
        rows["both"].append((sum(d.n_tokens for d in done) / wall, max(d.ttft_s for d in done)))

    med = {k: (statistics.median(v[0] for v in rows[k]), statistics.median(v[1] for v in rows[k]))
           for k in rows}
    print(f"model {path.name}, {threads} thread(s) per context, {args.tokens} tokens, "
          f"{args.rounds} rounds (medians)")
    print(f"plain llama-cpp-python : {med['plain'][0]:6.1f} tok/s   first token {med['plain'][1]*1000:6.1f} ms")
    print(f"our engine, one pane   : {med['ours'][0]:6.1f} tok/s   first token {med['ours'][1]*1000:6.1f} ms")
    print(f"both panes at once     : {med['both'][0]:6.1f} tok/s combined (wall clock)")
    print(f"ratio ours/plain tok/s : {med['ours'][0] / med['plain'][0]:.2f}")
    print(f"ratio ours/plain TTFT  : {med['ours'][1] / med['plain'][1]:.2f}")
    print(f"ratio both/one tok/s   : {med['both'][0] / med['ours'][0]:.2f}")


if __name__ == "__main__":
    main()
