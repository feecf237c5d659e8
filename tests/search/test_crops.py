"""Crop quality terms and the best-k keeper, on synthetic frames and a real vtest.avi frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detectors.types import Detections
from ingest.errors import ShapeError
from search.crops import EDGE_FACTOR, BestCrops, crop_quality
from tests.conftest import VTEST, need

BOX = (100.0, 50.0, 160.0, 250.0)  # 60 x 200 px, well inside a 480 x 640 frame


def textured(seed: int = 0, hw: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A sharp random-texture frame (high Laplacian variance everywhere)."""
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def test_quality_terms_order_crops() -> None:
    image = textured()
    whole = crop_quality(image, BOX)
    assert 0.9 < whole <= 1.0
    small = crop_quality(image, (100, 50, 120, 114))  # 64 px tall: half the size term
    assert small == pytest.approx(whole / 2, rel=0.05)
    blurred = crop_quality(cv2.GaussianBlur(image, (0, 0), 4), BOX)
    assert blurred < 0.5 * whole
    cut = crop_quality(image, (-10, 50, 50, 250))
    assert cut == pytest.approx(EDGE_FACTOR * whole, rel=0.05)
    half_hidden = crop_quality(image, BOX, [(130, 0, 300, 300)])
    assert half_hidden == pytest.approx(whole / 2, rel=0.05)
    # overlapping occluders count once (union), disjoint ones add up
    assert crop_quality(image, BOX, [(130, 0, 300, 300), (140, 0, 300, 300)]) == pytest.approx(
        half_hidden)
    assert crop_quality(image, BOX, [(0, 0, 1000, 1000)]) == 0.0
    assert crop_quality(image, (700, 10, 800, 100)) == 0.0  # outside the frame


@pytest.mark.parametrize("image, box", [
    (np.zeros((10, 10), np.uint8), (0, 0, 5, 5)),
    (np.zeros((10, 10, 3), np.float32), (0, 0, 5, 5)),
    (np.zeros((10, 10, 3), np.uint8), (0, 0, 5)),
    (np.zeros((10, 10, 3), np.uint8), (0, 0, np.nan, 5)),
])
def test_bad_inputs_raise_shape_error(image: np.ndarray, box: tuple) -> None:
    with pytest.raises(ShapeError):
        crop_quality(image, box)


def test_best_crops_keeps_k_best_copies() -> None:
    keeper = BestCrops(k=2)
    image = textured(1)
    heights = [40, 120, 80, 20, 100]
    kept = [keeper.offer(7, image, (10, 10, 50, 10 + h), time_s=i / 10, frame_index=i)
            for i, h in enumerate(heights)]
    assert kept == [True, True, True, False, True]
    best = keeper.best(7)
    assert [c.frame_index for c in best] == [1, 4]  # the two tallest, best first
    assert best[0].quality >= best[1].quality
    assert best[0].crop.shape == (120, 40, 3) and best[0].time_s == pytest.approx(0.1)
    assert best[0].xyxy.dtype == np.float32
    image[:] = 0  # kept crops are copies, not views of the caller's frame
    assert best[0].crop.any()
    assert keeper.track_ids == [7]
    assert len(keeper.pop(7)) == 2 and keeper.best(7) == [] and keeper.track_ids == []


def test_best_crops_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BestCrops(k=0)
    with pytest.raises(ValueError):
        BestCrops(min_quality=1.5)
    keeper = BestCrops(min_quality=0.9)
    assert not keeper.offer(1, textured(), (10, 10, 30, 40))  # too small for the bar
    assert keeper.best(1) == []


def test_offer_detections_on_real_frame() -> None:
    capture = cv2.VideoCapture(str(need(VTEST)))
    ok, image = capture.read()
    capture.release()
    assert ok
    # GT frame 1 of PETS09-S2L1: ids 9, 15, 19 (xywh), plus an untracked box overlapping id 15
    xywh = np.array([[499, 158, 31, 75], [258, 219, 33, 89], [633, 242, 42, 81],
                     [270, 230, 30, 80]], dtype=np.float32)
    xyxy = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])
    dets = Detections(xyxy=xyxy, conf=np.ones(4, np.float32), class_id=np.zeros(4, np.int32),
                      track_id=np.array([9, 15, 19, -1], np.int64))
    keeper = BestCrops(k=1)
    assert keeper.offer_detections(image, dets, time_s=0.0, frame_index=0) == 3
    assert sorted(keeper.track_ids) == [9, 15, 19]
    alone = crop_quality(image, xyxy[1])
    assert keeper.best(15)[0].quality < 0.6 * alone  # mostly covered by the untracked box
    assert keeper.best(9)[0].crop.shape == (75, 31, 3)


def test_min_gap_keeps_crops_from_different_moments() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    keeper = BestCrops(k=3, min_gap_s=1.0)
    for i, h in enumerate([100, 110, 120, 130, 60, 70]):  # growing box over 0.0..0.3 s, then later
        t = 0.1 * i if i < 4 else 2.0 + 1.5 * (i - 4)
        keeper.offer(7, image, (10, 10, 60, 10 + h), time_s=t)
    kept = keeper.best(7)
    times = sorted(c.time_s for c in kept)
    assert len(kept) == 3 and all(b - a >= 1.0 for a, b in zip(times, times[1:]))
    assert kept[0].crop.shape[0] == 130  # the best of the close-together burst survives
    with pytest.raises(ValueError):
        BestCrops(min_gap_s=-1)
