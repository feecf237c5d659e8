"""Dual-background scene change on real PETS09 frames, people masked by the PETS09 ground truth.

Staged events: a real litter photo patch (the red carton of naver-recycle-trash/1.jpg) pasted into
real frames; light ramps and shake are applied synthetically to the real frames.
"""

from __future__ import annotations

import time
from fractions import Fraction
from functools import lru_cache

import cv2
import numpy as np
import pytest

from calibration.zones import Zone
from detectors.scene_change import SceneChangeConfig, SceneChangeError, ZoneSceneChange
from ingest.frame import Frame
from tests.conftest import SHARED, need, pets_clip

LITTER = SHARED / "data" / "images" / "litter" / "naver-recycle-trash" / "1.jpg"
#: Lawn and road across the middle of vtest.avi, full-frame pixels (768x576).
ZONE = Zone("lawn_road", np.array([[0, 200], [767, 200], [767, 480], [0, 575]], np.float32))
CONFIG = SceneChangeConfig(persistence_s=5.0, clear_s=1.0, learn_s=4.0)
STEP = 2  # vtest.avi is 10 fps; analyse at 5 fps
OBJECT_XY = (300, 420)  # top-left of the pasted 30x30 object, on the lawn inside ZONE
T0_S = 8.0


@lru_cache(maxsize=1)
def clip() -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    """Frames 0..399 of vtest.avi sampled at 5 fps, their times, and GT person boxes (xyxy)."""
    images, times, people = pets_clip(STEP)
    return images, times, [boxes for boxes, _ in people]


@lru_cache(maxsize=1)
def litter_patch() -> np.ndarray:
    photo = cv2.imread(str(need(LITTER)))
    return cv2.resize(photo[300:660, 660:1000], (30, 30), interpolation=cv2.INTER_AREA)  # red carton


def run(edit=None, config: SceneChangeConfig = CONFIG) -> tuple[list, float]:
    """Feed the clip (optionally edited per frame) to one detector; return states and ms/frame."""
    images, times, masks = clip()
    detector = ZoneSceneChange(ZONE, config)
    states, spent = [], 0.0
    for index, (image, t, mask) in enumerate(zip(images, times, masks)):
        if edit is not None:
            image = edit(image.copy(), t)
        frame = Frame("pets", index * STEP, index * STEP, Fraction(1, 10), t, 0.0, image)
        start = time.perf_counter()
        states.append(detector.update(frame, mask))
        spent += time.perf_counter() - start
    return states, 1000 * spent / len(images)


def paste(until_s: float = float("inf")):
    def edit(image: np.ndarray, t: float) -> np.ndarray:
        if T0_S <= t < until_s:
            x, y = OBJECT_XY
            image[y:y + 30, x:x + 30] = litter_patch()
        return image
    return edit


def test_empty_scene_with_people_gives_no_static_region() -> None:
    states, ms = run()
    assert all(len(s.static_boxes) == 0 for s in states), [s.static_boxes for s in states if len(s.static_boxes)]
    assert all(s.covered_share == 0 for s in states)
    print(f"empty scene: {ms:.2f} ms per zone per frame")


def test_pasted_object_becomes_static_and_gives_evidence() -> None:
    states, _ = run(paste())
    hits = [s for s in states if len(s.static_boxes)]
    assert hits, "the pasted object was never reported"
    first = hits[0]
    delay_s = first.time_s - T0_S
    assert CONFIG.persistence_s <= delay_s <= CONFIG.persistence_s + 3 * CONFIG.short_term_tau_s + 1
    x, y = OBJECT_XY
    box = first.static_boxes[0]
    assert box[0] <= x + 15 <= box[2] and box[1] <= y + 15 <= box[3], box
    assert first.covered_share > 0 and first.static_since_s[0] >= CONFIG.persistence_s
    assert first.static_mask[y + 15, x + 15]
    reference, current = first.crop(box)
    assert reference.shape == current.shape and reference.dtype == np.uint8
    assert np.abs(reference.astype(int) - current.astype(int)).mean() > 20  # before vs after differ
    assert all(len(s.static_boxes) == 1 for s in states if s.time_s >= first.time_s)
    print(f"pasted object: reported {delay_s:.1f} s after onset")


def test_object_removed_before_persistence_gives_nothing() -> None:
    states, _ = run(paste(until_s=T0_S + 4.0))
    assert all(len(s.static_boxes) == 0 for s in states)


def test_brightness_ramp_gives_no_static_region() -> None:
    def ramp(image: np.ndarray, t: float) -> np.ndarray:
        gain = 0.7 + 0.6 * min(max((t - 5.0) / 20.0, 0.0), 1.0)  # 0.7 -> 1.3 over 20 s
        return cv2.convertScaleAbs(image, alpha=gain)
    states, _ = run(ramp)
    assert all(len(s.static_boxes) == 0 for s in states)


def test_camera_shake_gives_no_static_region() -> None:
    rng = np.random.default_rng(0)

    def shake(image: np.ndarray, t: float) -> np.ndarray:
        dx, dy = rng.choice([-3, 3], size=2)
        warp = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(image, warp, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    states, _ = run(shake)
    assert all(len(s.static_boxes) == 0 for s in states)
    assert np.mean([np.abs(s.shift_px).max() for s in states[1:]]) > 1.5  # shifts were compensated


@pytest.mark.parametrize("kwargs", [
    {"persistence_s": -1.0}, {"fg_threshold": 0.0}, {"short_term_tau_s": 400.0},
])
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(SceneChangeError):
        SceneChangeConfig(**kwargs)


def test_learning_period_then_clean_reference_and_change_share() -> None:
    states, _ = run(paste())
    assert states[0].learning and states[0].clean_bgr is None and states[0].changed_to_clean() == 0.0
    learned = [s for s in states if not s.learning]
    assert learned and learned[0].time_s >= CONFIG.learn_s
    assert all(len(s.static_boxes) == 0 and not s.static_mask.any() for s in states if s.learning)
    x, y = OBJECT_XY
    box = np.array([x, y, x + 30, y + 30], np.float32)
    before = [s for s in learned if s.time_s < T0_S]
    after = [s for s in learned if s.time_s > T0_S + 1 and s.visible_share(box) > 0.9]
    assert max(s.changed_to_clean(box) for s in before) < 0.05
    assert np.median([s.changed_to_clean(box) for s in after]) > 0.5
    assert np.median([s.changed_to_clean() for s in learned]) < 0.02  # the whole zone stays clean
    reference, current = after[-1].crop(box)
    assert np.abs(reference.astype(int) - current.astype(int)).mean() > 20


def test_clean_reference_survives_a_light_ramp() -> None:
    def ramp(image: np.ndarray, t: float) -> np.ndarray:
        return cv2.convertScaleAbs(image, alpha=1.0 - 0.35 * min(max((t - 5.0) / 25.0, 0.0), 1.0))
    states, _ = run(ramp)
    late = [s for s in states if s.time_s > 30]
    assert np.median([s.changed_to_clean() for s in late]) < 0.03


def test_saved_models_resume_after_restart(tmp_path) -> None:
    images, times, masks = clip()
    first = ZoneSceneChange(ZONE, CONFIG)
    path = tmp_path / "square" / "lawn_road.npz"
    assert not first.save(path)  # nothing learned yet
    for index in range(len(images)):
        if times[index] > 6.0:
            break
        first.update(Frame("pets", index * STEP, index * STEP, Fraction(1, 10), times[index], 0.0,
                           images[index]), masks[index])
    assert first.save(path) and path.is_file()

    # a "restart" at 12 s: the object (pasted from 8 s) is already there and must still be found
    second = ZoneSceneChange(ZONE, CONFIG)
    assert second.load(path)
    reported, states = [], []
    for index in range(len(images)):
        if times[index] < 12.0:
            continue
        image = paste()(images[index].copy(), times[index])
        state = second.update(Frame("pets", index * STEP, index * STEP, Fraction(1, 10), times[index], 0.0,
                                    image), masks[index])
        states.append(state)
        reported += [state.time_s] if len(state.static_boxes) else []
    assert not states[0].learning  # no relearning after the restart
    assert reported and reported[0] - 12.0 <= CONFIG.persistence_s + 3 * CONFIG.short_term_tau_s + 1

    other = ZoneSceneChange(Zone("other", ZONE.points + 5, ZONE.units), CONFIG)
    assert not other.load(path)  # saved for another polygon
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert not ZoneSceneChange(ZONE, CONFIG).load(tmp_path / "broken.npz")
