"""The server's SQL database: a SQLite file, or PostgreSQL at a ``postgresql://`` URL.

One set of queries serves both engines. They are written in the SQL both speak (``COALESCE``
over ``TOTAL``, ``CASE`` over comparisons used as numbers, ``INSERT ... ON CONFLICT``) with
``?`` placeholders, which become psycopg's ``%s``; so no query may hold a literal ``%`` or
``?``. The schema is a list of steps, each applied once and recorded in ``schema_version``,
under a lock, so several servers starting at once migrate it once (issue 13).

Each thread has its own connection: sqlite3 and psycopg connections are not shared. A lost
PostgreSQL connection (a restart, a failover) is dropped and reopened on the next call, and
an operation that failed on it is tried once more on a fresh one: every write the server
makes is safe to repeat (events are deduplicated, leases are upserts).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Protocol

from cachehook.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

__all__ = ["Cursor", "Database", "is_database_url"]

_SQLITE_TIMEOUT = 10.0
_PG_CONNECT_TIMEOUT = 10
_PG_SCHEMA_LOCK = 0x63686B31  # pg_advisory_xact_lock key of the schema migration ("chk1")
_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL server rather than a SQLite file."""
    return location.startswith(_SCHEMES)


class Cursor(Protocol):
    """What both engines' cursors offer."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction:
    """Statements run inside one transaction (see ``Database.transaction``)."""

    def __init__(self, connection: Any, convert: Callable[[str], str]) -> None:
        self._connection = connection
        self._convert = convert

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        cursor: Cursor = self._connection.execute(self._convert(sql), params)
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if isinstance(self._connection, sqlite3.Connection):
            self._connection.executemany(sql, rows)
        else:
            with self._connection.cursor() as cursor:
                cursor.executemany(self._convert(sql), rows)


class Database:
    """A SQLite file or a PostgreSQL database, with its schema brought up to date.

    Args:
        location: a file path, or a ``postgresql://`` URL (libpq's form: user, password,
            host, port, database, ``?sslmode=`` and the other parameters).
        schema: the migration steps, in order; each is one statement, where ``{id}`` stands
            for an auto-numbered integer primary key.
        what: how messages name this database ("the event log").

    Raises:
        StoreError: the database cannot be reached, opened or migrated.
    """

    def __init__(self, location: str | Path, *, schema: Sequence[str], what: str) -> None:
        self.location = location
        self.is_postgres = isinstance(location, str) and is_database_url(location)
        self.what = what
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        if self.is_postgres:
            try:
                import psycopg  # noqa: F401 - optional: the postgres extra
            except ImportError as exc:
                msg = f"{what} on PostgreSQL needs psycopg: pip install 'cachehook[postgres]'"
                raise StoreError(msg) from exc
        self._migrate(schema)

    @property
    def shown(self) -> str:
        """The location for messages, without a password."""
        if not self.is_postgres:
            return str(self.location)
        scheme, _, rest = str(self.location).partition("://")
        credentials, at, host = rest.rpartition("@")
        user = credentials.partition(":")[0]
        return f"{scheme}://{user}{at}{host}" if at else str(self.location)

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.is_postgres:
            import psycopg

            return psycopg.connect(
                str(self.location),
                autocommit=True,
                connect_timeout=_PG_CONNECT_TIMEOUT,
                application_name="cachehook-serve",
            )
        db = sqlite3.connect(self.location, timeout=_SQLITE_TIMEOUT, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _connection(self) -> Any:
        db = getattr(self._local, "db", None)
        if db is not None and self.is_postgres and db.closed:
            self._drop(db)
            db = None
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _drop(self, db: Any) -> None:
        self._local.db = None
        with self._lock, contextlib.suppress(ValueError):
            self._all.remove(db)
        with contextlib.suppress(Exception):
            db.close()

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._lock:
            connections, self._all = self._all, []
        for db in connections:
            with contextlib.suppress(Exception):
                db.close()
        self._local = threading.local()

    def _convert(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.is_postgres else sql

    def _errors(self) -> tuple[type[Exception], ...]:
        if self.is_postgres:
            import psycopg

            return (sqlite3.Error, psycopg.Error)
        return (sqlite3.Error,)

    # -- running statements ------------------------------------------------------------------

    def run(self, work: Callable[[Transaction], Any], *, exclusive: bool = False) -> Any:
        """``work(tx)`` in one transaction, committed when it returns; its result.

        ``exclusive`` also serialises it against every other server (the schema migration).

        Raises:
            StoreError: the database failed (the transaction was rolled back).
        """
        errors = self._errors()
        for attempt in (1, 2):
            db = None
            try:
                db = self._connection()
                return self._in_transaction(db, work, exclusive=exclusive)
            except errors as exc:
                lost = db is None or (self.is_postgres and db.closed)
                if db is not None and lost:
                    self._drop(db)
                if lost and attempt == 1:
                    continue  # a fresh connection, once: every write here is safe to repeat
                msg = f"{self.what} {self.shown} is unusable: {exc}"
                raise StoreError(msg) from exc
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _in_transaction(
        self, db: Any, work: Callable[[Transaction], Any], *, exclusive: bool
    ) -> Any:
        tx = Transaction(db, self._convert)
        if self.is_postgres:
            with db.transaction():
                if exclusive:
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                return work(tx)
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(tx)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read-only statement."""
        return list(self.run(lambda tx: tx.execute(sql, params).fetchall()))

    # -- the schema --------------------------------------------------------------------------

    def _migrate(self, schema: Sequence[str]) -> None:
        id_column = (
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
            if self.is_postgres
            else "INTEGER PRIMARY KEY"
        )

        def migrate(tx: Transaction) -> None:
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = tx.execute("SELECT MAX(version) FROM schema_version").fetchone()
            done = int(row[0]) if row and row[0] is not None else 0
            for step in schema[done:]:
                tx.execute(step.replace("{id}", id_column))
            if len(schema) > done:
                tx.execute("DELETE FROM schema_version")
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (len(schema),))

        self.run(migrate, exclusive=True)
