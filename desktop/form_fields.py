"""The job form's fields: spin boxes whose lowest value reads "default", what each
default is, and the reward functions a Python file defines."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox

from diptych.training import kinds as job_kinds

# Spin box ranges of numeric options: (lowest, highest, step, decimals); others get a wide range.
SPINS = {"steps": (0, 100_000, 1, 0), "lora_r": (0, 256, 1, 0), "lr": (0.0, 1.0, 1e-5, 6),
         "beta": (0.0, 10.0, 0.01, 3)}


def _optional_spin(spin: QSpinBox | QDoubleSpinBox, lo, hi, step=None, decimals=None):
    """A spin box whose lowest value reads 'default': unset options take the job's defaults."""
    spin.setRange(lo, hi)
    if decimals is not None:
        spin.setDecimals(decimals)
    if step is not None:
        spin.setSingleStep(step)
    spin.setSpecialValueText("default")
    spin.setValue(lo)
    return spin


def number_widget(option: job_kinds.Option) -> QSpinBox | QDoubleSpinBox:
    is_int = option.type is not None and option.type.__name__ == "int"
    lo, hi, step, decimals = SPINS.get(option.field, (0, 1_000_000, 1, 0) if is_int else (0.0, 1e6, 0.1, 4))
    if is_int:
        return _optional_spin(QSpinBox(), int(lo), int(hi), int(step))
    return _optional_spin(QDoubleSpinBox(), lo, hi, step, decimals)


def default_text(kind: job_kinds.Kind, field: str) -> str:
    """"default (5 epochs)": the value a job of ``kind`` takes when the field is left unset."""
    value = kind.default(field)
    if field == "steps" and value is None:
        epochs = kind.default("epochs")
        return f"default ({epochs:g} epochs)" if epochs else "default"
    if isinstance(value, float):
        return f"default ({value:g})"
    return "default" if value in (None, "", [], False) else f"default ({value})"


def reward_functions(path: Path) -> list[str]:
    """The top-level functions a Python file defines, read without running it (the app never
    runs the user's reward code: the job does)."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
