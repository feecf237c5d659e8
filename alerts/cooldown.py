"""Alert cooldown: a situation that comes back soon on the same camera, zone and type updates the
alert it came from instead of raising a new one.

One person walking in and out of a zone, or a bin that flickers between full and not, would
otherwise raise an alert per pass. Within ``cooldown_s`` (wall-clock seconds) after the last
alert of the same ``(camera_id, zone_id, type)`` was raised or last active, the pipeline merges
the new situation into it (``details["occurrences"]`` counts them). This is the per-object
"cooldown"/"debounce" of video-management systems (e.g. DeepStream analytics' per-ROI
``time-threshold``, Frigate's per-object event merging).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ingest.errors import BaqylauError


class CooldownError(BaqylauError, ValueError):
    """A cooldown is negative or not finite."""


class Cooldown:
    """Remembers the last alert per ``(camera_id, zone_id, type)``.

    Args:
        default_s: Cooldown of every type not in ``by_type`` (s, >= 0; 0 = off).
        by_type: Cooldown per alert type (s, >= 0).

    Raises:
        CooldownError: For a negative or non-finite value.
    """

    def __init__(self, default_s: float = 0.0, by_type: Mapping[str, float] | None = None) -> None:
        self.by_type = dict(by_type or {})
        for name, v in (("default_s", default_s), *self.by_type.items()):
            if not (math.isfinite(v) and v >= 0):
                raise CooldownError(f"cooldown {name} must be a finite number >= 0 s, got {v!r}")
        self.default_s = float(default_s)
        self._last: dict[tuple[str, str | None, str], tuple[str, float]] = {}

    def seconds(self, alert_type: str) -> float:
        """The cooldown of an alert type (s)."""
        return float(self.by_type.get(alert_type, self.default_s))

    def lookup(self, camera_id: str, zone_id: str | None, alert_type: str, now_s: float) -> str | None:
        """The alert a new situation should merge into, or ``None`` to raise a new alert.

        Args:
            camera_id: Camera.
            zone_id: Zone (``None`` for camera-wide alerts).
            alert_type: Alert type.
            now_s: Wall-clock time of the new situation (Unix s).
        """
        cd = self.seconds(alert_type)
        hit = self._last.get((camera_id, zone_id, alert_type))
        if cd <= 0 or hit is None:
            return None
        alert_id, last_s = hit
        return alert_id if now_s - last_s <= cd else None

    def note(self, camera_id: str, zone_id: str | None, alert_type: str, alert_id: str, now_s: float) -> None:
        """Record that ``alert_id`` was raised or still active at ``now_s`` (Unix s); also drops
        entries older than their cooldown so the map stays bounded."""
        self._last[(camera_id, zone_id, alert_type)] = (alert_id, float(now_s))
        if len(self._last) > 4096:
            self._last = {k: v for k, v in self._last.items() if now_s - v[1] <= self.seconds(k[2])}
