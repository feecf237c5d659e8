"""The SQLite conventions shared by every store (``alerts/sqlite.py``), on real database files."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from alerts.sqlite import connect_wal, ensure_schema, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"


class NewerError(ValueError):
    pass


def test_wal_schema_version_and_rollback(tmp_path):
    path = tmp_path / "s.db"
    lock = threading.Lock()
    conn = connect_wal(path, synchronous="FULL", row_factory=sqlite3.Row)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ensure_schema(conn, lock, SCHEMA, 3, "test store", NewerError)
    ensure_schema(conn, lock, SCHEMA, 3, "test store", NewerError)  # idempotent
    with transaction(conn, lock):
        conn.execute("INSERT INTO t (v) VALUES ('kept')")
    with pytest.raises(RuntimeError), transaction(conn, lock):
        conn.execute("INSERT INTO t (v) VALUES ('rolled back')")
        raise RuntimeError("boom")
    assert [r["v"] for r in conn.execute("SELECT v FROM t")] == ["kept"]
    with pytest.raises(NewerError, match="schema version 3, newer than this code's 2"):
        ensure_schema(conn, lock, SCHEMA, 2, "test store", NewerError)
    conn.close()


def test_corrupt_file_fails_on_configure(tmp_path):
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        connect_wal(path)
