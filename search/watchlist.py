"""Watchlist of missing or wanted persons, matched live against sightings' embeddings.

An investigator registers a person with one or more photos (person crops) and a case reference
(:meth:`Watchlist.add`). The photos are stored as JPEG under ``photos/<entry_id>/<n>.jpg`` and
embedded with every configured embedder; each embedding is stored with its embedder's
``model_id``, so a pipeline running model X matches only against embeddings of model X
(cosine similarity across models is meaningless). An analysis process holds a
:class:`Matcher` for its model, which compares each new sighting's embedding with every active
entry's photos by brute force (a watchlist is tens to thousands of entries) and reloads the
entries from SQLite when another process (the CLI) added or closed one.

Default thresholds (:data:`DEFAULT_THRESHOLDS`), per model family, calibrated on real labelled
people with ``benchmarks/reid.py --thresholds`` (stored in
``tests/search/watchlist_thresholds_pets09.json``): PETS09-S2L1 frames 1-400 of vtest.avi,
415 whole, at most 30 % covered GT crops of 10 identities (every 5th frame); genuine pairs are
crops of one identity at least 10 s apart (4,562 pairs), impostor pairs are crops of two
different identities at any time (75,923 pairs). The threshold is the lowest score (to 0.001)
with a false-match rate (FMR) of at most 1 % per comparison; the hit rate is the share of
genuine pairs scoring at or above it.

==========================  ==========================================  =========  ======  ========
family (model_id prefix)    calibrated on                               threshold  FMR     hit rate
==========================  ==========================================  =========  ======  ========
``colour_hsv_8x4x4_``       ``colour_hsv_8x4x4_v1``                     0.807      0.0100  0.246
``mobilenetv2_``            ``mobilenetv2_bottle_imagenet@e593a7c1``    0.836      0.0099  0.111
``osnet_``                  ``osnet_x0_25_msmt17@61b2604171ef``         0.745      0.0099  0.596
==========================  ==========================================  =========  ======  ========

The rates are per crop against crop. A sighting's embedding is the mean of its best crops, an
entry may have several photos (the best one counts) and a person walking past is checked
several times, so the chance to be hit over a whole pass is higher than the hit rate above;
so is the chance of a false match. The FMR also adds up over the watchlist: at 1 % per
comparison and 100 active entries, ``1 - 0.99**100`` = 63 % of innocent sightings would match
someone. A site with a long list must raise the threshold (per entry, ``threshold=``) or use a
real re-ID model (OSNet-like), whose genuine and impostor scores lie much further apart. Models
of no known family get :data:`UNKNOWN_MODEL_THRESHOLD` and a logged warning. Ten people
on one camera is a small calibration set: treat the figures as a starting point.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from alerts.sqlite import connect_wal, ensure_schema, transaction
from ingest.errors import BaqylauError, ShapeError
from search.embed import Embedder, check_crops

log = logging.getLogger(__name__)

#: Default match threshold (cosine similarity) per model family, keyed by ``model_id`` prefix;
#: measured at a 1 % false-match rate per comparison on PETS09 (see the module docstring).
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "colour_hsv_8x4x4_": 0.807,
    "mobilenetv2_": 0.836,
    "osnet_": 0.745,
}
#: Threshold for a model of no calibrated family: high, so few false matches (and few hits).
UNKNOWN_MODEL_THRESHOLD = 0.9
#: JPEG quality of stored photos (OpenCV ``IMWRITE_JPEG_QUALITY``).
JPEG_QUALITY = 95
KINDS = ("missing", "wanted")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id     TEXT UNIQUE,
    name         TEXT NOT NULL,
    case_ref     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    notes        TEXT NOT NULL,
    created_utc  TEXT NOT NULL,   -- ISO 8601 UTC, fixed width
    created_by   TEXT NOT NULL,
    expires_utc  TEXT,
    closed_utc   TEXT,
    closed_by    TEXT,
    close_reason TEXT
);
CREATE TABLE IF NOT EXISTS photos (
    entry_id TEXT NOT NULL,
    n        INTEGER NOT NULL,
    path     TEXT NOT NULL,       -- relative to the watchlist directory
    PRIMARY KEY (entry_id, n)
);
CREATE TABLE IF NOT EXISTS embeddings (
    entry_id  TEXT NOT NULL,
    n         INTEGER NOT NULL,   -- photo number
    model_id  TEXT NOT NULL,
    vector    BLOB NOT NULL,      -- (D,) float32 little-endian, L2-normalised
    PRIMARY KEY (entry_id, model_id, n)
);
CREATE TABLE IF NOT EXISTS thresholds (
    entry_id  TEXT NOT NULL,
    model_id  TEXT NOT NULL,
    threshold REAL NOT NULL,
    PRIMARY KEY (entry_id, model_id)
);
CREATE INDEX IF NOT EXISTS embeddings_model ON embeddings (model_id);
"""


class WatchlistError(BaqylauError, ValueError):
    """Invalid watchlist input (empty name or case, no photos, past expiry, bad threshold)."""


class WatchlistNotFoundError(WatchlistError, KeyError):
    """No watchlist entry has the given id."""


def default_threshold(model_id: str) -> float:
    """Calibrated default threshold of ``model_id``'s family (see :data:`DEFAULT_THRESHOLDS`).

    A model of no known family gets :data:`UNKNOWN_MODEL_THRESHOLD` and a warning is logged.
    """
    for prefix, value in DEFAULT_THRESHOLDS.items():
        if model_id.startswith(prefix):
            return value
    log.warning("watchlist: no calibrated threshold for model %s; using the conservative %.3f "
                "(calibrate with benchmarks/reid.py --thresholds)", model_id, UNKNOWN_MODEL_THRESHOLD)
    return UNKNOWN_MODEL_THRESHOLD


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(name: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise WatchlistError(f"{name} {value!r} is naive; give a timezone-aware UTC time")
    return None if value is None else value.astimezone(dt.timezone.utc)


def _fmt(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)


def _check_threshold(value: float) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise WatchlistError(f"threshold must be in (0, 1], got {value}")
    return value


@dataclass(frozen=True, slots=True)
class WatchEntry:
    """One registered person.

    Attributes:
        entry_id: Readable id ``"W-000012"``.
        name: Person's name (or a description when unknown).
        case_ref: Police case reference.
        kind: ``"missing"`` or ``"wanted"``.
        thresholds: Cosine match threshold per ``model_id`` the photos are embedded with.
        created_utc: Registration time, aware UTC.
        created_by: Who registered it.
        expires_utc: When matching stops by itself, aware UTC, or ``None``.
        closed_utc: When it was closed, or ``None``.
        closed_by: Who closed it, or ``None``.
        close_reason: Why, or ``None``.
        notes: Free text.
        photo_paths: Absolute paths of the stored JPEG photos, in registration order.
        status: ``"active"``, ``"expired"`` or ``"closed"`` at the time of the query.
    """

    entry_id: str
    name: str
    case_ref: str
    kind: str
    thresholds: Mapping[str, float]
    created_utc: dt.datetime
    created_by: str
    expires_utc: dt.datetime | None
    closed_utc: dt.datetime | None
    closed_by: str | None
    close_reason: str | None
    notes: str
    photo_paths: tuple[Path, ...]
    status: str


@dataclass(frozen=True, slots=True)
class WatchMatch:
    """A sighting embedding matching a watchlist entry.

    Attributes:
        entry_id: The entry.
        name: Its person's name.
        case_ref: Its case reference.
        kind: ``"missing"`` or ``"wanted"``.
        score: Cosine similarity to the entry's best-matching photo, in [-1, 1].
        threshold: The entry's threshold for this model (``score >= threshold``).
        photo_path: Absolute path of that best-matching registered photo (JPEG).
    """

    entry_id: str
    name: str
    case_ref: str
    kind: str
    score: float
    threshold: float
    photo_path: Path


def _status(row: sqlite3.Row, now: dt.datetime) -> str:
    if row["closed_utc"] is not None:
        return "closed"
    if row["expires_utc"] is not None and _parse(row["expires_utc"]) <= now:
        return "expired"
    return "active"


class Watchlist:
    """Registry of missing or wanted persons in ``<directory>/watchlist.db`` (SQLite, WAL).

    Several processes may open the same directory (the CLI adds and closes, analysis processes
    match); every write is one ``BEGIN IMMEDIATE`` transaction. Photos are JPEG files under
    ``<directory>/photos/<entry_id>/<n>.jpg``.

    Args:
        directory: Watchlist directory (the application passes ``data_dir/watchlist/``);
            created when absent.

    Raises:
        WatchlistError: When the database cannot be opened or has a newer schema.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "watchlist.db"
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._conn = connect_wal(self.path, row_factory=sqlite3.Row)
            ensure_schema(self._conn, self._lock, _SCHEMA, SCHEMA_VERSION, f"watchlist {self.path}", WatchlistError)
        except (OSError, sqlite3.Error) as exc:
            raise WatchlistError(f"cannot open watchlist {self.path}: {exc}") from exc

    def close_db(self) -> None:
        """Close the database connection (the object is unusable afterwards)."""
        self._conn.close()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """Hold the lock and one write transaction (:func:`alerts.sqlite.transaction`)."""
        return transaction(self._conn, self._lock)

    def add(self, *, name: str, case_ref: str, photos: Sequence[np.ndarray], embedders: Sequence[Embedder],
            created_by: str, kind: str = "missing", threshold: float | Mapping[str, float] | None = None,
            expires_utc: dt.datetime | None = None, notes: str = "") -> WatchEntry:
        """Register a person.

        The photos are JPEG-encoded, and the decoded JPEGs (what is stored, so that
        :meth:`add_embeddings` later gives the same vectors) are embedded with every embedder.

        Args:
            name: Person's name or a description; not empty.
            case_ref: Case reference; not empty.
            photos: Person crops, each `(H, W, 3)` uint8 BGR, one person per crop, as tight as
                a detector box (the embedders were measured on such crops).
            embedders: Every embedder the pipelines run (at least one); embeddings are stored
                per ``model_id``.
            created_by: Who registers it; not empty.
            kind: ``"missing"`` or ``"wanted"``.
            threshold: Cosine threshold in (0, 1] for every model, or a mapping ``model_id`` ->
                threshold; models not given get :func:`default_threshold`. Higher means fewer
                false matches and more missed sightings.
            expires_utc: Aware time after which the entry stops matching, or ``None``.
            notes: Free text.

        Returns:
            The stored entry.

        Raises:
            WatchlistError: On an empty name, case_ref or created_by, no photos or embedders,
                an unknown kind, a naive or past ``expires_utc`` or a threshold outside (0, 1].
            ShapeError: When a photo is not a non-empty `(H, W, 3)` uint8 array.
            EmbedderError: When an embedder fails.
        """
        now = _utc_now()
        for field_name, value in (("name", name), ("case_ref", case_ref), ("created_by", created_by)):
            if not str(value).strip():
                raise WatchlistError(f"{field_name} must not be empty")
        if kind not in KINDS:
            raise WatchlistError(f"kind must be one of {KINDS}, got {kind!r}")
        if not photos:
            raise WatchlistError("at least one photo is needed")
        if not embedders:
            raise WatchlistError("at least one embedder is needed")
        expires = _aware("expires_utc", expires_utc)
        if expires is not None and expires <= now:
            raise WatchlistError(f"expires_utc {expires.isoformat()} is in the past")
        if isinstance(threshold, Mapping):
            chosen = {str(k): _check_threshold(v) for k, v in threshold.items()}
        elif threshold is not None:
            chosen = {e.model_id: _check_threshold(threshold) for e in embedders}
        else:
            chosen = {}
        check_crops(photos)
        jpegs, decoded = [], []
        for i, photo in enumerate(photos):
            ok, buf = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ShapeError(f"photos[{i}]: cannot be JPEG-encoded")
            jpegs.append(buf.tobytes())
            decoded.append(cv2.imdecode(buf, cv2.IMREAD_COLOR))
        vectors = {e.model_id: _embed(e, decoded) for e in embedders}
        thresholds = {m: chosen.get(m) or default_threshold(m) for m in vectors}
        entry_dir: Path | None = None
        try:
            with self._write() as conn:
                seq = conn.execute(
                    "INSERT INTO entries (name, case_ref, kind, notes, created_utc, created_by, expires_utc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name.strip(), case_ref.strip(), kind, notes, _fmt(now), created_by.strip(),
                     _fmt(expires))).lastrowid
                entry_id = f"W-{seq:06d}"
                conn.execute("UPDATE entries SET entry_id = ? WHERE seq = ?", (entry_id, seq))
                entry_dir = self.directory / "photos" / entry_id
                entry_dir.mkdir(parents=True, exist_ok=True)
                for n, data in enumerate(jpegs):
                    rel = Path("photos") / entry_id / f"{n}.jpg"
                    _write_atomic(self.directory / rel, data)
                    conn.execute("INSERT INTO photos (entry_id, n, path) VALUES (?, ?, ?)",
                                 (entry_id, n, rel.as_posix()))
                for model_id, matrix in vectors.items():
                    self._insert_embeddings(conn, entry_id, model_id, matrix, thresholds[model_id])
        except BaseException:
            if entry_dir is not None:
                shutil.rmtree(entry_dir, ignore_errors=True)
            raise
        log.info("watchlist: %s added (%s, case %s, %d photos, models %s) by %s", entry_id, kind,
                 case_ref, len(jpegs), ", ".join(vectors), created_by)
        return self.get(entry_id)

    def add_embeddings(self, entry_id: str, embedder: Embedder, threshold: float | None = None) -> WatchEntry:
        """Embed an entry's stored photos with a model added after its registration.

        Existing embeddings of the same ``model_id`` are replaced.

        Args:
            entry_id: The entry.
            embedder: The new model.
            threshold: Its threshold in (0, 1], or ``None`` for :func:`default_threshold`.

        Returns:
            The updated entry.

        Raises:
            WatchlistNotFoundError: When no entry has ``entry_id``.
            WatchlistError: On a threshold outside (0, 1] or a photo file that cannot be read.
        """
        entry = self.get(entry_id)
        value = _check_threshold(threshold) if threshold is not None else default_threshold(embedder.model_id)
        images = []
        for path in entry.photo_paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise WatchlistError(f"watchlist {entry_id}: cannot read photo {path}")
            images.append(image)
        matrix = _embed(embedder, images)
        with self._write() as conn:
            conn.execute("DELETE FROM embeddings WHERE entry_id = ? AND model_id = ?", (entry_id, embedder.model_id))
            self._insert_embeddings(conn, entry_id, embedder.model_id, matrix, value)
        log.info("watchlist: %s embedded with %s", entry_id, embedder.model_id)
        return self.get(entry_id)

    @staticmethod
    def _insert_embeddings(conn: sqlite3.Connection, entry_id: str, model_id: str, matrix: np.ndarray,
                           threshold: float) -> None:
        conn.executemany("INSERT INTO embeddings (entry_id, n, model_id, vector) VALUES (?, ?, ?, ?)",
                         [(entry_id, n, model_id, row.astype("<f4").tobytes()) for n, row in enumerate(matrix)])
        conn.execute("INSERT OR REPLACE INTO thresholds (entry_id, model_id, threshold) VALUES (?, ?, ?)",
                     (entry_id, model_id, threshold))

    def list(self, active_only: bool = True, now: dt.datetime | None = None) -> list[WatchEntry]:
        """Entries in registration order.

        Args:
            active_only: Leave out expired and closed entries.
            now: Aware time at which ``status`` is judged; ``None`` for now.

        Raises:
            WatchlistError: For a naive ``now``.
        """
        now = _aware("now", now) or _utc_now()
        with self._lock:
            rows = self._conn.execute("SELECT * FROM entries WHERE entry_id IS NOT NULL ORDER BY seq").fetchall()
            entries = [self._entry(row, now) for row in rows]
        return [e for e in entries if e.status == "active" or not active_only]

    def get(self, entry_id: str, now: dt.datetime | None = None) -> WatchEntry:
        """One entry, whatever its status.

        Raises:
            WatchlistNotFoundError: When no entry has ``entry_id``.
        """
        now = _aware("now", now) or _utc_now()
        with self._lock:
            row = self._conn.execute("SELECT * FROM entries WHERE entry_id = ?", (entry_id,)).fetchone()
            if row is None:
                raise WatchlistNotFoundError(f"no watchlist entry {entry_id!r}")
            return self._entry(row, now)

    def _entry(self, row: sqlite3.Row, now: dt.datetime) -> WatchEntry:
        entry_id = row["entry_id"]
        paths = tuple(self.directory / r[0] for r in self._conn.execute(
            "SELECT path FROM photos WHERE entry_id = ? ORDER BY n", (entry_id,)))
        thresholds = dict(self._conn.execute(
            "SELECT model_id, threshold FROM thresholds WHERE entry_id = ? ORDER BY model_id", (entry_id,)))
        return WatchEntry(entry_id=entry_id, name=row["name"], case_ref=row["case_ref"], kind=row["kind"],
                          thresholds=MappingProxyType(thresholds), created_utc=_parse(row["created_utc"]),
                          created_by=row["created_by"], expires_utc=_parse(row["expires_utc"]),
                          closed_utc=_parse(row["closed_utc"]), closed_by=row["closed_by"],
                          close_reason=row["close_reason"], notes=row["notes"], photo_paths=paths,
                          status=_status(row, now))

    def close(self, entry_id: str, *, by: str, reason: str) -> WatchEntry:
        """Close an entry: it stops matching at once (matchers reload within ``reload_s``).

        Closing a closed entry changes nothing and returns it (the first close is kept).

        Raises:
            WatchlistNotFoundError: When no entry has ``entry_id``.
            WatchlistError: When ``by`` or ``reason`` is empty.
        """
        if not by.strip() or not reason.strip():
            raise WatchlistError("closing needs who (by) and why (reason)")
        with self._write() as conn:
            row = conn.execute("SELECT closed_utc FROM entries WHERE entry_id = ?", (entry_id,)).fetchone()
            if row is None:
                raise WatchlistNotFoundError(f"no watchlist entry {entry_id!r}")
            if row[0] is None:
                conn.execute("UPDATE entries SET closed_utc = ?, closed_by = ?, close_reason = ? WHERE entry_id = ?",
                             (_fmt(_utc_now()), by.strip(), reason.strip(), entry_id))
                log.info("watchlist: %s closed by %s: %s", entry_id, by, reason)
        return self.get(entry_id)

    def matcher(self, model_id: str, reload_s: float = 5.0) -> Matcher:
        """A :class:`Matcher` for sightings embedded by ``model_id`` (its own connection)."""
        return Matcher(self.path, model_id, reload_s=reload_s)


class Matcher:
    """Live matching of sighting embeddings against the active entries of one model.

    Holds the entries' photo embeddings of ``model_id`` in memory and compares by brute force:
    cosine similarity (dot product of unit vectors) with every photo, the best photo per entry.
    At most every ``reload_s`` it checks ``PRAGMA data_version`` (changes when another
    connection commits; https://www.sqlite.org/pragma.html#pragma_data_version) and reloads
    when it changed, so an entry added or closed by the CLI takes effect within ``reload_s``.
    Expiry is judged at each match. Safe to share between threads.

    Args:
        db_path: The watchlist's ``watchlist.db``.
        model_id: ``Embedder.model_id`` of the embeddings that will be matched.
        reload_s: Least time between two change checks, s (>= 0). Shorter picks up changes
            sooner at the cost of one cheap query per check.

    Raises:
        WatchlistError: When the database cannot be opened or ``reload_s`` < 0.
    """

    def __init__(self, db_path: str | Path, model_id: str, reload_s: float = 5.0) -> None:
        if not reload_s >= 0:
            raise WatchlistError(f"reload_s must be >= 0, got {reload_s}")
        self.db_path = Path(db_path)
        self.directory = self.db_path.parent
        self.model_id = model_id
        self.reload_s = float(reload_s)
        self._lock = threading.Lock()
        try:
            self._conn = connect_wal(self.db_path, row_factory=sqlite3.Row)
        except sqlite3.Error as exc:
            raise WatchlistError(f"cannot open watchlist {self.db_path}: {exc}") from exc
        self._version: int | None = None
        self._checked = -float("inf")
        self._vectors = np.zeros((0, 0), np.float32)
        self._owner = np.zeros(0, np.int64)  # entry index of each vector row
        self._photo = np.zeros(0, np.int64)  # photo number of each vector row
        self._entries: list[dict] = []
        self._paths: list[Path] = []
        try:
            self._refresh(force=True)
        except sqlite3.Error as exc:
            self._conn.close()
            raise WatchlistError(f"cannot read watchlist {self.db_path}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def active(self) -> bool:
        """Whether any entry of this model is loaded, after the change check of ``reload_s``
        (cheap; call it before embedding crops just for the watchlist)."""
        with self._lock:
            self._refresh()
        return bool(self._entries)

    @property
    def entries(self) -> int:
        """Entries loaded for this model: not closed (expiry is judged at match time)."""
        return len(self._entries)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.reload_s:
            return
        self._checked = now
        try:
            self._load(force)
        except sqlite3.Error as exc:
            if force:
                raise
            # a busy or briefly unreadable database must not stop the pipeline: keep the
            # entries loaded last and try again after reload_s
            log.warning("watchlist matcher %s: reload failed, keeping %d entries: %s", self.model_id,
                        len(self._entries), exc)

    def _load(self, force: bool) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version and not force:
            return
        self._conn.execute("BEGIN")  # one consistent snapshot of the four tables
        try:
            rows = self._conn.execute(
                "SELECT e.entry_id, e.name, e.case_ref, e.kind, e.expires_utc, t.threshold "
                "FROM entries e JOIN thresholds t ON t.entry_id = e.entry_id AND t.model_id = ? "
                "WHERE e.closed_utc IS NULL ORDER BY e.seq", (self.model_id,)).fetchall()
            vecs = self._conn.execute(
                "SELECT entry_id, n, vector FROM embeddings WHERE model_id = ? ORDER BY entry_id, n",
                (self.model_id,)).fetchall()
            photos = {(r[0], r[1]): r[2] for r in self._conn.execute("SELECT entry_id, n, path FROM photos")}
        finally:
            self._conn.execute("COMMIT")
        self._version = version
        index = {r["entry_id"]: i for i, r in enumerate(rows)}
        keep = [v for v in vecs if v[0] in index]
        self._entries = [{"entry_id": r["entry_id"], "name": r["name"], "case_ref": r["case_ref"],
                          "kind": r["kind"], "threshold": float(r["threshold"]),
                          "expires": _parse(r["expires_utc"])} for r in rows]
        self._vectors = (np.stack([np.frombuffer(v[2], "<f4") for v in keep]).astype(np.float32)
                         if keep else np.zeros((0, 0), np.float32))
        self._owner = np.array([index[v[0]] for v in keep], np.int64)
        self._photo = np.array([v[1] for v in keep], np.int64)
        self._paths = [self.directory / photos.get((v[0], v[1]), "") for v in keep]
        log.info("watchlist matcher %s: %d open entries, %d photo embeddings loaded", self.model_id,
                 len(self._entries), len(keep))

    def match(self, embedding: np.ndarray, now_utc: dt.datetime | None = None) -> list[WatchMatch]:
        """Entries whose best photo scores at least their threshold against ``embedding``.

        Args:
            embedding: `(D,)` float32 L2-normalised sighting embedding of this matcher's model.
            now_utc: Aware time at which expiry is judged; ``None`` for now.

        Returns:
            Matches of active entries, highest score first (often none).

        Raises:
            ShapeError: When ``embedding`` is not `(D,)` with D equal to the stored vectors'.
            WatchlistError: For a naive ``now_utc``.
        """
        now = _aware("now_utc", now_utc) or _utc_now()
        query = np.asarray(embedding)
        if query.ndim != 1 or not np.issubdtype(query.dtype, np.floating):
            raise ShapeError(f"embedding: expected a (D,) float vector, got {query.dtype} {query.shape}")
        with self._lock:
            self._refresh()
            if not len(self._vectors):
                return []
            if query.shape[0] != self._vectors.shape[1]:
                raise ShapeError(f"embedding: expected ({self._vectors.shape[1]},) for model {self.model_id}, "
                                 f"got {query.shape}")
            scores = self._vectors @ query.astype(np.float32)
            best = np.full(len(self._entries), -np.inf, np.float32)
            np.maximum.at(best, self._owner, scores)
            out = []
            for i in np.flatnonzero(best >= [e["threshold"] for e in self._entries]):
                entry = self._entries[i]
                if entry["expires"] is not None and entry["expires"] <= now:
                    continue
                rows = np.flatnonzero(self._owner == i)
                row = rows[np.argmax(scores[rows])]
                out.append(WatchMatch(entry_id=entry["entry_id"], name=entry["name"], case_ref=entry["case_ref"],
                                      kind=entry["kind"], score=float(best[i]), threshold=entry["threshold"],
                                      photo_path=self._paths[row]))
        return sorted(out, key=lambda m: -m.score)


def _embed(embedder: Embedder, images: Sequence[np.ndarray]) -> np.ndarray:
    matrix = np.asarray(embedder.embed(images), np.float32)
    if matrix.shape != (len(images), embedder.dim):
        raise ShapeError(f"embedder {embedder.model_id} returned {matrix.shape}, expected "
                         f"({len(images)}, {embedder.dim})")
    return matrix


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
