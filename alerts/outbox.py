"""The transactional outbox: what the alert store writes, in the same transaction as the alert,
for every route an alert event must reach.

A crash between "alert stored" and "alert published" loses nothing because there is no such
gap: the store commits the alert and its outbox rows together (the Transactional Outbox
pattern, https://microservices.io/patterns/data/transactional-outbox.html), and the relay
(:mod:`alerts.relay`) publishes committed rows to the bus afterwards, marking them published.
Publishing is idempotent by the row's ``seq``, so a relay that crashes after publishing and
before marking publishes nothing twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from alerts.open311 import Open311Error, ServiceCatalog, Ticket, _media_url, ticket_from_alert
from alerts.record import Alert
from alerts.routing import DEFAULT_RULES, Router
from alerts.webhooks import event_body

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One committed event waiting for (or done with) publication.

    Attributes:
        seq: Global sequence number (SQLite ``AUTOINCREMENT``: increasing in commit order).
        alert_id: The alert.
        camera_id: Its camera (the unit of delivery order).
        type: Event type, e.g. ``"alert.created"``.
        msg_id: Standard Webhooks ``webhook-id`` of the event, the same on every retry and replay.
        routes: Routes the event goes to.
        body: The event body, JSON text (``alerts.webhooks.event_body``).
        ticket: The Open311 service request as GeoReport v2 JSON text, for ``ticketing``; or ``None``.
        created_utc: When the row was written, ISO 8601 UTC.
    """

    seq: int
    alert_id: str
    camera_id: str
    type: str
    msg_id: str
    routes: tuple[str, ...]
    body: str
    ticket: str | None
    created_utc: str

    def fields(self) -> dict[str, str]:
        """The bus entry fields (text) of this row."""
        out = {"msg_id": self.msg_id, "type": self.type, "alert_id": self.alert_id,
               "camera_id": self.camera_id, "body": self.body, "created_utc": self.created_utc}
        if self.ticket is not None:
            out["ticket"] = self.ticket
        return out


class OutboxPolicy:
    """Decides the routes, body and ticket of alert events.

    Args:
        router: Routing rules (default: :data:`alerts.routing.DEFAULT_RULES`).
        catalog: Alert type -> Open311 service; alerts routed to ``ticketing`` whose type it
            lacks get no ticket (logged once per type).
        media_base_url: Absolute http(s) URL snapshots are served under (``snapshot_url`` and
            ``media_url``), or ``None``.
        expected_days: Days a ticket is expected to take (the centre answers within 7).
        timezone: IANA zone of the ticket datetimes.
        update_interval_s: Publish ``alert.updated`` of one alert at most this often (s; 0 =
            every update); held updates are published by ``AlertStore.flush_updates`` and any
            other event of the alert (ended, a status change) carries the latest state at once.
    """

    def __init__(self, router: Router | None = None, catalog: ServiceCatalog | None = None,
                 media_base_url: str | None = None, expected_days: float = 7.0,
                 timezone: str = "UTC", update_interval_s: float = 0.0) -> None:
        self.update_interval_s = float(update_interval_s)
        self.router = router or Router(DEFAULT_RULES)
        self.catalog = catalog or ServiceCatalog.default()
        self.media_base_url = media_base_url.rstrip("/") if media_base_url else None
        self.expected_days = float(expected_days)
        self.tz = ZoneInfo(timezone)
        self._warned: set[str] = set()

    def routes_for(self, alert: Alert) -> tuple[str, ...]:
        """The alert's routes (fixed when it is created)."""
        return self.router.routes_for(alert)

    def body(self, event_type: str, alert: Alert, now: dt.datetime) -> str:
        """The event body (JSON text) with the snapshot as a URL, and the evidence images in
        ``details.evidence`` as URLs too (``None`` without ``media_base_url``): server paths
        never leave the machine."""
        url = _media_url(self.media_base_url, alert.snapshot_path)
        evidence = alert.details.get("evidence")
        if evidence is not None:
            def public(value: object) -> object:
                return _media_url(self.media_base_url, value) if isinstance(value, str) else value

            evidence = ({k: public(v) for k, v in evidence.items()} if isinstance(evidence, Mapping)
                        else public(evidence))
            alert = replace(alert, details={**alert.details, "evidence": evidence})
        return event_body(event_type, alert, url, now).decode("utf-8")

    def ticket(self, alert: Alert, now: dt.datetime, notes: str | None = None) -> Ticket | None:
        """The service request of a utility alert, or ``None`` when its type has no service.

        Args:
            alert: The alert (its current state).
            now: Time of this update (aware).
            notes: Operator text appended to ``status_notes``.
        """
        try:
            ticket = ticket_from_alert(alert, self.catalog, media_base_url=self.media_base_url,
                                       expected_days=self.expected_days, now=now, tz=self.tz)
        except Open311Error as exc:
            if alert.type not in self._warned:
                self._warned.add(alert.type)
                logger.warning("alert type %s is routed to ticketing but has no Open311 service: %s",
                               alert.type, exc)
            return None
        if notes:
            ticket = replace(ticket, status_notes=f"{ticket.status_notes} {notes}".strip())
        return ticket

    @staticmethod
    def ticket_json(ticket: Ticket) -> str:
        """One GeoReport v2 service request object as JSON text (UTF-8 kept)."""
        return json.dumps(ticket.to_dict(), ensure_ascii=False)
