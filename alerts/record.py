"""The alert record: what the pipeline stores, sends to sinks and shows on the console."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ingest.errors import BaqylauError

#: Namespace of alert UUID5s (itself ``uuid5(NAMESPACE_URL, "urn:baqylau:alert")``); changing it
#: changes every alert id, so it is fixed here.
ALERT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:baqylau:alert")


class AlertRecordError(BaqylauError, ValueError):
    """An alert has an invalid field, or a dict cannot be read back as an alert."""


def make_alert_id(camera_id: str, source_key: str, rule_id: str, start_time_s: float) -> str:
    """Return a deterministic alert id (RFC 4122 UUID5, as a string).

    The same camera, source, rule and start time (rounded to milliseconds) give the same id,
    so re-running a file appends nothing new to the store.

    Args:
        camera_id: Camera id.
        source_key: Identity of the source run: for files, path + size + mtime; for live
            streams include the connect time so ids of different sessions never collide.
        rule_id: Rule that raised the alert.
        start_time_s: Stream time (s) at which the situation started.

    Raises:
        AlertRecordError: When ``start_time_s`` is not finite.
    """
    if not math.isfinite(start_time_s):
        raise AlertRecordError(f"start_time_s must be finite, got {start_time_s!r}")
    start_ms = round(start_time_s * 1000)
    name = json.dumps([camera_id, source_key, rule_id, start_ms], ensure_ascii=False)
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


def utc_from_timestamp(wall_time_s: float) -> dt.datetime:
    """Convert seconds since the Unix epoch (e.g. ``Frame.wall_time_s``) to an aware UTC datetime."""
    return dt.datetime.fromtimestamp(wall_time_s, dt.timezone.utc)


def format_utc(value: dt.datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with microseconds and ``Z``.

    The fixed width makes the strings sort like the times (used by the store's index).

    Raises:
        AlertRecordError: For a naive datetime.
    """
    if value.tzinfo is None:
        raise AlertRecordError(f"datetime {value!r} is naive; alerts need timezone-aware UTC times")
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> dt.datetime:
    """Parse an ISO 8601 time (``Z`` or an offset) into an aware UTC datetime.

    Raises:
        AlertRecordError: When the text is not ISO 8601 or has no offset.
    """
    try:
        value = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise AlertRecordError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise AlertRecordError(f"ISO 8601 time {text!r} has no UTC offset")
    return value.astimezone(dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: a situation raised by a rule on one camera.

    Attributes:
        alert_id: Unique id, normally :func:`make_alert_id`.
        type: Alert type, e.g. ``"loitering"`` (``ZoneRule.alert_type``).
        camera_id: Camera id.
        camera_name: Human-readable camera name (any Unicode).
        zone_id: Zone of the rule, or ``None`` for camera-wide alerts.
        rule_id: Rule that raised it, or ``None``.
        track_ids: Tracker ids of the objects involved.
        start_time_s: Stream time (s) of the start.
        end_time_s: Stream time (s) of the end, ``None`` while ongoing.
        start_utc: Wall-clock start, timezone-aware (normalised to UTC).
        end_utc: Wall-clock end, aware UTC, or ``None`` while ongoing.
        conf: Highest detection confidence in [0, 1].
        snapshot_path: Path of the annotated JPEG, or ``None``.
        location: Camera or object position ``(lat, lon)`` in WGS 84 degrees, or ``None``.
        xyxy: Pixel boxes ``(x1, y1, x2, y2)`` (origin top-left) of the objects at snapshot time.
        status: Workflow status, ``"new"`` until an operator acts.
        details: Free JSON-able mapping (e.g. ``max_dwell_s``, class names); stored read-only.

    Raises:
        AlertRecordError: For an empty id, naive datetimes, a conf outside [0, 1], a location
            out of range, or boxes that are not 4 numbers.
    """

    alert_id: str
    type: str
    camera_id: str
    camera_name: str
    zone_id: str | None
    rule_id: str | None
    track_ids: tuple[int, ...]
    start_time_s: float
    end_time_s: float | None
    start_utc: dt.datetime
    end_utc: dt.datetime | None
    conf: float
    snapshot_path: str | None = None
    location: tuple[float, float] | None = None
    xyxy: tuple[tuple[float, float, float, float], ...] = ()
    status: str = "new"
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.alert_id, str) or not self.alert_id:
            raise AlertRecordError(f"alert_id must be a non-empty string, got {self.alert_id!r}")
        for key in ("start_utc", "end_utc"):
            value = getattr(self, key)
            if value is None and key == "end_utc":
                continue
            if not isinstance(value, dt.datetime) or value.tzinfo is None:
                raise AlertRecordError(f"alert {self.alert_id}: {key} must be an aware datetime, "
                                       f"got {value!r}")
            object.__setattr__(self, key, value.astimezone(dt.timezone.utc))
        if not 0.0 <= float(self.conf) <= 1.0:
            raise AlertRecordError(f"alert {self.alert_id}: conf must be in [0, 1], got {self.conf!r}")
        object.__setattr__(self, "conf", float(self.conf))
        object.__setattr__(self, "track_ids", tuple(int(t) for t in self.track_ids))
        boxes = tuple(tuple(float(v) for v in box) for box in self.xyxy)
        if any(len(b) != 4 for b in boxes):
            raise AlertRecordError(f"alert {self.alert_id}: each xyxy box needs 4 numbers, got {self.xyxy!r}")
        object.__setattr__(self, "xyxy", boxes)
        if self.location is not None:
            lat, lon = (float(v) for v in self.location)
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise AlertRecordError(f"alert {self.alert_id}: location (lat, lon) out of range: "
                                       f"{self.location!r}")
            object.__setattr__(self, "location", (lat, lon))
        try:
            json.dumps(dict(self.details))
        except (TypeError, ValueError) as exc:
            raise AlertRecordError(f"alert {self.alert_id}: details must be JSON-able: {exc}") from None
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict; times as ISO 8601 UTC with ``Z``, tuples as lists."""
        return {
            "alert_id": self.alert_id, "type": self.type, "camera_id": self.camera_id,
            "camera_name": self.camera_name, "zone_id": self.zone_id, "rule_id": self.rule_id,
            "track_ids": list(self.track_ids), "start_time_s": self.start_time_s,
            "end_time_s": self.end_time_s, "start_utc": format_utc(self.start_utc),
            "end_utc": None if self.end_utc is None else format_utc(self.end_utc),
            "conf": self.conf, "snapshot_path": self.snapshot_path,
            "location": None if self.location is None else list(self.location),
            "xyxy": [list(b) for b in self.xyxy], "status": self.status,
            "details": json.loads(json.dumps(dict(self.details))),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Build an alert from :meth:`to_dict` output (e.g. parsed JSON).

        Raises:
            AlertRecordError: For missing or unknown keys or invalid values.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise AlertRecordError(f"unknown alert keys {sorted(unknown)}")
        try:
            kw = dict(data)
            kw["start_utc"] = parse_utc(kw["start_utc"])
            kw["end_utc"] = None if kw.get("end_utc") is None else parse_utc(kw["end_utc"])
            if kw.get("location") is not None:
                kw["location"] = tuple(kw["location"])
            kw["track_ids"] = tuple(kw.get("track_ids", ()))
            return cls(**kw)
        except KeyError as exc:
            raise AlertRecordError(f"alert dict is missing key {exc}") from None
        except TypeError as exc:
            raise AlertRecordError(f"cannot build an alert from dict: {exc}") from None
