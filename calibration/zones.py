"""Zones: named polygons on a camera image, with declared units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ingest.errors import BaqylauError
from ingest.frame import check_array


class ZoneError(BaqylauError, ValueError):
    """A zone polygon is malformed (fewer than three points, wrong shape, bad units)."""


@dataclass(frozen=True, slots=True)
class Zone:
    """A polygon on one camera's image.

    Attributes:
        zone_id: Id unique within the camera.
        points: `(K, 2)` float32, K >= 3, polygon vertices ``x, y`` in ``units``; origin
            top-left, y down. ``"norm"`` units are fractions of the image width and height
            (0..1), so the zone follows the image when the resolution changes; ``"px"`` are
            pixels of the image as decoded.
        units: ``"px"`` or ``"norm"``; declared, never guessed from the values.
        name: Human-readable name (any Unicode).

    Raises:
        ZoneError: When ``points`` is not `(K, 2)` with K >= 3 or ``units`` is unknown.
    """

    zone_id: str
    points: np.ndarray
    units: Literal["px", "norm"] = "px"
    name: str = ""

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float32)
        try:
            check_array(f"Zone[{self.zone_id}].points", pts, 2, np.float32, (None, 2))
        except ValueError as exc:
            raise ZoneError(str(exc)) from None
        if pts.shape[0] < 3:
            raise ZoneError(f"zone {self.zone_id!r}: a polygon needs at least 3 points, got {pts.shape[0]}")
        if self.units not in ("px", "norm"):
            raise ZoneError(f"zone {self.zone_id!r}: units must be 'px' or 'norm', got {self.units!r}")
        object.__setattr__(self, "points", pts)

    def polygon_px(self, resolution_wh: tuple[int, int]) -> np.ndarray:
        """Return the polygon in pixels of an image of ``resolution_wh`` (width, height).

        Returns:
            `(K, 2)` float32 pixel vertices.
        """
        if self.units == "px":
            return self.points
        w, h = resolution_wh
        return self.points * np.array([w, h], dtype=np.float32)

    def contains(self, points_px: np.ndarray, resolution_wh: tuple[int, int]) -> np.ndarray:
        """Test which points lie inside the zone (boundary counts as inside).

        Args:
            points_px: `(N, 2)` float pixel coordinates, e.g. ``Detections.anchors()``.
            resolution_wh: Width and height of the image the points belong to.

        Returns:
            `(N,)` bool mask.

        Uses OpenCV ``pointPolygonTest`` (even-odd rule for simple polygons).
        """
        pts = np.asarray(points_px, dtype=np.float32).reshape(-1, 2)
        poly = self.polygon_px(resolution_wh).reshape(-1, 1, 2)
        return np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0
                         for x, y in pts], dtype=bool)
