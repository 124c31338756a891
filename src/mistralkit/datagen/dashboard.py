"""The dashboard: one self-contained HTML page (inline SVG charts, no script, nothing fetched from elsewhere)."""

from __future__ import annotations

from html import escape

BAR_W, BAR_H = 360, 16
CARD_BAR_W, LABEL_W = 180, 90  # a card is at least 330 px wide: a bar and its label fit in it
LABEL_CHARS, LABEL_CHAR_W = 24, 7  # heatmap labels: at most this many characters, about this wide at 10 px
STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:1100px}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}td.n{text-align:right}
.muted{color:#666}.bad{color:#a40000}
"""


def render(stats: dict, refresh_s: int = 5) -> str:
    """The page for ``State.stats()``; it reloads itself every ``refresh_s`` seconds."""
    parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
             f'<meta http-equiv="refresh" content="{int(refresh_s)}">'
             f"<title>datagen · {escape(str(stats.get('name', '')))}</title><style>{STYLE}</style></head><body>",
             _progress(stats), _dimensions(stats), _pairs(stats), _outcomes(stats), _agents(stats),
             "</body></html>"]
    return "".join(parts)


def _svg(width: int, height: int, body: str, label: str | None = None) -> str:
    """An inline chart at its own size, scaled down (never up) where the page is narrower."""
    named = f' aria-label="{escape(label)}"' if label is not None else ""
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"{named} '
            f'style="max-width:100%;height:auto">{body}</svg>')


def _bar(done: float, goal: float, label: str, colour: str = "#2f6fb0", width: int = BAR_W) -> str:
    share = 0.0 if goal <= 0 else min(1.0, done / goal)
    return _svg(width + (LABEL_W if label else 0), BAR_H + 4,
                f'<rect x="0" y="2" width="{width}" height="{BAR_H}" fill="#eee"/>'
                f'<rect x="0" y="2" width="{share * width:.1f}" height="{BAR_H}" fill="{colour}"/>'
                f'<text x="{width + 6}" y="{BAR_H}" font-size="12">{escape(label)}</text>', label)


def _progress(stats: dict) -> str:
    goal, accepted = stats.get("goal", 0), stats.get("accepted", 0)
    state = "done" if stats.get("done") else f"{stats.get('leased', 0)} leased now"
    return (f"<h1>datagen: {escape(str(stats.get('name', '')))}</h1>"
            f"<p>{accepted} of {goal} cases accepted ({state}); {stats.get('seeds', 0)} seed cases; "
            f"target total {stats.get('target_total', 0)}.</p>"
            + _bar(accepted, goal, f"{accepted}/{goal}", "#2e8540"))


def _dimensions(stats: dict) -> str:
    cards = []
    for name, values in stats.get("coverage", {}).items():
        rows = "".join(
            f"<div>{escape(value)}<br>"
            f"{_bar(cell.get('count', 0), cell.get('quota', 0), _count_label(cell), width=CARD_BAR_W)}</div>"
            for value, cell in values.items())
        cards.append(f'<div class="card"><h3>{escape(name)}</h3>{rows}</div>')
    balance = stats.get("balance", {})
    summary = ""
    if balance:
        worst = balance.get("worst_ratio")
        worst_text = f"{worst:.3f}" if isinstance(worst, (int, float)) else "— (a value has no case yet)"
        summary = (f"<p class='muted'>worst max/min of count/quota {worst_text} · "
                   f"total-variation distance {balance.get('tv_distance') or 0:.4f} · "
                   f"pairs covered {balance.get('pairs_covered', 0)}/{balance.get('pairs_allowed', 0)}</p>")
    return (
        "<h2>Coverage per dimension value (count / quota)</h2>" + summary + f'<div class="grid">{"".join(cards)}</div>'
    )


def _count_label(cell: dict) -> str:
    return f"{cell.get('count', 0)} / {cell.get('quota', 0):.0f}" if isinstance(cell.get("quota"), (int, float)) \
        else str(cell.get("count", 0))


def _pairs(stats: dict) -> str:
    cards = []
    for name, pair in stats.get("pairs", {}).items():
        cards.append(
            f'<div class="card"><h3>{escape(name)}</h3>{_heatmap(pair)}'
            f"<p class='muted'>{pair.get('covered', 0)} of {pair.get('allowed', 0)} allowed pairs seen</p></div>"
        )
    return "<h2>Coverage per pair of dimensions</h2>" + f'<div class="grid">{"".join(cards)}</div>' if cards else ""


def _heatmap(pair: dict) -> str:
    """Rows = values of the first dimension, columns = the second's; darker = more cases; × = forbidden."""
    rows, cols, cells = pair.get("rows", []), pair.get("cols", []), pair.get("cells", {})
    if not rows or not cols:
        return ""
    size = 14
    left = 8 + LABEL_CHAR_W * max(len(_short(row)) for row in rows)
    slant = LABEL_CHAR_W * max(len(_short(col)) for col in cols)  # column labels at 60 degrees
    top, right = 8 + slant * 0.87, 4 + slant * 0.5
    top_count = max([c for c in cells.values() if isinstance(c, (int, float))] or [1]) or 1
    out = []
    for c, col in enumerate(cols):  # column names above the columns, slanted
        x = left + c * size + size / 2
        out.append(f'<text x="{x:.0f}" y="{top - 4:.0f}" font-size="10" transform="rotate(-60 {x:.0f} {top - 4:.0f})">'
                   f"{escape(_short(col))}</text>")
    for r, row in enumerate(rows):
        y = top + r * size
        out.append(f'<text x="{left - 4}" y="{y + size - 3:.0f}" font-size="10" text-anchor="end">'
                   f"{escape(_short(row))}</text>")
        for c, col in enumerate(cols):
            count = cells.get(f"{row}|{col}")
            x = left + c * size
            if count is None:  # not an allowed pair
                out.append(f'<text x="{x + 3}" y="{y + size - 3:.0f}" font-size="10" fill="#bbb">×</text>')
                continue
            shade = 0.08 + 0.92 * (count / top_count)
            out.append(f'<rect x="{x}" y="{y:.0f}" width="{size - 1}" height="{size - 1}" fill="#2f6fb0" '
                       f'fill-opacity="{shade:.2f}"><title>{escape(row)} × {escape(col)}: {count}</title></rect>')
    return _svg(round(left + size * len(cols) + right), round(top + size * len(rows) + 4), "".join(out))


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def _outcomes(stats: dict) -> str:
    rejected = stats.get("rejected", {})
    accepted = stats.get("accepted", 0)
    total = accepted + sum(rejected.values())
    rows = [f"<tr><td>accepted</td><td class='n'>{accepted}</td><td>{_bar(accepted, total, '', '#2e8540')}</td></tr>"]
    rows += [f"<tr><td class='bad'>rejected: {escape(reason)}</td><td class='n'>{count}</td>"
             f"<td>{_bar(count, total, '', '#a40000')}</td></tr>" for reason, count in sorted(rejected.items())]
    return "<h2>Submissions</h2><table>" + "".join(rows) + "</table>"


def _agents(stats: dict) -> str:
    agents = stats.get("agents", {})
    if not agents:
        return "<h2>Agents</h2><p class='muted'>no agent yet</p>"
    rows = "".join(f"<tr><td>{escape(agent)}</td><td class='n'>{c.get('issued', 0)}</td>"
                   f"<td class='n'>{c.get('accepted', 0)}</td><td class='n'>{c.get('rejected', 0)}</td></tr>"
                   for agent, c in sorted(agents.items()))
    return ("<h2>Agents</h2><table><tr><th>agent</th><th>issued</th><th>accepted</th><th>rejected</th></tr>"
            + rows + "</table>")
