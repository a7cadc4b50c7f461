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
    from collections.abc import Collection, Sequence
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
    # The dashboard (issue 12): the slug a team's requests carried beside its teamId, and the
    # task an artifact's metadata names (cachehook's meta.json), to name the tasks that miss.
    "CREATE TABLE IF NOT EXISTS team_slugs (team TEXT PRIMARY KEY, slug TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS artifact_tasks (
    team TEXT NOT NULL,
    hash TEXT NOT NULL,
    task TEXT NOT NULL,
    PRIMARY KEY (team, hash)
)""",
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
_SET_SLUG = (
    "INSERT INTO team_slugs (team, slug) VALUES (?, ?)"
    " ON CONFLICT (team) DO UPDATE SET slug = excluded.slug"
)
_SET_TASK = (
    "INSERT INTO artifact_tasks (team, hash, task) VALUES (?, ?, ?)"
    " ON CONFLICT (team, hash) DO UPDATE SET task = excluded.task"
)
# Lookups (one hash in one session) split by where they ran: CI (x-artifact-client-ci sent)
# or a developer's machine.
_BY_CLIENT = (
    "SELECT team, day, is_ci, COUNT(*), COALESCE(SUM(hit), 0), COALESCE(SUM(saved), 0) FROM"
    " (SELECT team, day, CASE WHEN ci IS NULL THEN 0 ELSE 1 END AS is_ci,"
    " MAX(CASE WHEN event = 'HIT' THEN 1 ELSE 0 END) AS hit,"
    " SUM(CASE WHEN event = 'HIT' THEN duration_ms ELSE 0 END) AS saved"
    " FROM events WHERE day >= ?"
    " GROUP BY team, day, session_id, hash, CASE WHEN ci IS NULL THEN 0 ELSE 1 END) AS lookups"
    " GROUP BY team, day, is_ci"
)
_CI_NAMES = (
    "SELECT team, ci, COUNT(*) FROM events WHERE day >= ? AND ci IS NOT NULL GROUP BY team, ci"
)
_MISSED_TASKS = (
    "SELECT t.team, t.task, COUNT(*) FROM"
    " (SELECT team, hash, MAX(CASE WHEN event = 'HIT' THEN 1 ELSE 0 END) AS hit"
    " FROM events WHERE day >= ? GROUP BY team, session_id, hash) AS lookups"
    " JOIN artifact_tasks AS t ON t.team = lookups.team AND t.hash = lookups.hash"
    " WHERE lookups.hit = 0 GROUP BY t.team, t.task"
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
        slug: str | None = None,
    ) -> None:
        """Append ``events`` of ``team`` in one transaction (a repeated event is dropped).

        ``slug``: the slug the request carried beside a ``teamId`` (shown next to it).
        """
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
            if slug is not None and slug != team:
                tx.execute(_SET_SLUG, (team, slug))
            if prune:
                cutoff = day_of(received - self.retention_days * 86400.0)
                tx.execute("DELETE FROM events WHERE day < ?", (cutoff,))

        self._db.run(append)
        self._pruned_day = day

    def record_task(self, team: str, hash_: str, task: str) -> None:
        """Remember that artifact ``hash_`` of ``team`` is the output of ``task``."""
        self._db.run(lambda tx: tx.execute(_SET_TASK, (team, hash_, task)))

    def details(
        self, *, days: int = 30, now: float | None = None, teams: Collection[str] | None = None
    ) -> dict[str, Any]:
        """What the dashboard shows beyond ``stats``: CI versus developer machines per day, CI
        names, the tasks that miss most, and team slugs; only ``teams`` when given."""
        today = time.time() if now is None else now
        since = day_of(today - (days - 1) * 86400.0)

        def wanted(team: str) -> bool:
            return teams is None or team in teams

        by_client: dict[str, dict[str, dict[str, int]]] = {}
        for team, day, is_ci, count, hits, saved in self._db.query(_BY_CLIENT, (since,)):
            if wanted(team):
                side = by_client.setdefault(day, {}).setdefault(
                    "ci" if is_ci else "developer", {"lookups": 0, "hits": 0, "time_saved_ms": 0}
                )
                side["lookups"] += int(count)
                side["hits"] += int(hits)
                side["time_saved_ms"] += int(saved)
        ci_names: dict[str, int] = {}
        for team, name, count in self._db.query(_CI_NAMES, (since,)):
            if wanted(team):
                ci_names[name] = ci_names.get(name, 0) + int(count)
        missed = [
            {"team": team, "task": task, "misses": int(count)}
            for team, task, count in self._db.query(_MISSED_TASKS, (since,))
            if wanted(team)
        ]
        missed.sort(key=lambda row: (-row["misses"], row["team"], row["task"]))
        slugs = {
            team: slug
            for team, slug in self._db.query("SELECT team, slug FROM team_slugs")
            if wanted(team)
        }
        return {
            "by_day_client": [{"day": day, **by_client[day]} for day in sorted(by_client)],
            "ci_names": dict(sorted(ci_names.items())),
            "top_misses": missed[:10],
            "slugs": slugs,
        }

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

    def stats(
        self, *, days: int = 30, now: float | None = None, teams: Collection[str] | None = None
    ) -> dict[str, Any]:
        """Hits, misses, hit rate and time saved: in total, per day and per team.

        Args:
            days: how many UTC days back, today included.
            teams: count only these teams (a token's own); None: all.
        """
        today = time.time() if now is None else now
        since = day_of(today - (days - 1) * 86400.0)
        by_source = self._db.query(_BY_SOURCE, (since,))
        lookups = self._db.query(_LOOKUPS, (since,))
        if teams is not None:
            by_source = [row for row in by_source if row[0] in teams]
            lookups = [row for row in lookups if row[0] in teams]
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
