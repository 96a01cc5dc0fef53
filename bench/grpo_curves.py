"""Does GRPO learn in minutes on two cores? Held-out reward against wall-clock time, per task.

    python bench/grpo_curves.py [--tasks length,arith,reverse_words] [--minutes 15]
                                [--args "..."] [--png bench/grpo_curves.png] [--json FILE]

For each task, one default GRPO job on the bundled model (``diptych train grpo --task T``,
plus ``--args``) runs in a child process, as the app runs it (``--progress jsonl``). The
job evaluates greedy answers to its held-out prompts before training, every
``eval_every`` steps and after, through llama.cpp with the LoRA of that step; each
``eval`` line is stamped with the wall-clock time since the job started (loading and the
first evaluation included). The reference is the same job's evaluation before training:
the base model's held-out reward, measured in the same run. Printed per task: the base's
reward, the reward reached, their ratio, and the time it took (and the time the held-out
reward first reached 1.5x the base). A job still running after ``--minutes`` is stopped
(SIGTERM, as the app's Cancel) and its curve so far is kept.

The curves are drawn with pyqtgraph (offscreen) into ``--png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(task: str, extra: list[str], minutes: float, work: Path) -> dict:
    argv = [sys.executable, "-m", "diptych", "--data-dir", str(work / task), "train", "grpo",
            "--name", f"curve-{task}", "--task", task, "--no-drift", "--progress", "jsonl", *extra]
    log = open(work / f"{task}.log", "w", encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    points, steps, before, after, done = [], [], None, None, None
    deadline = t0 + minutes * 60
    for line in proc.stdout:
        event, now = json.loads(line), time.monotonic() - t0
        if event["phase"] == "train" and event["loss"] is not None:
            steps.append({"t": now, "step": event["step"], "reward": event["reward"],
                          "reward_std": event.get("reward_std"), "kl": event["kl"]})
        elif event["phase"] == "eval":
            points.append({"t": now, "step": event["step"], "reward": event["reward"],
                           "ended": event.get("ended"), "samples": event.get("samples")})
        elif event["phase"] == "done":
            done = event
        if time.monotonic() > deadline and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    proc.wait()
    log.close()
    wall = time.monotonic() - t0
    if not points:
        raise SystemExit(f"{task}: the job ended before its first evaluation (exit "
                         f"{proc.returncode}); see {work / (task + '.log')}")
    base, last = points[0]["reward"], points[-1]["reward"]  # step 0: the base, measured first
    first = next((p for p in points[1:] if base > 0 and p["reward"] >= 1.5 * base), None)
    return {"task": task, "base": base, "after": last, "best": max(p["reward"] for p in points),
            "ratio": last / base if base else None, "finished": done is not None,
            "wall_s": wall, "steps": points[-1]["step"],
            "s_per_step": (steps[-1]["t"] - steps[0]["t"]) / max(len(steps) - 1, 1) if steps else None,
            "t_1_5x": first and first["t"], "points": points, "train_steps": steps}


def plot(results: list[dict], png: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    import pyqtgraph.exporters
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841 - pyqtgraph needs one
    pg.setConfigOptions(background="w", foreground="k", antialias=True)
    widget = pg.PlotWidget(title="GRPO on the bundled model, 2 CPU cores: held-out reward (greedy)")
    widget.resize(900, 520)
    widget.setLabel("bottom", "minutes since the job started (loading included)")
    widget.setLabel("left", "mean held-out reward")
    for axis in ("left", "bottom"):
        widget.getAxis(axis).enableAutoSIPrefix(False)
    widget.addLegend(offset=(10, 10))
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for colour, r in zip(colours, results):
        xs = [p["t"] / 60 for p in r["points"]]
        ys = [p["reward"] for p in r["points"]]
        widget.plot(xs, ys, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                    symbolBrush=colour, name=f"{r['task']} (base {r['base']:.2f})")
        widget.plot([0, max(xs)], [r["base"], r["base"]],
                    pen=pg.mkPen(colour, width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
    exporter = pyqtgraph.exporters.ImageExporter(widget.plotItem)
    exporter.parameters()["width"] = 900
    exporter.export(str(png))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="length,arith,reverse_words")
    parser.add_argument("--minutes", type=float, default=15.0, help="stop a job after this long")
    parser.add_argument("--args", default="", help="more options for every job")
    parser.add_argument("--png", default=str(Path(__file__).with_name("grpo_curves.png")))
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--replot", metavar="JSON", help="only draw the curves of an earlier --json")
    args = parser.parse_args()

    if args.replot:
        plot(json.loads(Path(args.replot).read_text(encoding="utf-8")), Path(args.png))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="diptych-grpo-curves-") as tmp:
        for task in args.tasks.split(","):
            r = run(task, shlex.split(args.args), args.minutes, Path(tmp))
            results.append(r)
            t15 = f"{r['t_1_5x'] / 60:.1f} min" if r["t_1_5x"] else "not reached"
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            print(f"{task:14s} base {r['base']:.3f} -> after {r['after']:.3f} "
                  f"(ratio {ratio}; best {r['best']:.3f}) in {r['wall_s'] / 60:.1f} min "
                  f"({r['steps']} steps, {r['s_per_step']:.1f} s/step); 1.5x the base at {t15}",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    plot(results, Path(args.png))
    print(f"curves: {args.png}")


if __name__ == "__main__":
    main()
