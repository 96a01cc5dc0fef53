"""Does GRPO learn in minutes on two cores? Held-out reward against wall-clock time, per task.

    python bench/grpo_curves.py [--kind grpo|skill] [--tasks length,arith,reverse_words]
                                [--minutes 15] [--args "..."] [--png bench/grpo_curves.png]
                                [--json FILE]

``--kind skill`` runs ``diptych train skill`` instead: a warm-up on the task's worked
examples, then GRPO; the curve spans both phases, a marker where GRPO starts, and the
share of held-out answers that ended by themselves is printed after each phase
(``--png bench/skill_curves.png``).

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


def run(task: str, extra: list[str], minutes: float, work: Path, kind: str = "grpo") -> dict:
    argv = [sys.executable, "-m", "diptych", "--data-dir", str(work / task), "train", kind,
            "--name", f"curve-{task}", "--task", task, "--no-drift", "--progress", "jsonl", *extra]
    log = open(work / f"{task}.log", "w", encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    points, steps, done, stage = [], [], None, None
    deadline = t0 + minutes * 60
    for line in proc.stdout:
        event, now = json.loads(line), time.monotonic() - t0
        if event["phase"] == "train" and event["loss"] is not None:
            steps.append({"t": now, "step": event["step"], "reward": event["reward"],
                          "reward_std": event.get("reward_std"), "kl": event["kl"],
                          **{k: event.get(k) for k in ("zero_std", "grad_norm", "cut")}})
        elif event["phase"] == "eval":
            points.append({"t": now, "step": event["step"], "reward": event["reward"],
                           "ended": event.get("ended"), "full": event.get("full"), "n": event.get("n"),
                           "kl": event.get("kl"),
                           "samples": event.get("samples")})
        elif event["phase"] == "stage":  # a skill job: the warm-up ended, GRPO starts
            stage = {"t": now, "step": event["step"]}
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
    warm = next((p for p in points if stage and p["step"] == stage["step"]), None)
    return {"task": task, "kind": kind, "base": base, "after": last, "best": max(p["reward"] for p in points),
            "warmup": warm and warm["reward"], "stage": stage,
            "ended": [points[0]["ended"], warm and warm["ended"], points[-1]["ended"]],
            "full": [points[0]["full"], warm and warm["full"], points[-1]["full"]], "n": points[0]["n"],
            "ratio": last / base if base else None, "finished": done is not None,
            "wall_s": wall, "steps": points[-1]["step"],
            "s_per_step": _pace([s for s in steps if not stage or s["step"] > stage["step"]]),
            "t_1_5x": first and first["t"], "points": points, "train_steps": steps}


def _diagnosis(r: dict) -> str:
    """Why GRPO moves the model or not, averaged over its steps: the sampled answers' mean
    reward (against the greedy held-out one), the share of groups with no spread (no
    advantage, no gradient), the gradient's norm and the share of answers cut at the limit."""
    grpo = [s for s in r["train_steps"] if not r["stage"] or s["step"] > r["stage"]["step"]]

    def mean(key):
        values = [s[key] for s in grpo if s.get(key) is not None]
        return f"{sum(values) / len(values):.3f}" if values else "-"

    return (f"sampled reward {mean('reward')}, groups with no spread {mean('zero_std')}, "
            f"grad norm {mean('grad_norm')}, answers cut {mean('cut')}")


def _pace(steps: list[dict]) -> float | None:
    """Seconds a step, from the first logged step to the last."""
    return (steps[-1]["t"] - steps[0]["t"]) / max(len(steps) - 1, 1) if len(steps) > 1 else None


def plot(results: list[dict], png: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    import pyqtgraph.exporters
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    pg.setConfigOptions(background="w", foreground="k", antialias=True)
    what = "Worked examples, then GRPO (dotted: GRPO starts)" if results[0].get("kind") == "skill" else "GRPO"
    widget = pg.PlotWidget(title=f"{what}: held-out reward, bundled model, 2 cores")
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
        if r.get("stage"):  # where GRPO took over from the warm-up
            widget.addItem(pg.InfiniteLine(r["stage"]["t"] / 60, angle=90,
                                           pen=pg.mkPen(colour, width=1, style=pg.QtCore.Qt.PenStyle.DotLine)))
    widget.show()  # laid out, so the axes' ticks line up with the curves in the image
    app.processEvents()
    exporter = pyqtgraph.exporters.ImageExporter(widget.plotItem)
    exporter.parameters()["width"] = 900
    exporter.export(str(png))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="grpo", choices=("grpo", "skill"))
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
            r = run(task, shlex.split(args.args), args.minutes, Path(tmp), args.kind)
            results.append(r)
            if args.json:  # after each task: a long run keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
            t15 = f"{r['t_1_5x'] / 60:.1f} min" if r["t_1_5x"] else "not reached"
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            pace = f"{r['s_per_step']:.1f} s/step" if r["s_per_step"] else "- s/step"
            warm = (f" (after the warm-up {r['warmup']:.3f} at {r['stage']['t'] / 60:.1f} min)"
                    if r.get("stage") else "")
            ended, full = (" -> ".join("-" if e is None else str(e) for e in r[key] if e is not None or r["stage"])
                           for key in ("ended", "full"))
            print(f"{task:14s} base {r['base']:.3f}{warm} -> after {r['after']:.3f} "
                  f"(ratio {ratio}; best {r['best']:.3f}) in {r['wall_s'] / 60:.1f} min "
                  f"({r['steps']} steps, {pace}); 1.5x the base at {t15}; "
                  f"answers that ended: {ended}, with the full reward: {full} of {r['n']}", flush=True)
            print(f"{'':14s} GRPO steps: {_diagnosis(r)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    plot(results, Path(args.png))
    print(f"curves: {args.png}")


if __name__ == "__main__":
    main()
