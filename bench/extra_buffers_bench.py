"""Pane tokens/s with llama.cpp's extra weight buffers (AMX, repacked weights) on and off.

Each configuration runs in a child process of its own, so one that crashes natively is
reported as such instead of ending the benchmark. The reference is the other
configuration, measured in the same run. Prints the CPU llama.cpp reports.

    python bench/extra_buffers_bench.py [--tokens 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time

from diptych.models import native
from diptych.models.catalog import bundled_model_path
from diptych.models.engine import default_threads

PROMPT = "<start_of_turn>user\nTell me about the history of Paris.<end_of_turn>\n<start_of_turn>model\n"


def child(extra: bool, tokens: int, rounds: int) -> None:
    threads = default_threads(panes=2)
    llama = native.llama(bundled_model_path(), extra, n_ctx=1024, n_threads=threads,
                         n_threads_batch=threads, verbose=False)
    rates = []
    for r in range(rounds):
        n, t0 = 0, time.perf_counter()
        for _ in llama.create_completion(PROMPT, max_tokens=tokens, temperature=0.8, seed=100 + r,
                                         stream=True):
            if n == 0:
                t0 = time.perf_counter()  # from the first token: decode speed, not the prompt
            n += 1
        rates.append((n - 1) / (time.perf_counter() - t0))
    print(json.dumps({"tok_s": statistics.median(rates), "threads": threads}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(bool(args.child), args.tokens, args.rounds)

    print("llama.cpp CPU features:", " ".join(native.cpu_features()))
    print("the default here: extra buffers",
          "on" if native.extra_buffers_default(native.cpu_features()) else "off")
    results = {}
    for extra in (0, 1):
        done = subprocess.run([sys.executable, __file__, "--child", str(extra),
                               "--tokens", str(args.tokens), "--rounds", str(args.rounds)],
                              capture_output=True, text=True)
        if done.returncode < 0:
            results[extra] = f"crashed ({signal.Signals(-done.returncode).name})"
        elif done.returncode:
            results[extra] = f"failed: {done.stderr.strip().splitlines()[-1]}"
        else:
            results[extra] = json.loads(done.stdout.strip().splitlines()[-1])["tok_s"]
        shown = results[extra] if isinstance(results[extra], str) else f"{results[extra]:.1f} tok/s"
        print(f"extra buffers {'on ' if extra else 'off'}: {shown}")
    if all(isinstance(v, float) for v in results.values()):
        print(f"ratio on/off tok/s: {results[1] / results[0]:.2f}")


if __name__ == "__main__":
    main()
