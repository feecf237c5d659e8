"""Embedders: the OSNet convention on the eval-only OSNet export, MobileNetV2, colour histograms."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.base import ModelNotFoundError
from ingest.errors import BaqylauError, ShapeError
from search.embed import (ColourHistogramEmbedder, Embedder, EmbedderError, ImagenetEmbedder,
                          OnnxReidEmbedder)
from tests.conftest import MODELS, PETS_GT, VTEST, need

MOBILENET = MODELS / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx"
#: Evaluation only (research-licensed training data): used here to check the OSNet code path.
OSNET = MODELS / "eval-only" / "osnet-x0_25-msmt17" / "osnet_x0_25_msmt17.onnx"


def person_crops() -> dict[int, list[np.ndarray]]:
    """Real crops from vtest.avi: identities 1 and 9 (dark coat vs jeans), two moments each."""
    need(VTEST)
    gt = np.loadtxt(need(PETS_GT), delimiter=",")
    wanted = {(9, 30), (9, 300), (1, 250), (1, 380)}  # (id, GT frame)
    capture = cv2.VideoCapture(str(VTEST))
    out: dict[int, list[np.ndarray]] = {}
    for frame_index in range(380):
        ok, image = capture.read()
        assert ok
        for tid, gt_frame in wanted:
            if gt_frame == frame_index + 1:
                row = gt[(gt[:, 0] == gt_frame) & (gt[:, 1] == tid)][0]
                x, y, w, h = np.round(row[2:6]).astype(int)
                out.setdefault(tid, []).append(image[y:y + h, x:x + w].copy())
    capture.release()
    return out


@pytest.fixture(scope="module")
def crops() -> dict[int, list[np.ndarray]]:
    return person_crops()


def solid(bgr: tuple[int, int, int], hw: tuple[int, int] = (96, 40)) -> np.ndarray:
    return np.full((*hw, 3), bgr, dtype=np.uint8)


def check_output(embedder: Embedder, n_crops: int, features: np.ndarray) -> None:
    assert features.shape == (n_crops, embedder.dim)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_colour_histogram_embedder_basics() -> None:
    embedder = ColourHistogramEmbedder()
    assert isinstance(embedder, Embedder)
    assert embedder.model_id == "colour_hsv_8x4x4_v1" and embedder.dim == 256
    red_blue = np.vstack([solid((0, 0, 200), (48, 40)), solid((200, 0, 0), (48, 40))])
    blue_red = red_blue[::-1].copy()
    feats = embedder.embed([red_blue, red_blue.copy(), blue_red, cv2.resize(red_blue, (20, 48))])
    check_output(embedder, 4, feats)
    assert feats[0] @ feats[1] == pytest.approx(1.0, abs=1e-6)
    assert feats[0] @ feats[3] == pytest.approx(1.0, abs=1e-3)  # scale-free
    assert feats[0] @ feats[2] < 0.1  # upper and lower body are separate halves
    assert embedder.embed([]).shape == (0, 256)


@pytest.mark.parametrize("kwargs", [{"bins": (0, 4, 4)}, {"bins": (8, 4)}, {"side_margin": 0.5},
                                    {"side_margin": -0.1}])
def test_colour_histogram_embedder_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ColourHistogramEmbedder(**kwargs)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((0, 10, 3), np.uint8), [[1, 2, 3]]])
def test_bad_crops_raise_shape_error(bad: object) -> None:
    with pytest.raises(ShapeError):
        ColourHistogramEmbedder().embed([solid((1, 2, 3)), bad])


def test_missing_model_raises_model_not_found(tmp_path: Path) -> None:
    for cls in (OnnxReidEmbedder, ImagenetEmbedder):
        with pytest.raises(ModelNotFoundError) as info:
            cls(tmp_path / "absent.onnx")
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, BaqylauError)


def test_garbage_model_raises_embedder_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(EmbedderError):
        OnnxReidEmbedder(path)
    with pytest.raises(ValueError):
        OnnxReidEmbedder(need(OSNET), max_batch=0)


def test_osnet_convention_batches_and_matches_people(crops: dict[int, list[np.ndarray]]) -> None:
    embedder = OnnxReidEmbedder(need(OSNET), max_batch=3)
    assert isinstance(embedder, Embedder)
    assert embedder.model_id.startswith("osnet_x0_25_msmt17@") and len(embedder.model_id) == 31
    assert embedder.dim == 512 and embedder.input_hw == (256, 128) and embedder.max_batch == 3
    batch = crops[9] + crops[1]
    feats = embedder.embed(batch)  # 4 crops: batches of 3 and 1
    check_output(embedder, 4, feats)
    one_by_one = np.concatenate([embedder.embed([c]) for c in batch])
    np.testing.assert_allclose(feats, one_by_one, atol=1e-4)
    assert embedder.embed([]).shape == (0, 512)
    same_9, same_1 = feats[0] @ feats[1], feats[2] @ feats[3]
    assert min(same_9, same_1) > max(feats[0] @ feats[2], feats[1] @ feats[3])


def test_imagenet_embedder_runs_fixed_batch_model(crops: dict[int, list[np.ndarray]]) -> None:
    embedder = ImagenetEmbedder(need(MOBILENET), max_batch=8)
    assert embedder.model_id.startswith("mobilenetv2_bottle_imagenet@")
    assert embedder.dim == 1280 and embedder.input_hw == (224, 224)
    assert embedder.max_batch == 1  # the export has a static batch of 1
    feats = embedder.embed(crops[9] + crops[1][:1])
    check_output(embedder, 3, feats)
    assert embedder.embed([]).shape == (0, 1280)


def test_model_ids_differ_between_models() -> None:
    ids = {OnnxReidEmbedder(need(OSNET)).model_id, ImagenetEmbedder(need(MOBILENET)).model_id,
           ColourHistogramEmbedder().model_id, ColourHistogramEmbedder(bins=(16, 4, 4)).model_id}
    assert len(ids) == 4
