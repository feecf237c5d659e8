"""Tests for search.index (FAISS day partitions) and search.index_milvus (Milvus Lite)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ingest.errors import ShapeError
from search.index import BBox, FaissDayIndex, IndexStoreError, VectorIndex

pytest.importorskip("faiss")

D = 64
N = 5000
DAY0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
CAMERAS = [f"cam-{i:02d}" for i in range(20)]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """N clustered unit vectors over 5 days, 20 cameras, half of them located."""
    rng = np.random.default_rng(7)
    centres = unit(rng.standard_normal((100, D)))
    x = unit(centres[rng.integers(0, 100, N)] + 0.8 * rng.standard_normal((N, D)) / np.sqrt(D))
    start_s = DAY0.timestamp() + rng.uniform(0, 5 * 86400, N)
    cams = [CAMERAS[i] for i in rng.integers(0, 20, N)]
    lat = np.where(np.arange(N) % 2 == 0, rng.uniform(43.0, 44.0, N), np.nan)
    lon = np.where(np.arange(N) % 2 == 0, rng.uniform(76.0, 77.0, N), np.nan)
    queries = unit(centres[:20] + 0.8 * rng.standard_normal((20, D)) / np.sqrt(D))
    return dict(ids=np.arange(1000, 1000 + N, dtype=np.int64), x=x, start_s=start_s, cams=cams, lat=lat, lon=lon, q=queries)


def exact(data, q, k, mask=None):
    s = data["x"] @ q
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    order = np.argsort(-s)[:k]
    return [int(data["ids"][i]) for i in order if np.isfinite(s[i])]


def faiss_index(path):
    return FaissDayIndex(path, D, "test-model")


def milvus_index(path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from search.index_milvus import MilvusIndex

    return MilvusIndex(str(path / "milvus.db"), D, "test-model")


@pytest.fixture(scope="module", params=[faiss_index, milvus_index], ids=["faiss", "milvus_lite"])
def filled(request, data, tmp_path_factory):
    idx: VectorIndex = request.param(tmp_path_factory.mktemp(request.param.__name__))
    idx.add(data["ids"], data["x"], data["cams"], data["start_s"], data["lat"], data["lon"])
    idx.flush()  # Milvus: searches then use the built vector index, not a scan of fresh rows
    yield idx
    idx.close()


def overlap(hits, truth):
    return len({h.id for h in hits} & set(truth)) / max(len(truth), 1)


def test_count_and_exact_top10(filled, data):
    assert filled.count() == N
    recalls = [overlap(filled.search(q, 10), exact(data, q, 10)) for q in data["q"]]
    assert np.mean(recalls) >= 0.98
    hits = filled.search(data["x"][3], 5)
    assert hits[0].id == data["ids"][3] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


@pytest.mark.parametrize("kind", ["cameras", "broad_cameras", "time", "bbox", "all"])
def test_filters_inside_search(filled, data, kind):
    t_from = DAY0 + dt.timedelta(days=1, hours=6)
    t_to = DAY0 + dt.timedelta(days=2, hours=3)
    box = BBox(43.2, 76.2, 43.6, 76.7)
    inside_box = (data["lat"] >= box.lat_min) & (data["lat"] <= box.lat_max) & (data["lon"] >= box.lon_min) & (data["lon"] <= box.lon_max)
    in_time = (data["start_s"] >= t_from.timestamp()) & (data["start_s"] <= t_to.timestamp())
    in_cam = np.isin(data["cams"], ["cam-03", "cam-11"])
    broad = CAMERAS[:12]  # 60 % of each partition: the filtered HNSW graph, not the exact scan
    mask, kwargs = {
        "cameras": (in_cam, dict(cameras=["cam-03", "cam-11"])),
        "broad_cameras": (np.isin(data["cams"], broad), dict(cameras=broad)),
        "time": (in_time, dict(time_from=t_from, time_to=t_to)),
        "bbox": (inside_box, dict(bbox=box)),
        "all": (in_cam & in_time, dict(cameras=["cam-03", "cam-11"], time_from=t_from, time_to=t_to.timestamp())),
    }[kind]
    for q in data["q"][:10]:
        hits = filled.search(q, 10, **kwargs)
        truth = exact(data, q, 10, mask)
        assert overlap(hits, truth) >= 0.9
        assert all(mask[h.id - 1000] for h in hits)


def test_filter_finds_answer_ranked_far_down(filled, data):
    """The best match inside a camera filter ranks ~500th globally: a post-filter would miss it."""
    q = data["q"][0]
    order = np.argsort(-(data["x"] @ q))
    target = order[500]
    cam = data["cams"][target]
    better_same_cam = [i for i in order[:500] if data["cams"][i] == cam]
    mask = np.isin(data["cams"], [cam])
    truth = exact(data, q, 1, mask)
    hits = filled.search(q, 1, cameras=[cam])
    assert hits[0].id == truth[0]
    if not better_same_cam:  # then the answer is exactly the 500th
        assert hits[0].id == data["ids"][target]
    assert all(h.id != data["ids"][order[0]] or data["cams"][order[0]] == cam for h in hits)
    assert filled.search(q, 5, cameras=["no-such-camera"]) == []


def test_post_filter_would_miss_rare_camera(tmp_path, data):
    """One sighting on a camera of its own, far from the query: only it is returned for that camera."""
    for make in (faiss_index, milvus_index):
        idx = make(tmp_path / make.__name__)
        q = data["q"][0]
        far = unit(-q + 0.01)  # ranks last globally
        ids = np.concatenate([data["ids"], [99]])
        x = np.vstack([data["x"], far[None]])
        idx.add(ids, x, data["cams"] + ["rare"], np.append(data["start_s"], DAY0.timestamp()))
        assert [h.id for h in idx.search(q, 10, cameras=["rare"])] == [99]
        idx.close()


def test_day_partitions_and_drop_before(tmp_path, data):
    idx = faiss_index(tmp_path)
    idx.add(data["ids"], data["x"], data["cams"], data["start_s"], data["lat"], data["lon"])
    idx.flush()
    files = sorted(p.name for p in (tmp_path / "days").glob("*.faiss"))
    assert files == [f"2025-03-0{d}.faiss" for d in range(1, 6)]
    old = data["start_s"] < (DAY0 + dt.timedelta(days=2)).timestamp()
    assert idx.drop_before(dt.date(2025, 3, 3)) == int(old.sum())
    assert sorted(p.name for p in (tmp_path / "days").glob("*.faiss")) == files[2:]
    assert idx.count() == N - int(old.sum())
    old_ids = set(data["ids"][old].tolist())
    for i in np.flatnonzero(old)[:20]:
        assert not {h.id for h in idx.search(data["x"][i], 20)} & old_ids
    idx.close()


def test_milvus_drop_before(tmp_path, data):
    idx = milvus_index(tmp_path)
    idx.add(data["ids"], data["x"], data["cams"], data["start_s"])
    old = data["start_s"] < (DAY0 + dt.timedelta(days=2)).timestamp()
    assert idx.drop_before(dt.date(2025, 3, 3)) == int(old.sum())
    assert idx.count() == N - int(old.sum())
    i = int(np.flatnonzero(old)[0])
    assert int(data["ids"][i]) not in {h.id for h in idx.search(data["x"][i], 20)}
    idx.close()


def test_persistence_reopen(tmp_path, data):
    idx = faiss_index(tmp_path)
    idx.add(data["ids"], data["x"], data["cams"], data["start_s"], data["lat"], data["lon"])
    before = [idx.search(q, 10, cameras=["cam-05"]) for q in data["q"][:5]] + [idx.search(q, 10) for q in data["q"][:5]]
    idx.close()
    with faiss_index(tmp_path) as again:
        assert again.count() == N
        after = [again.search(q, 10, cameras=["cam-05"]) for q in data["q"][:5]] + [again.search(q, 10) for q in data["q"][:5]]
        assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]
        with pytest.raises(IndexStoreError, match="already in the index"):
            again.add(data["ids"][:1], data["x"][:1], ["cam-00"], data["start_s"][:1])
    with pytest.raises(IndexStoreError, match="model"):
        FaissDayIndex(tmp_path, D, "another-model")


def test_unflushed_adds_are_rolled_back_consistently(tmp_path, data):
    idx = faiss_index(tmp_path)
    idx.add(data["ids"][:100], data["x"][:100], data["cams"][:100], data["start_s"][:100])
    idx.flush()
    idx.add(data["ids"][100:200], data["x"][100:200], data["cams"][100:200], data["start_s"][100:200])
    idx._db.close()  # simulate a crash: nothing after the last flush is kept
    with faiss_index(tmp_path) as again:
        assert again.count() == 100
        assert again.search(data["x"][150], 1)[0].id != data["ids"][150]


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda a: {**a, "vectors": a["vectors"][:, :-1]}, ShapeError, "expected shape"),
        (lambda a: {**a, "vectors": a["vectors"] * 2}, IndexStoreError, "L2-normalised"),
        (lambda a: {**a, "ids": a["ids"][:-1]}, ShapeError, "rows to match ids"),
        (lambda a: {**a, "ids": np.zeros_like(a["ids"])}, IndexStoreError, "duplicates"),
        (lambda a: {**a, "start_utc": [dt.datetime(2025, 3, 1)] * 3}, IndexStoreError, "timezone-aware"),
        (lambda a: {**a, "lat": [1.0, 2.0, 3.0]}, IndexStoreError, "together"),
    ],
)
def test_add_input_errors(tmp_path, data, change, error, match):
    args = dict(ids=data["ids"][:3], vectors=data["x"][:3], camera_ids=data["cams"][:3], start_utc=data["start_s"][:3])
    with faiss_index(tmp_path) as idx:
        with pytest.raises(error, match=match):
            idx.add(**change(args))
        assert idx.count() == 0


def test_query_errors(filled, data):
    with pytest.raises(ShapeError, match="expected shape"):
        filled.search(data["q"][0][:-1], 10)
    with pytest.raises(IndexStoreError, match="L2-normalised"):
        filled.search(data["q"][0] * 3, 10)
    with pytest.raises(IndexStoreError, match="naive|timezone-aware"):
        filled.search(data["q"][0], 10, time_from=dt.datetime(2025, 3, 1))


def test_parallel_search_equals_serial(tmp_path, data):
    """Partitions searched by a thread pool give exactly the serial results, filters included."""
    with FaissDayIndex(tmp_path, D, "test-model", search_threads=1) as idx:
        idx.add(data["ids"], data["x"], data["cams"], data["start_s"], data["lat"], data["lon"])
        queries = [
            dict(), dict(cameras=["cam-03", "cam-11"]), dict(cameras=CAMERAS[:12]),
            dict(time_from=DAY0 + dt.timedelta(hours=30), time_to=DAY0 + dt.timedelta(days=3, hours=2)),
            dict(bbox=BBox(43.2, 76.2, 43.6, 76.7)),
        ]
        serial = [idx.search(q, 10, **kw) for q in data["q"][:8] for kw in queries]
    with FaissDayIndex(tmp_path, D, "test-model", search_threads=3) as idx:
        assert idx._pool is not None
        parallel = [idx.search(q, 10, **kw) for q in data["q"][:8] for kw in queries]
    assert parallel == serial


def test_constructor_errors(tmp_path):
    with pytest.raises(IndexStoreError, match="search_threads"):
        FaissDayIndex(tmp_path, D, "test-model", search_threads=0)


def test_milvus_selective_filter_is_exact(tmp_path, data):
    """After flush the IVF index serves searches; a 2-camera, 1-day filter still returns the exact top 10."""
    idx = milvus_index(tmp_path)
    idx.add(data["ids"], data["x"], data["cams"], data["start_s"])
    idx.flush()
    t_from, t_to = DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=2)
    mask = np.isin(data["cams"], ["cam-03", "cam-11"])
    mask &= (data["start_s"] >= t_from.timestamp()) & (data["start_s"] <= t_to.timestamp())
    for q in data["q"]:
        hits = idx.search(q, 10, cameras=["cam-03", "cam-11"], time_from=t_from, time_to=t_to)
        assert [h.id for h in hits] == exact(data, q, 10, mask)
    idx.close()
