"""Overflowing-bin detector on real PETS09 frames, people masked by the PETS09 ground truth.

Staged events (real pixels, staged placement): a real clean container cut from a real
Amsterdam photo (``_341_``, the dark "Restafval" container) is pasted onto the lawn of
vtest.avi from the first frame, so the clean reference learns it; real black bin bags cut from a
positive photo (``_012_``) are pasted above its rim or beside it at a known time; removing the
container patch stages "bin missing". Distractors: a gradual brightness ramp, and a second
container pasted on the path where the real PETS09 people walk past and in front of it.

The PETS09 ground truth covers frames 1-400 (40 s at 10 fps). To test with timers of a
realistic shape (learning, then a persistence time) the clip is analysed at 5 fps and played
forward then backward (ping-pong, 80 s in all); timers are shortened (learn 15 s, persistence
15 s) to fit it. The ONNX classifier test uses a stand-in model built here with ``onnx``.
"""

from __future__ import annotations

import time
from fractions import Fraction
from functools import lru_cache

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from calibration.zones import Zone
from detectors.base import ModelNotFoundError
from detectors.bin_overflow import BinOverflowConfig, BinOverflowDetector, OnnxBinClassifier
from detectors.scene import SceneDetector, SceneDetectorError
from detectors.scene_change import SceneChangeConfig
from detectors.types import Detections
from ingest.frame import Frame
from tests.conftest import SHARED, need, pets_clip

BINS = SHARED / "data" / "images" / "bins" / "amsterdam-garbage-object-detection"
CLEAN_PHOTO = BINS / "mdc_photo_cdv_photo_341_1508952332388.jpg"
BAGS_PHOTO = BINS / "mdc_photo_cdv_photo_012_1464463139152.jpg"

STEP = 2  # vtest.avi is 10 fps; analyse at 5 fps
DT_S = 0.2
BIN_XYWH = (80, 340, 80, 90)  # the pasted container on the quiet lawn, full-frame px (768x576)
BUSY_BIN_XYWH = (600, 230, 70, 80)  # a second container on the path where people walk
ABOVE_XYWH = (95, 306, 50, 44)  # bags straddling the rim (y 340): 34 px above, 10 px over the bin
AROUND_XYWH = (172, 390, 56, 46)  # bags on the ground right of the bin
T0_S = 25.0  # onset of every staged event
SCENE = SceneChangeConfig(learn_s=15.0, persistence_s=3.0, clear_s=2.0, short_term_tau_s=2.0,
                          long_term_tau_s=300.0)
CONFIG = BinOverflowConfig(persistence_s=15.0, clear_s=3.0, scene=SCENE)


def box_zone(zone_id: str, xywh: tuple[int, int, int, int], pad: int = 0) -> Zone:
    x, y, w, h = xywh
    return Zone(zone_id, np.array([[x - pad, y - pad], [x + w + pad, y - pad], [x + w + pad, y + h + pad],
                                   [x - pad, y + h + pad]], np.float32))


BIN_ZONE = box_zone("bin-lawn", BIN_XYWH)
AROUND_ZONE = box_zone("bin-lawn-ground", BIN_XYWH, pad=50)
BUSY_ZONE = box_zone("bin-path", BUSY_BIN_XYWH)
BUSY_AROUND = box_zone("bin-path-ground", BUSY_BIN_XYWH, pad=40)


@lru_cache(maxsize=1)
def clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """vtest.avi frames 0..399 at 5 fps played forward then backward, and their GT person boxes."""
    images, _, people = pets_clip(STEP)
    masks = [boxes for boxes, _ in people]
    return images + images[::-1], masks + masks[::-1]


@lru_cache(maxsize=4)
def patch(which: str, wh: tuple[int, int]) -> np.ndarray:
    """A real object cut from a real photo, resized to ``wh``."""
    if which == "bin":  # the dark "Restafval" container, clean (negative photo)
        photo = cv2.imread(str(need(CLEAN_PHOTO)))[740:1480, 1290:1930]
    else:  # black bin bags dumped beside a container (positive photo)
        photo = cv2.imread(str(need(BAGS_PHOTO)))[1640:2200, 640:1320]
    return cv2.resize(photo, wh, interpolation=cv2.INTER_AREA)


def paste(image: np.ndarray, which: str, xywh: tuple[int, int, int, int]) -> None:
    x, y, w, h = xywh
    image[y:y + h, x:x + w] = patch(which, (w, h))


def people(mask: np.ndarray) -> Detections:
    n = len(mask)
    return Detections(mask, np.ones(n, np.float32), np.zeros(n, np.int32), np.arange(n, dtype=np.int64))


def run(detector: BinOverflowDetector, edit=None, start: int = 0, stop_s: float = 80.0,
        bins: tuple = (BIN_XYWH,)) -> tuple[list, float]:
    """Feed the staged clip (from frame ``start`` to ``stop_s``) to the detector; return its
    events and ms per frame."""
    images, masks = clip()
    stop = min(len(images), int(round(stop_s / DT_S)))
    events, spent = [], 0.0
    for index in range(start, stop):
        t = index * DT_S
        image = images[index].copy()
        for xywh in bins:
            paste(image, "bin", xywh)
        if edit is not None:
            image = edit(image, t)
        frame = Frame("pets", index, index, Fraction(1, 5), t, 1.7e9 + t, image)
        begin = time.perf_counter()
        events += detector.update(frame, people(masks[index]), Detections.empty())
        spent += time.perf_counter() - begin
    events += detector.flush(None)
    return events, 1000 * spent / (stop - start)


def bags_at(xywh: tuple[int, int, int, int], until_s: float = float("inf")):
    def edit(image: np.ndarray, t: float) -> np.ndarray:
        if T0_S <= t < until_s:
            paste(image, "bags", xywh)
        return image
    return edit


def detector(**kwargs) -> BinOverflowDetector:
    return BinOverflowDetector("bin-1", BIN_ZONE, AROUND_ZONE, config=kwargs.pop("config", CONFIG), **kwargs)


def test_implements_scene_detector_protocol() -> None:
    assert isinstance(detector(), SceneDetector)


@pytest.mark.parametrize("where, reason, until_s", [
    (ABOVE_XYWH, "above_rim", float("inf")),  # bags stay to the end: only flush ends it
    (AROUND_XYWH, "around_bin", 60.0),  # bags collected at 60 s: the situation ends by itself
])
def test_staged_rubbish_gives_one_alert_with_reason_and_evidence(where, reason, until_s) -> None:
    events, ms = run(detector(), bags_at(where, until_s))
    kinds = [e.kind for e in events]
    assert kinds.count("started") == 1, [(e.kind, e.reason, e.time_s) for e in events]
    started = next(e for e in events if e.kind == "started")
    assert started.alert_type == "bin_overflow" and started.route == "ticketing"
    assert started.reason == reason and started.zone_id == "bin-lawn"
    delay_s = started.time_s - T0_S
    assert CONFIG.persistence_s <= delay_s <= CONFIG.persistence_s + SCENE.persistence_s + 3 * SCENE.short_term_tau_s + 2
    assert T0_S - 1 <= started.start_time_s <= T0_S + SCENE.persistence_s + 3 * SCENE.short_term_tau_s
    x, y, w, h = where
    box = started.xyxy[0]
    assert box[0] <= x + w / 2 <= box[2] and box[1] <= y + h / 2 <= box[3], box
    assert started.area_px[0] >= CONFIG.min_area_px and 0 < started.covered_share <= 1
    assert 0 < started.conf <= 1
    assert started.reference_bgr.shape == started.current_bgr.shape
    assert np.abs(started.reference_bgr.astype(int) - started.current_bgr.astype(int)).mean() > 15
    assert kinds[-1] == "ended" and kinds.count("ended") == 1
    assert kinds.count("updated") <= 2
    ended = events[-1]
    if until_s < 80.0:
        clear_delay_s = ended.time_s - until_s
        assert CONFIG.clear_s <= clear_delay_s <= CONFIG.clear_s + 3, clear_delay_s
        assert ended.situation_id == started.situation_id and ended.frame is not None
        print(f"{reason}: situation ended {clear_delay_s:.1f} s after the bags were taken away")
    else:
        assert ended.frame is None  # by flush
    print(f"{reason}: alert {delay_s:.1f} s after onset (onset stated {started.start_time_s - T0_S:+.1f} s), "
          f"{ms:.2f} ms/frame")


def test_bags_taken_away_before_persistence_give_nothing() -> None:
    stop_s = T0_S + 8.0 + CONFIG.persistence_s + 10.0  # well past when an alert would have come
    events, _ = run(detector(), bags_at(AROUND_XYWH, until_s=T0_S + 8.0), stop_s=stop_s)
    assert events == []


def test_removed_bin_gives_bin_missing() -> None:
    def remove(image: np.ndarray, t: float) -> np.ndarray:
        if t >= T0_S:
            x, y, w, h = BIN_XYWH
            image[y:y + h, x:x + w] = clip()[0][int(round(t / DT_S))][y:y + h, x:x + w]
        return image
    events, _ = run(detector(), remove)
    started = [e for e in events if e.kind == "started"]
    assert len(started) == 1 and started[0].reason == "bin_missing", [(e.kind, e.reason) for e in events]
    delay_s = started[0].time_s - T0_S
    assert CONFIG.persistence_s <= delay_s <= CONFIG.persistence_s + 2
    assert started[0].conf >= CONFIG.missing_share
    print(f"bin_missing: alert {delay_s:.1f} s after removal")


def test_brightness_ramp_gives_nothing() -> None:
    def ramp(image: np.ndarray, t: float) -> np.ndarray:
        gain = 0.75 + 0.5 * min(max((t - 20.0) / 40.0, 0.0), 1.0)  # 0.75 -> 1.25 over 40 s
        return cv2.convertScaleAbs(image, alpha=gain)
    events, _ = run(detector(), ramp)
    assert events == []


def test_people_passing_a_bin_on_the_path_give_nothing() -> None:
    busy = BinOverflowDetector("bin-2", BUSY_ZONE, BUSY_AROUND, config=CONFIG)
    images, masks = clip()
    x, y, w, h = BUSY_BIN_XYWH
    watched = np.array([x - 40, y - 60, x + w + 40, y + h + 40])
    crossings = sum(bool(((m[:, 0] < watched[2]) & (m[:, 2] > watched[0]) & (m[:, 1] < watched[3])
                         & (m[:, 3] > watched[1])).any()) for m in masks)
    assert crossings > 50  # real people really pass the bin in this clip
    events, ms = run(busy, bins=(BUSY_BIN_XYWH,))
    assert events == []
    print(f"path bin: {crossings} of {len(masks)} frames with people at the bin, no alert, {ms:.2f} ms/frame")


def test_restart_resumes_from_saved_reference(tmp_path) -> None:
    first = detector()
    images, masks = clip()
    for index in range(100):  # 20 s: learning (15 s) is over
        image = images[index].copy()
        paste(image, "bin", BIN_XYWH)
        first.update(Frame("pets", index, index, Fraction(1, 5), index * DT_S, 0.0, image),
                     people(masks[index]), Detections.empty())
    first.save_state(tmp_path)
    second = detector()
    assert second.load_state(tmp_path)
    # Without the saved reference the restarted detector would learn until 35 s, bags included.
    events, _ = run(second, bags_at(AROUND_XYWH), start=100)
    assert [e.reason for e in events if e.kind == "started"] == ["around_bin"]
    assert not detector().load_state(tmp_path / "elsewhere")


def standin_model(path, bias: tuple[float, float]) -> None:
    """A stand-in ONNX classifier (not a trained model): global average pool, then a linear
    layer with zero weights, so its logits are ``bias`` whatever the crop."""
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "standin", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [0.0] * 6),
         helper.make_tensor("b", TensorProto.FLOAT, [2], list(bias))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_onnx_classifier_standin_model(tmp_path) -> None:
    yes, no = tmp_path / "yes.onnx", tmp_path / "no.onnx"
    standin_model(yes, (0.0, 3.0))
    standin_model(no, (3.0, 0.0))
    crop = np.full((40, 60, 3), 90, np.uint8)
    p_yes = OnnxBinClassifier(yes).predict(crop)
    assert p_yes == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-5)
    assert OnnxBinClassifier(no, output="sigmoid", positive_index=0).predict(crop) == pytest.approx(
        1 / (1 + np.exp(-3.0)), abs=1e-5)

    confirmed, _ = run(detector(classifier=OnnxBinClassifier(yes)), bags_at(AROUND_XYWH))
    started = [e for e in confirmed if e.kind == "started"]
    assert len(started) == 1 and started[0].conf == pytest.approx(p_yes, abs=1e-5)
    rejected, _ = run(detector(classifier=OnnxBinClassifier(no)), bags_at(AROUND_XYWH), stop_s=55.0)
    assert rejected == []


def test_missing_model_raises() -> None:
    with pytest.raises(ModelNotFoundError):
        OnnxBinClassifier("/nonexistent/bin.onnx")


@pytest.mark.parametrize("kwargs", [
    {"persistence_s": -1.0}, {"missing_share": 0.0}, {"present_share": 1.5}, {"min_area_px": 0.0},
    {"scene": "defaults"},
])
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(SceneDetectorError):
        BinOverflowConfig(**kwargs)


@pytest.mark.parametrize("rim_line", [np.zeros((3, 2), np.float32), np.ones((2, 2), np.float32)])
def test_bad_rim_line_raises(rim_line) -> None:
    with pytest.raises(SceneDetectorError):
        BinOverflowDetector("bin-1", BIN_ZONE, rim_line=rim_line)


def test_mixed_units_raise() -> None:
    around = Zone("norm", np.array([[0.1, 0.5], [0.3, 0.5], [0.3, 0.8]], np.float32), "norm")
    with pytest.raises(SceneDetectorError):
        BinOverflowDetector("bin-1", BIN_ZONE, around)
