"""The event log of ``cachehook serve``: every accepted cache event, in SQLite, and its stats.

One row per event (``events.sqlite3`` in the storage directory, WAL mode, so several workers
append at once). Rows older than ``retention_days`` are dropped once a day.

How the stats count (per team and per UTC day of receipt):

- ``by_source``: hits and misses as reported, per source (``LOCAL``, ``REMOTE``).
- a *lookup* is one task hash in one session (``sessionId``): a remote hit after a local miss is
  one lookup, and a hit. ``hit_rate`` = lookups with a hit / lookups.
- ``time_saved_ms``: the sum of the durations of hit events (clients send the producer's run
  time on a hit, 0 on a miss).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from cachehook.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from cachehook.events import Event

__all__ = ["EventLog", "day_of"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    day TEXT NOT NULL,
    team TEXT NOT NULL,
    session_id TEXT NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    hash TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    ci TEXT,
    interactive INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_day ON events (day, team);
DELETE FROM events WHERE id NOT IN
    (SELECT MIN(id) FROM events GROUP BY team, session_id, hash, source, event);
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events (team, session_id, hash, source, event);
"""
# A retried batch (the answer was lost, the flusher was killed mid-send) must count once: an
# event is one (team, sessionId, hash, source, event), and a repeat is dropped (issue 12).
_INSERT = (
    "INSERT INTO events (received_at, day, team, session_id, source, event, hash, duration_ms,"
    " ci, interactive) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_BY_SOURCE = (
    "SELECT team, day, source, event, COUNT(*), TOTAL(duration_ms) FROM events"
    " WHERE day >= ? GROUP BY team, day, source, event"
)
_LOOKUPS = (
    "SELECT team, day, COUNT(*), TOTAL(hit) FROM (SELECT team, day, MAX(event = 'HIT') AS hit"
    " FROM events WHERE day >= ? GROUP BY team, day, session_id, hash) GROUP BY team, day"
)
_TIMEOUT = 10.0


def day_of(timestamp: float) -> str:
    """The UTC day of ``timestamp``, ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


class EventLog:
    """Cache events in a SQLite file, shared safely by several processes.

    Args:
        path: the database file (created with its table on first use).
        retention_days: rows older than this many days are removed.

    Raises:
        StoreError: the database cannot be opened or created.
    """

    def __init__(self, path: Path, *, retention_days: int = 400) -> None:
        self.path = path
        self.retention_days = retention_days
        self._local = threading.local()
        self._pruned_day = ""
        with self._connection() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            db = getattr(self._local, "db", None)
            if db is None:
                db = sqlite3.connect(self.path, timeout=_TIMEOUT, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                self._local.db = db
            yield db
        except sqlite3.Error as exc:
            msg = f"the event log {self.path} is unusable: {exc}"
            raise StoreError(msg) from exc

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def record(
        self,
        team: str,
        events: Sequence[Event],
        *,
        ci: str | None,
        interactive: int | None,
        now: float | None = None,
    ) -> None:
        """Append ``events`` of ``team`` in one transaction."""
        received = time.time() if now is None else now
        day = day_of(received)
        rows = [
            (
                received,
                day,
                team,
                e.session_id,
                e.source,
                e.event,
                e.hash,
                e.duration,
                ci,
                interactive,
            )
            for e in events
        ]
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_INSERT, rows)
                if day != self._pruned_day:
                    cutoff = day_of(received - self.retention_days * 86400.0)
                    db.execute("DELETE FROM events WHERE day < ?", (cutoff,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        self._pruned_day = day

    def count(self) -> int:
        """How many events are kept."""
        with self._connection() as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def stats(self, *, days: int = 30, now: float | None = None) -> dict[str, Any]:
        """Hits, misses, hit rate and time saved: in total, per day and per team.

        Args:
            days: how many UTC days back, today included.
        """
        today = time.time() if now is None else now
        since = day_of(today - (days - 1) * 86400.0)
        with self._connection() as db:
            by_source = db.execute(_BY_SOURCE, (since,)).fetchall()
            lookups = db.execute(_LOOKUPS, (since,)).fetchall()
        total = _Tally()
        per_day: dict[str, _Tally] = {}
        per_team: dict[str, _Tally] = {}
        for team, day, source, kind, count, saved in by_source:
            for tally in (
                total,
                per_day.setdefault(day, _Tally()),
                per_team.setdefault(team, _Tally()),
            ):
                tally.add_events(source, kind, int(count), int(saved))
        for team, day, count, hits in lookups:
            for tally in (
                total,
                per_day.setdefault(day, _Tally()),
                per_team.setdefault(team, _Tally()),
            ):
                tally.add_lookups(int(count), int(hits))
        return {
            "since": since,
            "until": day_of(today),
            "days": days,
            "totals": total.to_json(),
            "by_day": [{"day": day, **per_day[day].to_json()} for day in sorted(per_day)],
            "by_team": [{"team": team, **per_team[team].to_json()} for team in sorted(per_team)],
        }


class _Tally:
    def __init__(self) -> None:
        self.lookups = 0
        self.hits = 0
        self.time_saved_ms = 0
        self.sources = {name: _counts() for name in ("LOCAL", "REMOTE")}

    def add_events(self, source: str, kind: str, count: int, saved_ms: int) -> None:
        counts = self.sources.setdefault(source, _counts())
        if kind == "HIT":
            counts["hits"] += count
            counts["time_saved_ms"] += saved_ms
            self.time_saved_ms += saved_ms
        else:
            counts["misses"] += count

    def add_lookups(self, count: int, hits: int) -> None:
        self.lookups += count
        self.hits += hits

    def to_json(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "misses": self.lookups - self.hits,
            "hit_rate": _rate(self.hits, self.lookups),
            "time_saved_ms": self.time_saved_ms,
            "by_source": {
                name: {
                    **counts,
                    "hit_rate": _rate(counts["hits"], counts["hits"] + counts["misses"]),
                }
                for name, counts in sorted(self.sources.items())
            },
        }


def _counts() -> dict[str, int]:
    return {"hits": 0, "misses": 0, "time_saved_ms": 0}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
