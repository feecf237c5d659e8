"""City service requests (tickets) from utility alerts, in Open311 GeoReport v2 terms.

A utility alert (overflowing bin, flooding; see ``detectors.scene.SCENE_ALERT_ROUTES``) becomes
one service request of the ticketing queue. The field names, status values, date format and JSON
shapes follow the GeoReport v2 specification, http://wiki.open311.org/GeoReport_v2/ :

- ``GET services``: the list from :meth:`ServiceCatalog.services`.
- ``GET requests`` / ``GET request``: the array from :func:`to_georeport_json`, one object per
  :class:`Ticket`, read back with :func:`from_georeport`.
- Dates are ISO 8601 with a UTC offset ("Internationalization and Encoding" section); text is
  UTF-8 (Cyrillic and Kazakh names are kept as they are, not escaped).

This module converts; the alert store writes a request per alert routed to ``ticketing`` (in
the same transaction as the alert, ``alerts.store``), publishes it on the ``ticketing`` route
and keeps it up to date with the alert's lifecycle; ``baqylau tickets list`` prints them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerts.record import Alert
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: Fields of one service request in a GeoReport v2 ``GET requests`` response, in spec order.
GEOREPORT_REQUEST_FIELDS: tuple[str, ...] = (
    "service_request_id", "status", "status_notes", "service_name", "service_code", "description",
    "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
    "expected_datetime", "address", "address_id", "zipcode", "lat", "long", "media_url",
)

#: Fields this module requires to be non-null when reading a request back: the spec gives every
#: request an id (or a token, which we never use), a status, its service code and the time it
#: was made; everything else may be empty.
GEOREPORT_REQUIRED_FIELDS: tuple[str, ...] = (
    "service_request_id", "status", "service_code", "requested_datetime",
)

#: Alert statuses (``Alert.status``) that close the ticket even while the situation lasts.
CLOSING_ALERT_STATUSES: frozenset[str] = frozenset({"resolved", "rejected"})

_DATETIME_FIELDS = ("requested_datetime", "updated_datetime", "expected_datetime")


class Open311Error(BaqylauError, ValueError):
    """An alert cannot become a service request (unknown type, bad URL) or a dict is not one."""


class Service(BaseModel):
    """One GeoReport v2 service (a request type), as listed by ``GET services``.

    Attributes:
        service_code: Unique code of the request type, e.g. ``"waste-bin-overflow"``.
        service_name: Human-readable name.
        description: What the service is for (shown in the services list).
        keywords: Search keywords; the spec joins them with commas.
        group: Category the service belongs to, e.g. ``"sanitation"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_code: str = Field(min_length=1, pattern=r"^\S+$", description="Unique code, no spaces.")
    service_name: str = Field(min_length=1, description="Human-readable name.")
    description: str = Field(default="", description="Purpose of the service.")
    keywords: tuple[str, ...] = Field(default=(), description="Search keywords.")
    group: str = Field(default="", description="Category, e.g. 'sanitation'.")


class ServiceCatalog(BaseModel):
    """Mapping of alert types (``Alert.type``) to GeoReport v2 services.

    Attributes:
        services_by_type: Alert type -> :class:`Service`; service codes must be unique.
        agency_responsible: Agency named in every request (``agency_responsible``).

    Raises:
        pydantic.ValidationError: For unknown keys, empty codes or a service code used twice.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    services_by_type: dict[str, Service] = Field(min_length=1)
    agency_responsible: str = Field(default="City monitoring centre")

    @model_validator(mode="after")
    def _unique_codes(self) -> ServiceCatalog:
        codes = [s.service_code for s in self.services_by_type.values()]
        duplicated = sorted({c for c in codes if codes.count(c) > 1})
        if duplicated:
            raise ValueError(f"service codes used by more than one alert type: {duplicated}")
        return self

    @classmethod
    def default(cls) -> ServiceCatalog:
        """Return the built-in catalogue for the scene alert types (bins, flooding, litter, dumping)."""
        return cls(services_by_type={
            "bin_overflow": Service(
                service_code="waste-bin-overflow", service_name="Overflowing waste bin",
                description="A public waste bin or container is full or overflowing.",
                keywords=("bin", "waste", "garbage", "overflow"), group="sanitation"),
            "flooding": Service(
                service_code="street-flooding", service_name="Street flooding",
                description="Standing water on a street, pavement or underpass.",
                keywords=("flood", "water", "drainage"), group="streets"),
            "littering": Service(
                service_code="littering", service_name="Littering",
                description="Litter left in a public place.",
                keywords=("litter", "waste"), group="sanitation"),
            "illegal_dumping": Service(
                service_code="illegal-dumping", service_name="Illegal dumping",
                description="Waste or bulky items dumped in a public place.",
                keywords=("dumping", "waste", "bulky"), group="sanitation"),
        })

    def service_for(self, alert_type: str) -> Service:
        """Return the service of an alert type.

        Raises:
            Open311Error: When the catalogue has no service for ``alert_type``.
        """
        try:
            return self.services_by_type[alert_type]
        except KeyError:
            raise Open311Error(f"no Open311 service for alert type {alert_type!r}; catalogue knows "
                               f"{sorted(self.services_by_type)}") from None

    def services(self) -> list[dict[str, Any]]:
        """Return the GeoReport v2 ``GET services`` response (a JSON-able list).

        Each entry has ``service_code``, ``service_name``, ``description``, ``metadata`` (always
        ``False``: no extra attributes are asked), ``type`` (``"realtime"``: the request id is
        known at once), ``keywords`` (comma-separated string) and ``group``, as in
        http://wiki.open311.org/GeoReport_v2/#get-service-list .
        """
        return [
            {"service_code": s.service_code, "service_name": s.service_name,
             "description": s.description, "metadata": False, "type": "realtime",
             "keywords": ",".join(s.keywords), "group": s.group}
            for s in self.services_by_type.values()
        ]


@dataclass(frozen=True, slots=True)
class Ticket:
    """One GeoReport v2 service request (a response object of ``GET requests``).

    Field meanings are the spec's (http://wiki.open311.org/GeoReport_v2/#get-service-requests).
    Times are timezone-aware datetimes, whole seconds; ``lat``/``long`` are WGS 84 degrees.

    Raises:
        Open311Error: For a missing required field, a status other than ``open``/``closed``,
            naive datetimes or coordinates out of range.
    """

    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str | None
    service_code: str
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: dt.datetime
    updated_datetime: dt.datetime | None
    expected_datetime: dt.datetime | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None

    def __post_init__(self) -> None:
        for key in GEOREPORT_REQUIRED_FIELDS:
            if getattr(self, key) in (None, ""):
                raise Open311Error(f"service request is missing required field {key!r}")
        if self.status not in ("open", "closed"):
            raise Open311Error(f"service request {self.service_request_id}: status must be 'open' or "
                               f"'closed', got {self.status!r}")
        for key in _DATETIME_FIELDS:
            value = getattr(self, key)
            if value is not None and (not isinstance(value, dt.datetime) or value.tzinfo is None):
                raise Open311Error(f"service request {self.service_request_id}: {key} must be an "
                                   f"aware datetime, got {value!r}")
        if (self.lat is None) != (self.long is None):
            raise Open311Error(f"service request {self.service_request_id}: lat and long must be "
                               f"given together, got {self.lat!r}, {self.long!r}")
        if self.lat is not None:
            lat, lon = float(self.lat), float(self.long)
            if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise Open311Error(f"service request {self.service_request_id}: lat/long out of "
                                   f"range: {self.lat!r}, {self.long!r}")
            object.__setattr__(self, "lat", lat)
            object.__setattr__(self, "long", lon)

    def to_dict(self) -> dict[str, Any]:
        """Return the GeoReport v2 JSON object: every spec field, times as ISO 8601 with offset."""
        data = asdict(self)
        for key in _DATETIME_FIELDS:
            if data[key] is not None:
                data[key] = data[key].isoformat(timespec="seconds")
        return {key: data[key] for key in GEOREPORT_REQUEST_FIELDS}


def service_request_id_for(alert_id: str) -> str:
    """Return the stable request id of an alert: ``"BQ-"`` + 12 hex digits.

    For UUID alert ids (:func:`alerts.record.make_alert_id`) these are the UUID's first 12 hex
    digits (48 bits: a collision is unlikely below millions of alerts); other ids are hashed
    with SHA-256 first.
    """
    try:
        digits = uuid.UUID(alert_id).hex
    except ValueError:
        digits = hashlib.sha256(alert_id.encode("utf-8")).hexdigest()
    return "BQ-" + digits[:12]


def _media_url(base_url: str | None, snapshot_path: str | None) -> str | None:
    if base_url is None or not snapshot_path:
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Open311Error(f"media_base_url must be an absolute http(s) URL, got {base_url!r}")
    return base_url.rstrip("/") + "/" + quote(PurePath(snapshot_path).name, safe="")


def _describe(alert: Alert, service: Service) -> str:
    details = alert.details
    zone = details.get("zone_name") or alert.zone_id
    parts = [f"{service.service_name} ({alert.type}) seen by camera \"{alert.camera_name}\""]
    if zone:
        parts.append(f"zone: {zone}")
    for key in ("reason", "severity", "urgency"):
        if details.get(key) not in (None, ""):
            parts.append(f"{key}: {details[key]}")
    parts.append(f"confidence: {alert.conf:.2f}")
    return "; ".join(parts) + "."


def ticket_from_alert(alert: Alert, catalog: ServiceCatalog, *, media_base_url: str | None = None,
                      expected_days: float = 7, now: dt.datetime | None = None,
                      tz: dt.tzinfo = dt.timezone.utc) -> Ticket:
    """Build the GeoReport v2 service request of a utility alert.

    The request is ``closed`` only when an operator resolved or rejected the alert
    (:data:`CLOSING_ALERT_STATUSES`): a bin that stops overflowing on camera (the situation
    ended) still needs the service to confirm it, so the request stays ``open`` and its
    ``status_notes`` say the situation ended. ``requested_datetime`` is the alert start;
    ``expected_datetime`` adds ``expected_days`` (the centre's 7-day answer time by default,
    issue 6); ``updated_datetime`` is ``now`` (the time of this change), or when ``now`` is not
    given the end of the situation or its start, so the result is deterministic. ``address`` is the camera name; ``lat``/``long`` come from
    ``alert.location`` (``None`` when the camera is not calibrated). All times are cut to whole
    seconds so that a ticket equals its JSON round trip.

    Args:
        alert: The alert; its ``type`` selects the service.
        catalog: Alert type -> service mapping.
        media_base_url: Absolute http(s) URL the snapshots are served under; ``media_url`` is
            this + ``/`` + the percent-encoded (RFC 3986) snapshot file name. ``None``: no media.
        expected_days: Days from request to expected fulfilment, > 0.
        now: Aware time of this update, or ``None``.
        tz: Time zone the datetimes are written in (offset kept in the JSON), UTC by default.

    Raises:
        Open311Error: For an alert type missing from the catalogue, a non-positive
            ``expected_days``, a naive ``now`` or a bad ``media_base_url``.
    """
    service = catalog.service_for(alert.type)
    if not (math.isfinite(expected_days) and expected_days > 0):
        raise Open311Error(f"expected_days must be > 0, got {expected_days!r}")
    if now is not None and now.tzinfo is None:
        raise Open311Error(f"now must be an aware datetime, got {now!r}")

    def local(value: dt.datetime) -> dt.datetime:
        return value.astimezone(tz).replace(microsecond=0)

    requested = local(alert.start_utc)
    if now is not None:
        updated = local(now)
    else:
        updated = requested if alert.end_utc is None else local(alert.end_utc)
    if alert.status in CLOSING_ALERT_STATUSES:
        status, notes = "closed", f"Alert {alert.status} by operator."
    elif alert.end_utc is not None:
        status = "open"
        notes = (f"Situation ended on camera at {local(alert.end_utc).isoformat()}; alert status "
                 f"{alert.status!r}, awaiting confirmation.")
    else:
        status, notes = "open", f"Situation ongoing; alert status {alert.status!r}."
    lat, lon = alert.location if alert.location is not None else (None, None)
    ticket = Ticket(
        service_request_id=service_request_id_for(alert.alert_id), status=status,
        status_notes=notes, service_name=service.service_name, service_code=service.service_code,
        description=_describe(alert, service), agency_responsible=catalog.agency_responsible,
        service_notice=f"Expected to be addressed within {expected_days:g} days.",
        requested_datetime=requested, updated_datetime=updated,
        expected_datetime=requested + dt.timedelta(days=expected_days),
        address=alert.camera_name, address_id=None, zipcode=None, lat=lat, long=lon,
        media_url=_media_url(media_base_url, alert.snapshot_path),
    )
    logger.debug("camera %s: alert %s -> service request %s (%s)", alert.camera_id, alert.alert_id,
                 ticket.service_request_id, status)
    return ticket


def to_georeport_json(tickets: Iterable[Ticket]) -> str:
    """Return the GeoReport v2 ``GET requests.json`` body: a JSON array, UTF-8 text unescaped."""
    return json.dumps([t.to_dict() for t in tickets], ensure_ascii=False)


def from_georeport(obj: Mapping[str, Any]) -> Ticket:
    """Read one GeoReport v2 service request object (e.g. from ``GET requests.json``).

    Missing optional fields read as ``None``; non-standard keys that some servers add (such as
    ``extended_attributes``) are ignored; ``lat``/``long`` may be numbers or numeric strings.

    Raises:
        Open311Error: When ``obj`` is not a mapping, a required field is missing, a time is not
            ISO 8601 with an offset, or a value is invalid.
    """
    if not isinstance(obj, Mapping):
        raise Open311Error(f"a service request must be a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - set(GEOREPORT_REQUEST_FIELDS))
    if extra:
        logger.debug("service request %s: ignoring non-standard keys %s",
                     obj.get("service_request_id"), extra)
    kw: dict[str, Any] = {key: obj.get(key) for key in GEOREPORT_REQUEST_FIELDS}
    for key in _DATETIME_FIELDS:
        if kw[key] in (None, ""):
            kw[key] = None
            continue
        try:
            kw[key] = dt.datetime.fromisoformat(str(kw[key]).replace("Z", "+00:00"))
        except ValueError:
            raise Open311Error(f"service request {kw['service_request_id']}: {key} is not ISO 8601: "
                               f"{obj[key]!r}") from None
        if kw[key].tzinfo is None:
            raise Open311Error(f"service request {kw['service_request_id']}: {key} has no UTC offset: "
                               f"{obj[key]!r}")
    for key in ("lat", "long"):
        if kw[key] in (None, ""):
            kw[key] = None
            continue
        try:
            kw[key] = float(kw[key])
        except (TypeError, ValueError):
            raise Open311Error(f"service request {kw['service_request_id']}: {key} is not a number: "
                               f"{obj[key]!r}") from None
    return Ticket(**kw)
