"""Flooding: water covering a large, persistent part of a road or pavement zone.

Issue 4, detector 4. Per analysed frame the zone's crop, on the small grid of
:class:`detectors.scene_change.ZoneSceneChange` (which supplies the zone raster, the people and
vehicle mask, the clean reference for the before/after crops and the saved state), is cut into
square cells of ``cell_px`` and each visible cell is tested against this detector's own
**dry-surface reference** per cell (texture and mean grey, followed with time constant
``scene.learn_s`` while the zone is dry and frozen as soon as water is seen):

- **texture lost**: the cell's contrast-normalised gradient energy (mean squared Sobel magnitude
  divided by the squared mean grey level, :func:`texture_energy`) is below ``texture_loss``
  times the reference's. Water hides the surface's grain, cracks and painted markings and
  mirrors a blurred scene; wet pavement and shadows only darken, which the division by the mean
  cancels, and keep their texture. (Low texture is one of the standing-water cues of Rankin,
  Matthies & Huertas, "Daytime water detection by fusing multiple cues for autonomous off-road
  navigation", 2004.)
- **changed**: the cell's mean colour differs from the reference by at least ``change_min``
  (largest channel, relative to the reference grey) after light compensation: the camera's
  exposure gain, measured outside the zone at every frame (automatic exposure swings by up to
  45 % on car-detection.mp4), times the zone's residual gain fitted on texture-intact cells
  while the zone is dry. Frames taken while the exposure is more than
  :data:`MAX_EXPOSURE_DEVIATION` off are not measured.
- **flat cells** (dry reference texture below :data:`FLAT_TEXTURE`, e.g. compressed smooth
  asphalt): no texture can be lost there, so the cell must stay flat and its *chromaticity*
  must change by ``chroma_min`` (a wet darkening or a shadow keeps the hue).
- optionally **segmented**: the site's segmentation model gives the cell a mean water
  probability of at least ``water_prob_min`` (a veto on top of the classical cues).

Why not ``SceneChangeState.changed_mask_clean``: the scene stage normalises each frame's grey
mean/std to the long-term model over the whole zone; once water covers most of the zone that
fit is dominated by the water itself (measured on the staged flood: water brightened back to
the asphalt's level, texture amplified up to 3x), so the change and texture cues are computed
here on the raw frame with the gain held from dry times.

A cell is water when all its cues hold; a 3x3 majority vote over the cell grid fills cells
inside a water body whose reflection kept some texture and removes isolated ones (a dark coat).
Cells mostly hidden by people/vehicles keep the water state last seen there (a car driving
through a flooded lot neither dries it nor dilutes the share).

Rain, splashes and people are told apart by **size** (``min_covered_share`` of the zone),
**persistence** (``persistence_s`` of net time at or above it on the share smoothed with time
constant ``smooth_s``; reset when the zone measures dry, see :class:`FloodingConfig`) and the
texture cue. A situation's onset (``start_time_s``) is the first frame of the rise whose raw
share reached ``onset_share``. Severity combines the covered share with depth markers
(kerb lines, poles: image points that water covers as it rises); a marker point is submerged
when the water cues hold in a small window around it.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from calibration.zones import Zone
from detectors.base import DetectorError, ModelNotFoundError
from detectors.scene import SceneDetectorError, SceneEvent
from detectors.scene_change import SceneChangeConfig, SceneChangeState, ZoneSceneChange
from detectors.types import Detections
from ingest.frame import Frame, check_array

log = logging.getLogger(__name__)

#: Added to squared mean grey levels before dividing, so black cells do not divide by zero.
_EPS_GREY2 = 25.0
#: Fewest texture-intact cells needed to fit the zone's residual light gain, and the least share
#: of the visible cells they must make up; with fewer the previous gain is kept (on the flat car
#: park the few textured cells are a passing car's edges, whose fit was 30 % off).
MIN_INTACT_CELLS = 8
MIN_INTACT_SHARE = 0.2
#: Normalised texture energy (:func:`texture_energy`) of a flat cell: about ``1.5 * sigma**2 /
#: mean**2`` of Gaussian noise of sigma 3 grey levels at grey 116. A cell whose dry reference is
#: below it has no texture to lose (compressed smooth asphalt: nearly all car-park cells of
#: car-detection.mp4, typical 2e-4, below the staged water's own noise; the flattest quarter of
#: the vtest.avi road cells): there "texture lost" means "still below this", and the change cue
#: must be a change of chromaticity (``chroma_min``), not of brightness.
FLAT_TEXTURE = 1e-3
#: The exposure grid: the frame downscaled by this factor (px) for the camera-gain estimate.
EXPOSURE_CELL_PX = 8
#: Fewest usable exposure-grid pixels outside the zone to estimate the camera gain there; with
#: fewer the gain is fitted on the zone's texture-intact cells (and held while water is seen).
MIN_OUTSIDE_PX = 100
#: Frames whose camera gain (outside the zone, against its usual level) is further than this
#: from 1 are not measured (the last share is kept): on car-detection.mp4 the gains measured
#: outside and inside the zone differ by up to 8 % while the exposure swings by 30-45 %, as much
#: as ``change_min``. Not lower: a slow light ramp (20 % in 60 s) runs ~7 % ahead of the usual
#: level, and its frames must still be measured.
MAX_EXPOSURE_DEVIATION = 0.12


@dataclass(frozen=True, slots=True)
class DepthMarker:
    """Image points that water covers as it rises: a kerb line, a pole, a wall.

    Args:
        marker_id: Name used in events, e.g. ``"kerb-east"``.
        points_px: `(P, 2)` float32 ``x, y`` full-frame pixels, P >= 1, each inside the frame.
        height_m: `(P,)` float32 height (m) above the road surface of each point: the water depth
            at which it goes under.

    Raises:
        SceneDetectorError: When the arrays do not have these shapes or a height is negative.
    """

    marker_id: str
    points_px: np.ndarray
    height_m: np.ndarray

    def __post_init__(self) -> None:
        try:
            check_array("DepthMarker.points_px", self.points_px, 2, np.float32, (None, 2))
            check_array("DepthMarker.height_m", self.height_m, 1, np.float32, (len(self.points_px),))
        except ValueError as exc:
            raise SceneDetectorError(str(exc)) from exc
        if len(self.points_px) == 0:
            raise SceneDetectorError(f"DepthMarker {self.marker_id!r}: needs at least one point")
        if not (np.isfinite(self.height_m).all() and (self.height_m >= 0).all()):
            raise SceneDetectorError(f"DepthMarker {self.marker_id!r}: heights must be finite and >= 0")


@runtime_checkable
class WaterSegmenter(Protocol):
    """A per-pixel water classifier (a site's segmentation model)."""

    def water_probability(self, image_bgr: np.ndarray) -> np.ndarray:
        """Water probability of each pixel.

        Args:
            image_bgr: `(H, W, 3)` uint8 BGR image (the zone's crop of the frame).

        Returns:
            `(H, W)` float32 probabilities in [0, 1], same size as ``image_bgr``.
        """
        ...


class OnnxWaterSegmenter:
    """A semantic segmentation model with a water class, on ONNX Runtime.

    Expects one input `(1, 3, H, W)` float32 RGB, normalised as ``(pixel / 255 - mean) / std``
    per channel, and a first output `(1, C, h, w)` of class scores (logits or probabilities; a
    softmax over C is applied unless ``probabilities=True``). The water probability map is
    resized back to the input image.

    Args:
        model_path: The ``.onnx`` file.
        input_hw: Network input size ``(H, W)`` in pixels (the image is resized, not letterboxed).
        water_class: Index of the water class in C.
        mean: Per-channel RGB mean, fractions of 255 (ImageNet by default).
        std: Per-channel RGB standard deviation, fractions of 255.
        probabilities: Whether the output is already probabilities.

    Raises:
        ModelNotFoundError: When ``model_path`` does not exist.
        DetectorError: When ONNX Runtime cannot load it or its input/output do not fit.
    """

    def __init__(self, model_path: str | Path, input_hw: tuple[int, int], water_class: int,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), probabilities: bool = False) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelNotFoundError(f"water segmentation model not found: {path}")
        from detectors.onnx import load_session  # lazy: the classical path needs no ONNX Runtime

        self._session = load_session(path)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise DetectorError(f"{path}: expected one (1, 3, H, W) input, got {[i.shape for i in inputs]}")
        if water_class < 0:
            raise DetectorError(f"water_class must be >= 0, got {water_class}")
        self._input = inputs[0].name
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.water_class = int(water_class)
        self.probabilities = probabilities
        self._mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.name = path.stem

    def water_probability(self, image_bgr: np.ndarray) -> np.ndarray:
        """See :meth:`WaterSegmenter.water_probability`.

        Raises:
            ShapeError: When ``image_bgr`` is not `(H, W, 3)` uint8.
            DetectorError: When inference fails or the output has no ``water_class``.
        """
        check_array("image_bgr", image_bgr, 3, np.uint8, (None, None, 3))
        h, w = image_bgr.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(image_bgr, self.input_hw[::-1], interpolation=cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)
        blob = (rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0 - self._mean) / self._std
        try:
            scores = self._session.run(None, {self._input: blob})[0]
        except Exception as exc:
            raise DetectorError(f"water segmentation {self.name} failed: {exc}") from exc
        if scores.ndim != 4 or scores.shape[1] <= self.water_class:
            raise DetectorError(f"{self.name}: output {scores.shape} has no class {self.water_class}")
        scores = scores[0].astype(np.float32)
        if not self.probabilities:
            scores = np.exp(scores - scores.max(axis=0, keepdims=True))
            scores /= scores.sum(axis=0, keepdims=True)
        return cv2.resize(scores[self.water_class], (w, h), interpolation=cv2.INTER_LINEAR)


def _scene_default() -> SceneChangeConfig:
    """Scene-change settings for flooding: the defaults, with a 30 min long-term constant and a
    2 min learning period.

    Flood onset is slow (tens of minutes). With the default 5 min long-term constant the scene
    stage would absorb a slowly rising flood as background, report no static candidates, and
    refresh the clean reference (the "before" crop) under the water before this detector's share
    reaches ``end_share`` and holds it. 30 min keeps the water foreground for the whole rise; the
    price is that a permanent change of the road (new asphalt) stays "changed" in the scene stage
    for longer (this detector's own texture reference follows it after ``learn_s``).
    """
    return SceneChangeConfig(long_term_tau_s=1800.0, learn_s=120.0)


@dataclass(frozen=True, slots=True)
class FloodingConfig:
    """Thresholds of :class:`FloodingDetector`.

    Attributes:
        min_covered_share: Share 0..1 of the visible zone that must be water to start a
            situation. Lower reports puddles, higher only real floods; also the size test that
            keeps a splash, a wet patch or a group of people out.
        end_share: Share below which the zone counts as drying (hysteresis); must be below
            ``min_covered_share``. Lower keeps a receding flood open longer.
        onset_share: Raw (unsmoothed) share 0..1 that dates the onset: a situation's
            ``start_time_s`` is the first frame of the rise that led to it whose raw share
            reached this (the smoothed share lags by about ``smooth_s``). Lower dates earlier
            but a stray wet cell or two may date it too early.
        persistence_s: Net seconds the smoothed share must have spent >= ``min_covered_share``
            before the alert, and it must be there at that frame. Time in
            ``[end_share, min_covered_share)`` counts down again (a leaky count, not a reset:
            a flood hovering at the threshold or a splash of bad frames still alerts, later),
            a dip below ``end_share`` resets it (the zone was dry: old evidence never carries
            over to a later rise). A plain pause would let a drained flood's smoothed tail plus
            one later spike complete the count; a reset on every dip below
            ``min_covered_share`` would let a flood hovering there never alert. Longer ignores
            downpour sheets and long splashes, at the cost of delay.
        clear_s: Seconds the share must stay below ``end_share`` to end the situation. Longer
            rides out a bus parked over the water, shorter closes the ticket sooner.
        smooth_s: Time constant (s) of the exponential smoothing of the share and of each
            marker's submerged state. Longer steadies severity (fewer updates), shorter follows
            a fast rise sooner.
        cell_px: Side of a texture cell on the scene-change small grid, px (about
            ``cell_px / scale`` full-frame px). Smaller cells outline water more finely but their
            texture statistics are noisier.
        texture_loss: A cell lost its texture when its normalised gradient energy is below this
            ratio of the clean reference's. Lower demands smoother water (misses rippled,
            reflective water), higher accepts more (dark coats, shadows of large vehicles).
        change_min: Relative change 0..1 of a cell's mean grey level against the dry reference
            (after light compensation) that a water cell also needs. Lower accepts water close
            in brightness to the road, higher ignores faint changes (a wet sheen, fog).
        chroma_min: On flat cells (no dry texture to lose, see :data:`FLAT_TEXTURE`), the change
            of chromaticity ``(b, g, r) / (b + g + r)`` (largest channel) a water cell needs
            instead of ``change_min``. Measured on car-detection.mp4 (8-px cells): dry asphalt
            0.005-0.014 (90th percentile, exposure swings included), the staged water >= 0.016
            (10th percentile), a 25 % darkening of the vtest.avi road 0.005. Lower accepts
            grey water on grey asphalt, higher ignores tinted puddles.
        marker_radius_px: Half side (full-frame px) of the window tested around a depth marker
            point. Larger is steadier, smaller locates the water line more precisely.
        marker_weight: Weight 0..1 of the depth term in severity when markers are configured:
            ``severity = (1 - w) * share + w * depth`` with ``depth`` = highest submerged
            marker height / highest marker height. Higher lets depth dominate extent.
        severity_step: Change of severity that produces an ``"updated"`` event (and the
            hysteresis of ``urgent``). Smaller reports finer changes but more events.
        urgent_severity: Severity at or above which the situation is flagged urgent.
        water_prob_min: With a segmenter, the mean water probability a cell needs.
        segment_every_s: With a segmenter, seconds between two runs of it (its map is reused
            in between). Shorter costs CPU, longer reacts later.
        scene: The shared scene-change configuration (see :func:`_scene_default` for why the
            long-term constant is long and the colour threshold low here).

    Raises:
        SceneDetectorError: When a value is out of its bounds.
    """

    min_covered_share: float = 0.25
    end_share: float = 0.1
    onset_share: float = 0.05
    persistence_s: float = 120.0
    clear_s: float = 120.0
    smooth_s: float = 10.0
    cell_px: int = 8
    texture_loss: float = 0.5
    change_min: float = 0.08
    chroma_min: float = 0.012
    marker_radius_px: float = 6.0
    marker_weight: float = 0.5
    severity_step: float = 0.1
    urgent_severity: float = 0.6
    water_prob_min: float = 0.5
    segment_every_s: float = 5.0
    scene: SceneChangeConfig = field(default_factory=_scene_default)

    def __post_init__(self) -> None:
        for name in ("min_covered_share", "texture_loss", "severity_step", "urgent_severity"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise SceneDetectorError(f"FloodingConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("end_share", "onset_share", "change_min", "chroma_min", "marker_weight", "water_prob_min"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SceneDetectorError(f"FloodingConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("persistence_s", "clear_s", "smooth_s", "segment_every_s"):
            if not getattr(self, name) >= 0.0:
                raise SceneDetectorError(f"FloodingConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.onset_share >= self.min_covered_share:
            raise SceneDetectorError(f"FloodingConfig.onset_share ({self.onset_share}) must be < "
                                     f"min_covered_share ({self.min_covered_share})")
        if self.end_share >= self.min_covered_share:
            raise SceneDetectorError(f"FloodingConfig.end_share ({self.end_share}) must be < "
                                     f"min_covered_share ({self.min_covered_share})")
        if not (isinstance(self.cell_px, int) and self.cell_px >= 2):
            raise SceneDetectorError(f"FloodingConfig.cell_px must be an int >= 2, got {self.cell_px!r}")
        if not self.marker_radius_px > 0:
            raise SceneDetectorError(f"FloodingConfig.marker_radius_px must be > 0, got {self.marker_radius_px}")
        if not isinstance(self.scene, SceneChangeConfig):
            raise SceneDetectorError("FloodingConfig.scene must be a SceneChangeConfig")


def texture_energy(grey: np.ndarray, cell_px: int) -> np.ndarray:
    """Contrast-normalised gradient energy per cell.

    ``mean((gx**2 + gy**2) / 16) / (mean(grey)**2 + 25)`` over each ``cell_px`` square, with
    Sobel gradients; dividing by the squared mean makes it invariant to a uniform darkening
    (wet pavement) of the cell.

    Args:
        grey: `(h, w)` float32 grey image, 0..255.
        cell_px: Cell side, px; the image is padded (edge-replicated) to whole cells.

    Returns:
        `(ceil(h / cell_px), ceil(w / cell_px))` float32 energies (dimensionless).
    """
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    energy = _cell_mean((gx * gx + gy * gy) / 16.0, cell_px)
    mean = _cell_mean(grey, cell_px)
    return (energy / (mean * mean + _EPS_GREY2)).astype(np.float32)


def _cell_mean(values: np.ndarray, cell_px: int) -> np.ndarray:
    """Mean of each ``cell_px`` square of `(h, w)` values (edge-replicated to whole cells)."""
    h, w = values.shape
    gh, gw = -(-h // cell_px), -(-w // cell_px)
    padded = cv2.copyMakeBorder(values.astype(np.float32), 0, gh * cell_px - h, 0, gw * cell_px - w,
                                cv2.BORDER_REPLICATE)
    return cv2.resize(padded, (gw, gh), interpolation=cv2.INTER_AREA)  # exact block means


@dataclass(slots=True)
class _Situation:
    situation_id: int
    onset_s: float
    severity: float
    urgent: bool
    below_since_s: float | None = None


class FloodingDetector:
    """Flooding of one road or pavement zone of one camera (a :class:`SceneDetector`).

    Args:
        detector_id: Configured id, unique within the camera.
        zone: The road/pavement zone.
        config: Thresholds; defaults when ``None``.
        depth_markers: Kerb lines, poles: points that go under as the water rises.
        segmenter: Optional water segmentation model (see :class:`OnnxWaterSegmenter`); the
            classical cues work without it.

    Raises:
        SceneDetectorError: When ``depth_markers`` holds something else or duplicate ids.
    """

    alert_type = "flooding"

    def __init__(self, detector_id: str, zone: Zone, config: FloodingConfig | None = None,
                 depth_markers: Sequence[DepthMarker] = (), segmenter: WaterSegmenter | None = None) -> None:
        self.detector_id = detector_id
        self.zone_id = zone.zone_id
        self.config = config or FloodingConfig()
        self.depth_markers = tuple(depth_markers)
        if not all(isinstance(m, DepthMarker) for m in self.depth_markers):
            raise SceneDetectorError("depth_markers must be DepthMarker instances")
        if len({m.marker_id for m in self.depth_markers}) != len(self.depth_markers):
            raise SceneDetectorError("depth marker ids must be unique")
        self.segmenter = segmenter
        self._scene = ZoneSceneChange(zone, self.config.scene)
        self._max_height_m = max((float(m.height_m.max()) for m in self.depth_markers), default=0.0)
        self._share_ema = 0.0
        self._marker_ema = [np.zeros(len(m.points_px), np.float32) for m in self.depth_markers]
        self._marker_under = [np.zeros(len(m.points_px), bool) for m in self.depth_markers]
        self._last_s: float | None = None
        self.raw_share = 0.0
        self._hidden: np.ndarray | None = None
        self._wet_since_s: float | None = None  # smoothed share >= end_share continuously since
        self._above_s = 0.0  # seconds with smoothed share >= min_covered_share (see update)
        self._rise_s: float | None = None  # first frame of this rise with raw share >= onset_share
        self._zone = zone
        self._situation: _Situation | None = None
        self._next_id = 0
        self._prob: np.ndarray | None = None
        self._prob_s = -math.inf
        # Dry-surface reference per cell (see _learn_reference): texture, mean grey, seen once.
        self._ref_texture: np.ndarray | None = None
        self._ref_mean: np.ndarray | None = None
        self._ref_seen: np.ndarray | None = None
        self._last_grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._gain = 1.0
        self._water_seen: np.ndarray | None = None  # last visible water state per cell
        # Camera exposure outside the zone (see _exposure_gain): reference grid and outside mask.
        self._exp_ref: np.ndarray | None = None
        self._exp_outside: np.ndarray | None = None

    @property
    def covered_share(self) -> float:
        """Smoothed share 0..1 of the zone measured as water at the last frame (``raw_share``:
        the same, unsmoothed)."""
        return self._share_ema

    # -- evidence -------------------------------------------------------------------------------
    def _exposure_gain(self, frame: Frame, mask_xyxy: np.ndarray, dt: float) -> float | None:
        """Camera gain (reference / now) measured outside the zone; ``None`` when too little is seen.

        The car-park camera's automatic exposure darkens the whole frame by up to 45 % whenever a
        light car drives in; a gain fitted inside the zone is unusable once water covers it (and
        was therefore held, which turned every exposure swing into "changed" cells on a dry
        lot). The frame outside the (dilated) zone is not flooded by the zone's water, so the
        median ratio of its grey levels to their slow average (time constant ``scene.learn_s``)
        follows the exposure at every frame. People and vehicles (+1 grid px) and near-black or
        saturated pixels are left out.
        """
        f = EXPOSURE_CELL_PX
        h, w = frame.image.shape[:2]
        size = (max(w // f, 1), max(h // f, 1))
        grey = cv2.cvtColor(cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY).astype(np.float32)
        if self._exp_ref is None or self._exp_ref.shape != grey.shape:
            zone = np.zeros(grey.shape, np.uint8)
            poly = self._zone.polygon_px((w, h)) * np.float32([size[0] / w, size[1] / h])
            cv2.fillPoly(zone, [np.round(poly).astype(np.int32)], 1)
            self._exp_outside = cv2.dilate(zone, np.ones((5, 5), np.uint8)) == 0
            self._exp_ref = grey.copy()
            return None
        ok = self._exp_outside & (grey > 8) & (grey < 247) & (self._exp_ref > 8) & (self._exp_ref < 247)
        for x1, y1, x2, y2 in mask_xyxy / f:
            ok[max(int(y1) - 1, 0):max(int(y2) + 2, 0), max(int(x1) - 1, 0):max(int(x2) + 2, 0)] = False
        if ok.sum() < MIN_OUTSIDE_PX:
            return None
        gain = float(np.median(self._exp_ref[ok] / grey[ok]))
        # Clipped steps (a running-median-like follower): the reference stays at the usual
        # exposure instead of averaging in the dark swings.
        a = np.float32(1.0 - math.exp(-dt / max(self.config.scene.learn_s, 1e-6)))
        step = 0.02 * self._exp_ref[ok]
        self._exp_ref[ok] += a * np.clip(grey[ok] - self._exp_ref[ok], -step, step)
        return gain

    def _water_cells(self, state: SceneChangeState, frame: Frame, exposure_gain: float | None,
                     dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-cell water decision on the raw frame; returns ``(water, counted)`` `(gh, gw)` bool."""
        cfg, c = self.config, self.config.cell_px
        h, w = state.zone_small.shape
        x1, y1, x2, y2 = (int(v) for v in state.roi_xyxy)
        raw = cv2.resize(frame.image[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY).astype(np.float32)
        texture = texture_energy(grey, c)
        colour = np.stack([_cell_mean(raw[..., k], c) for k in range(3)], axis=-1)  # (gh, gw, 3)
        mean = colour.mean(axis=-1)
        visible = _cell_mean((state.zone_small & ~state.masked_small).astype(np.float32), c)
        counted = (visible >= 0.5) & (_cell_mean(state.zone_small.astype(np.float32), c) >= 0.5)
        if self._ref_texture is None or self._ref_texture.shape != texture.shape \
                or self._ref_mean.shape != colour.shape:
            self._ref_texture, self._ref_mean = texture.copy(), colour.copy()
            self._ref_seen = counted.copy()
            self._water_seen = np.zeros(counted.shape, bool)
        water = np.zeros(counted.shape, bool)
        ready = counted & self._ref_seen
        self._hidden = ~counted & self._ref_seen & (_cell_mean(state.zone_small.astype(np.float32), c) >= 0.5)
        ref_grey = self._ref_mean.mean(axis=-1)
        flat = self._ref_texture < FLAT_TEXTURE
        smooth = texture < np.where(flat, FLAT_TEXTURE, cfg.texture_loss * self._ref_texture)
        # Light compensation = the camera's exposure gain (measured outside the zone, every
        # frame) times the zone's own residual gain (a cloud, a wet sheen over the whole zone),
        # fitted on texture-intact cells while the zone is dry, then held: once water covers
        # most of the zone, its reflections would count as "intact" and drag the fit towards the
        # water's brightness. Without a view outside the zone the residual does it all.
        # The residual follows its per-frame fits with time constant smooth_s, and is not fitted
        # on frames the camera is re-exposing (not measured, see update).
        exposure = 1.0 if exposure_gain is None else exposure_gain
        intact = ready & ~smooth & ~flat
        if not state.learning and self._share_ema < cfg.end_share and self._situation is None \
                and abs(exposure - 1.0) <= MAX_EXPOSURE_DEVIATION \
                and intact.sum() >= max(MIN_INTACT_CELLS, MIN_INTACT_SHARE * ready.sum()):
            fit = float(np.median(ref_grey[intact] / np.maximum(mean[intact] * exposure, 1.0)))
            a = 1.0 if cfg.smooth_s == 0 else 1.0 - math.exp(-dt / cfg.smooth_s)
            self._gain += a * (fit - self._gain)
        gain = exposure * self._gain
        if not state.learning and ready.any():
            # Textured cells: the largest per-channel difference, relative to the reference grey.
            # Flat cells: only a change of chromaticity (b, g, r) / (b + g + r): on a surface with
            # no texture to lose, a brightness change alone is as likely wet asphalt or a
            # shadow, which keep their hue; water tints it (sky, mud, the staged grey-blue).
            diff = np.abs(colour * gain - self._ref_mean).max(axis=-1)
            hue = colour / np.maximum(colour.sum(axis=-1, keepdims=True), 1.0)
            ref_hue = self._ref_mean / np.maximum(self._ref_mean.sum(axis=-1, keepdims=True), 1.0)
            changed = np.where(flat, np.abs(hue - ref_hue).max(axis=-1) >= cfg.chroma_min,
                               diff >= cfg.change_min * np.maximum(ref_grey, 1.0))
            water = smooth & changed & ready
            if self.segmenter is not None:
                prob = self._water_probability(state, frame)
                water &= _cell_mean(prob, c) / np.maximum(visible, 1e-6) >= cfg.water_prob_min
            # 3x3 majority vote: fill a reflected edge inside a water body, drop a lone dark coat.
            votes = cv2.boxFilter(water.astype(np.float32), -1, (3, 3), normalize=False,
                                  borderType=cv2.BORDER_CONSTANT)
            near = cv2.boxFilter(ready.astype(np.float32), -1, (3, 3), normalize=False,
                                 borderType=cv2.BORDER_CONSTANT)
            water = (votes * 2 > near) & ready
        self._last_grid = (texture, colour * np.float32(gain), counted)
        return water, counted if state.learning else ready

    def _learn_reference(self, dt: float, frozen: bool) -> None:
        """Follow the dry surface's texture and (exposure-compensated) colour, time constant
        ``scene.learn_s``."""
        if frozen or self._last_grid is None:
            return
        texture, colour, counted = self._last_grid
        tau = max(self.config.scene.learn_s, 1e-6)
        a = np.float32(1.0 - math.exp(-dt / tau))
        first = counted & ~self._ref_seen
        self._ref_texture[first], self._ref_mean[first] = texture[first], colour[first]
        upd = counted & ~first
        self._ref_texture[upd] += a * (texture[upd] - self._ref_texture[upd])
        # Colour steps are clipped to half of change_min (a running-median-like follower, cf.
        # McFarlane & Schofield 1995): a light car driving through unmasked (the detector
        # misses cars seen from above) would otherwise leave a bright trail in the reference.
        step = 0.5 * self.config.change_min * np.maximum(self._ref_mean[upd], 1.0)
        self._ref_mean[upd] += a * np.clip(colour[upd] - self._ref_mean[upd], -step, step)
        self._ref_seen |= counted

    def _water_probability(self, state: SceneChangeState, frame: Frame) -> np.ndarray:
        """The segmenter's water probability on the small grid (zone pixels, masked ones 0)."""
        if self._prob is None or state.time_s - self._prob_s >= self.config.segment_every_s \
                or self._prob.shape != state.zone_small.shape:
            x1, y1, x2, y2 = (int(v) for v in state.roi_xyxy)
            prob = self.segmenter.water_probability(frame.image[y1:y2, x1:x2])
            h, w = state.zone_small.shape
            self._prob = cv2.resize(np.clip(prob, 0, 1).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
            self._prob_s = state.time_s
        return self._prob * (state.zone_small & ~state.masked_small)

    def _markers(self, state: SceneChangeState, water: np.ndarray, counted: np.ndarray,
                 alpha: float) -> tuple[list[str], float]:
        """Update each marker point's smoothed submerged state; return submerged ids and depth."""
        c, names, depth = self.config.cell_px, [], 0.0
        gh, gw = water.shape
        for marker, ema, under_now in zip(self.depth_markers, self._marker_ema, self._marker_under):
            r = self.config.marker_radius_px
            pts = np.concatenate([marker.points_px - r, marker.points_px + r], axis=1)
            small = state.to_small(pts)
            for i, (x1, y1, x2, y2) in enumerate(small):
                cx1, cy1 = max(int(x1 // c), 0), max(int(y1 // c), 0)
                cx2, cy2 = min(int(x2 // c) + 1, gw), min(int(y2 // c) + 1, gh)
                seen = counted[cy1:cy2, cx1:cx2]
                if cx2 <= cx1 or cy2 <= cy1 or not seen.any():
                    continue  # hidden or outside the zone: keep the previous estimate
                under = float(water[cy1:cy2, cx1:cx2][seen].mean() >= 0.5)
                ema[i] += alpha * (under - ema[i])
            # Hysteresis: a point goes under at a smoothed 0.5 and comes back out below 0.25, so
            # a shoreline lapping at it does not flip severity (and send updates) every frame.
            under_now[:] = np.where(under_now, ema >= 0.25, ema >= 0.5)
            submerged = under_now
            if submerged.any():
                names.append(marker.marker_id)
                depth = max(depth, float(marker.height_m[submerged].max()))
        return names, depth

    # -- SceneDetector ----------------------------------------------------------------------------
    def update(self, frame: Frame, people: Detections, vehicles: Detections) -> list[SceneEvent]:
        """Feed one analysed frame; see :meth:`detectors.scene.SceneDetector.update`.

        Raises:
            ShapeError: When the detections' boxes are malformed.
            SceneChangeError: When the zone covers too little of the frame.
            DetectorError: When the segmenter fails.
        """
        cfg = self.config
        mask = np.concatenate([people.xyxy, vehicles.xyxy]).astype(np.float32).reshape(-1, 4)
        hold = self._situation is not None or self._wet_since_s is not None
        state = self._scene.update(frame, mask, hold_reference=hold)
        now = float(frame.time_s)
        dt = 0.0 if self._last_s is None else max(now - self._last_s, 0.0)
        self._last_s = now
        exposure = self._exposure_gain(frame, mask, dt)
        water, counted = self._water_cells(state, frame, exposure, dt)
        if exposure is not None and abs(exposure - 1.0) > MAX_EXPOSURE_DEVIATION:
            # The camera is re-exposing: keep the last measurement, learn nothing.
            water, counted = self._water_seen & counted, np.zeros_like(counted)
            share, n = self.raw_share, 0
        else:
            # Cells hidden now by a person or vehicle keep the water state last seen there: a
            # car driving through a flooded lot neither dries it nor shrinks the evidence.
            hidden = self._hidden if not state.learning else np.zeros_like(counted)
            self._water_seen[counted] = water[counted]
            n = int(counted.sum() + hidden.sum())
            share = float((water.sum() + self._water_seen[hidden].sum()) / n) if n else self.raw_share
            self._learn_reference(dt, frozen=hold or share >= cfg.end_share)
        if state.learning:
            return []
        alpha = 1.0 if cfg.smooth_s == 0 else 1.0 - math.exp(-dt / cfg.smooth_s)
        was_above = self._share_ema >= cfg.min_covered_share
        self._share_ema += alpha * (share - self._share_ema)
        s = self._share_ema
        self.raw_share = share
        markers, depth_m = self._markers(state, water, counted, alpha)

        self._wet_since_s = (self._wet_since_s if self._wet_since_s is not None else now) \
            if s >= cfg.end_share else None
        # Persistence: time at or above min_covered_share counts up, time in
        # [end_share, min_covered_share) counts down (never below 0), below end_share resets.
        if s >= cfg.min_covered_share:
            self._above_s += dt if was_above else 0.0
        elif s >= cfg.end_share:
            self._above_s = max(self._above_s - dt, 0.0)
        else:
            self._above_s = 0.0
        # Onset: the first frame of the current run of frames whose raw share is >= onset_share
        # (while a situation is open the run is not needed any more).
        if share >= cfg.onset_share:
            self._rise_s = self._rise_s if self._rise_s is not None else now
        else:
            self._rise_s = None
        severity = self._severity(s, depth_m)
        sit = self._situation
        if sit is None:
            if s >= cfg.min_covered_share and self._above_s >= cfg.persistence_s:
                onset = min(t for t in (self._rise_s, self._wet_since_s, now) if t is not None)
                sit = self._situation = _Situation(self._next_id, onset, severity,
                                                   severity >= cfg.urgent_severity)
                self._next_id += 1
                log.info("camera %s zone %s t=%.1f: flooding started, share %.2f severity %.2f",
                         frame.camera_id, self.zone_id, now, s, severity)
                return [self._event("started", frame, state, water, s, markers, depth_m)]
            return []
        if s < cfg.end_share:
            sit.below_since_s = sit.below_since_s if sit.below_since_s is not None else now
            if now - sit.below_since_s >= cfg.clear_s:
                log.info("camera %s zone %s t=%.1f: flooding ended", frame.camera_id, self.zone_id, now)
                return [self._end(frame, s)]
            return []
        sit.below_since_s = None
        urgent = severity >= cfg.urgent_severity or (
            sit.urgent and severity > cfg.urgent_severity - cfg.severity_step)
        if abs(severity - sit.severity) >= cfg.severity_step or urgent != sit.urgent:
            sit.severity, sit.urgent = severity, urgent
            return [self._event("updated", frame, state, water, s, markers, depth_m)]
        return []

    def _severity(self, share: float, depth_m: float) -> float:
        if not self.depth_markers or self._max_height_m <= 0:
            return float(np.clip(share, 0.0, 1.0))
        w = self.config.marker_weight
        return float(np.clip((1 - w) * share + w * depth_m / self._max_height_m, 0.0, 1.0))

    def _event(self, kind: str, frame: Frame, state: SceneChangeState, water: np.ndarray, share: float,
               markers: list[str], depth_m: float) -> SceneEvent:
        sit = self._situation
        c = self.config.cell_px
        count, labels, stats, _ = cv2.connectedComponentsWithStats(water.astype(np.uint8), connectivity=8)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]], np.float32).reshape(-1, 4) * c
        area = stats[1:, cv2.CC_STAT_AREA].astype(np.float32) * (c / state.scale) ** 2
        xyxy = state.to_full(boxes).astype(np.float32)
        if len(xyxy):
            w, h = frame.resolution_wh
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        reference = current = None
        if len(xyxy):
            union = np.array([xyxy[:, 0].min(), xyxy[:, 1].min(), xyxy[:, 2].max(), xyxy[:, 3].max()])
            reference, current = state.crop(union)
        return SceneEvent(
            kind=kind, alert_type=self.alert_type, detector_id=self.detector_id,
            situation_id=sit.situation_id, zone_id=self.zone_id, reason="water",
            start_time_s=sit.onset_s, time_s=float(frame.time_s), wall_time_s=frame.wall_time_s,
            xyxy=xyxy, area_px=area[:len(xyxy)].astype(np.float32),
            covered_share=float(np.clip(share, 0, 1)), severity=sit.severity, urgent=sit.urgent,
            conf=float(np.clip(share / self.config.min_covered_share, 0, 1)),
            reference_bgr=reference, current_bgr=current, frame=frame,
            details={"markers_submerged": list(markers), "max_submerged_height_m": depth_m,
                     "water_boxes": xyxy.round(1).tolist()})

    def _end(self, frame: Frame | None, share: float) -> SceneEvent:
        sit, self._situation = self._situation, None
        time_s = float(frame.time_s) if frame is not None else (self._last_s or sit.onset_s)
        return SceneEvent(
            kind="ended", alert_type=self.alert_type, detector_id=self.detector_id,
            situation_id=sit.situation_id, zone_id=self.zone_id, reason="water",
            start_time_s=sit.onset_s, time_s=time_s,
            wall_time_s=frame.wall_time_s if frame is not None else 0.0,
            xyxy=np.zeros((0, 4), np.float32), area_px=np.zeros(0, np.float32),
            covered_share=float(np.clip(share, 0, 1)), severity=sit.severity, urgent=sit.urgent,
            frame=frame, details={"markers_submerged": [], "max_submerged_height_m": 0.0, "water_boxes": []})

    def flush(self, frame: Frame | None) -> list[SceneEvent]:
        """End the open situation, if any (end of stream or shutdown)."""
        if self._situation is None:
            return []
        return [self._end(frame, self._share_ema)]

    def _state_path(self, directory: Path, suffix: str = "") -> Path:
        return Path(directory) / f"{self.detector_id}-{self.zone_id}{suffix}.npz"

    @property
    def learning(self) -> bool:
        """Whether the clean reference is still being learned (nothing is reported until then)."""
        return self._scene.learning

    def save_state(self, directory: Path) -> None:
        """Persist the zone's clean reference and the dry-surface texture reference.

        Two ``.npz`` files, each written atomically (temporary file + rename): the scene-change
        models (:meth:`ZoneSceneChange.save`) and this detector's per-cell reference. Nothing is
        written while learning.

        Raises:
            OSError: When a file cannot be written.
        """
        if not self._scene.save(self._state_path(directory)) or self._ref_texture is None:
            return
        path = self._state_path(directory, ".texture")
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, texture=self._ref_texture, mean=self._ref_mean, seen=self._ref_seen,
                         gain=np.float64(self._gain), cell_px=np.int64(self.config.cell_px))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_state(self, directory: Path) -> bool:
        """Restore what :meth:`save_state` wrote; ``False`` when the scene models do not fit.

        The texture reference is applied when present and of the same cell size (its grid shape
        is checked on the first frame); without it the reference is relearned from the frames.
        """
        if not self._scene.load(self._state_path(directory)):
            return False
        path = self._state_path(directory, ".texture")
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["cell_px"]) == self.config.cell_px:
                    self._ref_texture = data["texture"].astype(np.float32)
                    self._ref_mean = data["mean"].astype(np.float32)
                    self._ref_seen = data["seen"].astype(bool)
                    self._gain = float(data["gain"])
        except (OSError, ValueError, KeyError) as exc:
            log.info("zone %s: no usable texture reference in %s (%s); relearning it", self.zone_id, path, exc)
        return True
