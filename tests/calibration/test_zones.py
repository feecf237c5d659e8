"""Zones: declared units, containment of anchor points, resolution changes."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.zones import Zone, ZoneError

SQUARE = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]


def test_norm_zone_follows_resolution():
    z = Zone("z", np.array(SQUARE), "norm")
    pts = np.array([[50, 50], [10, 10], [100, 100]], np.float32)
    assert z.contains(pts, (200, 200)).tolist() == [True, False, True]  # boundary is inside
    assert z.contains(pts, (400, 400)).tolist() == [False, False, True]
    assert z.polygon_px((640, 480))[0].tolist() == [160.0, 120.0]


def test_px_zone_ignores_resolution():
    z = Zone("z", np.array([[0, 0], [100, 0], [100, 100]]), "px")
    assert z.contains(np.array([[60, 30]]), (1920, 1080)).tolist() == [True]
    assert z.contains(np.zeros((0, 2)), (10, 10)).shape == (0,)


@pytest.mark.parametrize("points,units,needle", [
    ([[0, 0], [1, 1]], "norm", "at least 3"),
    ([[0, 0, 0], [1, 1, 1], [0, 1, 1]], "norm", "expected shape"),
    (SQUARE, "inches", "units must be"),
])
def test_bad_zones(points, units, needle):
    with pytest.raises(ZoneError, match=needle):
        Zone("bad", np.array(points), units)  # type: ignore[arg-type]
