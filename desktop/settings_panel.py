"""The settings both panes share: system prompt, sampling, seed, stop strings, template."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible, QLabeledDoubleSlider, QLabeledSlider

from diptych.models.engine import SamplingParams


def _double(lo: float, hi: float, value: float, decimals: int = 2) -> QLabeledDoubleSlider:
    slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    slider.setRange(lo, hi)
    slider.setDecimals(decimals)
    slider.setValue(value)
    return slider


def _int(lo: int, hi: int, value: int) -> QLabeledSlider:
    slider = QLabeledSlider(Qt.Orientation.Horizontal)
    slider.setRange(lo, hi)
    slider.setValue(value)
    return slider


class SettingsPanel(QWidget):
    params_changed = Signal(object)  # SamplingParams
    system_prompt_changed = Signal(str)
    template_override_changed = Signal(object)  # str or None

    def __init__(self, parent=None):
        super().__init__(parent)
        d = SamplingParams()
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("Optional system prompt (applies from the next conversation)")
        self.system_prompt.setMaximumHeight(70)
        self.temperature = _double(0.0, 2.0, d.temperature)
        self.top_p = _double(0.0, 1.0, d.top_p)
        self.top_k = _int(0, 200, d.top_k)
        self.min_p = _double(0.0, 1.0, d.min_p)
        self.repeat_penalty = _double(1.0, 2.0, d.repeat_penalty)
        self.max_tokens = _int(1, 2048, d.max_tokens)
        self.fixed_seed = QCheckBox("fixed")
        self.fixed_seed.setToolTip("Fixed: both panes sample with this seed. "
                                   "Otherwise each answer draws a random seed.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(42)
        self.seed.setEnabled(False)
        self.fixed_seed.toggled.connect(self.seed.setEnabled)
        self.stop_strings = QPlainTextEdit()
        self.stop_strings.setPlaceholderText("One stop string per line")
        self.stop_strings.setMaximumHeight(50)

        seed_row = QHBoxLayout()
        seed_row.addWidget(self.fixed_seed)
        seed_row.addWidget(self.seed, 1)
        form = QFormLayout()
        form.addRow("System prompt", self.system_prompt)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Min-p", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Max new tokens", self.max_tokens)
        form.addRow("Seed", seed_row)
        form.addRow("Stop strings", self.stop_strings)

        # The template in use, shown and overridable.
        self.template_name = QLabel()
        self.template = QPlainTextEdit()
        self.template.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.template.setMinimumHeight(140)
        self.apply_template = QPushButton("Use this template")
        self.reset_template = QPushButton("Model default")
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply_template)
        buttons.addWidget(self.reset_template)
        template_box = QCollapsible("Chat template")
        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(self.template_name)
        inner_layout.addWidget(self.template)
        inner_layout.addLayout(buttons)
        template_box.addWidget(inner)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(template_box)
        layout.addStretch(1)

        for slider in (self.temperature, self.top_p, self.top_k, self.min_p,
                       self.repeat_penalty, self.max_tokens):
            slider.valueChanged.connect(self._emit_params)
        self.fixed_seed.toggled.connect(self._emit_params)
        self.seed.valueChanged.connect(self._emit_params)
        self.stop_strings.textChanged.connect(self._emit_params)
        self.system_prompt.textChanged.connect(
            lambda: self.system_prompt_changed.emit(self.system_prompt.toPlainText())
        )
        self.apply_template.clicked.connect(
            lambda: self.template_override_changed.emit(self.template.toPlainText())
        )
        self.reset_template.clicked.connect(lambda: self.template_override_changed.emit(None))

    def params(self) -> SamplingParams:
        stops = tuple(s for s in self.stop_strings.toPlainText().splitlines() if s)
        return SamplingParams(
            temperature=round(self.temperature.value(), 3),
            top_p=round(self.top_p.value(), 3),
            top_k=int(self.top_k.value()),
            min_p=round(self.min_p.value(), 3),
            repeat_penalty=round(self.repeat_penalty.value(), 3),
            max_tokens=int(self.max_tokens.value()),
            seed=self.seed.value() if self.fixed_seed.isChecked() else None,
            stop=stops,
        )

    def show_template(self, name: str, source: str) -> None:
        self.template.blockSignals(True)  # showing is not overriding
        self.template_name.setText(f"In use: <b>{name}</b>")
        if self.template.toPlainText() != source:  # a new conversation changes nothing here
            self.template.setPlainText(source)
        self.template.blockSignals(False)

    def _emit_params(self, *_):
        self.params_changed.emit(self.params())
