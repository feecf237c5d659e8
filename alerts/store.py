"""SQLite alert store: alerts, their lifecycle history, the outbox and the Open311 tickets, in one
file (WAL mode, shared by threads and processes).

Every change of an alert (created, updated, ended, a status change) is one transaction that
writes the alert, an event in its history and, when the alert has routes, an outbox row (and
its ticket); see :mod:`alerts.outbox`."""

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

from alerts.lifecycle import EVENT_TYPES, check_transition
from alerts.open311 import Ticket, from_georeport
from alerts.outbox import OutboxPolicy, OutboxRow
from alerts.record import Alert, format_utc
from alerts.sqlite import configure_wal, connect, ensure_schema, transaction
from alerts.webhooks import message_id
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the schema this code writes.
SCHEMA_VERSION = 2

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
CREATE TABLE IF NOT EXISTS alert_events (
    event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    TEXT NOT NULL,
    at_utc      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    type        TEXT NOT NULL,   -- alert.created, alert.updated, alert.ended, alert.acknowledged, ...
    from_status TEXT,
    to_status   TEXT,
    note        TEXT,
    reason      TEXT,
    due_utc     TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, event_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id      TEXT NOT NULL,
    camera_id     TEXT NOT NULL,
    type          TEXT NOT NULL,
    msg_id        TEXT NOT NULL,
    routes        TEXT NOT NULL,   -- JSON list
    body          TEXT NOT NULL,
    ticket        TEXT,
    created_utc   TEXT NOT NULL,
    published_utc TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_utc IS NULL;
CREATE INDEX IF NOT EXISTS outbox_msg ON outbox (msg_id);
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_id, seq);
CREATE TABLE IF NOT EXISTS tickets (
    service_request_id TEXT PRIMARY KEY,
    alert_id           TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL,
    service_code       TEXT NOT NULL,
    requested_utc      TEXT NOT NULL,
    body               TEXT NOT NULL   -- GeoReport v2 object
);
CREATE INDEX IF NOT EXISTS tickets_status ON tickets (status, requested_utc);
CREATE TABLE IF NOT EXISTS alert_merges (   -- situations merged into an earlier alert (cooldown)
    situation_id TEXT PRIMARY KEY,           -- the alert id the situation would have had
    alert_id     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    name      TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    expires_s REAL NOT NULL
);
"""

#: Columns added to ``alerts`` by schema 2 (a version-1 file gets them on open).
_V2_COLUMNS = (("status", "TEXT NOT NULL DEFAULT 'new'"), ("routes", "TEXT NOT NULL DEFAULT '[]'"),
               ("revision", "INTEGER NOT NULL DEFAULT 1"), ("due_utc", "TEXT"),
               ("unpublished_utc", "TEXT"))  # first update held back by policy.update_interval_s
_V2_INDEXES = ("CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, start_utc)",
               "CREATE INDEX IF NOT EXISTS alerts_due ON alerts (due_utc) WHERE due_utc IS NOT NULL")

_UNSET: Any = object()


def _where(equal: Mapping[str, Any], time_column: str | None = None,
           since_utc: dt.datetime | None = None) -> tuple[str, list[Any]]:
    """``" WHERE a = ? AND ... AND <time_column> >= ?"`` for the given values (``None`` ones are
    left out; ``""`` when nothing is given) and its arguments."""
    clauses = [f"{col} = ?" for col, val in equal.items() if val is not None]
    args: list[Any] = [val for val in equal.values() if val is not None]
    if since_utc is not None:
        clauses.append(f"{time_column} >= ?")
        args.append(format_utc(since_utc))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class AlertStoreError(BaqylauError, OSError):
    """The alert database cannot be opened, read or written (bad path, corrupt file)."""


class AlertNotFoundError(AlertStoreError, LookupError):
    """No alert with the given id is stored."""


class AlertStore:
    """Alerts in one SQLite file.

    The database runs in WAL mode with ``synchronous=NORMAL`` (readers never block the
    writer; a power cut may lose the last commits but never corrupts the file; see
    https://www.sqlite.org/wal.html). One connection is shared by all threads and guarded by a
    lock; every write is a single ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, rolled back
    on any exception including ``KeyboardInterrupt``, so nothing is ever half-written.

    Args:
        path: Database file; parent directories are created.
        policy: Routes, event bodies and tickets of new events (default routing rules, default
            Open311 services, no media URL when ``None``).

    Raises:
        AlertStoreError: When the path cannot be created or opened, the file is not a
            SQLite database, or its schema version is newer than this code.
    """

    def __init__(self, path: str | Path, policy: OutboxPolicy | None = None) -> None:
        self.path = Path(path)
        self.policy = policy or OutboxPolicy()
        self._outbox_id: str | None = None
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
            with transaction(self._conn, self._lock):
                have = {r[1] for r in self._conn.execute("PRAGMA table_info(alerts)")}
                for name, decl in _V2_COLUMNS:
                    if name not in have:  # a schema-1 file
                        self._conn.execute(f"ALTER TABLE alerts ADD COLUMN {name} {decl}")
                for sql in _V2_INDEXES:
                    self._conn.execute(sql)
        except sqlite3.Error as exc:
            self._conn.close()
            raise AlertStoreError(f"alert store {self.path} is unreadable or not a SQLite database "
                                  f"(corrupt?): {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    @property
    def outbox_id(self) -> str:
        """This store's outbox id: a UUID made when the file was created, naming it as the
        ``source`` of what its relay publishes (several machines' outboxes share one Redis).

        Raises:
            AlertStoreError: On a database error.
        """
        if self._outbox_id is None:
            import uuid

            def go() -> str:
                with self._write() as conn:
                    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('outbox_id', ?)",
                                 (str(uuid.uuid4()),))
                    return conn.execute("SELECT value FROM meta WHERE key = 'outbox_id'").fetchone()[0]
            self._outbox_id = self._run("read the outbox id", go)
        return self._outbox_id

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

    def add(self, alert: Alert, *, actor: str = "system", now: dt.datetime | None = None) -> bool:
        """Insert an alert unless its id exists, with its history event, outbox row and ticket.

        The routes are decided now (``policy.routes_for``) and kept with the alert, so later
        events of the same alert go to the same routes even if the rules change.

        Args:
            alert: The new alert.
            actor: Who raised it (``"system"`` for the pipeline).
            now: Time of the event (aware; ``datetime.now(UTC)`` when ``None``).

        Returns:
            ``True`` when inserted, ``False`` when ``alert_id`` was already stored (the stored
            row is left unchanged and nothing is published), so re-running the same file adds
            no duplicates.

        Raises:
            AlertStoreError: On a database error.
        """
        now = now or dt.datetime.now(dt.UTC)
        routes = self.policy.routes_for(alert)
        row = (alert.alert_id, alert.camera_id, alert.type, format_utc(alert.start_utc),
               json.dumps(alert.to_dict(), ensure_ascii=False), alert.status,
               json.dumps(list(routes), ensure_ascii=False))

        def go() -> bool:
            with self._write() as conn:
                cur = conn.execute("INSERT OR IGNORE INTO alerts (alert_id, camera_id, type, start_utc, body, "
                                   "status, routes, revision) VALUES (?, ?, ?, ?, ?, ?, ?, 1)", row)
                if cur.rowcount != 1:
                    return False
                self._event(conn, alert, "alert.created", 1, routes, actor, now, to_status=alert.status)
                return True
        return self._run("add an alert", go)

    def _event(self, conn: sqlite3.Connection, alert: Alert, event_type: str, revision: int,
               routes: tuple[str, ...], actor: str, now: dt.datetime, *, from_status: str | None = None,
               to_status: str | None = None, note: str | None = None, reason: str | None = None,
               due_utc: dt.datetime | None = None, publish: bool = True) -> None:
        """Write the history event, the ticket and the outbox row of one change (inside a
        transaction); ``publish=False`` writes the history event only."""
        at = format_utc(now)
        conn.execute("INSERT INTO alert_events (alert_id, at_utc, actor, type, from_status, to_status, note, "
                     "reason, due_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (alert.alert_id, at, actor, event_type, from_status, to_status, note, reason,
                      None if due_utc is None else format_utc(due_utc)))
        if not routes or not publish:
            return
        conn.execute("UPDATE alerts SET unpublished_utc = NULL WHERE alert_id = ?", (alert.alert_id,))
        self._outbox_row(conn, alert, event_type, revision, routes, now, note=note, reason=reason)

    def _outbox_row(self, conn: sqlite3.Connection, alert: Alert, event_type: str, revision: int,
                    routes: tuple[str, ...], now: dt.datetime, note: str | None = None,
                    reason: str | None = None) -> None:
        """Write the ticket (for ``ticketing``) and the outbox row of one event (inside a transaction)."""
        at = format_utc(now)
        ticket_text = None
        if "ticketing" in routes:
            notes = " ".join(f"{k}: {v}." for k, v in (("Reason", reason), ("Note", note)) if v)
            ticket = self.policy.ticket(alert, now, notes or None)
            if ticket is not None:
                ticket_text = self.policy.ticket_json(ticket)
                conn.execute("INSERT INTO tickets (service_request_id, alert_id, status, service_code, "
                             "requested_utc, body) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service_request_id) "
                             "DO UPDATE SET status = excluded.status, body = excluded.body",
                             (ticket.service_request_id, alert.alert_id, ticket.status, ticket.service_code,
                              format_utc(ticket.requested_datetime), ticket_text))
        conn.execute("INSERT INTO outbox (alert_id, camera_id, type, msg_id, routes, body, ticket, created_utc) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (alert.alert_id, alert.camera_id, event_type, message_id(alert.alert_id, event_type, revision),
                      json.dumps(list(routes), ensure_ascii=False), self.policy.body(event_type, alert, now),
                      ticket_text, at))

    def update(self, alert_id: str, *, event: str = "alert.updated", actor: str = "system",
               now: dt.datetime | None = None, end_time_s: float | None = _UNSET,
               end_utc: dt.datetime | None = _UNSET, track_ids: tuple[int, ...] = _UNSET,
               snapshot_path: str | None = _UNSET, conf: float = _UNSET,
               details: Mapping[str, Any] = _UNSET, merged_situation: str | None = None,
               immediate: bool = False) -> Alert | None:
        """Change some fields of a stored alert (read-modify-write in one transaction) and publish
        the change as ``event`` to the alert's routes.

        Only the keywords given are changed; ``details`` replaces the whole mapping. The
        lifecycle status changes only through :meth:`transition`.

        Args:
            alert_id: The alert.
            event: Event type: ``"alert.updated"`` or ``"alert.ended"`` (the situation is over).
            actor: Who changed it.
            merged_situation: The id a new situation would have had when it is merged into this
                alert instead (cooldown); recorded so a re-run of the same file merges it again
                silently (see :meth:`merged_into`).
            immediate: Publish this update at once even within ``policy.update_interval_s``
                (a situation that came back).
            now: Time of the change (aware; now when ``None``).

        Returns:
            The updated alert, or ``None`` when ``alert_id`` is not stored.

        Raises:
            AlertStoreError: On a database error.
            AlertRecordError: When a new value is invalid (e.g. naive ``end_utc``).
        """
        changes = {k: v for k, v in dict(end_time_s=end_time_s, end_utc=end_utc, track_ids=track_ids,
                                          snapshot_path=snapshot_path, conf=conf,
                                          details=details).items() if v is not _UNSET}
        now = now or dt.datetime.now(dt.UTC)

        def go() -> Alert | None:
            with self._write() as conn:
                row = conn.execute("SELECT body, routes, revision FROM alerts WHERE alert_id = ?",
                                   (alert_id,)).fetchone()
                if row is None:
                    return None
                alert = replace(Alert.from_dict(json.loads(row[0])), **changes)
                revision = int(row[2]) + 1
                conn.execute("UPDATE alerts SET body = ?, revision = ? WHERE alert_id = ?",
                             (json.dumps(alert.to_dict(), ensure_ascii=False), revision, alert_id))
                if merged_situation is not None:
                    conn.execute("INSERT OR IGNORE INTO alert_merges (situation_id, alert_id) VALUES (?, ?)",
                                 (merged_situation, alert_id))
                routes = tuple(json.loads(row[1]))
                publish = True
                interval_s = self.policy.update_interval_s
                if event == "alert.updated" and routes and interval_s > 0 and not immediate:
                    last = conn.execute("SELECT MAX(created_utc) FROM outbox WHERE alert_id = ?",
                                        (alert_id,)).fetchone()[0]
                    if last is not None and last > format_utc(now - dt.timedelta(seconds=interval_s)):
                        publish = False  # held back; flush_updates publishes it when the interval is over
                        conn.execute("UPDATE alerts SET unpublished_utc = COALESCE(unpublished_utc, ?) "
                                     "WHERE alert_id = ?", (format_utc(now), alert_id))
                self._event(conn, alert, event, revision, routes, actor, now, publish=publish)
                return alert
        return self._run("update an alert", go)

    def flush_updates(self, now: dt.datetime | None = None) -> int:
        """Publish ``alert.updated`` for alerts whose updates were held back by
        ``policy.update_interval_s`` for at least that long (the current state, once).

        Returns:
            How many alerts were published.

        Raises:
            AlertStoreError: On a database error.
        """
        now = now or dt.datetime.now(dt.UTC)
        due = format_utc(now - dt.timedelta(seconds=self.policy.update_interval_s))

        def go() -> int:
            with self._write() as conn:
                rows = conn.execute("SELECT body, routes, revision FROM alerts WHERE unpublished_utc IS NOT NULL "
                                    "AND unpublished_utc <= ?", (due,)).fetchall()
                for body, routes, revision in rows:
                    alert = Alert.from_dict(json.loads(body))
                    conn.execute("UPDATE alerts SET unpublished_utc = NULL WHERE alert_id = ?", (alert.alert_id,))
                    self._outbox_row(conn, alert, "alert.updated", int(revision), tuple(json.loads(routes)), now)
                return len(rows)
        return self._run("publish held updates", go)

    def transition(self, alert_id: str, to_status: str, *, actor: str, note: str | None = None,
                   reason: str | None = None, due_utc: dt.datetime | None = None,
                   now: dt.datetime | None = None) -> Alert:
        """Move an alert to another lifecycle state (see :mod:`alerts.lifecycle`).

        Stores the new status, the change in the history (who, when, note, reason, due date),
        updates the alert's ticket (resolved and rejected close it, with the reason and note in
        ``status_notes``) and publishes ``alert.<state>`` to the alert's routes, all in one
        transaction.

        Args:
            alert_id: The alert.
            to_status: Target state.
            actor: Who makes the change.
            note: Free text.
            reason: Required for ``rejected`` (kept as feedback for tuning).
            due_utc: Required for ``deferred``: when the alert falls due again (aware).
            now: Time of the change (aware; now when ``None``).

        Returns:
            The alert in its new state.

        Raises:
            AlertStoreError: When the alert is not stored, or on a database error (a
                ``LookupError`` subclass is not used so callers catch one class).
            LifecycleError: When the change is not allowed.
        """
        now = now or dt.datetime.now(dt.UTC)

        def go() -> Alert:
            with self._write() as conn:
                row = conn.execute("SELECT body, routes, revision, status FROM alerts WHERE alert_id = ?",
                                   (alert_id,)).fetchone()
                if row is None:
                    raise AlertNotFoundError(f"no alert {alert_id!r} in {self.path}")
                from_status = row[3]
                check_transition(from_status, to_status, actor=actor, reason=reason, due_utc=due_utc, now=now)
                alert = replace(Alert.from_dict(json.loads(row[0])), status=to_status)
                revision = int(row[2]) + 1
                conn.execute("UPDATE alerts SET body = ?, status = ?, revision = ?, due_utc = ? WHERE alert_id = ?",
                             (json.dumps(alert.to_dict(), ensure_ascii=False), to_status, revision,
                              None if to_status != "deferred" else format_utc(due_utc), alert_id))
                self._event(conn, alert, EVENT_TYPES[to_status], revision, tuple(json.loads(row[1])), actor, now,
                            from_status=from_status, to_status=to_status, note=note, reason=reason,
                            due_utc=due_utc if to_status == "deferred" else None)
                return alert
        return self._run("change an alert's status", go)

    def history(self, alert_id: str) -> list[dict[str, Any]]:
        """The alert's events, oldest first, as dicts: ``event_id``, ``type``, ``at_utc``,
        ``actor``, ``from_status``, ``to_status``, ``note``, ``reason``, ``due_utc`` (ISO 8601 text).

        Raises:
            AlertStoreError: On a database error.
        """
        cols = ("event_id", "type", "at_utc", "actor", "from_status", "to_status", "note", "reason", "due_utc")

        def go() -> list[dict[str, Any]]:
            with self._lock:
                return [dict(zip(cols, r)) for r in self._conn.execute(
                    f"SELECT {', '.join(cols)} FROM alert_events WHERE alert_id = ? ORDER BY event_id",
                    (alert_id,))]
        return self._run("read an alert's history", go)

    def due_deferred(self, now: dt.datetime | None = None) -> list[str]:
        """Ids of deferred alerts whose due date has passed, earliest due first.

        Raises:
            AlertStoreError: On a database error.
        """
        at = format_utc(now or dt.datetime.now(dt.UTC))

        def go() -> list[str]:
            with self._lock:
                return [r[0] for r in self._conn.execute(
                    "SELECT alert_id FROM alerts WHERE status = 'deferred' AND due_utc IS NOT NULL "
                    "AND due_utc <= ? ORDER BY due_utc", (at,))]
        return self._run("find due deferrals", go)

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Alert ids starting with ``prefix`` (an index range scan), at most ``limit``.

        Raises:
            AlertStoreError: On a database error.
        """
        def go() -> list[str]:
            with self._lock:
                return [r[0] for r in self._conn.execute(
                    "SELECT alert_id FROM alerts WHERE alert_id >= ? AND alert_id < ? ORDER BY alert_id LIMIT ?",
                    (prefix, prefix + "\U0010ffff", int(limit)))]
        return self._run("look up alert ids", go)

    def merged_into(self, situation_id: str) -> str | None:
        """The alert a situation was merged into by the cooldown, or ``None``.

        Raises:
            AlertStoreError: On a database error.
        """
        def go() -> str | None:
            with self._lock:
                row = self._conn.execute("SELECT alert_id FROM alert_merges WHERE situation_id = ?",
                                         (situation_id,)).fetchone()
            return None if row is None else row[0]
        return self._run("read merged situations", go)

    def routes_of(self, alert_id: str) -> tuple[str, ...] | None:
        """The routes fixed for an alert at creation, or ``None`` when it is not stored."""
        def go() -> tuple[str, ...] | None:
            with self._lock:
                row = self._conn.execute("SELECT routes FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
            return None if row is None else tuple(json.loads(row[0]))
        return self._run("read an alert's routes", go)

    # -- outbox -------------------------------------------------------------------------------

    def outbox_pending(self, limit: int = 200) -> list[OutboxRow]:
        """Unpublished outbox rows, lowest ``seq`` first.

        Raises:
            AlertStoreError: On a database error.
        """
        return self._outbox("WHERE published_utc IS NULL ORDER BY seq LIMIT ?", (int(limit),))

    def outbox_rows(self, *, alert_id: str | None = None, msg_id: str | None = None,
                    since_utc: dt.datetime | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows (published or not) of an alert, a message or since a time, by ``seq``.

        Raises:
            AlertStoreError: On a database error.
        """
        where, args = _where({"alert_id": alert_id, "msg_id": msg_id}, "created_utc", since_utc)
        return self._outbox(f"{where} ORDER BY seq LIMIT ?", (*args, int(limit)))

    def _outbox(self, tail: str, args: tuple[Any, ...]) -> list[OutboxRow]:
        def go() -> list[tuple]:
            with self._lock:
                return self._conn.execute(
                    "SELECT seq, alert_id, camera_id, type, msg_id, routes, body, ticket, created_utc "
                    f"FROM outbox {tail}", args).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7], r[8])
                for r in self._run("read the outbox", go)]

    def mark_published(self, seqs: list[int] | tuple[int, ...], now: dt.datetime | None = None) -> None:
        """Mark outbox rows as published.

        Raises:
            AlertStoreError: On a database error.
        """
        at = format_utc(now or dt.datetime.now(dt.UTC))

        def go() -> None:
            with self._write() as conn:
                conn.executemany("UPDATE outbox SET published_utc = ? WHERE seq = ?", [(at, int(q)) for q in seqs])
        self._run("mark outbox rows published", go)

    def outbox_stats(self) -> dict[str, Any]:
        """``{"pending": n, "published": n, "oldest_pending_utc": text | None}``.

        Raises:
            AlertStoreError: On a database error.
        """
        def go() -> dict[str, Any]:
            with self._lock:
                pending, oldest = self._conn.execute(
                    "SELECT COUNT(*), MIN(created_utc) FROM outbox WHERE published_utc IS NULL").fetchone()
                total = self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            return {"pending": int(pending), "published": int(total) - int(pending), "oldest_pending_utc": oldest}
        return self._run("count the outbox", go)

    def prune_outbox(self, before_utc: dt.datetime) -> int:
        """Delete published outbox rows written before ``before_utc`` (alerts, their history and
        tickets are kept; a replay can only resend what is still in the outbox).

        Returns:
            How many rows were deleted.

        Raises:
            AlertStoreError: On a database error.
        """
        def go() -> int:
            with self._write() as conn:
                return conn.execute("DELETE FROM outbox WHERE published_utc IS NOT NULL AND created_utc < ?",
                                    (format_utc(before_utc),)).rowcount
        return self._run("prune the outbox", go)

    def replay(self, route: str, rows: list[OutboxRow] | tuple[OutboxRow, ...],
               now: dt.datetime | None = None) -> int:
        """Queue earlier events again for one route: new outbox rows with the same ``msg_id``
        (so a receiver that honours ids sees a replay, not a new event), body and ticket.

        Returns:
            How many rows were queued.

        Raises:
            AlertStoreError: On a database error.
        """
        at = format_utc(now or dt.datetime.now(dt.UTC))

        def go() -> int:
            with self._write() as conn:
                conn.executemany(
                    "INSERT INTO outbox (alert_id, camera_id, type, msg_id, routes, body, ticket, created_utc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(r.alert_id, r.camera_id, r.type, r.msg_id, json.dumps([route], ensure_ascii=False), r.body,
                      r.ticket if route == "ticketing" else None, at) for r in rows])
            return len(rows)
        return self._run("queue a replay", go)

    def try_lease(self, name: str, owner: str, ttl_s: float, now_s: float) -> bool:
        """Take or renew a named lease (e.g. the one relay per outbox) until ``now_s + ttl_s``.

        Returns:
            ``True`` when ``owner`` holds it now (free, expired, or already its own).

        Raises:
            AlertStoreError: On a database error.
        """
        def go() -> bool:
            with self._write() as conn:
                conn.execute("INSERT INTO leases (name, owner, expires_s) VALUES (?, ?, ?) ON CONFLICT (name) "
                             "DO UPDATE SET owner = excluded.owner, expires_s = excluded.expires_s "
                             "WHERE leases.owner = excluded.owner OR leases.expires_s < ?",
                             (name, owner, now_s + ttl_s, now_s))
                return conn.execute("SELECT owner FROM leases WHERE name = ?", (name,)).fetchone()[0] == owner
        return self._run("take a lease", go)

    def release_lease(self, name: str, owner: str) -> None:
        """Give a lease back if ``owner`` holds it.

        Raises:
            AlertStoreError: On a database error.
        """
        def go() -> None:
            with self._write() as conn:
                conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))
        self._run("release a lease", go)

    # -- tickets ------------------------------------------------------------------------------

    def tickets(self, status: str | None = None, service_code: str | None = None,
                since_utc: dt.datetime | None = None, limit: int | None = None) -> list[Ticket]:
        """Open311 service requests, oldest request first.

        Args:
            status: ``"open"`` or ``"closed"``.
            service_code: Only this service.
            since_utc: Only requests made at or after this aware time.
            limit: At most this many.

        Raises:
            AlertStoreError: On a database error.
        """
        where, args = _where({"status": status, "service_code": service_code}, "requested_utc", since_utc)
        sql = "SELECT body FROM tickets" + where
        sql += " ORDER BY requested_utc, service_request_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))

        def go() -> list[str]:
            with self._lock:
                return [r[0] for r in self._conn.execute(sql, args)]
        return [from_georeport(json.loads(b)) for b in self._run("read tickets", go)]

    def get(self, alert_id: str) -> Alert | None:
        """Return the stored alert, or ``None``.

        Raises:
            AlertStoreError: On a database error.
        """
        rows = self._select("SELECT body FROM alerts WHERE alert_id = ?", (alert_id,))
        return rows[0] if rows else None

    def list(self, camera_id: str | None = None, type: str | None = None,  # noqa: A002 - field name
             since_utc: dt.datetime | None = None, limit: int | None = None,
             status: str | None = None) -> list[Alert]:
        """Return alerts ordered by ``start_utc`` then ``alert_id``.

        Args:
            camera_id: Only this camera.
            type: Only this alert type.
            since_utc: Only alerts starting at or after this aware datetime.
            limit: At most this many (the earliest).
            status: Only alerts in this lifecycle state.

        Raises:
            AlertStoreError: On a database error.
            AlertRecordError: For a naive ``since_utc``.
        """
        where, args = _where({"status": status, "camera_id": camera_id, "type": type}, "start_utc", since_utc)
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
        where, args = _where({"camera_id": camera_id})

        def go() -> int:
            with self._lock:
                return int(self._conn.execute(f"SELECT COUNT(*) FROM alerts{where}", args).fetchone()[0])
        return self._run("count alerts", go)

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
