"""SQLite plumbing shared by the response cache and the query ledger.

One file per store, WAL mode, one commit per write: a killed process loses at most the write it
was in, and several processes on one node can share the file. On a cluster both stores live with
the serving side (one owner process), so env runners on every node share one cache and one ledger.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A store file cannot be opened or written."""


def open_sqlite(path: str | Path | None, schema: str, what: str) -> sqlite3.Connection:
    """Open (creating) a SQLite store; a corrupt file is moved aside, never silently reused."""
    if path is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(schema)
        return conn
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{what} {str(path)!r}: cannot create its folder ({e.strerror})") from e
    try:
        return _connect(path, schema)
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise StoreError(f"{what} {str(path)!r}: locked by another process ({e})") from e
        if isinstance(e, sqlite3.OperationalError) and not path.exists():
            raise StoreError(f"{what} {str(path)!r}: cannot be created ({e})") from e
        if isinstance(e, sqlite3.OperationalError) and "readonly" in str(e):
            raise StoreError(f"{what} {str(path)!r}: read-only ({e})") from e
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        path.rename(aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        log.warning("%s %s was unreadable (%s); moved to %s and started afresh", what, path, e,
                    aside)
        return _connect(path, schema)


def _connect(path: Path, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
        conn.commit()
    except Exception:
        conn.close()
        raise
    return conn


class SQLiteStore:
    """A connection plus a lock: stores are used from Serve replicas' threads too."""

    def __init__(self, path: str | Path | None, schema: str, what: str) -> None:
        self.path = None if path is None else Path(path)
        self.what = what
        self._conn = open_sqlite(path, schema, what)
        self._lock = threading.Lock()

    def write(self, sql: str, rows: list[tuple]) -> None:
        """Run one statement over `rows` and commit them together."""
        with self._lock:
            try:
                self._conn.executemany(sql, rows)
                self._conn.commit()
            except sqlite3.OperationalError as e:
                self._conn.rollback()
                raise StoreError(f"{self.what} {self.path}: write failed ({e})") from e

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of one query."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
