"""Overflowing-bin detector: rubbish above a bin's rim or around it, and a missing bin.

Issue 4, item 2. One :class:`BinOverflowDetector` watches one bin of one camera, configured by
three pieces of geometry drawn on the camera's snapshot:

- ``bin_zone``: the container as it appears in the image (its body);
- ``rim_line``: the top edge of the opening, two points; default the top edge of the bin zone's
  bounding box. Rubbish that sticks out of a full bin shows in the image *above* this line, so
  the detector also watches a strip above it (``BinOverflowConfig.above_rim_share``);
- ``around_zone`` (optional): the ground around the bin where bags and boxes get put down.

All three are watched by one :class:`~detectors.scene_change.ZoneSceneChange` over the convex
hull of their points (the dual-background mechanism of Porikli et al. 2008, with people and
vehicles masked out and a clean reference learned per zone). On top of it:

- **Onset**: a static region confirmed by the scene-change mechanism
  (``SceneChangeState.static_boxes``) whose pixels that differ from the clean reference lie in
  the above-rim strip (reason ``"above_rim"``) or on the ground around the bin
  (``"around_bin"``), at least ``min_area_px`` of them. Changes on the bin body itself below the
  rim (stickers, a lid left open, graffiti) are not overflow.
- **Missing or knocked over**: at least ``missing_share`` of the visible bin zone differs from
  the clean reference (reason ``"bin_missing"``); no static region is needed (a bin that was
  there at learning time and is now gone is a difference to the clean reference for good).
- **Persistence**: a candidate must be present for ``persistence_s`` of stream time counted only
  while no person or vehicle box overlaps the watched area: the timer pauses (it is not reset)
  while someone stands at the bin, so a person putting a bag in and taking it out, or a refuse
  truck emptying the bin, does not count towards the alert.
- **Presence and clearing** use the clean reference, not the static mask: a bag the long-term
  model has slowly absorbed is still a difference to the clean reference. A candidate is
  present while at least ``present_share`` of its visible box differs from the clean reference
  and absent below ``clear_ratio * present_share`` (hysteresis); absent for ``clear_s`` (counted
  like the persistence timer) drops it. While any candidate exists, the detector passes
  ``hold_reference=True`` so the clean reference is not refreshed with the rubbish in it.
- **Situation**: one per bin. It starts when the first candidate is confirmed, carries the most
  serious reason of its confirmed candidates (``bin_missing`` > ``above_rim`` > ``around_bin``),
  is ``"updated"`` only when that reason changes or the changed area grows or shrinks by more
  than ``update_share`` of its last reported value, and ends when no confirmed candidate is left.
- **Optional classifier** (:class:`BinClassifier`, e.g. :class:`OnnxBinClassifier` trained by a
  site): when configured, an ``above_rim``/``around_bin`` candidate that has passed its
  persistence timer is confirmed only if the classifier's probability of "overflowing" on the
  current crop of the watched area (bounding box of bin zone, rim strip and around zone) is at
  least the classifier's ``threshold``; the probability becomes the situation's ``conf``. A
  rejected candidate is asked again every ``classifier_retry_s`` while it persists (light and
  occlusion change). ``bin_missing`` is never gated by the classifier (it is trained for
  overflow, not for an empty spot). Without a classifier, ``conf`` is the share of the
  candidate's box that differs from the clean reference (``missing`` share for ``bin_missing``).

Alert type ``bin_overflow``, routed to ticketing (:data:`detectors.scene.SCENE_ALERT_ROUTES`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np

from calibration.zones import Zone
from detectors.base import DetectorError, ModelNotFoundError
from detectors.scene import SceneDetectorError, SceneEvent
from detectors.scene_change import SceneChangeConfig, SceneChangeState, ZoneSceneChange
from detectors.types import Detections
from ingest.frame import Frame, check_array

log = logging.getLogger(__name__)

ALERT_TYPE = "bin_overflow"
#: Reasons in decreasing order of seriousness; a situation reports the first one it has.
REASONS = ("bin_missing", "above_rim", "around_bin")


def _bin_scene_defaults() -> SceneChangeConfig:
    """Scene-change thresholds for bins: a short static confirmation (the bin detector's own
    ``persistence_s`` does the waiting, pausing for people), a long long-term model so rubbish
    stays "static" for minutes, and a 60 s clean-reference learning period."""
    return SceneChangeConfig(long_term_tau_s=600.0, short_term_tau_s=3.0, fg_threshold=30.0,
                             min_area_px=150.0, persistence_s=5.0, clear_s=3.0, learn_s=60.0)


@dataclass(frozen=True, slots=True)
class BinOverflowConfig:
    """Thresholds of :class:`BinOverflowDetector`.

    Attributes:
        persistence_s: Stream seconds a candidate (rubbish or missing bin) must be present, with
            no person or vehicle at the bin, before the alert. Longer ignores bags waiting a few
            minutes for the collection round and people busy at the bin, at the cost of a later
            ticket. The total delay from onset is about ``scene.persistence_s + 1.5 *
            scene.short_term_tau_s + persistence_s`` plus the time people stood at the bin.
        clear_s: Stream seconds a candidate must be absent (visible and not differing from the
            clean reference), with nobody at the bin, before it is dropped and a situation ends.
            Longer rides out a refuse truck's short visit and flickering evidence; shorter
            closes the ticket sooner after the rubbish is collected.
        min_area_px: Fewest full-frame pixels of a static region, in the rim strip or around the
            bin, that differ from the clean reference for it to become a candidate. Lower finds
            a single bag at a distant bin, higher ignores a cup or leaves.
        present_share: Share 0..1 of a candidate box's visible watched pixels that must differ
            from the clean reference for it to count as present. Lower keeps a spread-out pile
            (newspapers with gaps) alive; higher drops a candidate sooner when partly taken away.
        clear_ratio: Hysteresis: a candidate is absent only below ``clear_ratio *
            present_share`` (and a missing bin below ``clear_ratio * missing_share``); in between
            neither timer runs. Lower needs a cleaner scene to clear, higher flips more easily.
        missing_share: Share 0..1 of the visible bin zone that must differ from the clean
            reference for "bin missing or knocked over". Lower catches a bin that was only moved
            or turned, but also a bin hidden by a large, unmasked object (a parked van the
            detector missed); higher needs the bin really gone.
        min_visible_share: Share 0..1 of a box (or of the bin zone) that must be free of people
            and vehicles to judge presence; below it the frame says nothing about that candidate.
            Lower judges more frames but from fewer pixels.
        above_rim_share: Height of the watched strip above the rim line, as a share of the bin
            zone's bounding-box height. Larger catches tall piles and lids propped open by bags,
            but also watches more of the background behind the bin (people passing behind it).
        update_share: Relative change of the total changed area (vs the last reported value)
            that makes an ``"updated"`` event. Lower reports a growing pile more often.
        classifier_retry_s: Stream seconds before a candidate the classifier rejected is asked
            again. Shorter reacts sooner when the view improves, longer costs less inference.
        scene: Thresholds of the underlying scene-change mechanism (learning period, background
            time constants, difference threshold, static confirmation time).

    Raises:
        SceneDetectorError: When a value is out of its bounds.
    """

    persistence_s: float = 120.0
    clear_s: float = 30.0
    min_area_px: float = 300.0
    present_share: float = 0.3
    clear_ratio: float = 0.5
    missing_share: float = 0.5
    min_visible_share: float = 0.5
    above_rim_share: float = 0.6
    update_share: float = 0.5
    classifier_retry_s: float = 60.0
    scene: SceneChangeConfig = field(default_factory=_bin_scene_defaults)

    def __post_init__(self) -> None:
        for name in ("persistence_s", "clear_s", "classifier_retry_s"):
            if not getattr(self, name) >= 0:
                raise SceneDetectorError(f"BinOverflowConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_area_px", "above_rim_share", "update_share"):
            if not getattr(self, name) > 0:
                raise SceneDetectorError(f"BinOverflowConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("present_share", "clear_ratio", "missing_share", "min_visible_share"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise SceneDetectorError(f"BinOverflowConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if not isinstance(self.scene, SceneChangeConfig):
            raise SceneDetectorError(f"BinOverflowConfig.scene must be a SceneChangeConfig, got {type(self.scene)}")


@runtime_checkable
class BinClassifier(Protocol):
    """A per-camera "is this bin overflowing?" classifier on a crop of the bin and its ground.

    Attributes:
        threshold: Probability 0..1 at or above which a candidate is confirmed.
    """

    threshold: float

    def predict(self, crop_bgr: np.ndarray) -> float:
        """Probability 0..1 that ``crop_bgr`` (`(h, w, 3)` uint8 BGR) shows an overflowing bin."""
        ...


class OnnxBinClassifier:
    """A site-trained image classifier in ONNX format, run with ONNX Runtime on the bin crop.

    Pre-processing, in this order: resize to ``input_hw`` (``cv2.INTER_AREA``), BGR to RGB when
    ``rgb``, scale to 0..1, subtract ``mean`` and divide by ``std`` per channel, NCHW float32 with
    a batch of one. The model's first output is read as `(1, C)` (or `(C,)`) and turned into a
    probability as ``output`` says; entry ``positive_index`` is "overflowing".

    Args:
        model_path: The ``.onnx`` file; its first input must be `(1 or N, 3, H, W)` float32.
        input_hw: Model input ``(height, width)`` in pixels.
        mean: Per-channel mean on the 0..1 scale, in the model's channel order (ImageNet default).
        std: Per-channel standard deviation on the 0..1 scale (ImageNet default).
        rgb: Whether the model expects RGB (``True``) or BGR channel order.
        positive_index: Index of the "overflowing" class in the output.
        threshold: Probability 0..1 at or above which a candidate is confirmed. Lower confirms
            more candidates (the classifier vetoes less), higher trusts the model more.
        output: ``"softmax"`` (logits over C classes), ``"sigmoid"`` (one logit per class) or
            ``"probability"`` (already 0..1); declared, never guessed from the values.
        providers: onnxruntime providers in order of preference.

    Raises:
        ModelNotFoundError: When ``model_path`` does not exist.
        DetectorError: When the file is not a loadable model or its input is not 3-channel NCHW.
        SceneDetectorError: For a threshold outside [0, 1], a bad ``output`` kind, or a mean/std
            that is not three positive (std) numbers.
    """

    def __init__(self, model_path: str | Path, input_hw: tuple[int, int] = (224, 224),
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 rgb: bool = True, positive_index: int = 1, threshold: float = 0.5,
                 output: Literal["softmax", "sigmoid", "probability"] = "softmax",
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelNotFoundError(f"bin classifier model file not found: {path}")
        if not 0.0 <= threshold <= 1.0:
            raise SceneDetectorError(f"threshold must be in [0, 1], got {threshold}")
        if output not in ("softmax", "sigmoid", "probability"):
            raise SceneDetectorError(f"output must be softmax/sigmoid/probability, got {output!r}")
        self._mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, np.float32).reshape(3, 1, 1)
        if self._mean.size != 3 or not np.all(self._std > 0):
            raise SceneDetectorError(f"mean/std must be 3 numbers each, std > 0; got {mean}, {std}")
        from detectors.onnx import load_session  # noqa: PLC0415 - ONNX Runtime only when configured

        self._session = load_session(path, providers)
        inp = self._session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise DetectorError(f"{path}: expected input (N, 3, H, W), got {inp.shape}")
        self._input_name = inp.name
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.rgb, self.positive_index, self.threshold, self.output = rgb, positive_index, threshold, output
        log.info("bin classifier %s loaded: input %dx%d, output %s", path.name, self.input_hw[1],
                 self.input_hw[0], output)

    def predict(self, crop_bgr: np.ndarray) -> float:
        """Probability 0..1 that the crop shows an overflowing bin.

        Args:
            crop_bgr: `(h, w, 3)` uint8 BGR crop of the bin and the ground around it.

        Raises:
            ShapeError: When the crop is not `(h, w, 3)` uint8 or is empty.
            DetectorError: When inference fails or ``positive_index`` is beyond the output.
        """
        check_array("crop_bgr", crop_bgr, 3, np.uint8, (None, None, 3))
        if crop_bgr.shape[0] == 0 or crop_bgr.shape[1] == 0:
            raise DetectorError(f"empty crop of shape {crop_bgr.shape}")
        h, w = self.input_hw
        image = cv2.resize(crop_bgr, (w, h), interpolation=cv2.INTER_AREA)
        if self.rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        blob = ((image.transpose(2, 0, 1).astype(np.float32) / 255.0 - self._mean) / self._std)[None]
        try:
            scores = np.asarray(self._session.run(None, {self._input_name: blob})[0], np.float64).reshape(-1)
        except Exception as exc:  # onnxruntime's own exception types
            raise DetectorError(f"bin classifier inference failed: {exc}") from exc
        if not 0 <= self.positive_index < scores.size:
            raise DetectorError(f"positive_index {self.positive_index} beyond {scores.size} outputs")
        if self.output == "softmax":
            e = np.exp(scores - scores.max())
            prob = e[self.positive_index] / e.sum()
        elif self.output == "sigmoid":
            prob = 1.0 / (1.0 + math.exp(-scores[self.positive_index]))
        else:
            prob = scores[self.positive_index]
        return float(np.clip(prob, 0.0, 1.0))


@dataclass(slots=True, eq=False)
class _Candidate:
    reason: str
    box: np.ndarray  # (4,) float32 full-frame px
    onset_s: float
    counted_s: float = 0.0
    absent_s: float = 0.0
    share: float = 0.0  # last measured share differing from the clean reference
    area_px: float = 0.0  # last measured changed area, full-frame px
    confirmed: bool = False
    conf: float = 0.0
    retry_at_s: float = -math.inf
    last: str | None = None  # judgement of the previous frame: "present", "absent", "between", None


@dataclass(slots=True, eq=False)
class _Situation:
    situation_id: int
    reason: str
    start_time_s: float
    area_px: float


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


class BinOverflowDetector:
    """Overflowing, missing or knocked-over bin, for one bin of one camera (a ``SceneDetector``).

    Args:
        detector_id: Configured id, unique within the camera.
        bin_zone: The bin's body in the image; its ``zone_id`` is the event's zone.
        around_zone: The ground around the bin, or ``None`` to watch only the rim strip and the
            bin. Must use the same ``units`` as ``bin_zone``; it may include the bin zone.
        rim_line: `(2, 2)` float32 ``[[x1, y1], [x2, y2]]`` top edge of the bin's opening in the
            units of ``bin_zone`` (px, or fractions of width/height for ``"norm"``); ``None``
            takes the top edge of the bin zone's bounding box.
        config: Thresholds; defaults when ``None``.
        classifier: Optional site-trained classifier that confirms or rejects overflow
            candidates (see the module docstring).

    Raises:
        SceneDetectorError: When ``around_zone`` has other units than ``bin_zone`` or
            ``rim_line`` is not `(2, 2)` with two distinct points.
    """

    def __init__(self, detector_id: str, bin_zone: Zone, around_zone: Zone | None = None,
                 rim_line: np.ndarray | None = None, config: BinOverflowConfig | None = None,
                 classifier: BinClassifier | None = None) -> None:
        self.detector_id = detector_id
        self.zone_id = bin_zone.zone_id
        self.bin_zone, self.around_zone = bin_zone, around_zone
        self.config = config or BinOverflowConfig()
        self.classifier = classifier
        if around_zone is not None and around_zone.units != bin_zone.units:
            raise SceneDetectorError(f"around_zone {around_zone.zone_id!r} is in {around_zone.units!r}, "
                                     f"bin_zone {bin_zone.zone_id!r} in {bin_zone.units!r}: use one unit")
        pts = bin_zone.points
        if rim_line is None:
            rim = np.array([[pts[:, 0].min(), pts[:, 1].min()], [pts[:, 0].max(), pts[:, 1].min()]], np.float32)
        else:
            rim = np.asarray(rim_line, np.float32)
            if rim.shape != (2, 2) or not np.isfinite(rim).all() or np.allclose(rim[0], rim[1]):
                raise SceneDetectorError(f"rim_line must be (2, 2) with two distinct points, got {rim.tolist()}")
            rim = rim[np.argsort(rim[:, 0])]
        lift = np.float32([0.0, self.config.above_rim_share * float(np.ptp(pts[:, 1]))])
        #: `(4, 2)` strip above the rim line, bin-zone units.
        self.above_points = np.stack([rim[0], rim[1], rim[1] - lift, rim[0] - lift]).astype(np.float32)
        everything = [pts, self.above_points] + ([around_zone.points] if around_zone is not None else [])
        hull = cv2.convexHull(np.concatenate(everything).astype(np.float32)).reshape(-1, 2)
        self._watched = Zone(bin_zone.zone_id, hull, bin_zone.units, bin_zone.name)
        self._scene = ZoneSceneChange(self._watched, self.config.scene)
        self._rasters_key: tuple | None = None
        self._candidates: list[_Candidate] = []
        self._situation: _Situation | None = None
        self._next_id = 0
        self._last_s: float | None = None

    # -- geometry -------------------------------------------------------------------------------
    def _rasters(self, state: SceneChangeState, resolution_wh: tuple[int, int]) -> None:
        """Bin, rim-strip and around rasters on the scene-change small grid (cached)."""
        key = (tuple(int(v) for v in state.roi_xyxy), state.scale, resolution_wh)
        if key == self._rasters_key:
            return
        shape = state.zone_small.shape
        origin = np.asarray(state.roi_xyxy[:2], np.float64)

        def raster(points: np.ndarray) -> np.ndarray:
            poly = Zone("_", points, self.bin_zone.units).polygon_px(resolution_wh).astype(np.float64)
            out = np.zeros(shape, np.uint8)
            cv2.fillPoly(out, [np.round((poly - origin) * state.scale).astype(np.int32)], 1)
            return out.astype(bool) & state.zone_small

        self._bin = raster(self.bin_zone.points)
        self._above = raster(self.above_points) & ~self._bin
        around = raster(self.around_zone.points) if self.around_zone is not None else np.zeros(shape, bool)
        self._around = around & ~self._bin & ~self._above
        self._ground = self._above | self._around
        self._bin_xyxy = self._box_of(self.bin_zone.points, resolution_wh)
        self._watched_xyxy = self._box_of(self._watched.points, resolution_wh)
        self._area_factor = 1.0 / state.scale ** 2  # small px -> full-frame px
        self._rasters_key = key

    def _box_of(self, points: np.ndarray, resolution_wh: tuple[int, int]) -> np.ndarray:
        poly = Zone("_", points, self.bin_zone.units).polygon_px(resolution_wh)
        w, h = resolution_wh
        return np.array([max(poly[:, 0].min(), 0), max(poly[:, 1].min(), 0),
                         min(poly[:, 0].max(), w), min(poly[:, 1].max(), h)], np.float32)

    @staticmethod
    def _window(state: SceneChangeState, box: np.ndarray) -> tuple[slice, slice]:
        h, w = state.zone_small.shape
        x1, y1, x2, y2 = state.to_small(box)
        x1, y1 = min(max(int(math.floor(x1)), 0), w), min(max(int(math.floor(y1)), 0), h)
        x2, y2 = min(max(int(math.ceil(x2)), x1 + 1), w), min(max(int(math.ceil(y2)), y1 + 1), h)
        return slice(y1, y2), slice(x1, x2)

    def _measure(self, state: SceneChangeState, area: np.ndarray, box: np.ndarray,
                 ) -> tuple[float | None, float]:
        """Share of the visible ``area`` pixels in ``box`` that differ from the clean reference
        (``None`` when too little is visible) and their changed area in full-frame px."""
        ys, xs = self._window(state, box)
        region = area[ys, xs]
        visible = region & ~state.masked_small[ys, xs]
        changed = int((state.changed_mask_clean[ys, xs] & visible).sum())
        n_region, n_visible = int(region.sum()), int(visible.sum())
        if n_region == 0 or n_visible < self.config.min_visible_share * n_region:
            return None, changed * self._area_factor
        return changed / n_visible, changed * self._area_factor

    # -- per frame ------------------------------------------------------------------------------
    def update(self, frame: Frame, people: Detections, vehicles: Detections) -> list[SceneEvent]:
        """Feed one analysed frame; see :class:`detectors.scene.SceneDetector`.

        Args:
            frame: The frame; ``time_s`` drives every timer.
            people: Tracked person detections, full-frame px (masked out, and pause the timers
                while they overlap the watched area).
            vehicles: Other moving things to mask out, full-frame px (same role).

        Returns:
            ``"started"``/``"updated"``/``"ended"`` events of this frame, usually none.

        Raises:
            SceneChangeError: When the watched area covers too little of the frame.
        """
        cfg, now = self.config, float(frame.time_s)
        mask = np.concatenate([people.xyxy, vehicles.xyxy]).astype(np.float32).reshape(-1, 4)
        hold = self._situation is not None or bool(self._candidates)
        state = self._scene.update(frame, mask, hold_reference=hold)
        dt = 0.0 if self._last_s is None else max(now - self._last_s, 0.0)
        self._last_s = now
        if state.learning:
            return []
        self._rasters(state, frame.resolution_wh)
        occupied = any(_boxes_overlap(box, self._watched_xyxy) for box in mask)

        self._add_overflow_candidates(state, now)
        self._add_missing_candidate(state, now)
        for cand in list(self._candidates):
            self._tick(cand, state, now, dt, occupied)
        return self._situation_events(frame, state, now)

    def _add_overflow_candidates(self, state: SceneChangeState, now: float) -> None:
        """New candidates from confirmed static regions in the rim strip or around the bin."""
        for box, since_s in zip(state.static_boxes, state.static_since_s):
            match = next((c for c in self._candidates
                          if c.reason != "bin_missing" and _boxes_overlap(c.box, box)), None)
            if match is not None:
                if not match.confirmed:  # a pile growing before the alert: follow its outline
                    match.box = np.concatenate([np.minimum(match.box[:2], box[:2]),
                                                np.maximum(match.box[2:], box[2:])]).astype(np.float32)
                continue
            reason = self._reason(state, box)
            if reason is None:
                continue
            share, area_px = self._measure(state, self._ground, box)
            if share is None or share < self.config.present_share:
                continue  # e.g. the scene returning to clean after an absorbed object left
            # the region has been static (and so mostly unoccluded) for since_s already
            cand = _Candidate(reason, np.asarray(box, np.float32).copy(), onset_s=now - float(since_s),
                              counted_s=float(since_s), share=share, area_px=area_px)
            self._candidates.append(cand)
            log.debug("bin %s: %s candidate at %s, t=%.1f", self.detector_id, reason, box.tolist(), now)

    def _reason(self, state: SceneChangeState, box: np.ndarray) -> str | None:
        ys, xs = self._window(state, box)
        changed = state.changed_mask_clean[ys, xs]
        if (changed & self._above[ys, xs]).sum() * self._area_factor >= self.config.min_area_px:
            return "above_rim"
        if (changed & self._around[ys, xs]).sum() * self._area_factor >= self.config.min_area_px:
            return "around_bin"
        return None

    def _add_missing_candidate(self, state: SceneChangeState, now: float) -> None:
        if any(c.reason == "bin_missing" for c in self._candidates):
            return
        share, area_px = self._measure(state, self._bin, self._bin_xyxy)
        if share is not None and share >= self.config.missing_share:
            self._candidates.append(_Candidate("bin_missing", self._bin_xyxy.copy(), onset_s=now,
                                               share=share, area_px=area_px))
            log.debug("bin %s: bin_missing candidate (share %.2f), t=%.1f", self.detector_id, share, now)

    def _tick(self, cand: _Candidate, state: SceneChangeState, now: float, dt: float, occupied: bool) -> None:
        """Advance one candidate's timers; confirm or drop it."""
        cfg = self.config
        if cand.reason == "bin_missing":
            share, area_px = self._measure(state, self._bin, cand.box)
            enter = cfg.missing_share
        else:
            share, area_px = self._measure(state, self._ground, cand.box)
            reason = self._reason(state, cand.box)
            if reason is not None and share is not None:
                cand.reason = reason
            enter = cfg.present_share
        if share is None or occupied:
            cand.last = None  # nothing to judge, or people at the bin: timers pause
            return
        cand.share, cand.area_px = share, area_px
        # An interval between two frames counts only when both ends agree (no pause between).
        judged = "present" if share >= enter else "absent" if share < cfg.clear_ratio * enter else "between"
        if judged == "present" and cand.last == "present":
            cand.counted_s += dt
        if judged == "absent" and cand.last == "absent":
            cand.absent_s += dt
            if cand.absent_s >= cfg.clear_s:
                self._candidates.remove(cand)
                log.debug("bin %s: %s candidate gone, t=%.1f", self.detector_id, cand.reason, now)
                return
        if judged == "present":
            cand.absent_s = 0.0
        cand.last = judged
        if not cand.confirmed and cand.counted_s >= cfg.persistence_s:
            self._confirm(cand, state, now)

    def _confirm(self, cand: _Candidate, state: SceneChangeState, now: float) -> None:
        if self.classifier is None or cand.reason == "bin_missing":
            cand.confirmed, cand.conf = True, float(np.clip(cand.share, 0.0, 1.0))
            return
        if now < cand.retry_at_s:
            return
        x1, y1, x2, y2 = (int(round(v)) for v in self._watched_xyxy)
        prob = float(self.classifier.predict(state.image[y1:y2, x1:x2]))
        if prob >= self.classifier.threshold:
            cand.confirmed, cand.conf = True, prob
        else:
            cand.retry_at_s = now + self.config.classifier_retry_s
            log.info("bin %s: classifier rejected %s candidate (p=%.2f < %.2f), t=%.1f",
                     self.detector_id, cand.reason, prob, self.classifier.threshold, now)

    # -- situation ------------------------------------------------------------------------------
    def _situation_events(self, frame: Frame, state: SceneChangeState, now: float) -> list[SceneEvent]:
        confirmed = [c for c in self._candidates if c.confirmed]
        sit = self._situation
        if not confirmed:
            if sit is None:
                return []
            self._situation = None
            return [self._event("ended", sit, frame, state, [], now)]
        reason = min((c.reason for c in confirmed), key=REASONS.index)
        area = float(sum(c.area_px for c in confirmed))
        if sit is None:
            sit = _Situation(self._next_id, reason, min(c.onset_s for c in confirmed), area)
            self._next_id += 1
            self._situation = sit
            return [self._event("started", sit, frame, state, confirmed, now)]
        if reason != sit.reason or abs(area - sit.area_px) > self.config.update_share * max(sit.area_px, 1.0):
            sit.reason, sit.area_px = reason, area
            return [self._event("updated", sit, frame, state, confirmed, now)]
        return []

    def _event(self, kind: str, sit: _Situation, frame: Frame | None, state: SceneChangeState | None,
               confirmed: list[_Candidate], now: float) -> SceneEvent:
        xyxy = np.array([c.box for c in confirmed], np.float32).reshape(-1, 4)
        area = np.array([c.area_px for c in confirmed], np.float32)
        reference = current = None
        covered = 0.0
        if state is not None and len(confirmed):
            union = np.concatenate([xyxy[:, :2].min(0), xyxy[:, 2:].max(0)])
            reference, current = state.crop(union)
            watched = self._ground | self._bin
            visible = watched & ~state.masked_small
            covered = float((state.changed_mask_clean & visible).sum() / max(int(visible.sum()), 1))
        conf = max((c.conf for c in confirmed if c.reason == sit.reason), default=1.0)
        log.info("bin %s camera %s t=%.1f: bin_overflow %s (%s), %d region(s)", self.detector_id,
                 frame.camera_id if frame is not None else "?", now, kind, sit.reason, len(xyxy))
        return SceneEvent(
            kind=kind, alert_type=ALERT_TYPE, detector_id=self.detector_id, situation_id=sit.situation_id,
            zone_id=self.zone_id, reason=sit.reason, start_time_s=sit.start_time_s, time_s=now,
            wall_time_s=frame.wall_time_s if frame is not None else 0.0, xyxy=xyxy, area_px=area,
            covered_share=float(np.clip(covered, 0.0, 1.0)), severity=float(np.clip(covered, 0.0, 1.0)),
            conf=float(np.clip(conf, 0.0, 1.0)), reference_bgr=reference, current_bgr=current, frame=frame,
            details={"candidates": [{"reason": c.reason, "share": round(c.share, 3)} for c in confirmed]})

    def flush(self, frame: Frame | None) -> list[SceneEvent]:
        """End the open situation (end of stream or shutdown) and forget all candidates."""
        sit, self._situation = self._situation, None
        self._candidates = []
        if sit is None:
            return []
        now = float(frame.time_s) if frame is not None else (self._last_s or 0.0)
        return [self._event("ended", sit, frame, None, [], now)]

    @property
    def learning(self) -> bool:
        """Whether the clean reference is still being learned (nothing is reported until then)."""
        return self._scene.learning

    def save_state(self, directory: Path) -> None:
        """Persist the learned clean reference as ``directory / f"{detector_id}-{zone_id}.npz"``.

        Raises:
            OSError: When the file cannot be written.
        """
        self._scene.save(Path(directory) / f"{self.detector_id}-{self.zone_id}.npz")

    def load_state(self, directory: Path) -> bool:
        """Restore a reference saved by :meth:`save_state`; ``False`` when none fits."""
        return self._scene.load(Path(directory) / f"{self.detector_id}-{self.zone_id}.npz")
