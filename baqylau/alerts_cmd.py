"""Operator and integrator commands for alert delivery (issue 6): the alert lifecycle, Open311
tickets, webhook endpoints, the bus routes and the stand-alone delivery service.

``baqylau alerts ack|dispatch|resolve|reject|defer|reopen ALERT_ID``, ``alerts history``,
``tickets list|services``, ``webhooks list|attempts|replay|enable|secret``,
``routes status|dead|read`` and ``deliver CONFIG``. :func:`add_alert_parsers` adds the lifecycle
commands to the existing ``alerts`` group of :mod:`baqylau.cli`; :func:`add_parsers` adds the
other groups. Every command runs through :func:`cmd_dispatch`, which loads the configuration;
user errors raise :class:`AlertsCliError` (a :class:`~ingest.errors.BaqylauError`), which the CLI
prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
import os
import re
import signal
import sys
import threading
import zoneinfo
from collections import Counter
from pathlib import Path
from typing import Any

from alerts.lifecycle import REJECT_REASONS
from baqylau.argtypes import non_negative_int, positive_float, positive_int
from baqylau.config import Config
from ingest.errors import BaqylauError

log = logging.getLogger(__name__)

#: Lifecycle command -> target state.
COMMAND_STATES: dict[str, str] = {"ack": "acknowledged", "dispatch": "dispatched", "resolve": "resolved",
                                  "reject": "rejected", "defer": "deferred", "reopen": "new"}

#: Shortest alert-id prefix accepted in place of the full id (ids are 36-character UUIDs).
MIN_PREFIX = 8

#: Consumer group of baqylau's own route workers (``baqylau.delivery.GROUP``); ``routes read``
#: refuses it so an integrator never takes entries away from the workers.
WORKER_GROUP = "baqylau"

_RELATIVE_RE = re.compile(r"^\+(\d+(?:\.\d+)?)([mhd])$")
_UNIT_S = {"m": 60.0, "h": 3600.0, "d": 86400.0}


class AlertsCliError(BaqylauError, ValueError):
    """A command-line value the delivery commands cannot use (printed without a traceback)."""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without $USER and passwd entry)
        return "operator"


def parse_when(text: str | None, tz_name: str, *, relative: bool = False,
               now: dt.datetime | None = None) -> dt.datetime | None:
    """Parse an ISO 8601 time, or with ``relative`` also ``+<N>m``, ``+<N>h`` or ``+<N>d``.

    Args:
        text: The value, or ``None``.
        tz_name: IANA zone a time without an offset is read in (the configuration's).
        relative: Accept ``+<N>m/h/d`` (minutes, hours, days from ``now``).
        now: Current aware time for relative values (now when ``None``).

    Returns:
        An aware datetime, or ``None`` for ``None``.

    Raises:
        AlertsCliError: For text that is neither.
    """
    if text is None:
        return None
    m = _RELATIVE_RE.match(text.strip()) if relative else None
    if m:
        return (now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=float(m[1]) * _UNIT_S[m[2]])
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        hint = " or +<N>h / +<N>d" if relative else ""
        raise AlertsCliError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-30T14:05 or "
                             f"2026-11-30T14:05+05:00{hint})") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(tz_name))
    return value


def _db(cfg: Config) -> Path:
    return Path(cfg.data_dir) / "alerts.db"


def _open_store(cfg: Config, *, must_exist: bool = True) -> Any:
    """The configured alert store, or ``None`` when ``alerts.db`` is missing and not ``must_exist``.

    Raises:
        AlertsCliError: When it is missing and ``must_exist``.
    """
    from baqylau.delivery import open_alert_store

    if not _db(cfg).exists():
        if must_exist:
            raise AlertsCliError(f"no alert store {_db(cfg)} (data_dir of the configuration); nothing has run yet")
        return None
    return open_alert_store(cfg)


def resolve_alert_id(store: Any, text: str) -> str:
    """The full id of an alert given its id or a unique prefix of at least :data:`MIN_PREFIX` characters.

    Raises:
        AlertsCliError: When nothing or several alerts match.
    """
    if store.get(text) is not None:
        return text
    if len(text) < MIN_PREFIX:
        raise AlertsCliError(f"no alert {text!r} in {store.path} (a prefix needs at least {MIN_PREFIX} characters)")
    found = store.ids_with_prefix(text, limit=4)
    if not found:
        raise AlertsCliError(f"no alert {text!r} in {store.path}")
    if len(found) > 1:
        raise AlertsCliError(f"alert id prefix {text!r} matches {len(found)} alerts "
                             f"({', '.join(found[:3])}...); give more of it")
    return found[0]


def _dump(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def _table(heads: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


# --- alerts -------------------------------------------------------------------------------


def cmd_transition(args: argparse.Namespace, cfg: Config) -> int:
    """Move an alert to another lifecycle state and print the change."""
    to_status = COMMAND_STATES[args.alerts_command]
    if to_status == "rejected" and not (args.reason and args.reason.strip()):
        raise AlertsCliError(f"reject needs --reason (e.g. {', '.join(REJECT_REASONS)}; free text is accepted)")
    due = parse_when(getattr(args, "until", None), cfg.timezone, relative=True)
    with _open_store(cfg) as store:
        alert_id = resolve_alert_id(store, args.alert_id)
        alert = store.transition(alert_id, to_status, actor=args.by, note=args.note, reason=args.reason,
                                 due_utc=due)
        event = store.history(alert_id)[-1]
        published = _publish_now(cfg, store)
        routes = store.routes_of(alert_id)
    extra = "".join(f"  {k}={event[k]}" for k in ("reason", "due_utc") if event[k])
    print(f"{alert_id} {alert.type} camera={alert.camera_id}: {event['from_status']} -> {alert.status} "
          f"by {event['actor']}{extra}")
    if routes and not published:
        print(f"note: the change is queued in the outbox for {', '.join(routes)}; a running "
              f"'baqylau run' or 'baqylau deliver' publishes it")
    return 0


def _publish_now(cfg: Config, store: Any) -> bool:
    """Publish the outbox to the bus once, unless a running pipeline's relay holds the lease
    (then it publishes within a moment). Webhook and MQTT deliveries still need a running
    ``baqylau run`` or ``baqylau deliver``; police and ticketing consumers read the bus directly.

    Returns:
        Whether this command published the outbox itself.
    """
    from alerts.bus import BusError
    from alerts.relay import LEASE, Relay
    from alerts.store import AlertStoreError
    from baqylau.delivery import open_configured_bus

    try:
        bus = open_configured_bus(cfg)
    except BusError as exc:
        log.warning("outbox not published now: %s", exc)
        return False
    relay = Relay(store, bus, owner=f"cli-{os.getpid()}")
    try:
        published = relay.run_once() > 0 or store.outbox_stats()["pending"] == 0
    except (BusError, AlertStoreError) as exc:
        log.warning("outbox not published now (it will be by the next relay): %s", exc)
        published = False
    finally:
        store.release_lease(LEASE, relay.owner)
        bus.close()
    return published


def cmd_history(args: argparse.Namespace, cfg: Config) -> int:
    """Print an alert's events: who, when, from -> to, note, reason, due date."""
    with _open_store(cfg) as store:
        alert_id = resolve_alert_id(store, args.alert_id)
        alert = store.get(alert_id)
        events = store.history(alert_id)
    if args.json:
        _dump({"alert_id": alert_id, "status": alert.status, "type": alert.type, "camera_id": alert.camera_id,
               "events": events})
        return 0
    print(f"alert {alert_id} {alert.type} camera={alert.camera_id} ({alert.camera_name}): {alert.status}")
    for e in events:
        change = f"{e['from_status'] or '-'} -> {e['to_status']}" if e["to_status"] else ""
        extra = "".join(f"  {k}: {e[k]}" for k in ("note", "reason") if e[k])
        due = f"  due: {e['due_utc']}" if e["due_utc"] else ""
        print(f"{e['at_utc']}  {e['type']:<20} {change:<28} by {e['actor']}{extra}{due}")
    return 0


# --- tickets ------------------------------------------------------------------------------


def cmd_tickets_list(args: argparse.Namespace, cfg: Config) -> int:
    """Print the GeoReport v2 ``GET requests.json`` body, or a table."""
    from alerts.open311 import to_georeport_json

    since = parse_when(args.since, cfg.timezone)
    store = _open_store(cfg, must_exist=False)
    tickets = []
    if store is not None:
        with store:
            tickets = store.tickets(args.status, args.service_code, since, args.limit)
    if not args.table:
        sys.stdout.write(to_georeport_json(tickets) + "\n")
        return 0
    tz = zoneinfo.ZoneInfo(cfg.timezone)
    _table(["request", "status", "service", "requested", "address", "notes"],
           [[t.service_request_id, t.status, t.service_code,
             t.requested_datetime.astimezone(tz).strftime("%Y-%m-%d %H:%M"), t.address or "",
             t.status_notes or ""] for t in tickets])
    print(f"{len(tickets)} ticket(s)")
    return 0


def cmd_tickets_services(args: argparse.Namespace, cfg: Config) -> int:
    """Print the GeoReport v2 ``GET services.json`` list of the configured catalogue."""
    sys.stdout.write(json.dumps(cfg.alerts.ticketing.services.services(), ensure_ascii=False, indent=2) + "\n")
    return 0


# --- webhooks -----------------------------------------------------------------------------


def _delivery_log(cfg: Config, *, must_exist: bool = False) -> Any:
    from baqylau.delivery import open_delivery_log

    if not (Path(cfg.data_dir) / "deliveries.db").exists() and not must_exist:
        return None
    return open_delivery_log(cfg)


def _webhook(cfg: Config, name: str) -> Any:
    for w in cfg.alerts.webhooks:
        if w.name == name:
            return w
    known = ", ".join(repr(w.name) for w in cfg.alerts.webhooks) or "none"
    raise AlertsCliError(f"no webhook named {name!r} in the configuration (alerts.webhooks: {known})")


def cmd_webhooks_list(args: argparse.Namespace, cfg: Config) -> int:
    """Print the configured endpoints with their state and attempt counts."""
    dlog = _delivery_log(cfg)
    out = []
    try:
        disabled = dlog.disabled() if dlog else {}
        for w in cfg.alerts.webhooks:
            route = f"webhook:{w.name}"
            summary = dlog.summary(route) if dlog else {}
            counts = Counter({k: v for k, v in summary.items() if k != "last"})
            last = summary.get("last")
            out.append({"name": w.name, "route": route, "url": w.url, "disabled": route in disabled,
                        "disabled_reason": disabled.get(route, {}).get("reason"),
                        "disabled_utc": disabled.get(route, {}).get("disabled_utc"),
                        "delivered": counts["delivered"], "retry": counts["retry"], "dead": counts["dead"],
                        "last_attempt": None if last is None else {
                            k: last[k] for k in ("at_utc", "outcome", "http_status", "error", "msg_id")}})
    finally:
        if dlog:
            dlog.close()
    if args.json:
        _dump(out)
        return 0
    if not out:
        print("no webhooks configured (alerts.webhooks)")
        return 0
    rows = []
    for e in out:
        state = f"DISABLED ({e['disabled_reason']})" if e["disabled"] else "enabled"
        last = e["last_attempt"]
        last_text = "-" if last is None else (f"{last['at_utc']} {last['outcome']} "
                                              f"{last['http_status'] or last['error'] or ''}".strip())
        rows.append([e["name"], e["url"], state, str(e["delivered"]), str(e["retry"]), str(e["dead"]), last_text])
    _table(["name", "url", "state", "delivered", "retry", "dead", "last attempt"], rows)
    return 0


def cmd_webhooks_attempts(args: argparse.Namespace, cfg: Config) -> int:
    """Print recorded delivery attempts, oldest first."""
    route = None
    if args.endpoint:
        route = args.endpoint if ":" in args.endpoint else f"webhook:{_webhook(cfg, args.endpoint).name}"
    alert_id = args.alert
    if alert_id:
        store = _open_store(cfg, must_exist=False)
        if store is not None:
            with store:
                alert_id = resolve_alert_id(store, alert_id)
    dlog = _delivery_log(cfg)
    rows = []
    if dlog is not None:
        try:
            rows = dlog.attempts(route=route, msg_id=args.msg, alert_id=alert_id, limit=args.limit)
        finally:
            dlog.close()
    if args.json:
        _dump(rows)
        return 0
    _table(["at_utc", "route", "msg_id", "attempt", "outcome", "status", "ms", "error"],
           [[r["at_utc"], r["route"], r["msg_id"], str(r["attempt"]), r["outcome"], str(r["http_status"] or "-"),
             "-" if r["elapsed_ms"] is None else f"{r['elapsed_ms']:.0f}", r["error"] or ""] for r in rows])
    print(f"{len(rows)} attempt(s)")
    return 0


def cmd_webhooks_replay(args: argparse.Namespace, cfg: Config) -> int:
    """Queue earlier events again for one endpoint (same ``webhook-id``)."""
    route = f"webhook:{_webhook(cfg, args.name).name}"
    since = parse_when(args.since, cfg.timezone)
    with _open_store(cfg) as store:
        if args.msg:
            rows = [r for m in args.msg for r in store.outbox_rows(msg_id=m, limit=args.limit)]
            missing = sorted(set(args.msg) - {r.msg_id for r in rows})
            if missing:
                raise AlertsCliError(f"no event with webhook-id {', '.join(missing)} in the outbox of {store.path}")
        elif args.alert:
            rows = store.outbox_rows(alert_id=resolve_alert_id(store, args.alert), limit=args.limit)
        else:
            rows = store.outbox_rows(since_utc=since, limit=args.limit)
        picked, seen = [], set()
        for r in sorted(rows, key=lambda r: r.seq):
            if r.msg_id in seen or not (args.any_route or route in r.routes):
                continue  # an earlier replay of the same event, or an event never routed here
            seen.add(r.msg_id)
            picked.append(r)
        if not picked:
            raise AlertsCliError(f"none of the {len(rows)} matching event(s) was routed to {route} "
                                 f"(--any-route replays them anyway)")
        queued = store.replay(route, picked)
    print(f"queued {queued} event(s) for {route} ({len(rows) - queued} other row(s) skipped); "
          f"the relay of a running pipeline or 'baqylau deliver' sends them with their original webhook-id")
    if len(rows) >= args.limit:
        print(f"note: stopped at --limit {args.limit}; replay the rest with a later --since")
    dlog = _delivery_log(cfg)
    if dlog is not None:
        try:
            state = dlog.disabled().get(route)
        finally:
            dlog.close()
        if state:
            print(f"note: {route} is disabled ({state['reason']}); 'baqylau webhooks enable' resumes it")
    return 0


def cmd_webhooks_enable(args: argparse.Namespace, cfg: Config) -> int:
    """Re-enable an endpoint (after 410 Gone)."""
    dlog = _delivery_log(cfg, must_exist=True)
    try:
        disabled = dlog.disabled()
        route = args.name if args.name.startswith(("webhook:", "mqtt:")) else f"webhook:{args.name}"
        if route not in disabled and route not in {f"webhook:{w.name}" for w in cfg.alerts.webhooks}:
            _webhook(cfg, args.name)  # raises with the known names
        state = disabled.get(route)
        dlog.enable(route)
    finally:
        dlog.close()
    if state is None:
        print(f"{route} was not disabled")
    else:
        print(f"{route} enabled (was disabled since {state['disabled_utc']}: {state['reason']}); "
              f"its worker resumes with the entries left in the bus")
    return 0


def cmd_webhooks_secret(args: argparse.Namespace) -> int:
    """Print a new ``whsec_`` signing secret."""
    from alerts.webhooks import generate_secret

    print(generate_secret())
    return 0


# --- routes -------------------------------------------------------------------------------


def _configured_routes(cfg: Config) -> list[str]:
    a = cfg.alerts
    return ["police", "ticketing"] + [f"webhook:{w.name}" for w in a.webhooks] + [f"mqtt:{m.name}" for m in a.mqtt]


def cmd_routes_status(args: argparse.Namespace, cfg: Config) -> int:
    """Print the outbox figures and each route's queue."""
    from baqylau.delivery import open_configured_bus

    store = _open_store(cfg, must_exist=False)
    outbox = {"pending": 0, "published": 0, "oldest_pending_utc": None}
    if store is not None:
        with store:
            outbox = store.outbox_stats()
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    bus = open_configured_bus(cfg)
    dlog = _delivery_log(cfg)
    try:
        disabled = dlog.disabled() if dlog else {}
        routes = _configured_routes(cfg)
        routes += [r for r in bus.routes() if r not in routes]
        per_route = []
        for route in routes:
            s = bus.stats(route, WORKER_GROUP)
            per_route.append({"route": route, "configured": route in _configured_routes(cfg),
                              "length": s["length"], "pending": s["pending"], "lag": s["lag"], "dead": s["dead"],
                              "groups": bus.groups(route), "disabled": route in disabled})
    finally:
        bus.close()
        if dlog:
            dlog.close()
    out = {"bus": "redis" if cfg.alerts.bus.redis_url else "embedded", "outbox": outbox, "routes": per_route}
    if args.json:
        _dump(out)
        return 0
    print(f"outbox: {outbox['pending']} pending, {outbox['published']} published, oldest pending "
          f"{outbox['oldest_pending_utc'] or '-'}   bus: {out['bus']}")
    def groups(r: dict[str, Any]) -> str:
        return ", ".join(f"{g['name']} {g['pending']} pending {'?' if g['lag'] is None else g['lag']} unread"
                         for g in r["groups"]) or "no consumer group yet"
    _table(["route", "length", "dead", "consumer groups", "state"],
           [[r["route"], str(r["length"]), str(r["dead"]), groups(r),
             "disabled" if r["disabled"] else ("" if r["configured"] else "not configured")] for r in per_route])
    return 0


def _message_json(message: Any) -> dict[str, Any]:
    fields = dict(message.fields)
    for key in ("body", "ticket"):
        if key in fields:
            try:
                fields[key] = json.loads(fields[key])
            except ValueError:
                pass  # keep text that is not JSON as it is
    return {"entry_id": message.entry_id, "seq": message.seq, "fields": fields}


def cmd_routes_dead(args: argparse.Namespace, cfg: Config) -> int:
    """Print a route's dead letters with their reasons."""
    from baqylau.delivery import open_configured_bus

    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    bus = open_configured_bus(cfg)
    try:
        dead = bus.dead_letters(args.route, count=args.limit)
    finally:
        bus.close()
    if args.json:
        _dump([{**_message_json(m), "reason": reason, "deliveries": m.deliveries} for m, reason in dead])
        return 0
    _table(["seq", "msg_id", "type", "alert_id", "deliveries", "reason"],
           [[str(m.seq), m.fields.get("msg_id", ""), m.fields.get("type", ""), m.fields.get("alert_id", ""),
             str(m.deliveries), reason] for m, reason in dead])
    print(f"{len(dead)} dead letter(s) of {args.route}")
    return 0


def cmd_routes_read(args: argparse.Namespace, cfg: Config) -> int:
    """A pull consumer: print entries of a route for a consumer group as JSON lines."""
    from baqylau.delivery import open_configured_bus

    if args.group == WORKER_GROUP:
        raise AlertsCliError(f"group {WORKER_GROUP!r} belongs to baqylau's own delivery workers; "
                             f"read with your own group (e.g. --group city)")
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    bus = open_configured_bus(cfg)
    try:
        if args.pending:
            messages = bus.recover(args.route, args.group, args.consumer, args.count)
        else:
            messages = bus.read(args.route, args.group, args.consumer, args.count, args.block_ms)
        for m in messages:
            sys.stdout.write(json.dumps(_message_json(m), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        if args.ack and messages:
            bus.ack(args.route, args.group, [m.entry_id for m in messages])
    finally:
        bus.close()
    log.info("%s: %d entr(ies) for group %s%s", args.route, len(messages), args.group,
             ", acknowledged" if args.ack else "")
    return 0


# --- deliver ------------------------------------------------------------------------------


def cmd_deliver(args: argparse.Namespace, cfg: Config) -> int:
    """Run the delivery service until SIGINT or SIGTERM, logging counts every ``--stats-every-s``."""
    from baqylau.delivery import DeliveryService

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:  # noqa: ANN001
        log.info("signal %s: stopping delivery (committed events are published first)", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if cfg.alerts.deliver == "in_process":
        log.warning("alerts.deliver is in_process: a running 'baqylau run' on this data_dir delivers too "
                    "(harmless: one relay holds the lease, workers share the consumer group)")
    service = DeliveryService(cfg).start()
    try:
        while not stop.wait(args.stats_every_s):
            s = service.stats()
            workers = "; ".join(f"{route}: {w['delivered']} delivered, {w['retried']} retried, {w['dead']} dead"
                                f"{' (disabled)' if w['disabled'] else ''}" for route, w in s["workers"].items())
            log.info("relay: %d published, %d errors | %s", s["relay"]["published"], s["relay"]["errors"],
                     workers or "no workers")
    finally:
        service.stop()
    log.info("delivery stopped")
    return 0


# --- parsers ------------------------------------------------------------------------------


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML configuration file")


def add_alert_parsers(asub: argparse._SubParsersAction) -> None:
    """Add the lifecycle commands and ``history`` to the ``alerts`` group (``asub``)."""
    helps = {"ack": "acknowledge an alert", "dispatch": "mark an alert as dispatched (crew sent)",
             "resolve": "close an alert as resolved (closes its ticket)",
             "reject": "close an alert as a false positive (needs --reason)",
             "defer": "put an alert on hold until --until", "reopen": "reopen a resolved or rejected alert"}
    id_arg = ("alert_id", f"alert id or a unique prefix (>= {MIN_PREFIX} characters)")
    for name, text in helps.items():
        p = _add(asub, name, cmd_transition, text, id_arg)
        p.add_argument("--by", default=_user(), help="who makes the change (default: login name)")
        p.add_argument("--note", help="free text kept in the history (and the ticket's status_notes)")
        p.add_argument("--reason", help=f"why ({', '.join(REJECT_REASONS)} or free text); required for reject")
        if name == "defer":
            p.add_argument("--until", required=True, metavar="TIME",
                           help="due date: ISO 8601 (config timezone when no offset) or +<N>h / +<N>d")
    p = _add(asub, "history", cmd_history, "an alert's events: who, when, from -> to, note, reason", id_arg)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add(sp: argparse._SubParsersAction, name: str, fn: Any, text: str, *positional: tuple[str, str],
         config: bool = True) -> argparse.ArgumentParser:
    """One subcommand running ``fn(args, cfg)`` through :func:`cmd_dispatch`."""
    p = sp.add_parser(name, help=text)
    for arg, arg_help in positional:
        p.add_argument(arg, help=arg_help)
    if config:
        _config(p)
    p.set_defaults(alerts_fn=fn, func=cmd_dispatch)
    return p


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``tickets``, ``webhooks``, ``routes`` and ``deliver`` commands; each sets ``func``."""
    route_arg = ("route", "police, ticketing, webhook:<name> or mqtt:<name>")
    tsub = sub.add_parser("tickets", help="Open311 GeoReport v2 service requests made from alerts").add_subparsers(
        dest="tickets_command", required=True)
    p = _add(tsub, "list", cmd_tickets_list, "print GET requests.json (a JSON array)")
    p.add_argument("--status", choices=["open", "closed"])
    p.add_argument("--service-code", metavar="CODE")
    p.add_argument("--since", metavar="TIME", help="requested at or after, ISO 8601 (config timezone when no offset)")
    p.add_argument("--limit", type=positive_int)
    p.add_argument("--table", action="store_true", help="a human table instead of JSON")
    _add(tsub, "services", cmd_tickets_services, "print GET services.json of the configured catalogue")

    wsub = sub.add_parser("webhooks", help="Standard Webhooks endpoints").add_subparsers(
        dest="webhooks_command", required=True)
    p = _add(wsub, "list", cmd_webhooks_list, "configured endpoints, state and attempt counts")
    p.add_argument("--json", action="store_true")
    p = _add(wsub, "attempts", cmd_webhooks_attempts, "recorded delivery attempts")
    p.add_argument("--endpoint", metavar="NAME", help="webhook name (or a full route such as mqtt:NAME)")
    p.add_argument("--alert", metavar="ID", help="alert id or prefix")
    p.add_argument("--msg", metavar="MSG_ID", help="webhook-id")
    p.add_argument("--limit", type=positive_int, default=50, help="the latest N (default 50)")
    p.add_argument("--json", action="store_true")
    p = _add(wsub, "replay", cmd_webhooks_replay, "send earlier events to an endpoint again (same webhook-id)",
             ("name", "webhook name"))
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--msg", nargs="+", action="extend", metavar="MSG_ID", help="these webhook-ids")
    which.add_argument("--alert", metavar="ID", help="every event of this alert (id or prefix)")
    which.add_argument("--since", metavar="TIME", help="every event since, ISO 8601")
    p.add_argument("--any-route", action="store_true", help="also events that were not routed to this endpoint")
    p.add_argument("--limit", type=positive_int, default=10_000, help="most events read (default 10000)")
    _add(wsub, "enable", cmd_webhooks_enable, "re-enable an endpoint disabled after 410 Gone",
         ("name", "webhook name"))
    p = wsub.add_parser("secret", help="print a new whsec_ signing secret")
    p.add_argument("--config", help="ignored (accepted like the other commands)")
    p.set_defaults(func=cmd_webhooks_secret)

    rsub = sub.add_parser("routes", help="the alert bus: queues per route").add_subparsers(
        dest="routes_command", required=True)
    p = _add(rsub, "status", cmd_routes_status, "outbox and per-route queue figures")
    p.add_argument("--json", action="store_true")
    p = _add(rsub, "dead", cmd_routes_dead, "a route's dead letters", route_arg)
    p.add_argument("--limit", type=positive_int, default=100)
    p.add_argument("--json", action="store_true")
    p = _add(rsub, "read", cmd_routes_read, "pull entries for your consumer group as JSON lines", route_arg)
    p.add_argument("--group", required=True, help="your consumer group (created reading from the start)")
    p.add_argument("--consumer", default="cli", help="consumer name in the group (default cli)")
    p.add_argument("--count", type=positive_int, default=100, help="at most N entries (default 100)")
    p.add_argument("--block-ms", type=non_negative_int, default=0, help="wait up to MS for new entries")
    p.add_argument("--pending", action="store_true", help="re-read this consumer's unacknowledged entries")
    p.add_argument("--ack", action="store_true", help="acknowledge the printed entries")

    p = _add(sub, "deliver", cmd_deliver, "run the alert delivery service (relay, webhook and MQTT workers)",
             ("config", "YAML configuration file"), config=False)
    p.add_argument("--stats-every-s", type=positive_float, default=60.0, help="log counts this often (default 60)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Load the configuration and run the chosen command (``args.alerts_fn``)."""
    from baqylau.config import load_config

    cfg = load_config(args.config)
    level = getattr(args, "log_level", None) or (cfg.log_level if args.alerts_fn is cmd_deliver else "WARNING")
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return int(args.alerts_fn(args, cfg) or 0)
