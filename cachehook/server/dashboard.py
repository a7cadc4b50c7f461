"""The dashboard at ``/``: one server-rendered HTML page, no script, no CDN, works offline.

It shows what ``/api/stats`` returns: the totals; a chart of hit rate and time saved per day
(``chart.py``, SVG); CI versus developer machines; per team lookups, hit rate, time saved and
storage used against the cap, with the slug beside an opaque ``team_...`` id; the tasks that miss
most (named by cachehook's artifact metadata); hits and misses by source; and a table per day.
It fits 1280 px without a horizontal scrollbar, and a phone's width (wide tables scroll inside
their box). Every value that came from a client (team names, slugs, task names) is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from cachehook.server.chart import render_chart

__all__ = ["format_bytes", "format_duration", "render_dashboard"]

_STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:76rem;padding:0 1rem;
color:#1d232a;background:#fafafa}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:1rem 0;background:#fff;border:1px solid #dde2e6;border-radius:8px;padding:.5rem}
svg{display:block;width:100%;height:auto;min-width:36rem}figure{overflow-x:auto}
svg .axis{font-size:12px;fill:#5f6b76}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:0 1.5rem}
.meter{display:inline-block;width:48px;height:.6rem;background:#e4e8eb;border-radius:3px;
vertical-align:middle;overflow:hidden}.meter span{display:block;height:100%;background:#805ad5}
summary{cursor:pointer;font-weight:600;margin-top:1.5rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
.muted{color:#5f6b76}
.cards{display:flex;flex-wrap:wrap;gap:1rem;margin-top:1rem}
.card{background:#fff;border:1px solid #dde2e6;border-radius:8px;padding:.7rem 1rem;
min-width:9rem;flex:1 1 9rem}
.card .value{font-size:1.6rem;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e4e8eb;padding:.3rem .45rem;text-align:right;white-space:nowrap}
#by-team,#by-day{font-size:14px}
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
    width = 0 if value is None else round(value * 48)
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
        f'<h2>{title}</h2><div class="scroll"><table id="{ident}"><thead><tr><th>{key}</th>'
        f"{_HEAD}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _sources(totals: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr data-source="{name}"><td>{name}</td><td>{counts["hits"]}</td>'
        f"<td>{counts['misses']}</td><td>{_rate(counts['hit_rate'])}</td>"
        f"<td>{format_duration(counts['time_saved_ms'])}</td></tr>"
        for name, counts in sorted(totals["by_source"].items())
    )
    return (
        '<h2>Hits and misses by source</h2><div class="scroll"><table id="by-source"><thead>'
        "<tr><th>source</th><th>hits</th><th>misses</th><th>hit rate</th><th>time saved</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def format_bytes(size: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover (the loop returns)


def _meter(part: int, whole: int) -> str:
    width = 0 if whole <= 0 else min(100, round(part * 100 / whole))
    inner = f'<span style="width:{width}%"></span>'
    return f'<span class="meter" title="{width}% of the cap">{inner}</span>'


def _team_label(row: dict[str, Any]) -> str:
    label = escape(str(row["team"]))
    slug = row.get("slug")
    return label if not slug else f'{label} <span class="muted">· {escape(str(slug))}</span>'


def _teams(stats: dict[str, Any]) -> str:
    rows = stats["by_team"]
    if not rows:
        return '<h2>Per team</h2><p class="empty" id="by-team">No events yet.</p>'
    cap = stats.get("storage", {}).get("cap_bytes", 0)
    body = "".join(
        f'<tr data-team="{escape(str(row["team"]))}"><td>{_team_label(row)}</td>'
        f"{_row_cells(row)}<td>{format_bytes(row.get('storage_bytes', 0))} "
        f"{_meter(row.get('storage_bytes', 0), cap)}</td></tr>"
        for row in rows
    )
    return (
        '<h2>Per team</h2><div class="scroll"><table id="by-team"><thead><tr><th>team</th>'
        f"{_HEAD}<th>storage</th></tr></thead><tbody>{body}</tbody></table></div>"
    )


def _clients(stats: dict[str, Any]) -> str:
    sums = {side: {"lookups": 0, "hits": 0, "time_saved_ms": 0} for side in ("ci", "developer")}
    for day in stats.get("by_day_client", []):
        for side, total in sums.items():
            for key in total:
                total[key] += day.get(side, {}).get(key, 0)
    rows = "".join(
        f'<tr data-client="{side}"><td>{label}</td><td>{total["lookups"]}</td>'
        f"<td>{total['hits']}</td>"
        f"<td>{_rate(total['hits'] / total['lookups'] if total['lookups'] else None)}</td>"
        f"<td>{_saved(total['time_saved_ms'])}</td></tr>"
        for side, label, total in (
            ("ci", "CI", sums["ci"]),
            ("developer", "developer machines", sums["developer"]),
        )
    )
    names = ", ".join(
        f"{escape(name)} ({count})" for name, count in stats.get("ci_names", {}).items()
    )
    seen = f'<p class="muted" id="ci-names">CI seen: {names}</p>' if names else ""
    return (
        "<section><h2>CI and developer machines</h2>"
        '<div class="scroll"><table id="by-client"><thead><tr><th>where</th><th>lookups</th>'
        f"<th>hits</th><th>hit rate</th><th>time saved</th></tr></thead><tbody>{rows}</tbody>"
        f"</table></div>{seen}</section>"
    )


def _misses(stats: dict[str, Any]) -> str:
    rows = stats.get("top_misses", [])
    if not rows:
        return (
            '<section><h2>Tasks that miss most</h2><p class="empty" id="top-misses">No misses '
            "of a named task (cachehook's artifacts name their task).</p></section>"
        )
    body = "".join(
        f'<tr data-task="{escape(row["team"])}/{escape(row["task"])}"><td>{escape(row["task"])}'
        f"</td><td>{escape(row['team'])}</td><td>{row['misses']}</td></tr>"
        for row in rows
    )
    return (
        '<section><h2>Tasks that miss most</h2><div class="scroll"><table id="top-misses">'
        "<thead><tr><th>task</th><th>team</th><th>misses</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


def render_dashboard(stats: dict[str, Any], *, version: str) -> str:
    """The whole page for ``stats`` (``EventLog.stats`` with ``details`` and storage)."""
    totals = stats["totals"]
    storage = stats.get("storage", {"used_bytes": 0, "cap_bytes": 0})
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
            _card(
                "storage used",
                format_bytes(storage["used_bytes"]),
                "storage-used",
                f"of {format_bytes(storage['cap_bytes'])} "
                f"{_meter(storage['used_bytes'], storage['cap_bytes'])}",
            ),
        ]
    )
    period = f"{escape(stats['since'])} to {escape(stats['until'])} (UTC)"
    chart = render_chart(stats, format_duration=format_duration)
    by_day = _table("Per day", "day", list(reversed(stats["by_day"])), "by-day")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>cachehook serve</title><style>{_STYLE}</style></head><body>"
        f'<h1>cachehook remote cache</h1><p class="muted">Cache events from {period}. '
        "A lookup is one task hash in one run; it is a hit if any cache had it. "
        'The same numbers as JSON: <a href="api/stats">api/stats</a>.</p>'
        f'<div class="cards">{cards}</div>'
        f"<h2>Hit rate and time saved per day</h2><figure>{chart}</figure>"
        f'<div class="grid2">{_clients(stats)}{_misses(stats)}</div>'
        f"{_teams(stats)}"
        f"{_sources(totals)}"
        f"<details><summary>Per day</summary>{by_day}</details>"
        f'<p class="muted">cachehook {escape(version)}</p></body></html>'
    )
