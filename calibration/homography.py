"""Image-to-ground homographies from point pairs, and WGS84 <-> local metres.

Frames and units used throughout:

- **image**: pixels of the decoded image, origin at the top-left corner, x right, y down.
- **ground**: metres on a flat ground plane, ``x`` east and ``y`` north of an origin (a local
  east-north tangent plane). Pairs may be given directly in metres or as WGS84 latitude and
  longitude, which are converted around ``origin_latlon``.

A plane-to-plane mapping seen through a pinhole camera is a homography (Hartley & Zisserman,
*Multiple View Geometry*, 2nd ed., section 2.3), so four or more image points of known ground
position determine ``H_img_to_ground``. The fit is OpenCV's ``cv2.findHomography`` (DLT plus
Levenberg-Marquardt refinement of the ground-plane error). Lens distortion is not modelled:
strongly distorted (fish-eye) images show larger errors towards the edges.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: WGS84 semi-major axis, metres, and first eccentricity squared (NIMA TR8350.2, table 3.1).
WGS84_A_M = 6378137.0
WGS84_E2 = 6.69437999014e-3
#: Points whose smallest spread (second singular value of the centred coordinates) is below
#: this share of the largest are treated as collinear: a homography needs a 2-D spread.
COLLINEAR_RATIO = 1e-3
#: A fitted matrix whose condition number exceeds this is treated as singular.
MAX_CONDITION = 1e12


class CalibrationError(BaqylauError, ValueError):
    """Calibration input or result is unusable (too few or degenerate points, singular fit,
    no origin for lat/lon output, a polygon crossing the horizon)."""


def _radii_m(lat0_deg: float) -> tuple[float, float]:
    """Meridional (north-south) and prime-vertical (east-west) radii of curvature of the
    WGS84 ellipsoid at latitude ``lat0_deg``, metres (standard geodesy formulas, e.g.
    Wikipedia "Earth radius", section "Principal sections")."""
    s2 = math.sin(math.radians(lat0_deg)) ** 2
    w = 1.0 - WGS84_E2 * s2
    return WGS84_A_M * (1.0 - WGS84_E2) / w ** 1.5, WGS84_A_M / math.sqrt(w)


def _xy(points: np.ndarray | Sequence, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.shape == (2,):
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise CalibrationError(f"{name}: expected shape (N, 2), got {arr.shape}")
    return arr


def latlon_to_local_m(latlon_deg: np.ndarray | Sequence, origin_latlon: tuple[float, float]) -> np.ndarray:
    """Convert WGS84 positions to metres east and north of an origin.

    Local tangent plane (equirectangular) approximation with the WGS84 radii of curvature at
    the origin: ``x = N cos(lat0) dlon``, ``y = M dlat``. The error grows about as
    ``d^2 tan(lat0) / R`` with the distance ``d`` from the origin: a few millimetres at 200 m,
    about 15 cm at 1 km (at 45 degrees), so it suits one camera's view, not a whole city.

    Args:
        latlon_deg: `(N, 2)` (or `(2,)`) float latitude, longitude in degrees.
        origin_latlon: Latitude, longitude of the origin, degrees.

    Returns:
        `(N, 2)` float64 ground ``x`` east, ``y`` north, metres.

    Raises:
        CalibrationError: When the shape is wrong.
    """
    ll = _xy(latlon_deg, "latlon_deg")
    lat0, lon0 = origin_latlon
    m_m, n_m = _radii_m(lat0)
    x = np.radians(ll[:, 1] - lon0) * n_m * math.cos(math.radians(lat0))
    y = np.radians(ll[:, 0] - lat0) * m_m
    return np.stack([x, y], axis=1)


def local_m_to_latlon(xy_m: np.ndarray | Sequence, origin_latlon: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`latlon_to_local_m`.

    Args:
        xy_m: `(N, 2)` (or `(2,)`) float ground metres east, north of the origin.
        origin_latlon: Latitude, longitude of the origin, degrees.

    Returns:
        `(N, 2)` float64 latitude, longitude, degrees (WGS84).

    Raises:
        CalibrationError: When the shape is wrong.
    """
    xy = _xy(xy_m, "xy_m")
    lat0, lon0 = origin_latlon
    m_m, n_m = _radii_m(lat0)
    lat = lat0 + np.degrees(xy[:, 1] / m_m)
    lon = lon0 + np.degrees(xy[:, 0] / (n_m * math.cos(math.radians(lat0))))
    return np.stack([lat, lon], axis=1)


@dataclass(frozen=True, slots=True)
class GroundPoint:
    """One image point and its known ground position.

    Attributes:
        image_px: ``(x, y)`` image pixels, origin top-left, y down.
        lat: WGS84 latitude, degrees; given together with ``lon``.
        lon: WGS84 longitude, degrees.
        x_m: Metres east of the calibration origin; given together with ``y_m`` instead of
            ``lat``/``lon``.
        y_m: Metres north of the calibration origin.

    Raises:
        CalibrationError: Unless exactly one of (lat, lon) or (x_m, y_m) is given, all finite.
    """

    image_px: tuple[float, float]
    lat: float | None = None
    lon: float | None = None
    x_m: float | None = None
    y_m: float | None = None

    def __post_init__(self) -> None:
        has_ll = self.lat is not None or self.lon is not None
        has_m = self.x_m is not None or self.y_m is not None
        if has_ll == has_m:
            raise CalibrationError(f"GroundPoint {self.image_px}: give exactly one of lat/lon or x_m/y_m")
        pair = (self.lat, self.lon) if has_ll else (self.x_m, self.y_m)
        values = [*np.asarray(self.image_px, dtype=np.float64).ravel(), *pair]
        if len(values) != 4 or any(v is None or not math.isfinite(v) for v in values):
            raise CalibrationError(f"GroundPoint {self.image_px}: expected finite image_px (x, y) and a "
                                   f"complete {'lat/lon' if has_ll else 'x_m/y_m'} pair, got {pair}")
        if has_ll and not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise CalibrationError(f"GroundPoint {self.image_px}: lat/lon out of range: {pair}")
        object.__setattr__(self, "image_px", (float(values[0]), float(values[1])))
        for name in ("lat", "lon") if has_ll else ("x_m", "y_m"):
            object.__setattr__(self, name, float(getattr(self, name)))


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64 if a.dtype != bool else bool)
    a.setflags(write=False)
    return a


def _apply(H: np.ndarray, pts: np.ndarray, w_sign: float) -> np.ndarray:
    """Apply a homography; points on or beyond the line at infinity (w of the other sign than
    the calibration points) map to NaN."""
    hom = np.c_[pts, np.ones(len(pts))] @ H.T
    w = hom[:, 2] * w_sign
    out = np.full((len(pts), 2), np.nan)
    ok = w > 1e-12
    out[ok] = hom[ok, :2] / hom[ok, 2:3]
    return out


@dataclass(frozen=True, slots=True)
class Homography:
    """A fitted image <-> ground plane mapping with its errors.

    Attributes:
        H_img_to_ground: `(3, 3)` float64, image pixels -> ground metres (east, north).
        H_ground_to_img: `(3, 3)` float64, its inverse.
        origin_latlon: WGS84 (lat, lon) of the ground origin in degrees, or None when every
            pair was given in metres without an origin (then no lat/lon output).
        image_px: `(N, 2)` float64 calibration image points, pixels.
        ground_m: `(N, 2)` float64 their ground positions, metres east/north of the origin.
        errors_m: `(N,)` float64 per pair: distance on the ground between the projected image
            point and its ground position, metres.
        errors_px: `(N,)` float64 per pair: distance in the image between the back-projected
            ground position and the image point, pixels.
        inliers: `(N,)` bool, pairs used for the fit (all of them without RANSAC).
    """

    H_img_to_ground: np.ndarray
    H_ground_to_img: np.ndarray
    origin_latlon: tuple[float, float] | None
    image_px: np.ndarray
    ground_m: np.ndarray
    errors_m: np.ndarray
    errors_px: np.ndarray
    inliers: np.ndarray

    @property
    def n_points(self) -> int:
        """Number of calibration pairs."""
        return int(len(self.image_px))

    @property
    def reprojection_error_m(self) -> tuple[float, float]:
        """(RMS, max) ground error over the inliers, metres."""
        e = self.errors_m[self.inliers]
        return float(np.sqrt(np.mean(e ** 2))), float(e.max())

    @property
    def reprojection_error_px(self) -> tuple[float, float]:
        """(RMS, max) image back-projection error over the inliers, pixels."""
        e = self.errors_px[self.inliers]
        return float(np.sqrt(np.mean(e ** 2))), float(e.max())

    def _w_sign(self, H: np.ndarray, pts: np.ndarray) -> float:
        return float(np.sign(np.median((np.c_[pts, np.ones(len(pts))] @ H.T)[:, 2])))

    def img_to_ground(self, points_px: np.ndarray | Sequence) -> np.ndarray:
        """Project image points onto the ground.

        Args:
            points_px: `(N, 2)` (or `(2,)`) float image pixels, origin top-left, y down
                (e.g. ``Detections.anchors("bottom_center")``).

        Returns:
            `(N, 2)` float64 metres east, north of the origin; NaN for points on or above the
            horizon line (they have no ground position).

        Raises:
            CalibrationError: When the shape is wrong.
        """
        pts = _xy(points_px, "points_px")
        return _apply(self.H_img_to_ground, pts, self._w_sign(self.H_img_to_ground, self.image_px))

    def ground_to_img(self, points_m: np.ndarray | Sequence) -> np.ndarray:
        """Project ground points into the image.

        Args:
            points_m: `(N, 2)` (or `(2,)`) float metres east, north of the origin.

        Returns:
            `(N, 2)` float64 image pixels; NaN for points behind the camera's horizon.

        Raises:
            CalibrationError: When the shape is wrong.
        """
        pts = _xy(points_m, "points_m")
        return _apply(self.H_ground_to_img, pts, self._w_sign(self.H_ground_to_img, self.ground_m))

    def img_to_latlon(self, points_px: np.ndarray | Sequence) -> np.ndarray:
        """Project image points to WGS84 positions.

        Args:
            points_px: `(N, 2)` (or `(2,)`) float image pixels.

        Returns:
            `(N, 2)` float64 latitude, longitude, degrees; NaN above the horizon.

        Raises:
            CalibrationError: When no origin is known (all pairs in metres, no origin set).
        """
        if self.origin_latlon is None:
            raise CalibrationError("no WGS84 origin: give calibration points in lat/lon or set an origin")
        return local_m_to_latlon(self.img_to_ground(points_px), self.origin_latlon)

    def area_m2(self, polygon_px: np.ndarray | Sequence) -> float:
        """Ground area of an image polygon (a flat region such as a puddle or a rubbish pile).

        A homography maps straight edges to straight edges, so the shoelace formula on the
        projected vertices is exact for a simple polygon that lies below the horizon.

        Args:
            polygon_px: `(K, 2)` float image pixels, K >= 3.

        Returns:
            Area on the ground, square metres.

        Raises:
            CalibrationError: For fewer than 3 vertices or a vertex on or above the horizon.
        """
        pts = _xy(polygon_px, "polygon_px")
        if len(pts) < 3:
            raise CalibrationError(f"polygon_px: a polygon needs at least 3 points, got {len(pts)}")
        g = self.img_to_ground(pts)
        if np.isnan(g).any():
            raise CalibrationError("polygon_px: a vertex lies on or above the horizon; no ground area")
        x, y = g[:, 0], g[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)

    def size_m(self, xyxy: np.ndarray | Sequence) -> np.ndarray:
        """Ground width and depth of boxes.

        ``width`` is the ground distance between the bottom-left and bottom-right corners
        (valid for any object standing on the ground); ``depth`` is the ground distance
        between the middles of the bottom and top edges, which is meaningful only for flat
        objects lying on the ground (litter, a puddle); for upright objects (people, bins)
        it is not a size.

        Args:
            xyxy: `(N, 4)` or `(4,)` float boxes ``x1, y1, x2, y2``, image pixels.

        Returns:
            `(N, 2)` (or `(2,)` for one box) float64 ``width_m, depth_m``; NaN where a
            corner lies above the horizon.

        Raises:
            CalibrationError: When the shape is wrong.
        """
        b = np.asarray(xyxy, dtype=np.float64)
        single = b.ndim == 1
        b = b.reshape(1, -1) if single else b
        if b.ndim != 2 or b.shape[1] != 4:
            raise CalibrationError(f"xyxy: expected shape (N, 4) or (4,), got {np.shape(xyxy)}")
        xm = (b[:, 0] + b[:, 2]) / 2
        bl, br = self.img_to_ground(b[:, [0, 3]]), self.img_to_ground(b[:, [2, 3]])
        bm, tm = self.img_to_ground(np.c_[xm, b[:, 3]]), self.img_to_ground(np.c_[xm, b[:, 1]])
        out = np.stack([np.linalg.norm(br - bl, axis=1), np.linalg.norm(tm - bm, axis=1)], axis=1)
        return out[0] if single else out


def _check_spread(pts: np.ndarray, name: str) -> None:
    centred = pts - pts.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[0] == 0 or sv[1] / sv[0] < COLLINEAR_RATIO:
        raise CalibrationError(f"{name}: the points are collinear (or coincide); spread them over the "
                               f"ground plane, no three on one line")
    if len(np.unique(np.round(pts, 6), axis=0)) < 4:
        raise CalibrationError(f"{name}: fewer than 4 distinct points")


def fit_homography(pairs: Sequence[GroundPoint], *, origin_latlon: tuple[float, float] | None = None,
                   ransac_threshold_m: float | None = None) -> Homography:
    """Fit ``H_img_to_ground`` from image-to-ground point pairs.

    Args:
        pairs: At least 4 :class:`GroundPoint`, spread over the ground plane (no three on a
            line gives the best conditioning).
        origin_latlon: WGS84 origin of the ground frame; default the first lat/lon pair, or
            None when every pair is in metres. Pairs in metres are relative to this origin.
        ransac_threshold_m: None (default) fits all pairs by least squares, so every pair
            counts in the reported error and a mistyped pair shows up as a large error.
            A distance in metres uses RANSAC: pairs farther than this from the fit are
            dropped as outliers (``inliers`` False) - robust to a typo, but it may hide it.

    Returns:
        The fitted :class:`Homography`; its errors are measured on the given pairs.

    Raises:
        CalibrationError: For fewer than 4 pairs, collinear or coinciding points, fewer than
            4 RANSAC inliers, or a singular or failed fit.
    """
    pairs = list(pairs)
    if len(pairs) < 4:
        raise CalibrationError(f"a homography needs at least 4 point pairs, got {len(pairs)}")
    if not all(isinstance(p, GroundPoint) for p in pairs):
        raise CalibrationError("pairs: expected GroundPoint items")
    if origin_latlon is None:
        origin_latlon = next(((p.lat, p.lon) for p in pairs if p.lat is not None), None)
    img = np.array([p.image_px for p in pairs], dtype=np.float64)
    ground = np.empty_like(img)
    for i, p in enumerate(pairs):
        ground[i] = (latlon_to_local_m([p.lat, p.lon], origin_latlon)[0] if p.lat is not None
                     else (p.x_m, p.y_m))
    _check_spread(img, "image points")
    _check_spread(ground, "ground points")
    if ransac_threshold_m is None:
        H, mask = cv2.findHomography(img, ground, 0)
    else:
        if not ransac_threshold_m > 0:
            raise CalibrationError(f"ransac_threshold_m must be > 0, got {ransac_threshold_m}")
        H, mask = cv2.findHomography(img, ground, cv2.RANSAC, float(ransac_threshold_m))
    if H is None or not np.isfinite(H).all() or np.linalg.cond(H) > MAX_CONDITION:
        raise CalibrationError("the homography fit failed or is singular; check the point pairs")
    inliers = mask.ravel().astype(bool) if mask is not None else np.ones(len(img), bool)
    if inliers.sum() < 4:
        raise CalibrationError(f"only {int(inliers.sum())} of {len(img)} pairs agree within "
                               f"{ransac_threshold_m} m; at least 4 are needed")
    H = H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H
    H_inv = np.linalg.inv(H)
    probe = Homography(H, H_inv, origin_latlon, _readonly(img), _readonly(ground),
                       np.zeros(len(img)), np.zeros(len(img)), _readonly(inliers))
    err_m = np.linalg.norm(probe.img_to_ground(img) - ground, axis=1)
    err_px = np.linalg.norm(probe.ground_to_img(ground) - img, axis=1)
    if np.isnan(err_m[inliers]).any() or np.isnan(err_px[inliers]).any():
        raise CalibrationError("the fit puts calibration points beyond the horizon; check the point pairs")
    hom = Homography(_readonly(H), _readonly(H_inv), origin_latlon, probe.image_px, probe.ground_m,
                     _readonly(err_m), _readonly(err_px), probe.inliers)
    logger.debug("homography from %d pairs: RMS %.3f m, %.2f px", len(img),
                 hom.reprojection_error_m[0], hom.reprojection_error_px[0])
    return hom
