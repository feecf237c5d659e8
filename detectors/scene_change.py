"""Per-zone scene change: newly static regions from a long-term and a short-term background.

The shared mechanism under the bin-overflow, littering/dumping and flooding detectors. It is the
dual-background idea of F. Porikli, Y. Ivanov and T. Haga, "Robust abandoned object detection
using dual foregrounds", EURASIP Journal on Advances in Signal Processing, 2008, article 197875:
a pixel that is foreground to a slowly adapting (long-term) background but already background to
a fast adapting (short-term) one shows something that *arrived and then stopped* - a dumped bag,
rubbish beside a bin, standing water. Moving things are foreground to both models; the empty
scene is background to both.

Simplifications and additions to the paper, each documented where it happens:

- The models are exponential running averages of the colour image (``cv2.accumulateWeighted``)
  instead of the paper's per-pixel Bayesian layer models; the adaptation rates are given as time
  constants in seconds of *stream* time and converted per frame from the actual frame interval
  (``alpha = 1 - exp(-dt / tau)``), so results do not depend on the analysis frame rate.
- People and vehicles found by the object detector are masked out: their pixels are learned into
  neither model and never reported (the paper relies on the short-term model alone).
- Gradual light change: each frame's grey level inside the zone is matched in mean and standard
  deviation to the long-term model over the unmasked, non-static zone pixels before differencing;
  pixels clipped by the camera (``SATURATED``) cannot be normalised and are never reported.
- Camera shake: a global translation between the frame and the long-term model is estimated with
  ``cv2.phaseCorrelate`` (Kuglin & Hines phase correlation) and compensated up to a maximum.
- Persistence with hysteresis: static regions are tracked frame to frame by box IoU; a region is
  reported once it has been static for ``persistence_s`` and forgotten only after it has been
  absent for ``clear_s``.
- A **clean reference** per zone (what operators see as "before"): after a learning period of
  ``learn_s`` it is the per-pixel temporal median of :data:`LEARN_SAMPLES` frames sampled over
  that period with people masked out (the classic median background, e.g. Cucchiara et al.,
  "Detecting moving objects, ghosts and shadows in video streams", IEEE TPAMI 2003), which
  also restarts the long-term model without ghosts of people the detector missed; later it is
  a copy of the long-term model, the copy is refreshed whenever the zone has been
  free of static candidates for another ``learn_s`` and the caller holds no open situation
  (``hold_reference``), so rubbish the long-term model slowly absorbs never becomes "clean".
  Differences to the clean reference are computed after a robust grey gain/offset fit (two
  passes, inliers only), so light that changed since the reference was taken is not "change".
  Nothing is reported while learning. Long-term and clean models are saved to disk
  (:meth:`ZoneSceneChange.save`) and restored after a restart (:meth:`ZoneSceneChange.load`).
- While a region is building up its persistence time it is excluded from long-term learning;
  otherwise the long-term model would slowly absorb a dumped object before its timer ends (with a
  long time constant the effect is small, but it grows with the persistence time). Once confirmed,
  learning resumes, so a permanent change is eventually absorbed and the zone returns to "clean".

All work happens on a downscaled crop around the zone (at most ``max_roi_width_px`` wide); boxes
and masks are reported in full-frame pixels.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.zones import Zone
from ingest.errors import BaqylauError
from ingest.frame import Frame, check_array

log = logging.getLogger(__name__)

#: Minimum IoU between a region's box in consecutive frames for it to count as the same region.
#: Lower values keep a region's timer through changes of its outline (partial occlusion, a pile
#: growing), higher values keep two adjacent objects apart.
TRACK_IOU = 0.3

#: Grey level (any channel, 0..255) at or above which a pixel counts as clipped by the camera.
#: Clipped pixels carry no scene information (a 1.3x brighter sky saturates a white sheet that
#: was 200), so they are not reported - unless their background is darker by more than
#: ``fg_threshold`` and they cover at most :data:`NEW_SATURATION_SHARE` of the zone: a white bag
#: on asphalt, not the scene brightening past what the camera records.
SATURATED = 245

#: Largest share of a zone that may newly clip in one frame and still count as objects; more is
#: taken as a light change. Higher finds larger white objects, lower tolerates smaller bursts.
NEW_SATURATION_SHARE = 0.05

#: Fewest usable zone pixels (downscaled) for light normalisation; below it frames are used as is.
MIN_NORM_PIXELS = 100

#: Share of the zone that must have been seen without people/vehicles in front before learning
#: can end; lower ends learning sooner on busy scenes but leaves holes filled by the first frame.
MIN_SEEN_SHARE = 0.9

#: Frames kept during the learning period for the temporal-median background (one every
#: ``learn_s / LEARN_SAMPLES`` s). More rejects people who linger longer, at more memory
#: (each sample is the zone crop, at most ``max_roi_width_px`` wide, uint8) while learning.
LEARN_SAMPLES = 12

#: Version of the on-disk model format written by :meth:`ZoneSceneChange.save`.
STATE_VERSION = 1


class SceneChangeError(BaqylauError, ValueError):
    """A scene-change configuration or input is invalid."""


@dataclass(frozen=True, slots=True)
class SceneChangeConfig:
    """Thresholds of :class:`ZoneSceneChange`.

    Attributes:
        long_term_tau_s: Time constant of the long-term background, seconds of stream time. Longer
            keeps a dumped object foreground for longer and tolerates slower persistence timers,
            but a permanent scene change (a parked car that left) stays "static" for longer.
        short_term_tau_s: Time constant of the short-term background, seconds. Shorter makes a new
            object "static" sooner (alert delay is about ``1.5 * short_term_tau_s`` plus
            ``persistence_s``), but also absorbs unmasked people who stand still for a moment.
        fg_threshold: Largest per-channel absolute difference (grey levels, 0..255) still counted
            as background. Lower finds low-contrast objects (grey bag on grey asphalt) but lets
            compression noise, shadows and residual light change through.
        min_area_px: Smallest static region, in full-frame pixels, that is tracked and reported.
            Lower finds smaller litter but reports more noise blobs.
        persistence_s: How long a region must stay static before it is reported. Longer ignores
            things put down briefly (a bag while someone ties a shoe) at the cost of a later alert.
        clear_s: How long a reported region may be missing (occluded by a person, a noisy frame)
            before it is forgotten and its timer restarts. Longer rides out occlusions, shorter
            reacts faster when an object is really taken away.
        normalise_light: Match each frame's zone grey mean/std to the long-term model before
            differencing. Needed outdoors (dawn, dusk, clouds); off only for fixed lighting.
        max_shift_px: Largest camera shift (full-frame pixels) that is estimated and compensated.
            Larger tolerates stronger shake but a wrong correlation peak can then misalign frames.
        mask_margin_px: Margin added around every person/vehicle box before masking, full-frame
            pixels. Larger hides loose limbs and shadows from the models but also hides an object
            a person has just put down next to themselves.
        max_roi_width_px: The zone crop is downscaled to at most this width for speed. Smaller is
            faster but loses small objects (``min_area_px`` must still cover a few pixels).
        learn_s: Learning period, stream seconds: nothing is reported until the zone has been
            watched this long (and 90 % of it seen without people in front), and the clean
            reference is refreshed after every further quiet period of this length. Longer
            gives a cleaner reference on busy scenes, shorter starts alerting sooner after the
            first start (restarts resume from the saved reference, see ``save``/``load``).

    Raises:
        SceneChangeError: When a value is out of its bounds.
    """

    long_term_tau_s: float = 300.0
    short_term_tau_s: float = 3.0
    fg_threshold: float = 30.0
    min_area_px: float = 150.0
    persistence_s: float = 30.0
    clear_s: float = 3.0
    normalise_light: bool = True
    max_shift_px: float = 8.0
    mask_margin_px: float = 6.0
    max_roi_width_px: int = 320
    learn_s: float = 60.0

    def __post_init__(self) -> None:
        positive = ("long_term_tau_s", "short_term_tau_s", "fg_threshold", "min_area_px", "max_roi_width_px")
        for name in positive:
            if not getattr(self, name) > 0:
                raise SceneChangeError(f"SceneChangeConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("persistence_s", "clear_s", "max_shift_px", "mask_margin_px", "learn_s"):
            if not getattr(self, name) >= 0:
                raise SceneChangeError(f"SceneChangeConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.short_term_tau_s >= self.long_term_tau_s:
            raise SceneChangeError(
                f"short_term_tau_s ({self.short_term_tau_s}) must be < long_term_tau_s ({self.long_term_tau_s})")


@dataclass(frozen=True, slots=True)
class SceneChangeState:
    """Result of one :meth:`ZoneSceneChange.update`.

    "Small" arrays are on the downscaled grid of the zone crop: small px = (full px - roi
    origin) * ``scale``; convert boxes with :meth:`to_small` and :meth:`to_full`.

    Attributes:
        zone_id: The zone this state belongs to.
        time_s: Stream time of the frame, seconds.
        static_mask: `(H, W)` bool, full frame: pixels inside the zone that are foreground to the
            long-term and background to the short-term model (newly static), people masked out.
            Raw, before the persistence timer; all ``False`` while learning.
        static_boxes: `(K, 4)` float32 ``x1, y1, x2, y2`` full-frame pixels of static regions that
            have persisted for at least ``persistence_s`` (kept for up to ``clear_s`` while unseen).
        static_since_s: `(K,)` float32 seconds each region of ``static_boxes`` has been static.
        covered_share: Fraction (0..1) of the zone's area covered by the reported static regions.
        shift_px: `(2,)` float32 ``dx, dy`` camera shift compensated in this frame, full-frame px.
        reference_bgr: `(h, w, 3)` uint8 long-term background of the zone crop (small grid).
        roi_xyxy: `(4,)` int ``x1, y1, x2, y2`` full-frame pixels of that crop.
        scale: Downscale factor (small px = full px * scale).
        image: `(H, W, 3)` uint8 BGR, the analysed frame (not copied; frames are immutable).
        learning: ``True`` during the learning period (nothing is reported).
        clean_bgr: `(h, w, 3)` uint8 clean reference (small grid), light-matched to this frame's
            ``current_small``; ``None`` while learning.
        current_small: `(h, w, 3)` uint8 this frame's zone crop on the small grid, shift-compensated
            and light-normalised to the long-term model.
        zone_small: `(h, w)` bool zone raster on the small grid.
        masked_small: `(h, w)` bool pixels hidden by people/vehicles (plus margin) or never seen.
        changed_mask_clean: `(h, w)` bool zone pixels, not masked, whose largest channel
            difference to the clean reference exceeds ``fg_threshold``; all ``False`` while learning.
        new_regions: `(J, 4)` float32 full-frame px boxes of static candidate regions being
            timed (not yet confirmed), with ``new_regions_since_s`` `(J,)` float32 their onset
            (stream s). Lets detectors (littering) see an object at the moment it appears.
    """

    zone_id: str
    time_s: float
    static_mask: np.ndarray
    static_boxes: np.ndarray
    static_since_s: np.ndarray
    covered_share: float
    shift_px: np.ndarray
    reference_bgr: np.ndarray
    roi_xyxy: np.ndarray
    scale: float
    image: np.ndarray = field(repr=False)
    learning: bool = False
    clean_bgr: np.ndarray | None = field(default=None, repr=False)
    current_small: np.ndarray | None = field(default=None, repr=False)
    zone_small: np.ndarray | None = field(default=None, repr=False)
    masked_small: np.ndarray | None = field(default=None, repr=False)
    changed_mask_clean: np.ndarray | None = field(default=None, repr=False)
    new_regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    new_regions_since_s: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def to_small(self, box_xyxy: np.ndarray) -> np.ndarray:
        """Full-frame px boxes `(..., 4)` to small-grid px boxes (float32, not clipped)."""
        box = np.asarray(box_xyxy, np.float32)
        origin = np.array([self.roi_xyxy[0], self.roi_xyxy[1]] * 2, np.float32)
        return (box - origin) * np.float32(self.scale)

    def to_full(self, box_small: np.ndarray) -> np.ndarray:
        """Small-grid px boxes `(..., 4)` to full-frame px boxes (float32)."""
        box = np.asarray(box_small, np.float32)
        origin = np.array([self.roi_xyxy[0], self.roi_xyxy[1]] * 2, np.float32)
        return box / np.float32(self.scale) + origin

    def _window(self, box_xyxy: np.ndarray | None) -> tuple[slice, slice]:
        h, w = self.zone_small.shape if self.zone_small is not None else self.reference_bgr.shape[:2]
        if box_xyxy is None:
            return slice(0, h), slice(0, w)
        x1, y1, x2, y2 = self.to_small(np.asarray(box_xyxy, np.float32).reshape(4))
        x1, y1 = min(max(int(math.floor(x1)), 0), w), min(max(int(math.floor(y1)), 0), h)
        x2, y2 = min(max(int(math.ceil(x2)), x1 + 1), w), min(max(int(math.ceil(y2)), y1 + 1), h)
        return slice(y1, y2), slice(x1, x2)

    def changed_to_clean(self, box_xyxy: np.ndarray | None = None) -> float:
        """Share 0..1 of the visible zone pixels (inside ``box_xyxy``, full-frame px, when given)
        that differ from the clean reference (``changed_mask_clean``).

        Returns 0.0 while learning and when no zone pixel of the box is visible.
        """
        if self.changed_mask_clean is None or self.zone_small is None or self.masked_small is None:
            return 0.0
        ys, xs = self._window(box_xyxy)
        visible = self.zone_small[ys, xs] & ~self.masked_small[ys, xs]
        n = int(visible.sum())
        return float(self.changed_mask_clean[ys, xs][visible].sum() / n) if n else 0.0

    def visible_share(self, box_xyxy: np.ndarray | None = None) -> float:
        """Share 0..1 of the zone pixels (inside ``box_xyxy`` when given) not hidden by people."""
        if self.zone_small is None or self.masked_small is None:
            return 0.0
        ys, xs = self._window(box_xyxy)
        zone = self.zone_small[ys, xs]
        n = int(zone.sum())
        return float((zone & ~self.masked_small[ys, xs]).sum() / n) if n else 0.0

    def crop(self, box_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Before/after evidence for a box: the clean reference and the current frame.

        Args:
            box_xyxy: `(4,)` float ``x1, y1, x2, y2`` full-frame pixels, e.g. a row of
                ``static_boxes``; clipped to the zone crop.

        Returns:
            ``(reference, current)``, both `(h, w, 3)` uint8 BGR of the same size. The reference
            is the clean reference (the long-term model while learning), upsampled from the
            small grid, so it is blurrier than the current crop.

        Raises:
            SceneChangeError: When the box does not overlap the zone crop.
        """
        rx1, ry1, rx2, ry2 = (int(v) for v in self.roi_xyxy)
        x1, y1, x2, y2 = np.asarray(box_xyxy, dtype=np.float64).reshape(4)
        x1, y1 = max(int(math.floor(x1)), rx1), max(int(math.floor(y1)), ry1)
        x2, y2 = min(int(math.ceil(x2)), rx2), min(int(math.ceil(y2)), ry2)
        if x2 <= x1 or y2 <= y1:
            raise SceneChangeError(f"box {box_xyxy} does not overlap the zone crop {self.roi_xyxy}")
        current = self.image[y1:y2, x1:x2].copy()
        s = self.scale
        sx1, sy1 = int((x1 - rx1) * s), int((y1 - ry1) * s)
        sx2 = max(int(math.ceil((x2 - rx1) * s)), sx1 + 1)
        sy2 = max(int(math.ceil((y2 - ry1) * s)), sy1 + 1)
        model = self.clean_bgr if self.clean_bgr is not None else self.reference_bgr
        reference = cv2.resize(model[sy1:sy2, sx1:sx2], (x2 - x1, y2 - y1),
                               interpolation=cv2.INTER_LINEAR)
        return reference, current


@dataclass(slots=True, eq=False)
class _Region:
    box: np.ndarray  # (4,) float32 small px
    first_s: float
    last_s: float


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _channel_max(image: np.ndarray) -> np.ndarray:
    """Largest of the 3 channels of `(h, w, 3)`; ``np.maximum`` twice is ~25x faster than
    ``.max(axis=2)`` on small contiguous float arrays."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def _absdiff_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel largest channel absolute difference of two `(h, w, 3)` float32 images."""
    return _channel_max(cv2.absdiff(a, b))


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _robust_gain_offset(src: np.ndarray, dst: np.ndarray, tolerance: float) -> tuple[float, float]:
    """Least-squares ``gain, offset`` with ``dst ~ gain * src + offset`` over grey levels, refit
    once on the pixels whose residual is within ``tolerance`` (so changed areas do not bias it).
    Gain is clipped to [1/3, 3]."""
    gain, offset = 1.0, 0.0
    keep = np.ones(src.shape, bool)
    for _ in range(2):
        x, y = src[keep], dst[keep]
        if x.size < MIN_NORM_PIXELS:
            break
        sx = float(x.std())
        gain = float(np.clip(y.std() / max(sx, 1e-3), 1 / 3, 3))
        offset = float(y.mean() - gain * x.mean())
        keep = np.abs(src * gain + offset - dst) <= tolerance
    return gain, offset


class ZoneSceneChange:
    """Dual-background static-change detector for one zone of one camera.

    State is per instance: use one per (camera, zone). The models are (re)initialised on the
    first frame and whenever the frame resolution changes (a saved state given to :meth:`load`
    is applied on the first frame whose resolution matches it).

    Args:
        zone: The zone; its polygon is rasterised at the first frame's resolution.
        config: Thresholds; defaults when ``None``.
    """

    def __init__(self, zone: Zone, config: SceneChangeConfig | None = None) -> None:
        self.zone = zone
        self.config = config or SceneChangeConfig()
        self._resolution_wh: tuple[int, int] | None = None
        self._pending: dict[str, np.ndarray] | None = None

    @property
    def learning(self) -> bool:
        """Whether the zone is still in its learning period (``True`` before the first frame)."""
        return self._resolution_wh is None or getattr(self, "_clean", None) is None

    # -- set-up -------------------------------------------------------------------------------
    def _reset(self, frame: Frame) -> None:
        w, h = frame.resolution_wh
        poly = self.zone.polygon_px((w, h)).astype(np.float64)
        pad = int(math.ceil(self.config.max_shift_px))
        x1 = max(int(math.floor(poly[:, 0].min())) - pad, 0)
        y1 = max(int(math.floor(poly[:, 1].min())) - pad, 0)
        x2 = min(int(math.ceil(poly[:, 0].max())) + pad + 1, w)
        y2 = min(int(math.ceil(poly[:, 1].max())) + pad + 1, h)
        if x2 - x1 < 8 or y2 - y1 < 8:
            raise SceneChangeError(f"zone {self.zone.zone_id!r} covers less than 8x8 px of a {w}x{h} frame")
        self._roi = np.array([x1, y1, x2, y2], dtype=np.int64)
        self._scale = min(1.0, self.config.max_roi_width_px / (x2 - x1))
        self._small_wh = (max(round((x2 - x1) * self._scale), 8), max(round((y2 - y1) * self._scale), 8))
        sw, sh = self._small_wh
        zone_mask = np.zeros((sh, sw), np.uint8)
        cv2.fillPoly(zone_mask, [np.round((poly - [x1, y1]) * self._scale).astype(np.int32)], 1)
        self._zone = zone_mask.astype(bool)
        self._zone_area = max(int(self._zone.sum()), 1)
        self._min_area = self.config.min_area_px * self._scale ** 2
        self._hann = cv2.createHanningWindow((sw, sh), cv2.CV_32F)
        self._long: np.ndarray | None = None
        self._short: np.ndarray | None = None
        self._clean: np.ndarray | None = None
        self._seen = np.zeros((sh, sw), bool)
        self._candidate = np.zeros((sh, sw), bool)
        self._regions: list[_Region] = []
        self._last_s: float | None = None
        self._observed_s = 0.0  # stream seconds watched (learning progress)
        self._samples: list[tuple[np.ndarray, np.ndarray]] = []  # learning: (small uint8, masked)
        self._next_sample_s = 0.0
        self._quiet_s = 0.0  # stream seconds without static candidates since the last clean refresh
        self._resolution_wh = (w, h)
        log.debug("zone %s camera %s: roi %s scale %.3f", self.zone.zone_id, frame.camera_id,
                  self._roi.tolist(), self._scale)
        if self._pending is not None:
            self._apply_pending(frame.camera_id)

    def _people_mask(self, mask_xyxy: np.ndarray) -> np.ndarray:
        sw, sh = self._small_wh
        out = np.zeros((sh, sw), np.uint8)
        m = self.config.mask_margin_px
        for x1, y1, x2, y2 in mask_xyxy.astype(np.float64):
            p1 = ((x1 - m - self._roi[0]) * self._scale, (y1 - m - self._roi[1]) * self._scale)
            p2 = ((x2 + m - self._roi[0]) * self._scale, (y2 + m - self._roi[1]) * self._scale)
            cv2.rectangle(out, (int(math.floor(p1[0])), int(math.floor(p1[1]))),
                          (int(math.ceil(p2[0])), int(math.ceil(p2[1]))), 1, thickness=-1)
        return out.astype(bool)

    # -- persistence ----------------------------------------------------------------------------
    def _fingerprint(self, resolution_wh: tuple[int, int]) -> int:
        """CRC32 of what the saved models depend on: zone polygon, resolution, grid, config."""
        cfg = self.config
        key = repr((self.zone.zone_id, self.zone.units, np.round(np.asarray(self.zone.points, np.float64), 4).tolist(),
                    tuple(resolution_wh), cfg.max_roi_width_px, cfg.max_shift_px, STATE_VERSION))
        return zlib.crc32(key.encode())

    def save(self, path: str | Path) -> bool:
        """Write the learned long-term and clean models to ``path`` (``.npz``, atomic rename).

        Nothing is written before the first frame or while learning (there is nothing worth
        keeping yet).

        Returns:
            Whether a file was written.

        Raises:
            OSError: When the directory cannot be created or the file cannot be written.
        """
        if self._resolution_wh is None or self._long is None or self._clean is None:
            return False
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(
                    fh, fingerprint=np.int64(self._fingerprint(self._resolution_wh)),
                    resolution_wh=np.array(self._resolution_wh, np.int64),
                    long=self._long.astype(np.float32), clean=self._clean.astype(np.float32),
                    seen=self._seen, observed_s=np.float64(self._observed_s))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.debug("zone %s: models saved to %s", self.zone.zone_id, path)
        return True

    def load(self, path: str | Path) -> bool:
        """Read models written by :meth:`save`; they are applied on the first frame whose
        resolution matches (a restart then resumes without relearning).

        Returns:
            ``False`` (and a log line) when the file is missing, unreadable or was saved for
            another zone polygon, resolution or grid; the zone then learns afresh.
        """
        path = Path(path)
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as data:
                pending = {k: data[k] for k in data.files}
            resolution = tuple(int(v) for v in pending["resolution_wh"])
            ok = int(pending["fingerprint"]) == self._fingerprint(resolution)  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, zlib.error) as exc:
            log.warning("zone %s: saved models %s unreadable, learning afresh: %s", self.zone.zone_id, path, exc)
            return False
        if not ok:
            log.info("zone %s: saved models %s are for another zone or resolution, learning afresh",
                     self.zone.zone_id, path)
            return False
        self._pending = pending
        self._resolution_wh = None  # re-initialise (and apply) on the next frame
        return True

    def _apply_pending(self, camera_id: str) -> None:
        pending, self._pending = self._pending, None
        sw, sh = self._small_wh
        if (tuple(int(v) for v in pending["resolution_wh"]) != self._resolution_wh
                or pending["long"].shape != (sh, sw, 3)):
            log.info("zone %s camera %s: saved models do not fit %s, learning afresh",
                     self.zone.zone_id, camera_id, self._resolution_wh)
            return
        self._long = pending["long"].astype(np.float32)
        self._short = self._long.copy()
        self._clean = pending["clean"].astype(np.float32)
        self._seen = pending["seen"].astype(bool)
        self._observed_s = float(pending["observed_s"])
        log.info("zone %s camera %s: clean reference restored (learned over %.0f s)",
                 self.zone.zone_id, camera_id, self._observed_s)

    # -- per frame ----------------------------------------------------------------------------
    def update(self, frame: Frame, mask_xyxy: np.ndarray, hold_reference: bool = False) -> SceneChangeState:
        """Feed one frame and return the zone's static regions.

        Args:
            frame: The decoded frame; ``time_s`` drives the adaptation and the timers.
            mask_xyxy: `(M, 4)` float32 ``x1, y1, x2, y2`` full-frame pixel boxes of people and
                vehicles (object detector output) to mask out; `(0, 4)` when there are none.
            hold_reference: ``True`` while the caller has an open situation in this zone: the
                clean reference is then not refreshed.

        Returns:
            The zone's :class:`SceneChangeState` for this frame.

        Raises:
            ShapeError: When ``mask_xyxy`` is not `(M, 4)` float32.
            SceneChangeError: When the zone covers too little of the frame.
        """
        check_array("mask_xyxy", mask_xyxy, 2, np.float32, (None, 4))
        if frame.resolution_wh != self._resolution_wh:
            self._reset(frame)
        cfg, now = self.config, float(frame.time_s)
        x1, y1, x2, y2 = (int(v) for v in self._roi)
        small = cv2.resize(frame.image[y1:y2, x1:x2], self._small_wh, interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        masked = self._people_mask(mask_xyxy)
        shift = np.zeros(2, np.float32)

        if self._long is None:
            self._long, self._short = small.copy(), small.copy()
            self._seen = ~masked
            self._last_s = now
            empty = np.zeros_like(self._zone)
            return self._state(frame, now, empty, shift, small, masked | ~self._seen, empty)
        if self._short is None or self._last_s is None:  # models restored from disk
            self._short = small.copy()
            self._last_s = now

        # (b) camera shake: translation of the frame against the long-term model.
        if cfg.max_shift_px > 0:
            g_bg = _grey(self._long)
            g_fr = _grey(small)
            hide = masked | ~self._seen
            g_fr[hide] = g_bg[hide]  # people do not move with the camera
            (dx, dy), _ = cv2.phaseCorrelate(g_bg, g_fr, self._hann)
            if math.hypot(dx, dy) > cfg.max_shift_px * self._scale:
                log.debug("zone %s camera %s t=%.2f: shift %.1f,%.1f px beyond max, not compensated",
                          self.zone.zone_id, frame.camera_id, now, dx / self._scale, dy / self._scale)
            elif math.hypot(dx, dy) >= 0.25:
                warp = np.float32([[1, 0, -dx], [0, 1, -dy]])
                small = cv2.warpAffine(small, warp, self._small_wh, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
                masked = cv2.warpAffine(masked.astype(np.uint8), warp, self._small_wh,
                                        flags=cv2.INTER_NEAREST, borderValue=1).astype(bool)
                shift[:] = (dx / self._scale, dy / self._scale)

        # Clipped pixels carry no usable level, except where the background is far from clipping
        # and few such pixels appear at once: then something bright arrived (a white bag on grey
        # ground) rather than the whole scene brightening past what the camera can record.
        saturated = _channel_max(small) >= SATURATED
        newly = saturated & (_channel_max(self._long) < SATURATED - cfg.fg_threshold)
        if int((newly & self._zone & ~masked).sum()) <= NEW_SATURATION_SHARE * self._zone_area:
            saturated &= ~newly
        # (a) gradual light change: match the zone's grey mean/std to the long-term model.
        usable = self._zone & self._seen & ~masked & ~self._candidate
        if cfg.normalise_light and int(usable.sum()) >= MIN_NORM_PIXELS:
            g_fr = _grey(small)[usable]
            g_bg = _grey(self._long)[usable]
            gain = float(np.clip(g_bg.std() / max(float(g_fr.std()), 1e-3), 1 / 3, 3))
            small = (small - float(g_fr.mean())) * gain + float(g_bg.mean())

        # Dual foreground (Porikli et al. 2008): foreground long-term, background short-term.
        fg_long = _absdiff_max(small, self._long) > cfg.fg_threshold
        fg_short = _absdiff_max(small, self._short) > cfg.fg_threshold
        cand = (fg_long & ~fg_short & self._zone & self._seen & ~masked & ~saturated).astype(np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        cand = cv2.morphologyEx(cv2.morphologyEx(cand, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
        self._candidate = cand.astype(bool)

        dt = max(now - self._last_s, 0.0)
        self._last_s = now
        if self._clean is None:
            # learning: no regions, no reports; the clean reference is taken once the zone has
            # been watched for learn_s and mostly seen without people in front.
            self._regions = []
            protect = np.zeros(cand.shape, bool)
            self._observed_s += dt
            if self._observed_s >= self._next_sample_s:
                self._samples.append((np.clip(small, 0, 255).astype(np.uint8), masked.copy()))
                self._samples = self._samples[-2 * LEARN_SAMPLES:]
                self._next_sample_s = self._observed_s + cfg.learn_s / LEARN_SAMPLES
            seen_share = float((self._seen & self._zone).sum() / self._zone_area)
            if self._observed_s >= cfg.learn_s and seen_share >= MIN_SEEN_SHARE:
                self._long = self._median_background()
                self._clean = self._long.copy()
                self._quiet_s = 0.0
                log.info("zone %s camera %s: clean reference learned over %.0f s", self.zone.zone_id,
                         frame.camera_id, self._observed_s)
        else:
            protect = self._track(cand, now)
            busy = hold_reference or bool(self._regions)
            self._quiet_s = 0.0 if busy else self._quiet_s + dt
            if self._quiet_s >= max(cfg.learn_s, 1e-9):
                self._clean = self._long.copy()
                self._quiet_s = 0.0
                log.debug("zone %s camera %s t=%.1f: clean reference refreshed", self.zone.zone_id,
                          frame.camera_id, now)

        # Learning: masked pixels never; long-term also not where something moves or builds up.
        new = ~masked & ~self._seen
        self._long[new] = small[new]
        self._short[new] = small[new]
        if self._clean is not None:
            self._clean[new] = small[new]
        self._seen |= ~masked
        learn_short = (~masked).astype(np.uint8)
        learn_long = (~masked & ~fg_short & ~protect).astype(np.uint8)
        cv2.accumulateWeighted(small, self._short, 1 - math.exp(-dt / cfg.short_term_tau_s), learn_short)
        cv2.accumulateWeighted(small, self._long, 1 - math.exp(-dt / cfg.long_term_tau_s), learn_long)
        hidden = masked | ~self._seen
        if self._clean is None:
            return self._state(frame, now, np.zeros_like(self._zone), shift, small, hidden, None)
        return self._state(frame, now, self._candidate, shift, small, hidden, saturated)

    def _median_background(self) -> np.ndarray:
        """Per-pixel temporal median of the learning samples, people masked out (NaN); pixels
        never seen unmasked keep the running long-term model. Robust to passers-by and to people
        the object detector missed, unless they stood still for half the learning period."""
        samples, self._samples = self._samples, []
        if len(samples) < 3:
            return self._long
        stack = np.stack([im for im, _ in samples]).astype(np.float32)
        stack[np.stack([m for _, m in samples])] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: handled below
            median = np.nanmedian(stack, axis=0)
        holes = np.isnan(median)
        median[holes] = self._long[holes]
        return median.astype(np.float32)

    def _track(self, cand: np.ndarray, now: float) -> np.ndarray:
        """Match connected static regions to known ones; return pixels to keep out of long-term."""
        count, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
        protect = np.zeros(cand.shape, bool)
        unmatched = list(self._regions)
        for label in range(1, count):
            x, y, w, h, area = stats[label]
            if area < self._min_area:
                continue
            box = np.array([x, y, x + w, y + h], np.float32)
            best = max(unmatched, key=lambda r: _iou(r.box, box), default=None)
            if best is not None and _iou(best.box, box) >= TRACK_IOU:
                unmatched.remove(best)
                best.box, best.last_s = box, now
            else:
                best = _Region(box, now, now)
                self._regions.append(best)
            if now - best.first_s < self.config.persistence_s:
                protect |= labels == label
        self._regions = [r for r in self._regions if now - r.last_s <= self.config.clear_s]
        return protect

    def _clean_matched(self, small: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
        """The clean reference light-matched to ``small`` (robust grey gain/offset fit)."""
        if self._clean is None:
            return None
        usable = self._zone & ~hidden
        if not self.config.normalise_light or int(usable.sum()) < MIN_NORM_PIXELS:
            return self._clean
        gain, offset = _robust_gain_offset(_grey(self._clean)[usable], _grey(small)[usable],
                                           2 * self.config.fg_threshold)
        return self._clean * gain + offset

    def _state(self, frame: Frame, now: float, cand: np.ndarray, shift: np.ndarray, small: np.ndarray,
               hidden: np.ndarray, saturated: np.ndarray | None) -> SceneChangeState:
        x1, y1, x2, y2 = (int(v) for v in self._roi)
        w, h = frame.resolution_wh
        learning = self._clean is None
        confirmed = [r for r in self._regions if now - r.first_s >= self.config.persistence_s]
        pending = [r for r in self._regions if now - r.first_s < self.config.persistence_s and r.last_s == now]
        boxes = np.array([r.box for r in confirmed], np.float32).reshape(-1, 4)
        covered = np.zeros(cand.shape, bool)
        for bx1, by1, bx2, by2 in boxes.astype(int):
            covered[by1:by2, bx1:bx2] = cand[by1:by2, bx1:bx2]
        full = np.zeros((h, w), bool)
        full[y1:y2, x1:x2] = cv2.resize(cand.astype(np.uint8), (x2 - x1, y2 - y1),
                                        interpolation=cv2.INTER_NEAREST).astype(bool)
        origin = np.array([x1, y1, x1, y1], np.float32)
        current = np.clip(small, 0, 255)
        clean = self._clean_matched(current, hidden)
        changed = None
        if clean is not None:
            changed = _absdiff_max(current, clean.astype(np.float32)) > self.config.fg_threshold
            changed &= self._zone & ~hidden
            if saturated is not None:
                changed &= ~saturated
        return SceneChangeState(
            zone_id=self.zone.zone_id, time_s=now, static_mask=full,
            static_boxes=(boxes / self._scale + origin).astype(np.float32),
            static_since_s=np.array([now - r.first_s for r in confirmed], np.float32),
            covered_share=float((covered & self._zone).sum() / self._zone_area),
            shift_px=shift, reference_bgr=np.clip(self._long, 0, 255).astype(np.uint8),
            roi_xyxy=self._roi.copy(), scale=self._scale, image=frame.image, learning=learning,
            clean_bgr=None if clean is None else np.clip(clean, 0, 255).astype(np.uint8),
            current_small=current.astype(np.uint8), zone_small=self._zone, masked_small=hidden.copy(),
            changed_mask_clean=changed,
            new_regions=(np.array([r.box for r in pending], np.float32).reshape(-1, 4) / self._scale
                         + origin).astype(np.float32),
            new_regions_since_s=np.array([r.first_s for r in pending], np.float32))
