"""Colour an answer's tokens by how much the tuned model moved from the base there.

Each token's background is log p_tuned(token) − log p_base(token) on a diverging scale:
red where training made the token likelier, blue where it made it less likely, white
where nothing moved. Each token is a link, so hovering it can show both probabilities
and each model's likeliest alternatives.
"""

from __future__ import annotations

import html
import math
import unicodedata

SCALE = 2.0  # nats at which the colour saturates
BOXES = {"Cc", "Cf", "Co", "Cn", "Cs"}  # categories a font draws as a box (or not at all)


def colour(log_ratio: float) -> str:
    """White at 0, towards red (> 0) or blue (< 0), saturating at ±SCALE nats."""
    t = max(-1.0, min(1.0, log_ratio / SCALE))
    target = (214, 39, 40) if t > 0 else (31, 119, 180)
    a = abs(t) * 0.85
    r, g, b = (round(255 + (c - 255) * a) for c in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def legend_html() -> str:
    stops = [-SCALE, -SCALE / 2, 0.0, SCALE / 2, SCALE]
    cells = "".join(
        f"<td style='background:{colour(v)}; padding:0 6px'>{v:+.0f}</td>" for v in stops
    )
    return ("<table cellspacing='0'><tr><td>tuned less likely&nbsp;</td>"
            f"{cells}<td>&nbsp;tuned more likely (log-ratio, nats)</td></tr></table>")


def shown_text(text: str, token_id: int) -> str:
    """A token as the user can see it: its text, or ``⟨id N⟩`` where a character would
    show as a missing-glyph box: part of a UTF-8 sequence (U+FFFD), a control, a
    private-use or unassigned code point (fonts fall back for every assigned one)."""
    visible = text.replace("\n", "").replace("\t", "")
    if any(ch == "\ufffd" or unicodedata.category(ch) in BOXES for ch in visible):
        return f"⟨id {token_id}⟩"
    return text


def tokens_html(comparison) -> str:
    """The answer as coloured, hoverable token spans."""
    out = []
    for i, tok in enumerate(comparison.tokens):
        text = html.escape(shown_text(tok.text, tok.id)).replace("\n", "↵<br>")
        out.append(
            f"<a href='tok:{i}' style='background:{colour(tok.log_ratio)}; color:#000; "
            f"text-decoration:none'>{text or '∅'}</a>"
        )
    return "".join(out)


def summary_text(comparison) -> str:
    s = comparison.summary
    what = ("Monte-Carlo estimate of KL(tuned ‖ base) per token"
            if s.kl_estimate else "mean log-ratio per token (not a KL estimate: "
            "this answer was not sampled from the tuned model's own distribution)")
    biggest = (f"; largest move {s.max_log_ratio:+.2f} at “{s.max_text.strip() or s.max_text}”"
               if s.max_index is not None else "")
    return f"{s.mean_log_ratio:+.3f} nats — {what}{biggest}"


def tooltip_html(comparison, index: int) -> str:
    tok = comparison.tokens[index]

    def alternatives(top):
        return "".join(
            f"<tr><td><code>{html.escape(repr(text))}</code></td><td align='right'>"
            f"{math.exp(lp):.1%}</td></tr>" for text, lp in top
        )

    return (
        f"<b>{html.escape(repr(tok.text))}</b> · token id {tok.id}<br>"
        f"p base {math.exp(tok.logp_base):.2%} · p tuned {math.exp(tok.logp_tuned):.2%} · "
        f"log-ratio {tok.log_ratio:+.2f}<br>"
        "<table><tr><th align='left'>base would pick</th><th></th>"
        "<th align='left'>&nbsp;tuned would pick</th><th></th></tr>"
        + "".join(
            f"<tr><td><code>{html.escape(repr(b[0]))}</code></td><td>{math.exp(b[1]):.1%}</td>"
            f"<td>&nbsp;<code>{html.escape(repr(t[0]))}</code></td><td>{math.exp(t[1]):.1%}</td></tr>"
            for b, t in zip(tok.top_base, tok.top_tuned)
        )
        + "</table>"
    ) if tok.top_base and tok.top_tuned else alternatives(tok.top_base)
