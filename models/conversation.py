"""A two-sided conversation: shared user turns, each side with its own answers.

The left and right panes answer the same user turns, but each pane continues from its
own earlier answers, so each side's message list differs after the first turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SIDES = ("left", "right")


@dataclass
class Turn:
    user: str
    answers: dict[str, str | None] = field(default_factory=lambda: {s: None for s in SIDES})


@dataclass
class Conversation:
    system: str = ""
    turns: list[Turn] = field(default_factory=list)

    def add_user(self, text: str) -> int:
        """Start a new turn; returns its index."""
        self.turns.append(Turn(text))
        return len(self.turns) - 1

    def set_answer(self, side: str, text: str | None, turn: int | None = None) -> None:
        index = len(self.turns) - 1 if turn is None else turn
        self.turns[index].answers[side] = text

    def messages(self, side: str, upto: int | None = None) -> list[dict]:
        """The messages ``side`` sees before answering turn ``upto`` (default: the last)."""
        last = len(self.turns) - 1 if upto is None else upto
        out: list[dict] = []
        if self.system.strip():
            out.append({"role": "system", "content": self.system.strip()})
        for i, turn in enumerate(self.turns[: last + 1]):
            out.append({"role": "user", "content": turn.user})
            if i < last:
                out.append({"role": "assistant", "content": turn.answers[side] or ""})
        return out

    def clear(self) -> None:
        self.turns.clear()
