"""The timeline as an SVG picture: hand-written SVG text, no script, no dependency.

One panel per race, stacked: the title, a header of batches, one row per task
(its cells coloured by what happened), and the verdict. The structure is for
tools too: each panel is ``<g class="race" data-strategy=...>``, each row
``<g class="row" data-task=...>``, each cell ``<g class="cell" data-batch=...>``
holding one ``<text>`` per line, the same lines as ``--json``'s ``timeline``.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from .timeline import Cell, Timeline

__all__ = ["render"]

FONT = 13  # px
CHAR = FONT * 0.6  # a monospace character's advance
LINE = FONT + 4
PAD = 6
GAP = 8
SUBTITLE = "rows: tasks · columns: scheduling batches (the tasks trio ran in one pass)"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
SANS = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

#: Text colour by line kind; kinds not listed are drawn in INK.
INK = "#212529"
GREY = "#868e96"
COLOURS = {
    "read": "#0b7285",
    "checkpoint": "#868e96",
    "write": "#2b8a3e",
    "erased": "#c92a2a",
    "lock.wanted": "#b35c00",
    "lock.acquired": "#b35c00",
    "lock.released": "#b35c00",
    "send": "#862e9c",
    "send.blocked": "#862e9c",
    "reply": "#862e9c",
    "apply": "#1c5fbf",
    "commit": "#a61e4d",
    "committed": "#2b8a3e",
    "ran": "#adb5bd",
    "lost": "#c92a2a",
    "ok": "#2b8a3e",
}


def render(timelines: list[Timeline]) -> str:
    """One SVG document with a panel per race."""
    panels, y, width = [], 0.0, 0.0
    for t in timelines:
        body, w, h = _panel(t, y)
        panels.append(body)
        y += h + 2 * GAP
        width = max(width, w)
    height = y - GAP
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-size="{FONT}">',
            '<rect width="100%" height="100%" fill="#ffffff"/>',
            *panels,
            "</svg>",
            "",
        ]
    )


def _panel(t: Timeline, top: float) -> tuple[str, float, float]:
    """One race's panel, drawn from ``top`` down; with its width and height."""
    label_w = max(len(task) for task in t.rows) * CHAR + 3 * PAD
    col_w = [w * CHAR + 2 * PAD for w in t.widths()]
    col_x = [GAP + label_w + sum(col_w[:b]) + b * 4 for b in range(t.batches)]
    right = col_x[-1] + col_w[-1] if t.batches else label_w
    verdict = t.verdict()
    out = [f'<g class="race" data-strategy={quoteattr(t.race.strategy)}>']
    y = top + GAP + FONT + 2
    out.append(_text(GAP, y, t.title, INK, family=SANS, weight="bold", size=FONT + 3))
    y += LINE
    out.append(_text(GAP, y, SUBTITLE, GREY, family=SANS))
    y += LINE
    for b in range(t.batches):
        out.append(_text(col_x[b] + PAD, y + FONT, f"batch {b + 1}", GREY, family=SANS))
    y += LINE + 4
    for i, (task, cells) in enumerate(t.rows.items()):
        h = max(len(c.lines) for c in cells) * LINE + 2 * PAD
        out.append(f'<g class="row" data-task={quoteattr(task)}>')
        if i % 2 == 0:  # zebra stripes, to follow a row across the columns
            out.append(
                f'<rect x="{GAP / 2}" y="{y:.1f}" width="{right - GAP / 2 + 2:.1f}" '
                f'height="{h + 4:.1f}" fill="#f8f9fa"/>'
            )
        out.append(_text(GAP, y + PAD + FONT + 1, task, INK, weight="bold", cls="label"))
        for b, cell in enumerate(cells):
            out.append(_cell(cell, b + 1, col_x[b], y + 2, col_w[b]))
        out.append("</g>")
        y += h + 4
    y += 4
    for line in verdict:
        y += LINE
        colour = COLOURS.get(line.kind, INK)
        out.append(_text(GAP, y, line.text, colour, family=SANS, cls="verdict"))
    out.append("</g>")
    texts = [len(t.title) * (FONT + 3) * 0.62, len(SUBTITLE) * FONT * 0.55]
    texts += [len(line.text) * FONT * 0.55 for line in verdict]  # sans: narrower than CHAR
    width = max([right] + [GAP + w for w in texts]) + GAP
    return "\n".join(out), width, y + PAD - top


def _cell(cell: Cell, batch: int, x: float, y: float, w: float) -> str:
    out = [f'<g class="cell" data-batch="{batch}" data-state="{cell.state or "none"}">']
    if cell.state == "wait":
        mid = y + PAD + FONT / 2
        out.append(
            f'<line x1="{x + PAD:.1f}" y1="{mid:.1f}" x2="{x + w - PAD:.1f}" y2="{mid:.1f}" '
            'stroke="#adb5bd" stroke-width="2" stroke-dasharray="2 4"/>'
        )
    elif cell.state == "step":
        lost = any(line.kind == "erased" for line in cell.lines)
        fill, stroke = ("#fff5f5", "#c92a2a") if lost else ("#ffffff", "#ced4da")
        h = len(cell.lines) * LINE + 2 * PAD - 4
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" '
            f'fill="{fill}" stroke="{stroke}"/>'
        )
        for i, line in enumerate(cell.lines):
            weight = "bold" if line.kind in ("erased", "apply") else None
            out.append(
                _text(x + PAD, y + PAD + FONT - 1 + i * LINE, line.text,
                      COLOURS.get(line.kind, INK), weight=weight, cls=f"line kind-{line.kind}")
            )  # fmt: skip
    out.append("</g>")
    return "".join(out)


def _text(
    x: float,
    y: float,
    text: str,
    fill: str,
    *,
    family: str = MONO,
    weight: str | None = None,
    size: float | None = None,
    cls: str | None = None,
) -> str:
    attrs = f' class="{cls}"' if cls else ""
    attrs += f' font-weight="{weight}"' if weight else ""
    attrs += f' font-size="{size}"' if size else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" fill="{fill}" font-family={quoteattr(family)}{attrs}>'
        f"{escape(text)}</text>"
    )
