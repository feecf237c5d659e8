"""Staged flood water for tests and benchmarks: a smooth, reflective sheet spreading over a zone.

No photographed water surface with a clear licence is available offline (``../shared`` holds
none), so - as issue 4 allows - the water is synthetic, drawn over *real* frames:

- **Colour**: a grey-blue tint (:data:`TINT_BGR`) blended with a reflection of the scene above
  the zone (the frame mirrored about the zone's top edge, so buildings, grass and sky appear
  upside down in the water, as in a puddle seen from an elevated camera), Gaussian-blurred
  (sigma :data:`REFLECTION_BLUR_PX`) because a wind-stirred surface never mirrors sharply.
- **Ripples**: the reflection is displaced by a travelling sine wave of ``ripple_px`` amplitude
  (wavelength 23 px, period 2 s), so the sheet shimmers from frame to frame.
- **Transparency**: :data:`TRANSMISSION` of the surface below still shows through (shallow,
  muddy water), and camera noise of sigma :data:`NOISE_GREY` grey levels is added so the sheet
  is not unrealistically noise-free next to the real, compressed asphalt.
- **Spread**: water fills the zone from a low point upwards: each zone pixel has an elevation
  (distance from ``origin_xy`` normalised to 0..1 over the zone, plus smooth random relief of
  :data:`RELIEF` amplitude so the shoreline is irregular) and is under water while the water
  ``level`` exceeds it; the shoreline is feathered over :data:`SHORE` of elevation.

Statistics measured with a full flood (``level`` 1) on frame 5, over the eroded zone (grey
levels; gradient energy = mean squared Sobel magnitude / 16, see :func:`gradient_energy`):

========================  ===============  =============  =========================
clip, zone                surface          mean (std)     gradient energy
========================  ===============  =============  =========================
vtest.avi, road           asphalt          170 (43)       533 (markings, kerbs)
vtest.avi, road           water layer      118 (14)       14 (x0.03)
car-detection.mp4, lot    asphalt          114 (8)        8.3 (already smooth)
car-detection.mp4, lot    water layer      108 (11)       4.4 (x0.53)
========================  ===============  =============  =========================

so on a textured road the sheet is darker, flatter and has a few per cent of the surface's fine
texture - the "loss of texture and markings" the flooding detector looks for - while on the
car park's smooth, dark asphalt it halves an already low texture (a hard case, on purpose). It
is *not* a physically rendered water surface: no specular sun glints, no rain drops, no
turbidity, and the mirror line is the zone's top edge rather than each puddle's far shore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: BGR colour of the water body where nothing is reflected (muddy grey-blue).
TINT_BGR = (120, 108, 96)
#: Weight of the reflection against the tint, 0..1.
REFLECTION = 0.45
#: Gaussian blur sigma (full-frame px) of the reflected scene.
REFLECTION_BLUR_PX = 6.0
#: Share of the covered surface that shows through the water.
TRANSMISSION = 0.1
#: Sigma (grey levels) of the camera noise added on the water.
NOISE_GREY = 1.5
#: Amplitude of the random relief added to the elevation (fraction of the zone's extent).
RELIEF = 0.12
#: Width of the feathered shoreline, in elevation units.
SHORE = 0.02


def gradient_energy(grey: np.ndarray) -> float:
    """Mean squared Sobel gradient magnitude of a grey image (divided by 16, the kernel gain).

    Args:
        grey: `(H, W)` uint8 or float grey image.

    Returns:
        The mean of ``(gx**2 + gy**2) / 16`` over the image, grey levels squared per pixel.
    """
    g = grey.astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    return float(np.mean(gx * gx + gy * gy) / 16.0)


@dataclass(frozen=True)
class StagedFlood:
    """A flood that rises over a zone, stays, and recedes, drawn onto real frames.

    The water level rises linearly from 0 at ``onset_s`` to ``max_level`` at ``full_s``, stays
    there until ``recede_s`` and falls linearly back to 0 at ``dry_s`` (``inf`` = never).

    Args:
        resolution_wh: Frame size ``(W, H)`` in pixels.
        zone_px: `(K, 2)` float polygon of the area that can flood, full-frame px.
        origin_xy: The lowest point (where water appears first), full-frame px.
        onset_s, full_s, recede_s, dry_s: Stream times (s) of the level ramp, see above.
        max_level: Highest water level, elevation units (1.0 covers about the whole zone).
        ripple_px: Ripple amplitude of the reflection, px.
        seed: Seed of the relief and the noise.

    Attributes:
        elevation: `(H, W)` float32, 0..~1 inside the zone, ``inf`` outside.
    """

    resolution_wh: tuple[int, int]
    zone_px: np.ndarray
    origin_xy: tuple[float, float]
    onset_s: float
    full_s: float
    recede_s: float = float("inf")
    dry_s: float = float("inf")
    max_level: float = 1.0
    ripple_px: float = 1.5
    seed: int = 0
    elevation: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w, h = self.resolution_wh
        zone = np.zeros((h, w), np.uint8)
        cv2.fillPoly(zone, [np.round(np.asarray(self.zone_px)).astype(np.int32)], 1)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        dist = np.hypot(xs - self.origin_xy[0], ys - self.origin_xy[1])
        dist /= max(float(dist[zone > 0].max()), 1.0)
        rng = np.random.default_rng(self.seed)
        relief = cv2.resize(rng.standard_normal((6, 8)).astype(np.float32), (w, h),
                            interpolation=cv2.INTER_CUBIC)
        elevation = dist + RELIEF * relief / max(float(np.abs(relief).max()), 1e-6)
        elevation[zone == 0] = np.inf
        object.__setattr__(self, "elevation", elevation.astype(np.float32))

    def level(self, t_s: float) -> float:
        """Water level at stream time ``t_s``, elevation units (0 = dry)."""
        rise = np.clip((t_s - self.onset_s) / max(self.full_s - self.onset_s, 1e-6), 0.0, 1.0)
        fall = 0.0
        if t_s > self.recede_s:
            fall = min((t_s - self.recede_s) / max(self.dry_s - self.recede_s, 1e-6), 1.0)
        return float(self.max_level * rise * (1.0 - fall))

    def cover(self, t_s: float) -> np.ndarray:
        """`(H, W)` float32 water opacity 0..1 at ``t_s`` (feathered shoreline)."""
        lv = self.level(t_s)
        if lv <= 0:
            return np.zeros(self.elevation.shape, np.float32)
        return np.clip((lv - self.elevation) / SHORE, 0.0, 1.0).astype(np.float32)

    def share(self, t_s: float) -> float:
        """Fraction 0..1 of the zone's pixels under water (opacity >= 0.5) at ``t_s``."""
        zone = np.isfinite(self.elevation)
        return float((self.cover(t_s)[zone] >= 0.5).mean())

    def apply(self, image: np.ndarray, t_s: float, keep_xyxy: np.ndarray | None = None) -> np.ndarray:
        """Draw the water of time ``t_s`` onto a copy of ``image``.

        Args:
            image: `(H, W, 3)` uint8 BGR frame (not modified).
            t_s: Stream time, s.
            keep_xyxy: `(M, 4)` float ``x1, y1, x2, y2`` full-frame px boxes drawn *above* the
                water (people and vehicles standing in it), or ``None``.

        Returns:
            A new `(H, W, 3)` uint8 BGR frame.
        """
        cover = self.cover(t_s)
        if keep_xyxy is not None:
            for x1, y1, x2, y2 in np.asarray(keep_xyxy, np.float64).reshape(-1, 4):
                cover[max(int(y1), 0):max(int(np.ceil(y2)), 0), max(int(x1), 0):max(int(np.ceil(x2)), 0)] = 0
        if not cover.any():
            return image.copy()
        top = float(np.asarray(self.zone_px)[:, 1].min())
        return water_layer(image, cover, top, t_s, ripple_px=self.ripple_px,
                           seed=self.seed * 100003 + int(t_s * 1000))


def water_layer(image: np.ndarray, cover: np.ndarray, mirror_y_px: float, t_s: float = 0.0,
                ripple_px: float = 1.5, seed: int = 0) -> np.ndarray:
    """Draw a smooth, reflective water sheet over ``image`` where ``cover`` > 0.

    Args:
        image: `(H, W, 3)` uint8 BGR frame (not modified).
        cover: `(H, W)` float32 opacity 0..1 of the water.
        mirror_y_px: Image row (full-frame px) about which the scene is mirrored into the water,
            typically the top of the flooded zone.
        t_s: Stream time (s), the phase of the ripples.
        ripple_px: Ripple amplitude, px.
        seed: Seed of the camera noise.

    Returns:
        A new `(H, W, 3)` uint8 BGR frame.
    """
    h, w = cover.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = 2 * np.pi * (ys / 23.0 - t_s / 2.0)
    map_x = xs + ripple_px * np.sin(phase)
    map_y = np.clip(2 * mirror_y_px - ys + ripple_px * np.cos(phase), 0, h - 1)
    reflected = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    reflected = cv2.GaussianBlur(reflected, (0, 0), REFLECTION_BLUR_PX).astype(np.float32)
    src = image.astype(np.float32)
    water = (1 - REFLECTION) * np.float32(TINT_BGR) + REFLECTION * reflected
    water = (1 - TRANSMISSION) * water + TRANSMISSION * src
    water += np.random.default_rng(seed).normal(0.0, NOISE_GREY, (h, w, 1)).astype(np.float32)
    a = cover[..., None]
    return np.clip(a * water + (1 - a) * src, 0, 255).astype(np.uint8)
