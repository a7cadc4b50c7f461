"""The event log: what is kept, and how hits, misses, rates and time saved are counted.

The tests that take ``location`` run on SQLite and on a real PostgreSQL server (issue 13): the
same queries must give the same numbers on both.
"""

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
    from collections.abc import Callable, Iterator
    from pathlib import Path

DAY = 86400.0
NOON = calendar.timegm((2026, 3, 10, 12, 0, 0))


Source = Literal["LOCAL", "REMOTE"]
Kind = Literal["HIT", "MISS"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's event log lives: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        return tmp_path / "events.sqlite3"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def open_log(location: str | Path) -> Iterator[Callable[..., EventLog]]:
    """``open_log(retention_days=...)``: an event log at ``location``, closed after the test."""
    opened: list[EventLog] = []

    def open_(**options: int) -> EventLog:
        log = EventLog(location, **options)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


def run(*events: tuple[Source, Kind, str, int]) -> list[Event]:
    session = str(uuid.uuid4())
    return [Event(session, source, kind, name, duration) for source, kind, name, duration in events]


def test_day_of_is_utc() -> None:
    assert day_of(NOON) == "2026-03-10"
    assert day_of(calendar.timegm((2026, 3, 10, 23, 59, 59))) == "2026-03-10"


def test_stats_per_day_and_team(open_log: Callable[..., EventLog]) -> None:
    log = open_log()
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


def test_the_same_hash_in_two_runs_is_two_lookups(open_log: Callable[..., EventLog]) -> None:
    log = open_log()
    log.record("t", run(("LOCAL", "MISS", "a", 0)), ci=None, interactive=None, now=NOON)
    log.record("t", run(("LOCAL", "HIT", "a", 5)), ci=None, interactive=None, now=NOON)
    assert log.stats(now=NOON)["totals"]["lookups"] == 2
    assert log.stats(now=NOON)["totals"]["hit_rate"] == 0.5


def test_empty_stats_have_no_rate(open_log: Callable[..., EventLog]) -> None:
    totals = open_log().stats()["totals"]
    assert totals["hit_rate"] is None
    assert totals["by_source"]["REMOTE"]["hit_rate"] is None


def test_old_rows_are_pruned(open_log: Callable[..., EventLog]) -> None:
    log = open_log(retention_days=10)
    log.record("t", run(("LOCAL", "HIT", "a", 1)), ci=None, interactive=None, now=NOON - 30 * DAY)
    log.record("t", run(("LOCAL", "HIT", "b", 1)), ci=None, interactive=None, now=NOON)
    assert log.count() == 1


def test_many_threads_and_two_logs_on_one_file(open_log: Callable[..., EventLog]) -> None:
    first, second = open_log(), open_log()

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


def test_a_repeated_batch_counts_once(open_log: Callable[..., EventLog]) -> None:
    log = open_log()
    batch = run(("LOCAL", "MISS", "a", 0), ("REMOTE", "HIT", "a", 700))
    for _ in range(3):  # the client retried: the answer was lost
        log.record("t", batch, ci=None, interactive=None, now=NOON)
    assert log.count() == 2
    assert log.stats(now=NOON)["totals"]["time_saved_ms"] == 700


def test_the_schema_is_migrated_once_and_rows_stay(open_log: Callable[..., EventLog]) -> None:
    first = open_log()
    first.record("t", run(("LOCAL", "HIT", "a", 1)), ci=None, interactive=None, now=NOON)
    with ThreadPoolExecutor(4) as pool:  # several servers starting at once
        logs = list(pool.map(lambda _: open_log(), range(4)))
    assert [log.count() for log in logs] == [1, 1, 1, 1]


def test_one_lease_holder_at_a_time_until_it_expires(open_log: Callable[..., EventLog]) -> None:
    one, two = open_log(), open_log()
    assert one.take_lease("sweep", seconds=60, now=NOON)
    assert not two.take_lease("sweep", seconds=60, now=NOON + 1)
    assert one.take_lease("sweep", seconds=60, now=NOON + 2)  # the holder extends it
    assert two.take_lease("other", seconds=60, now=NOON + 3)  # another name is free
    assert two.take_lease("sweep", seconds=60, now=NOON + 63)  # expired: a killed holder
    assert not one.take_lease("sweep", seconds=60, now=NOON + 64)
    two.drop_lease("sweep")
    assert one.take_lease("sweep", seconds=60, now=NOON + 65)
    one.drop_lease("other")  # not its lease: nothing happens
    assert not one.take_lease("other", seconds=60, now=NOON + 4)


@pytest.mark.integration
def test_a_lost_postgresql_connection_is_reopened_once(postgres_url: str) -> None:
    """A restart or failover ends the server's sessions: the next call works all the same."""
    import psycopg

    log = EventLog(postgres_url)
    try:
        log.record("t", run(("LOCAL", "HIT", "a", 1)), ci=None, interactive=None, now=NOON)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert ended  # the log's own connection was among them
        log.record("t", run(("LOCAL", "HIT", "b", 1)), ci=None, interactive=None, now=NOON)
        assert log.count() == 2
    finally:
        log.close()


@pytest.mark.integration
def test_sqlite_and_postgresql_give_the_dashboard_the_same_numbers(
    tmp_path: Path, postgres_url: str
) -> None:
    """Every query the dashboard runs, on the same events in both engines (issue 13)."""
    logs = [EventLog(tmp_path / "events.sqlite3"), EventLog(postgres_url)]
    sessions = [
        run(("LOCAL", "MISS", f"h{i % 7}", 0), ("REMOTE", "HIT", f"h{i % 7}", 90 * i))
        for i in range(20)
    ]
    sessions += [
        run(("LOCAL", "MISS", f"m{i % 3}", 0), ("REMOTE", "MISS", f"m{i % 3}", 0)) for i in range(9)
    ]
    try:
        for log in logs:
            for index, events in enumerate(sessions):
                team = ("team_abc", "beta")[index % 2]
                ci = ("GITHUB_ACTIONS", None, "GITLAB_CI")[index % 3]
                day = NOON - (index % 4) * DAY
                log.record(team, events, ci=ci, interactive=index % 2, now=day, slug="acme")
                log.record(team, events, ci=ci, interactive=index % 2, now=day)  # a retry
            for index in range(3):
                log.record_task("team_abc", f"m{index}", f"pkg#build{index}")
                log.record_task("beta", f"m{index}", f"pkg#test{index}")
        for days in (1, 3, 30):
            sqlite_side, postgres_side = (
                (log.stats(days=days, now=NOON), log.details(days=days, now=NOON)) for log in logs
            )
            assert sqlite_side == postgres_side
            assert sqlite_side[0]["totals"]["lookups"] > 0
        assert logs[0].details(now=NOON)["top_misses"]
        assert logs[0].count() == logs[1].count() == 2 * len(sessions)
        assert logs[0].stats(now=NOON, teams={"beta"}) == logs[1].stats(now=NOON, teams={"beta"})
    finally:
        for log in logs:
            log.close()
