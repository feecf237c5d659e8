"""Photo queries on real photos: a street photo with several people, a vtest.avi still around one
ground-truth person (written to tmp_path, never committed), a photo of a street bin with nobody."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from search.embed import ColourHistogramEmbedder
from search.query import (NoPersonError, PhotoFileError, PhotoQueryError, SeveralPeopleError, load_photo,
                          person_from_photo)
from search.store import SightingStore
from tests.conftest import SHARED, YOLOX_PATH, need, pets_clip
from tests.search.test_store import fill

BUS = SHARED / "data" / "images" / "street" / "bus.jpg"
BIN = SHARED / "data" / "images" / "bins" / "amsterdam-garbage-object-detection" / \
    "mdc_photo_cdv_photo_011_1472926799610.jpg"  # a clean container inlet, nobody in view
FRAME = 100  # index into pets_clip(2): vtest.avi frame 200, stream time 20.0 s (camera "cam-b")
GT_ID = 13  # a person standing clear of the others at that moment


@pytest.fixture(scope="module")
def detector():
    from detectors.yolox import YoloxOnnxDetector

    return YoloxOnnxDetector(need(YOLOX_PATH))


def still_of_one_person(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Write the region around GT person 13 (one box width either side) as a JPEG "photo"."""
    images, _, people = pets_clip(2)
    xyxy, ids = people[FRAME]
    x0, y0, x1, y1 = xyxy[ids == GT_ID][0]
    w, h = x1 - x0, y1 - y0
    rx0, ry0 = int(max(0, x0 - w)), int(max(0, y0 - 0.3 * h))
    rx1, ry1 = int(min(768, x1 + w)), int(min(576, y1 + 0.3 * h))
    path = tmp_path / "witness.jpg"
    cv2.imwrite(str(path), images[FRAME][ry0:ry1, rx0:rx1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path, np.array([x0 - rx0, y0 - ry0, x1 - rx0, y1 - ry0], np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_one_person_photo_gives_its_crop_and_finds_the_person(tmp_path: Path, detector) -> None:
    path, gt_box = still_of_one_person(tmp_path)
    photo = load_photo(path)
    person = person_from_photo(photo, detector)
    assert len(person.boxes) == 1 and person.conf >= 0.3 and iou(person.xyxy, gt_box) > 0.5
    assert person.crop.dtype == np.uint8 and person.crop.shape[0] > person.crop.shape[1] > 10
    embedder = ColourHistogramEmbedder()
    with SightingStore(tmp_path / "store") as store:
        fill(store)
        hits = store.similar(embedder.embed([person.crop])[0], embedder.model_id, k=3)
    assert GT_ID in [h.record.track_id for h in hits]


def test_several_people_must_be_chosen(detector) -> None:
    photo = load_photo(need(BUS))
    with pytest.raises(SeveralPeopleError, match="--person N") as info:
        person_from_photo(photo, detector)
    boxes = info.value.boxes
    assert len(boxes) >= 3 and [b.index for b in boxes] == list(range(len(boxes)))
    areas = [(b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)
    assert all(b.describe() in str(info.value) for b in boxes)
    chosen = person_from_photo(photo, detector, choose=1)
    assert np.array_equal(chosen.xyxy, boxes[1].xyxy) and chosen.crop.shape[0] > 300  # a pedestrian ~450 px tall
    with pytest.raises(PhotoQueryError, match="out of range"):
        person_from_photo(photo, detector, choose=len(boxes))


def test_no_person(detector) -> None:
    with pytest.raises(NoPersonError) as info:
        person_from_photo(load_photo(need(BIN)), detector)
    assert "--whole-image" not in str(info.value)  # a square street photo: no crop hint


def test_tight_crop_without_detection_asks_for_whole_image(detector) -> None:
    images, _, people = pets_clip(2)
    xyxy, _ = people[FRAME]
    # a tall strip of empty pavement: where no GT box is, person-shaped (2.5:1)
    for x in range(0, 768 - 60, 20):
        box = np.array([x, 300, x + 60, 450])
        if not any(b[0] < box[2] and b[2] > box[0] and b[1] < box[3] and b[3] > box[1] for b in xyxy):
            break
    strip = images[FRAME][300:450, x:x + 60].copy()
    with pytest.raises(NoPersonError, match="--whole-image"):
        person_from_photo(strip, detector)
    whole = person_from_photo(strip, detector, whole_image=True)
    assert np.array_equal(whole.crop, strip) and whole.conf is None and whole.boxes == ()
    assert whole.crop is not strip
    assert np.array_equal(person_from_photo(strip, None, whole_image=True).crop, strip)
    with pytest.raises(PhotoQueryError, match="detector"):
        person_from_photo(strip, None)


def test_photo_file_errors(tmp_path: Path) -> None:
    bus = need(BUS)
    with pytest.raises(PhotoQueryError, match="MB"):
        load_photo(bus, max_bytes=100_000)
    with pytest.raises(PhotoQueryError, match="longest side"):
        load_photo(bus, max_side_px=1000)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("corrupt.jpg", "empty.jpg"):
        with pytest.raises(PhotoQueryError, match="not a readable image"):
            load_photo(tmp_path / name)
    with pytest.raises(PhotoFileError) as info:
        load_photo(tmp_path / "missing.jpg")
    assert isinstance(info.value, OSError)
    assert load_photo(bus).shape == (1080, 810, 3)
