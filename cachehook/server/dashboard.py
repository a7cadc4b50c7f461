"""The dashboard at ``/``: one server-rendered HTML page, no script, no CDN, works offline.

It shows what ``EventLog.stats`` returns (the same numbers as ``/api/stats``): lookups, hits,
misses and hit rate, hits and misses by source, and time saved, in total, per day and per team.
Every value that came from a client (team names) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["format_duration", "render_dashboard"]

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;
color:#1d232a;background:#fafafa}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.muted{color:#5f6b76}
.cards{display:flex;flex-wrap:wrap;gap:1rem;margin-top:1rem}
.card{background:#fff;border:1px solid #dde2e6;border-radius:8px;padding:.8rem 1.2rem;
min-width:10rem}
.card .value{font-size:1.6rem;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e4e8eb;padding:.35rem .6rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f0f3f5;font-weight:600}
.bar{display:inline-block;height:.6rem;background:#2f9e61;border-radius:3px;vertical-align:middle}
.empty{padding:1rem;background:#fff;border:1px dashed #c8d0d6;border-radius:8px}
"""


def format_duration(ms: int) -> str:
    """``1234567`` -> ``20m 34.6s``: the time saved, for people."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m {seconds:.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h {minutes}m"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _bar(value: float | None) -> str:
    width = 0 if value is None else round(value * 100)
    return f'<span class="bar" style="width:{width}px"></span>'


def _card(label: str, value: str, ident: str, detail: str = "") -> str:
    extra = f'<div class="muted">{detail}</div>' if detail else ""
    return (
        f'<div class="card"><div class="muted">{label}</div>'
        f'<div class="value" id="{ident}">{value}</div>{extra}</div>'
    )


def _saved(ms: int) -> str:
    return f'<span title="{ms} ms">{format_duration(ms)}</span>'


def _row_cells(tally: dict[str, Any]) -> str:
    local, remote = tally["by_source"]["LOCAL"], tally["by_source"]["REMOTE"]
    cells = [
        tally["lookups"],
        tally["hits"],
        tally["misses"],
        f"{_rate(tally['hit_rate'])} {_bar(tally['hit_rate'])}",
        local["hits"],
        local["misses"],
        remote["hits"],
        remote["misses"],
        _saved(tally["time_saved_ms"]),
    ]
    return "".join(f"<td>{cell}</td>" for cell in cells)


_HEAD = (
    "<th>lookups</th><th>hits</th><th>misses</th><th>hit rate</th>"
    "<th>local hits</th><th>local misses</th><th>remote hits</th><th>remote misses</th>"
    "<th>time saved</th>"
)


def _table(title: str, key: str, rows: list[dict[str, Any]], ident: str) -> str:
    if not rows:
        return f'<h2>{title}</h2><p class="empty" id="{ident}">No events yet.</p>'
    body = "".join(
        f'<tr data-{key}="{escape(str(row[key]))}"><td>{escape(str(row[key]))}</td>'
        f"{_row_cells(row)}</tr>"
        for row in rows
    )
    return (
        f'<h2>{title}</h2><table id="{ident}"><thead><tr><th>{key}</th>{_HEAD}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _sources(totals: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr data-source="{name}"><td>{name}</td><td>{counts["hits"]}</td>'
        f"<td>{counts['misses']}</td><td>{_rate(counts['hit_rate'])}</td>"
        f"<td>{format_duration(counts['time_saved_ms'])}</td></tr>"
        for name, counts in sorted(totals["by_source"].items())
    )
    return (
        '<h2>Hits and misses by source</h2><table id="by-source"><thead><tr><th>source</th>'
        "<th>hits</th><th>misses</th><th>hit rate</th><th>time saved</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def render_dashboard(stats: dict[str, Any], *, version: str) -> str:
    """The whole page for ``stats`` (the shape ``EventLog.stats`` returns)."""
    totals = stats["totals"]
    cards = "".join(
        [
            _card("lookups", str(totals["lookups"]), "total-lookups"),
            _card("hits", str(totals["hits"]), "total-hits"),
            _card("misses", str(totals["misses"]), "total-misses"),
            _card("hit rate", _rate(totals["hit_rate"]), "total-hit-rate"),
            _card(
                "time saved",
                format_duration(totals["time_saved_ms"]),
                "total-time-saved",
                f'<span id="total-time-saved-ms">{totals["time_saved_ms"]}</span> ms',
            ),
        ]
    )
    period = f"{escape(stats['since'])} to {escape(stats['until'])} (UTC)"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>cachehook serve</title><style>{_STYLE}</style></head><body>"
        f'<h1>cachehook remote cache</h1><p class="muted">Cache events from {period}. '
        "A lookup is one task hash in one run; it is a hit if any cache had it. "
        'The same numbers as JSON: <a href="api/stats">api/stats</a>.</p>'
        f'<div class="cards">{cards}</div>'
        f"{_sources(totals)}"
        f"{_table('Per day', 'day', list(reversed(stats['by_day'])), 'by-day')}"
        f"{_table('Per team', 'team', stats['by_team'], 'by-team')}"
        f'<p class="muted">cachehook {escape(version)}</p></body></html>'
    )
