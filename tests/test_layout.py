"""The window at the sizes people use (issue 22, item 6): at 1024x700 and 1280x800 no text
is cut (a label may be elided, with "…" and a tooltip that has it whole), and nothing
covers anything else."""

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QPushButton,
    QStyle,
    QStyleOptionComboBox,
    QTableView,
    QToolBar,
    QToolButton,
    QWidget,
)

from superqt import QElidingLabel

from helpers import record_sample_vote
from helpers import send, wait_idle

# Widgets whose children overlap by design (a scroll area's viewport and bars, a combo's
# popup parts, a tab bar's scroll buttons, pyqtgraph's scene).
COMPOSITE = ("QAbstractScrollArea", "QComboBox", "QTabBar", "QAbstractSpinBox", "QSplitter",
             "GraphicsView")


def _name(widget: QWidget) -> str:
    text = widget.text() if hasattr(widget, "text") and callable(widget.text) else ""
    return f"{type(widget).__name__}({widget.objectName() or text[:40]!r})"


def _label_cut(label: QLabel) -> bool:
    """Is some of the label's text outside it (a wrapped label too short for its lines, or
    one line wider than the label)?"""
    if label.wordWrap():
        return label.heightForWidth(label.width()) > label.height() + 1
    doc = QTextDocument()
    doc.setDefaultFont(label.font())
    doc.setDocumentMargin(0)
    if label.textFormat() != Qt.TextFormat.PlainText and "<" in label.text():
        doc.setHtml(label.text())
    else:
        doc.setPlainText(label.text())
    return doc.idealWidth() > label.contentsRect().width() + 1


def _combo_cut(combo: QComboBox) -> bool:
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                         QStyle.SubControl.SC_ComboBoxEditField, combo)
    return combo.fontMetrics().horizontalAdvance(combo.currentText()) > field.width()


def _on_screen(widget: QWidget) -> bool:
    return widget.isVisible() and not widget.visibleRegion().isEmpty()


def _composite(widget: QWidget | None) -> bool:
    while widget is not None:
        if any(cls.__name__ in COMPOSITE for cls in type(widget).__mro__):
            return True
        widget = widget.parentWidget()
    return False


def problems(window) -> list[str]:
    """What a user would find cut or covered in the window as it is now."""
    found = []
    for toolbar in window.findChildren(QToolBar):
        more = toolbar.findChild(QToolButton, "qt_toolbar_ext_button")
        if more is not None and more.isVisible():
            found.append("the toolbar hides some of its items behind »")
    for widget in window.findChildren(QWidget):
        if not _on_screen(widget):
            continue
        tip = widget.toolTip()
        if isinstance(widget, QLabel) and widget.text() and _label_cut(widget) \
                and not (isinstance(widget, QElidingLabel) and tip):
            found.append(f"{_name(widget)} is cut")
        elif isinstance(widget, QComboBox) and not widget.isEditable() and not tip \
                and _combo_cut(widget):
            found.append(f"{_name(widget)} is cut")
        elif isinstance(widget, QPushButton) and widget.sizeHint().width() > widget.width() + 1:
            found.append(f"{_name(widget)} is cut")
        elif isinstance(widget, QTableView) and widget.horizontalScrollBar().isVisible():
            found.append(f"{_name(widget)} hides columns")
        if _composite(widget.parentWidget()):
            continue
        area = widget.geometry()
        for other in widget.parentWidget().children() if widget.parentWidget() else ():
            if (other is not widget and isinstance(other, QWidget) and _on_screen(other)
                    and not other.isWindow() and other.geometry().intersects(area)
                    and id(other) > id(widget)):
                found.append(f"{_name(widget)} and {_name(other)} overlap")
    return found


def test_nothing_is_cut_or_covered_at_1024x700_and_1280x800(qtbot, window):
    from diptych.desktop import ops
    from diptych.models.session import Changes

    for choice in ("left", "right", "tie"):  # every Stats table gets rows
        record_sample_vote(window.store, choice, right="dpo-1205-0841")
    record_sample_vote(window.store, "right", left="dpo-1205-0841", right="v1")
    with qtbot.waitSignal(window.stats_view.ratings_updated, timeout=10_000):
        ops.run_op(window, lambda: Changes(votes=True))  # what recording them announces
    ops.wait_for_queries()
    send(qtbot, window, "What is the capital of France?")  # the panes' numbers show
    wait_idle(qtbot, window)
    seen = []
    for size in ((1024, 700), (1280, 800)):
        window.resize(*size)
        for index in range(window.tabs.count()):
            window.tabs.setCurrentIndex(index)
            qtbot.wait(30)
            seen += [f"{size} {window.tabs.tabText(index)}: {problem}"
                     for problem in problems(window)]
    assert seen == []
