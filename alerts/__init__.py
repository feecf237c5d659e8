"""Alerts: the alert record, its SQLite store (lifecycle, outbox, tickets), event sinks, annotated
snapshots, and delivery: routing (``alerts.routing``), cooldown, Open311 tickets, Standard
Webhooks, the relay, the Redis Streams and embedded buses (``alerts.bus``), route workers
(``alerts.delivery``) and the MQTT sink (``alerts.mqtt``)."""

from alerts.record import (Alert, AlertRecordError, format_utc, make_alert_id, parse_utc,
                           utc_from_timestamp)
from alerts.sinks import EVENTS, JsonlSink, Sink, SinkError
from alerts.snapshot import SnapshotError, render_snapshot, to_ascii, write_snapshot
from alerts.store import AlertStore, AlertStoreError

__all__ = [
    "EVENTS", "Alert", "AlertRecordError", "AlertStore", "AlertStoreError", "JsonlSink", "Sink",
    "SinkError", "SnapshotError", "format_utc", "make_alert_id", "parse_utc", "render_snapshot",
    "to_ascii", "utc_from_timestamp", "write_snapshot",
]
