"""The shared Detections record: shape checks, immutability, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.types import Detections
from ingest.errors import ShapeError


def make(n: int = 2) -> Detections:
    xyxy = np.array([[0, 0, 10, 20], [5, 5, 15, 45]], np.float32)[:n]
    return Detections(xyxy, np.full(n, 0.5, np.float32), np.zeros(n, np.int32),
                      data={"area": (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])})


def test_empty_and_defaults():
    e = Detections.empty()
    assert len(e) == 0 and e.track_id.dtype == np.int64 and e.anchors().shape == (0, 2)
    assert (make().track_id == -1).all()


@pytest.mark.parametrize("field,value,needle", [
    ("xyxy", np.zeros((2, 3), np.float32), "Detections.xyxy"),
    ("xyxy", np.zeros((2, 4), np.float64), "float32"),
    ("conf", np.zeros(3, np.float32), "Detections.conf"),
    ("class_id", np.zeros(2, np.int64), "Detections.class_id"),
])
def test_bad_shapes_name_the_field(field, value, needle):
    kwargs = dict(xyxy=np.zeros((2, 4), np.float32), conf=np.zeros(2, np.float32), class_id=np.zeros(2, np.int32))
    kwargs[field] = value
    with pytest.raises(ShapeError, match=needle):
        Detections(**kwargs)


def test_with_track_ids_returns_a_new_object():
    d = make()
    t = d.with_track_ids(np.array([3, 4]))
    assert (d.track_id == -1).all() and t.track_id.tolist() == [3, 4]
    with pytest.raises(AttributeError):
        d.conf = np.ones(2, np.float32)  # type: ignore[misc]


def test_anchor_bottom_centre():
    assert make().anchors().tolist() == [[5.0, 20.0], [10.0, 45.0]]
    with pytest.raises(ValueError):
        make().anchors("feet")


def test_pickle_round_trip():
    d = make().with_track_ids(np.array([1, 2]))
    back = pickle.loads(pickle.dumps(d))
    assert np.array_equal(back.xyxy, d.xyxy) and back.track_id.tolist() == [1, 2]
    assert np.array_equal(back.data["area"], d.data["area"])
