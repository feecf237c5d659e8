"""Vector index of sighting embeddings: an interface, an embedded FAISS backend partitioned by day.

A sighting (one person on one camera for one pass) is indexed by its int64 id, its L2-normalised
appearance embedding ``(D,) float32`` and the metadata investigators filter on: the camera, the UTC
start time and, where the camera is calibrated, the WGS84 latitude/longitude of the sighting.
Scores are cosine similarities (inner products of unit vectors), higher is more similar.

Filters are applied *inside* the search, never after a top-k cut: the time window selects the day
partitions to visit; within a partition the rows that pass every filter are selected first, then
either scanned exactly (when few) or searched in the HNSW graph restricted to them (FAISS
``IDSelectorBitmap``), so the true best match inside the filter is found even when it ranks far down
the unfiltered list.

Library choice (measured on this 2-core machine, 512-d clustered unit vectors, M=16, one query at a
time on one thread; faiss-cpu 1.15.1 MIT, hnswlib 0.8.0 Apache-2.0, usearch 2.26.6 Apache-2.0):

=====================  ==========  =========  =========  =========================================
100,000 rows, efC=100  build rows/s  p50 ms    recall@10  filtered search from Python
=====================  ==========  =========  =========  =========================================
hnswlib  ef=64            1,627       0.30       1.000     Python callback per visited node: 36 ms
                                                           p50 at 1 % selectivity
faiss HNSWFlat ef=64      1,250       0.33       1.000     native ``IDSelector``; flat storage can be
                                                           scanned exactly over the same selector
usearch f32 ef=64           670       0.70       1.000     none exposed in Python (C++ only)
=====================  ==========  =========  =========  =========================================

Whole index (``benchmarks/search.py``, re-ID-like synthetic data fitted to OSNet on PETS09, see
its docstring), 300,000 rows in 30 day partitions, efC=64, efSearch=64, machine shared with other
jobs (load 2-8, so latencies are upper bounds): build 4,300 rows/s; no filter p50 15 ms, p99 37 ms,
recall@10 0.982; 2-day window p50 2.5 ms, p99 7.4 ms, recall 0.989; window + 10 cameras p50 1.3 ms,
p99 6.5 ms, recall 1.0; resident memory 3.0 GB and disk 2.15 GB per million rows. One day of
33,000 rows searched alone (queries whose identity has 1-2 rows that day, the hard case):
efSearch 32/64/128/256 gives recall@10 0.73/0.86/0.93/0.96 at 0.20/0.30/0.45/0.76 ms (efC=40).
Searching the day files from a 2-thread pool was *slower* than one after another (p50 12-15 ms vs
8-12 ms at 150,000 rows; per-partition work is ~0.3 ms and the Python part holds the GIL), so
``search_threads`` defaults to 1. On the isotropic stress data of the earlier benchmark (no
neighbourhood structure, intrinsic dimension 512) graph recall is far lower; see the benchmark.

On one day partition (33,000 rows, efC=40) hnswlib and faiss build at ~5,200 rows/s and answer in
~0.2 ms. Neither graph search alone is reliable under a selective filter (recall@10 at 5 %
selectivity: faiss 0.42-0.66, hnswlib 0.90), so selective filters use an exact scan of the
selected rows (FAISS flat storage with the same bitmap: ~1.5 ms for 5,000 rows) and only broad
filters (more than :data:`EXACT_FRACTION` of a partition) use the filtered graph (recall 0.99 at
30 %). FAISS is chosen because it does both natively (no Python callback), ships binary wheels
(hnswlib 0.8.0 compiled from source here) and is MIT licensed; usearch was slowest to build and
has no Python filter. Whole-index figures at 1,000,000 rows: ``benchmarks/search.py``.

Layout under the index directory::

    index.sqlite            metadata: sightings(id, day, row, camera_code, start_s, lat, lon),
                            cameras(code, camera_id), meta(key, value) with dim and model
    days/YYYY-MM-DD.faiss   one FAISS IndexHNSWFlat per UTC day; row r is the r-th vector added
                            that day

Retention (:meth:`VectorIndex.drop_before`) deletes whole day files and their metadata rows.
Writes become durable on :meth:`FaissDayIndex.flush` (also called by ``close``): index files are
written to a temporary name and renamed, then the SQLite transaction is committed, so a crash
leaves either the old state or index rows without metadata, which searches ignore.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import math
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ingest.errors import BaqylauError, ShapeError

logger = logging.getLogger(__name__)

#: Largest deviation of a vector's L2 norm from 1 accepted as "normalised" (float32 rounding of a
#: normalised 512-d vector is ~1e-6; 1e-3 still rejects raw, unnormalised model outputs).
NORM_TOLERANCE = 1e-3
#: Within a partition, filters selecting at most this fraction of rows are answered by an exact scan
#: of the selected rows; broader filters by the filtered HNSW graph. Lower means faster selective
#: queries but riskier recall: faiss's filtered HNSW recall@10 was 0.42-0.66 at 5 % selectivity and
#: 0.99 at 30 % on re-ID-like data (module docstring), but on isotropic data (a 33,000-row day,
#: random subsets, ef 96) 0.81 at 35 % and 0.94 at 50 %, against an exact scan of 2.3-3.1 ms. 0.5
#: bounds the cost: a time window has at most two partial days, so at most ~6 ms of exact scans.
EXACT_FRACTION = 0.5
#: HNSW graph degree (Malkov & Yashunin 2018, arXiv:1603.09320); 16 is the usual memory/recall point.
HNSW_M = 16
#: Candidate list size while building: lower builds faster (per 2 cores on a 33,000-row day of
#: re-ID-like data: efC=40 ~11,000 rows/s, 80 ~7,300, 120 ~4,800) at the cost of graph quality
#: (recall@10 at efSearch 64: 0.86, 0.89, 0.90 on that day alone); see the module docstring.
EF_CONSTRUCTION = 64
#: Candidate list size while searching (at least 2 * k is used): higher is slower but more exact.
#: Measured at 1,000,000 sightings over 30 day partitions (``benchmarks/search.py``, re-ID-like
#: data, 2 cores): ef 64 gave p99 15.7 ms and recall@10 0.946 unfiltered; ef 96 gave p99 20.2 ms
#: and recall@10 0.964, meeting the 0.95 target with room under the 50 ms p99 target.
EF_SEARCH = 96


class IndexStoreError(BaqylauError, ValueError):
    """Wrong input for the index (unnormalised vectors, duplicate ids, mismatched model)."""


class Hit(NamedTuple):
    """One search result: the sighting id and its cosine similarity to the query (-1..1)."""

    id: int
    score: float


@dataclass(frozen=True, slots=True)
class BBox:
    """A latitude/longitude box in WGS84 degrees, edges included."""

    lat_min: float
    lon_min: float
    lat_max: float
    lon_max: float

    def __post_init__(self) -> None:
        if not (self.lat_min <= self.lat_max and self.lon_min <= self.lon_max):
            raise IndexStoreError(f"bbox min must not exceed max, got {self}")


def to_epoch_s(value: dt.datetime | float | int) -> float:
    """Convert an aware datetime or epoch seconds to UTC epoch seconds.

    Raises:
        IndexStoreError: a naive datetime (its zone would be a guess).
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise IndexStoreError(f"datetime must be timezone-aware, got naive {value!r}")
        return value.timestamp()
    return float(value)


def utc_day(epoch_s: float) -> dt.date:
    """UTC calendar day of an epoch time in seconds."""
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).date()


def day_start_s(day: dt.date) -> float:
    """Epoch seconds of 00:00 UTC on ``day``."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


@dataclass(frozen=True, slots=True)
class Rows:
    """Checked rows for :meth:`VectorIndex.add`.

    Attributes:
        ids: `(N,)` int64 sighting ids, unique.
        vectors: `(N, D)` float32 unit vectors (a C-contiguous copy).
        camera_ids: N camera ids.
        start_s: `(N,)` float64 UTC epoch seconds of the sighting start.
        lat: `(N,)` float64 WGS84 degrees, NaN where unknown.
        lon: `(N,)` float64 WGS84 degrees, NaN where unknown.
    """

    ids: np.ndarray
    vectors: np.ndarray
    camera_ids: tuple[str, ...]
    start_s: np.ndarray
    lat: np.ndarray
    lon: np.ndarray


def check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 `(N, dim)` copy after checking unit norm.

    Raises:
        ShapeError: not `(N, dim)`.
        IndexStoreError: non-finite values or a norm farther than :data:`NORM_TOLERANCE` from 1.
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ShapeError(f"vectors: expected shape (N, {dim}), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise IndexStoreError("vectors: contain NaN or infinity")
    norms = np.linalg.norm(arr, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if bad.size:
        raise IndexStoreError(
            f"vectors: must be L2-normalised; row {int(bad[0])} has norm {norms[bad[0]]:.4f} "
            f"({bad.size} rows off by more than {NORM_TOLERANCE})"
        )
    return arr.copy() if arr is vectors else arr


def check_rows(
    ids: np.ndarray,
    vectors: np.ndarray,
    camera_ids: Sequence[str],
    start_utc: Sequence[dt.datetime | float] | np.ndarray,
    lat: Sequence[float] | np.ndarray | None,
    lon: Sequence[float] | np.ndarray | None,
    dim: int,
) -> Rows:
    """Check the arguments of :meth:`VectorIndex.add` and return them as :class:`Rows`.

    Raises:
        ShapeError: lengths differ or a vector is not `(D,)`.
        IndexStoreError: see :func:`check_vectors`; duplicate ids; naive datetimes; only one of
            lat/lon given.
    """
    ids_arr = np.asarray(ids)
    if ids_arr.ndim != 1 or not np.issubdtype(ids_arr.dtype, np.integer):
        raise ShapeError(f"ids: expected (N,) integers, got {ids_arr.shape} {ids_arr.dtype}")
    ids_arr = ids_arr.astype(np.int64)
    n = ids_arr.shape[0]
    vecs = check_vectors(vectors, dim)
    if vecs.shape[0] != n:
        raise ShapeError(f"vectors: expected {n} rows to match ids, got {vecs.shape[0]}")
    if np.unique(ids_arr).size != n:
        raise IndexStoreError("ids: duplicates within one add() call")
    cams = tuple(str(c) for c in camera_ids)
    if len(cams) != n:
        raise ShapeError(f"camera_ids: expected {n} entries, got {len(cams)}")
    if isinstance(start_utc, np.ndarray) and start_utc.dtype.kind in "fiu":
        start = start_utc.astype(np.float64)
    else:
        start = np.array([to_epoch_s(t) for t in start_utc], dtype=np.float64)
    if start.shape != (n,):
        raise ShapeError(f"start_utc: expected {n} entries, got {start.shape}")
    if (lat is None) != (lon is None):
        raise IndexStoreError("lat and lon must be given together")
    if lat is None:
        lat_arr = lon_arr = np.full(n, np.nan)
    else:
        lat_arr = np.asarray(lat, dtype=np.float64)
        lon_arr = np.asarray(lon, dtype=np.float64)
        if lat_arr.shape != (n,) or lon_arr.shape != (n,):
            raise ShapeError(f"lat/lon: expected ({n},), got {lat_arr.shape} and {lon_arr.shape}")
    return Rows(ids_arr, vecs, cams, start, lat_arr, lon_arr)


def check_query(vector: np.ndarray, dim: int, k: int) -> np.ndarray:
    """Return the query as a `(1, dim)` float32 unit vector.

    Raises:
        ShapeError: not `(dim,)`.
        IndexStoreError: not normalised, or ``k < 1``.
    """
    q = np.asarray(vector)
    if q.shape != (dim,):
        raise ShapeError(f"vector: expected shape ({dim},), got {q.shape}")
    if k < 1:
        raise IndexStoreError(f"k must be >= 1, got {k}")
    return check_vectors(q[None, :], dim)


class VectorIndex(abc.ABC):
    """Nearest-neighbour index of sighting embeddings with filters applied inside the search.

    All vectors of one index come from one embedding model (``model``) and have ``dim`` dimensions;
    embeddings of different models are never compared.
    """

    dim: int
    model: str

    @abc.abstractmethod
    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        camera_ids: Sequence[str],
        start_utc: Sequence[dt.datetime | float] | np.ndarray,
        lat: Sequence[float] | np.ndarray | None = None,
        lon: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Add sightings.

        Args:
            ids: `(N,)` int64 sighting ids, unique in the index.
            vectors: `(N, D)` float32 L2-normalised embeddings.
            camera_ids: N camera ids.
            start_utc: N aware datetimes, or an `(N,)` float array of UTC epoch seconds: the
                sighting start; its UTC day is the partition.
            lat: `(N,)` WGS84 latitude in degrees, NaN where the camera is not calibrated.
            lon: `(N,)` WGS84 longitude in degrees, NaN where unknown.

        Raises:
            ShapeError: wrong shapes or dimension.
            IndexStoreError: unnormalised vectors, duplicate ids, naive datetimes.
        """

    @abc.abstractmethod
    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        time_from: dt.datetime | float | None = None,
        time_to: dt.datetime | float | None = None,
        cameras: Sequence[str] | None = None,
        bbox: BBox | None = None,
    ) -> list[Hit]:
        """Return up to ``k`` sightings most similar to ``vector`` that pass every filter.

        Args:
            vector: `(D,)` float32 L2-normalised query embedding.
            k: number of results.
            time_from: earliest sighting start (inclusive), aware datetime or epoch seconds.
            time_to: latest sighting start (inclusive).
            cameras: only these camera ids.
            bbox: only sightings located inside this box (sightings without a location are
                excluded when a box is given).

        Returns:
            Hits sorted by decreasing cosine similarity.

        Raises:
            ShapeError: wrong dimension.
            IndexStoreError: unnormalised query, k < 1, naive datetimes.
        """

    @abc.abstractmethod
    def drop_before(self, day: dt.date) -> int:
        """Delete every sighting whose UTC start day is before ``day``; return how many."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of sightings in the index."""

    @abc.abstractmethod
    def close(self) -> None:
        """Persist and release resources; the object must not be used afterwards."""

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class _Partition:
    """One UTC day in memory: the FAISS graph and the per-row metadata used by filters."""

    index: object  # faiss.IndexHNSWFlat; row r = r-th vector added
    ids: np.ndarray  # (R,) int64, -1 for rows without metadata (crash between writes)
    camera_code: np.ndarray  # (R,) int32
    start_s: np.ndarray  # (R,) float64
    lat: np.ndarray  # (R,) float64
    lon: np.ndarray  # (R,) float64
    dirty: bool = field(default=False)


class FaissDayIndex(VectorIndex):
    """Embedded index: one FAISS HNSW file per UTC day next to SQLite metadata in ``directory``.

    Not thread-safe: use one instance per process, from one thread (the pipeline's sighting writer).

    Args:
        directory: created if missing; reopened if it already holds an index.
        dim: embedding dimension D.
        model: name of the embedding model; reopening with another model or dim is refused.
        ef_search: HNSW search candidate list size (see :data:`EF_SEARCH`).
        ef_construction: HNSW build candidate list size for new day files (see
            :data:`EF_CONSTRUCTION`); existing files keep the graph they were built with.
        search_threads: day partitions searched concurrently by one query (FAISS releases the GIL);
            1 (default) searches them one after another in the calling thread. Results are
            identical either way; on the 2-core machine 2 threads were slower (module docstring).

    Raises:
        IndexStoreError: the directory holds an index of another model or dimension.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        dim: int,
        model: str,
        ef_search: int = EF_SEARCH,
        *,
        ef_construction: int = EF_CONSTRUCTION,
        search_threads: int = 1,
    ):
        import faiss  # MIT; imported here so the interface is usable without it

        self._faiss = faiss
        self.dim = int(dim)
        self.model = str(model)
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        threads = int(search_threads)
        if threads < 1 or self.ef_search < 1 or self.ef_construction < 1:
            raise IndexStoreError(
                f"search_threads, ef_search and ef_construction must be >= 1, got {threads}, "
                f"{self.ef_search}, {self.ef_construction}"
            )
        self._pool = None
        if threads > 1:
            # One OpenMP thread inside each worker: FAISS opens an OpenMP team even for one query,
            # and teams inside a thread pool oversubscribe the cores (set per calling thread).
            self._pool = ThreadPoolExecutor(
                threads, thread_name_prefix="index-search", initializer=faiss.omp_set_num_threads, initargs=(1,)
            )
        self.directory = Path(directory)
        (self.directory / "days").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.directory / "index.sqlite")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS cameras(code INTEGER PRIMARY KEY, camera_id TEXT UNIQUE NOT NULL);
            CREATE TABLE IF NOT EXISTS sightings(
                id INTEGER PRIMARY KEY, day TEXT NOT NULL, row INTEGER NOT NULL,
                camera_code INTEGER NOT NULL, start_s REAL NOT NULL, lat REAL, lon REAL);
            CREATE INDEX IF NOT EXISTS sightings_day_row ON sightings(day, row);
            """
        )
        stored = dict(self._db.execute("SELECT key, value FROM meta"))
        if stored and (stored.get("dim") != str(self.dim) or stored.get("model") != self.model):
            self._db.close()
            raise IndexStoreError(
                f"{self.directory} holds an index of model {stored.get('model')!r} dim "
                f"{stored.get('dim')}, asked for {self.model!r} dim {self.dim}"
            )
        self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [("dim", str(self.dim)), ("model", self.model)])
        self._db.commit()
        self._cameras: dict[str, int] = {c: code for code, c in self._db.execute("SELECT code, camera_id FROM cameras")}
        self._days: set[dt.date] = {dt.date.fromisoformat(p.stem) for p in (self.directory / "days").glob("*.faiss")}
        self._days |= {dt.date.fromisoformat(d) for (d,) in self._db.execute("SELECT DISTINCT day FROM sightings")}
        self._loaded: dict[dt.date, _Partition] = {}
        self._closed = False

    # -- partitions ---------------------------------------------------------------------------
    def _path(self, day: dt.date) -> Path:
        return self.directory / "days" / f"{day.isoformat()}.faiss"

    def _partition(self, day: dt.date) -> _Partition:
        part = self._loaded.get(day)
        if part is not None:
            return part
        path = self._path(day)
        if path.exists():
            index = self._faiss.read_index(str(path))
        else:
            index = self._faiss.IndexHNSWFlat(self.dim, HNSW_M, self._faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
        n = index.ntotal
        ids = np.full(n, -1, np.int64)
        cam = np.full(n, -1, np.int32)
        start = np.full(n, np.nan)
        lat = np.full(n, np.nan)
        lon = np.full(n, np.nan)
        cur = self._db.execute(
            "SELECT row, id, camera_code, start_s, lat, lon FROM sightings WHERE day = ?", (day.isoformat(),)
        )
        rows = np.array(cur.fetchall(), dtype=np.float64).reshape(-1, 6)
        rows = rows[rows[:, 0] < n]  # metadata without vectors cannot happen (commit is last)
        r = rows[:, 0].astype(np.int64)
        ids[r] = rows[:, 1].astype(np.int64)
        cam[r] = rows[:, 2].astype(np.int32)
        start[r], lat[r], lon[r] = rows[:, 3], rows[:, 4], rows[:, 5]
        part = _Partition(index, ids, cam, start, lat, lon)
        self._loaded[day] = part
        return part

    def _camera_code(self, camera_id: str) -> int:
        code = self._cameras.get(camera_id)
        if code is None:
            code = len(self._cameras)
            self._db.execute("INSERT INTO cameras VALUES (?, ?)", (code, camera_id))
            self._cameras[camera_id] = code
        return code

    # -- VectorIndex --------------------------------------------------------------------------
    def add(self, ids, vectors, camera_ids, start_utc, lat=None, lon=None) -> None:
        """See :meth:`VectorIndex.add`; durable after :meth:`flush` or :meth:`close`."""
        self._check_open()
        rows = check_rows(ids, vectors, camera_ids, start_utc, lat, lon, self.dim)
        codes = np.array([self._camera_code(c) for c in rows.camera_ids], dtype=np.int32)
        # Day per row from the epoch: 86,400 s per UTC day (POSIX time has no leap seconds).
        day_no = np.floor(rows.start_s / 86400.0).astype(np.int64)
        epoch = dt.date(1970, 1, 1)
        try:
            for d in np.unique(day_no):
                sel = np.flatnonzero(day_no == d)
                day = epoch + dt.timedelta(days=int(d))
                part = self._partition(day)
                first = part.index.ntotal
                row_no = np.arange(first, first + sel.size)
                self._db.executemany(
                    "INSERT INTO sightings VALUES (?, ?, ?, ?, ?, ?, ?)",
                    zip(
                        rows.ids[sel].tolist(), [day.isoformat()] * sel.size, row_no.tolist(),
                        codes[sel].tolist(), rows.start_s[sel].tolist(),
                        [None if math.isnan(v) else v for v in rows.lat[sel].tolist()],
                        [None if math.isnan(v) else v for v in rows.lon[sel].tolist()],
                    ),
                )
                part.index.add(rows.vectors[sel])
                part.ids = np.concatenate([part.ids, rows.ids[sel]])
                part.camera_code = np.concatenate([part.camera_code, codes[sel]])
                part.start_s = np.concatenate([part.start_s, rows.start_s[sel]])
                part.lat = np.concatenate([part.lat, rows.lat[sel]])
                part.lon = np.concatenate([part.lon, rows.lon[sel]])
                part.dirty = True
                self._days.add(day)
        except sqlite3.IntegrityError as exc:
            raise IndexStoreError(f"ids: already in the index ({exc})") from exc

    def search(self, vector, k=10, time_from=None, time_to=None, cameras=None, bbox=None) -> list[Hit]:
        """See :meth:`VectorIndex.search`; day partitions are searched in parallel (``search_threads``)."""
        self._check_open()
        q = check_query(vector, self.dim, k)
        t0 = -math.inf if time_from is None else to_epoch_s(time_from)
        t1 = math.inf if time_to is None else to_epoch_s(time_to)
        codes = None
        if cameras is not None:
            codes = np.array([self._cameras[c] for c in cameras if c in self._cameras], dtype=np.int32)
            if codes.size == 0:
                return []
        # Partitions are loaded here, in the calling thread (SQLite connections are per thread).
        jobs = []  # (partition, whether the time window covers the whole day)
        for day in sorted(self._days):
            d0 = day_start_s(day)
            if d0 + 86400.0 <= t0 or d0 > t1:
                continue
            part = self._partition(day)
            if part.index.ntotal > 0:
                jobs.append((part, t0 <= d0 and t1 >= d0 + 86400.0))

        def run(job: tuple[_Partition, bool]) -> tuple[np.ndarray, np.ndarray] | None:
            return self._search_partition(job[0], q, k, None if job[1] else (t0, t1), codes, bbox)

        if self._pool is None or len(jobs) < 2:
            results = [run(job) for job in jobs]
        else:
            results = list(self._pool.map(run, jobs))
        results = [r for r in results if r is not None]
        if not results:
            return []
        all_ids = np.concatenate([r[0] for r in results])
        all_scores = np.concatenate([r[1] for r in results])
        order = np.argsort(-all_scores, kind="stable")[:k]
        return [Hit(int(all_ids[i]), float(all_scores[i])) for i in order]

    def _search_partition(
        self,
        part: _Partition,
        q: np.ndarray,
        k: int,
        window: tuple[float, float] | None,
        codes: np.ndarray | None,
        bbox: BBox | None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Top ``k`` of one partition under the filters: `(k',)` int64 ids and float32 scores, or None.

        ``window`` is the (from, to) epoch-second filter, None when it covers the whole day. Runs in a
        worker thread: reads ``part`` and calls FAISS (which releases the GIL), nothing else.
        """
        n = part.index.ntotal
        mask = part.ids >= 0
        if window is not None:
            mask &= (part.start_s >= window[0]) & (part.start_s <= window[1])
        if codes is not None:
            mask &= np.isin(part.camera_code, codes)
        if bbox is not None:
            mask &= (part.lat >= bbox.lat_min) & (part.lat <= bbox.lat_max)
            mask &= (part.lon >= bbox.lon_min) & (part.lon <= bbox.lon_max)
        n_sel = int(np.count_nonzero(mask))
        if n_sel == 0:
            return None
        kk = min(k, n_sel)
        ef = max(self.ef_search, 2 * kk)
        if n_sel == n:
            params = self._faiss.SearchParametersHNSW(efSearch=ef)
            dist, rows = part.index.search(q, kk, params=params)
        else:
            sel = self._faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
            if n_sel <= EXACT_FRACTION * n:
                storage = self._faiss.downcast_index(part.index.storage)
                dist, rows = storage.search(q, kk, params=self._faiss.SearchParameters(sel=sel))
            else:
                # Filtered-out nodes are still traversed but not returned: widen the candidate list
                # in proportion so that about ``ef`` admissible candidates are kept.
                ef = min(int(math.ceil(ef * n / n_sel)), int(math.ceil(ef / EXACT_FRACTION)))
                params = self._faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
                dist, rows = part.index.search(q, kk, params=params)
        ok = rows[0] >= 0
        return part.ids[rows[0][ok]], dist[0][ok]

    def drop_before(self, day: dt.date) -> int:
        """See :meth:`VectorIndex.drop_before`: deletes the day files and their metadata rows."""
        self._check_open()
        old = sorted(d for d in self._days if d < day)
        removed = 0
        for d in old:
            removed += self._db.execute("DELETE FROM sightings WHERE day = ?", (d.isoformat(),)).rowcount
        self._db.commit()
        for d in old:
            self._path(d).unlink(missing_ok=True)
            self._loaded.pop(d, None)
            self._days.discard(d)
        if old:
            logger.info("index %s: dropped %d day partitions before %s (%d sightings)", self.directory, len(old), day, removed)
        return removed

    def count(self) -> int:
        """See :meth:`VectorIndex.count`."""
        self._check_open()
        return int(self._db.execute("SELECT COUNT(*) FROM sightings").fetchone()[0])

    def flush(self) -> None:
        """Write changed day files (temporary name, then rename) and commit the metadata."""
        self._check_open()
        for day, part in self._loaded.items():
            if part.dirty:
                path = self._path(day)
                tmp = path.with_suffix(".faiss.tmp")
                self._faiss.write_index(part.index, str(tmp))
                os.replace(tmp, path)
                part.dirty = False
        self._db.commit()

    def close(self) -> None:
        """Flush and close; a second call does nothing."""
        if self._closed:
            return
        self.flush()
        self._db.close()
        if self._pool is not None:
            self._pool.shutdown()
        self._loaded.clear()
        self._closed = True

    def disk_bytes(self) -> int:
        """Bytes used in ``directory`` (index files and SQLite), as last flushed."""
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    def _check_open(self) -> None:
        if self._closed:
            raise IndexStoreError(f"index {self.directory} is closed")
