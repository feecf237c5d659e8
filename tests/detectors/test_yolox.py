"""YOLOX ONNX detector on real images with the real YOLOX-nano model."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from detectors import (COCO80, Detector, DetectorError, ModelNotFoundError, YoloxOnnxDetector,
                       load_class_names)
from detectors.types import Detections
from ingest.errors import ShapeError
from tests.conftest import MODELS, SHARED, VTEST, YOLOX_PATH, need

BUS = SHARED / "data" / "images" / "street" / "bus.jpg"


@pytest.fixture(scope="module")
def detector() -> YoloxOnnxDetector:
    return YoloxOnnxDetector(need(YOLOX_PATH))


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    image = cv2.imread(str(need(BUS)))
    assert image is not None
    return image


@pytest.fixture(scope="module")
def vtest_frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(need(VTEST)))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.conf, b.conf, atol=1e-5)
    np.testing.assert_array_equal(a.class_id, b.class_id)


def test_detector_attributes(detector: YoloxOnnxDetector) -> None:
    assert isinstance(detector, Detector)
    assert detector.name == "yolox_nano"
    assert detector.class_names == COCO80
    assert detector.provider == "CPUExecutionProvider"
    assert detector.max_batch == 1  # this export has a static batch axis of 1
    assert detector.input_hw == (416, 416)


def test_bus_image(detector: YoloxOnnxDetector, bus: np.ndarray) -> None:
    h, w = bus.shape[:2]
    (det,) = detector.detect([bus], ["street"])
    names = [detector.class_names[c] for c in det.class_id]
    persons = det[det.class_id == COCO80.index("person")]
    buses = det[det.class_id == COCO80.index("bus")]
    assert len(persons) >= 3, names
    assert len(buses) >= 1, names
    bx1, by1, bx2, by2 = buses.xyxy[np.argmax(buses.conf)]
    assert (bx2 - bx1) * (by2 - by1) > 0.3 * w * h  # the bus fills much of the photo
    pw = persons.xyxy[:, 2] - persons.xyxy[:, 0]
    ph = persons.xyxy[:, 3] - persons.xyxy[:, 1]
    assert np.all(ph > 1.5 * pw) and np.all(ph > 0.25 * h)  # tall, narrow, near the camera
    assert np.all(det.xyxy >= 0) and np.all(det.xyxy[:, [0, 2]] <= w)
    assert np.all(det.xyxy[:, [1, 3]] <= h)
    assert det.conf.dtype == np.float32 and np.all((det.conf >= 0.3) & (det.conf <= 1))
    assert np.all(det.track_id == -1)


def test_black_frame_and_empty_batch(detector: YoloxOnnxDetector) -> None:
    (det,) = detector.detect([np.zeros((576, 768, 3), np.uint8)], ["black"])
    assert len(det) == 0 and det.xyxy.shape == (0, 4)
    assert detector.detect([], []) == []


def test_batch_equals_one_by_one(detector: YoloxOnnxDetector, bus: np.ndarray,
                                 vtest_frame: np.ndarray) -> None:
    batch = detector.detect([bus, vtest_frame], ["a", "b"])
    singles = [detector.detect([img], [cam])[0] for img, cam in ((bus, "a"), (vtest_frame, "b"))]
    assert len(batch) == 2
    for a, b in zip(batch, singles):
        assert_same(a, b)
    assert len(batch[1]) >= 3  # several pedestrians on PETS09 frame 0


def test_dynamic_batch_model_runs_one_session_call(tmp_path: Path, detector: YoloxOnnxDetector,
                                                   bus: np.ndarray,
                                                   vtest_frame: np.ndarray) -> None:
    """A copy of the model with a symbolic batch axis gives the same boxes, batched."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(YOLOX_PATH))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:  # the export reshapes to (1, 85, -1): make that (N, 85, -1)
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            shape[0] = 0
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    path = tmp_path / "yolox_nano_dynamic.onnx"
    onnx.save(model, str(path))

    dynamic = YoloxOnnxDetector(path, max_batch=2)
    assert dynamic.max_batch == 2
    images = [bus, vtest_frame, bus]  # 2 + 1: exercises the split into chunks
    cams = ["a", "b", "c"]
    for a, b in zip(dynamic.detect(images, cams), detector.detect(images, cams)):
        assert_same(a, b)


def test_output_decoded_rows() -> None:
    """With ``output_decoded=True`` rows are taken as input-pixel ``cx, cy, w, h`` as they are."""
    det = YoloxOnnxDetector(need(YOLOX_PATH), output_decoded=True)
    rows = np.zeros((3549, 85), np.float32)
    rows[0, :6] = [208, 208, 100, 200, 0.9, 0.9]  # person, score 0.81, bottom clipped
    rows[1, :6] = [210, 208, 100, 200, 0.9, 0.5]  # duplicate, suppressed by NMS
    rows[2, [0, 1, 2, 3, 4, 5 + 5]] = [400, 100, 80, 40, 0.8, 0.8]  # bus, right side clipped
    out = det._postprocess(rows, scale=0.5, shape_hw=(400, 832))  # image 2x the input
    np.testing.assert_allclose(out.xyxy, [[316, 216, 516, 400], [720, 160, 832, 240]])
    np.testing.assert_allclose(out.conf, [0.81, 0.64], atol=1e-6)
    assert out.class_id.tolist() == [0, 5]


def test_missing_model() -> None:
    with pytest.raises(ModelNotFoundError, match="not found") as info:
        YoloxOnnxDetector("/nonexistent/yolox.onnx")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DetectorError)
    assert "\n" not in str(info.value)


def test_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="cannot load"):
        YoloxOnnxDetector(bad)


def test_unavailable_provider_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with caplog.at_level(logging.INFO):  # provider choice logs from detectors.onnx, loading from yolox
        det = YoloxOnnxDetector(need(YOLOX_PATH),
                                providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert det.provider == "CPUExecutionProvider"
    assert any("CUDAExecutionProvider is not available" in r.message for r in caplog.records)
    assert any("provider CPUExecutionProvider" in r.message for r in caplog.records)


@pytest.mark.parametrize(("images", "camera_ids", "error"), [
    ([np.zeros((10, 10), np.uint8)], ["a"], ShapeError),
    ([np.zeros((10, 10, 3), np.float32)], ["a"], ShapeError),
    ([np.zeros((0, 10, 3), np.uint8)], ["a"], ShapeError),
    ([np.zeros((10, 10, 3), np.uint8)], ["a", "b"], ValueError),
])
def test_bad_input(detector: YoloxOnnxDetector, images: list, camera_ids: list,
                   error: type[Exception]) -> None:
    with pytest.raises(error):
        detector.detect(images, camera_ids)


@pytest.mark.parametrize("kwargs", [{"conf_threshold": 1.5}, {"nms_iou_threshold": -0.1},
                                    {"max_batch": 0}])
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        YoloxOnnxDetector(need(YOLOX_PATH), **kwargs)


def test_coco_names(tmp_path: Path) -> None:
    assert len(COCO80) == 80 and COCO80[0] == "person" and COCO80[5] == "bus"
    shipped = load_class_names(need(MODELS / "yolox-nano-coco" / "coco_classes.txt"))
    assert len(shipped) == 80 and shipped[0] == "person"  # the file uses VOC-style spellings
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError):
        load_class_names(empty)


def test_cross_class_duplicates_are_merged(yolox_path) -> None:
    """One object reported as two classes with near-identical boxes gives one box."""
    det = YoloxOnnxDetector(yolox_path)
    rows = np.zeros((det._grid.shape[0], 85), np.float32)  # noqa: SLF001 - synthetic raw output
    # two anchors next to each other, same box, different classes (car 2, truck 7)
    for a, cls, s in ((0, 2, 0.9), (1, 7, 0.7)):
        rows[a, :4] = [-det._grid[a, 0] + 50 / det._stride[a, 0],  # noqa: SLF001
                       -det._grid[a, 1] + 50 / det._stride[a, 0], np.log(40 / det._stride[a, 0]),  # noqa: SLF001
                       np.log(30 / det._stride[a, 0])]  # noqa: SLF001
        rows[a, 4], rows[a, 5 + cls] = 1.0, s
    out = det._postprocess(rows, 1.0, (416, 416))  # noqa: SLF001
    assert len(out) == 1 and out.class_id.tolist() == [2]
    det.cross_class_iou_threshold = None
    assert len(det._postprocess(rows, 1.0, (416, 416))) == 2  # noqa: SLF001
