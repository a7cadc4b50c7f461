"""The dashboard's chart, drawn by the server as inline SVG (no script, no CDN): per UTC day,
time saved as bars (CI stacked on developer machines) and the hit rate as a line.

Every day of the period has a slot, with or without events; a day without lookups has no
hit-rate point. Each bar and point carries a ``<title>`` (the browser's tooltip) and ``data-*``
attributes with the exact numbers.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

__all__ = ["days_between", "render_chart"]

_WIDTH, _HEIGHT = 960, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 44, 16, 40
_CI, _DEV, _LINE = "#2b6cb0", "#90cdf4", "#c05621"


def days_between(since: str, until: str) -> list[str]:
    """Every ``YYYY-MM-DD`` from ``since`` to ``until``, both included."""
    start = calendar.timegm(time.strptime(since, "%Y-%m-%d"))
    end = calendar.timegm(time.strptime(until, "%Y-%m-%d"))
    return [
        time.strftime("%Y-%m-%d", time.gmtime(start + index * 86400))
        for index in range(int((end - start) // 86400) + 1)
    ]


def _nice_ceiling(value: float) -> float:
    """A round upper bound for an axis: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _minutes(ms: float) -> str:
    minutes = ms / 60000
    return f"{minutes:.0f} min" if minutes >= 10 or minutes == 0 else f"{minutes:.1f} min"


def render_chart(stats: dict[str, Any], *, format_duration: Any) -> str:
    """The ``<svg>`` for ``stats`` (``EventLog.stats`` merged with ``EventLog.details``)."""
    days = days_between(stats["since"], stats["until"])
    rates = {row["day"]: row["hit_rate"] for row in stats["by_day"]}
    clients = {row["day"]: row for row in stats.get("by_day_client", [])}

    def saved(day: str, side: str) -> int:
        return int(clients.get(day, {}).get(side, {}).get("time_saved_ms", 0))

    most = max((saved(d, "ci") + saved(d, "developer") for d in days), default=0)
    peak = _nice_ceiling(most / 60000) * 60000  # a round number of minutes
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(days)
    parts = [
        f'<svg id="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        'aria-labelledby="chart-title" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Time saved per day (bars: CI and developer machines) and hit '
        "rate (line)</title>",
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):  # grid, left axis (time), right axis (rate)
        y = _TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e2e8f0"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{_minutes(peak * fraction)}</text>"
            f'<text x="{_WIDTH - _RIGHT + 6}" y="{y + 4:.1f}" class="axis">'
            f"{fraction * 100:.0f}%</text>"
        )
    points: list[str] = []
    for index, day in enumerate(days):
        x = _LEFT + index * slot
        ci, dev = saved(day, "ci"), saved(day, "developer")
        dev_h, ci_h = plot_h * dev / peak, plot_h * ci / peak
        base = _TOP + plot_h
        label = f"{day}: {format_duration(ci + dev)} saved (CI {format_duration(ci)})"
        parts.append(
            f'<g class="day" data-chart-day="{day}" data-saved-ms="{ci + dev}" '
            f'data-ci-saved-ms="{ci}">'
            f"<title>{label}</title>"
            f'<rect x="{x + slot * 0.15:.1f}" y="{base - dev_h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{dev_h:.1f}" fill="{_DEV}"/>'
            f'<rect x="{x + slot * 0.15:.1f}" y="{base - dev_h - ci_h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{ci_h:.1f}" fill="{_CI}"/></g>'
        )
        if index % max(1, len(days) // 6) == 0 or index == len(days) - 1:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{_HEIGHT - _BOTTOM + 16}" text-anchor="middle" '
                f'class="axis">{day[5:]}</text>'
            )
        rate = rates.get(day)
        if rate is not None:
            y = _TOP + plot_h * (1 - rate)
            points.append(f"{x + slot / 2:.1f},{y:.1f}")
            parts.append(
                f'<circle class="rate" data-rate-day="{day}" data-hit-rate="{rate}" '
                f'cx="{x + slot / 2:.1f}" cy="{y:.1f}" r="3.5" fill="{_LINE}">'
                f"<title>{day}: hit rate {rate * 100:.1f}%</title></circle>"
            )
    if len(points) > 1:
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{_LINE}" stroke-width="2"/>'
        )
    legend_y = _HEIGHT - 8
    parts.append(
        f'<rect x="{_LEFT}" y="{legend_y - 9}" width="10" height="10" fill="{_CI}"/>'
        f'<text x="{_LEFT + 14}" y="{legend_y}" class="axis">time saved on CI</text>'
        f'<rect x="{_LEFT + 140}" y="{legend_y - 9}" width="10" height="10" fill="{_DEV}"/>'
        f'<text x="{_LEFT + 154}" y="{legend_y}" class="axis">on developer machines</text>'
        f'<line x1="{_LEFT + 320}" x2="{_LEFT + 340}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
        f'stroke="{_LINE}" stroke-width="2"/>'
        f'<text x="{_LEFT + 346}" y="{legend_y}" class="axis">hit rate (right axis)</text>'
        "</svg>"
    )
    return "".join(parts)
