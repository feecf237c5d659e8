"""Sightings from real person tracks: PETS09-S2L1 ground-truth identities on vtest.avi frames."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
import pytest
import yaml

from calibration.homography import GroundPoint, fit_homography
from detectors.types import Detections
from ingest.frame import Frame
from search.embed import ColourHistogramEmbedder
from search.sightings import SightingBuilder, SightingError
from tests.conftest import PETS_GT, REPO, VTEST, need
from tracker.mot import read_mot

STEP = 2  # vtest.avi is 10 fps; analyse at 5 fps


@lru_cache(maxsize=1)
def frames() -> list[tuple[Frame, Detections]]:
    """Frames 0..399 at 5 fps with the GT people as tracked detections (GT id = track id)."""
    gt = read_mot(need(PETS_GT))
    out = []
    with av.open(str(need(VTEST))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= 400:
                break
            if index % STEP:
                continue
            rows = gt.get(index + 1, np.zeros((0, 6)))
            xyxy = np.column_stack([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]]).astype(np.float32)
            dets = Detections(xyxy.reshape(-1, 4), np.full(len(rows), 0.9, np.float32),
                              np.zeros(len(rows), np.int32), rows[:, 0].astype(np.int64))
            f = Frame("square", index, index, Fraction(1, 10), float(frame.time), 1.8e9 + float(frame.time),
                      frame.to_ndarray(format="bgr24"))
            out.append((f, dets))
    return out


def homography():
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    cam = next(c for c in cfg["cameras"] if c["id"] == "square")
    pts = [GroundPoint(p["image_px"], x_m=p["ground_m"][0], y_m=p["ground_m"][1]) for p in cam["calibration"]["points"]]
    return fit_homography(pts)


def run(builder: SightingBuilder, gap: tuple[float, float] | None = None) -> list:
    out = []
    for frame, dets in frames():
        if gap and gap[0] <= frame.time_s < gap[1]:
            dets = Detections.empty()
        out += builder.update(frame, dets)
    return out + builder.flush()


def test_one_sighting_per_identity_with_crops_colours_embedding_and_ground_track() -> None:
    gt = read_mot(need(PETS_GT))
    builder = SightingBuilder("square", "vtest", ColourHistogramEmbedder(), homography(), min_duration_s=1.0)
    sightings = run(builder)
    ids = [s.track_id for s in sightings]
    assert len(ids) == len(set(ids))  # one pass each: no identity split without a gap
    long_ids = set()
    for frame_no, rows in gt.items():
        long_ids |= set(rows[:, 0].astype(int).tolist())
    assert set(ids) <= long_ids and len(ids) >= 0.8 * len(long_ids)
    for s in sightings:
        assert 1 <= len(s.crops) <= 3 and s.crops[0].quality >= s.crops[-1].quality
        assert s.duration_s >= 1.0 and s.start_wall_s < s.end_wall_s
        assert s.embedding is not None and abs(float(np.linalg.norm(s.embedding)) - 1) < 1e-5
        assert s.model_id == ColourHistogramEmbedder().model_id
        assert s.upper and s.lower
        assert s.trajectory_px.shape == (len(s.times_s), 2) and s.ground_m.shape == s.trajectory_px.shape
        assert np.isfinite(s.ground_m).all() and np.abs(s.ground_m).max() < 40  # metres on the square
        # every kept crop is of this identity: its box is the GT box of that id at that time
        for c in s.crops:
            rows = gt[c.frame_index + 1]
            box = rows[rows[:, 0] == s.track_id][0]
            assert np.allclose(c.xyxy, [box[1], box[2], box[1] + box[3], box[2] + box[4]], atol=0.01)
        assert s.summary()["sighting_id"] == s.sighting_id
    again = run(SightingBuilder("square", "vtest", ColourHistogramEmbedder(), homography()))
    assert [s.sighting_id for s in again] == [s.sighting_id for s in sightings]  # deterministic ids


def test_gap_longer_than_lost_after_splits_and_long_tracks_are_cut() -> None:
    split = run(SightingBuilder("square", "vtest", lost_after_s=3.0), gap=(15.0, 20.0))
    whole = run(SightingBuilder("square", "vtest", lost_after_s=3.0))
    assert len(split) > len(whole)
    cut = run(SightingBuilder("square", "vtest", max_duration_s=10.0, min_duration_s=0.5))
    parts = [s for s in cut if s.part > 0]
    assert parts and all(s.duration_s <= 10.0 + 1e-6 for s in cut)
    assert all(s.embedding is None and s.model_id is None for s in cut)  # no embedder configured


@pytest.mark.parametrize("kwargs", [{"crops_per_sighting": 0}, {"lost_after_s": 0},
                                    {"min_duration_s": 700.0}, {"max_duration_s": -1}])
def test_bad_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(SightingError):
        SightingBuilder("cam", **kwargs)


def test_provisional_sightings_carry_the_final_id_and_repeat_only_every_period() -> None:
    builder = SightingBuilder("square", "vtest", ColourHistogramEmbedder(), min_duration_s=1.0)
    seen: dict[str, list[float]] = {}
    finished = []
    for frame, dets in frames():
        finished += builder.update(frame, dets)
        for s in builder.provisional(frame.time_s, every_s=4.0, min_age_s=2.0):
            assert s.embedding is not None and s.start_time_s <= frame.time_s - 2.0
            seen.setdefault(s.sighting_id, []).append(frame.time_s)
    finished += builder.flush()
    assert seen, "people in view for > 2 s must be checked before they leave"
    assert set(seen) <= {s.sighting_id for s in finished}  # same id as the stored sighting
    for times in seen.values():
        assert all(b - a >= 4.0 - 1e-9 for a, b in zip(times, times[1:]))
