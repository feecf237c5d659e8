"""Generic zone rules: "N tracked objects of these classes stayed in this zone for T seconds".

The scene detectors (loitering, person in a restricted zone, stopped vehicle, and later bins,
flooding and littering) are all instances of one state machine, run per camera on tracked
detections:

* **Dwell time** per track: stream seconds since the track's anchor point (bottom-centre by
  default) entered the zone. This is supervision's ``TimeInZone`` idea and Frigate's zone
  ``loitering_time``.
* **Hysteresis**: a track that leaves the zone or is missed by the detector for less than
  ``clear_after_s`` keeps its dwell time, and a situation ends only after its condition has
  been false for ``clear_after_s`` (Frigate's zone ``inertia`` and event ``post_capture`` play
  the same role). Without it a single missed detection would split one loitering person into
  many alerts.
* One **situation** per rule emits one ``"started"`` event, an ``"updated"`` event only when a
  new track qualifies (never one per frame), and one ``"ended"`` event.

All times are stream time (``Frame.time_s``), so a file processed faster than real time gives
the same alerts as the live camera; only the optional daily ``time_window`` uses the frame's
wall-clock time, converted to the rule's IANA time zone.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from calibration.zones import Zone
from detectors.types import Detections
from ingest.errors import BaqylauError
from ingest.frame import Frame, check_array

logger = logging.getLogger(__name__)

ANCHORS = ("bottom_center", "center")
#: Tolerance (s) on every duration comparison, so that float noise in ``pts * time_base``
#: (e.g. 2.9999999 s for 3 s) does not move a threshold by a whole frame.
EPS_S = 1e-6


class ZoneRuleError(BaqylauError, ValueError):
    """A zone rule or its engine was given invalid parameters or input."""


@dataclass(frozen=True, slots=True)
class ZoneRule:
    """One rule on one zone of one camera.

    Attributes:
        rule_id: Id unique within the camera, used in alert ids.
        alert_type: Kind of alert raised, e.g. ``"loitering"``, ``"person_in_zone"``,
            ``"vehicle_stopped"``.
        zone: The polygon; ``"norm"`` zones follow the frame's resolution.
        class_ids: Detector class ids that count (converted to a ``frozenset[int]``), or
            ``None`` for any class (used with the weights-free motion detector).
        min_duration_s: Stream seconds an object must stay inside before it qualifies. Longer
            values suppress people merely walking through; shorter ones react sooner. 0 makes
            any entry qualify at once (an intrusion rule).
        min_objects: Qualifying tracks needed at the same time (1 for loitering, more for a
            crowd).
        clear_after_s: Hysteresis in stream seconds, > 0. A track missing from the zone for
            less than this keeps its dwell time, and a situation ends only after its condition
            has been false this long. Larger values bridge longer occlusions and detector misses
            but end alerts later and may merge two separate visits into one.
        time_window: Daily ``(start, end)`` local times, naive ``datetime.time``, start
            inclusive, end exclusive; may wrap midnight (``22:00``-``06:00``). ``None`` means
            always.
        timezone: IANA zone name (``zoneinfo``) in which ``time_window`` is read, e.g.
            ``"Asia/Almaty"``.
        anchor: Point of the box tested against the zone: ``"bottom_center"`` (feet, wheels)
            or ``"center"``.

    Raises:
        ZoneRuleError: For an empty id or type, a non-``Zone`` zone, negative or non-finite
            durations, ``clear_after_s <= 0``, ``min_objects < 1``, a malformed or empty time
            window, an unknown time zone or an unknown anchor.
    """

    rule_id: str
    alert_type: str
    zone: Zone
    class_ids: frozenset[int] | None
    min_duration_s: float
    min_objects: int = 1
    clear_after_s: float = 2.0
    time_window: tuple[dt.time, dt.time] | None = None
    timezone: str = "UTC"
    anchor: str = "bottom_center"

    def __post_init__(self) -> None:
        name = f"rule {self.rule_id!r}"
        if not isinstance(self.rule_id, str) or not self.rule_id:
            raise ZoneRuleError(f"rule_id must be a non-empty string, got {self.rule_id!r}")
        if not isinstance(self.alert_type, str) or not self.alert_type:
            raise ZoneRuleError(f"{name}: alert_type must be a non-empty string, got {self.alert_type!r}")
        if not isinstance(self.zone, Zone):
            raise ZoneRuleError(f"{name}: zone must be a calibration.zones.Zone, "
                                f"got {type(self.zone).__name__}")
        if self.class_ids is not None:
            try:
                ids = frozenset(int(c) for c in self.class_ids)
            except (TypeError, ValueError):
                raise ZoneRuleError(f"{name}: class_ids must be integers or None, "
                                    f"got {self.class_ids!r}") from None
            if not ids:
                raise ZoneRuleError(f"{name}: class_ids is empty; use None for any class")
            object.__setattr__(self, "class_ids", ids)
        for key in ("min_duration_s", "clear_after_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ZoneRuleError(f"{name}: {key} must be a finite number >= 0 s, got {value!r}")
        if self.clear_after_s <= 0:
            raise ZoneRuleError(f"{name}: clear_after_s must be > 0 s (a gap between two frames "
                                f"would otherwise reset every dwell), got {self.clear_after_s!r}")
        n_min = self.min_objects
        if isinstance(n_min, bool) or not isinstance(n_min, int) or n_min < 1:
            raise ZoneRuleError(f"{name}: min_objects must be an integer >= 1, got {self.min_objects!r}")
        if self.time_window is not None:
            win = tuple(self.time_window)
            if len(win) != 2 or not all(isinstance(t, dt.time) and t.tzinfo is None for t in win):
                raise ZoneRuleError(f"{name}: time_window must be two naive datetime.time values "
                                    f"(local to `timezone`), got {self.time_window!r}")
            if win[0] == win[1]:
                raise ZoneRuleError(f"{name}: time_window {win[0]}-{win[1]} is empty; use None for always")
            object.__setattr__(self, "time_window", win)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ZoneRuleError(f"{name}: unknown IANA time zone {self.timezone!r}") from None
        if self.anchor not in ANCHORS:
            raise ZoneRuleError(f"{name}: anchor must be one of {ANCHORS}, got {self.anchor!r}")

    def in_time_window(self, wall_time_s: float) -> bool:
        """Return whether a UTC wall-clock time falls inside ``time_window``.

        Args:
            wall_time_s: Seconds since the Unix epoch (UTC), e.g. ``Frame.wall_time_s``.

        Returns:
            ``True`` when there is no window, or when the local time in ``timezone`` is in
            ``[start, end)`` (for a window wrapping midnight: ``>= start`` or ``< end``).
        """
        if self.time_window is None:
            return True
        local = dt.datetime.fromtimestamp(wall_time_s, ZoneInfo(self.timezone)).time()
        start, end = self.time_window
        if start < end:
            return start <= local < end
        return local >= start or local < end


@dataclass(frozen=True, slots=True)
class RuleEvent:
    """A change in a rule's situation, handed from the rule engine to the alert stage.

    Attributes:
        kind: ``"started"``, ``"updated"`` (a new track qualified) or ``"ended"``.
        rule_id: Id of the rule.
        alert_type: ``ZoneRule.alert_type``.
        camera_id: Camera of the engine.
        zone_id: ``ZoneRule.zone.zone_id``.
        track_ids: Sorted ids of every track that qualified during the situation so far.
        start_time_s: Stream time (s) of the frame on which the situation started.
        start_wall_time_s: UTC wall time (s since epoch) of that frame.
        end_time_s: For ``"ended"``: stream time (s) of the last frame on which the condition
            held; else ``None``.
        end_wall_time_s: UTC wall time (s since epoch) of that frame, or ``None``.
        conf: Highest detection confidence of a qualifying object so far in the situation.
        xyxy: `(M, 4)` float32 pixel boxes (origin top-left) of the objects qualifying in the
            current frame (may be empty for ``"ended"``).
        class_id: `(M,)` int32 class ids of those boxes.
        max_dwell_s: Longest dwell (stream s) of a qualifying track so far in the situation.
        frame: The frame of the event (a reference, not a copy) for snapshots, or ``None``
            when flushed without a frame.
        box_track_id: `(M,)` int64 track id of each box in ``xyxy`` (for labels such as
            ``"person #12 0.87"``; ``track_ids`` is the situation's sorted set, not per box).
        box_conf: `(M,)` float32 detection confidence of each box in ``xyxy``.

    Raises:
        ShapeError: When ``xyxy`` or ``class_id`` have the wrong shape or dtype.
    """

    kind: Literal["started", "updated", "ended"]
    rule_id: str
    alert_type: str
    camera_id: str
    zone_id: str
    track_ids: tuple[int, ...]
    start_time_s: float
    start_wall_time_s: float
    end_time_s: float | None
    end_wall_time_s: float | None
    conf: float
    xyxy: np.ndarray
    class_id: np.ndarray
    max_dwell_s: float
    frame: Frame | None = field(default=None, repr=False, compare=False)
    box_track_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    box_conf: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        m = len(self.xyxy) if isinstance(self.xyxy, np.ndarray) else 0
        if self.box_track_id is None:
            object.__setattr__(self, "box_track_id", np.full(m, -1, np.int64))
        if self.box_conf is None:
            object.__setattr__(self, "box_conf", np.zeros(m, np.float32))
        check_array("RuleEvent.xyxy", self.xyxy, 2, np.float32, (None, 4))
        m = self.xyxy.shape[0]
        check_array("RuleEvent.class_id", self.class_id, 1, np.int32, (m,))
        check_array("RuleEvent.box_track_id", self.box_track_id, 1, np.int64, (m,))
        check_array("RuleEvent.box_conf", self.box_conf, 1, np.float32, (m,))


@dataclass(slots=True)
class _Track:
    enter_time_s: float
    last_inside_time_s: float


@dataclass(slots=True)
class _Situation:
    start_time_s: float
    start_wall_time_s: float
    last_true_time_s: float
    last_true_wall_time_s: float
    track_ids: set[int]
    conf: float
    max_dwell_s: float


@dataclass(slots=True)
class _RuleState:
    tracks: dict[int, _Track] = field(default_factory=dict)
    situation: _Situation | None = None


class ZoneRuleEngine:
    """Runs every zone rule of one camera over its tracked detections, frame by frame.

    Per rule and track, dwell is the stream time since the track's anchor entered the zone,
    tolerating absences shorter than ``clear_after_s``. A situation starts when at least
    ``min_objects`` tracks of the rule's classes are inside with dwell >= ``min_duration_s``
    on a frame whose wall time is in the rule's ``time_window``; it ends when that has been
    false for ``clear_after_s`` of stream time (with ``min_objects=1``: no qualifying object
    for that long), or at once when the time window closes.

    Args:
        camera_id: Camera whose frames are fed to :meth:`update`.
        rules: The camera's rules; ``rule_id`` must be unique.

    Raises:
        ZoneRuleError: For a non-``ZoneRule`` item or duplicate rule ids.
    """

    def __init__(self, camera_id: str, rules: Sequence[ZoneRule]) -> None:
        rules = tuple(rules)
        for rule in rules:
            if not isinstance(rule, ZoneRule):
                raise ZoneRuleError(f"camera {camera_id!r}: expected ZoneRule, got {type(rule).__name__}")
        ids = [r.rule_id for r in rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ZoneRuleError(f"camera {camera_id!r}: duplicate rule ids {dupes}")
        self.camera_id = camera_id
        self.rules = rules
        self._state = {r.rule_id: _RuleState() for r in rules}

    def active_rule_ids(self) -> list[str]:
        """Return the ids of rules whose situation is currently active."""
        return [rid for rid, st in self._state.items() if st.situation is not None]

    def update(self, frame: Frame, detections: Detections) -> list[RuleEvent]:
        """Advance every rule by one frame.

        Args:
            frame: The frame the detections belong to (``time_s`` stream time drives dwell,
                ``wall_time_s`` the time window, ``resolution_wh`` the ``"norm"`` zones).
            detections: Tracked detections of the frame; rows with ``track_id < 0`` are
                ignored.

        Returns:
            Events in rule order, at most an "updated" and an "ended" per rule and frame.

        Raises:
            ZoneRuleError: When ``frame.camera_id`` is not this engine's camera.
        """
        if frame.camera_id != self.camera_id:
            raise ZoneRuleError(f"engine for camera {self.camera_id!r} got a frame of camera "
                                f"{frame.camera_id!r}")
        tracked = detections[detections.track_id >= 0]
        events: list[RuleEvent] = []
        for rule in self.rules:
            events.extend(self._update_rule(rule, self._state[rule.rule_id], frame, tracked))
        return events

    def flush(self, frame: Frame | None = None) -> list[RuleEvent]:
        """End every active situation and forget all track state (end of stream).

        Args:
            frame: Last frame of the stream, attached to the events, or ``None``.

        Returns:
            One ``"ended"`` event per active situation.
        """
        events = []
        for rule in self.rules:
            st = self._state[rule.rule_id]
            if st.situation is not None:
                events.append(self._event("ended", rule, st.situation, frame, Detections.empty()))
            self._state[rule.rule_id] = _RuleState()
        return events

    def _update_rule(self, rule: ZoneRule, st: _RuleState, frame: Frame,
                     tracked: Detections) -> list[RuleEvent]:
        t, wall = frame.time_s, frame.wall_time_s
        dets = tracked
        if rule.class_ids is not None and len(dets):
            dets = dets[np.isin(dets.class_id, np.fromiter(rule.class_ids, np.int32))]
        if len(dets):
            dets = dets[rule.zone.contains(dets.anchors(rule.anchor), frame.resolution_wh)]
        dwell_s = np.zeros(len(dets), np.float64)
        for i, tid in enumerate(dets.track_id.tolist()):
            tr = st.tracks.get(tid)
            if tr is None or t - tr.last_inside_time_s >= rule.clear_after_s - EPS_S:
                tr = st.tracks[tid] = _Track(t, t)
            tr.last_inside_time_s = t
            dwell_s[i] = t - tr.enter_time_s
        st.tracks = {k: v for k, v in st.tracks.items()
                     if t - v.last_inside_time_s < rule.clear_after_s - EPS_S}

        qualifying = dwell_s >= rule.min_duration_s - EPS_S
        q_dets, q_dwell = dets[qualifying], dwell_s[qualifying]
        q_ids = set(q_dets.track_id.tolist())
        in_window = rule.in_time_window(wall)
        holds = in_window and len(q_ids) >= rule.min_objects
        sit = st.situation
        events: list[RuleEvent] = []

        if sit is None:
            if holds:
                sit = st.situation = _Situation(t, wall, t, wall, q_ids, float(q_dets.conf.max()),
                                                float(q_dwell.max()))
                logger.info("camera %s t=%.3fs: rule %s (%s) started, tracks %s", self.camera_id, t,
                            rule.rule_id, rule.alert_type, sorted(q_ids))
                events.append(self._event("started", rule, sit, frame, q_dets))
            return events

        if not in_window:
            logger.info("camera %s t=%.3fs: rule %s ended, time window closed", self.camera_id, t,
                        rule.rule_id)
            events.append(self._event("ended", rule, sit, frame, q_dets))
            st.situation = None
            return events

        if len(q_ids):
            sit.conf = max(sit.conf, float(q_dets.conf.max()))
            sit.max_dwell_s = max(sit.max_dwell_s, float(q_dwell.max()))
        if holds:
            sit.last_true_time_s, sit.last_true_wall_time_s = t, wall
        new_ids = q_ids - sit.track_ids
        if new_ids:
            sit.track_ids |= new_ids
            logger.info("camera %s t=%.3fs: rule %s updated, new tracks %s", self.camera_id, t,
                        rule.rule_id, sorted(new_ids))
            events.append(self._event("updated", rule, sit, frame, q_dets))
        if not holds and t - sit.last_true_time_s >= rule.clear_after_s - EPS_S:
            logger.info("camera %s t=%.3fs: rule %s ended", self.camera_id, t, rule.rule_id)
            events.append(self._event("ended", rule, sit, frame, q_dets))
            st.situation = None
        return events

    def _event(self, kind: Literal["started", "updated", "ended"], rule: ZoneRule, sit: _Situation,
               frame: Frame | None, q_dets: Detections) -> RuleEvent:
        ended = kind == "ended"
        return RuleEvent(
            kind=kind, rule_id=rule.rule_id, alert_type=rule.alert_type, camera_id=self.camera_id,
            zone_id=rule.zone.zone_id, track_ids=tuple(sorted(sit.track_ids)),
            start_time_s=sit.start_time_s, start_wall_time_s=sit.start_wall_time_s,
            end_time_s=sit.last_true_time_s if ended else None,
            end_wall_time_s=sit.last_true_wall_time_s if ended else None,
            conf=sit.conf, xyxy=q_dets.xyxy.copy(), class_id=q_dets.class_id.copy(),
            max_dwell_s=sit.max_dwell_s, frame=frame, box_track_id=q_dets.track_id.copy(),
            box_conf=q_dets.conf.copy(),
        )
