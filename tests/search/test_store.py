"""Sighting store on real sightings: PETS09-S2L1 ground-truth people on vtest.avi as two "cameras".

vtest.avi frames 0-399 (40 s, GT identities as track ids) are cut in two: stream time < 20 s is
camera ``cam-a``, the rest ``cam-b``, so most identities have one sighting on each camera.
Facts used below (checked by eye on the crops and by :func:`search.colours.clothing_colours`):
GT identity 16 is the only one in a blue top; identity 11 has a brown-ish top; identities 11, 12,
16 and 17 are each their own best match across the two halves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import multiprocessing
import shutil
import uuid
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.types import Detections
from ingest.errors import ShapeError
from ingest.frame import Frame
from search.embed import ColourHistogramEmbedder, ImagenetEmbedder
from search.index import BBox
from search.sightings import Sighting, SightingBuilder
from search.store import (SightingNotFoundError, SightingStore, SightingStoreError, SightingStoreIOError,
                          safe_dir_name)
from tests.conftest import MODELS, need, pets_clip

pytest.importorskip("faiss")

WALL0_S = 1.8e9  # 2027-01-15 08:00 UTC
SPLIT_S = 20.0
MNV2_PATH = MODELS / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx"
#: WGS84 position of each test camera (two entrances of one square, ~65 m apart).
CAMERA_LATLON = {"cam-a": (51.12800, 71.43000), "cam-b": (51.12850, 71.43040)}
CYRILLIC_CAMERA = "Көктем 3 / кіреберіс"


@functools.lru_cache(maxsize=2)
def sightings(model: str = "colour") -> tuple[Sighting, ...]:
    """Sightings of the GT people: cam-a for t < 20 s, cam-b after, embedded by ``model``."""
    embedder = ColourHistogramEmbedder() if model == "colour" else ImagenetEmbedder(need(MNV2_PATH))
    images, times, people = pets_clip(2)
    out: list[Sighting] = []
    for cam, (t0, t1) in (("cam-a", (0.0, SPLIT_S)), ("cam-b", (SPLIT_S, 1e9))):
        builder = SightingBuilder(cam, f"vtest-{model}", embedder)
        for i, (image, t, (xyxy, ids)) in enumerate(zip(images, times, people)):
            if t0 <= t < t1:
                frame = Frame(cam, 2 * i, 2 * i, Fraction(1, 10), t, WALL0_S + t, image)
                dets = Detections(xyxy, np.full(len(ids), 0.9, np.float32), np.zeros(len(ids), np.int32), ids)
                out += builder.update(frame, dets)
        out += builder.flush()
    return tuple(out)


def one(items, camera_id: str, track_id: int):
    """The sighting (or record) of one GT identity on one camera."""
    return next(s for s in items if s.camera_id == camera_id and s.track_id == track_id)


def shifted(s: Sighting, *, days: float = 0.0, camera_id: str | None = None, tag: str = "") -> Sighting:
    """A copy of a sighting moved in wall time and/or to another camera, with a new id."""
    dt_s = days * 86400.0
    new_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{s.sighting_id}/{days}/{camera_id}/{tag}"))
    return dataclasses.replace(s, sighting_id=new_id,
                               camera_id=camera_id or s.camera_id, start_wall_s=s.start_wall_s + dt_s,
                               end_wall_s=s.end_wall_s + dt_s)


def fill(store: SightingStore, items=None) -> None:
    for s in items if items is not None else sightings("colour"):
        assert store.add(s, camera_name=f"Camera {s.camera_id}", location=CAMERA_LATLON.get(s.camera_id))


@pytest.fixture
def store(tmp_path: Path):
    with SightingStore(tmp_path / "sightings") as st:
        fill(st)
        yield st


def test_round_trip_crops_and_idempotent_add(store: SightingStore) -> None:
    items = sightings("colour")
    assert store.count() == len(items) == 16
    for s in items:
        r = store.get(s.sighting_id)
        assert (r.camera_id, r.track_id, r.part) == (s.camera_id, s.track_id, s.part)
        assert (r.upper, r.lower) == (s.upper, s.lower)
        assert r.camera_name == f"Camera {s.camera_id}" and (r.lat, r.lon) == CAMERA_LATLON[s.camera_id]
        assert r.start_utc == dt.datetime.fromtimestamp(s.start_wall_s, dt.timezone.utc) and r.start_utc.tzinfo
        assert r.start_time_s == s.start_time_s and r.end_wall_s == pytest.approx(s.end_wall_s)
        assert r.model_id == s.model_id and np.array_equal(r.embedding, s.embedding)
        assert r.embedding.dtype == np.float32 and r.upper_shares == pytest.approx(dict(s.upper_shares), abs=1e-9)
        assert r.trajectory_px.shape == s.trajectory_px.shape and r.trajectory_px.dtype == np.float32
        assert np.allclose(r.trajectory_px, s.trajectory_px, atol=0.01) and r.ground_m is None
        assert np.allclose(r.times_s, s.times_s, atol=1e-3)
        assert len(r.crop_paths) == len(s.crops)
        for path, crop in zip(r.crop_paths, s.crops):
            assert path.is_absolute() and path.parent.parent.name == "2027-01-15" and path.parent.name == s.camera_id
            image = cv2.imread(str(path))
            assert image.shape == crop.crop.shape
            assert np.abs(image.astype(int) - crop.crop).mean() < 8  # JPEG q90 of the same pixels
    assert store.get("no-such-id") is None
    assert not any(store.add(s) for s in items)  # the same file analysed twice
    assert store.count() == 16


def test_camera_id_with_spaces_slash_and_cyrillic_letters(tmp_path: Path) -> None:
    s = shifted(one(sightings("colour"), "cam-a", 16), camera_id=CYRILLIC_CAMERA)
    with SightingStore(tmp_path) as st:
        assert st.add(s)
        r = st.get(s.sighting_id)
        assert r.camera_id == CYRILLIC_CAMERA
        folder = r.crop_paths[0].parent
        assert folder.name == "Көктем%203%20%2F%20кіреберіс"
        assert folder.parent.parent == tmp_path / "crops"
        assert all(cv2.imread(str(p)) is not None for p in r.crop_paths)
        assert [x.record.sighting_id for x in st.find(cameras=[CYRILLIC_CAMERA])] == [s.sighting_id]


@pytest.mark.parametrize("name, expected", [
    ("cam-01", "cam-01"), ("a/b", "a%2Fb"), ("a%2Fb", "a%252Fb"), ("..", "%2E%2E"),
    ("Алматы_1", "Алматы_1"), ("x" * 300, None)])
def test_safe_dir_name(name: str, expected: str | None) -> None:
    out = safe_dir_name(name)
    assert "/" not in out and out not in (".", "..") and len(out.encode()) <= 200
    if expected is not None:
        assert out == expected
    assert safe_dir_name(name + "y") != out


def test_safe_dir_name_rejects_empty() -> None:
    with pytest.raises(SightingStoreError):
        safe_dir_name("")


def test_failed_crop_write_leaves_no_row(tmp_path: Path) -> None:
    s = one(sightings("colour"), "cam-a", 16)
    with SightingStore(tmp_path) as st:
        (tmp_path / "crops" / "2027-01-15").write_text("a file where the day folder should be")
        with pytest.raises(SightingStoreIOError, match="cannot write crops") as info:
            st.add(s)
        assert isinstance(info.value, OSError)
        assert st.count() == 0 and st.get(s.sighting_id) is None


def test_find_by_colours_against_gt_identities(store: SightingStore) -> None:
    blue_tops = store.find(upper="blue")
    assert {(r.record.camera_id, r.record.track_id) for r in blue_tops[:2]} == {("cam-a", 16), ("cam-b", 16)}
    assert all(r.record.upper_shares.get("blue", 0) >= 0.2 for r in blue_tops)
    assert [r.score for r in blue_tops] == sorted((r.score for r in blue_tops), reverse=True)
    brown = store.find(upper="brown", min_share=0.15)
    assert {r.record.track_id for r in brown} == {11}
    both = store.find(upper="blue", lower="blue")
    assert both[0].record.track_id == 16
    assert both[0].score == pytest.approx(both[0].record.upper_shares["blue"] * both[0].record.lower_shares["blue"])
    # a colour that is a minor share still matches with a lower min_share ("40 % grey coat")
    grey_legs = store.find(lower="grey", min_share=0.3)
    assert grey_legs and all(r.record.lower != "grey" for r in grey_legs)
    with pytest.raises(SightingStoreError, match="black, white, grey"):
        store.find(upper="teal")


def test_find_filters_time_camera_area(store: SightingStore) -> None:
    t20 = dt.datetime.fromtimestamp(WALL0_S + SPLIT_S, dt.timezone.utc)
    assert {r.record.camera_id for r in store.find(time_from=t20)} == {"cam-b"}
    assert {r.record.camera_id for r in store.find(time_to=WALL0_S + SPLIT_S - 0.1)} == {"cam-a"}
    assert {r.record.camera_id for r in store.find(cameras=["cam-a"])} == {"cam-a"}
    assert store.find(cameras=[]) == []
    box = BBox(51.1284, 71.4303, 51.1286, 71.4305)
    assert {r.record.camera_id for r in store.find(bbox=box)} == {"cam-b"}
    assert len(store.find(limit=3)) == 3
    with pytest.raises(SightingStoreError, match="naive"):
        store.find(time_from=dt.datetime(2027, 1, 15))


def test_more_like_finds_the_same_person_on_the_other_camera(store: SightingStore) -> None:
    items = sightings("colour")
    for track_id in (11, 12, 16, 17):
        q = one(items, "cam-a", track_id)
        hits = store.more_like(q.sighting_id, cameras=["cam-b"], k=3)
        assert hits[0].record.track_id == track_id and hits[0].record.camera_id == "cam-b"
        assert q.sighting_id not in {h.record.sighting_id for h in store.more_like(q.sighting_id, k=50)}
    q = one(items, "cam-a", 11)
    direct = store.similar(q.embedding, q.model_id, k=1)
    assert direct[0].record.sighting_id == q.sighting_id and direct[0].score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(SightingNotFoundError):
        store.more_like("no-such-id")


def test_similar_filters_are_inside_the_search(store: SightingStore) -> None:
    q = one(sightings("colour"), "cam-b", 11)
    best = store.more_like(q.sighting_id, k=1)[0].record  # best overall match
    # k=1 with a filter that excludes the overall best still returns the best inside the filter
    others = [c for c in CAMERA_LATLON if c != best.camera_id]
    (hit,) = store.more_like(q.sighting_id, k=1, cameras=others)
    assert hit.record.camera_id in others
    a = one(sightings("colour"), "cam-a", 11)
    (hit,) = store.more_like(a.sighting_id, k=1, time_from=WALL0_S + SPLIT_S)
    assert hit.record.start_wall_s >= WALL0_S + SPLIT_S and hit.record.track_id == 11
    box = BBox(51.1279, 71.4299, 51.1281, 71.4301)  # around cam-a only
    hits = store.more_like(q.sighting_id, k=20, bbox=box)
    assert hits and {h.record.camera_id for h in hits} == {"cam-a"} and hits[0].record.track_id == 11
    assert store.similar(q.embedding, q.model_id, time_from=WALL0_S + 1000) == []
    with pytest.raises(SightingStoreError, match="naive"):
        store.similar(q.embedding, q.model_id, time_to=dt.datetime(2027, 1, 15))


def test_models_are_never_mixed(store: SightingStore) -> None:
    colour = sightings("colour")
    mnv2 = sightings("mnv2")
    for s in mnv2:
        assert store.add(s)
    assert store.models() == {colour[0].model_id: 16, mnv2[0].model_id: 16}
    mnv2_ids = {s.sighting_id for s in mnv2}
    hits = store.similar(colour[0].embedding, colour[0].model_id, k=100)
    assert len(hits) == 16 and not mnv2_ids & {h.record.sighting_id for h in hits}
    for track_id in (12, 16, 17):  # MobileNetV2 also finds these people on the other camera
        q = one(mnv2, "cam-a", track_id)
        top = store.more_like(q.sighting_id, k=1, cameras=["cam-b"])[0].record
        assert top.track_id == track_id and top.model_id == q.model_id
    assert {h.record.model_id for h in store.similar(mnv2[0].embedding, mnv2[0].model_id, k=100)} == {mnv2[0].model_id}
    with pytest.raises(ShapeError):
        store.similar(mnv2[0].embedding, colour[0].model_id)
    assert len(list((store.directory / "index").glob("*/state.json"))) == 2


def test_index_is_rebuilt_after_its_folder_is_deleted(store: SightingStore) -> None:
    q = one(sightings("colour"), "cam-a", 16)
    before = [h.record.sighting_id for h in store.more_like(q.sighting_id, k=20)]
    assert store.sync_index(q.model_id) == 0  # up to date after the search
    for folder in (store.directory / "index").iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)
    with SightingStore(store.directory) as other:  # another process opening the same store
        assert [h.record.sighting_id for h in other.more_like(q.sighting_id, k=20)] == before
    assert [h.record.sighting_id for h in store.more_like(q.sighting_id, k=20)] == before
    state = json.loads(next((store.directory / "index").glob("*/state.json")).read_text())
    assert state["rowid"] == 16 and state["model_id"] == q.model_id


def _writer(directory: str, writer: int) -> None:
    """Add 6 time-shifted copies of every sighting (rebuilt here: sightings do not pickle)."""
    with SightingStore(directory) as st:
        for k in range(6):
            for s in sightings("colour"):
                st.add(shifted(s, days=k / 1000, tag=str(writer)), location=CAMERA_LATLON.get(s.camera_id))


def _searcher(directory: str, vector: np.ndarray, model_id: str, stop) -> None:
    with SightingStore(directory) as st:
        while not stop.is_set():
            st.similar(vector, model_id, k=5)
        st.sync_index(model_id)


def test_two_writers_and_two_searchers_in_separate_processes(tmp_path: Path) -> None:
    base = sightings("colour")
    directory = str(tmp_path / "sightings")
    SightingStore(directory).close()
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    searchers = [ctx.Process(target=_searcher, args=(directory, base[0].embedding, base[0].model_id, stop),
                             name=f"searcher-{i}") for i in range(2)]
    writers = [ctx.Process(target=_writer, args=(directory, i), name=f"writer-{i}") for i in range(2)]
    for p in searchers + writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    for p in searchers:
        p.join(120)
    assert [p.exitcode for p in searchers + writers] == [0, 0, 0, 0]
    with SightingStore(directory) as st:
        n = 2 * 6 * len(base)
        assert st.count() == n and st.models() == {base[0].model_id: n}
        st.sync_index(base[0].model_id)  # searchers may have stopped before the last rows
        assert len(st.similar(base[0].embedding, base[0].model_id, k=10 * n)) == n


def test_retention_deletes_rows_crops_and_index_partitions(tmp_path: Path, caplog) -> None:
    colour, mnv2 = sightings("colour"), sightings("mnv2")
    old = [shifted(s, days=-1) for s in colour[:5]] + [shifted(s, days=-1) for s in mnv2[:3]]
    with SightingStore(tmp_path) as st:
        fill(st, list(colour) + list(mnv2) + old)
        for m in (colour[0], mnv2[0]):  # index both models
            assert len(st.similar(m.embedding, m.model_id, k=100)) in (21, 19)
        old_paths = [p for s in old for p in st.get(s.sighting_id).crop_paths]
        assert all(p.exists() for p in old_paths)
        with caplog.at_level(logging.INFO, logger="search.store"):
            report = st.delete_before(dt.date(2027, 1, 15))
        assert report.sightings == 8 and report.index_rows == 8
        assert report.crop_files == len(old_paths) and report.days == (dt.date(2027, 1, 14),)
        assert not any(p.exists() for p in old_paths) and not (tmp_path / "crops" / "2027-01-14").exists()
        assert st.count() == 32 and all(st.get(s.sighting_id) is None for s in old)
        assert len(st.similar(colour[0].embedding, colour[0].model_id, k=100)) == 16
        assert len(st.similar(mnv2[0].embedding, mnv2[0].model_id, k=100)) == 16
        assert not list((tmp_path / "index").glob("*/days/2027-01-14.faiss"))
        assert any("8 sightings" in r.getMessage() and "retention" in r.getMessage() for r in caplog.records)
        now = dt.datetime(2027, 1, 16, 12, tzinfo=dt.timezone.utc)
        assert st.delete_older_than(2, now=now).sightings == 0
        assert st.delete_older_than(1, now=now).sightings == 32 and st.count() == 0
