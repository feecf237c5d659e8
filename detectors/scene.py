"""What every scene detector (bins, littering/dumping, flooding) hands to the pipeline.

The three scene detectors share one mechanism (:mod:`detectors.scene_change`) and one output
type: a :class:`SceneEvent` per change of a *situation* (``"started"``, ``"updated"``,
``"ended"``), like :class:`detectors.zone_rules.RuleEvent` for the object rules. A situation is
one overflowing bin, one dumped object, one flooded zone; it starts once, updates only when
its measurements change materially (never once per frame) and ends when the scene is back to
its clean reference (or at end of stream, via ``flush``).

Each event states its evidence (the issue's "every alert states its evidence"): the zone, the
before/after crops (clean reference vs now), the measured covered share or object size in
pixels, and - filled in by the pipeline when the camera is calibrated - metres and the map
position.

The detectors receive the people and vehicles found by the object detector, already tracked,
so that they can mask them out of the background models and, for littering, follow the person
who left an object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from detectors.types import Detections
from ingest.errors import BaqylauError
from ingest.frame import Frame, check_array

#: Alert types the scene detectors raise, with the queue each belongs to (issue 6 routes them).
SCENE_ALERT_ROUTES: Mapping[str, str] = MappingProxyType({
    "bin_overflow": "ticketing",
    "flooding": "ticketing",
    "littering": "police",
    "illegal_dumping": "police",
})


class SceneDetectorError(BaqylauError, ValueError):
    """A scene detector was given an invalid configuration or input."""


@dataclass(frozen=True, slots=True)
class SceneEvent:
    """One change of a scene situation.

    Attributes:
        kind: ``"started"``, ``"updated"`` or ``"ended"``.
        alert_type: ``"bin_overflow"``, ``"littering"``, ``"illegal_dumping"`` or ``"flooding"``.
        detector_id: Configured id of the detector instance (unique within the camera); with
            ``situation_id`` it identifies the situation (used in alert ids).
        situation_id: Integer id of the situation within the detector, from 0, never reused.
        zone_id: The zone the situation is in.
        reason: Short machine-readable cause, e.g. ``"above_rim"``, ``"around_bin"``,
            ``"bin_missing"``, ``"object_left"``, ``"water"``.
        start_time_s: Stream time (s) of the onset: when the change first appeared in the scene
            (not when it was confirmed); alert delay = ``time_s - start_time_s`` at ``"started"``.
        time_s: Stream time (s) of the frame that produced this event.
        wall_time_s: Wall-clock time (s since the Unix epoch) of that frame.
        xyxy: `(K, 4)` float32 ``x1, y1, x2, y2`` full-frame pixels of the changed regions
            (objects, rubbish, water), origin top-left.
        area_px: `(K,)` float32 changed area of each region, full-frame pixels.
        covered_share: Fraction 0..1 of the zone covered by the change (flooding's measure; also
            filled by the other detectors).
        severity: 0..1, detector-specific (flooding: from covered share and depth markers).
        urgent: Whether the situation must jump the queue (flooding above the configured
            severity; others ``False``).
        conf: Confidence 0..1 of the situation (classifier score, or a detector heuristic).
        track_ids: Tracker ids of the people involved (littering: the person who left it).
        reference_bgr: `(h, w, 3)` uint8 BGR crop of the clean reference ("before") around
            the union of ``xyxy``, or ``None`` on ``"ended"``.
        current_bgr: `(h, w, 3)` uint8 BGR crop of the current frame ("after"), same window.
        person_bgr: `(h, w, 3)` uint8 BGR best crop of the person in ``track_ids[0]``, or
            ``None``.
        person_time_s: Stream time (s) of ``person_bgr``, or ``None``.
        frame: The frame of the event (for the snapshot), or ``None``.
        details: JSON-able extras, e.g. ``{"markers_submerged": ["kerb-east"]}``; read-only.

    Raises:
        SceneDetectorError: For an unknown kind or alert type, or inconsistent array shapes.
    """

    kind: Literal["started", "updated", "ended"]
    alert_type: str
    detector_id: str
    situation_id: int
    zone_id: str
    reason: str
    start_time_s: float
    time_s: float
    wall_time_s: float
    xyxy: np.ndarray
    area_px: np.ndarray
    covered_share: float = 0.0
    severity: float = 0.0
    urgent: bool = False
    conf: float = 1.0
    track_ids: tuple[int, ...] = ()
    reference_bgr: np.ndarray | None = field(default=None, repr=False)
    current_bgr: np.ndarray | None = field(default=None, repr=False)
    person_bgr: np.ndarray | None = field(default=None, repr=False)
    person_time_s: float | None = None
    frame: Frame | None = field(default=None, repr=False)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("started", "updated", "ended"):
            raise SceneDetectorError(f"SceneEvent.kind must be started/updated/ended, got {self.kind!r}")
        if self.alert_type not in SCENE_ALERT_ROUTES:
            raise SceneDetectorError(f"unknown scene alert type {self.alert_type!r}")
        check_array("SceneEvent.xyxy", self.xyxy, 2, np.float32, (None, 4))
        check_array("SceneEvent.area_px", self.area_px, 1, np.float32, (len(self.xyxy),))
        for name in ("covered_share", "severity", "conf"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SceneDetectorError(f"SceneEvent.{name} must be in [0, 1], got {value}")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def route(self) -> str:
        """The queue this alert type belongs to: ``"police"`` or ``"ticketing"``."""
        return SCENE_ALERT_ROUTES[self.alert_type]


@runtime_checkable
class SceneDetector(Protocol):
    """What the pipeline needs from a scene detector (one instance per camera and zone).

    Attributes:
        detector_id: Configured id, unique within the camera.
        zone_id: The zone it watches.
        learning: Whether the clean reference is still being learned.
    """

    detector_id: str
    zone_id: str

    @property
    def learning(self) -> bool:
        """Whether the clean reference is still being learned (nothing is reported until then)."""
        ...

    def update(self, frame: Frame, people: Detections, vehicles: Detections) -> list[SceneEvent]:
        """Feed one analysed frame.

        Args:
            frame: The frame; ``time_s`` (stream time) drives every timer.
            people: Tracked person detections of this frame (``track_id`` set), full-frame px.
            vehicles: Other moving things to mask out (vehicles, bicycles; with the motion
                fallback, every blob), full-frame px.

        Returns:
            The events this frame produced (often none).
        """
        ...

    def flush(self, frame: Frame | None) -> list[SceneEvent]:
        """End every open situation (end of stream or shutdown) and return the ``"ended"`` events."""
        ...

    def save_state(self, directory: Path) -> None:
        """Persist the learned clean reference under ``directory`` (atomic; survives restarts)."""
        ...

    def load_state(self, directory: Path) -> bool:
        """Restore a reference saved by :meth:`save_state`; ``False`` when none fits."""
        ...
