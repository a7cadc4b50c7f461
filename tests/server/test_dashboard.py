"""The dashboard: rendered by the server, checked in a real (headless) Chromium."""

from __future__ import annotations

import re
import subprocess
import uuid
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cachehook.events import Event
from cachehook.server.dashboard import format_duration, render_dashboard
from cachehook.server.eventlog import EventLog
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
    # beta: two local hits in two runs (2.5 s + 61 s saved), from CI
    post_events(
        serve,
        "beta",
        [ev(two, "LOCAL", "HIT", "cc", 2500)],
        **{"x-artifact-client-ci": "GITHUB_ACTIONS"},
    )
    post_events(serve, "beta", [ev(three, "LOCAL", "HIT", "cc", 61_000)])
    # what those events imply: 4 lookups, 3 hits, 1 miss, 75 %, 65 000 ms saved

    profile = tmp_path / "chromium-profile"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    done = subprocess.run(
        [*command, "--dump-dom", f"{serve.url}{SLASH}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<title>cachehook serve</title>" in done.stdout
    texts = parse(done.stdout)
    assert texts.by_id["total-lookups"] == "4"
    assert texts.by_id["total-hits"] == "3"
    assert texts.by_id["total-misses"] == "1"
    assert texts.by_id["total-hit-rate"] == "75.0%"
    assert texts.by_id["total-time-saved"] == "1m 5.0s"
    assert texts.by_id["total-time-saved-ms"] == "65000"
    # by source: hits, misses, hit rate, time saved
    assert texts.rows["source=LOCAL"] == ["2", "2", "50.0%", "1m 3.5s"]
    assert texts.rows["source=REMOTE"] == ["1", "1", "50.0%", "1.5s"]
    # per team: lookups, hits, misses, hit rate, local hits/misses, remote hits/misses, saved
    assert texts.rows["team=alpha"] == ["2", "1", "1", "50.0%", "0", "2", "1", "1", "1.5s"]
    assert texts.rows["team=beta"] == ["2", "2", "0", "100.0%", "2", "0", "0", "0", "1m 3.5s"]
    (today,) = [key for key in texts.rows if key.startswith("day=")]
    assert re.fullmatch(r"day=\d{4}-\d{2}-\d{2}", today)
    assert texts.rows[today] == ["4", "3", "1", "75.0%", "2", "2", "1", "1", "1m 5.0s"]

    # the same numbers as JSON
    stats = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").json()
    assert stats["totals"]["lookups"] == 4
    assert stats["totals"]["hit_rate"] == 0.75
    assert stats["totals"]["time_saved_ms"] == 65_000

    # and it renders: a screenshot of a page with content is not blank
    shot = tmp_path / "dashboard.png"
    done = subprocess.run(
        [*command, f"--screenshot={shot}", "--window-size=1280,1000", f"{serve.url}{SLASH}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 10_000


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
