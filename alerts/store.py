"""SQLite alert store: one file, WAL mode, safe to share between threads."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from alerts.record import Alert, format_utc
from alerts.sqlite import configure_wal, connect, ensure_schema, transaction
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the schema this code writes.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id  TEXT PRIMARY KEY,
    camera_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    start_utc TEXT NOT NULL,   -- ISO 8601 UTC, fixed width, so text order = time order
    body      TEXT NOT NULL    -- Alert.to_dict() as JSON
);
CREATE INDEX IF NOT EXISTS alerts_camera ON alerts (camera_id, start_utc);
CREATE INDEX IF NOT EXISTS alerts_type ON alerts (type, start_utc);
CREATE INDEX IF NOT EXISTS alerts_start ON alerts (start_utc);
"""

_UNSET: Any = object()


class AlertStoreError(BaqylauError, OSError):
    """The alert database cannot be opened, read or written (bad path, corrupt file)."""


class AlertStore:
    """Alerts in one SQLite file.

    The database runs in WAL mode with ``synchronous=NORMAL`` (readers never block the
    writer; a power cut may lose the last commits but never corrupts the file; see
    https://www.sqlite.org/wal.html). One connection is shared by all threads and guarded by a
    lock; every write is a single ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, rolled back
    on any exception including ``KeyboardInterrupt``, so nothing is ever half-written.

    Args:
        path: Database file; parent directories are created.

    Raises:
        AlertStoreError: When the path cannot be created or opened, the file is not a
            SQLite database, or its schema version is newer than this code.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise AlertStoreError(f"cannot open alert store {self.path}: {exc}") from exc
        try:
            configure_wal(self._conn)
            ensure_schema(self._conn, self._lock, _SCHEMA, SCHEMA_VERSION, f"alert store {self.path}",
                          AlertStoreError)
        except sqlite3.Error as exc:
            self._conn.close()
            raise AlertStoreError(f"alert store {self.path} is unreadable or not a SQLite database "
                                  f"(corrupt?): {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """Hold the lock and one write transaction; commit on success, roll back otherwise."""
        return transaction(self._conn, self._lock)

    def _run(self, what: str, fn):  # noqa: ANN001, ANN202 - small internal wrapper
        try:
            return fn()
        except sqlite3.ProgrammingError as exc:
            raise AlertStoreError(f"alert store {self.path}: cannot {what}: {exc} (closed?)") from exc
        except sqlite3.Error as exc:
            raise AlertStoreError(f"alert store {self.path}: cannot {what}: {exc}") from exc

    def add(self, alert: Alert) -> bool:
        """Insert an alert unless its id exists.

        Returns:
            ``True`` when inserted, ``False`` when ``alert_id`` was already stored (the stored
            row is left unchanged), so re-running the same file adds no duplicates.

        Raises:
            AlertStoreError: On a database error.
        """
        row = (alert.alert_id, alert.camera_id, alert.type, format_utc(alert.start_utc),
               json.dumps(alert.to_dict(), ensure_ascii=False))

        def go() -> bool:
            with self._write() as conn:
                cur = conn.execute("INSERT OR IGNORE INTO alerts (alert_id, camera_id, type, start_utc, "
                                   "body) VALUES (?, ?, ?, ?, ?)", row)
                return cur.rowcount == 1
        return self._run("add an alert", go)

    def update(self, alert_id: str, *, end_time_s: float | None = _UNSET,
               end_utc: dt.datetime | None = _UNSET, track_ids: tuple[int, ...] = _UNSET, snapshot_path: str | None = _UNSET,
               conf: float = _UNSET, status: str = _UNSET,
               details: Mapping[str, Any] = _UNSET) -> Alert | None:
        """Change some fields of a stored alert (read-modify-write in one transaction).

        Only the keywords given are changed; ``details`` replaces the whole mapping.

        Returns:
            The updated alert, or ``None`` when ``alert_id`` is not stored.

        Raises:
            AlertStoreError: On a database error.
            AlertRecordError: When a new value is invalid (e.g. naive ``end_utc``).
        """
        changes = {k: v for k, v in dict(end_time_s=end_time_s, end_utc=end_utc, track_ids=track_ids,
                                          snapshot_path=snapshot_path, conf=conf, status=status,
                                          details=details).items() if v is not _UNSET}

        def go() -> Alert | None:
            with self._write() as conn:
                row = conn.execute("SELECT body FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
                if row is None:
                    return None
                alert = replace(Alert.from_dict(json.loads(row[0])), **changes)
                conn.execute("UPDATE alerts SET body = ? WHERE alert_id = ?",
                             (json.dumps(alert.to_dict(), ensure_ascii=False), alert_id))
                return alert
        return self._run("update an alert", go)

    def get(self, alert_id: str) -> Alert | None:
        """Return the stored alert, or ``None``.

        Raises:
            AlertStoreError: On a database error.
        """
        rows = self._select("SELECT body FROM alerts WHERE alert_id = ?", (alert_id,))
        return rows[0] if rows else None

    def list(self, camera_id: str | None = None, type: str | None = None,  # noqa: A002 - field name
             since_utc: dt.datetime | None = None, limit: int | None = None) -> list[Alert]:
        """Return alerts ordered by ``start_utc`` then ``alert_id``.

        Args:
            camera_id: Only this camera.
            type: Only this alert type.
            since_utc: Only alerts starting at or after this aware datetime.
            limit: At most this many (the earliest).

        Raises:
            AlertStoreError: On a database error.
            AlertRecordError: For a naive ``since_utc``.
        """
        where, args = self._where(camera_id, type, since_utc)
        sql = f"SELECT body FROM alerts{where} ORDER BY start_utc, alert_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return self._select(sql, tuple(args))

    def count(self, camera_id: str | None = None) -> int:
        """Return the number of stored alerts, optionally of one camera.

        Raises:
            AlertStoreError: On a database error.
        """
        where, args = self._where(camera_id, None, None)

        def go() -> int:
            with self._lock:
                return int(self._conn.execute(f"SELECT COUNT(*) FROM alerts{where}", args).fetchone()[0])
        return self._run("count alerts", go)

    @staticmethod
    def _where(camera_id: str | None, type_: str | None,
               since_utc: dt.datetime | None) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if camera_id is not None:
            clauses.append("camera_id = ?")
            args.append(camera_id)
        if type_ is not None:
            clauses.append("type = ?")
            args.append(type_)
        if since_utc is not None:
            clauses.append("start_utc >= ?")
            args.append(format_utc(since_utc))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[Alert]:
        def go() -> list[str]:
            with self._lock:
                return [r[0] for r in self._conn.execute(sql, args).fetchall()]
        return [Alert.from_dict(json.loads(body)) for body in self._run("read alerts", go)]

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise :class:`AlertStoreError`."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
