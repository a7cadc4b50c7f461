"""The event log: what is kept, and how hits, misses, rates and time saved are counted."""

from __future__ import annotations

import calendar
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

import pytest

from cachehook.errors import StoreError
from cachehook.events import Event
from cachehook.server.eventlog import EventLog, day_of

if TYPE_CHECKING:
    from pathlib import Path

DAY = 86400.0
NOON = calendar.timegm((2026, 3, 10, 12, 0, 0))


Source = Literal["LOCAL", "REMOTE"]
Kind = Literal["HIT", "MISS"]


def run(*events: tuple[Source, Kind, str, int]) -> list[Event]:
    session = str(uuid.uuid4())
    return [Event(session, source, kind, name, duration) for source, kind, name, duration in events]


def test_day_of_is_utc() -> None:
    assert day_of(NOON) == "2026-03-10"
    assert day_of(calendar.timegm((2026, 3, 10, 23, 59, 59))) == "2026-03-10"


def test_stats_per_day_and_team(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite3")
    log.record(
        "alpha",
        run(("LOCAL", "MISS", "a", 0), ("REMOTE", "HIT", "a", 1000)),
        ci=None,
        interactive=0,
        now=NOON - DAY,
    )
    log.record(
        "alpha", run(("LOCAL", "HIT", "a", 1000)), ci="GITHUB_ACTIONS", interactive=None, now=NOON
    )
    log.record(
        "beta",
        run(("LOCAL", "MISS", "b", 0), ("REMOTE", "MISS", "b", 0)),
        ci=None,
        interactive=None,
        now=NOON,
    )
    stats = log.stats(days=7, now=NOON)
    assert (stats["since"], stats["until"]) == ("2026-03-04", "2026-03-10")
    totals = stats["totals"]
    assert (totals["lookups"], totals["hits"], totals["misses"]) == (3, 2, 1)
    assert totals["hit_rate"] == pytest.approx(0.6667)
    assert totals["time_saved_ms"] == 2000
    assert totals["by_source"]["LOCAL"] == {
        "hits": 1,
        "misses": 2,
        "time_saved_ms": 1000,
        "hit_rate": pytest.approx(0.3333),
    }
    assert [row["day"] for row in stats["by_day"]] == ["2026-03-09", "2026-03-10"]
    assert [row["lookups"] for row in stats["by_day"]] == [1, 2]
    assert [(row["team"], row["hits"], row["time_saved_ms"]) for row in stats["by_team"]] == [
        ("alpha", 2, 2000),
        ("beta", 0, 0),
    ]
    # a shorter window leaves yesterday out
    assert log.stats(days=1, now=NOON)["totals"]["lookups"] == 2
    assert log.count() == 5


def test_the_same_hash_in_two_runs_is_two_lookups(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite3")
    log.record("t", run(("LOCAL", "MISS", "a", 0)), ci=None, interactive=None, now=NOON)
    log.record("t", run(("LOCAL", "HIT", "a", 5)), ci=None, interactive=None, now=NOON)
    assert log.stats(now=NOON)["totals"]["lookups"] == 2
    assert log.stats(now=NOON)["totals"]["hit_rate"] == 0.5


def test_empty_stats_have_no_rate(tmp_path: Path) -> None:
    totals = EventLog(tmp_path / "e.sqlite3").stats()["totals"]
    assert totals["hit_rate"] is None
    assert totals["by_source"]["REMOTE"]["hit_rate"] is None


def test_old_rows_are_pruned(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite3", retention_days=10)
    log.record("t", run(("LOCAL", "HIT", "a", 1)), ci=None, interactive=None, now=NOON - 30 * DAY)
    log.record("t", run(("LOCAL", "HIT", "b", 1)), ci=None, interactive=None, now=NOON)
    assert log.count() == 1


def test_many_threads_and_two_logs_on_one_file(tmp_path: Path) -> None:
    first, second = EventLog(tmp_path / "e.sqlite3"), EventLog(tmp_path / "e.sqlite3")

    def record(index: int) -> None:
        log = first if index % 2 else second
        log.record("t", run(("REMOTE", "HIT", f"h{index}", 1)), ci=None, interactive=None)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, range(200)))
    assert first.count() == 200
    assert first.stats()["totals"]["time_saved_ms"] == 200


def test_an_unusable_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="event log"):
        EventLog(path)
    assert issubclass(StoreError, Exception)
    assert not issubclass(StoreError, sqlite3.Error)
