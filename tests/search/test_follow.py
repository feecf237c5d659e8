"""Follow across cameras on real sightings: PETS09-S2L1 people on vtest.avi split into cameras
cam-a (t < 20 s) and cam-b (t >= 20 s); cam-c and cam-d hold later copies of real sightings."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.follow import follow, haversine_m
from search.store import SightingNotFoundError, SightingStore
from tests.search.test_store import one, shifted, sightings

pytest.importorskip("faiss")

#: Camera map (WGS84): a and b 40 m apart on one square, c 300 m down the street, d 1 km away.
POSITIONS = {"cam-a": (51.12800, 71.43000), "cam-b": (51.12836, 71.43000),
             "cam-c": (51.13070, 71.43000), "cam-d": (51.13700, 71.43000)}


def moved(s, camera_id: str, later_s: float):
    return shifted(s, days=later_s / 86400.0, camera_id=camera_id)


@pytest.fixture
def store(tmp_path: Path):
    base = sightings("colour")
    later = [moved(s, "cam-c", 60.0) for s in base if s.camera_id == "cam-b"]  # cam-b people again, 60 s on
    with SightingStore(tmp_path) as st:
        for s in list(base) + later:
            assert st.add(s)  # no location of their own: the camera map is used
        yield st


@pytest.mark.parametrize("track_id", [11, 16, 17])
def test_chains_the_same_gt_identity_across_three_cameras(store: SightingStore, track_id: int) -> None:
    start = one(sightings("colour"), "cam-a", track_id)
    steps = follow(store, start.sighting_id, camera_positions=POSITIONS)
    assert [s.camera_id for s in steps] == ["cam-a", "cam-b", "cam-c"]
    assert [store.get(s.sighting_id).track_id for s in steps] == [track_id] * 3
    assert steps[0].sighting_id == start.sighting_id and steps[0].score == 1.0 and steps[0].transit_s == 0
    for prev, nxt in zip(steps, steps[1:]):
        assert nxt.start_utc >= prev.end_utc
        assert nxt.transit_s == pytest.approx((nxt.start_utc - prev.end_utc).total_seconds())
        assert nxt.score >= 0.7 and nxt.rank_score >= nxt.score
        assert nxt.distance_m == pytest.approx(haversine_m(prev.lat, prev.lon, nxt.lat, nxt.lon))
    assert steps[1].distance_m == pytest.approx(40.0, abs=1.0)
    assert (steps[2].lat, steps[2].lon) == POSITIONS["cam-c"]


def test_without_positions_falls_back_to_score_and_time(store: SightingStore) -> None:
    start = one(sightings("colour"), "cam-a", 11)
    steps = follow(store, start.sighting_id, camera_positions=None)
    chain = [(s.camera_id, store.get(s.sighting_id).track_id) for s in steps]
    assert chain == [("cam-a", 11), ("cam-b", 11), ("cam-c", 11)]
    assert all(s.distance_m is None and s.lat is None for s in steps[1:])


def test_impossible_speed_is_dropped_and_min_score_stops(store: SightingStore) -> None:
    start = one(sightings("colour"), "cam-a", 11)
    far = dict(POSITIONS, **{"cam-b": (51.30, 71.43)})  # 19 km away, 0.2 s later
    steps = follow(store, start.sighting_id, camera_positions=far)
    assert "cam-b" not in [s.camera_id for s in steps] and steps[-1].camera_id == "cam-c"
    assert len(follow(store, start.sighting_id, camera_positions=POSITIONS, min_score=1.01)) == 1
    assert len(follow(store, start.sighting_id, camera_positions=POSITIONS, window_s=0.1)) == 1
    assert len(follow(store, start.sighting_id, camera_positions=POSITIONS, max_hops=1)) == 2


def test_prefers_the_nearer_camera_when_appearance_ties(tmp_path: Path) -> None:
    start = one(sightings("colour"), "cam-a", 16)
    near, far = moved(start, "cam-c", 120.0), moved(start, "cam-d", 120.0)  # same pixels, same time
    positions = dict(POSITIONS, **{"cam-c": (51.12836, 71.43000)})  # 40 m from cam-a; cam-d is 1 km
    with SightingStore(tmp_path) as st:
        for s in (start, far, near):
            st.add(s)
        steps = follow(st, start.sighting_id, camera_positions=positions, max_hops=1)
    assert [s.camera_id for s in steps] == ["cam-a", "cam-c"]


def test_unknown_start(store: SightingStore) -> None:
    with pytest.raises(SightingNotFoundError):
        follow(store, "no-such-id", camera_positions=POSITIONS)
