"""The sighting store: SQLite rows and JPEG crops shared by processes, and a derived vector index.

Analysis processes only :meth:`SightingStore.add` (a few JPEG files, then one SQLite row), which
is cheap and safe from several processes at once (SQLite WAL with a busy timeout, as in
:mod:`alerts.store`). Searches by embedding first bring the vector index of the model up to date
(:meth:`SightingStore.sync_index`) under an exclusive ``fcntl.flock`` so that two searchers never
write it at once; the index is a cache that can always be rebuilt from ``sightings.db``.

Layout under ``directory``::

    sightings.db                                   one row per sighting (see ``_SCHEMA``)
    crops/YYYY-MM-DD/<camera dir>/<sighting_id>_<k>.jpg   best crops, k = 0 is the best
    index/<model dir>/                             one VectorIndex per embedding model
    index/<model dir>/state.json                   {"model_id", "dim", "rowid", "generation"}
    index/<model dir>.lock                         flock guarding that index

``rowid`` is ``AUTOINCREMENT``, so ids only grow (also after retention empties the table) and
"rows above the highest rowid indexed" is a sound watermark. SQLite serialises writers, so every
row below the newest committed rowid is already visible to a reader. When an index is opened its
row count is checked against the rows of that model up to its watermark; any difference (a crash
between the index and its state file, a partial deletion) rebuilds it from scratch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from alerts.sqlite import configure_wal, connect, ensure_schema, transaction
from ingest.errors import BaqylauError, ShapeError
from search.colours import COLOUR_NAMES
from search.index import BBox, FaissDayIndex, VectorIndex, to_epoch_s, utc_day
from search.sightings import Sighting

logger = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the schema this code writes.
SCHEMA_VERSION = 1
#: Longest directory name written (bytes of UTF-8); longer encoded names are cut and get a hash
#: suffix. Most file systems allow 255 bytes per name.
MAX_DIR_NAME_BYTES = 200
#: Rows read from SQLite and added to the index per batch while syncing (bounds memory).
SYNC_BATCH = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sightings (
    rowid          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the vector-index id
    sighting_id    TEXT NOT NULL UNIQUE,               -- UUID5 string
    camera_id      TEXT NOT NULL,
    camera_name    TEXT,
    track_id       INTEGER NOT NULL,
    part           INTEGER NOT NULL,
    start_wall_s   REAL NOT NULL,                      -- UTC epoch s
    end_wall_s     REAL NOT NULL,
    start_time_s   REAL NOT NULL,                      -- stream s
    end_time_s     REAL NOT NULL,
    day            TEXT NOT NULL,                      -- UTC YYYY-MM-DD of start_wall_s
    upper          TEXT NOT NULL,
    lower          TEXT NOT NULL,
    upper_shares   TEXT NOT NULL,                      -- JSON {colour: share}
    lower_shares   TEXT NOT NULL,
    model_id       TEXT,
    embedding      BLOB,                               -- float32 (D,) bytes or NULL
    conf           REAL NOT NULL,
    lat            REAL,                               -- WGS84 degrees or NULL
    lon            REAL,
    crops          TEXT NOT NULL,                      -- JSON list of paths relative to the store
    summary        TEXT NOT NULL                       -- JSON Sighting.summary()
);
CREATE INDEX IF NOT EXISTS sightings_start ON sightings (start_wall_s);
CREATE INDEX IF NOT EXISTS sightings_camera ON sightings (camera_id, start_wall_s);
CREATE INDEX IF NOT EXISTS sightings_day ON sightings (day);
CREATE INDEX IF NOT EXISTS sightings_model ON sightings (model_id, rowid);
"""

_COLUMNS = ("rowid, sighting_id, camera_id, camera_name, track_id, part, start_wall_s, end_wall_s, "
            "start_time_s, end_time_s, upper, lower, upper_shares, lower_shares, model_id, embedding, "
            "conf, lat, lon, crops, summary")

IndexFactory = Callable[[Path, int, str], VectorIndex]


class SightingStoreError(BaqylauError, ValueError):
    """Invalid request to the sighting store (unknown colour, naive datetime, no embedding)."""


class SightingNotFoundError(SightingStoreError, KeyError):
    """No sighting with the given id is stored."""


class SightingStoreIOError(BaqylauError, OSError):
    """The store's database or files cannot be opened, read or written (crops included)."""


@dataclass(frozen=True, slots=True)
class SightingRecord:
    """One stored sighting, as read back from the store.

    Attributes:
        sighting_id: UUID5 string (:class:`search.sightings.Sighting`).
        rowid: int64 id of the row, also its id in the vector indexes.
        camera_id: Camera id.
        camera_name: Display name of the camera, or ``None``.
        track_id: Tracker id within the camera.
        part: 0, or 1, 2, ... for continuations of a long track.
        start_utc: Aware UTC datetime of the first box.
        end_utc: Aware UTC datetime of the last box.
        start_time_s: Stream time (s) of the first box.
        end_time_s: Stream time (s) of the last box.
        upper: Dominant upper-body colour name.
        lower: Dominant lower-body colour name.
        upper_shares: Share of the torso band per colour name.
        lower_shares: Share of the legs band per colour name.
        model_id: Embedding model id, or ``None``.
        conf: Highest detection confidence of the track in [0, 1].
        lat: WGS84 latitude in degrees of the sighting, or ``None``.
        lon: WGS84 longitude in degrees, or ``None``.
        crop_paths: Absolute paths of the JPEG crops, best first.
        times_s: `(T,)` float64 stream time of each trajectory point, s.
        trajectory_px: `(T, 2)` float32 bottom-centre of the box, image px (origin top-left).
        ground_m: `(T, 2)` float32 ground positions in metres of the camera's calibration frame
            (NaN above the horizon), or ``None`` for an uncalibrated camera.
        embedding: `(D,)` float32 L2-normalised embedding, or ``None``.
    """

    sighting_id: str
    rowid: int
    camera_id: str
    camera_name: str | None
    track_id: int
    part: int
    start_utc: dt.datetime
    end_utc: dt.datetime
    start_time_s: float
    end_time_s: float
    upper: str
    lower: str
    upper_shares: Mapping[str, float]
    lower_shares: Mapping[str, float]
    model_id: str | None
    conf: float
    lat: float | None
    lon: float | None
    crop_paths: tuple[Path, ...]
    times_s: np.ndarray
    trajectory_px: np.ndarray
    ground_m: np.ndarray | None
    embedding: np.ndarray | None

    @property
    def start_wall_s(self) -> float:
        """UTC epoch seconds of the start."""
        return self.start_utc.timestamp()

    @property
    def end_wall_s(self) -> float:
        """UTC epoch seconds of the end."""
        return self.end_utc.timestamp()


@dataclass(frozen=True, slots=True)
class Result:
    """One search result: a stored sighting and its score (higher is better).

    ``score`` is the product of the requested colour shares for :meth:`SightingStore.find`, the
    cosine similarity (-1..1) for :meth:`SightingStore.similar`.
    """

    record: SightingRecord
    score: float


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What :meth:`SightingStore.delete_before` removed.

    Attributes:
        sightings: Rows deleted from ``sightings.db``.
        crop_files: JPEG files deleted.
        index_rows: Rows deleted from the vector indexes, all models together.
        days: UTC days whose data was deleted, oldest first.
    """

    sightings: int
    crop_files: int
    index_rows: int
    days: tuple[dt.date, ...]


def safe_dir_name(name: str) -> str:
    """Return a readable, reversible directory name for a camera or model id.

    Letters and digits of any script (``str.isalnum``), ``-`` and ``_`` stay as they are; every
    other character (``/``, spaces, ``%``, ``.``, ...) is percent-encoded as UTF-8 bytes
    (RFC 3986 style), so distinct ids give distinct names and ``Көктем 3 / кіреберіс`` becomes
    ``Көктем%203%20%2F%20кіреберіс``. A name over :data:`MAX_DIR_NAME_BYTES` bytes is cut and
    ends with ``~`` and 16 hex digits of its SHA-256 (still unique).

    Raises:
        SightingStoreError: For an empty name.
    """
    if not name:
        raise SightingStoreError("an empty camera or model id cannot name a directory")
    out = "".join(ch if (ch.isalnum() or ch in "-_") else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
                  for ch in name)
    if len(out.encode("utf-8")) > MAX_DIR_NAME_BYTES:
        import hashlib

        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
        cut = out.encode("utf-8")[:MAX_DIR_NAME_BYTES - 17].decode("utf-8", errors="ignore")
        out = f"{cut}~{digest}"
    return out


def _utc(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc)


def _epoch(value: dt.datetime | float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise SightingStoreError(f"{name} must be a timezone-aware datetime or epoch seconds, got naive {value!r}")
    return to_epoch_s(value)


def _points(rows: Any) -> np.ndarray:
    return np.array([[math.nan if v is None else v for v in r] for r in rows or []], np.float32).reshape(-1, 2)


class SightingStore:
    """Durable home of sightings, shared by several analysis and search processes.

    One SQLite connection per instance, shared by its threads behind a lock; WAL mode with
    ``synchronous=NORMAL`` and a 30 s busy timeout (https://www.sqlite.org/wal.html), every
    write one ``BEGIN IMMEDIATE`` transaction. Use one instance per process.

    Args:
        directory: Store folder (the app passes ``data_dir/sightings``); created if missing.
        jpeg_quality: JPEG quality 1-100 of the crops; 90 keeps faces and fabric texture
            readable for investigators at about 5-15 kB per crop.
        index_factory: ``(directory, dim, model_id) -> VectorIndex`` building the index of one
            model (e.g. :class:`search.index_milvus.MilvusIndex`); it must return an empty index
            for an empty directory. Default :class:`search.index.FaissDayIndex`.

    Raises:
        SightingStoreIOError: The folder or database cannot be created or opened, or the
            database is not a sighting store of a known schema version.
        SightingStoreError: ``jpeg_quality`` outside 1-100.
    """

    def __init__(self, directory: str | os.PathLike, *, jpeg_quality: int = 90,
                 index_factory: IndexFactory | None = None) -> None:
        if not 1 <= int(jpeg_quality) <= 100:
            raise SightingStoreError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.directory = Path(directory)
        self.jpeg_quality = int(jpeg_quality)
        self._factory: IndexFactory = index_factory or (lambda d, dim, model: FaissDayIndex(d, dim, model))
        self._lock = threading.RLock()
        self._indexes: dict[str, tuple[VectorIndex, dict[str, Any]]] = {}
        self._closed = False
        db_path = self.directory / "sightings.db"
        try:
            (self.directory / "crops").mkdir(parents=True, exist_ok=True)
            (self.directory / "index").mkdir(exist_ok=True)
            self._conn = connect(db_path)
        except (OSError, sqlite3.Error) as exc:
            raise SightingStoreIOError(f"cannot open sighting store {self.directory}: {exc}") from exc
        try:
            configure_wal(self._conn)
            ensure_schema(self._conn, self._lock, _SCHEMA, SCHEMA_VERSION, f"sighting store {db_path}",
                          SightingStoreIOError)
        except sqlite3.Error as exc:
            self._conn.close()
            raise SightingStoreIOError(f"sighting store {db_path} is unreadable or not a SQLite database: "
                                       f"{exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------
    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Hold the lock and one write transaction (:func:`alerts.sqlite.transaction`)."""
        return transaction(self._conn, self._lock)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._check_open()
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise SightingStoreIOError(f"sighting store {self.directory}: query failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise SightingStoreError(f"sighting store {self.directory} is closed")

    # -- writing ------------------------------------------------------------------------------
    def add(self, sighting: Sighting, *, camera_name: str | None = None,
            location: tuple[float, float] | None = None) -> bool:
        """Store a sighting: its crops as JPEG files first, then its row.

        Args:
            sighting: The finished sighting.
            camera_name: Display name of the camera, or ``None``.
            location: ``(lat, lon)`` WGS84 degrees of the sighting (from the calibration or the
                camera position), or ``None``.

        Returns:
            ``True`` when stored, ``False`` when a sighting with this id is already stored (the
            same file analysed twice): nothing is changed then.

        Raises:
            SightingStoreIOError: A crop cannot be encoded or written, or the database fails; no
                row is left behind (crops written by this call are removed).
            SightingStoreError: A location outside WGS84 ranges, or an embedding that is not a
                finite `(D,)` vector.
        """
        self._check_open()
        lat = lon = None
        if location is not None:
            lat, lon = float(location[0]), float(location[1])
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise SightingStoreError(f"location must be (lat, lon) WGS84 degrees, got {location}")
        blob = None
        if sighting.embedding is not None:
            emb = np.asarray(sighting.embedding, np.float32)
            if emb.ndim != 1 or emb.size == 0 or not np.isfinite(emb).all():
                raise SightingStoreError(f"sighting {sighting.sighting_id}: embedding must be a finite (D,) "
                                         f"vector, got shape {emb.shape}")
            blob = emb.tobytes()
        if self._query("SELECT 1 FROM sightings WHERE sighting_id = ?", (sighting.sighting_id,)):
            return False
        day = utc_day(sighting.start_wall_s)
        rel_dir = Path("crops") / day.isoformat() / safe_dir_name(sighting.camera_id)
        rel_paths = [rel_dir / f"{sighting.sighting_id}_{k}.jpg" for k in range(len(sighting.crops))]
        written = self._write_crops(sighting, rel_paths)
        summary = sighting.summary()
        row = (sighting.sighting_id, sighting.camera_id, camera_name, int(sighting.track_id), int(sighting.part),
               float(sighting.start_wall_s), float(sighting.end_wall_s), float(sighting.start_time_s),
               float(sighting.end_time_s), day.isoformat(), sighting.upper, sighting.lower,
               json.dumps(dict(sighting.upper_shares)), json.dumps(dict(sighting.lower_shares)),
               sighting.model_id if blob is not None else None, blob, float(sighting.conf), lat, lon,
               json.dumps([p.as_posix() for p in rel_paths], ensure_ascii=False),
               json.dumps(summary, ensure_ascii=False))
        try:
            with self._write() as conn:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO sightings (sighting_id, camera_id, camera_name, track_id, part, "
                    "start_wall_s, end_wall_s, start_time_s, end_time_s, day, upper, lower, upper_shares, "
                    "lower_shares, model_id, embedding, conf, lat, lon, crops, summary) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                inserted = cur.rowcount == 1
        except sqlite3.Error as exc:
            for path in written:
                path.unlink(missing_ok=True)
            raise SightingStoreIOError(f"sighting store {self.directory}: cannot add sighting "
                                       f"{sighting.sighting_id} of camera {sighting.camera_id}: {exc}") from exc
        if inserted:
            logger.debug("camera %s: sighting %s stored (%d crops)", sighting.camera_id, sighting.sighting_id,
                         len(rel_paths))
        return inserted

    def _write_crops(self, sighting: Sighting, rel_paths: Sequence[Path]) -> list[Path]:
        """Encode and write each crop atomically (temporary name, then rename)."""
        written: list[Path] = []
        try:
            for crop, rel in zip(sighting.crops, rel_paths):
                ok, buf = cv2.imencode(".jpg", crop.crop, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    raise OSError(f"JPEG encoding failed for a crop of shape {crop.crop.shape}")
                path = self.directory / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(buf.tobytes())
                os.replace(tmp, path)
                written.append(path)
        except (OSError, cv2.error) as exc:
            for path in written:
                path.unlink(missing_ok=True)
            raise SightingStoreIOError(f"camera {sighting.camera_id}: cannot write crops of sighting "
                                       f"{sighting.sighting_id} under {self.directory / 'crops'}: {exc}") from exc
        return written

    # -- reading ------------------------------------------------------------------------------
    def _record(self, row: tuple) -> SightingRecord:
        (rowid, sid, camera_id, camera_name, track_id, part, start_w, end_w, start_s, end_s, upper, lower,
         upper_sh, lower_sh, model_id, blob, conf, lat, lon, crops, summary) = row
        info = json.loads(summary)
        ground = info.get("ground_m")
        times = np.asarray(info.get("times_s") or [], np.float64)
        return SightingRecord(
            sighting_id=sid, rowid=int(rowid), camera_id=camera_id, camera_name=camera_name,
            track_id=int(track_id), part=int(part), start_utc=_utc(start_w), end_utc=_utc(end_w),
            start_time_s=float(start_s), end_time_s=float(end_s), upper=upper, lower=lower,
            upper_shares=json.loads(upper_sh), lower_shares=json.loads(lower_sh), model_id=model_id,
            conf=float(conf), lat=lat, lon=lon,
            crop_paths=tuple(self.directory / p for p in json.loads(crops)), times_s=times,
            trajectory_px=_points(info.get("trajectory_px")), ground_m=None if ground is None else _points(ground),
            embedding=None if blob is None else np.frombuffer(blob, np.float32).copy())

    def get(self, sighting_id: str) -> SightingRecord | None:
        """Return the stored sighting with this id, or ``None``.

        Raises:
            SightingStoreIOError: On a database error.
        """
        rows = self._query(f"SELECT {_COLUMNS} FROM sightings WHERE sighting_id = ?", (sighting_id,))
        return self._record(rows[0]) if rows else None

    def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Sighting ids starting with ``prefix`` (a short id as people copy it), at most ``limit``.

        Raises:
            SightingStoreIOError: On a database error.
        """
        rows = self._query("SELECT sighting_id FROM sightings WHERE substr(sighting_id, 1, ?) = ? LIMIT ?",
                           (len(prefix), prefix, int(limit)))
        return [r[0] for r in rows]

    def _by_rowids(self, rowids: Sequence[int]) -> dict[int, SightingRecord]:
        out: dict[int, SightingRecord] = {}
        for start in range(0, len(rowids), 500):
            chunk = list(rowids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {_COLUMNS} FROM sightings WHERE rowid IN ({marks})", chunk):
                out[int(row[0])] = self._record(row)
        return out

    @staticmethod
    def _filters(time_from: Any, time_to: Any, cameras: Sequence[str] | None,
                 bbox: BBox | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        t0, t1 = _epoch(time_from, "time_from"), _epoch(time_to, "time_to")
        if t0 is not None:
            where.append("start_wall_s >= ?")
            params.append(t0)
        if t1 is not None:
            where.append("start_wall_s <= ?")
            params.append(t1)
        if cameras is not None:
            cams = list(cameras)
            if isinstance(cameras, str):
                raise SightingStoreError("cameras must be a sequence of camera ids, not one string")
            where.append(f"camera_id IN ({','.join('?' * len(cams))})" if cams else "0")
            params += cams
        if bbox is not None:
            where.append("lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
            params += [bbox.lat_min, bbox.lat_max, bbox.lon_min, bbox.lon_max]
        return where, params

    def find(self, *, upper: str | None = None, lower: str | None = None,
             time_from: dt.datetime | float | None = None, time_to: dt.datetime | float | None = None,
             cameras: Sequence[str] | None = None, bbox: BBox | None = None,
             min_share: float = 0.2, limit: int = 50) -> list[Result]:
        """Search by clothing colours, time, cameras and map area (all filters in SQL).

        A requested colour matches when its share of that body band is at least ``min_share``
        (a coat that is 40 % grey is found by "grey" even if blue dominates); the score is the
        product of the requested shares (1.0 when no colour is asked). Ranked by score, then
        start time (earliest first).

        Args:
            upper: Upper-body colour, one of :data:`search.colours.COLOUR_NAMES`, or ``None``.
            lower: Lower-body colour, or ``None``.
            time_from: Earliest sighting start (inclusive): aware datetime or UTC epoch s.
            time_to: Latest sighting start (inclusive).
            cameras: Only these camera ids.
            bbox: Only sightings located inside this WGS84 box (unlocated ones excluded).
            min_share: Least share in (0, 1] of a band for a colour to match. Lower finds
                partly-matching clothes (a striped jumper, a coat over a shirt) but also more
                people whose clothes only contain a little of that colour; 0.2 found coats that
                are a third grey without returning everyone with grey shadows.
            limit: Most results (>= 1).

        Returns:
            Results, best first.

        Raises:
            SightingStoreError: Unknown colour (the message lists the valid names), naive
                datetime, ``min_share`` outside (0, 1] or ``limit`` < 1.
            SightingStoreIOError: On a database error.
        """
        if not 0 < min_share <= 1:
            raise SightingStoreError(f"min_share must be in (0, 1], got {min_share}")
        if limit < 1:
            raise SightingStoreError(f"limit must be >= 1, got {limit}")
        where, params = self._filters(time_from, time_to, cameras, bbox)
        score = "1.0"
        for column, colour in (("upper_shares", upper), ("lower_shares", lower)):
            if colour is None:
                continue
            name = colour.strip().lower()
            if name not in COLOUR_NAMES:
                raise SightingStoreError(f"unknown colour {colour!r}; use one of {', '.join(COLOUR_NAMES)}")
            share = f"COALESCE(json_extract({column}, '$.{name}'), 0)"
            where.append(f"{share} >= ?")
            params.append(float(min_share))
            score = f"{score} * {share}"
        sql = (f"SELECT {_COLUMNS}, {score} AS score FROM sightings"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY score DESC, start_wall_s ASC, rowid ASC LIMIT ?")
        rows = self._query(sql, [*params, int(limit)])
        return [Result(self._record(r[:-1]), float(r[-1])) for r in rows]

    # -- vector index ---------------------------------------------------------------------------
    def _index_paths(self, model_id: str) -> tuple[Path, Path]:
        name = safe_dir_name(model_id)
        return self.directory / "index" / name, self.directory / "index" / f"{name}.lock"

    @contextlib.contextmanager
    def _index_lock(self, model_id: str) -> Iterator[None]:
        """Hold the exclusive ``flock`` of one model's index (blocks until free)."""
        _, lock_path = self._index_paths(model_id)
        with self._lock, open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _read_state(directory: Path) -> dict[str, Any] | None:
        try:
            return json.loads((directory / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_state(directory: Path, state: Mapping[str, Any]) -> None:
        tmp = directory / "state.json.tmp"
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, directory / "state.json")

    def _drop_cached(self, model_id: str) -> None:
        cached = self._indexes.pop(model_id, None)
        if cached is not None:
            with contextlib.suppress(Exception):
                cached[0].close()

    def _open_index(self, model_id: str, dim: int) -> tuple[VectorIndex, dict[str, Any]]:
        """Return this process's index of ``model_id``, reopened if another process changed it.

        Caller holds the index lock. A missing or inconsistent index is rebuilt from empty.
        """
        directory, _ = self._index_paths(model_id)
        state = self._read_state(directory)
        cached = self._indexes.get(model_id)
        if cached is not None and state == cached[1]:
            return cached
        self._drop_cached(model_id)
        if state is not None and (state.get("model_id") != model_id or state.get("dim") != dim):
            state = None
        index = None
        if state is not None:
            expected = self._query("SELECT COUNT(*) FROM sightings WHERE model_id = ? AND embedding IS NOT NULL "
                                   "AND rowid <= ?", (model_id, int(state["rowid"])))[0][0]
            try:
                index = self._factory(directory, dim, model_id)
                found = index.count()
            except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
                logger.warning("index of model %s in %s is unreadable (%s); rebuilding", model_id, directory, exc)
                index, state = None, None
            else:
                if found != expected:
                    logger.warning("index of model %s: %d rows but %d expected from sightings.db; rebuilding",
                                   model_id, found, expected)
                    index.close()
                    index, state = None, None
        if state is None:
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            index = self._factory(directory, dim, model_id)
            state = {"model_id": model_id, "dim": dim, "rowid": 0, "generation": 0}
            self._write_state(directory, state)
            logger.info("index of model %s: (re)building from sightings.db in %s", model_id, directory)
        self._indexes[model_id] = (index, state)
        return index, state

    def _model_dim(self, model_id: str) -> int | None:
        rows = self._query("SELECT length(embedding) FROM sightings WHERE model_id = ? AND embedding IS NOT NULL "
                           "LIMIT 1", (model_id,))
        return rows[0][0] // 4 if rows else None

    def _sync_locked(self, model_id: str, dim: int) -> tuple[VectorIndex, int]:
        index, state = self._open_index(model_id, dim)
        added = 0
        watermark = int(state["rowid"])
        while True:
            rows = self._query("SELECT rowid, embedding, camera_id, start_wall_s, lat, lon FROM sightings "
                               "WHERE model_id = ? AND embedding IS NOT NULL AND rowid > ? ORDER BY rowid LIMIT ?",
                               (model_id, watermark, SYNC_BATCH))
            if not rows:
                break
            vectors = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
            if vectors.shape[1] != dim:
                raise ShapeError(f"model {model_id}: stored embeddings of dims {dim} and {vectors.shape[1]}")
            index.add(np.array([r[0] for r in rows], np.int64), vectors, [r[2] for r in rows],
                      np.array([r[3] for r in rows], np.float64),
                      np.array([math.nan if r[4] is None else r[4] for r in rows]),
                      np.array([math.nan if r[5] is None else r[5] for r in rows]))
            watermark = int(rows[-1][0])
            added += len(rows)
        if added:
            flush = getattr(index, "flush", None)
            if flush is not None:
                flush()
            state = {**state, "rowid": watermark, "generation": int(state["generation"]) + 1}
            directory, _ = self._index_paths(model_id)
            self._write_state(directory, state)
            self._indexes[model_id] = (index, state)
            logger.info("index of model %s: synced %d sightings up to rowid %d", model_id, added, watermark)
        return index, added

    def sync_index(self, model_id: str) -> int:
        """Add the sightings of ``model_id`` stored since the last sync to its vector index.

        Takes the model's exclusive file lock; rebuilds the index when its folder was deleted or
        its row count disagrees with ``sightings.db``.

        Returns:
            Rows added (0 when up to date or when the model has no sightings).

        Raises:
            SightingStoreIOError: On a database error.
        """
        self._check_open()
        dim = self._model_dim(model_id)
        if dim is None:
            return 0
        with self._index_lock(model_id):
            return self._sync_locked(model_id, dim)[1]

    def similar(self, vector: np.ndarray, model_id: str, *, k: int = 20,
                time_from: dt.datetime | float | None = None, time_to: dt.datetime | float | None = None,
                cameras: Sequence[str] | None = None, bbox: BBox | None = None,
                exclude: Iterable[str] = ()) -> list[Result]:
        """Sightings whose embedding of ``model_id`` is most similar to ``vector``.

        The index is synced first; filters are applied inside the index search (never after a
        top-k cut). Only embeddings of ``model_id`` are compared.

        Args:
            vector: `(D,)` float32 L2-normalised query embedding of model ``model_id``.
            model_id: Embedding model (``Embedder.model_id``).
            k: Most results (>= 1).
            time_from: Earliest sighting start (inclusive): aware datetime or UTC epoch s.
            time_to: Latest sighting start (inclusive).
            cameras: Only these camera ids.
            bbox: Only sightings located inside this WGS84 box.
            exclude: Sighting ids left out of the results.

        Returns:
            Results by decreasing cosine similarity; empty when no sighting has this model.

        Raises:
            ShapeError: ``vector`` is not `(D,)` of the model's dimension.
            SightingStoreError: Naive datetime, ``k`` < 1, unnormalised vector.
            SightingStoreIOError: On a database error.
        """
        self._check_open()
        if k < 1:
            raise SightingStoreError(f"k must be >= 1, got {k}")
        _epoch(time_from, "time_from")  # reject naive datetimes with the store's error
        _epoch(time_to, "time_to")
        if isinstance(cameras, str):
            raise SightingStoreError("cameras must be a sequence of camera ids, not one string")
        excluded = set(exclude)
        dim = self._model_dim(model_id)
        if dim is None:
            return []
        with self._index_lock(model_id):
            index, _ = self._sync_locked(model_id, dim)
            try:
                hits = index.search(np.asarray(vector, np.float32), k + len(excluded), time_from=time_from,
                                    time_to=time_to, cameras=None if cameras is None else list(cameras), bbox=bbox)
            except ShapeError:
                raise
            except ValueError as exc:
                raise SightingStoreError(f"similar({model_id}): {exc}") from exc
        records = self._by_rowids([h.id for h in hits])
        out = [Result(records[h.id], h.score) for h in hits
               if h.id in records and records[h.id].sighting_id not in excluded]
        return out[:k]

    def more_like(self, sighting_id: str, *, k: int = 20, time_from: dt.datetime | float | None = None,
                  time_to: dt.datetime | float | None = None, cameras: Sequence[str] | None = None,
                  bbox: BBox | None = None, exclude: Iterable[str] = ()) -> list[Result]:
        """"More like this": :meth:`similar` with a stored sighting's own embedding, itself excluded.

        Raises:
            SightingNotFoundError: No sighting with this id.
            SightingStoreError: The sighting has no embedding, or as :meth:`similar`.
        """
        record = self.get(sighting_id)
        if record is None:
            raise SightingNotFoundError(f"no sighting {sighting_id!r} in {self.directory}")
        if record.embedding is None or record.model_id is None:
            raise SightingStoreError(f"sighting {sighting_id} has no embedding to search with")
        return self.similar(record.embedding, record.model_id, k=k, time_from=time_from, time_to=time_to,
                            cameras=cameras, bbox=bbox, exclude=(sighting_id, *exclude))

    # -- retention and bookkeeping ------------------------------------------------------------------
    def _index_models(self) -> dict[str, int]:
        """model_id -> dim of every index on disk and every model in the database."""
        found = {m: d for m, d in ((m, self._model_dim(m)) for m in self.models()) if d is not None}
        for state_path in (self.directory / "index").glob("*/state.json"):
            state = self._read_state(state_path.parent)
            if state is not None:
                found.setdefault(str(state["model_id"]), int(state["dim"]))
        return found

    def delete_before(self, day: dt.date) -> RetentionReport:
        """Delete every sighting whose UTC start day is before ``day``: rows, crops, index rows.

        Holds every model's index lock (in sorted order) while deleting, so searchers never see
        an index out of step with the database. Logs one INFO line with the counts.

        Returns:
            What was removed.

        Raises:
            SightingStoreError: ``day`` is not a ``datetime.date``.
            SightingStoreIOError: On a database or file-system error.
        """
        self._check_open()
        if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
            raise SightingStoreError(f"day must be a datetime.date, got {day!r}")
        cutoff = day.isoformat()
        models = self._index_models()
        index_rows = 0
        with contextlib.ExitStack() as locks:
            for model_id in sorted(models):
                locks.enter_context(self._index_lock(model_id))
            days = {d for (d,) in self._query("SELECT DISTINCT day FROM sightings WHERE day < ?", (cutoff,))}
            # index first: an index missing rows is rebuilt on open, one with extra rows too
            for model_id, dim in sorted(models.items()):
                directory, _ = self._index_paths(model_id)
                if not (directory / "state.json").exists():
                    continue
                index, state = self._open_index(model_id, dim)
                dropped = index.drop_before(day)
                if dropped:
                    flush = getattr(index, "flush", None)
                    if flush is not None:
                        flush()
                    state = {**state, "generation": int(state["generation"]) + 1}
                    self._write_state(directory, state)
                    self._indexes[model_id] = (index, state)
                index_rows += dropped
            try:
                with self._write() as conn:
                    removed = conn.execute("DELETE FROM sightings WHERE day < ?", (cutoff,)).rowcount
            except sqlite3.Error as exc:
                raise SightingStoreIOError(f"sighting store {self.directory}: retention failed: {exc}") from exc
        crop_files = 0
        for folder in sorted((self.directory / "crops").iterdir()):
            try:
                folder_day = dt.date.fromisoformat(folder.name)
            except ValueError:
                continue
            if folder_day < day:
                days.add(folder.name)
                crop_files += sum(1 for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
        report = RetentionReport(removed, crop_files, index_rows, tuple(sorted(dt.date.fromisoformat(d) for d in days)))
        logger.info("sighting store %s: retention before %s deleted %d sightings, %d crop files, %d index rows "
                    "over %d days", self.directory, day, report.sightings, report.crop_files, report.index_rows,
                    len(report.days))
        return report

    def delete_older_than(self, days: int, now: dt.datetime | None = None) -> RetentionReport:
        """Keep the last ``days`` UTC days (today included) and delete the rest.

        Args:
            days: Days to keep, >= 1.
            now: Aware current time; default the system clock.

        Raises:
            SightingStoreError: ``days`` < 1 or naive ``now``.
        """
        if days < 1:
            raise SightingStoreError(f"days must be >= 1, got {days}")
        now_s = _epoch(now, "now") if now is not None else dt.datetime.now(dt.timezone.utc).timestamp()
        return self.delete_before(utc_day(now_s) - dt.timedelta(days=days - 1))

    def count(self) -> int:
        """Number of stored sightings."""
        return int(self._query("SELECT COUNT(*) FROM sightings")[0][0])

    def models(self) -> dict[str, int]:
        """Embedding model id -> number of sightings with an embedding of that model."""
        return dict(self._query("SELECT model_id, COUNT(*) FROM sightings WHERE model_id IS NOT NULL "
                                "AND embedding IS NOT NULL GROUP BY model_id ORDER BY model_id"))

    def close(self) -> None:
        """Close the indexes and the database; a second call does nothing."""
        if self._closed:
            return
        with self._lock:
            for model_id in list(self._indexes):
                self._drop_cached(model_id)
            self._conn.close()
            self._closed = True

    def __enter__(self) -> SightingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
