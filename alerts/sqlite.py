"""The SQLite conventions every baqylau store shares (alerts, sightings, watchlist, audit log).

Each store is one file opened by several processes (analysis workers write, CLI commands read
and write), so every connection uses write-ahead logging (readers never block the writer;
https://www.sqlite.org/wal.html), autocommit mode with explicit ``BEGIN IMMEDIATE`` write
transactions (the write lock is taken at the start, so two writers never deadlock on a lock
upgrade), a 30 s busy timeout, and a ``PRAGMA user_version`` schema number that refuses files
written by newer code.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

#: How long a connection waits for another process's write lock before failing, s.
BUSY_TIMEOUT_S = 30.0


def connect_wal(path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                row_factory: type | None = None) -> sqlite3.Connection:
    """Open a store's database for sharing between processes and threads.

    Args:
        path: The database file (created when missing; its folder must exist).
        synchronous: ``NORMAL`` (safe against a process crash; in WAL mode a power cut may lose
            the last transactions) or ``FULL`` (also durable across a power cut, slower
            commits; https://www.sqlite.org/pragma.html#pragma_synchronous).
        row_factory: Optional ``sqlite3.Row``.

    Returns:
        A connection in autocommit mode usable from several threads (serialise use with a lock).

    Raises:
        sqlite3.Error: When the file cannot be opened or is not a database.
    """
    conn = connect(path)
    try:
        configure_wal(conn, synchronous=synchronous, row_factory=row_factory)
    except BaseException:
        conn.close()
        raise
    return conn


def connect(path: str | Path) -> sqlite3.Connection:
    """``sqlite3.connect`` in autocommit mode, shareable between threads, with the busy timeout
    (opening does not read the file: a corrupt one fails in :func:`configure_wal`).

    Raises:
        sqlite3.Error: When the file cannot be opened.
    """
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)


def configure_wal(conn: sqlite3.Connection, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                  row_factory: type | None = None) -> None:
    """Switch a connection to WAL and the given ``synchronous`` level (see :func:`connect_wal`).

    Raises:
        sqlite3.Error: When the file is not a database (corrupt).
    """
    if row_factory is not None:
        conn.row_factory = row_factory
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        log.warning("%s: journal_mode is %s, not wal (readers may block the writer)",
                    conn.execute("PRAGMA database_list").fetchone()[2], mode)
    conn.execute(f"PRAGMA synchronous={synchronous}")


@contextmanager
def transaction(conn: sqlite3.Connection, lock: threading.Lock | threading.RLock) -> Iterator[sqlite3.Connection]:
    """Hold ``lock`` and one ``BEGIN IMMEDIATE`` write transaction; commit on success, roll back
    on any exception (which is re-raised)."""
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def ensure_schema(conn: sqlite3.Connection, lock: threading.Lock | threading.RLock, schema: str, version: int,
                  what: str, error: type[Exception], separator: str = ";") -> None:
    """Create the tables of ``schema`` (``CREATE ... IF NOT EXISTS`` statements) and stamp ``version``.

    Args:
        conn: From :func:`connect_wal`.
        lock: The store's connection lock.
        schema: SQL statements separated by ``separator`` (``";\\n"`` when triggers contain ``;``).
        version: This code's schema number.
        what: The store and file, for the error message.
        error: The store's exception class for a file written by newer code.

    Raises:
        error: When the file's schema version is newer than ``version``.
        sqlite3.Error: When the statements fail.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > version:
        raise error(f"{what} has schema version {found}, newer than this code's {version}; upgrade baqylau")
    with transaction(conn, lock):
        for statement in schema.split(separator):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version}")
