"""Homography fitting, WGS84 <-> metres, and a real calibration of PETS09-S2L1 (vtest.avi)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration import (
    CalibrationError,
    GroundPoint,
    fit_homography,
    latlon_to_local_m,
    local_m_to_latlon,
)
from tests.conftest import PETS_GT, need

H_TRUE = np.array([[0.05, 0.01, -3.0], [0.002, 0.08, -10.0], [1e-4, 2e-3, 1.0]])
IMG = np.array([[10, 300], [700, 320], [400, 500], [100, 560], [650, 550], [380, 250]], float)


def project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    hom = np.c_[pts, np.ones(len(pts))] @ H.T
    return hom[:, :2] / hom[:, 2:]


def metre_pairs(img: np.ndarray, ground: np.ndarray) -> list[GroundPoint]:
    return [GroundPoint(tuple(p), x_m=g[0], y_m=g[1]) for p, g in zip(img, ground)]


def pets_pairs(n: int = 12) -> tuple[list[GroundPoint], np.ndarray]:
    """~n spread PETS09-S2L1 GT boxes (farthest-point sampling of their bottom-centres):
    image bottom-centre px <-> world ground x, y (metres). Also returns all active GT rows."""
    gt = np.loadtxt(need(PETS_GT), delimiter=",")
    gt = gt[gt[:, 6] == 1]
    img = np.c_[gt[:, 2] + gt[:, 4] / 2, gt[:, 3] + gt[:, 5]]
    sel = [int(np.argmin(np.linalg.norm(img - img.mean(0), axis=1)))]
    dist = np.linalg.norm(img - img[sel[0]], axis=1)
    while len(sel) < n:
        sel.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(img - img[sel[-1]], axis=1))
    pairs = [GroundPoint((round(float(img[i, 0]), 1), round(float(img[i, 1]), 1)), x_m=gt[i, 7], y_m=gt[i, 8])
             for i in sel]
    return pairs, gt


def test_exact_homography_round_trip() -> None:
    hom = fit_homography(metre_pairs(IMG, project(H_TRUE, IMG)))
    assert hom.n_points == 6 and hom.inliers.all() and hom.origin_latlon is None
    assert hom.reprojection_error_m[1] < 1e-4 and hom.reprojection_error_px[1] < 1e-3
    np.testing.assert_allclose(hom.H_img_to_ground, H_TRUE / H_TRUE[2, 2], rtol=1e-4, atol=1e-7)
    probe = np.array([[123.0, 345.0], [600.0, 480.0]])
    np.testing.assert_allclose(hom.img_to_ground(probe), project(H_TRUE, probe), atol=1e-4)
    np.testing.assert_allclose(hom.ground_to_img(hom.img_to_ground(probe)), probe, atol=1e-3)
    with pytest.raises(ValueError):
        hom.H_img_to_ground[0, 0] = 1.0  # read-only


def test_area_and_size_on_a_scaled_plane() -> None:
    # ground = image / 100 with y flipped (north up): a 100x100 px square is 1 m^2
    H = np.array([[0.01, 0, 0], [0, -0.01, 0], [0, 0, 1.0]])
    hom = fit_homography(metre_pairs(IMG, project(H, IMG)))
    assert hom.area_m2([[0, 0], [100, 0], [100, 100], [0, 100]]) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(hom.size_m([10, 20, 60, 220]), [0.5, 2.0], rtol=1e-5)
    assert hom.size_m(np.array([[10, 20, 60, 220]] * 3)).shape == (3, 2)
    with pytest.raises(CalibrationError, match="img_to_latlon|origin"):
        hom.img_to_latlon([1, 2])


def test_horizon_points_have_no_ground_position() -> None:
    hom = fit_homography(metre_pairs(IMG, project(H_TRUE, IMG)))
    # the horizon of H_TRUE: 1e-4 x + 2e-3 y + 1 = 0 -> y = -500 at x = 0
    assert np.isnan(hom.img_to_ground([[0.0, -600.0]])).all()
    with pytest.raises(CalibrationError, match="horizon"):
        hom.area_m2([[0, -600], [100, -600], [100, 400]])


@pytest.mark.parametrize(("lat0", "deg_lat_m", "deg_lon_m"), [
    # length of one degree on the WGS84 ellipsoid (Wikipedia "Latitude", table "Length of a degree")
    (0.0, 110574, 111320), (45.0, 111132, 78847), (60.0, 111412, 55800)])
def test_latlon_metres_match_degree_lengths(lat0: float, deg_lat_m: float, deg_lon_m: float) -> None:
    xy = latlon_to_local_m([[lat0 + 0.001, 12.0], [lat0, 12.001]], (lat0, 12.0))
    np.testing.assert_allclose(xy[0], [0, deg_lat_m / 1000], atol=0.002)
    np.testing.assert_allclose(xy[1], [deg_lon_m / 1000, 0], atol=0.002)


def test_latlon_round_trip_and_fit_in_degrees() -> None:
    origin = (43.2389, 76.8897)  # Almaty
    xy = np.array([[0, 0], [35.5, -12.25], [-80, 140], [200, 3]])
    ll = local_m_to_latlon(xy, origin)
    np.testing.assert_allclose(latlon_to_local_m(ll, origin), xy, atol=1e-6)
    assert latlon_to_local_m([[43.2399, 76.8897]], origin)[0, 1] == pytest.approx(111.1, abs=0.2)
    ground = project(H_TRUE, IMG)
    pairs = [GroundPoint(tuple(p), lat=a, lon=b) for p, (a, b) in zip(IMG, local_m_to_latlon(ground, origin))]
    hom = fit_homography(pairs, origin_latlon=origin)
    assert hom.reprojection_error_m[1] < 1e-3
    np.testing.assert_allclose(hom.img_to_latlon(IMG[:2]), local_m_to_latlon(ground[:2], origin), atol=1e-8)
    # default origin: the first lat/lon pair
    assert fit_homography(pairs).origin_latlon == pytest.approx(tuple(local_m_to_latlon(ground[:1], origin)[0]))


@pytest.mark.parametrize(("img", "ground", "match"), [
    (IMG[:3], None, "at least 4"),
    (np.array([[0, 0], [10, 10], [20, 20], [30, 30], [40, 40]], float), None, "collinear"),
    (IMG[:5], np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4, 0]], float), "collinear"),
    (np.array([[0, 0], [0, 0], [50, 0], [0, 0]], float), None, "collinear|distinct"),
])
def test_degenerate_inputs_raise(img: np.ndarray, ground: np.ndarray | None, match: str) -> None:
    ground = project(H_TRUE, img) if ground is None else ground
    with pytest.raises(CalibrationError, match=match):
        fit_homography(metre_pairs(img, ground))


@pytest.mark.parametrize("kwargs", [{}, {"lat": 1.0}, {"lat": 1.0, "lon": 2.0, "x_m": 0.0, "y_m": 0.0},
                                    {"x_m": float("nan"), "y_m": 0.0}, {"lat": 91.0, "lon": 0.0}])
def test_ground_point_needs_exactly_one_position(kwargs: dict) -> None:
    with pytest.raises(CalibrationError):
        GroundPoint((1.0, 2.0), **kwargs)


def test_ransac_drops_a_mistyped_pair() -> None:
    ground = project(H_TRUE, IMG)
    img = np.r_[IMG, [[200.0, 400.0], [500.0, 420.0]]]
    ground = np.r_[ground, project(H_TRUE, img[-2:])]
    ground[2] += [5.0, 0.0]  # a typo of 5 m
    assert fit_homography(metre_pairs(img, ground)).reprojection_error_m[1] > 1.0
    hom = fit_homography(metre_pairs(img, ground), ransac_threshold_m=0.5)
    assert not hom.inliers[2] and hom.inliers.sum() == 7
    assert hom.reprojection_error_m[1] < 1e-3 and hom.errors_m[2] > 4.0


def test_real_pets09_calibration() -> None:
    """A real homography: PETS09-S2L1 GT boxes' bottom-centres <-> their world ground x, y."""
    pairs, gt = pets_pairs(12)
    hom = fit_homography(pairs)
    rms_m, max_m = hom.reprojection_error_m
    assert rms_m < 0.15 and max_m < 0.3, hom.errors_m
    assert hom.reprojection_error_px[0] < 5.0
    # every other GT box (held out): bottom-centre projected vs its world position
    img = np.c_[gt[:, 2] + gt[:, 4] / 2, gt[:, 3] + gt[:, 5]]
    held_out = np.linalg.norm(hom.img_to_ground(img) - gt[:, 7:9], axis=1)
    assert np.sqrt(np.mean(held_out ** 2)) < 0.15 and held_out.max() < 0.5
    # a person's box bottom edge is a body's width on the ground
    widths = hom.size_m(np.c_[gt[:, 2], gt[:, 3], gt[:, 2] + gt[:, 4], gt[:, 3] + gt[:, 5]])[:, 0]
    assert 0.3 < np.median(widths) < 1.2 and ((widths > 0.3) & (widths < 1.2)).mean() > 0.95
