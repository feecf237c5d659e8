"""Route workers: take alert events off the bus and deliver them, with retries and a record of
every attempt.

One :class:`RouteWorker` per route (``webhook:<name>``, ``police``, ...) reads its route's queue
from the bus (:mod:`alerts.bus`) through a consumer group and hands each entry to a
:class:`Deliverer` (for webhooks :class:`WebhookDeliverer`). Delivery follows the Standard
Webhooks specification 1.0.0 (https://www.standardwebhooks.com/, "Delivery success and failure"
and "Deliverability and reliability"): a 2xx response is success; ``410 Gone`` means the endpoint
is gone, so the route is disabled and nothing more is sent to it; anything else (other statuses,
timeouts, refused connections) is retried on an exponential schedule with jitter, honouring a
longer ``Retry-After``, and after the last attempt the entry goes to the route's dead-letter
queue. Every retry carries the same ``webhook-id`` so receivers can de-duplicate.

Ordering and isolation:

- Entries of one ``camera_id`` are delivered strictly one after another in outbox ``seq`` order;
  an entry waiting for its retry holds back later entries of its camera (head-of-line blocking
  per camera), while other cameras proceed.
- Up to ``max_in_flight`` attempts of a route run concurrently, so one slow camera's receiver
  never stalls the others; each route has its own worker, so a dead receiver never blocks
  another route.
- At most ``window`` entries are held in memory; the backlog of a receiver that is down for a
  day stays in the bus.

Delivery is at-least-once: an entry is acknowledged on the bus only after its success is
recorded, so a crash in between re-sends it (with the same ``webhook-id``).

Every attempt is recorded in a :class:`DeliveryLog` (its own SQLite file), which also holds the
disabled routes; a restarted worker continues each entry's attempt numbering and schedule from
the log instead of starting over.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import urllib.parse
from bisect import insort
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alerts.bus import Bus, BusMessage
from alerts.record import format_utc, parse_utc
from alerts.sqlite import connect_wal, ensure_schema, transaction
from alerts.webhooks import (DEFAULT_TIMEOUT_S, DELIVERED, DISABLED, JITTER, RETRY_SCHEDULE_S,
                             DeliveryResult, WebhookConfigError, deliver_once, headers, parse_secret)
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the delivery log schema.
SCHEMA_VERSION = 1

#: Outcomes stored in the delivery log: the three of :attr:`DeliveryResult.outcome` plus
#: ``"dead"`` (the attempt that exhausted the schedule, or a dead-lettering without an attempt).
RETRY_OUTCOME, DEAD = "retry", "dead"
OUTCOMES = (DELIVERED, RETRY_OUTCOME, DISABLED, DEAD)

#: Longest back-off (s) after consecutive bus or log errors (0.1 s doubling up to this).
MAX_BACKOFF_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    route      TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    alert_id   TEXT,
    camera_id  TEXT,
    seq        INTEGER,
    attempt    INTEGER NOT NULL,   -- 1-based, continues across worker restarts
    at_utc     TEXT NOT NULL,      -- ISO 8601 UTC, fixed width (text order = time order)
    outcome    TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'disabled', 'dead')),
    http_status INTEGER,
    error      TEXT,
    elapsed_ms REAL
);
CREATE INDEX IF NOT EXISTS attempts_msg ON attempts (route, msg_id, attempt);
CREATE INDEX IF NOT EXISTS attempts_alert ON attempts (alert_id);
CREATE TABLE IF NOT EXISTS endpoints (
    route        TEXT PRIMARY KEY,
    disabled_utc TEXT,
    reason       TEXT
);
"""


class DeliveryLogError(BaqylauError, OSError):
    """The delivery log cannot be opened, read or written (bad path, corrupt file, newer schema)."""


class DeliveryConfigError(BaqylauError, ValueError):
    """A route worker or deliverer was given invalid settings."""


def _now_utc() -> str:
    return format_utc(dt.datetime.now(dt.timezone.utc))


class DeliveryLog:
    """Every delivery attempt and the disabled routes, in one SQLite file.

    WAL mode, one connection shared by the threads of a process behind a lock, each write one
    ``BEGIN IMMEDIATE`` transaction (see :mod:`alerts.sqlite`); several processes (the route
    workers, the CLI that re-enables a route) may share the file.

    Args:
        path: Database file; parent directories are created.

    Raises:
        DeliveryLogError: When the file cannot be created or opened, is not a SQLite database,
            or was written by newer code.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect_wal(self.path, row_factory=sqlite3.Row)
        except (OSError, sqlite3.Error) as exc:
            raise DeliveryLogError(f"cannot open delivery log {self.path}: {exc}") from exc
        try:
            ensure_schema(self._conn, self._lock, _SCHEMA, SCHEMA_VERSION, f"delivery log {self.path}",
                          DeliveryLogError)
        except sqlite3.Error as exc:
            self._conn.close()
            raise DeliveryLogError(f"delivery log {self.path} is unreadable (corrupt?): {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def record(self, route: str, msg_id: str, attempt: int, outcome: str, *, alert_id: str | None = None,
               camera_id: str | None = None, seq: int | None = None, http_status: int | None = None,
               error: str | None = None, elapsed_ms: float | None = None,
               at_utc: dt.datetime | None = None) -> int:
        """Append one attempt.

        Args:
            route: Route name.
            msg_id: The message's ``webhook-id`` (the same on every retry).
            attempt: 1-based attempt number; a dead-lettering without a new attempt repeats the
                last attempt's number (0 when there was none).
            outcome: One of :data:`OUTCOMES`.
            alert_id, camera_id, seq: The entry's alert, camera and outbox sequence number.
            http_status: Response status, ``None`` when no response came.
            error: Why it failed, ``None`` when delivered.
            elapsed_ms: Wall time of the attempt (ms).
            at_utc: Aware time of the attempt; now when ``None``.

        Returns:
            The row id.

        Raises:
            DeliveryConfigError: For an unknown outcome or a negative attempt.
            DeliveryLogError: When the write fails.
        """
        if outcome not in OUTCOMES:
            raise DeliveryConfigError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise DeliveryConfigError(f"attempt must be an int >= 0, got {attempt!r}")
        at = _now_utc() if at_utc is None else format_utc(at_utc)
        try:
            with transaction(self._conn, self._lock) as conn:
                cur = conn.execute(
                    "INSERT INTO attempts (route, msg_id, alert_id, camera_id, seq, attempt, at_utc, outcome,"
                    " http_status, error, elapsed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (route, msg_id, alert_id, camera_id, seq, attempt, at, outcome, http_status, error,
                     elapsed_ms))
                return int(cur.lastrowid)
        except sqlite3.Error as exc:
            raise DeliveryLogError(f"cannot write delivery log {self.path}: {exc}") from exc

    def _query(self, sql: str, args: Sequence[Any]) -> list[dict]:
        try:
            with self._lock:
                return [dict(row) for row in self._conn.execute(sql, args).fetchall()]
        except sqlite3.Error as exc:
            raise DeliveryLogError(f"cannot read delivery log {self.path}: {exc}") from exc

    def attempts(self, route: str | None = None, msg_id: str | None = None, alert_id: str | None = None,
                 limit: int = 100) -> list[dict]:
        """Recorded attempts matching all given filters, oldest first (the last ``limit``).

        Returns:
            Dicts with the keys ``id, route, msg_id, alert_id, camera_id, seq, attempt, at_utc,
            outcome, http_status, error, elapsed_ms``.

        Raises:
            DeliveryLogError: When the read fails.
        """
        where, args = [], []
        for name, value in (("route", route), ("msg_id", msg_id), ("alert_id", alert_id)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        sql = "SELECT * FROM attempts" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._query(sql + " ORDER BY id DESC LIMIT ?", [*args, int(limit)])
        return rows[::-1]

    def last_attempt(self, route: str, msg_id: str, seq: int | None = None) -> dict | None:
        """The latest recorded attempt of one message on one route, or ``None``.

        Args:
            route: The route.
            msg_id: The message (``webhook-id``).
            seq: Only attempts of this bus entry (outbox seq): a replay of the message is a new
                entry with the same ``msg_id`` and starts its own attempts.

        Raises:
            DeliveryLogError: When the read fails.
        """
        where, args = "route = ? AND msg_id = ?", [route, msg_id]
        if seq is not None:
            where += " AND seq = ?"
            args.append(int(seq))
        rows = self._query(f"SELECT * FROM attempts WHERE {where} ORDER BY attempt DESC, id DESC LIMIT 1", args)
        return rows[0] if rows else None

    def summary(self, route: str) -> dict:
        """Attempt counts of a route by outcome (``delivered``, ``retry``, ``disabled``, ``dead``)
        and its latest attempt (``last``, a dict or ``None``).

        Raises:
            DeliveryLogError: When the read fails.
        """
        counts = dict.fromkeys(OUTCOMES, 0)
        for row in self._query("SELECT outcome, COUNT(*) AS n FROM attempts WHERE route = ? GROUP BY outcome",
                               (route,)):
            counts[row["outcome"]] = int(row["n"])
        last = self._query("SELECT * FROM attempts WHERE route = ? ORDER BY id DESC LIMIT 1", (route,))
        return {**counts, "last": last[0] if last else None}

    def attempt_count(self, route: str, msg_id: str) -> int:
        """How many attempts of this message were made on this route (the highest attempt number).

        Raises:
            DeliveryLogError: When the read fails.
        """
        last = self.last_attempt(route, msg_id)
        return 0 if last is None else int(last["attempt"])

    def prune(self, before_utc: dt.datetime) -> int:
        """Delete attempts recorded before ``before_utc``; returns how many.

        Raises:
            DeliveryLogError: When the write fails.
        """
        try:
            with transaction(self._conn, self._lock) as conn:
                return conn.execute("DELETE FROM attempts WHERE at_utc < ?", (format_utc(before_utc),)).rowcount
        except sqlite3.Error as exc:
            raise DeliveryLogError(f"cannot prune delivery log {self.path}: {exc}") from exc

    def disable(self, route: str, reason: str) -> None:
        """Mark a route disabled (its worker stops taking entries; they stay in the bus).

        Raises:
            DeliveryLogError: When the write fails.
        """
        try:
            with transaction(self._conn, self._lock) as conn:
                conn.execute("INSERT INTO endpoints (route, disabled_utc, reason) VALUES (?, ?, ?)"
                             " ON CONFLICT (route) DO UPDATE SET disabled_utc = excluded.disabled_utc,"
                             " reason = excluded.reason", (route, _now_utc(), reason))
        except sqlite3.Error as exc:
            raise DeliveryLogError(f"cannot write delivery log {self.path}: {exc}") from exc

    def enable(self, route: str) -> None:
        """Re-enable a route; its (idle) worker resumes with the entries left in the bus.

        Raises:
            DeliveryLogError: When the write fails.
        """
        try:
            with transaction(self._conn, self._lock) as conn:
                conn.execute("DELETE FROM endpoints WHERE route = ?", (route,))
        except sqlite3.Error as exc:
            raise DeliveryLogError(f"cannot write delivery log {self.path}: {exc}") from exc

    def is_disabled(self, route: str) -> bool:
        """Whether the route is disabled.

        Raises:
            DeliveryLogError: When the read fails.
        """
        return bool(self._query("SELECT 1 FROM endpoints WHERE route = ?", (route,)))

    def disabled(self) -> dict[str, dict]:
        """All disabled routes: ``{route: {"disabled_utc": str, "reason": str}}``.

        Raises:
            DeliveryLogError: When the read fails.
        """
        rows = self._query("SELECT route, disabled_utc, reason FROM endpoints ORDER BY route", ())
        return {r["route"]: {"disabled_utc": r["disabled_utc"], "reason": r["reason"]} for r in rows}

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()


class Deliverer(Protocol):
    """Delivers one bus entry to one route's receiver; called from worker threads."""

    #: The route this deliverer serves.
    route: str

    def deliver(self, message: BusMessage, attempt: int) -> DeliveryResult:
        """Make attempt number ``attempt`` (1-based); must not raise on receiver or network errors."""


class WebhookDeliverer:
    """POSTs an entry's ``body`` to a Standard Webhooks endpoint.

    Each attempt is signed with its own current Unix time (``webhook-timestamp``) and the entry's
    ``msg_id`` as ``webhook-id`` (the same on every retry), see :func:`alerts.webhooks.headers`;
    redirects are not followed (:func:`alerts.webhooks.deliver_once`).

    Args:
        route: Route name, e.g. ``"webhook:city-desk"``.
        url: ``http(s)://`` endpoint.
        secrets: ``whsec_`` secrets (several while rotating keys).
        timeout_s: Per-operation socket timeout (s), > 0; the spec recommends 15-30 s. Shorter
            frees worker threads sooner from a hung receiver, longer tolerates slow ones.

    Raises:
        WebhookConfigError: For a URL that is not http(s) with a host, no secrets, a malformed
            secret, or ``timeout_s <= 0``.
    """

    def __init__(self, route: str, url: str, secrets: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookConfigError(f"webhook URL must be http(s)://host/..., got {url!r}")
        if isinstance(secrets, str) or not secrets:
            raise WebhookConfigError("secrets must be a non-empty sequence of 'whsec_' strings")
        for secret in secrets:
            parse_secret(secret)
        if not timeout_s > 0:
            raise WebhookConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.route, self.url, self.secrets, self.timeout_s = route, url, tuple(secrets), float(timeout_s)

    def deliver(self, message: BusMessage, attempt: int) -> DeliveryResult:
        """POST the entry once (``attempt`` is for logging only).

        Raises:
            KeyError: When the entry has no ``msg_id`` or ``body`` field.
            WebhookConfigError: When ``msg_id`` contains a full stop.
        """
        body = message.fields["body"].encode("utf-8")
        hdrs = headers(message.fields["msg_id"], int(time.time()), body, self.secrets)
        return deliver_once(self.url, body, hdrs, self.timeout_s)


@dataclass(slots=True, eq=False)
class _Entry:
    """One entry held in a worker's window."""

    message: BusMessage
    camera_id: str
    msg_id: str
    done: int            # attempts made so far (from the log, then counted here)
    due: float           # monotonic time of the next attempt
    in_flight: bool = False
    settle: tuple[str, str] | None = None   # ("ack" | "dead", reason) once decided, until the bus agrees

    def __lt__(self, other: _Entry) -> bool:
        return self.message.seq < other.message.seq


@dataclass(slots=True)
class _Stats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    peak_window: int = 0


class RouteWorker:
    """Delivers one route's bus entries: per-camera order, bounded memory, retries, dead letters.

    Loop (:meth:`run`): create the consumer group, take back this consumer's unacknowledged
    entries (after a restart), then read new entries only while fewer than ``window`` are held,
    and every ``claim_idle_ms / 2`` take over entries that dead consumers left pending. The head
    entry of each camera is attempted when due; outcomes (Standard Webhooks, "Delivery success and
    failure", https://www.standardwebhooks.com/):

    - delivered: record, acknowledge, go on with the camera's next entry;
    - retry: record; the next attempt waits ``schedule_s[n] * U(1 - jitter, 1 + jitter)`` (n =
      attempts made so far; the last delay repeats when ``dead_letter_after`` exceeds the
      schedule), or the response's ``Retry-After`` when longer; after ``dead_letter_after``
      failed attempts the entry is recorded ``dead``, copied to the dead-letter queue and
      acknowledged;
    - disabled (``410 Gone``): record, disable the route in the log and stop taking entries; they
      stay pending in the bus, and the idle worker resumes when the route is re-enabled.

    Bus and log errors (Redis down, restarting, frozen) are logged and retried with a bounded
    exponential back-off (0.1 s doubling to :data:`MAX_BACKOFF_S`); the thread never dies of them.

    Several workers of one route may share a group (at-least-once; receivers de-duplicate by
    ``webhook-id``), but an entry waiting longer than ``claim_idle_ms`` for its retry can then be
    taken over by another worker and sent twice; keep one worker per route and group, or
    ``claim_idle_ms`` above the longest retry delay.

    Args:
        route: Route name; must equal ``deliverer.route``.
        bus: A :class:`alerts.bus.Bus`.
        deliverer: Sends one attempt.
        log: Where attempts and disabled routes are recorded.
        group: Consumer group name.
        consumer: This consumer's name; ``"<hostname>-<pid>"`` by default. A restarted worker
            with the same name takes back its unacknowledged entries at once; under another name
            they are taken over after ``claim_idle_ms``.
        schedule_s: Delay (s) before each attempt, first attempt first; the spec's example
            schedule by default (:data:`alerts.webhooks.RETRY_SCHEDULE_S`, about 3 days).
        jitter: Relative jitter in [0, 1) on each delay; spreads retries of many entries so a
            recovering receiver is not hit all at once.
        dead_letter_after: Failed attempts before dead-lettering, >= 1; ``len(schedule_s)`` when
            ``None``.
        max_in_flight: Concurrent attempts (threads), >= 1. More lets more cameras progress while
            some receivers are slow; each thread holds one connection.
        window: Most entries held in memory, >= 1. Larger keeps more cameras busy when many wait
            for retries; the rest of a backlog stays in the bus.
        block_ms: Longest wait (ms) for new entries in one read, >= 1; bounds how long a stop or a
            due retry waits.
        claim_idle_ms: Idle time (ms) after which another consumer's pending entry is taken over,
            >= 1; too short steals entries from live but slow consumers.
        rng: Random source for the jitter (seed it in tests).
        recheck_s: How often (s) the log is asked whether the route was disabled or re-enabled
            by an operator, > 0.
        clock: Monotonic clock (s) for the schedule; :func:`time.monotonic` by default.

    Raises:
        DeliveryConfigError: For invalid settings or a route that differs from the deliverer's.
    """

    def __init__(self, route: str, bus: Bus, deliverer: Deliverer, log: DeliveryLog, *, group: str = "baqylau",
                 consumer: str | None = None, schedule_s: Sequence[float] = RETRY_SCHEDULE_S,
                 jitter: float = JITTER, dead_letter_after: int | None = None, max_in_flight: int = 4,
                 window: int = 256, block_ms: int = 1000, claim_idle_ms: int = 300_000,
                 rng: random.Random | None = None, recheck_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        schedule = tuple(float(s) for s in schedule_s)
        if not schedule or any(not s >= 0 for s in schedule):
            raise DeliveryConfigError(f"schedule_s must be a non-empty sequence of delays >= 0, got {schedule_s!r}")
        if not 0 <= jitter < 1:
            raise DeliveryConfigError(f"jitter must be in [0, 1), got {jitter!r}")
        dead_after = len(schedule) if dead_letter_after is None else dead_letter_after
        for name, value in (("dead_letter_after", dead_after), ("max_in_flight", max_in_flight),
                            ("window", window), ("block_ms", block_ms), ("claim_idle_ms", claim_idle_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DeliveryConfigError(f"{name} must be an int >= 1, got {value!r}")
        if not recheck_s > 0:
            raise DeliveryConfigError(f"recheck_s must be > 0, got {recheck_s!r}")
        if getattr(deliverer, "route", route) != route:
            raise DeliveryConfigError(f"deliverer serves {deliverer.route!r}, not {route!r}")
        self.route, self.bus, self.deliverer, self.log = route, bus, deliverer, log
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.schedule_s, self.jitter, self.dead_letter_after = schedule, float(jitter), dead_after
        self.max_in_flight, self.window, self.block_ms = max_in_flight, window, block_ms
        self.claim_idle_ms, self.recheck_s = claim_idle_ms, float(recheck_s)
        self._rng = rng or random.Random()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}        # entry_id -> entry (the window)
        self._cameras: dict[str, list[_Entry]] = {}  # camera_id -> entries in seq order
        self._futures: dict[Future, _Entry] = {}
        self._busy_cameras: set[str] = set()         # cameras with an attempt in flight
        self._wake = threading.Event()
        self._stats = _Stats()
        self._stats_lock = threading.Lock()
        self._disabled = False
        self._started = False
        self._recovering = True
        self._next_claim = 0.0
        self._next_recheck = 0.0
        self._stop_event: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # --- public control -------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run` in a daemon thread named after the route.

        Raises:
            RuntimeError: When already started.
        """
        if self._thread is not None:
            raise RuntimeError(f"route worker {self.route} already started")
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self.run, args=(self._stop_event,), daemon=True,
                                        name=f"deliver-{self.route}")
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the thread to stop and wait up to ``timeout_s`` for it (attempts in flight finish
        and are recorded; held entries stay pending in the bus for the next worker)."""
        if self._thread is None or self._stop_event is None:
            return
        self._stop_event.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("route worker %s did not stop within %.1f s", self.route, timeout_s)

    def stats(self) -> dict:
        """Counters: ``delivered``, ``retried`` (failed attempts that will be retried), ``dead``,
        ``in_window`` (entries held now), ``in_flight`` (attempts running), ``due`` (held
        entries whose next attempt is due now, not counting those waiting for a later retry),
        ``peak_window`` (most held at once), ``disabled``."""
        entries = list(self._entries.values())
        now = self._clock()
        with self._stats_lock:
            return {"delivered": self._stats.delivered, "retried": self._stats.retried,
                    "dead": self._stats.dead, "in_window": len(entries),
                    "in_flight": sum(1 for e in entries if e.in_flight),
                    "due": sum(1 for e in entries if not e.in_flight and (e.settle is not None or e.due <= now)),
                    "peak_window": self._stats.peak_window, "disabled": self._disabled}

    def run(self, stop_event: threading.Event) -> None:
        """Deliver until ``stop_event`` is set; never raises on bus, log or receiver errors."""
        failures = 0
        pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix=f"deliver-{self.route}")
        try:
            while not stop_event.is_set():
                try:
                    self._step(pool, stop_event)
                    failures = 0
                except Exception as exc:  # bus down, log locked, ...: back off and carry on
                    failures += 1
                    self._recovering = True  # entries handed over by a failed call stay pending for us
                    delay_s = min(MAX_BACKOFF_S, 0.1 * 2 ** (failures - 1))
                    logger.warning("route %s: %s: %s; retrying in %.1f s", self.route, type(exc).__name__, exc,
                                   delay_s)
                    stop_event.wait(delay_s)
        finally:
            pool.shutdown(wait=True)
            try:
                self._collect()
                self._settle()
            except Exception as exc:
                logger.warning("route %s: could not settle entries at stop (%s); they stay pending",
                               self.route, exc)
            self._drop_window()

    # --- one turn of the loop ---------------------------------------------------------------

    def _step(self, pool: ThreadPoolExecutor, stop_event: threading.Event) -> None:
        self._wake.clear()
        self._collect()
        self._settle()
        now = self._clock()
        if self._disabled:
            if self._futures:
                self._wake.wait(self.block_ms / 1000.0)
                return
            self._drop_window()
            if now < self._next_recheck:
                stop_event.wait(self._next_recheck - now)
                return
            self._next_recheck = now + self.recheck_s
            if self.log.is_disabled(self.route):
                return
            logger.info("route %s re-enabled; resuming", self.route)
            self._disabled, self._started, self._recovering = False, False, True
        if now >= self._next_recheck:
            self._next_recheck = now + self.recheck_s
            if self.log.is_disabled(self.route):
                if self._started:
                    logger.error("route %s was disabled; leaving its entries in the bus", self.route)
                else:
                    logger.warning("route %s is disabled; idle until re-enabled", self.route)
                self._disabled = True
                return
        if not self._started:
            self.bus.ensure_group(self.route, self.group)
            self._started = True
        room = self.window - len(self._entries)
        if room > 0 and self._recovering:
            # Oldest pending entries of this consumer; those already held are skipped.
            want = len(self._entries) + room
            got = self.bus.recover(self.route, self.group, self.consumer, want)
            self._add(got)
            if len(got) < want:
                self._recovering = False
            room = self.window - len(self._entries)
        if room > 0 and not self._recovering and now >= self._next_claim:
            self._add(self.bus.claim_stale(self.route, self.group, self.consumer, self.claim_idle_ms, room))
            self._next_claim = now + min(60.0, max(0.05, self.claim_idle_ms / 2000.0))
            room = self.window - len(self._entries)
        self._dispatch(pool, self._clock())
        wait_s = self.block_ms / 1000.0
        if len(self._futures) < self.max_in_flight:
            dues = [q[0].due for camera, q in self._cameras.items() if q and camera not in self._busy_cameras]
            if dues:
                wait_s = min(wait_s, max(0.0, min(dues) - self._clock()))
        if room > 0 and not self._recovering:
            if self._futures:  # never sit in a blocking read while attempts finish
                got = self.bus.read(self.route, self.group, self.consumer, room, 0)
                self._add(got)
                if not got:
                    self._wake.wait(min(wait_s, 0.1))  # done-callbacks set _wake
            else:
                self._add(self.bus.read(self.route, self.group, self.consumer, room, max(1, int(wait_s * 1000))))
        elif wait_s > 0:
            self._wake.wait(wait_s)

    def _add(self, messages: list[BusMessage]) -> None:
        """Take entries into the window (skipping held ones), in seq order per camera."""
        for message in messages:
            if message.entry_id in self._entries:
                continue
            fields = message.fields
            msg_id, camera_id = fields.get("msg_id"), fields.get("camera_id", "")
            entry = _Entry(message, camera_id, msg_id or "", 0, self._clock())
            self._entries[entry.message.entry_id] = entry
            if not msg_id or "body" not in fields:
                logger.error("route %s: entry %s has no msg_id or body; dead-lettering", self.route,
                             message.entry_id)
                self._finish(entry, "dead", "malformed entry: no msg_id or body", record_attempt=0)
                continue
            last = self.log.last_attempt(self.route, msg_id, message.seq)
            if last is not None:
                entry.done = int(last["attempt"])
                if last["outcome"] == DELIVERED:  # delivered before a crash, never acknowledged
                    entry.settle = ("ack", "")
                    continue
                if last["outcome"] == DEAD or entry.done >= self.dead_letter_after:
                    reason = last["error"] or "attempts exhausted"
                    self._finish(entry, "dead", reason, record_attempt=None if last["outcome"] == DEAD else entry.done)
                    continue
                # Continue the schedule from the last recorded attempt.
                elapsed_s = (dt.datetime.now(dt.timezone.utc) - parse_utc(last["at_utc"])).total_seconds()
                entry.due = self._clock() + max(0.0, self._delay_s(entry.done, None) - elapsed_s)
            else:
                entry.due = self._clock() + self._delay_s(0, None)
            insort(self._cameras.setdefault(camera_id, []), entry)
        with self._stats_lock:
            self._stats.peak_window = max(self._stats.peak_window, len(self._entries))

    def _delay_s(self, done: int, retry_after_s: float | None) -> float:
        base = self.schedule_s[min(done, len(self.schedule_s) - 1)]
        delay = base * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return delay if retry_after_s is None else max(delay, retry_after_s)

    def _dispatch(self, pool: ThreadPoolExecutor, now: float) -> None:
        if self._disabled:
            return
        # Oldest entries first, so a camera with a long backlog cannot starve the others.
        ready = sorted((q[0] for camera, q in self._cameras.items()
                        if q and camera not in self._busy_cameras and q[0].due <= now),
                       key=lambda e: e.message.seq)
        for head in ready[:max(0, self.max_in_flight - len(self._futures))]:
            head.in_flight = True
            self._busy_cameras.add(head.camera_id)
            future = pool.submit(self._attempt, head.message, head.done + 1)
            self._futures[future] = head
            future.add_done_callback(lambda _f: self._wake.set())

    def _attempt(self, message: BusMessage, attempt: int) -> DeliveryResult:
        start = time.monotonic()
        try:
            return self.deliverer.deliver(message, attempt)
        except Exception as exc:  # a deliverer bug or bad config must not kill the worker
            logger.exception("route %s: deliverer failed on %s", self.route, message.entry_id)
            return DeliveryResult(None, None, f"{type(exc).__name__}: {exc}", (time.monotonic() - start) * 1000)

    def _collect(self) -> None:
        """Record finished attempts and decide each entry's next step."""
        for future in [f for f in self._futures if f.done()]:
            entry = self._futures[future]
            result: DeliveryResult = future.result()
            attempt = entry.done + 1
            outcome = result.outcome
            final = outcome == RETRY_OUTCOME and attempt >= self.dead_letter_after
            self.log.record(self.route, entry.msg_id, attempt, DEAD if final else outcome,
                            alert_id=entry.message.fields.get("alert_id"), camera_id=entry.camera_id,
                            seq=entry.message.seq, http_status=result.status, error=result.error,
                            elapsed_ms=result.elapsed_ms)
            del self._futures[future]
            self._busy_cameras.discard(entry.camera_id)
            entry.in_flight, entry.done = False, attempt
            if outcome == DELIVERED:
                with self._stats_lock:
                    self._stats.delivered += 1
                entry.settle = ("ack", "")
                self._unqueue(entry)
            elif outcome == DISABLED:
                if not self._disabled:
                    where = getattr(self.deliverer, "url", self.route)
                    self.log.disable(self.route, f"410 Gone from {where}")
                    logger.error("route %s: %s answered 410 Gone; route disabled, its entries stay in the bus",
                                 self.route, where)
                    self._disabled = True
            elif final:
                logger.error("route %s: entry %s (camera %s) failed %d times; dead-lettering", self.route,
                             entry.msg_id, entry.camera_id, attempt)
                self._finish(entry, "dead", f"{attempt} attempts failed, last: {result.error}", record_attempt=None)
            else:
                with self._stats_lock:
                    self._stats.retried += 1
                entry.due = self._clock() + self._delay_s(attempt, result.retry_after_s)

    def _finish(self, entry: _Entry, action: str, reason: str, record_attempt: int | None) -> None:
        """Mark an entry dead (optionally recording it) and free its camera's queue."""
        if record_attempt is not None:
            self.log.record(self.route, entry.msg_id, record_attempt, DEAD,
                            alert_id=entry.message.fields.get("alert_id"), camera_id=entry.camera_id,
                            seq=entry.message.seq, error=reason)
        with self._stats_lock:
            self._stats.dead += 1
        entry.settle = (action, reason)
        self._unqueue(entry)

    def _unqueue(self, entry: _Entry) -> None:
        queue = self._cameras.get(entry.camera_id)
        if queue and entry in queue:
            queue.remove(entry)
            if not queue:
                del self._cameras[entry.camera_id]

    def _settle(self) -> None:
        """Tell the bus about decided entries (ack / dead letter); undone ones are retried later."""
        for entry in [e for e in self._entries.values() if e.settle is not None]:
            action, reason = entry.settle
            if action == "ack":
                self.bus.ack(self.route, self.group, [entry.message.entry_id])
            else:
                self.bus.dead_letter(self.route, self.group, entry.message, reason)
            del self._entries[entry.message.entry_id]

    def _drop_window(self) -> None:
        """Forget held entries that are not in flight (they stay pending in the bus)."""
        busy = set(id(e) for e in self._futures.values())
        for key in [k for k, e in self._entries.items() if id(e) not in busy]:
            entry = self._entries.pop(key)
            self._unqueue(entry)
        self._recovering = True
