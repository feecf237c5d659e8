"""Which routes an alert goes to: ordered rules from the configuration.

A route is ``police`` (offences: littering, illegal dumping, a wanted or missing person),
``ticketing`` (utility problems that become Open311 service requests: bins, flooding),
``webhook:<name>`` or ``mqtt:<name>`` (integrators). Each rule matches on alert type, camera,
zone, severity and time of day; an alert goes to the union of the routes of every matching
rule, in rule order, unless a matching rule says ``stop``.

Severity is a label (``low`` < ``medium`` < ``high`` < ``critical``): ``details["severity_label"]``
when a detector set one, ``high`` for scene alerts marked ``urgent``, else the configured
label of the alert type, else ``medium``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alerts.record import Alert

logger = logging.getLogger(__name__)

#: Route names: ``police``, ``ticketing``, ``webhook:<name>``, ``mqtt:<name>`` (name: any text
#: without control characters; Cyrillic and spaces allowed).
ROUTE_RE = re.compile(r"^(police|ticketing|(webhook|mqtt):[^\x00-\x1f\x7f]+)$")

Severity = Literal["low", "medium", "high", "critical"]

#: Severity labels in increasing order.
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class TimeOfDay(BaseModel):
    """A daily window ``start``-``end`` (``"HH:MM"``, local time of the configuration's timezone);
    ``start > end`` wraps midnight (``22:00``-``06:00`` is the night)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(description="Start, HH:MM local time (inclusive).")
    end: str = Field(description="End, HH:MM local time (exclusive).")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"expected HH:MM (00:00-23:59), got {v!r}")
        return v

    def contains(self, local: dt.datetime) -> bool:
        """Whether a local time falls in the window (minutes resolution)."""
        m = local.hour * 60 + local.minute
        s = int(self.start[:2]) * 60 + int(self.start[3:])
        e = int(self.end[:2]) * 60 + int(self.end[3:])
        return s <= m < e if s <= e else (m >= s or m < e)


class RouteRule(BaseModel):
    """One routing rule; every condition left out matches anything.

    Attributes:
        types: Alert types (shell patterns such as ``"bin_*"`` allowed).
        cameras: Camera ids.
        zones: Zone ids.
        severities: Severity labels.
        time_of_day: Local daily window of the alert's start.
        routes: Where matching alerts go.
        stop: Skip the rules after this one when it matches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: list[str] | None = Field(None, description="Alert types (shell patterns allowed); null = any.")
    cameras: list[str] | None = Field(None, description="Camera ids; null = any.")
    zones: list[str] | None = Field(None, description="Zone ids; null = any.")
    severities: list[Severity] | None = Field(None, description="Severity labels; null = any.")
    time_of_day: TimeOfDay | None = Field(None, description="Local daily window of the alert start; null = always.")
    routes: list[str] = Field(min_length=1, description="police, ticketing, webhook:<name>, mqtt:<name>.")
    stop: bool = Field(False, description="Do not evaluate later rules when this one matches.")

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if not ROUTE_RE.match(r)]
        if bad:
            raise ValueError(f"unknown route(s) {bad}; use police, ticketing, webhook:<name> or mqtt:<name>")
        return v


#: The routes of the scene and watchlist alerts when the configuration names none
#: (``detectors.scene.SCENE_ALERT_ROUTES`` and ``person_match``).
DEFAULT_RULES: tuple[RouteRule, ...] = (
    RouteRule(types=["littering", "illegal_dumping", "person_match"], routes=["police"]),
    RouteRule(types=["bin_overflow", "flooding"], routes=["ticketing"]),
)


class Router:
    """Evaluates routing rules.

    Args:
        rules: Rules in evaluation order.
        timezone: IANA zone of ``time_of_day`` windows.
        severity_by_type: Default severity label per alert type.
    """

    def __init__(self, rules: Sequence[RouteRule] = DEFAULT_RULES, timezone: str = "UTC",
                 severity_by_type: Mapping[str, str] | None = None) -> None:
        self.rules = tuple(rules)
        self.tz = ZoneInfo(timezone)
        self.severity_by_type = dict(severity_by_type or {})

    def severity(self, alert: Alert) -> str:
        """The alert's severity label (see the module docstring)."""
        label = alert.details.get("severity_label")
        if label in SEVERITIES:
            return str(label)
        if alert.details.get("urgent") is True:
            return "high"
        return self.severity_by_type.get(alert.type, "medium")

    def routes_for(self, alert: Alert) -> tuple[str, ...]:
        """The routes of an alert: union of the matching rules' routes, first-seen order."""
        severity = self.severity(alert)
        local = alert.start_utc.astimezone(self.tz)
        out: list[str] = []
        for rule in self.rules:
            if rule.types is not None and not any(fnmatch.fnmatchcase(alert.type, p) for p in rule.types):
                continue
            if rule.cameras is not None and alert.camera_id not in rule.cameras:
                continue
            if rule.zones is not None and alert.zone_id not in rule.zones:
                continue
            if rule.severities is not None and severity not in rule.severities:
                continue
            if rule.time_of_day is not None and not rule.time_of_day.contains(local):
                continue
            out.extend(r for r in rule.routes if r not in out)
            if rule.stop:
                break
        return tuple(out)

    def referenced(self) -> set[str]:
        """Every route some rule names."""
        return {r for rule in self.rules for r in rule.routes}


def routes_of(rules: Iterable[RouteRule]) -> set[str]:
    """Every route the rules name."""
    return {r for rule in rules for r in rule.routes}
