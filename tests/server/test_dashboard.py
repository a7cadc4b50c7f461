"""The dashboard: rendered by the server, checked in a real (headless) Chromium."""

from __future__ import annotations

import json
import time
import uuid
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cachehook.archive import pack
from cachehook.events import Event
from cachehook.server.chart import days_between, render_chart
from cachehook.server.dashboard import format_bytes, format_duration, render_dashboard
from cachehook.server.eventlog import EventLog, day_of
from cachehook.server.tasknames import HEAD_BYTES, task_of
from tests.server.browser import Browser
from tests.server.conftest import API, SLASH

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.server.conftest import Serve


class _Texts(HTMLParser):
    """Text by element id, and the rows of each table by their data-* key."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.rows: dict[str, list[str]] = {}
        self._open: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        key = found.get("id") or next(
            (f"{name}={value}" for name, value in attrs if name.startswith("data-")), None
        )
        if key is not None:
            self._open.append((key, []))
        elif self._open:
            self._open.append(("", []))
        if tag == "td" and self._open:
            self._open[-1][1].append("\t")

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            key, parts = self._open.pop()
            text = "".join(parts)
            if self._open:
                self._open[-1][1].append(text)
            if key.startswith("data-"):
                self.rows[key.removeprefix("data-")] = [
                    " ".join(cell.split())
                    for cell in text.split("\t")[2:]  # after the label
                ]
            elif key:
                self.by_id[key] = " ".join(text.split())

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][1].append(data)


def parse(html: str) -> _Texts:
    texts = _Texts()
    texts.feed(html)
    return texts


def test_format_duration() -> None:
    assert format_duration(0) == "0 ms"
    assert format_duration(999) == "999 ms"
    assert format_duration(4000) == "4.0s"
    assert format_duration(61_500) == "1m 1.5s"
    assert format_duration(3_725_000) == "1h 2m"


def test_render_escapes_and_shows_the_numbers(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite3")
    session = str(uuid.uuid4())
    log.record(
        "acme",
        [Event(session, "LOCAL", "MISS", "a<b>", 0), Event(session, "REMOTE", "HIT", "a<b>", 90)],
        ci=None,
        interactive=None,
    )
    html = render_dashboard(log.stats(), version="1.2.3<script>")
    assert "<script>" not in html
    texts = parse(html)
    assert texts.by_id["total-lookups"] == "1"
    assert texts.by_id["total-hit-rate"] == "100.0%"
    assert texts.by_id["total-time-saved-ms"] == "90"
    assert texts.rows["team=acme"][:4] == ["1", "1", "0", "100.0%"]
    empty = parse(render_dashboard(EventLog(tmp_path / "f.sqlite3").stats(), version="1"))
    assert empty.by_id["total-hit-rate"] == "–"
    assert empty.by_id["by-team"] == "No events yet."


def post_events(serve: Serve, team: str, events: list[dict[str, Any]], **headers: str) -> None:
    response = httpx.post(
        f"{serve.url}{API}{SLASH}events",
        params={"slug": team},
        json=events,
        headers={**serve.auth(), **headers},
    )
    assert response.status_code == 200, response.text


def ev(session: str, source: str, kind: str, hash_: str, duration: int = 0) -> dict[str, Any]:
    return {
        "sessionId": session,
        "source": source,
        "event": kind,
        "hash": hash_,
        "duration": duration,
    }


def cachehook_artifact(tmp_path: Path, task: str) -> bytes:
    """An artifact as cachehook packs it: its meta.json names the task."""
    root = tmp_path / f"project-{uuid.uuid4().hex[:6]}"
    (root / "out").mkdir(parents=True)
    (root / "out" / "file.txt").write_text("built\n")
    meta = {"key": "k", "task": task, "command": ["make", "SECRET=hunter2"], "duration_ms": 5}
    dest = tmp_path / f"{root.name}.tar.zst"
    pack(dest, root, ["out/file.txt"], meta=json.dumps(meta).encode(), log=b"log\n")
    return dest.read_bytes()


def test_the_task_of_an_artifact_is_read_from_its_meta_json(tmp_path: Path) -> None:
    body = cachehook_artifact(tmp_path, "build:docs")
    assert task_of(body[:HEAD_BYTES]) == "build:docs"
    assert task_of(b"\x28\xb5\x2f\xfd" + b"garbage" * 10) is None
    assert task_of(b"PK\x03\x04 not zstd") is None
    assert task_of(body[:20]) is None  # too short to hold meta.json


def test_the_chart_has_a_slot_for_every_day(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite3")
    session = str(uuid.uuid4())
    for days_ago, ci, saved in ((0, "GITHUB_ACTIONS", 4000), (3, None, 120_000), (29, None, 1)):
        when = NOW - days_ago * 86400
        log.record(
            "acme",
            [Event(session, "REMOTE", "HIT", f"h{days_ago}", saved)],
            ci=ci,
            interactive=None,
            now=when,
        )
    stats = {**log.stats(now=NOW), **log.details(now=NOW)}
    svg = render_chart(stats, format_duration=format_duration)
    assert svg.count('class="day"') == 30
    assert svg.count('class="rate"') == 3  # only days with lookups have a hit-rate point
    assert f'data-chart-day="{day_of(NOW)}" data-saved-ms="4000" data-ci-saved-ms="4000"' in svg
    assert f'data-chart-day="{day_of(NOW - 3 * 86400)}" data-saved-ms="120000"' in svg
    assert "<script" not in svg
    assert days_between("2026-02-27", "2026-03-02") == [
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
    ]


NOW = 1_773_144_000.0  # 2026-03-10 12:00 UTC


@pytest.mark.integration
def test_the_dashboard_shows_the_numbers_in_chromium(
    serve_factory: Callable[..., Serve], chromium: str, tmp_path: Path
) -> None:
    serve = serve_factory()
    one, two, three = (str(uuid.uuid4()) for _ in range(3))
    # alpha: a local miss then a remote hit (1.5 s saved); then a full miss
    post_events(
        serve, "alpha", [ev(one, "LOCAL", "MISS", "aa"), ev(one, "REMOTE", "HIT", "aa", 1500)]
    )
    post_events(serve, "alpha", [ev(one, "LOCAL", "MISS", "bb"), ev(one, "REMOTE", "MISS", "bb")])
    # beta: two local hits in two runs (2.5 s + 61 s saved), one from CI
    post_events(
        serve,
        "beta",
        [ev(two, "LOCAL", "HIT", "cc", 2500)],
        **{"x-artifact-client-ci": "GITHUB_ACTIONS"},
    )
    post_events(serve, "beta", [ev(three, "LOCAL", "HIT", "cc", 61_000)])
    # what those events imply: 4 lookups, 3 hits, 1 miss, 75 %, 65 000 ms saved
    # bb is a cachehook artifact whose meta.json names its task: it is the task that misses
    artifact = cachehook_artifact(tmp_path, "lint:types")
    stored = httpx.put(
        f"{serve.url}{API}{SLASH}bb",
        params={"slug": "alpha"},
        content=artifact,
        headers=serve.auth(),
    )
    assert stored.status_code == 202

    with Browser(chromium, tmp_path / "profile") as browser:
        browser.open(f"{serve.url}{SLASH}", width=1280)
        html = browser.evaluate("document.documentElement.outerHTML")
        overflow = browser.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        browser.screenshot(tmp_path / "dashboard-1280.png")
        browser.open(f"{serve.url}{SLASH}", width=390)
        narrow = browser.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        browser.screenshot(tmp_path / "dashboard-390.png")
    assert overflow <= 0, "a horizontal scrollbar at 1280 px"
    assert narrow <= 0, "a horizontal scrollbar at 390 px (wide tables scroll in their box)"
    assert (tmp_path / "dashboard-1280.png").stat().st_size > 10_000

    assert "<title>cachehook serve</title>" in html
    texts = parse(html)
    assert texts.by_id["total-lookups"] == "4"
    assert texts.by_id["total-hits"] == "3"
    assert texts.by_id["total-misses"] == "1"
    assert texts.by_id["total-hit-rate"] == "75.0%"
    assert texts.by_id["total-time-saved"] == "1m 5.0s"
    assert texts.by_id["total-time-saved-ms"] == "65000"
    # the chart: 30 days, today's bar holds all the time saved, 2.5 s of it on CI
    today = day_of(time.time())
    assert html.count('class="day"') == 30
    assert f'data-chart-day="{today}" data-saved-ms="65000" data-ci-saved-ms="2500"' in html
    assert f'data-rate-day="{today}" data-hit-rate="0.75"' in html
    # CI versus developer machines: lookups, hits, hit rate, time saved
    assert texts.rows["client=ci"] == ["1", "1", "100.0%", "2.5s"]
    assert texts.rows["client=developer"] == ["3", "2", "66.7%", "1m 2.5s"]
    assert texts.by_id["ci-names"] == "CI seen: GITHUB_ACTIONS (1)"
    # the task that misses, and nothing else of its metadata
    assert texts.rows["task=alpha/lint:types"] == ["alpha", "1"]
    assert "hunter2" not in html
    assert "make" not in html
    # by source: hits, misses, hit rate, time saved
    assert texts.rows["source=LOCAL"] == ["2", "2", "50.0%", "1m 3.5s"]
    assert texts.rows["source=REMOTE"] == ["1", "1", "50.0%", "1.5s"]
    # per team: lookups, hits, misses, hit rate, local hits/misses, remote hits/misses, saved,
    # storage
    alpha = texts.rows["team=alpha"]
    assert alpha[:9] == ["2", "1", "1", "50.0%", "0", "2", "1", "1", "1.5s"]
    assert alpha[9] == format_bytes(len(artifact))
    assert texts.rows["team=beta"] == [
        "2",
        "2",
        "0",
        "100.0%",
        "2",
        "0",
        "0",
        "0",
        "1m 3.5s",
        "0 B",
    ]
    assert texts.rows[f"day={today}"] == ["4", "3", "1", "75.0%", "2", "2", "1", "1", "1m 5.0s"]

    # the same numbers as JSON
    stats = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").json()
    assert stats["totals"]["lookups"] == 4
    assert stats["totals"]["hit_rate"] == 0.75
    assert stats["totals"]["time_saved_ms"] == 65_000
    assert stats["top_misses"] == [{"team": "alpha", "task": "lint:types", "misses": 1}]
    assert stats["storage"]["used_bytes"] == len(artifact)


@pytest.mark.integration
def test_the_slug_is_shown_beside_the_team_id(shared_server: Serve) -> None:
    team_id = f"team_{uuid.uuid4().hex[:10]}"
    response = httpx.post(
        f"{shared_server.url}{API}{SLASH}events",
        params={"teamId": team_id, "slug": "acme-web"},
        json=[ev(str(uuid.uuid4()), "LOCAL", "MISS", "ab")],
        headers=shared_server.auth(),
    )
    assert response.status_code == 200
    stats = httpx.get(f"{shared_server.url}{SLASH}api{SLASH}stats").json()
    (row,) = [row for row in stats["by_team"] if row["team"] == team_id]
    assert row["slug"] == "acme-web"
    page = httpx.get(f"{shared_server.url}{SLASH}").text
    assert f'{team_id} <span class="muted">· acme-web</span>' in page


@pytest.mark.integration
def test_beyond_loopback_the_dashboard_needs_a_token_and_shows_its_teams(
    serve_factory: Callable[..., Serve],
) -> None:
    # what --host beyond loopback turns on (the tests bind 127.0.0.1 only)
    serve = serve_factory("--dashboard-auth")
    for team in ("alpha", "beta"):
        post_events(serve, team, [ev(str(uuid.uuid4()), "LOCAL", "MISS", "ab")])
    for path in (SLASH, f"{SLASH}api{SLASH}stats"):
        anonymous = httpx.get(f"{serve.url}{path}")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        wrong = httpx.get(f"{serve.url}{path}", auth=("lead", "not-a-token-0123456789"))
        assert wrong.status_code == 401
    everything = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats", auth=("lead", serve.token()))
    assert {row["team"] for row in everything.json()["by_team"]} == {"alpha", "beta"}
    alpha_only = httpx.get(
        f"{serve.url}{SLASH}api{SLASH}stats", auth=("anyone", serve.token("alpha-only"))
    ).json()
    assert [row["team"] for row in alpha_only["by_team"]] == ["alpha"]
    assert alpha_only["totals"]["lookups"] == 1
    page = httpx.get(f"{serve.url}{SLASH}", auth=("x", serve.token("alpha-only")))
    assert page.status_code == 200
    assert 'data-team="alpha"' in page.text
    assert "beta" not in page.text


@pytest.mark.integration
def test_the_dashboard_can_be_turned_off(serve_factory: Callable[..., Serve]) -> None:
    serve = serve_factory("--no-dashboard")
    assert httpx.get(f"{serve.url}{SLASH}").status_code == 404
    assert httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").status_code == 404
    status = httpx.get(f"{serve.url}{API}{SLASH}status", headers=serve.auth())
    assert status.status_code == 200


@pytest.mark.integration
def test_the_dashboard_page_has_no_script_and_a_strict_policy(shared_server: Serve) -> None:
    response = httpx.get(f"{shared_server.url}{SLASH}")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "<script" not in response.text
    assert "http://" not in response.text  # no CDN
    assert "https://" not in response.text
    bad = httpx.get(f"{shared_server.url}{SLASH}api{SLASH}stats", params={"days": "0"})
    assert bad.status_code == 400
