"""The alert bus: one queue per route (``police``, ``ticketing``, ``webhook:<name>``, ``mqtt:<name>``).

Two implementations share one interface (:class:`Bus`):

- :class:`RedisBus`: Redis Streams (https://redis.io/docs/latest/develop/data-types/streams/),
  one stream per route, consumer groups, explicit ``XACK``, ``XAUTOCLAIM`` of entries a dead
  consumer left pending, a dead-letter stream per route; every call has socket and connect
  timeouts and reconnects after Redis restarts.
- :class:`EmbeddedBus`: the same semantics in one SQLite file (the default without Redis).

Publishing is idempotent by the outbox sequence number ``seq`` (increasing in commit order) of
the publishing outbox (``source``): on Redis one Lua script appends the entry only when ``seq``
is above the last one published from that source to that route, and records it, atomically, so
publishing the same outbox row twice (a relay that crashed between ``XADD`` and marking the
row published) adds nothing, while several machines' outboxes share the same route streams.
That requires a single relay per outbox at a time (``alerts.relay`` holds a lease).

Both buses hand an entry to one consumer of a group at a time and keep it pending until it is
acknowledged: delivery is at least once, and consumers must tolerate a repeat (``msg_id`` is in
the fields). Every failure to reach or use the bus raises :class:`BusError`; bad arguments raise
:class:`BusConfigError`. :func:`open_bus` picks the implementation from the configuration.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alerts.record import format_utc
from alerts.routing import ROUTE_RE
from alerts.sqlite import connect_wal, ensure_schema, transaction
from ingest.errors import BaqylauError

log = logging.getLogger(__name__)


class BusError(BaqylauError, ConnectionError):
    """The bus cannot be reached or answered an error (Redis down, timed out, refused)."""


class BusConfigError(BaqylauError, ValueError):
    """A bad argument: a route outside :data:`ROUTE_RE`, ``seq < 1``, empty fields, bad counts."""


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One entry of a route's queue.

    Attributes:
        route: Route name (see :data:`ROUTE_RE`).
        seq: Outbox sequence number (global, increasing in commit order).
        entry_id: The bus's own id: Redis stream id ``"<seq>-0"``; embedded: ``str(seq)``.
        fields: The entry's fields as published (``msg_id``, ``type``, ``alert_id``, ``camera_id``,
            ``body``; UTF-8 text values).
        deliveries: How many times the entry was handed to a consumer of this group (1 = first).
    """

    route: str
    seq: int
    entry_id: str
    fields: Mapping[str, str]
    deliveries: int = 1


class Bus(Protocol):
    """What the relay and the route workers need from a bus. Implementations are thread-safe."""

    def publish(self, route: str, seq: int, fields: Mapping[str, str], source: str = "default") -> bool:
        """Append an entry unless ``seq`` of outbox ``source`` is already in the route; ``True`` when added."""

    def publish_many(self, items: Sequence[tuple[str, int, Mapping[str, str]]],
                     source: str = "default") -> list[bool]:
        """:meth:`publish` for several ``(route, seq, fields)`` at once (one round trip)."""

    def ensure_group(self, route: str, group: str) -> None:
        """Create the consumer group (reading from the start) when missing."""

    def read(self, route: str, group: str, consumer: str, count: int, block_ms: int) -> list[BusMessage]:
        """New entries for this group, oldest first, waiting up to ``block_ms``."""

    def recover(self, route: str, group: str, consumer: str, count: int) -> list[BusMessage]:
        """Entries this consumer was given and never acknowledged (after a restart)."""

    def claim_stale(self, route: str, group: str, consumer: str, min_idle_ms: int,
                    count: int) -> list[BusMessage]:
        """Take over entries other consumers left pending for at least ``min_idle_ms``."""

    def ack(self, route: str, group: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""

    def dead_letter(self, route: str, group: str, message: BusMessage, reason: str) -> None:
        """Copy the entry to the route's dead-letter queue with the reason, then acknowledge it."""

    def stats(self, route: str, group: str | None = None) -> dict[str, Any]:
        """Queue figures: ``length``, ``dead``; with a group also ``pending``, ``lag``,
        ``last_delivered_id``."""

    def groups(self, route: str) -> list[dict[str, Any]]:
        """Every consumer group of the route: ``name``, ``pending``, ``lag``."""

    def trim(self, route: str, before_utc: dt.datetime) -> int:
        """Drop the route's entries added before ``before_utc``; returns how many."""

    def dead_letters(self, route: str, count: int = 100) -> list[tuple[BusMessage, str]]:
        """The oldest ``count`` dead letters of a route with their reasons."""

    def routes(self) -> list[str]:
        """Routes that have a queue."""

    def ping(self) -> None:
        """Raise :class:`BusError` when the bus cannot be reached."""

    def close(self) -> None:
        """Release connections (idempotent)."""


#: Dead-letter fields added to the message's own (they win over message fields of the same name).
DEAD_FIELDS = ("reason", "route", "group", "seq", "entry_id", "dead_utc", "deliveries")


def open_bus(redis_url: str | None, embedded_path: str | Path, **redis_kw: Any) -> Bus:
    """The configured bus: :class:`RedisBus` when ``redis_url`` is set, else :class:`EmbeddedBus`.

    Args:
        redis_url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``), or ``None``/empty.
        embedded_path: The SQLite file used without Redis (its folder must exist).
        **redis_kw: Keyword arguments of :class:`RedisBus`.

    Raises:
        BusError: When the embedded file cannot be opened (Redis is not contacted here).
        BusConfigError: On bad Redis options.
    """
    if redis_url:
        return RedisBus(redis_url, **redis_kw)
    return EmbeddedBus(embedded_path)


def _check_route(route: str) -> str:
    if not isinstance(route, str) or not ROUTE_RE.match(route):
        raise BusConfigError(f"route {route!r} is not police, ticketing, webhook:<name> or mqtt:<name>")
    return route


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BusConfigError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_int(value: int, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BusConfigError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _check_fields(fields: Mapping[str, str]) -> dict[str, str]:
    out = dict(fields)
    if not out or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in out.items()):
        raise BusConfigError(f"fields must be a non-empty mapping of text to text, got {out!r}")
    return out


def _seq_of(entry_id: str) -> int:
    """``"<seq>-0"`` (Redis) or ``"<seq>"`` (embedded) -> seq."""
    try:
        return int(str(entry_id).split("-", 1)[0])
    except ValueError:
        raise BusConfigError(f"entry id {entry_id!r} is not '<seq>-0' or '<seq>'") from None


def _dead_record(route: str, group: str, message: BusMessage, reason: str) -> dict[str, str]:
    return {**message.fields, "reason": str(reason), "route": route, "group": group,
            "seq": str(message.seq), "entry_id": message.entry_id,
            "dead_utc": format_utc(dt.datetime.now(dt.timezone.utc)), "deliveries": str(message.deliveries)}


def _from_dead_record(route: str, record: Mapping[str, str]) -> tuple[BusMessage, str]:
    fields = {k: v for k, v in record.items() if k not in DEAD_FIELDS}
    if "source" in fields:  # published entries carry their seq as a field too
        fields["seq"] = record["seq"]
    return (BusMessage(route, int(record["seq"]), record["entry_id"], fields, int(record["deliveries"])),
            record["reason"])


#: Publishes a batch. KEYS: (stream, published-hash) per route; ARGV: source, maxlen ("" = none),
#: then per entry: route number (1-based), seq, n fields, field, value, ... Returns 1/0 per entry.
#: A script stops at its first error with what it did so far kept, so a failed batch is always
#: a published prefix: publishing it again adds exactly the rest.
_PUBLISH_LUA = """
local source, maxlen = ARGV[1], ARGV[2]
local out = {}
local i = 3
while i <= #ARGV do
  local r, n = tonumber(ARGV[i]), tonumber(ARGV[i + 2])
  local stream, published = KEYS[2 * r - 1], KEYS[2 * r]
  local last = tonumber(redis.call('HGET', published, source) or '0')
  if tonumber(ARGV[i + 1]) > last then
    local args = {stream}
    if maxlen ~= '' then args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = maxlen end
    args[#args + 1] = '*'
    for j = i + 3, i + 2 + 2 * n do args[#args + 1] = ARGV[j] end
    redis.call('XADD', unpack(args))
    redis.call('HSET', published, source, ARGV[i + 1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = i + 3 + 2 * n
end
return out
"""


class RedisBus:
    """The bus on Redis Streams (Redis >= 7; https://redis.io/docs/latest/develop/data-types/streams/).

    Keys: ``<prefix>:route:<route>`` (one stream per route), ``<prefix>:dead:<route>`` (its
    dead letters) and ``<prefix>:published:<route>`` (hash: source -> last published seq);
    route names are UTF-8 in the key. Commands: ``XADD`` with an automatic id inside a Lua
    script (https://redis.io/docs/latest/commands/xadd/, https://redis.io/docs/latest/develop/interact/programmability/eval-intro/),
    ``XGROUP CREATE ... MKSTREAM``,
    ``XREADGROUP`` (``>`` for new entries, ``0`` for this consumer's pending ones;
    https://redis.io/docs/latest/commands/xreadgroup/), ``XPENDING`` (delivery counts),
    ``XAUTOCLAIM`` (https://redis.io/docs/latest/commands/xautoclaim/), ``XACK``.

    Bounded calls: every command has ``socket_timeout_s`` (a frozen Redis raises
    :class:`BusError` after that long), connecting has ``connect_timeout_s``, a reset connection
    is retried once after <= 0.1 s (that is what makes the first call after a Redis restart
    succeed) and timeouts are never retried, so a call returns within about
    ``connect_timeout_s + 2 * socket_timeout_s`` in the worst case (a health-check PING on an idle
    connection, then the command). Blocking reads wait at most ``0.8 * socket_timeout_s``.
    The redis-py connection pool reconnects on the next call after Redis comes back.

    Idempotence: :meth:`publish` appends only when ``seq`` is above the source's last published
    seq for the route and reports ``False`` otherwise; that is "already published" only because
    the relay publishes each route in increasing ``seq``. A Redis that lost its data lost the
    record too and accepts the rows again. Entries carry ``seq`` and ``source`` fields.

    Args:
        url: ``redis://[user:password@]host:port/db`` (https://www.iana.org/assignments/uri-schemes/prov/redis).
        prefix: Key prefix, so several deployments can share one Redis.
        socket_timeout_s: Longest wait for an answer, s (> 0). Shorter detects a frozen Redis
            sooner; too short fails commands on a loaded server.
        connect_timeout_s: Longest wait for a TCP connection, s (> 0).
        maxlen: Approximate cap on each stream's length (``MAXLEN ~``), or ``None`` to keep every
            entry. Trimmed entries that were never acknowledged are dropped from the pending lists
            by :meth:`claim_stale` and :meth:`recover`; size it well above any expected backlog.
        health_check_interval_s: PING a connection idle longer than this before using it, s.

    Raises:
        BusConfigError: On a bad option or URL.
    """

    def __init__(self, url: str, *, prefix: str = "baqylau", socket_timeout_s: float = 5.0,
                 connect_timeout_s: float = 2.0, maxlen: int | None = None,
                 health_check_interval_s: float = 10) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        if not (socket_timeout_s > 0 and connect_timeout_s > 0 and health_check_interval_s >= 0):
            raise BusConfigError("socket_timeout_s and connect_timeout_s must be > 0, "
                                 "health_check_interval_s >= 0")
        if maxlen is not None:
            _check_int(maxlen, "maxlen", 1)
        self._redis = redis
        self.prefix = _check_name(prefix, "prefix")
        self.maxlen = maxlen
        self.socket_timeout_s = float(socket_timeout_s)
        self._max_block_ms = int(self.socket_timeout_s * 800)
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s,
                health_check_interval=health_check_interval_s, decode_responses=True,
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1,
                            supported_errors=(redis.ConnectionError,)))
        except ValueError as exc:
            raise BusConfigError(f"bad Redis URL: {exc}") from exc
        self._publish_script = self._client.register_script(_PUBLISH_LUA)
        kw = self._client.connection_pool.connection_kwargs
        self.where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    def key(self, route: str) -> str:
        """The route's stream key."""
        return f"{self.prefix}:route:{_check_route(route)}"

    def dead_key(self, route: str) -> str:
        """The route's dead-letter stream key."""
        return f"{self.prefix}:dead:{_check_route(route)}"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._redis.RedisError as exc:
            raise BusError(f"redis {self.where}: {what} failed: {type(exc).__name__}: {exc}") from exc

    def _message(self, route: str, entry_id: str, fields: Mapping[str, str], deliveries: int = 1) -> BusMessage:
        seq = fields.get("seq")
        return BusMessage(route, int(seq) if seq and seq.isdigit() else _seq_of(entry_id), entry_id, dict(fields),
                          deliveries)

    def _with_group(self, route: str, group: str, what: str, call: Any) -> Any:
        """Run ``call()``; on NOGROUP (Redis restarted without data) create the group, retry once."""
        with self._errors(what):
            try:
                return call()
            except self._redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.info("redis %s: consumer group %r of %r is missing (new, or Redis lost its data); "
                         "creating it", self.where, group, route)
                self.ensure_group(route, group)
                return call()

    def publish(self, route: str, seq: int, fields: Mapping[str, str], source: str = "default") -> bool:
        """Append ``fields`` (plus ``seq`` and ``source``) to the route's stream unless ``seq`` was
        already published from ``source`` (one atomic Lua script: ``HGET`` the source's last
        seq, ``XADD <key> [MAXLEN ~ maxlen] * ...``, ``HSET``).

        Args:
            route: Route name (:data:`ROUTE_RE`).
            seq: Outbox sequence number, >= 1.
            fields: Non-empty text-to-text mapping.
            source: Id of the publishing outbox (``AlertStore.outbox_id``).

        Returns:
            ``True`` when added; ``False`` when ``seq`` is not above the source's last published seq.

        Raises:
            BusConfigError: On a bad route, seq or fields.
            BusError: When Redis fails.
        """
        return self.publish_many([(route, seq, fields)], source)[0]

    def publish_many(self, items: Sequence[tuple[str, int, Mapping[str, str]]], source: str = "default") -> list[bool]:
        """:meth:`publish` for several ``(route, seq, fields)`` in one script call: one round trip
        and one AOF write (and fsync) for the batch instead of one per entry.

        Returns:
            One bool per item, as :meth:`publish`.

        Raises:
            BusConfigError: On a bad route, seq or fields.
            BusError: When Redis fails; a prefix of the items may have been appended, and
                publishing them all again adds exactly the rest.
        """
        _check_name(source, "source")
        keys: list[str] = []
        number: dict[str, int] = {}
        args: list[Any] = [source, "" if self.maxlen is None else self.maxlen]
        for route, seq, fields in items:
            stream, fields = self.key(route), _check_fields(fields)
            _check_int(seq, "seq", 1)
            if route not in number:
                keys += [stream, f"{self.prefix}:published:{route}"]
                number[route] = len(number) + 1
            entry = {**fields, "seq": str(seq), "source": source}
            args += [number[route], seq, len(entry)]
            for k, v in entry.items():
                args += [k, v]
        if not items:
            return []
        with self._errors(f"XADD {len(items)} entries (first: {items[0][0]!r} seq {items[0][1]})"):
            return [bool(r) for r in self._publish_script(keys=keys, args=args)]

    def ensure_group(self, route: str, group: str) -> None:
        """``XGROUP CREATE <key> <group> 0 MKSTREAM``; an existing group (BUSYGROUP) is kept.

        Raises:
            BusConfigError: On a bad route or group.
            BusError: When Redis fails.
        """
        key = self.key(route)
        _check_name(group, "group")
        with self._errors(f"XGROUP CREATE {route!r} {group!r}"):
            try:
                self._client.xgroup_create(key, group, id="0", mkstream=True)
            except self._redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    def read(self, route: str, group: str, consumer: str, count: int, block_ms: int) -> list[BusMessage]:
        """``XREADGROUP GROUP <group> <consumer> COUNT n [BLOCK ms] STREAMS <key> >``.

        Args:
            count: Most entries to return, >= 1.
            block_ms: Wait up to this long for an entry (capped at ``0.8 * socket_timeout_s``);
                0 returns at once (it never means "forever" here).

        Returns:
            New entries, oldest first, now pending for ``consumer`` (``deliveries`` 1).

        Raises:
            BusConfigError: On bad arguments.
            BusError: When Redis fails or does not answer in time. A read that timed out may
                still have been served by Redis: its entries then wait in this consumer's
                pending list for :meth:`recover` or :meth:`claim_stale`.
        """
        key = self.key(route)
        _check_name(group, "group"), _check_name(consumer, "consumer"), _check_int(count, "count", 1)
        block = min(_check_int(block_ms, "block_ms", 0), self._max_block_ms) or None
        reply = self._with_group(route, group, f"XREADGROUP {route!r} {group!r}", lambda: self._client.xreadgroup(
            group, consumer, {key: ">"}, count=count, block=block))
        return [self._message(route, i, f) for _, entries in reply or [] for i, f in entries]

    def recover(self, route: str, group: str, consumer: str, count: int) -> list[BusMessage]:
        """``XREADGROUP ... STREAMS <key> 0`` and ``XPENDING`` in one ``MULTI``: this consumer's
        unacknowledged entries, oldest first. Reading them again counts as a delivery
        (``deliveries`` is the new count, as Redis keeps it). Entries trimmed away meanwhile are
        acknowledged and skipped.

        Raises:
            BusConfigError: On bad arguments.
            BusError: When Redis fails.
        """
        key = self.key(route)
        _check_name(group, "group"), _check_name(consumer, "consumer"), _check_int(count, "count", 1)

        def call() -> list:
            pipe = self._client.pipeline(transaction=True)
            pipe.xreadgroup(group, consumer, {key: "0"}, count=count)
            pipe.xpending_range(key, group, "-", "+", count, consumername=consumer)
            return pipe.execute()

        reply, pending = self._with_group(route, group, f"recover {route!r} {group!r}", call)
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        entries = [(i, f) for _, items in reply or [] for i, f in items]
        gone = [i for i, f in entries if not f]
        if gone:
            self.ack(route, group, gone)
        return [self._message(route, i, f, counts.get(i, 1)) for i, f in entries if f]

    def claim_stale(self, route: str, group: str, consumer: str, min_idle_ms: int,
                    count: int) -> list[BusMessage]:
        """``XAUTOCLAIM <key> <group> <consumer> <min_idle_ms> <cursor> COUNT n`` from ``0-0``,
        following the cursor for at most 10 rounds, then ``XPENDING`` for the delivery counts.

        Any consumer's entries idle at least ``min_idle_ms`` are taken, this one's included.
        Entries trimmed away are acknowledged and skipped. ``min_idle_ms`` trades speed of
        recovery from a dead consumer against stealing from a slow live one: set it well above
        the longest delivery attempt.

        Returns:
            The claimed entries, oldest first, now pending for ``consumer``.

        Raises:
            BusConfigError: On bad arguments.
            BusError: When Redis fails.
        """
        key = self.key(route)
        _check_name(group, "group"), _check_name(consumer, "consumer"), _check_int(count, "count", 1)
        _check_int(min_idle_ms, "min_idle_ms", 0)
        claimed: list[tuple[str, dict]] = []
        gone: list[str] = []
        cursor = "0-0"
        for _ in range(10):
            cursor, items, deleted = self._with_group(
                route, group, f"XAUTOCLAIM {route!r} {group!r}", lambda c=cursor: self._client.xautoclaim(
                    key, group, consumer, min_idle_ms, c, count=count - len(claimed)))[:3]
            claimed += [(i, f) for i, f in items if i is not None and f]
            gone += list(deleted)
            if cursor == "0-0" or len(claimed) >= count:
                break
        if gone:
            self.ack(route, group, gone)
        if not claimed:
            return []
        with self._errors(f"XPENDING {route!r} {group!r}"):
            pipe = self._client.pipeline(transaction=False)
            for i, _ in claimed:
                pipe.xpending_range(key, group, i, i, 1)
            counts = {p["message_id"]: int(p["times_delivered"]) for rows in pipe.execute() for p in rows}
        return [self._message(route, i, f, counts.get(i, 1)) for i, f in claimed]

    def ack(self, route: str, group: str, entry_ids: Sequence[str]) -> int:
        """``XACK <key> <group> ids...``; returns how many were pending.

        Raises:
            BusConfigError: On a bad route or group.
            BusError: When Redis fails (an invalid id included).
        """
        key = self.key(route)
        _check_name(group, "group")
        if not entry_ids:
            return 0
        with self._errors(f"XACK {route!r} {group!r}"):
            return int(self._client.xack(key, group, *entry_ids))

    def dead_letter(self, route: str, group: str, message: BusMessage, reason: str) -> None:
        """``MULTI; XADD <dead key> * fields+reason...; XACK <key> <group> id; EXEC``.

        The dead entry holds the message's fields plus :data:`DEAD_FIELDS` (``dead_utc`` ISO 8601
        UTC); the dead stream is capped like the route's.

        Raises:
            BusConfigError: On a bad route or group.
            BusError: When Redis fails (then neither happened).
        """
        key, dead = self.key(route), self.dead_key(route)
        _check_name(group, "group")
        record = _dead_record(route, group, message, reason)
        with self._errors(f"dead-letter {route!r} {message.entry_id}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xadd(dead, record, maxlen=self.maxlen, approximate=True)
            pipe.xack(key, group, message.entry_id)
            pipe.execute()

    def stats(self, route: str, group: str | None = None) -> dict[str, Any]:
        """``XLEN`` of the route and its dead letters; for a group, ``XINFO GROUPS``.

        Returns:
            ``{"length", "dead"}`` and with ``group``: ``"pending"`` (delivered, not acknowledged),
            ``"lag"`` (entries not yet delivered to the group; ``None`` when Redis cannot tell:
            after deletions, or after loading the AOF), ``"last_delivered_id"`` (the stream id,
            ``"0-0"`` for a missing group, whose lag is then the length).

        Raises:
            BusError: When Redis fails.
        """
        key, dead = self.key(route), self.dead_key(route)
        with self._errors(f"stats {route!r}"):
            pipe = self._client.pipeline(transaction=False)
            pipe.xlen(key)
            pipe.xlen(dead)
            pipe.exists(key)
            length, dead_length, exists = pipe.execute()
            out: dict[str, Any] = {"length": int(length), "dead": int(dead_length)}
            if group is None:
                return out
            info = next((g for g in (self._client.xinfo_groups(key) if exists else []) if g["name"] == group), None)
        if info is None:
            out.update(pending=0, lag=out["length"], last_delivered_id="0-0")
        else:
            lag = info.get("lag")
            out.update(pending=int(info["pending"]), lag=None if lag is None else int(lag),
                       last_delivered_id=str(info["last-delivered-id"]))
        return out

    def trim(self, route: str, before_utc: dt.datetime) -> int:
        """``XTRIM <key> MINID <ms>``: drop the route's entries added before ``before_utc``
        (entry ids are the append time in ms), read or not; dead letters are kept.

        Returns:
            How many entries were removed.

        Raises:
            BusError: When Redis fails.
        """
        min_id = f"{int(before_utc.timestamp() * 1000)}-0"
        with self._errors(f"XTRIM {route!r}"):
            return int(self._client.xtrim(self.key(route), minid=min_id, approximate=False))

    def groups(self, route: str) -> list[dict[str, Any]]:
        """``XINFO GROUPS``: every consumer group of the route with ``name``, ``pending`` and
        ``lag`` (``None`` when Redis cannot tell), by name.

        Raises:
            BusError: When Redis fails.
        """
        key = self.key(route)
        with self._errors(f"XINFO GROUPS {route!r}"):
            if not self._client.exists(key):
                return []
            infos = self._client.xinfo_groups(key)
        return sorted(({"name": g["name"], "pending": int(g["pending"]),
                        "lag": None if g.get("lag") is None else int(g["lag"])} for g in infos),
                      key=lambda g: g["name"])

    def dead_letters(self, route: str, count: int = 100) -> list[tuple[BusMessage, str]]:
        """``XRANGE <dead key> - + COUNT n``: the oldest dead letters with their reasons.

        Raises:
            BusError: When Redis fails.
        """
        dead = self.dead_key(route)
        _check_int(count, "count", 1)
        with self._errors(f"XRANGE dead letters of {route!r}"):
            return [_from_dead_record(route, f) for _, f in self._client.xrange(dead, count=count)]

    def routes(self) -> list[str]:
        """``SCAN MATCH <prefix>:route:*``: sorted routes that have a stream.

        Raises:
            BusError: When Redis fails.
        """
        start = f"{self.prefix}:route:"
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*"
        with self._errors("SCAN routes"):
            keys = set(self._client.scan_iter(match=pattern, count=500, _type="stream"))
        return sorted(k[len(start):] for k in keys)

    def ping(self) -> None:
        """``PING``.

        Raises:
            BusError: When Redis does not answer.
        """
        with self._errors("PING"):
            self._client.ping()

    def close(self) -> None:
        """Close the connection pool (idempotent; a later call opens new connections)."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisBus({self.where!r}, prefix={self.prefix!r})"


_EMBEDDED_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_entries (
    route     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    fields    TEXT NOT NULL,    -- JSON object of text
    added_utc TEXT NOT NULL,
    PRIMARY KEY (route, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_groups (
    route    TEXT NOT NULL,
    grp      TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,   -- last seq handed out to the group
    PRIMARY KEY (route, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_pending (
    route          TEXT NOT NULL,
    grp            TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    consumer       TEXT NOT NULL,
    delivered_at_s REAL NOT NULL,          -- Unix time of the last delivery
    deliveries     INTEGER NOT NULL,
    PRIMARY KEY (route, grp, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bus_pending_consumer ON bus_pending (route, grp, consumer, seq);
CREATE TABLE IF NOT EXISTS bus_dead (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    route  TEXT NOT NULL,
    record TEXT NOT NULL                   -- JSON: fields plus DEAD_FIELDS
);
CREATE INDEX IF NOT EXISTS bus_dead_route ON bus_dead (route, id);
"""

#: ``PRAGMA user_version`` of the embedded bus schema.
EMBEDDED_SCHEMA_VERSION = 1

#: How often a blocking :meth:`EmbeddedBus.read` looks for new entries, s.
EMBEDDED_POLL_S = 0.05


class EmbeddedBus:
    """The bus in one SQLite file, with :class:`RedisBus` semantics (the default without Redis).

    Tables ``bus_entries`` (route, seq: the idempotence key), ``bus_groups`` (last seq handed
    out), ``bus_pending`` (the pending entries list: consumer, delivery time and count) and
    ``bus_dead``. Thread-safe (one connection behind a lock); several processes may share the file
    (WAL, ``BEGIN IMMEDIATE`` writes; :mod:`alerts.sqlite`). Entries are kept until the file is
    pruned by hand (no ``maxlen``). A blocking :meth:`read` polls every
    :data:`EMBEDDED_POLL_S`. Idle times use the callers' wall clocks (``time.time()``), so
    processes sharing the file must agree on the time.

    Args:
        path: The database file (created when missing; its folder must exist).

    Raises:
        BusError: When the file cannot be opened, is not a database, or has a newer schema.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._conn = connect_wal(self.path)
            ensure_schema(self._conn, self._lock, _EMBEDDED_SCHEMA, EMBEDDED_SCHEMA_VERSION,
                          f"embedded bus {self.path}", BusError)
        except sqlite3.Error as exc:
            raise BusError(f"embedded bus {self.path}: cannot open: {exc}") from exc
        self._closed = False

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._errors(what), transaction(self._conn, self._lock) as conn:
            yield conn

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        if self._closed:
            raise BusError(f"embedded bus {self.path}: {what}: closed")
        try:
            yield
        except sqlite3.Error as exc:
            raise BusError(f"embedded bus {self.path}: {what} failed: {exc}") from exc

    def _query(self, what: str, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._errors(what), self._lock:
            return self._conn.execute(sql, args).fetchall()

    @staticmethod
    def _messages(route: str, rows: Sequence[tuple]) -> list[BusMessage]:
        """Rows ``(seq, fields JSON, deliveries)`` -> messages."""
        return [BusMessage(route, seq, str(seq), json.loads(fields), deliveries) for seq, fields, deliveries in rows]

    def publish(self, route: str, seq: int, fields: Mapping[str, str], source: str = "default") -> bool:
        """Insert ``(route, seq)`` unless present (see :meth:`RedisBus.publish`; one embedded bus
        serves one outbox, so ``source`` is only copied into the fields).

        Raises:
            BusConfigError: On a bad route, seq or fields.
            BusError: When SQLite fails.
        """
        return self.publish_many([(route, seq, fields)], source)[0]

    def publish_many(self, items: Sequence[tuple[str, int, Mapping[str, str]]], source: str = "default") -> list[bool]:
        """:meth:`publish` for several ``(route, seq, fields)`` in one transaction.

        Raises:
            BusConfigError: On a bad route, seq or fields.
            BusError: When SQLite fails (nothing is added then).
        """
        _check_name(source, "source")
        rows = []
        now = format_utc(dt.datetime.now(dt.timezone.utc))
        for route, seq, fields in items:
            _check_route(route), _check_int(seq, "seq", 1)
            rows.append((route, seq, json.dumps({**_check_fields(fields), "seq": str(seq), "source": source},
                                                ensure_ascii=False), now))
        if not rows:
            return []
        with self._write(f"publish {len(rows)} entries") as conn:
            return [conn.execute("INSERT OR IGNORE INTO bus_entries VALUES (?, ?, ?, ?)", row).rowcount == 1
                    for row in rows]

    def ensure_group(self, route: str, group: str) -> None:
        """Create the group reading from the start when missing (see :meth:`RedisBus.ensure_group`)."""
        _check_route(route), _check_name(group, "group")
        with self._write(f"create group {route!r} {group!r}") as conn:
            conn.execute("INSERT OR IGNORE INTO bus_groups VALUES (?, ?, 0)", (route, group))

    def read(self, route: str, group: str, consumer: str, count: int, block_ms: int) -> list[BusMessage]:
        """Hand entries after the group's last seq to ``consumer`` (see :meth:`RedisBus.read`);
        a missing group is created. Polls every :data:`EMBEDDED_POLL_S` up to ``block_ms``."""
        _check_route(route), _check_name(group, "group"), _check_name(consumer, "consumer")
        _check_int(count, "count", 1)
        deadline = time.monotonic() + _check_int(block_ms, "block_ms", 0) / 1000
        self.ensure_group(route, group)
        while True:
            waiting = self._query("read", "SELECT EXISTS (SELECT 1 FROM bus_entries e JOIN bus_groups g "
                                  "ON g.route = e.route AND g.grp = ? WHERE e.route = ? AND e.seq > g.last_seq)",
                                  (group, route))[0][0]
            if waiting:
                with self._write(f"read {route!r} {group!r}") as conn:
                    rows = conn.execute(
                        "SELECT seq, fields, 1 FROM bus_entries WHERE route = ? AND seq > "
                        "(SELECT last_seq FROM bus_groups WHERE route = ? AND grp = ?) ORDER BY seq LIMIT ?",
                        (route, route, group, count)).fetchall()
                    if rows:
                        now = time.time()
                        conn.executemany("INSERT OR REPLACE INTO bus_pending VALUES (?, ?, ?, ?, ?, 1)",
                                         [(route, group, r[0], consumer, now) for r in rows])
                        conn.execute("UPDATE bus_groups SET last_seq = ? WHERE route = ? AND grp = ?",
                                     (rows[-1][0], route, group))
                if rows:
                    return self._messages(route, rows)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(EMBEDDED_POLL_S, remaining))

    def _take(self, what: str, route: str, group: str, consumer: str, where: str, args: Sequence[Any],
              count: int) -> list[BusMessage]:
        """Re-deliver pending entries matching ``where`` to ``consumer`` (count + 1, time now)."""
        with self._write(what) as conn:
            rows = conn.execute(
                f"SELECT p.seq, e.fields, p.deliveries + 1 FROM bus_pending p JOIN bus_entries e "
                f"ON e.route = p.route AND e.seq = p.seq WHERE p.route = ? AND p.grp = ? AND {where} "
                f"ORDER BY p.seq LIMIT ?", (route, group, *args, count)).fetchall()
            conn.executemany("UPDATE bus_pending SET consumer = ?, delivered_at_s = ?, deliveries = ? "
                             "WHERE route = ? AND grp = ? AND seq = ?",
                             [(consumer, time.time(), r[2], route, group, r[0]) for r in rows])
        return self._messages(route, rows)

    def recover(self, route: str, group: str, consumer: str, count: int) -> list[BusMessage]:
        """This consumer's pending entries, counted as a new delivery (see :meth:`RedisBus.recover`)."""
        _check_route(route), _check_name(group, "group"), _check_name(consumer, "consumer")
        return self._take(f"recover {route!r} {group!r}", route, group, consumer, "p.consumer = ?", (consumer,),
                          _check_int(count, "count", 1))

    def claim_stale(self, route: str, group: str, consumer: str, min_idle_ms: int,
                    count: int) -> list[BusMessage]:
        """Take any consumer's entries idle >= ``min_idle_ms`` (see :meth:`RedisBus.claim_stale`)."""
        _check_route(route), _check_name(group, "group"), _check_name(consumer, "consumer")
        before_s = time.time() - _check_int(min_idle_ms, "min_idle_ms", 0) / 1000
        return self._take(f"claim {route!r} {group!r}", route, group, consumer, "p.delivered_at_s <= ?",
                          (before_s,), _check_int(count, "count", 1))

    def ack(self, route: str, group: str, entry_ids: Sequence[str]) -> int:
        """Drop entries from the group's pending list; returns how many were pending.

        Raises:
            BusConfigError: On a bad route, group or entry id.
            BusError: When SQLite fails.
        """
        _check_route(route), _check_name(group, "group")
        seqs = [_seq_of(i) for i in entry_ids]
        if not seqs:
            return 0
        with self._write(f"ack {route!r} {group!r}") as conn:
            return sum(conn.execute("DELETE FROM bus_pending WHERE route = ? AND grp = ? AND seq = ?",
                                    (route, group, s)).rowcount for s in seqs)

    def dead_letter(self, route: str, group: str, message: BusMessage, reason: str) -> None:
        """Store the dead letter and acknowledge, in one transaction (see :meth:`RedisBus.dead_letter`)."""
        _check_route(route), _check_name(group, "group")
        record = json.dumps(_dead_record(route, group, message, reason), ensure_ascii=False)
        with self._write(f"dead-letter {route!r} {message.entry_id}") as conn:
            conn.execute("INSERT INTO bus_dead (route, record) VALUES (?, ?)", (route, record))
            conn.execute("DELETE FROM bus_pending WHERE route = ? AND grp = ? AND seq = ?",
                         (route, group, _seq_of(message.entry_id)))

    def stats(self, route: str, group: str | None = None) -> dict[str, Any]:
        """Same keys as :meth:`RedisBus.stats` (``lag`` is always known here)."""
        _check_route(route)
        (length, dead), = self._query("stats", "SELECT (SELECT COUNT(*) FROM bus_entries WHERE route = ?), "
                                      "(SELECT COUNT(*) FROM bus_dead WHERE route = ?)", (route, route))
        out: dict[str, Any] = {"length": length, "dead": dead}
        if group is not None:
            (pending, last), = self._query(
                "stats", "SELECT (SELECT COUNT(*) FROM bus_pending WHERE route = ? AND grp = ?), "
                "COALESCE((SELECT last_seq FROM bus_groups WHERE route = ? AND grp = ?), 0)",
                (route, group, route, group))
            (lag,), = self._query("stats", "SELECT COUNT(*) FROM bus_entries WHERE route = ? AND seq > ?",
                                  (route, last))
            out.update(pending=pending, lag=lag, last_delivered_id=str(last))
        return out

    def trim(self, route: str, before_utc: dt.datetime) -> int:
        """Drop the route's entries added before ``before_utc`` that no consumer holds pending
        (see :meth:`RedisBus.trim`); dead letters are kept.

        Returns:
            How many entries were removed.

        Raises:
            BusError: When SQLite fails.
        """
        _check_route(route)
        with self._write(f"trim {route!r}") as conn:
            return conn.execute("DELETE FROM bus_entries WHERE route = ? AND added_utc < ? AND NOT EXISTS "
                                "(SELECT 1 FROM bus_pending p WHERE p.route = bus_entries.route AND "
                                "p.seq = bus_entries.seq)", (route, format_utc(before_utc))).rowcount

    def groups(self, route: str) -> list[dict[str, Any]]:
        """Every consumer group of the route with ``name``, ``pending`` and ``lag``, by name
        (see :meth:`RedisBus.groups`)."""
        _check_route(route)
        rows = self._query("groups", "SELECT g.grp, (SELECT COUNT(*) FROM bus_pending p WHERE p.route = g.route "
                           "AND p.grp = g.grp), (SELECT COUNT(*) FROM bus_entries e WHERE e.route = g.route "
                           "AND e.seq > g.last_seq) FROM bus_groups g WHERE g.route = ? ORDER BY g.grp", (route,))
        return [{"name": name, "pending": int(pending), "lag": int(lag)} for name, pending, lag in rows]

    def dead_letters(self, route: str, count: int = 100) -> list[tuple[BusMessage, str]]:
        """The oldest ``count`` dead letters of the route with their reasons."""
        _check_route(route), _check_int(count, "count", 1)
        rows = self._query("dead letters", "SELECT record FROM bus_dead WHERE route = ? ORDER BY id LIMIT ?",
                           (route, count))
        return [_from_dead_record(route, json.loads(r[0])) for r in rows]

    def routes(self) -> list[str]:
        """Sorted routes with entries or groups."""
        rows = self._query("routes", "SELECT route FROM bus_entries UNION SELECT route FROM bus_groups")
        return sorted(r[0] for r in rows)

    def ping(self) -> None:
        """Check that the file answers a query.

        Raises:
            BusError: When it does not (closed, unreadable).
        """
        self._query("ping", "SELECT 1")

    def close(self) -> None:
        """Close the connection (idempotent; later calls raise :class:`BusError`)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __repr__(self) -> str:
        return f"EmbeddedBus({str(self.path)!r})"
