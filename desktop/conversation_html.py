"""A conversation as HTML, for the Data tab's conversation window: each user turn, the
answers voted on, and the verdicts."""

from __future__ import annotations

import html
from datetime import datetime

from diptych.training.store import SIDES, identity

CHOICE_NAMES = {"left": "left", "right": "right", "tie": "tie", "both_bad": "both bad",
                "better": "your answer"}


def local_time(stamp: str) -> str:
    """A stored UTC timestamp in the user's time zone, to the minute."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def choice_text(choice: str, names: dict[str, str]) -> str:
    """``left (v1)`` for a preferred side, so the winner's name shows; else the kind."""
    if choice in SIDES:
        return f"{choice} ({names[choice]})"
    return CHOICE_NAMES.get(choice, choice)


def escaped(value: str) -> str:
    return html.escape(value).replace("\n", "<br>")


def conversation_html(conversation: dict, focus_vote: int | None = None) -> str:
    """One conversation as HTML: each user turn, the answers voted on, and the verdicts."""
    responses = {r["id"]: r for r in conversation["responses"]}
    mode = "blind" if conversation["blind"] else "model names shown"
    parts = [f"<p style='color:gray'>Started {local_time(conversation['created_at'])} · {mode}</p>"]
    if (conversation["system_prompt"] or "").strip():
        parts.append(f"<p><i>System: {escaped(conversation['system_prompt'])}</i></p>")
    for message in conversation["messages"]:
        turn = message["turn"]
        parts.append(f"<h3>Turn {turn + 1}</h3><p><b>You:</b> {escaped(message['content'])}</p>")
        votes = [v for v in conversation["votes"] if v["turn"] == turn]
        for vote in votes:
            pair = [responses[vote["left_response_id"]], responses[vote["right_response_id"]]]
            parts.append(_pair_html(pair, vote, vote["id"] == focus_vote))
        if not votes:  # answered but not voted on: show each pane's latest answer
            latest = {r["side"]: r for r in conversation["responses"] if r["turn"] == turn}
            if set(latest) == set(SIDES):
                parts.append(_pair_html([latest[s] for s in SIDES], None, False))
    return "\n".join(parts)


def _pair_html(pair: list[dict], vote: dict | None, focus: bool) -> str:
    names = {side: identity(r) for side, r in zip(SIDES, pair)}
    winner = vote["choice"] if vote else None
    cells = []
    for side, response in zip(SIDES, pair):
        mark = " <span style='color:#2e7d32'>✓ preferred</span>" if winner == side else ""
        cells.append(f"<td width='50%' valign='top'><b>{side.title()} · {html.escape(names[side])}"
                     f"</b>{mark}<br>{escaped(response['text'])}</td>")
    table = ("<table width='100%' border='1' cellspacing='0' cellpadding='6' "
             f"style='border-color:#999'><tr>{''.join(cells)}</tr></table>")
    if vote is None:
        return table + "<p style='color:gray'>Not voted on.</p>"
    verdict = f"<b>Vote:</b> {html.escape(choice_text(vote['choice'], names))}"
    mode = "blind" if vote["blind"] else "names shown"
    verdict += f" · {mode} · {local_time(vote['created_at'])}"
    if vote["deleted_at"]:
        verdict += " · <span style='color:#c62828'>deleted</span>"
    if focus:
        verdict = "▶ " + verdict + " <i>(the selected vote)</i>"
    better = (f"<p><b>Your answer:</b><br>{escaped(vote['better_text'])}</p>"
              if vote["better_text"] else "")
    return f"{table}<p>{verdict}</p>{better}"
