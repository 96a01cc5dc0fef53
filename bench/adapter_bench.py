"""Switching the tuned pane's adapter, and what two panes cost in memory.

    python bench/adapter_bench.py [--adapter NAME_OR_GGUF] [--data-dir DIR] [--rounds 5]

1. Adapter switch: ``Engine.set_adapter`` on a loaded context (llama.cpp's per-context
   LoRA) against the reference, reloading the model with the adapter (``Engine(path,
   adapter=...)``, what ``Llama(lora_path=...)`` would cost, and it also turns mmap off).
2. Resident memory: a process with our two pane engines against the reference, a
   process with one plain llama-cpp-python model, each measured in a fresh subprocess.
   Whether the panes share the base weights: the weights stay in the mmap'd model file,
   which each context maps once. RSS counts a file page once per mapping, so it counts the
   shared weights twice; PSS divides a page among its mappings and counts them once. So
   PSS says what the second pane really adds: its KV cache and buffers, not another copy.

The adapter defaults to the newest registered adapter in the data dir.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MEMORY_CHILD = r"""
import json, sys, psutil
from diptych.models.catalog import bundled_model_path
path = bundled_model_path()
if sys.argv[1] == "plain":
    from diptych.models import native
    keep = [native.llama(path, n_ctx=4096, n_threads=1, verbose=False)]
else:
    from diptych.models.engine import Engine, SamplingParams
    keep = [Engine(path, n_ctx=4096) for _ in range(int(sys.argv[2]))]
    for e in keep:  # touch every weight once, as answering does
        e.generate([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4, seed=1))
m = psutil.Process().memory_full_info()
print(json.dumps({"rss": m.rss, "uss": m.uss, "pss": m.pss}))
"""


def memory(kind: str, panes: int = 0) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, kind, str(panes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter")
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from diptych.models import adapters
    from diptych.models.catalog import bundled_model_path
    from diptych.models.engine import Engine

    if args.adapter:
        lora = adapters.resolve(args.adapter, args.data_dir).gguf_path
    else:
        chat = [a for a in adapters.list_adapters(args.data_dir) if a.gguf_path]
        if not chat:
            sys.exit("no adapter: train one (diptych train dpo ...) or pass --adapter")
        lora = chat[0].gguf_path
    path = bundled_model_path()
    engine = Engine(path)
    switch, reload_ = [], []
    for _ in range(args.rounds):
        switch.append(engine.set_adapter(lora) + engine.set_adapter(None))
        t0 = time.perf_counter()
        Engine(path, adapter=lora).close()
        reload_.append(time.perf_counter() - t0)
    s, r = statistics.median(switch) / 2, statistics.median(reload_)
    print(f"adapter {lora}")
    print(f"switch adapter on a loaded context : {s * 1000:7.1f} ms")
    print(f"reload the model with the adapter  : {r * 1000:7.1f} ms (reference)")
    print(f"ratio switch/reload                : {s / r:.3f}")

    engine.close()  # no other process may map the model file, or PSS would split it with us
    plain = memory("plain")
    one, two = memory("ours", 1), memory("ours", 2)
    mib = 1 / 2**20
    for label, m, ref in (("one plain llama-cpp-python model", plain, " (reference)"),
                          ("our engines, one pane", one, ""), ("our engines, two panes", two, "")):
        print(f"{label:34s}: RSS {m['rss'] * mib:6.0f} MiB, PSS {m['pss'] * mib:6.0f} MiB, "
              f"USS {m['uss'] * mib:6.0f} MiB{ref}")
    print(f"ratio two panes/plain             : RSS {two['rss'] / plain['rss']:.2f}, "
          f"PSS {two['pss'] / plain['pss']:.2f}")
    print(f"second pane adds                  : {(two['rss'] - one['rss']) * mib:.0f} MiB RSS, "
          f"{(two['pss'] - one['pss']) * mib:.0f} MiB PSS")
    # RSS counts the model file's pages once per mapping; each context maps the file, so
    # RSS counts the shared weights twice. PSS divides each page among its mappings: it
    # counts the weights once, and the second pane adds its own KV cache and buffers.


if __name__ == "__main__":
    main()
