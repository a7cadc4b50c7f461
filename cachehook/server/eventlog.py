"""The event log of ``cachehook serve``: every accepted cache event, and its stats.

One row per event, in SQLite (``events.sqlite3`` in the storage directory, WAL mode, so
several workers append at once) or in PostgreSQL (``--events-db postgresql://...``, so several
servers share it; issue 13). Both run the same queries (``_database.py``). Rows older than
``retention_days`` are dropped once a day. The same database holds the leases that let one
server at a time sweep a shared object store.

How the stats count (per team and per UTC day of receipt):

- ``by_source``: hits and misses as reported, per source (``LOCAL``, ``REMOTE``).
- a *lookup* is one task hash in one session (``sessionId``): a remote hit after a local miss is
  one lookup, and a hit. ``hit_rate`` = lookups with a hit / lookups.
- ``time_saved_ms``: the sum of the durations of hit events (clients send the producer's run
  time on a hit, 0 on a miss).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from cachehook.server._database import Database, is_database_url

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from cachehook.events import Event
    from cachehook.server._database import Transaction

__all__ = ["EventLog", "day_of", "is_database_url"]

# The schema, one step per statement, each applied once (``_database.py``): append new steps,
# never edit one that has shipped. Portable SQL only: these run on SQLite and PostgreSQL.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
    id {id},
    received_at DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    team TEXT NOT NULL,
    session_id TEXT NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    hash TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    ci TEXT,
    interactive INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS events_by_day ON events (day, team)",
    # Several servers share one sweep of the object store; a lease names who runs it, until
    # when (issue 13).
    """CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)""",
    "DELETE FROM events WHERE id NOT IN"
    " (SELECT MIN(id) FROM events GROUP BY team, session_id, hash, source, event)",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_once"
    " ON events (team, session_id, hash, source, event)",
)
# A retried batch (the answer was lost, the flusher was killed mid-send) must count once: an
# event is one (team, sessionId, hash, source, event), and a repeat is dropped (issue 12).
_INSERT = (
    "INSERT INTO events (received_at, day, team, session_id, source, event, hash, duration_ms,"
    " ci, interactive) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_BY_SOURCE = (
    "SELECT team, day, source, event, COUNT(*), COALESCE(SUM(duration_ms), 0) FROM events"
    " WHERE day >= ? GROUP BY team, day, source, event"
)
_LOOKUPS = (
    "SELECT team, day, COUNT(*), COALESCE(SUM(hit), 0) FROM"
    " (SELECT team, day, MAX(CASE WHEN event = 'HIT' THEN 1 ELSE 0 END) AS hit"
    " FROM events WHERE day >= ? GROUP BY team, day, session_id, hash) AS lookups"
    " GROUP BY team, day"
)
_TAKE_LEASE = (
    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
    " WHERE leases.expires_at < ? OR leases.holder = excluded.holder"
)
_DROP_LEASE = "DELETE FROM leases WHERE name = ? AND holder = ?"


def day_of(timestamp: float) -> str:
    """The UTC day of ``timestamp``, ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


class EventLog:
    """Cache events in SQLite (a file) or PostgreSQL (a URL), shared safely by several processes.

    Args:
        location: the SQLite file (created on first use), or a ``postgresql://`` URL; the
            schema is created or brought up to date either way.
        retention_days: rows older than this many days are removed.

    Raises:
        StoreError: the database cannot be reached, opened, created or migrated.
    """

    def __init__(self, location: str | Path, *, retention_days: int = 400) -> None:
        self.location = location
        self.retention_days = retention_days
        self._pruned_day = ""
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._db = Database(location, schema=_SCHEMA, what="the event log")

    @property
    def is_shared(self) -> bool:
        """Whether the log lives on a database server (several hosts can share it)."""
        return self._db.is_postgres

    def close(self) -> None:
        """Close the connections."""
        self._db.close()

    def record(
        self,
        team: str,
        events: Sequence[Event],
        *,
        ci: str | None,
        interactive: int | None,
        now: float | None = None,
    ) -> None:
        """Append ``events`` of ``team`` in one transaction (a repeated event is dropped)."""
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
        prune = day != self._pruned_day

        def append(tx: Transaction) -> None:
            tx.executemany(_INSERT, rows)
            if prune:
                cutoff = day_of(received - self.retention_days * 86400.0)
                tx.execute("DELETE FROM events WHERE day < ?", (cutoff,))

        self._db.run(append)
        self._pruned_day = day

    def count(self) -> int:
        """How many events are kept."""
        return int(self._db.query("SELECT COUNT(*) FROM events")[0][0])

    def take_lease(self, name: str, *, seconds: float, now: float | None = None) -> bool:
        """Hold ``name`` for ``seconds`` unless another holder's lease on it is still running.

        Taking a lease this log already holds extends it. A server killed while holding one
        blocks the others until it expires, never longer.
        """
        start = time.time() if now is None else now
        params = (name, self._holder, start + seconds, start)
        return bool(self._db.run(lambda tx: tx.execute(_TAKE_LEASE, params).rowcount) > 0)

    def drop_lease(self, name: str) -> None:
        """Give up ``name`` if this log holds it."""
        self._db.run(lambda tx: tx.execute(_DROP_LEASE, (name, self._holder)))

    def stats(self, *, days: int = 30, now: float | None = None) -> dict[str, Any]:
        """Hits, misses, hit rate and time saved: in total, per day and per team.

        Args:
            days: how many UTC days back, today included.
        """
        today = time.time() if now is None else now
        since = day_of(today - (days - 1) * 86400.0)
        by_source = self._db.query(_BY_SOURCE, (since,))
        lookups = self._db.query(_LOOKUPS, (since,))
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
