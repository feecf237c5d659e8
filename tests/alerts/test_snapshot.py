"""Snapshots: a real JPEG of the right size, input untouched, atomic and clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alerts.snapshot import SnapshotError, render_snapshot, to_ascii, write_snapshot
from ingest.errors import ShapeError
from tests.conftest import VTEST


def scene(h: int = 240, w: int = 320) -> np.ndarray:
    """A textured BGR test image: the first frame of vtest.avi when present, else a gradient."""
    if VTEST.exists():
        ok, img = cv2.VideoCapture(str(VTEST)).read()
        if ok:
            return cv2.resize(img, (w, h))
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([xx % 256, yy % 256, (xx + yy) % 256]).astype(np.uint8)


def test_writes_decodable_jpeg_and_keeps_input(tmp_path):
    image = scene()
    before = image.copy()
    zone = np.array([[40, 60], [280, 60], [300, 230], [20, 230]], np.float32)
    boxes = np.array([[50, 70, 90, 200], [200, 100, 330, 260]], np.float32)   # 2nd box leaves the image
    out = write_snapshot(tmp_path / "snaps" / "cam-1" / "a.jpg", image, boxes,
                         ["person #12 0.87", "адам #3 0.51"], zone, title="Абай даңғылы 2025-03-01 18:30:03Z")
    assert out == tmp_path / "snaps" / "cam-1" / "a.jpg"
    decoded = cv2.imread(str(out))
    assert decoded is not None and decoded.shape == (240, 320, 3)
    assert np.array_equal(image, before)
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.jpg"]       # no temp file left
    # Something was drawn: the zone interior is tinted and the box outline is red.
    assert np.abs(decoded.astype(int) - before.astype(int)).mean() > 5


def test_render_draws_zone_boxes_and_title():
    image = np.zeros((120, 160, 3), np.uint8)
    zone = np.array([[0.0, 0.0], [159.0, 0.0], [159.0, 119.0], [0.0, 119.0]])
    drawn = render_snapshot(image, np.array([[40, 40, 100, 100]]), [""], zone, title=None)
    assert image.max() == 0
    assert tuple(drawn[70, 70]) != (0, 0, 0)                              # zone fill
    assert tuple(drawn[70, 40]) == (0, 0, 255)                            # box edge, red BGR
    titled = render_snapshot(image, np.zeros((0, 4)), [], None, title="cam 1")
    assert titled[:20].any() and not titled[60:].any()                   # title only at the top


def test_to_ascii():
    assert to_ascii("Абай даңғылы, Шымкент – Café 北京") == "Abai dangyly, Shymkent  Cafe "
    assert to_ascii("ӘҒҚҢӨҰҮҺІ").isascii()


def test_overwrite_replaces_atomically(tmp_path):
    path = tmp_path / "a.jpg"
    write_snapshot(path, scene(), np.zeros((0, 4)), [])
    write_snapshot(path, scene(100, 80), np.zeros((0, 4)), [], jpeg_quality=50)
    assert cv2.imread(str(path)).shape == (100, 80, 3)


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"image": np.zeros((10, 10), np.uint8)}, ShapeError, "image"),
    ({"image": np.zeros((10, 10, 3), np.float32)}, ShapeError, "image"),
    ({"xyxy": np.zeros((2, 3))}, ShapeError, "xyxy"),
    ({"labels": ["a", "b"]}, ShapeError, "labels"),
    ({"zone_polygon_px": np.zeros((4, 3))}, ShapeError, "zone_polygon_px"),
    ({"jpeg_quality": 0}, ValueError, "jpeg_quality"),
])
def test_bad_inputs(tmp_path, kw, exc, match):
    args = dict(path=tmp_path / "a.jpg", image=np.zeros((10, 10, 3), np.uint8),
                xyxy=np.array([[1, 1, 5, 5]], np.float32), labels=["a"], zone_polygon_px=None)
    args.update(kw)
    with pytest.raises(exc, match=match):
        write_snapshot(**args)


def test_unwritable_dir_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SnapshotError, match="cannot write snapshot") as info:
        write_snapshot(blocker / "a.jpg", np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4)), [])
    assert isinstance(info.value, OSError)
