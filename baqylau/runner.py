"""The runner: wires ingest, detection, tracking, zone rules and alerts into one process.

Threads (named after their role and camera)::

    decode-<camera>  x N   PyAV decode + sampling  -> FrameQueue (bounded) per camera
    main (analysis)        round-robin over the queues -> one batched detector call
                           -> per camera: ByteTracker -> ZoneRuleEngine -> alerts

A live camera's queue drops its oldest frame when full (latency never grows); a file's
queue blocks its decoder instead, so a run to EOF analyses every sampled frame. One camera
failing (missing file, refused connection) is logged once and never stops the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from alerts import Alert, AlertStore, JsonlSink, make_alert_id, write_snapshot
from baqylau.config import CameraConfig, Config, ConfigError
from calibration.zones import Zone
from detectors.base import Detector
from detectors.types import Detections
from detectors.zone_rules import RuleEvent, ZoneRule, ZoneRuleEngine
from ingest.frame import Frame
from ingest.queues import FrameQueue
from ingest.reader import CameraReader
from ingest.source import SourceOptions, is_live_url
from tracker.bytetrack import ByteTracker
from tracker.mot import MotWriter

log = logging.getLogger(__name__)


def build_detector(cfg: Config) -> Detector:
    """Create the configured detector, falling back to motion when no model file is found.

    Raises:
        detectors.base.DetectorError: When ``kind: yolox`` is forced and the model is missing
            or cannot be loaded.
    """
    from detectors.coco import load_class_names
    from detectors.motion import MotionDetector
    from detectors.yolox import YoloxOnnxDetector

    dc = cfg.detector
    model = Path(dc.model_path) if dc.model_path else None
    if dc.kind == "yolox" or (dc.kind == "auto" and model is not None and model.is_file()):
        names = load_class_names(dc.classes_path) if dc.classes_path else None
        return YoloxOnnxDetector(
            dc.model_path, class_names=names, providers=dc.providers, conf_threshold=dc.conf_threshold,
            nms_iou_threshold=dc.nms_iou_threshold, intra_op_num_threads=dc.threads,
        )
    if dc.kind == "auto":
        why = f"model file {model} not found" if model else "no detector.model_path configured"
        log.warning("%s: falling back to the weights-free motion detector (OpenCV MOG2); "
                    "zone rules run on moving blobs and ignore their class filters", why)
    return MotionDetector(min_area_px=dc.motion_min_area_px)


def configured_class_names(cfg: Config) -> tuple[str, ...] | None:
    """Class names the configured detector will have, without loading the model.

    Returns:
        The names from ``detector.classes_path`` or COCO-80 for a YOLOX model; ``None`` when
        the motion fallback will run (its blobs have no class, so rules ignore class filters).

    Raises:
        ConfigError: When ``classes_path`` cannot be read.
    """
    from detectors.coco import COCO80, load_class_names

    dc = cfg.detector
    if dc.kind == "motion" or (dc.kind == "auto" and not (dc.model_path and Path(dc.model_path).is_file())):
        return None
    if dc.classes_path:
        try:
            return tuple(load_class_names(dc.classes_path))
        except OSError as exc:
            raise ConfigError("configuration", [f"detector.classes_path: cannot read: {exc}"]) from None
    return COCO80


def rule_class_problems(cfg: Config, class_names: Sequence[str] | None) -> list[str]:
    """One line per rule class name the detector does not know (``cameras[i].rules[j].classes``).

    Args:
        cfg: The configuration.
        class_names: The detector's class names; ``None`` or ``("motion",)`` skips the check.
    """
    if class_names is None or tuple(class_names) == ("motion",):
        return []
    known = set(class_names)
    problems = []
    for ci, cam in enumerate(cfg.cameras):
        for ri, rule in enumerate(cam.rules):
            bad = [n for n in rule.classes or [] if n not in known]
            if bad:
                problems.append(f"cameras[{ci}].rules[{ri}].classes: unknown class {bad} "
                                f"(known: {', '.join(list(class_names)[:10])}, ...)")
    return problems


@dataclass
class CameraCounters:
    """Per-camera figures for the run summary (all integers except the fps)."""

    frames_analysed: int = 0
    detections: int = 0
    alerts: int = 0
    alerts_new: int = 0


@dataclass
class CameraRuntime:
    """Everything the analysis loop keeps for one camera."""

    cfg: CameraConfig
    reader: CameraReader
    queue: FrameQueue
    tracker: ByteTracker
    rules: ZoneRuleEngine
    zones: dict[str, Zone]
    source_key: str
    counters: CameraCounters = field(default_factory=CameraCounters)
    open_alerts: dict[str, str] = field(default_factory=dict)  # rule_id -> alert_id
    mot: MotWriter | None = None
    last_frame: Frame | None = None


def _source_key(url: str) -> str:
    """Identity of a source for deterministic alert ids: a file's path, size and mtime; a
    live stream's URL plus this run's start, so ids never collide across restarts."""
    if not is_live_url(url):
        try:
            st = os.stat(url)
            return f"file:{url}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return f"file:{url}"
    return f"live:{url}:{uuid.uuid4()}"


class Pipeline:
    """The single-process pipeline over all enabled cameras of a config.

    Args:
        cfg: Validated configuration (``baqylau.config.load_config``).
        until_eof: Finish when every finite (file) source has ended; file queues then block
            their decoder rather than drop frames.
        detector: Override the configured detector (tests).

    Raises:
        ConfigError: When a rule names a class the detector does not know.
    """

    def __init__(self, cfg: Config, until_eof: bool = False, detector: Detector | None = None):
        self.cfg = cfg
        self.until_eof = until_eof
        self.stop_event = threading.Event()
        self.data_dir = Path(cfg.data_dir)
        self.snap_dir = self.data_dir / "snapshots"
        self.detector = detector or build_detector(cfg)
        problems = rule_class_problems(cfg, self.detector.class_names)
        if problems:
            raise ConfigError("configuration", problems)
        log.info("detector %s on %s (batch up to %d)", self.detector.name, self.detector.provider,
                 self.detector.max_batch)
        self.store = AlertStore(self.data_dir / "alerts.db")
        self.sinks = []
        if cfg.alerts.jsonl_path:
            self.sinks.append(JsonlSink(self.data_dir / cfg.alerts.jsonl_path))
        self.cameras: dict[str, CameraRuntime] = {}
        for ci, cam in enumerate(cfg.cameras):
            if cam.enabled:
                self.cameras[cam.id] = self._build_camera(ci, cam)
        self.started_s = time.monotonic()
        self.finished_s: float | None = None

    def _class_ids(self, names: list[str] | None) -> frozenset[int] | None:
        if names is None or self.detector.class_names == ("motion",):
            return None
        known = {n: i for i, n in enumerate(self.detector.class_names)}
        return frozenset(known[n] for n in names)

    def _build_camera(self, ci: int, cam: CameraConfig) -> CameraRuntime:
        zones = {z.id: Zone(z.id, np.asarray(z.points, np.float32), z.units, z.name) for z in cam.zones}
        rules = []
        for ri, r in enumerate(cam.rules):
            window = (r.time_window.start, r.time_window.end) if r.time_window else None
            rules.append(ZoneRule(
                rule_id=r.id, alert_type=r.type, zone=zones[r.zone],
                class_ids=self._class_ids(r.classes), min_duration_s=r.min_duration_s,
                min_objects=r.min_objects, clear_after_s=r.clear_after_s, time_window=window,
                timezone=self.cfg.timezone,
            ))
        live = is_live_url(cam.url)
        opts = SourceOptions(
            url=cam.url, decode=cam.decode, analysis_fps=cam.analysis_fps,
            open_timeout_s=cam.open_timeout_s, read_timeout_s=cam.read_timeout_s,
            reconnect_initial_s=cam.reconnect_initial_s, reconnect_max_s=cam.reconnect_max_s,
            rtsp_transport=cam.rtsp_transport, realtime=cam.realtime,
        )
        queue = FrameQueue(cam.queue_size, drop_oldest=live or cam.realtime)
        tc = self.cfg.tracker
        extra = {k: v for k, v in (("track_activation_threshold", tc.track_activation_threshold),
                                   ("minimum_consecutive_frames", tc.minimum_consecutive_frames))
                 if v is not None}
        tracker = ByteTracker(frame_rate=cam.analysis_fps or 10.0,
                              lost_track_buffer_s=tc.lost_track_buffer_s, **extra)
        mot = None
        if tc.mot_dir:
            mot = MotWriter(Path(tc.mot_dir) / f"{cam.id}.txt")
        return CameraRuntime(
            cfg=cam, reader=CameraReader(cam.id, opts, queue), queue=queue, tracker=tracker,
            rules=ZoneRuleEngine(cam.id, rules), zones=zones, source_key=_source_key(cam.url), mot=mot,
        )

    # ------------------------------------------------------------------ running
    def stop(self) -> None:
        """Ask the pipeline to stop (thread-safe; safe from a signal handler)."""
        self.stop_event.set()

    def _finished(self) -> bool:
        finite = [c for c in self.cameras.values() if not is_live_url(c.cfg.url)]
        if not self.until_eof or not finite:
            return False
        return all(c.reader.done and c.queue.qsize() == 0 for c in finite)

    def _all_sources_done(self) -> bool:
        return all(c.reader.done and c.queue.qsize() == 0 for c in self.cameras.values())

    def all_failed(self) -> bool:
        """True when no camera delivered a single frame and every one of them failed or was
        never reachable (the run produced nothing)."""
        return bool(self.cameras) and all(
            c.reader.stats.frames_decoded == 0 and (c.reader.error or c.reader.stats.last_error)
            for c in self.cameras.values())

    def _gather(self) -> list[tuple[CameraRuntime, Frame]]:
        """Take at most one frame per camera, round-robin, up to the detector's batch size,
        waiting up to ``batch_wait_ms`` for the batch to fill once a first frame is in."""
        cap = self.cfg.detector.max_batch
        batch: list[tuple[CameraRuntime, Frame]] = []
        deadline: float | None = None
        taken: set[str] = set()
        while not self.stop_event.is_set():
            for cam in self.cameras.values():
                if len(batch) >= cap:
                    break
                if cam.cfg.id in taken:
                    continue
                frame = cam.queue.get(timeout_s=0)
                if frame is not None:
                    batch.append((cam, frame))
                    taken.add(cam.cfg.id)
            if len(batch) >= cap or len(taken) == len(self.cameras):
                return batch
            now = time.monotonic()
            if batch:
                deadline = deadline or now + self.cfg.detector.batch_wait_ms / 1000
                if now >= deadline:
                    return batch
            elif self._finished():
                return batch
            time.sleep(0.002)
        return batch

    def run(self, on_tick: Callable[[Pipeline], None] | None = None) -> dict[str, dict[str, int | float]]:
        """Run until stopped (or, with ``until_eof``, until every file has ended).

        Args:
            on_tick: Called about once a second from the analysis thread (status line).

        Returns:
            The per-camera summary (see :meth:`summary`).
        """
        for cam in self.cameras.values():
            cam.reader.start()
        next_tick = time.monotonic() + 1.0
        said_idle = False
        try:
            while not self.stop_event.is_set():
                batch = self._gather()
                if batch:
                    self._analyse(batch)
                elif self._finished():
                    break
                elif not said_idle and self._all_sources_done():
                    said_idle = True
                    log.info("every camera source has ended or failed; still running until stopped "
                             "(Ctrl-C; --until-eof exits by itself)")
                if on_tick and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + 1.0
                    on_tick(self)
        finally:
            self._shutdown()
        return self.summary()

    def _analyse(self, batch: list[tuple[CameraRuntime, Frame]]) -> None:
        results = self.detector.detect([f.image for _, f in batch], [c.cfg.id for c, _ in batch])
        for (cam, frame), dets in zip(batch, results):
            try:
                self._per_camera(cam, frame, dets)
            except Exception:  # one camera's bad state must not stop the others
                log.exception("camera %s: analysis failed at pts %s", cam.cfg.id, frame.pts)

    def _per_camera(self, cam: CameraRuntime, frame: Frame, dets: Detections) -> None:
        cam.counters.frames_analysed += 1
        cam.counters.detections += len(dets)
        cam.last_frame = frame
        tracked = cam.tracker.update(dets, frame.time_s)
        if cam.mot is not None:
            cam.mot.write(frame.frame_index + 1, tracked)
        for event in cam.rules.update(frame, tracked):
            self._on_event(cam, event)

    def _on_event(self, cam: CameraRuntime, ev: RuleEvent) -> None:
        if ev.kind == "started":
            self._create_alert(cam, ev)
            return
        alert_id = cam.open_alerts.get(ev.rule_id)
        if alert_id is None:
            return
        if ev.kind == "updated":
            self._emit("alert.updated", self.store.update(alert_id, track_ids=ev.track_ids, conf=ev.conf))
        elif ev.kind == "ended":
            end_utc = datetime.fromtimestamp(ev.end_wall_time_s or time.time(), UTC)
            self._emit("alert.ended", self.store.update(
                alert_id, end_time_s=ev.end_time_s, end_utc=end_utc, track_ids=ev.track_ids))
            cam.open_alerts.pop(ev.rule_id, None)

    def _emit(self, event: str, alert: Alert | None) -> None:
        """Hand an alert event to every sink; a failing sink is logged and never stops analysis."""
        if alert is None:
            return
        for sink in self.sinks:
            try:
                sink.emit(event, alert)
            except Exception as exc:  # noqa: BLE001
                log.error("sink %s failed on %s: %s", type(sink).__name__, alert.alert_id, exc)

    def _create_alert(self, cam: CameraRuntime, ev: RuleEvent) -> None:
        alert_id = make_alert_id(cam.cfg.id, cam.source_key, ev.rule_id, ev.start_time_s)
        cam.counters.alerts += 1
        if self.store.get(alert_id) is not None:
            # the same file analysed again: the stored alert is already complete; stay silent
            log.info("camera %s: alert %s (%s) already stored by an earlier run", cam.cfg.id, alert_id,
                     ev.alert_type)
            cam.open_alerts.pop(ev.rule_id, None)
            return
        cam.open_alerts[ev.rule_id] = alert_id
        snapshot = None
        if ev.frame is not None:
            names = self.detector.class_names
            labels = [f"{names[c] if 0 <= c < len(names) else c} #{t} {p:.2f}"
                      for c, t, p in zip(ev.class_id.tolist(), ev.box_track_id.tolist(), ev.box_conf.tolist())]
            zone = cam.zones[ev.zone_id]
            when = datetime.fromtimestamp(ev.start_wall_time_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            try:
                snapshot = str(write_snapshot(
                    self.snap_dir / cam.cfg.id / f"{alert_id}.jpg", ev.frame.image, ev.xyxy, labels,
                    zone.polygon_px(ev.frame.resolution_wh),
                    title=f"{cam.cfg.id} {ev.alert_type} {ev.zone_id} t={ev.start_time_s:.1f}s {when}",
                    jpeg_quality=self.cfg.alerts.snapshot_quality,
                ))
            except OSError as exc:
                log.error("camera %s: snapshot for %s not written: %s", cam.cfg.id, alert_id, exc)
        loc = (cam.cfg.location.lat, cam.cfg.location.lon) if cam.cfg.location else None
        alert = Alert(
            alert_id=alert_id, type=ev.alert_type, camera_id=cam.cfg.id, camera_name=cam.cfg.name,
            zone_id=ev.zone_id, rule_id=ev.rule_id, track_ids=ev.track_ids,
            start_time_s=ev.start_time_s, end_time_s=None,
            start_utc=datetime.fromtimestamp(ev.start_wall_time_s, UTC), end_utc=None, conf=ev.conf,
            snapshot_path=snapshot, location=loc,
            xyxy=tuple(tuple(float(v) for v in row) for row in ev.xyxy.tolist()),
            details={"max_dwell_s": round(ev.max_dwell_s, 2), "detector": self.detector.name},
        )
        if self.store.add(alert):
            cam.counters.alerts_new += 1
            log.info("ALERT %s camera=%s zone=%s tracks=%s t=%.1fs conf=%.2f snapshot=%s", ev.alert_type,
                     cam.cfg.id, ev.zone_id, list(ev.track_ids), ev.start_time_s, ev.conf, snapshot)
            self._emit("alert.created", alert)

    def _shutdown(self) -> None:
        self.finished_s = time.monotonic()
        for cam in self.cameras.values():
            cam.reader.stop()
        for cam in self.cameras.values():
            try:
                for ev in cam.rules.flush(cam.last_frame):
                    self._on_event(cam, ev)
            except Exception:
                log.exception("camera %s: closing open alerts failed", cam.cfg.id)
            if cam.mot is not None:
                cam.mot.close()
        for cam in self.cameras.values():
            cam.reader.join(timeout_s=5.0)
        for sink in self.sinks:
            sink.close()
        self.store.close()

    def summary(self) -> dict[str, dict[str, int | float]]:
        """Per-camera figures: frames_decoded, frames_analysed, analysis_fps, detections,
        tracks, alerts (raised this run), alerts_new (not stored before), decode_errors,
        dropped_frames, reconnects, state, error (why a camera failed for good) and
        last_error (the latest problem, e.g. a refused connection being retried)."""
        elapsed = max(1e-6, (self.finished_s or time.monotonic()) - self.started_s)
        out: dict[str, dict[str, int | float]] = {}
        for cid, cam in self.cameras.items():
            st = cam.reader.stats
            out[cid] = {
                "frames_decoded": int(st.frames_decoded),
                "frames_analysed": cam.counters.frames_analysed,
                "analysis_fps": round(cam.counters.frames_analysed / elapsed, 2),
                "detections": cam.counters.detections,
                "tracks": int(cam.tracker.tracks_started),
                "alerts": cam.counters.alerts,
                "alerts_new": cam.counters.alerts_new,
                "decode_errors": int(st.decode_errors),
                "dropped_frames": int(cam.queue.drops),
                "reconnects": int(st.reconnects),
                "state": st.state,
                "error": cam.reader.error,
                "last_error": st.last_error,
            }
        return out
