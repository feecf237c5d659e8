"""Sightings and the live watchlist inside the pipeline (the application side of ``search/``).

Per process, :class:`SearchOutput` holds the sighting store (``data_dir/sightings/``), the
appearance embedder and the watchlist matcher (``data_dir/watchlist/``). Per camera,
:class:`CameraSightings` feeds the camera's tracked people into a
:class:`search.sightings.SightingBuilder`, stores each finished sighting with its WGS84
position, and compares sightings with the active watchlist: while a person is still in view
(every ``search.watch_every_s``, from the crops so far) and once more when the pass ends. A
match above the entry's threshold raises one ``person_match`` alert per entry and pass, routed
to the police queue, with the frame as snapshot and the sighting's crop next to the registered
photo as evidence; a later, better match updates that alert.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from alerts import Alert, make_alert_id, write_snapshot
from baqylau.config import CameraConfig, Config, camera_path_part
from detectors.types import Detections
from ingest.frame import Frame

if TYPE_CHECKING:
    from baqylau.analysis import AlertOutput
    from search.embed import Embedder
    from search.sightings import Sighting

log = logging.getLogger(__name__)

#: Alert type of a watchlist match, and the queue it belongs to (criminal and missing-person
#: matters go to the police).
PERSON_MATCH = "person_match"
PERSON_MATCH_ROUTE = "police"
#: Height in pixels of each half of the side-by-side evidence image (sighting crop | registered
#: photo), so an operator compares faces and clothes at the same scale.
EVIDENCE_HEIGHT_PX = 256


def build_embedder(cfg: Config) -> Embedder:
    """Create the configured appearance embedder.

    Returns:
        An :class:`search.embed.Embedder`: ImageNet backbone, OSNet-convention re-ID model or
        the weights-free colour histogram (``auto`` falls back to it with a warning when no
        model file is configured or found).

    Raises:
        detectors.base.ModelNotFoundError: When ``embedder`` is ``imagenet``/``osnet`` and the
            model file is missing.
        search.embed.EmbedderError: When the model cannot be loaded.
    """
    from search.embed import ColourHistogramEmbedder, ImagenetEmbedder, OnnxReidEmbedder

    sc = cfg.search
    kind = sc.embedder
    if kind == "auto":
        if sc.model_path and Path(sc.model_path).is_file():
            kind = "imagenet"
        else:
            why = f"model file {sc.model_path} not found" if sc.model_path else "no search.model_path"
            log.warning("%s: sightings use the weights-free colour-histogram embedding "
                        "(weaker re-identification; see README, Search)", why)
            return ColourHistogramEmbedder()
    if kind == "colour_histogram":
        return ColourHistogramEmbedder()
    cls = ImagenetEmbedder if kind == "imagenet" else OnnxReidEmbedder
    return cls(sc.model_path, providers=sc.providers, intra_op_num_threads=sc.threads)


def search_problems(cfg: Config) -> list[str]:
    """Problems of the ``search`` section that validation cannot see (files), one line each."""
    sc = cfg.search
    if sc.enabled and sc.embedder in ("imagenet", "osnet") and not Path(sc.model_path or "").is_file():
        return [f"search.model_path: file not found: {sc.model_path}"]
    return []


class SearchOutput:
    """The sighting store, embedder and watchlist matcher of one process.

    Args:
        cfg: The configuration (``data_dir``, ``search``).

    Raises:
        search.store.SightingStoreIOError: When the store cannot be opened (an ``OSError``).
        detectors.base.ModelNotFoundError, search.embed.EmbedderError: See :func:`build_embedder`.
    """

    def __init__(self, cfg: Config) -> None:
        from search.store import SightingStore

        self.cfg = cfg
        self.embedder = build_embedder(cfg)
        self.store = SightingStore(Path(cfg.data_dir) / "sightings", jpeg_quality=cfg.search.crop_quality)
        self.matcher = None
        #: Whether the embedding is a generic one (ImageNet features, colour histogram) rather
        #: than a person re-identification model: watchlist alerts are then far less reliable.
        self.generic = cfg.search.embedder != "osnet"
        self.warned_generic = False
        if cfg.search.watchlist_on:
            from search.watchlist import Watchlist

            self.watchlist = Watchlist(Path(cfg.data_dir) / "watchlist")
            self.matcher = self.watchlist.matcher(self.embedder.model_id)

    def close(self) -> None:
        """Close the store and the watchlist."""
        self.store.close()
        if self.matcher is not None:
            self.matcher.close()
            self.watchlist.close_db()


class CameraSightings:
    """One camera's sightings and live watchlist checks.

    Args:
        cam: The camera.
        cfg: The configuration.
        output: The process's alert output (its ``search`` attribute is the shared
            :class:`SearchOutput`).
        source_key: Identity of the source run (see ``baqylau.analysis.source_key``).
        homography: The camera's calibration (``calibration.homography.Homography``) or ``None``.
    """

    def __init__(self, cam: CameraConfig, cfg: Config, output: AlertOutput, source_key: str,
                 homography: Any = None) -> None:
        from search.sightings import SightingBuilder

        self.cam = cam
        self.cfg = cfg
        self.output = output
        self.search: SearchOutput = output.search
        self.source_key = source_key
        self.homography = homography
        sc = cfg.search
        self.builder = SightingBuilder(
            cam.id, source_key, self.search.embedder, ground=homography,
            crops_per_sighting=sc.crops_per_sighting,
            lost_after_s=sc.lost_after_s or cfg.tracker.lost_track_buffer_s,
            max_duration_s=sc.max_duration_s, min_duration_s=sc.min_duration_s)
        self.stored = 0
        self.matches = 0
        self._alerts: dict[tuple[str, str], tuple[str, float]] = {}  # (entry, sighting) -> (alert, score)
        self._open: dict[str, list[str]] = {}  # sighting id -> its open person_match alert ids

    def update(self, frame: Frame, people: Detections) -> None:
        """Feed one frame's tracked people; store finished sightings; check the watchlist."""
        for s in self.builder.update(frame, people):
            self._finished(s, frame)
        matcher = self.search.matcher
        if matcher is not None and matcher.active():
            if self.search.generic and not self.search.warned_generic:
                self.search.warned_generic = True
                log.warning("watchlist matching with %s, a generic embedding, not a person re-identification "
                            "model: on PETS09 it raised false person_match alerts for most registered people at "
                            "the default thresholds (benchmarks/RESULTS.md); configure a re-ID export "
                            "(search.embedder: osnet) before relying on these alerts",
                            self.search.embedder.model_id)
            for s in self.builder.provisional(frame.time_s, self.cfg.search.watch_every_s):
                self._check(s, frame, people)

    def flush(self, frame: Frame | None) -> None:
        """Finish every open pass (end of stream or shutdown)."""
        for s in self.builder.flush():
            self._finished(s, frame)

    def _finished(self, s: Sighting, frame: Frame | None) -> None:
        try:
            if self.search.store.add(s, camera_name=self.cam.name, location=self._location(s)):
                self.stored += 1
        except OSError as exc:  # a full disk must not stop analysis; the sighting is lost, loudly
            log.error("camera %s: sighting %s not stored: %s", self.cam.id, s.sighting_id, exc)
        if self.search.matcher is not None and self.search.matcher.active():
            self._check(s, None, None)
        self._end(s)

    def _end(self, s: Sighting) -> None:
        """The pass is over: end its person_match alerts at the sighting's last time."""
        for alert_id in self._open.pop(s.sighting_id, []):
            end_utc = datetime.fromtimestamp(s.end_wall_s, UTC)
            self.output.emit("alert.ended", self.output.store.update(
                alert_id, event="alert.ended", end_time_s=s.end_time_s, end_utc=end_utc))

    def _location(self, s: Sighting) -> tuple[float, float] | None:
        """WGS84 position of a sighting: its median ground point when the camera is calibrated
        with a geographic origin, else the camera's configured position."""
        h = self.homography
        if h is not None and getattr(h, "origin_latlon", None) is not None and len(s.trajectory_px):
            latlon = np.asarray(h.img_to_latlon(s.trajectory_px), np.float64)
            ok = np.isfinite(latlon).all(axis=1)
            if ok.any():
                lat, lon = np.median(latlon[ok], axis=0)
                return (round(float(lat), 7), round(float(lon), 7))
        if self.cam.location is not None:
            return (self.cam.location.lat, self.cam.location.lon)
        return None

    def _check(self, s: Sighting, frame: Frame | None, people: Detections | None) -> None:
        if s.embedding is None or s.model_id != self.search.embedder.model_id:
            return
        for m in self.search.matcher.match(s.embedding):
            key = (m.entry_id, s.sighting_id)
            old = self._alerts.get(key)
            if old is not None:
                if m.score > old[1] + 1e-6:
                    self._update(old[0], s, m)
                continue
            alert_id = self._raise(s, m, frame, people)
            if alert_id is not None:
                self._alerts[key] = (alert_id, m.score)
                self._open.setdefault(s.sighting_id, []).append(alert_id)
        if len(self._alerts) > 10_000:  # bounded: keep the newest half
            for k in list(self._alerts)[:5_000]:
                del self._alerts[k]

    def _details(self, s: Sighting, m: Any) -> dict:
        return {"route": PERSON_MATCH_ROUTE, "watch_entry_id": m.entry_id, "name": m.name,
                "case_ref": m.case_ref, "kind": m.kind, "score": round(float(m.score), 4),
                "threshold": round(float(m.threshold), 4), "sighting_id": s.sighting_id,
                "model_id": s.model_id, "generic_embedding": self.search.generic,
                "upper": s.upper, "lower": s.lower,
                "registered_photo": str(m.photo_path) if m.photo_path else None}

    def _raise(self, s: Sighting, m: Any, frame: Frame | None, people: Detections | None) -> str | None:
        cam, store = self.cam, self.output.store
        alert_id = make_alert_id(cam.id, self.source_key, f"watch:{m.entry_id}#{s.track_id}.{s.part}",
                                 s.start_time_s)
        if store.get(alert_id) is not None:
            log.info("camera %s: alert %s (person_match) already stored by an earlier run", cam.id, alert_id)
            return alert_id
        base = self.output.snap_dir / camera_path_part(cam.id) / alert_id
        details = self._details(s, m)
        details["raised_time_s"] = round(frame.time_s if frame is not None else s.end_time_s, 3)
        details["evidence"] = self._evidence(base, s, m)
        box = np.asarray(s.crops[0].xyxy, np.float32).reshape(1, 4)
        if frame is not None and people is not None:
            hit = people.track_id == s.track_id
            if hit.any():
                box = people.xyxy[hit][:1]
        snapshot = None
        if frame is not None:
            when = datetime.fromtimestamp(frame.wall_time_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            try:
                snapshot = str(write_snapshot(
                    base.with_suffix(".jpg"), frame.image, box, [f"{m.name} {m.score:.2f}"], None,
                    title=f"{cam.id} person_match {m.case_ref} t={frame.time_s:.1f}s {when}",
                    jpeg_quality=self.cfg.alerts.snapshot_quality))
            except OSError as exc:
                log.error("camera %s: snapshot for %s not written: %s", cam.id, alert_id, exc)
        else:
            snapshot = details["evidence"].get("side_by_side")
        loc = self._location(s)
        alert = Alert(
            alert_id=alert_id, type=PERSON_MATCH, camera_id=cam.id, camera_name=cam.name, zone_id=None,
            rule_id=f"watch:{m.entry_id}", track_ids=(int(s.track_id),), start_time_s=s.start_time_s,
            end_time_s=None, start_utc=datetime.fromtimestamp(s.start_wall_s, UTC), end_utc=None,
            conf=float(m.score), snapshot_path=snapshot, location=loc,
            xyxy=tuple(tuple(float(v) for v in row) for row in box.tolist()), details=details)
        if store.add(alert):
            self.matches += 1
            log.warning("ALERT person_match camera=%s entry=%s case=%s score=%.3f (threshold %.3f) "
                        "sighting=%s snapshot=%s", cam.id, m.entry_id, m.case_ref, m.score, m.threshold,
                        s.sighting_id, snapshot)
            self.output.emit("alert.created", alert)
        return alert_id

    def _update(self, alert_id: str, s: Sighting, m: Any) -> None:
        store = self.output.store
        old = store.get(alert_id)
        if old is None:
            return
        details = {**dict(old.details), "score": round(float(m.score), 4), "sighting_id": s.sighting_id,
                   "evidence": self._evidence(self.output.snap_dir / camera_path_part(self.cam.id) / alert_id, s, m)}
        self._alerts[(m.entry_id, s.sighting_id)] = (alert_id, m.score)
        self.output.emit("alert.updated", store.update(alert_id, details=details, conf=float(m.score)))

    def _caption(self, side: np.ndarray, s: Sighting, m: Any, left_w: int) -> np.ndarray:
        """Add a white band above the side-by-side image saying which half is which."""
        from alerts.snapshot import to_ascii

        when = datetime.fromtimestamp(s.start_wall_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        lines = [(f"{to_ascii(m.name)[:28]}  case {to_ascii(m.case_ref)[:20]}  score {m.score:.3f} "
                  f"(threshold {m.threshold:.3f})"),
                 f"left: camera {to_ascii(self.cam.id)[:24]} {when}   right: registered photo {m.entry_id}"]
        width = max(side.shape[1], 560)
        band = np.full((44, width, 3), 255, np.uint8)
        for i, text in enumerate(lines):
            cv2.putText(band, text, (4, 17 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        body = cv2.copyMakeBorder(side, 0, 0, 0, width - side.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
        return cv2.vconcat([band, body])

    def _evidence(self, base: Path, s: Sighting, m: Any) -> dict:
        """Write the best crop and the side-by-side image (crop | registered photo)."""
        out: dict = {}
        q = [int(cv2.IMWRITE_JPEG_QUALITY), self.cfg.alerts.snapshot_quality]
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            crop = s.crops[0].crop
            path = base.parent / f"{base.name}-sighting.jpg"
            if cv2.imwrite(str(path), crop, q):
                out["sighting_crop"] = str(path)
            photo = cv2.imread(str(m.photo_path)) if m.photo_path else None
            halves = [crop] + ([photo] if photo is not None else [])
            scaled = [cv2.resize(h, (max(1, round(h.shape[1] * EVIDENCE_HEIGHT_PX / h.shape[0])),
                                     EVIDENCE_HEIGHT_PX), interpolation=cv2.INTER_LINEAR) for h in halves]
            gap = np.full((EVIDENCE_HEIGHT_PX, 8, 3), 255, np.uint8)
            pieces = [scaled[0]] + ([gap, scaled[1]] if len(scaled) > 1 else [])
            side = cv2.hconcat(pieces)
            side = self._caption(side, s, m, scaled[0].shape[1])
            path = base.parent / f"{base.name}-side-by-side.jpg"
            if cv2.imwrite(str(path), side, q):
                out["side_by_side"] = str(path)
        except (OSError, cv2.error) as exc:
            log.error("camera %s: person_match evidence not written: %s", self.cam.id, exc)
        return out


def apply_retention(cfg: Config) -> None:
    """Delete sightings and crops older than ``search.retention_days`` (logged by the store)."""
    if not cfg.search.enabled:
        return
    from search.store import SightingStore

    started = time.monotonic()
    with SightingStore(Path(cfg.data_dir) / "sightings") as store:
        store.delete_older_than(cfg.search.retention_days)
    log.debug("retention pass took %.2f s", time.monotonic() - started)
