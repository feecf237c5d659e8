"""Littering and illegal dumping: a static object left in a zone by a person who walked away.

Built on the shared dual-background mechanism (:mod:`detectors.scene_change`, after Porikli,
Ivanov and Haga, "Robust abandoned object detection using dual foregrounds", EURASIP JASP 2008),
with the owner rule of the abandoned-object literature (PETS 2006/2007 "left luggage": an object
is abandoned when its owner - the person who brought it - is farther than a distance for longer
than a time; Ferryman, "PETS 2006 benchmark data", and Tian et al., "Robust detection of
abandoned and removed objects in complex surveillance videos", IEEE TSMC-C 41(5), 2011):

1. **Object**: a static candidate region of the scene change (``new_regions`` while it is being
   timed, ``static_boxes`` once confirmed) that differs from the zone's clean reference.
2. **Onset**: when the object first became visible. Per small-grid pixel the detector keeps
   the time since which it has differed from the clean reference without a break (pixels hidden
   by people keep their value); the onset is the median of that time over the object's changed
   pixels. An object put down by a person is hidden by that person's box (plus margin) until
   they step away, so the onset is the moment the person uncovered it.
3. **Owner**: among the person tracks of the last ``owner_window_s`` before the onset, the one
   whose box (grown by ``owner_margin_px``) overlapped the object box *last* (ties: larger
   overlap) - the person standing on the spot when the object appeared. People passing over
   the object after its onset never become owners. An object found without an owner (first
   seen as a piece, the rest still hidden) looks again, over the same window, whenever its box
   grows or it merges with another piece; merged pieces keep an owner either of them had.
4. **Alert**: once the object has stayed ``wait_s`` after its onset, the owner is away
   (farther than ``left_distance_px``, or ``left_distance_m`` on the ground with a homography,
   or not among this frame's tracked people) and the object is not a *ghost* (its outline is
   in the current frame, not in the clean reference: something arrived rather than left, see
   ``LitteringConfig.ghost_edge_ratio``), one ``"started"`` event; small objects are ``littering``, large ones
   (ground area with a homography, else share of the frame) ``illegal_dumping``. The event
   carries the object box, the owner's track id, the owner's best crop (largest box least cut
   by the frame edge) and its time, so the person can be followed by re-identification.
5. **End**: the situation ends (``"ended"``) when the object is gone again (the spot matches
   the clean reference for ``removed_s``) or on :meth:`LitteringDetector.flush`. An object that
   goes before its alert raises nothing (carried away again).

One physical object is one situation: a candidate overlapping a known object (pending or
alerted) is part of it and never starts another; after the alert the object's box grows only
with regions that stayed static for the scene's ``persistence_s`` (a growing pile), and its
presence is also judged on the box it was reported with, so passing changes around it (people's
reflections on a shiny floor, a light flicker) can neither inflate it nor make it look gone.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.homography import Homography
from calibration.zones import Zone
from detectors.scene import SceneDetectorError, SceneEvent
from detectors.scene_change import SceneChangeConfig, SceneChangeState, ZoneSceneChange
from detectors.types import Detections
from ingest.frame import Frame

log = logging.getLogger(__name__)

#: Least IoU (or share of the smaller box covered) for a candidate region to be the same object
#: as a known one. Lower keeps one object through outline changes (partly hidden, pile growing),
#: higher keeps two neighbouring objects apart.
MATCH_OVERLAP = 0.3
#: Least share of an object box that must be visible (not hidden by people) for its presence
#: or absence to be judged in a frame; below it the frame says nothing about the object.
MIN_VISIBLE_SHARE = 0.5
#: Person crops kept for re-identification are downscaled to at most this height, pixels.
CROP_MAX_HEIGHT_PX = 256
#: A person box within this many pixels of the frame border counts as cut by the edge.
EDGE_PX = 2.0
#: Score factor of a crop cut by the frame edge (an edge-cut box is a partial person).
EDGE_PENALTY = 0.25
#: Largest factor by which :meth:`LitteringDetector._extent` may grow a candidate box; beyond it
#: the changed region is not one object (light change, crowd residue) and the candidate is kept.
MAX_EXTENT_GROWTH = 6.0
#: Relative growth of an open object's area that is reported as an ``"updated"`` event.
UPDATE_GROWTH = 0.5
#: Least share of an object's outline that must be away from people for the ghost test
#: (``LitteringConfig.ghost_edge_ratio``) to judge it; with less the object waits for a clearer
#: view. Lower judges sooner among people (an alert is not delayed while a crowd mills about),
#: higher judges on more of the outline.
MIN_OUTLINE_SHARE = 0.25
#: Outline pixels this close to the masked people and vehicles (which already include the
#: scene's ``mask_margin_px``) are left out of the ghost test, full-frame pixels: a person's
#: edges and shadow beyond their box would count as outline in the current frame.
OUTLINE_PEOPLE_MARGIN_PX = 10.0


@dataclass(frozen=True, slots=True)
class LitteringConfig:
    """Thresholds of :class:`LitteringDetector`.

    Attributes:
        wait_s: Stream seconds an object must stay after its onset (with its owner away) before
            the alert. Longer ignores things put down for a while and picked up again (a bag
            while someone ties a shoe, a cup set down during a phone call) at the cost of a
            later alert; the issue's "carried away within the wait time raises nothing".
        owner_window_s: How far back before the onset a person's box may have overlapped the
            object to count as its owner, seconds. Longer finds the owner when the object was
            hidden for a while after being put down (a group standing round it) but may blame
            an earlier passer-by when the real owner was not detected.
        owner_margin_px: Pixels the person box is grown by for the overlap test. Larger finds
            owners who put an object down beside themselves (or whose detected box is tight)
            but may blame a bystander next to the owner. Should be at least the scene's
            ``mask_margin_px`` (an object inside the masked margin is hidden by the person).
        left_distance_px: The owner is "away" when the bottom-centre of their box is farther
            than this from the object box, full-frame pixels (without a homography), or not in
            the frame at all. Smaller alerts sooner; too small alerts while the owner stands one
            step from their bag.
        left_distance_m: The same on the ground, metres, used instead of ``left_distance_px``
            when a homography is given (the PETS 2006 left-luggage rule used 3 m).
        removed_s: Stream seconds the object's spot must look like the clean reference again
            (while visible) before the object counts as taken away. Longer rides out lighting
            flicker and detection noise, shorter ends situations (and forgets objects) sooner.
        present_share: Least share 0..1 of the visible pixels of the object box that must differ
            from the clean reference for the object to count as still there. Lower keeps thin
            or low-contrast objects, higher forgets an object sooner once it is taken away.
        large_area_m2: Ground area, square metres, from which an object is ``illegal_dumping``
            rather than ``littering`` when a homography is given (changed share of the box times
            the box footprint's ground area; upright objects are overestimated because their
            top edge projects beyond them). Lower calls bags of rubbish dumping, higher calls
            only real piles dumping.
        large_area_share: Fallback without a homography: share 0..1 of the frame area from
            which an object is ``illegal_dumping``. Perspective makes this camera-specific (the
            same pile is larger near the camera); calibrate the camera for a size in metres.
        require_owner: ``True``: an object with no owner (nobody overlapped it when it appeared)
            raises nothing - the conservative choice on busy scenes, where unowned static
            changes are more often shadows or parked things than rubbish. ``False``: unowned
            objects still raise ``illegal_dumping`` after ``wait_s`` (reason
            ``"object_unowned"``), whatever their size - for night dumping from a car or van,
            where the person is never detected as a person (masked as a vehicle or too dark).
        ghost_edge_ratio: "Removed, not added" test before an alert (the abandoned/removed
            classification of Connell et al., "Detection and tracking in the IBM PeopleVision
            system", ICME 2004, and Tian et al. 2011, section III-C): an object that arrived has
            its outline in the current frame; a *ghost* - something that was in the clean
            reference and has left, such as a person standing still, unseen by the person
            detector, while the reference was learned - has its outline in the reference. The
            object raises nothing when the edge energy (largest per-channel Sobel magnitude)
            along the outline of its changed pixels in the current frame is below this fraction
            of the same energy in the clean reference; it is then a ghost for good (one-sided
            errors: people's edges can only add outline to the current frame) and no longer
            holds the clean reference, so the next refresh absorbs it. Measured with the
            benchmark (2026-11-30): the square's ghost (a man hidden from YOLOX behind the lamp
            post's sign while 10 s of reference were learned) 0.41 and 0.48; the 8 staged real
            objects that raised 1.18-24 (1.2-1.4 for the large piles partly over kerbs and
            markings). The rule is physical, not tuned to the clip: anything that *arrived*
            brings its outline; the threshold sits between the two groups. Higher rejects more
            ghosts but risks an object that covers a stronger edge than its own outline (a
            low-contrast bag dropped across a kerb or painted line) - such an object is missed
            until the kerb's edge is back in view; ``0`` turns the test off. A height rule ("as
            tall as a person is not litter") was not used: it would also drop upright dumped
            furniture and mattresses and says nothing of ghosts of cars or bins that left.
        scene: The shared scene-change thresholds (learning period, background time constants,
            masking margin). Its ``persistence_s`` only confirms regions for the scene-change
            module; this detector follows candidates from their first appearance.

    Raises:
        SceneDetectorError: When a value is out of its bounds.
    """

    wait_s: float = 30.0
    owner_window_s: float = 10.0
    owner_margin_px: float = 20.0
    left_distance_px: float = 120.0
    left_distance_m: float = 3.0
    removed_s: float = 3.0
    present_share: float = 0.25
    large_area_m2: float = 0.5
    large_area_share: float = 0.004
    require_owner: bool = True
    ghost_edge_ratio: float = 0.6
    scene: SceneChangeConfig = field(default_factory=SceneChangeConfig)

    def __post_init__(self) -> None:
        for name in ("wait_s", "owner_window_s", "left_distance_px", "left_distance_m", "large_area_m2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SceneDetectorError(f"LitteringConfig.{name} must be > 0, got {value!r}")
        for name in ("owner_margin_px", "removed_s", "ghost_edge_ratio"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SceneDetectorError(f"LitteringConfig.{name} must be >= 0, got {value!r}")
        for name in ("present_share", "large_area_share"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise SceneDetectorError(f"LitteringConfig.{name} must be in (0, 1), got {value!r}")
        if not isinstance(self.require_owner, bool):
            raise SceneDetectorError(f"LitteringConfig.require_owner must be a bool, got {self.require_owner!r}")
        if not isinstance(self.scene, SceneChangeConfig):
            raise SceneDetectorError(f"LitteringConfig.scene must be a SceneChangeConfig, got {type(self.scene)}")


@dataclass(slots=True, eq=False)
class _Track:
    """What the detector remembers of one person track."""

    last_s: float
    last_xyxy: np.ndarray  # (4,) float32 full px
    best_score: float = -1.0
    best_bgr: np.ndarray | None = None
    best_s: float | None = None


@dataclass(slots=True, eq=False)
class _Object:
    """One object being watched: from its first static appearance until it is gone."""

    xyxy: np.ndarray  # (4,) float32 full px
    onset_s: float
    owner: int | None
    last_present_s: float
    since_s: float = -math.inf  # start of the owner search window (spot last seen clean), s
    ghost: bool = False  # its outline is in the clean reference, not in the frame: never raises
    alert_xyxy: np.ndarray | None = None  # (4,) float32 full px: the box when it raised
    situation_id: int | None = None
    alert_type: str | None = None
    area_px: float = 0.0
    severity: float = 0.0
    owner_bgr: np.ndarray | None = None
    owner_time_s: float | None = None


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """max(IoU, intersection / smaller area) of two ``xyxy`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w * h)
    area_a = float((a[2] - a[0]) * (a[3] - a[1]))
    area_b = float((b[2] - b[0]) * (b[3] - b[1]))
    return max(inter / (area_a + area_b - inter), inter / max(min(area_a, area_b), 1e-6))


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest ``xyxy`` box `(4,)` float32 holding both boxes."""
    return np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], np.float32)


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(w * h) if w > 0 and h > 0 else 0.0


def _window(state: SceneChangeState, box_xyxy: np.ndarray) -> tuple[slice, slice]:
    """Small-grid slices of a full-frame ``xyxy`` box, clipped to the grid (at least 1 px)."""
    h, w = state.zone_small.shape
    x1, y1, x2, y2 = state.to_small(np.asarray(box_xyxy, np.float32).reshape(4))
    x1, y1 = min(max(int(math.floor(x1)), 0), w - 1), min(max(int(math.floor(y1)), 0), h - 1)
    x2, y2 = min(max(int(math.ceil(x2)), x1 + 1), w), min(max(int(math.ceil(y2)), y1 + 1), h)
    return slice(y1, y2), slice(x1, x2)


class LitteringDetector:
    """Littering / illegal-dumping detector for one zone of one camera (a ``SceneDetector``).

    Args:
        detector_id: Configured id, unique within the camera.
        zone: The watched zone (pavement, lawn, a no-littering area).
        config: Thresholds; defaults when ``None``.
        homography: The camera's image-to-ground mapping; when given, object size is judged in
            square metres and the owner's distance in metres.

    Raises:
        SceneDetectorError: When ``detector_id`` is empty or an argument has the wrong type.
    """

    def __init__(self, detector_id: str, zone: Zone, config: LitteringConfig | None = None,
                 homography: Homography | None = None) -> None:
        if not isinstance(detector_id, str) or not detector_id:
            raise SceneDetectorError(f"detector_id must be a non-empty string, got {detector_id!r}")
        if not isinstance(zone, Zone):
            raise SceneDetectorError(f"zone must be a Zone, got {type(zone).__name__}")
        if homography is not None and not isinstance(homography, Homography):
            raise SceneDetectorError(f"homography must be a Homography, got {type(homography).__name__}")
        self.detector_id = detector_id
        self.zone_id = zone.zone_id
        self.config = config or LitteringConfig()
        if not isinstance(self.config, LitteringConfig):
            raise SceneDetectorError(f"config must be a LitteringConfig, got {type(self.config).__name__}")
        self.homography = homography
        self._scene = ZoneSceneChange(zone, self.config.scene)
        self._horizon_s = self.config.owner_window_s + self.config.wait_s
        self._history: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # (t, ids (N,), xyxy (N,4))
        self._tracks: dict[int, _Track] = {}
        self._objects: list[_Object] = []
        # Per small-grid pixel: first time seen changed since last seen clean (NaN: not changed),
        # and last time seen clean (visible and like the clean reference); (h, w) float32.
        self._first_diff_s: np.ndarray | None = None
        self._last_clean_s: np.ndarray | None = None
        self._frame_dt_s = 0.0  # last frame interval, s: slack for the owner window
        self._next_situation = 0
        self._last_frame: Frame | None = None

    # -- people ------------------------------------------------------------------------------
    def _remember_people(self, frame: Frame, people: Detections) -> None:
        now = float(frame.time_s)
        keep = people.track_id >= 0
        ids, boxes = people.track_id[keep].copy(), people.xyxy[keep].copy()
        self._history.append((now, ids, boxes))
        while self._history and self._history[0][0] < now - self._horizon_s:
            self._history.popleft()
        w, h = frame.resolution_wh
        for track_id, box in zip(ids.tolist(), boxes):
            track = self._tracks.get(track_id)
            if track is None:
                track = self._tracks[track_id] = _Track(now, box)
            track.last_s, track.last_xyxy = now, box
            x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
            x2, y2 = min(int(math.ceil(box[2])), w), min(int(math.ceil(box[3])), h)
            if x2 <= x1 or y2 <= y1:
                continue
            cut = (box[0] < EDGE_PX or box[1] < EDGE_PX or box[2] > w - EDGE_PX or box[3] > h - EDGE_PX)
            score = (x2 - x1) * (y2 - y1) * (EDGE_PENALTY if cut else 1.0)
            if score > track.best_score:
                crop = frame.image[y1:y2, x1:x2]
                if crop.shape[0] > CROP_MAX_HEIGHT_PX:
                    f = CROP_MAX_HEIGHT_PX / crop.shape[0]
                    crop = cv2.resize(crop, (max(round(crop.shape[1] * f), 1), CROP_MAX_HEIGHT_PX),
                                      interpolation=cv2.INTER_AREA)
                track.best_score, track.best_bgr, track.best_s = score, crop.copy(), now
        owners = {o.owner for o in self._objects}
        for track_id in [t for t, tr in self._tracks.items() if tr.last_s < now - self._horizon_s]:
            if track_id not in owners:
                del self._tracks[track_id]

    def _find_owner(self, box: np.ndarray, since_s: float, onset_s: float) -> int | None:
        """The person who put the object down.

        Candidates are the tracks whose box, grown by ``owner_margin_px``, overlapped ``box``
        while the spot was hidden: from ``since_s`` (last seen clean, one frame of slack) to
        ``onset_s`` (first seen changed), at most ``owner_window_s`` back. Of those, the owner
        is the one whose feet (box bottom-centre) came closest to the object's bottom-centre:
        things are put down at the feet, while passers-by overlap the spot with their bodies
        (on PETS09 a second walker crossed right behind a staged carton within a second).
        """
        m = self.config.owner_margin_px
        grow = np.array([-m, -m, m, m], np.float32)
        base = np.array([(box[0] + box[2]) / 2, box[3]], np.float32)
        start = max(since_s, onset_s - self.config.owner_window_s)
        best: tuple[float, int] | None = None
        for t, ids, boxes in self._history:
            if t < start or t > onset_s:
                continue
            for track_id, pbox in zip(ids.tolist(), boxes):
                if _intersection(pbox + grow, box) <= 0:
                    continue
                dist = float(np.hypot((pbox[0] + pbox[2]) / 2 - base[0], pbox[3] - base[1]))
                if best is None or dist < best[0]:
                    best = (dist, track_id)
        return None if best is None else best[1]

    def _owner_away(self, obj: _Object, now: float) -> bool:
        track = self._tracks.get(obj.owner) if obj.owner is not None else None
        if track is None or track.last_s < now:
            return True  # gone from view (or never seen)
        feet = np.array([(track.last_xyxy[0] + track.last_xyxy[2]) / 2, track.last_xyxy[3]], np.float64)
        if self.homography is not None:
            x1, y1, x2, y2 = obj.xyxy.astype(np.float64)
            g = self.homography.img_to_ground(np.array([feet, [(x1 + x2) / 2, y2]]))
            if np.isfinite(g).all():
                return float(np.linalg.norm(g[0] - g[1])) > self.config.left_distance_m
        x1, y1, x2, y2 = obj.xyxy.astype(np.float64)
        dx = max(x1 - feet[0], 0.0, feet[0] - x2)
        dy = max(y1 - feet[1], 0.0, feet[1] - y2)
        return math.hypot(dx, dy) > self.config.left_distance_px

    # -- objects -----------------------------------------------------------------------------
    def _update_change_times(self, state: SceneChangeState, now: float) -> None:
        changed, visible = state.changed_mask_clean, ~state.masked_small
        if self._first_diff_s is None or self._first_diff_s.shape != changed.shape:
            self._first_diff_s = np.full(changed.shape, np.nan, np.float32)
            self._last_clean_s = np.full(changed.shape, -np.inf, np.float32)
        self._first_diff_s[changed & np.isnan(self._first_diff_s)] = now
        clean = ~changed & visible
        self._first_diff_s[clean] = np.nan  # seen clean again: the change (if any) is over
        self._last_clean_s[clean] = now

    def _onset(self, state: SceneChangeState, box: np.ndarray, fallback_s: float) -> tuple[float, float]:
        """``(since_s, onset_s)`` of an object: median over its changed pixels of the last time
        they were seen clean and of the first time they were seen changed (``fallback_s`` for
        both when no pixel has a time)."""
        ys, xs = _window(state, box)
        changed = state.changed_mask_clean[ys, xs]
        first, last = self._first_diff_s[ys, xs][changed], self._last_clean_s[ys, xs][changed]
        keep = np.isfinite(first)
        if not keep.any():
            return fallback_s, fallback_s
        onset = float(np.median(first[keep]))
        last = last[keep]
        since = float(np.median(last)) if np.isfinite(last).any() else -math.inf
        return min(since, onset), onset

    def _measure(self, state: SceneChangeState, box: np.ndarray) -> tuple[float, float | None]:
        """Changed area of ``box``: full-frame pixels, and square metres with a homography.

        The metric area is the object's silhouette at the ground scale of its foot: changed
        pixels times (metres per pixel along the box's bottom edge, from
        :meth:`Homography.size_m`) squared. It suits upright things (bags, boxes, piles); the
        box footprint's ground area (:meth:`Homography.area_m2`) would count an upright object's
        height as depth on an oblique camera (on PETS09 a 14 px high box is 0.9 m deep).
        """
        ys, xs = _window(state, box)
        changed = state.changed_mask_clean[ys, xs] & state.zone_small[ys, xs]
        area_px = float(changed.sum()) / state.scale ** 2
        area_m2 = None
        if self.homography is not None and area_px > 0:
            x1, x2, y2 = float(box[0]), float(box[2]), float(box[3])
            width_m = float(self.homography.size_m([x1, y2, x2, y2])[0])  # bottom edge on the ground
            if math.isfinite(width_m) and x2 > x1:
                area_m2 = area_px * (width_m / (x2 - x1)) ** 2
        return area_px, area_m2

    def _classify(self, obj: _Object, area_px: float, area_m2: float | None, frame: Frame) -> str:
        if obj.owner is None:
            return "illegal_dumping"
        if area_m2 is not None:
            return "illegal_dumping" if area_m2 >= self.config.large_area_m2 else "littering"
        w, h = frame.resolution_wh
        return "illegal_dumping" if area_px >= self.config.large_area_share * w * h else "littering"

    def _severity(self, area_px: float, area_m2: float | None, frame: Frame) -> float:
        """Size relative to twice the dumping threshold, 0..1 (a pile twice the threshold is 1)."""
        if area_m2 is not None:
            return float(min(area_m2 / (2 * self.config.large_area_m2), 1.0))
        w, h = frame.resolution_wh
        return float(min(area_px / (2 * self.config.large_area_share * w * h), 1.0))

    def _judge_ghost(self, state: SceneChangeState, obj: _Object) -> bool:
        """Judge an object that is ready to raise: ``True`` when it may raise now, ``False``
        when it must wait (people around most of its outline) or is a ghost (marked for good).

        The verdict is taken once: its errors are one-sided (a passer-by's unmasked edges or
        shadow can make a ghost look like an arrival, nothing takes an arrived object's outline
        away), so a ghost once judged stays one until its spot matches the clean reference.
        """
        ratio = self._edge_ratio(state, obj.xyxy)
        if ratio is None:
            return False
        obj.ghost = ratio < self.config.ghost_edge_ratio
        if obj.ghost:
            log.info("%s t=%.2f: object %s is a ghost (something that left the clean reference, edge "
                     "ratio %.2f), not litter", self.detector_id, state.time_s, np.round(obj.xyxy).tolist(), ratio)
        return not obj.ghost

    def _edge_ratio(self, state: SceneChangeState, box: np.ndarray) -> float | None:
        """Edge energy along the outline of the changed pixels of ``box`` (full-frame px) in the
        current frame, divided by the same in the clean reference (see
        ``LitteringConfig.ghost_edge_ratio``); ``None`` when it cannot be judged.

        Edge energy is the largest per-channel 3x3 Sobel gradient magnitude on the small grid
        (light-matched current crop and clean reference), summed over the outline (3x3 dilation
        minus erosion of the changed pixels). Outline pixels within ``OUTLINE_PEOPLE_MARGIN_PX``
        of the masked people and vehicles are left out (their edges and shadows are not the
        object's); ``None`` when that leaves less than ``MIN_OUTLINE_SHARE`` of the outline.
        """
        if state.clean_bgr is None or state.current_small is None:
            return None
        r = int(math.ceil(OUTLINE_PEOPLE_MARGIN_PX * state.scale))  # margin beyond the mask, small px
        ys, xs = _window(state, box)
        h, w = state.zone_small.shape
        pad_y = slice(max(ys.start - r - 1, 0), min(ys.stop + r + 1, h))
        pad_x = slice(max(xs.start - r - 1, 0), min(xs.stop + r + 1, w))
        inner = (slice(ys.start - pad_y.start, ys.stop - pad_y.start),
                 slice(xs.start - pad_x.start, xs.stop - pad_x.start))
        changed = (state.changed_mask_clean & state.zone_small)[pad_y, pad_x].astype(np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        outline = (cv2.dilate(changed, kernel) > cv2.erode(changed, kernel)) & state.zone_small[pad_y, pad_x]
        near_people = cv2.dilate(state.masked_small[pad_y, pad_x].astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8))
        outline, usable = outline[inner], (outline & (near_people == 0))[inner]
        if not usable.any() or usable.sum() < MIN_OUTLINE_SHARE * outline.sum():
            return None

        def energy(image: np.ndarray) -> float:
            crop = image[pad_y, pad_x].astype(np.float32)
            grad = np.hypot(cv2.Sobel(crop, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(crop, cv2.CV_32F, 0, 1, ksize=3))
            return float(grad.max(axis=2)[inner][usable].sum())

        current, reference = energy(state.current_small), energy(state.clean_bgr)
        log.debug("%s t=%.2f: object %s outline edge energy %.0f, %.0f in the clean reference",
                  self.detector_id, state.time_s, np.round(box).tolist(), current, reference)
        return current / reference if reference > 0 else math.inf

    @staticmethod
    def _changed_labels(state: SceneChangeState) -> np.ndarray:
        """`(h, w)` int32 connected regions of ``changed_mask_clean`` (small grid, 0 = none),
        after a 3x3 closing that joins the pieces of one object."""
        changed = (state.changed_mask_clean & state.zone_small).astype(np.uint8)
        changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        return cv2.connectedComponents(changed, connectivity=8)[1]

    @staticmethod
    def _extent(state: SceneChangeState, labels: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Grow a candidate box to the changed regions (``labels``) it touches.

        The dual-background candidate of an object often comes in pieces (parts that match the
        short-term model sooner); the difference to the clean reference shows the whole object.
        Falls back to ``box`` when that region is more than ``MAX_EXTENT_GROWTH`` times larger
        (a light change or a crowd residue, not one object).
        """
        ys, xs = _window(state, box)
        touched = np.unique(labels[ys, xs])
        touched = touched[touched > 0]
        if touched.size == 0:
            return box.copy()
        rows, cols = np.nonzero(np.isin(labels, touched))
        small = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)
        grown = _union(state.to_full(small), box)
        area = lambda b: float((b[2] - b[0]) * (b[3] - b[1]))  # noqa: E731
        return grown if area(grown) <= MAX_EXTENT_GROWTH * max(area(box), 1.0) else box.copy()

    def _grow(self, obj: _Object, box: np.ndarray) -> None:
        """Grow a pending object's box by ``box`` (another piece of it); an object without an
        owner looks for one again with the grown box.

        An object first seen in pieces (partly hidden by the person who put it down, or by
        passers-by) may be found as a piece that the owner's box never touched, while the whole
        object did (benchmark litter7, 2026-11-30: bin bags dropped beside a walker on the
        square were first seen as a 14x22 px piece 13 px beyond the walker's grown box). The
        search window stays the object's own (:meth:`_find_owner` from ``since_s`` to the onset),
        so people who crossed the object after it appeared still never become owners.
        """
        grown = _union(obj.xyxy, box)
        if obj.owner is None and not np.array_equal(grown, obj.xyxy):
            obj.owner = self._find_owner(grown, obj.since_s, obj.onset_s)
            if obj.owner is not None:
                log.debug("%s: object %s grown to %s, owner %s", self.detector_id,
                          np.round(obj.xyxy).tolist(), np.round(grown).tolist(), obj.owner)
        obj.xyxy = grown

    def _merge_overlapping(self) -> None:
        """Merge objects whose boxes overlap (pieces of one object); the earliest onset (and its
        owner and situation) is kept. A pending object merged with an alerted one is absorbed
        without growing the alerted box (see the candidate matching in :meth:`update`)."""
        self._objects.sort(key=lambda o: o.onset_s)
        kept: list[_Object] = []
        for obj in self._objects:
            into = next((k for k in kept if _overlap(k.xyxy, obj.xyxy) >= MATCH_OVERLAP), None)
            if into is None or (into.situation_id is not None and obj.situation_id is not None):
                kept.append(obj)
                continue
            into.last_present_s = max(into.last_present_s, obj.last_present_s)
            if into.situation_id is None and obj.situation_id is None:
                into.since_s = min(into.since_s, obj.since_s)
                if into.owner is None:
                    into.owner = obj.owner
                self._grow(into, obj.xyxy)
            elif into.situation_id is None:
                into.xyxy, into.alert_xyxy = obj.xyxy, obj.alert_xyxy
                into.situation_id, into.alert_type, into.area_px = obj.situation_id, obj.alert_type, obj.area_px
                into.severity = obj.severity
        self._objects = kept

    def _event(self, kind: str, obj: _Object, frame: Frame, state: SceneChangeState | None,
               reason: str, area_m2: float | None = None) -> SceneEvent:
        reference = current = None
        covered = 0.0
        if state is not None and kind != "ended":
            try:
                reference, current = state.crop(obj.xyxy)
            except ValueError:
                reference = current = None
            covered = float(min(obj.area_px * state.scale ** 2 / max(int(state.zone_small.sum()), 1), 1.0))
        track = self._tracks.get(obj.owner) if obj.owner is not None else None
        if track is not None and track.best_bgr is not None:
            obj.owner_bgr, obj.owner_time_s = track.best_bgr, track.best_s
        details: dict[str, object] = {"onset_source": "first_change_to_clean"}
        if area_m2 is not None:
            details["area_m2"] = round(area_m2, 3)
        return SceneEvent(
            kind=kind, alert_type=obj.alert_type, detector_id=self.detector_id,
            situation_id=obj.situation_id, zone_id=self.zone_id, reason=reason,
            start_time_s=obj.onset_s, time_s=float(frame.time_s), wall_time_s=float(frame.wall_time_s),
            xyxy=obj.xyxy.reshape(1, 4).astype(np.float32), area_px=np.array([obj.area_px], np.float32),
            covered_share=covered, severity=obj.severity,
            conf=1.0, track_ids=() if obj.owner is None else (int(obj.owner),),
            reference_bgr=reference, current_bgr=current,
            person_bgr=obj.owner_bgr if kind != "ended" else None,
            person_time_s=obj.owner_time_s if kind != "ended" else None,
            frame=frame, details=details)

    # -- SceneDetector -----------------------------------------------------------------------
    def update(self, frame: Frame, people: Detections, vehicles: Detections) -> list[SceneEvent]:
        """Feed one analysed frame.

        Args:
            frame: The frame; ``time_s`` (stream time) drives every timer.
            people: Tracked person detections (``track_id`` set; untracked rows are masked but
                cannot own objects), full-frame px.
            vehicles: Other moving things to mask out, full-frame px.

        Returns:
            The events of this frame: ``"started"`` when an object is confirmed left,
            ``"updated"`` when it grows materially (or turns from litter into a pile),
            ``"ended"`` when it is taken away.

        Raises:
            SceneDetectorError: When ``people`` or ``vehicles`` is not a ``Detections``.
            SceneChangeError: When the zone covers less than 8x8 px of the frame.
        """
        if not isinstance(people, Detections) or not isinstance(vehicles, Detections):
            raise SceneDetectorError("people and vehicles must be Detections")
        now = float(frame.time_s)
        if self._last_frame is not None:
            self._frame_dt_s = max(now - float(self._last_frame.time_s), 0.0)
        self._last_frame = frame
        self._remember_people(frame, people)
        mask = np.concatenate([people.xyxy, vehicles.xyxy]).astype(np.float32).reshape(-1, 4)
        # Keep the clean reference while an object could still raise or has raised (an unowned
        # one under require_owner never will, nor a ghost; the reference may absorb them).
        hold = any(o.situation_id is not None
                   or (not o.ghost and (o.owner is not None or not self.config.require_owner))
                   for o in self._objects)
        state = self._scene.update(frame, mask, hold_reference=hold)
        if state.learning or state.changed_mask_clean is None:
            return []
        self._update_change_times(state, now)
        events: list[SceneEvent] = []

        # New candidates (being timed or confirmed) that are not yet known objects.
        candidates = [(b, float(s), False) for b, s in zip(state.new_regions, state.new_regions_since_s)]
        candidates += [(b, now - float(s), True) for b, s in zip(state.static_boxes, state.static_since_s)]
        labels = self._changed_labels(state) if candidates else None
        for raw, since_s, confirmed in candidates:
            raw = np.asarray(raw, np.float32)
            box = self._extent(state, labels, raw)
            match = max(self._objects, key=lambda o: _overlap(o.xyxy, box), default=None)
            if match is not None and _overlap(match.xyxy, box) >= MATCH_OVERLAP:
                # Part of a known object, pending or alerted: never a second one. Before the
                # alert it grows the object's box (pieces join into the whole object); after
                # it only a region static for the scene's persistence_s does (the pile grew),
                # never a passing change around it (people's reflections on a shiny floor, a
                # light flicker), which would inflate the box until the object looked gone.
                if match.situation_id is None:
                    self._grow(match, box)
                elif confirmed:
                    match.xyxy = _union(match.xyxy, raw)
                continue
            clean_s, onset = self._onset(state, box, since_s)
            onset = min(onset, since_s)
            since = min(clean_s, onset) - self._frame_dt_s
            owner = self._find_owner(box, since, onset)
            self._objects.append(_Object(box, onset, owner, now, since))
            log.debug("%s camera %s t=%.2f: object %s onset %.2f owner %s", self.detector_id,
                      frame.camera_id, now, np.round(box).tolist(), onset, owner)
        self._merge_overlapping()

        cfg = self.config
        for obj in list(self._objects):
            if state.visible_share(obj.xyxy) >= MIN_VISIBLE_SHARE:
                present = state.changed_to_clean(obj.xyxy)
                if obj.alert_xyxy is not None:  # where it was reported, whatever the box became
                    present = max(present, state.changed_to_clean(obj.alert_xyxy))
                if present >= cfg.present_share:
                    obj.last_present_s = now
                elif now - obj.last_present_s > cfg.removed_s:
                    self._objects.remove(obj)
                    if obj.situation_id is not None:
                        events.append(self._event("ended", obj, frame, None, "removed"))
                    else:
                        log.debug("%s t=%.2f: object %s gone before its alert", self.detector_id, now,
                                  np.round(obj.xyxy).tolist())
                    continue
            if obj.last_present_s != now:
                continue  # hidden or missing this frame: nothing to measure
            if obj.situation_id is None:
                if now - obj.onset_s < cfg.wait_s or (obj.owner is None and cfg.require_owner):
                    continue
                if obj.owner is not None and not self._owner_away(obj, now):
                    continue
                if obj.ghost or (cfg.ghost_edge_ratio > 0 and not self._judge_ghost(state, obj)):
                    continue
                area_px, area_m2 = self._measure(state, obj.xyxy)
                obj.area_px = area_px
                obj.alert_type = self._classify(obj, area_px, area_m2, frame)
                obj.severity = self._severity(area_px, area_m2, frame)
                obj.situation_id, obj.alert_xyxy = self._next_situation, obj.xyxy.copy()
                self._next_situation += 1
                reason = "object_left" if obj.owner is not None else "object_unowned"
                log.info("%s camera %s t=%.2f: %s, object %s, owner %s, onset %.2f", self.detector_id,
                         frame.camera_id, now, obj.alert_type, np.round(obj.xyxy).tolist(), obj.owner,
                         obj.onset_s)
                events.append(self._event("started", obj, frame, state, reason, area_m2))
            elif state.visible_share(obj.xyxy) >= 0.99:
                area_px, area_m2 = self._measure(state, obj.xyxy)
                alert_type = self._classify(obj, area_px, area_m2, frame)
                if area_px > obj.area_px * (1 + UPDATE_GROWTH):  # material growth only
                    obj.area_px = area_px
                    if alert_type == "illegal_dumping":  # litter can grow into a pile, never back
                        obj.alert_type = alert_type
                    obj.severity = self._severity(obj.area_px, area_m2, frame)
                    events.append(self._event("updated", obj, frame, state, "object_grew", area_m2))
        return events

    def flush(self, frame: Frame | None) -> list[SceneEvent]:
        """End every open situation (end of stream or shutdown).

        Args:
            frame: The last frame, or ``None`` to use the last frame seen.

        Returns:
            One ``"ended"`` event (reason ``"flush"``) per alerted object still present; none
            when no frame was ever seen.
        """
        frame = frame if frame is not None else self._last_frame
        events = [self._event("ended", o, frame, None, "flush")
                  for o in self._objects if o.situation_id is not None and frame is not None]
        self._objects.clear()
        return events

    def _state_path(self, directory: Path) -> Path:
        return Path(directory) / f"{self.detector_id}-{self.zone_id}.npz"

    @property
    def learning(self) -> bool:
        """Whether the clean reference is still being learned (nothing is reported until then)."""
        return self._scene.learning

    def save_state(self, directory: Path) -> None:
        """Persist the zone's learned clean reference under ``directory`` (atomic write).

        Raises:
            OSError: When the file cannot be written.
        """
        self._scene.save(self._state_path(directory))

    def load_state(self, directory: Path) -> bool:
        """Restore a reference saved by :meth:`save_state`; ``False`` when none fits."""
        return self._scene.load(self._state_path(directory))
