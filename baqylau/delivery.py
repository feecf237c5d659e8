"""Alert delivery in the application: the store's outbox policy from the configuration, and the
service that publishes the outbox to the bus and runs the webhook and MQTT workers.

``baqylau run`` starts a :class:`DeliveryService` in the pipeline process (``alerts.deliver:
in_process``, the default); with ``alerts.deliver: external`` the pipelines only write alerts
and ``baqylau deliver`` runs the service on its own (one per ``data_dir``; workers for the same
Redis may run on several machines, see the README's scaling section).
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from alerts.bus import Bus, open_bus
from alerts.delivery import DeliveryLog, RouteWorker, WebhookDeliverer
from alerts.lifecycle import SYSTEM_ACTOR, LifecycleError
from alerts.outbox import OutboxPolicy
from alerts.relay import Relay
from alerts.routing import Router
from alerts.store import AlertStore, AlertStoreError
from alerts.webhooks import RETRY_SCHEDULE_S
from baqylau.config import Config

log = logging.getLogger(__name__)

#: Consumer group of baqylau's own route workers (integrators use their own groups).
GROUP = "baqylau"


def consumer_name(route: str) -> str:
    """Consumer name of this machine's worker for a route: stable across restarts, so a restarted
    worker first takes back its own unacknowledged entries (in order) before reading new ones."""
    return f"{socket.gethostname()}:{route}"


def outbox_policy(cfg: Config) -> OutboxPolicy:
    """The routes, event bodies and tickets the configuration asks for."""
    a = cfg.alerts
    return OutboxPolicy(Router(a.routes, cfg.timezone, a.severity_by_type), a.ticketing.services,
                        a.media_base_url, a.ticketing.expected_days, cfg.timezone, a.update_interval_s)


def delivery_warnings(cfg: Config) -> list[str]:
    """Lines for ``baqylau config check`` about delivery settings that are valid but probably
    not what was meant (an output no rule sends to, MQTT without paho-mqtt, no snapshot URL)."""
    a = cfg.alerts
    named = {r for rule in a.routes for r in rule.routes}
    out = [f"warning: alerts.webhooks {w.name!r}: no alerts.routes rule sends to webhook:{w.name}, so it gets nothing"
           for w in a.webhooks if f"webhook:{w.name}" not in named]
    out += [f"warning: alerts.mqtt {m.name!r}: no alerts.routes rule sends to mqtt:{m.name}, so it gets nothing"
            for m in a.mqtt if f"mqtt:{m.name}" not in named]
    if a.mqtt:
        try:
            import paho.mqtt  # noqa: F401
        except ImportError:
            out.append("warning: alerts.mqtt is configured but paho-mqtt is not installed: pip install -e '.[mqtt]'")
    if (a.webhooks or a.mqtt or "ticketing" in named) and not a.media_base_url:
        out.append("note: alerts.media_base_url is not set: webhooks and tickets carry no snapshot URL")
    if a.deliver == "external":
        out.append("note: alerts.deliver is external: run 'baqylau deliver CONFIG' to publish and deliver alerts")
    return out


def open_alert_store(cfg: Config) -> AlertStore:
    """The alert store of ``data_dir`` with the configured outbox policy.

    Raises:
        alerts.store.AlertStoreError: When it cannot be opened.
    """
    return AlertStore(Path(cfg.data_dir) / "alerts.db", outbox_policy(cfg))


def open_configured_bus(cfg: Config) -> Bus:
    """Redis Streams when ``alerts.bus.redis_url`` is set, else the embedded bus in
    ``data_dir/bus.db``.

    Raises:
        alerts.bus.BusError: When the embedded file cannot be opened (Redis is connected lazily).
    """
    b = cfg.alerts.bus
    return open_bus(b.redis_url, Path(cfg.data_dir) / "bus.db", prefix=b.prefix,
                    socket_timeout_s=b.socket_timeout_s, connect_timeout_s=b.connect_timeout_s, maxlen=b.maxlen)


def open_delivery_log(cfg: Config) -> DeliveryLog:
    """The delivery attempts and endpoint states of ``data_dir/deliveries.db``."""
    return DeliveryLog(Path(cfg.data_dir) / "deliveries.db")


class DeliveryCollector:
    """Prometheus metrics of a :class:`DeliveryService`, read at each scrape (no bus calls, so a
    frozen Redis never stalls a scrape): ``baqylau_outbox_pending``,
    ``baqylau_alerts_published_total``, ``baqylau_relay_errors_total``,
    ``baqylau_deliveries_total{route,outcome}`` (delivered, retried, dead),
    ``baqylau_route_in_window{route}`` and ``baqylau_route_disabled{route}``.

    Args:
        get_service: Returns the service, or ``None`` when there is none (yet).
    """

    def __init__(self, get_service: Any) -> None:
        self._get = get_service

    def collect(self) -> Any:
        """Yield the metric families (``prometheus_client`` collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        service = self._get()
        if service is None:
            return
        pending = GaugeMetricFamily("baqylau_outbox_pending", "Committed alert events not yet published to the bus.")
        try:
            pending.add_metric([], service.store.outbox_stats()["pending"])
            yield pending
        except AlertStoreError as exc:
            log.warning("metrics: outbox not readable: %s", exc)
        yield CounterMetricFamily("baqylau_alerts_published", "Outbox rows published to the bus.",
                                  value=service.relay.published)
        yield CounterMetricFamily("baqylau_relay_errors", "Relay rounds that failed (bus or store errors).",
                                  value=service.relay.errors)
        done = CounterMetricFamily("baqylau_deliveries", "Delivery attempts by route and outcome.",
                                   labels=["route", "outcome"])
        window = GaugeMetricFamily("baqylau_route_in_window", "Events a route worker holds now.", labels=["route"])
        disabled = GaugeMetricFamily("baqylau_route_disabled", "1 when the endpoint was disabled (410 Gone).",
                                     labels=["route"])
        for w in service.workers:
            st = w.stats()
            for outcome in ("delivered", "retried", "dead"):
                done.add_metric([w.route, outcome], st[outcome])
            window.add_metric([w.route], st["in_window"])
            disabled.add_metric([w.route], 1 if st["disabled"] else 0)
        yield done
        yield window
        yield disabled


class DeliveryService:
    """Relay (outbox -> bus), one worker per webhook and MQTT output, and the deferral watch.

    Args:
        cfg: The configuration.
        store: An open alert store to share (the pipeline's); opened from ``cfg`` when ``None``.

    Raises:
        alerts.store.AlertStoreError: When the store cannot be opened.
    """

    def __init__(self, cfg: Config, store: AlertStore | None = None) -> None:
        self.cfg = cfg
        self._own_store = store is None
        self.store = store or open_alert_store(cfg)
        self.bus = open_configured_bus(cfg)
        self.log = open_delivery_log(cfg)
        self.relay = Relay(self.store, self.bus)
        self.workers: list[RouteWorker] = []
        a = cfg.alerts
        for w in a.webhooks:
            schedule = tuple(w.retry_schedule_s) if w.retry_schedule_s else RETRY_SCHEDULE_S
            self.workers.append(RouteWorker(
                f"webhook:{w.name}", self.bus, WebhookDeliverer(f"webhook:{w.name}", w.url, w.secrets, w.timeout_s),
                self.log, group=GROUP, consumer=consumer_name(f"webhook:{w.name}"), schedule_s=schedule,
                dead_letter_after=a.bus.dead_letter_after, max_in_flight=w.max_in_flight))
        for m in a.mqtt:
            from alerts.mqtt import MqttDeliverer

            self.workers.append(RouteWorker(
                f"mqtt:{m.name}", self.bus, MqttDeliverer(
                    f"mqtt:{m.name}", m.host, m.port, topic_prefix=m.topic_prefix, qos=m.qos,
                    retain_state=m.retain_state, username=m.username, password=m.password, tls=m.tls,
                    timeout_s=m.timeout_s),
                self.log, group=GROUP, consumer=consumer_name(f"mqtt:{m.name}"),
                dead_letter_after=a.bus.dead_letter_after))
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        #: How often deferred alerts are checked for their due date, s.
        self.deferral_every_s = 5.0

    def start(self) -> DeliveryService:
        """Start the relay, the workers and the deferral watch (daemon threads)."""
        self.relay.start()
        for w in self.workers:
            w.start()
        self._watch = threading.Thread(target=self._watch_deferrals, name="deferral-watch", daemon=True)
        self._watch.start()
        log.info("delivery: %s bus, relay and %d worker(s): %s",
                 "Redis" if self.cfg.alerts.bus.redis_url else "embedded", len(self.workers),
                 ", ".join(w.route for w in self.workers) or "none")
        return self

    def wake(self) -> None:
        """Tell the relay an alert changed (lower latency than its poll)."""
        self.relay.wake()

    def prune(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Delete delivery data older than ``alerts.delivery_retention_days``: published outbox
        rows, bus entries of every route (not dead letters) and delivery attempts.

        Returns:
            Rows removed per kind: ``outbox``, ``bus``, ``attempts``.

        Raises:
            AlertStoreError, BusError, DeliveryLogError: When a store cannot be written.
        """
        cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=self.cfg.alerts.delivery_retention_days)
        routes = {w.route for w in self.workers} | {"police", "ticketing"} | set(self.bus.routes())
        out = {"outbox": self.store.prune_outbox(cutoff),
               "bus": sum(self.bus.trim(r, cutoff) for r in sorted(routes)),
               "attempts": self.log.prune(cutoff)}
        if any(out.values()):
            log.info("delivery retention (%g days): deleted %d outbox rows, %d bus entries, %d attempts",
                     self.cfg.alerts.delivery_retention_days, out["outbox"], out["bus"], out["attempts"])
        return out

    def _watch_deferrals(self) -> None:
        """Deferred alerts whose due date passed go back to ``new`` (published as ``alert.reopened``),
        updates held back by ``alerts.update_interval_s`` are published, and delivery data past
        its retention is deleted hourly."""
        import time

        next_prune = 0.0
        while not self._stop.wait(self.deferral_every_s):
            try:
                self.store.flush_updates()
            except AlertStoreError as exc:
                log.error("held alert updates not published yet: %s", exc)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 3600.0
                try:
                    self.prune()
                except Exception as exc:  # noqa: BLE001 - retention must never stop delivery
                    log.error("delivery retention failed (retried in an hour): %s", exc)
            try:
                for alert_id in self.store.due_deferred():
                    try:
                        self.store.transition(alert_id, "new", actor=SYSTEM_ACTOR, note="deferral due")
                        log.warning("alert %s: deferral due, back to new", alert_id)
                    except LifecycleError:
                        pass  # an operator moved it meanwhile
            except AlertStoreError as exc:
                log.error("deferral watch: %s", exc)

    def stats(self) -> dict[str, Any]:
        """Relay and worker counters."""
        return {"relay": {"published": self.relay.published, "errors": self.relay.errors},
                "workers": {w.route: w.stats() for w in self.workers}}

    def idle(self) -> bool:
        """Whether everything committed has been published and no enabled worker has anything
        to do now: nothing unread, no attempt running or due (entries waiting for a later
        retry do not count: they stay pending in the bus for the next start)."""
        if self.store.outbox_stats()["pending"]:
            return False
        for w in self.workers:
            st = w.stats()
            if st["disabled"]:
                continue
            if st["in_flight"] or st["due"]:
                return False
            q = self.bus.stats(w.route, GROUP)
            if q.get("lag") or (q.get("pending") or 0) > st["in_window"]:
                return False
        return True

    def stop(self, drain_s: float = 10.0, timeout_s: float = 10.0) -> None:
        """Stop the threads and close what this service opened.

        First, for up to ``drain_s``, the relay publishes what is committed and the workers
        deliver what they can (a file run ends with its last alerts delivered); whatever is left
        stays in the outbox or the bus for the next start. Nothing is lost either way.
        """
        import time

        deadline = time.monotonic() + drain_s
        try:  # the latest state of alerts whose updates were held back goes out before stopping
            self.store.flush_updates(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        except AlertStoreError as exc:
            log.warning("held alert updates stay queued for the next start: %s", exc)
        self.relay.wake()
        try:
            while time.monotonic() < deadline and not self.idle():
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - a bus or store error: stop without draining
            log.warning("delivery: not drained before stopping: %s", exc)
        self._stop.set()
        self.relay.stop(timeout_s)
        for w in self.workers:
            w.stop(timeout_s)
        for w in self.workers:
            close = getattr(w.deliverer, "close", None)
            if close is not None:
                close()
        self.bus.close()
        self.log.close()
        if self._own_store:
            self.store.close()
