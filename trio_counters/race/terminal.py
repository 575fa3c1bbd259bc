"""The timeline as terminal text: ANSI colour on a terminal, plain when piped."""

from __future__ import annotations

from .timeline import Cell, Line, Timeline

__all__ = ["render", "render_summary"]

#: ANSI SGR codes by line kind; kinds not listed are printed plain.
COLOURS = {
    "read": "36",  # cyan
    "checkpoint": "2",  # dim
    "write": "32",  # green
    "erased": "1;31",  # bold red
    "lock.wanted": "33",  # yellow
    "lock.acquired": "1;33",
    "lock.released": "33",
    "send": "35",  # magenta
    "send.blocked": "35",
    "reply": "35",
    "apply": "1;34",  # bold blue
    "commit": "1;35",
    "committed": "1;32",
    "ran": "2",
    "wait": "2",
    "lost": "1;31",
    "ok": "1;32",
    "title": "1",
}
WAIT = "…"
GAP = "  "


def _paint(text: str, kind: str, colour: bool) -> str:
    code = COLOURS.get(kind)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code and text.strip() else text


def render(t: Timeline, *, colour: bool, width: int) -> str:
    """Rows of tasks, columns of batches; columns wrap into bands to fit ``width``."""
    label = max(len(task) for task in t.race.tasks) + 2
    widths = t.widths()
    bands, band, used = [], [], label
    for b, w in enumerate(widths):
        if band and used + len(GAP) + w > width:
            bands.append(band)
            band, used = [], label
        band.append(b)
        used += len(GAP) + w
    bands.append(band)
    tall = any(len(c.lines) > 1 for row in t.rows.values() for c in row)
    out = [_paint(t.title, "title", colour)]
    for band in bands:
        out.append(" " * label + GAP.join(f"batch {b + 1}".ljust(widths[b]) for b in band).rstrip())
        for task, row in t.rows.items():
            if all(row[b].state == "" for b in band):
                continue  # not alive in this band
            height = max(len(row[b].lines) or 1 for b in band)
            for i in range(height):
                cells = [_cell_line(row[b], i, widths[b], colour) for b in band]
                head = (task if i == 0 else "").ljust(label)
                out.append((head + GAP.join(cells)).rstrip())
            if tall:
                out.append("")
        if not tall:
            out.append("")
    out.extend(_paint(line.text, line.kind, colour) for line in t.verdict())
    return "\n".join(out) + "\n"


def _cell_line(cell: Cell, i: int, width: int, colour: bool) -> str:
    if cell.state == "wait":
        return _paint((WAIT if i == 0 else "").ljust(width), "wait", colour)
    line = cell.lines[i] if i < len(cell.lines) else Line("", "")
    return _paint(line.text.ljust(width), line.kind, colour)


def render_summary(t: Timeline, *, colour: bool) -> str:
    """A few lines for a race too large to draw row by row."""
    lines = [_paint(t.title, "title", colour)]
    lines.extend("  " + line for line in t.summary())
    lines.extend("  " + _paint(line.text, line.kind, colour) for line in t.verdict()[:1])
    erasing = sum(1 for w in t.writes if w.erased)
    if erasing:
        lines.append(f"  {erasing} of {len(t.writes)} writes erased other increments")
    return "\n".join(lines) + "\n"
