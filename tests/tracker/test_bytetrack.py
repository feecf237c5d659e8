"""ByteTracker wrapper: id allocation per instance, row mapping, timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.types import Detections
from tracker import ByteTracker


def walkers(step: int, order: tuple[int, ...] = (0, 1, 2)) -> Detections:
    """Three well-separated boxes moving right 4 px per step, rows in the given order."""
    base = np.array([[10, 10, 40, 90], [200, 10, 230, 90], [400, 10, 430, 90]], np.float32)
    xyxy = base + np.array([4 * step, 0, 4 * step, 0], np.float32)
    conf = np.array([0.9, 0.8, 0.7], np.float32)
    class_id = np.array([0, 2, 0], np.int32)
    idx = np.array(order)
    return Detections(xyxy[idx], conf[idx], class_id[idx], data={"src": idx * 10})


def test_two_instances_both_start_at_one() -> None:
    a, b = ByteTracker(frame_rate=10.0), ByteTracker(frame_rate=10.0)
    for step in range(5):
        out_a = a.update(walkers(step))
        out_b = b.update(walkers(step)[np.array([True, False, False])])
    assert sorted(out_a.track_id.tolist()) == [1, 2, 3]
    assert out_b.track_id.tolist() == [1]
    assert a.tracks_started == 3 and b.tracks_started == 1
    a.reset()
    assert a.tracks_started == 0


def test_confirmation_delay_and_row_mapping() -> None:
    tracker = ByteTracker(frame_rate=10.0, minimum_consecutive_frames=3)
    orders = [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0), (0, 2, 1)]
    ids_by_src: dict[int, int] = {}
    for step, order in enumerate(orders):
        dets = walkers(step, order)
        before = dets.xyxy.copy()
        out = tracker.update(dets)
        np.testing.assert_array_equal(dets.xyxy, before)  # input untouched
        assert np.all(dets.track_id == -1)
        if step < 2:
            assert len(out) == 0  # not yet confirmed
            continue
        assert len(out) == 3 and out is not dets
        # Output rows are input rows (in input order) with ids; class and conf carried over.
        np.testing.assert_array_equal(out.xyxy, dets.xyxy)
        np.testing.assert_array_equal(out.conf, dets.conf)
        np.testing.assert_array_equal(out.class_id, dets.class_id)
        np.testing.assert_array_equal(out.data["src"], dets.data["src"])
        for src, tid in zip(out.data["src"].tolist(), out.track_id.tolist()):
            assert ids_by_src.setdefault(src, tid) == tid  # same object keeps its id
    assert sorted(ids_by_src.values()) == [1, 2, 3]


def test_empty_detections() -> None:
    tracker = ByteTracker(frame_rate=10.0)
    out = tracker.update(Detections.empty())
    assert len(out) == 0 and out.track_id.dtype == np.int64
    for step in range(4):
        tracker.update(walkers(step))
    assert len(tracker.update(Detections.empty())) == 0
    assert tracker.tracks_started == 3


def test_timestamps_bridge_skipped_frames() -> None:
    """With time_s, a 0.5 s gap (frames sampled away) keeps the ids of steady walkers."""
    tracker = ByteTracker(frame_rate=10.0)
    times = [0.0, 0.1, 0.2, 0.3, 0.8, 0.9, 1.4]
    ids = []
    for t in times:
        out = tracker.update(walkers(round(t * 10)), time_s=t)
        ids.append(sorted(out.track_id.tolist()))
    assert ids[-1] == [1, 2, 3] and ids[3] == [1, 2, 3]
    assert tracker.tracks_started == 3


@pytest.mark.parametrize("kwargs", [
    {"frame_rate": 0.0}, {"frame_rate": float("nan")},
    {"frame_rate": 10.0, "lost_track_buffer_s": -1},
    {"frame_rate": 10.0, "track_activation_threshold": 1.5},
    {"frame_rate": 10.0, "minimum_iou_threshold": -0.1},
    {"frame_rate": 10.0, "minimum_consecutive_frames": 0},
])
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ByteTracker(**kwargs)


def boxes(rows: list[tuple[float, float, int]]) -> Detections:
    """Boxes 40x80 px at (x, y) top-left with a class id, conf 0.9."""
    xyxy = np.array([[x, y, x + 40, y + 80] for x, y, _ in rows], np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(len(rows), 0.9, np.float32), np.array([c for *_, c in rows], np.int32))


def test_class_aware_never_continues_a_track_with_another_class() -> None:
    tracker = ByteTracker(frame_rate=10, minimum_consecutive_frames=1)
    person_ids, car_ids = set(), set()
    for i in range(20):
        # a person, and a car box at the very same place every other frame
        rows = [(100 + i, 100, 0)] + ([(100 + i, 100, 2)] if i % 2 else [])
        out = tracker.update(boxes(rows), time_s=i / 10)
        person_ids |= set(out.track_id[out.class_id == 0].tolist())
        car_ids |= set(out.track_id[out.class_id == 2].tolist())
    assert len(person_ids) == 1 and len(car_ids) == 1
    assert person_ids.isdisjoint(car_ids), "ids are unique per camera across classes"
    assert tracker.tracks_started == 2


def test_class_agnostic_mode_matches_any_class() -> None:
    tracker = ByteTracker(frame_rate=10, minimum_consecutive_frames=1, class_aware=False)
    ids = set()
    for i in range(10):
        out = tracker.update(boxes([(100 + i, 100, i % 2)]), time_s=i / 10)
        ids |= set(out.track_id.tolist())
    assert ids == {1}


def test_id_map_stays_bounded_over_many_short_tracks() -> None:
    tracker = ByteTracker(frame_rate=10, minimum_consecutive_frames=1, lost_track_buffer_s=0.2)
    t = 0.0
    for k in range(300):  # 300 objects, each seen for 3 frames then gone
        for _ in range(3):
            tracker.update(boxes([(10 + (k % 7) * 60, 10 + (k % 5) * 90, 0)]), time_s=t)
            t += 0.1
        for _ in range(5):
            tracker.update(Detections.empty(), time_s=t)
            t += 0.1
    assert tracker.tracks_started >= 290
    # pruned every 500 updates: at most the tracks started since the last prune remain
    assert len(tracker._ids) <= 500 // 8 + 1  # noqa: SLF001 - the bound is the point of the test
