"""Audit log of searches and watchlist changes: who asked what, for which case, and when.

Every search of the footage (by photo, by colour, follow) and every watchlist change is
recorded with the user, the case reference and the query. **Record before showing the
results**: call :meth:`AuditLog.record` first and display the results only when it returned,
so that no result can be seen without a row (if recording fails, the search fails). Record
the result count too when it is known (the search has run, the results are not shown yet).

The log is append-only from the API's point of view: there is no update or delete, and
SQLite triggers refuse ``UPDATE`` and ``DELETE`` on the table. Each row stores a SHA-256
hash chain: ``hash = sha256(previous row's hash + canonical JSON of the row)`` (the first row
follows 64 zeros), so changing, inserting or removing a row with raw SQL is detected by
:meth:`AuditLog.verify`, which names the first bad row. Rewriting the whole chain from a
point on is not detectable from the file alone: publish :meth:`AuditLog.head` elsewhere (a
daily report, a log shipped off the machine) to anchor it (the same idea as a transparency
log; Crosby and Wallach, "Efficient Data Structures for Tamper-Evident Logging", USENIX
Security 2009).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.sqlite import connect_wal, ensure_schema, transaction
from ingest.errors import BaqylauError

log = logging.getLogger(__name__)

#: ``prev_hash`` of the first row.
GENESIS_HASH = "0" * 64
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc  TEXT NOT NULL,     -- ISO 8601 UTC, fixed width, so text order = time order
    user      TEXT NOT NULL,
    case_ref  TEXT NOT NULL,
    action    TEXT NOT NULL,
    query     TEXT NOT NULL,     -- canonical JSON
    results   INTEGER,
    note      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, time_utc);
CREATE INDEX IF NOT EXISTS audit_case ON audit (case_ref, time_utc);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


class AuditError(BaqylauError, ValueError):
    """An audit record is invalid (empty user, case or action; a query that is not JSON-able)."""


class AuditStoreError(BaqylauError, OSError):
    """The audit database cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row.

    Attributes:
        seq: Row number, from 1, in recording order.
        time_utc: When it was recorded, aware UTC.
        user: Who asked.
        case_ref: Case reference the search was made for.
        action: What was done, e.g. ``"search.photo"``, ``"watchlist.add"``.
        query: The query as recorded (JSON types).
        results: Number of results, or ``None`` when not known.
        note: Free text.
        hash: Hex SHA-256 chain hash of this row.
    """

    seq: int
    time_utc: dt.datetime
    user: str
    case_ref: str
    action: str
    query: Mapping[str, Any]
    results: int | None
    note: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """Result of :meth:`AuditLog.verify`; true when the chain is intact.

    Attributes:
        ok: The chain is intact.
        rows: Rows checked.
        first_bad_seq: ``seq`` of the first row that breaks the chain, or ``None``.
        reason: What is wrong there, or ``""``.
    """

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces, UTF-8 text, no NaN (the hashed form).

    Raises:
        AuditError: When the value is not JSON-able (or holds NaN or infinity).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit query is not JSON-able: {exc}") from exc


def row_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """``sha256(prev_hash + canonical_json(fields))`` as 64 hex digits."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


def _fmt(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FIELDS = ("seq", "time_utc", "user", "case_ref", "action", "query", "results", "note")


class AuditLog:
    """Append-only audit log in one SQLite file (WAL, shared by processes and threads).

    Args:
        path: Database file (the application uses ``data_dir/audit.db``); parents are created.

    Raises:
        AuditStoreError: When the file cannot be opened or is not a SQLite database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect_wal(self.path, synchronous="FULL")  # an audit row must survive a power cut
            ensure_schema(self._conn, self._lock, _SCHEMA, SCHEMA_VERSION, f"audit log {self.path}", AuditStoreError,
                          separator=";\n")  # triggers hold ';' inside BEGIN ... END
        except (OSError, sqlite3.Error) as exc:
            raise AuditStoreError(f"cannot open audit log {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def record(self, *, user: str, case_ref: str, action: str, query: Mapping[str, Any],
               results: int | None = None, note: str = "") -> int:
        """Append one row, chained to the previous one; call it before showing any result.

        Args:
            user: Who asks; not empty.
            case_ref: Case reference; not empty.
            action: What is done, e.g. ``"search.photo"``; not empty.
            query: The query's parameters, JSON-able (e.g. a photo's SHA-256, not its pixels).
            results: Number of results, or ``None``.
            note: Free text.

        Returns:
            The row's ``seq``.

        Raises:
            AuditError: On an empty user, case_ref or action, a query that is not a JSON-able
                mapping, or a negative ``results``.
            AuditStoreError: When the row cannot be written (then show nothing).
        """
        for name, value in (("user", user), ("case_ref", case_ref), ("action", action)):
            if not isinstance(value, str) or not value.strip():
                raise AuditError(f"audit {name} must be a non-empty string, got {value!r}")
        if not isinstance(query, Mapping):
            raise AuditError(f"audit query must be a mapping, got {type(query).__name__}")
        if results is not None and (not isinstance(results, int) or results < 0):
            raise AuditError(f"audit results must be a count >= 0 or None, got {results!r}")
        query_json = canonical_json(dict(query))
        try:
            with transaction(self._conn, self._lock):
                last = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                prev = last[1] if last else GENESIS_HASH
                seq = self._next_seq(last[0] if last else 0)
                fields = {"seq": seq, "time_utc": _fmt(dt.datetime.now(dt.timezone.utc)),
                          "user": user.strip(), "case_ref": case_ref.strip(), "action": action.strip(),
                          "query": json.loads(query_json), "results": results, "note": note}
                self._conn.execute(
                    "INSERT INTO audit (seq, time_utc, user, case_ref, action, query, results, note, "
                    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, fields["time_utc"], fields["user"], fields["case_ref"], fields["action"],
                     query_json, results, note, prev, row_hash(prev, fields)))
        except sqlite3.Error as exc:
            raise AuditStoreError(f"audit log {self.path}: cannot record: {exc}") from exc
        log.info("audit #%d: %s %s case %s", seq, user, action, case_ref)
        return seq

    def _next_seq(self, last_seq: int) -> int:
        # AUTOINCREMENT's counter also remembers rows deleted from the end
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        return max(last_seq, row[0] if row else 0) + 1

    def entries(self, *, user: str | None = None, case_ref: str | None = None,
                since: dt.datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        """Rows, newest first, optionally filtered.

        Args:
            user: Only this user's rows.
            case_ref: Only this case's rows.
            since: Only rows recorded at or after this aware time.
            limit: Most rows returned (>= 1).

        Raises:
            AuditError: For a naive ``since`` or ``limit`` < 1.
            AuditStoreError: On a database error.
        """
        if limit < 1:
            raise AuditError(f"limit must be >= 1, got {limit}")
        where, args = [], []
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if case_ref is not None:
            where.append("case_ref = ?")
            args.append(case_ref)
        if since is not None:
            if since.tzinfo is None:
                raise AuditError(f"since {since!r} is naive; give an aware UTC time")
            where.append("time_utc >= ?")
            args.append(_fmt(since))
        sql = ("SELECT seq, time_utc, user, case_ref, action, query, results, note, hash FROM audit"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?")
        with self._lock:
            try:
                rows = self._conn.execute(sql, (*args, int(limit))).fetchall()
            except sqlite3.Error as exc:
                raise AuditStoreError(f"audit log {self.path}: cannot read: {exc}") from exc
        return [AuditEntry(seq=r[0], time_utc=dt.datetime.fromisoformat(r[1]), user=r[2], case_ref=r[3],
                           action=r[4], query=json.loads(r[5]), results=r[6], note=r[7], hash=r[8])
                for r in rows]

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last row (``(0, GENESIS_HASH)`` when empty), to publish elsewhere."""
        with self._lock:
            row = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), row[1]) if row else (0, GENESIS_HASH)

    def verify(self) -> AuditCheck:
        """Recompute the hash chain over every row.

        Detects a changed row, a row inserted or removed in the middle (seq gap or broken
        link) and rows removed from the end (``sqlite_sequence`` remembers the highest seq);
        see the module docstring for what it cannot detect.

        Returns:
            An :class:`AuditCheck`, true when intact, else naming the first bad row.

        Raises:
            AuditStoreError: On a database error.
        """
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, time_utc, user, case_ref, action, query, results, note, prev_hash, hash "
                    "FROM audit ORDER BY seq").fetchall()
                top = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
            except sqlite3.Error as exc:
                raise AuditStoreError(f"audit log {self.path}: cannot read: {exc}") from exc
        prev, expected_seq = GENESIS_HASH, 1
        for row in rows:
            seq = row[0]
            if seq != expected_seq:
                return self._broken(len(rows), expected_seq, f"row {expected_seq} is missing")
            if row[8] != prev:
                return self._broken(len(rows), seq, "prev_hash does not match the previous row")
            try:
                fields = dict(zip(_FIELDS, (*row[:5], json.loads(row[5]), *row[6:8])))
                digest = row_hash(prev, fields)
            except (ValueError, AuditError) as exc:
                return self._broken(len(rows), seq, f"unreadable row: {exc}")
            if digest != row[9]:
                return self._broken(len(rows), seq, "contents do not match the hash")
            prev, expected_seq = row[9], seq + 1
        if top is not None and top[0] >= expected_seq:
            return self._broken(len(rows), expected_seq, f"rows {expected_seq}..{top[0]} were removed from the end")
        return AuditCheck(ok=True, rows=len(rows))

    def _broken(self, rows: int, seq: int, reason: str) -> AuditCheck:
        log.error("audit log %s: chain broken at row %d: %s", self.path, seq, reason)
        return AuditCheck(ok=False, rows=rows, first_bad_seq=seq, reason=reason)
