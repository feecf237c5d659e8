"""Per-camera analysis after detection, shared by the in-process and the multi-process layouts.

:class:`CameraAnalysis` holds one camera's ByteTracker, zone-rule engine and open alerts, and
turns each (frame, detections) pair into tracks, rule events and alerts. :class:`AlertOutput`
is where alerts go: the SQLite store, the JSON-lines sink and snapshot JPEGs. The helpers at
the top build what both layouts need from the configuration.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from alerts import Alert, AlertStore, JsonlSink, make_alert_id, write_snapshot
from baqylau.config import CameraConfig, Config, ConfigError, camera_path_part
from calibration.zones import Zone
from detectors.base import Detector
from detectors.scene import SceneEvent
from detectors.types import Detections
from detectors.zone_rules import RuleEvent, ZoneRule, ZoneRuleEngine
from ingest.frame import Frame
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


def source_options(cam: CameraConfig, cameras_in_process: int = 1) -> SourceOptions:
    """The ingest options of one configured camera.

    Args:
        cam: The camera.
        cameras_in_process: How many cameras the same process decodes; with at least one per
            core, ``decoder_threads: null`` means one decoder thread per camera.
    """
    threads = cam.decoder_threads
    if threads is None:
        threads = 1 if cameras_in_process >= (os.cpu_count() or 1) else 0
    return SourceOptions(
        url=cam.url, decode=cam.decode, analysis_fps=cam.analysis_fps,
        open_timeout_s=cam.open_timeout_s, read_timeout_s=cam.read_timeout_s,
        reconnect_initial_s=cam.reconnect_initial_s, reconnect_max_s=cam.reconnect_max_s,
        rtsp_transport=cam.rtsp_transport, realtime=cam.realtime, hwaccel=cam.hwaccel,
        decoder_threads=threads,
    )


def drops_oldest(cam: CameraConfig) -> bool:
    """Whether a camera's frame queue drops its oldest frame when full (live or paced sources)
    rather than blocking its decoder (files: analyse every sampled frame)."""
    return is_live_url(cam.url) or cam.realtime


def source_key(url: str) -> str:
    """Identity of a source for deterministic alert ids: a file's path, size and mtime; a
    live stream's URL plus a random token per process start, so ids never collide across
    restarts."""
    if not is_live_url(url):
        try:
            st = os.stat(url)
            return f"file:{url}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return f"file:{url}"
    return f"live:{url}:{uuid.uuid4()}"


class AlertOutput:
    """Where alerts go: SQLite store (WAL; several processes may share it), JSONL sink, snapshots.

    Args:
        cfg: The configuration (``data_dir``, ``alerts``).

    Raises:
        alerts.store.AlertStoreError: When the store cannot be opened.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data_dir = Path(cfg.data_dir)
        self.snap_dir = self.data_dir / "snapshots"
        from baqylau.delivery import outbox_policy

        self.store = AlertStore(self.data_dir / "alerts.db", outbox_policy(cfg))
        self.sinks = [JsonlSink(self.data_dir / cfg.alerts.jsonl_path)] if cfg.alerts.jsonl_path else []
        self._search = None
        #: Called after every alert change (the in-process relay's ``wake``), or ``None``.
        self.on_change: Callable[[], None] | None = None

    @property
    def search(self):  # noqa: ANN201 - baqylau.sightings.SearchOutput, imported lazily
        """The process's sighting store, embedder and watchlist matcher, opened on first use."""
        if self._search is None:
            from baqylau.sightings import SearchOutput

            self._search = SearchOutput(self.cfg)
        return self._search

    def emit(self, event: str, alert: Alert | None) -> None:
        """Hand an alert event to every sink; a failing sink is logged and never stops analysis."""
        if alert is None:
            return
        if self.on_change is not None:
            self.on_change()
        for sink in self.sinks:
            try:
                sink.emit(event, alert)
            except Exception as exc:  # noqa: BLE001
                log.error("sink %s failed on %s: %s", type(sink).__name__, alert.alert_id, exc)

    def close(self) -> None:
        """Close sinks, the sighting store and the alert store."""
        for sink in self.sinks:
            sink.close()
        if self._search is not None:
            self._search.close()
        self.store.close()


@dataclass
class CameraCounters:
    """Per-camera figures for the run summary."""

    frames_analysed: int = 0
    detections: int = 0
    alerts: int = 0
    alerts_new: int = 0
    alerts_merged: int = 0


class CameraAnalysis:
    """One camera after detection: ByteTrack, zone rules, alerts.

    Args:
        cam: The camera's configuration.
        cfg: The whole configuration (tracker settings, timezone, MOT output).
        class_names: The detector's class names, indexed by ``class_id``.
        output: Where alerts go.
    """

    def __init__(self, cam: CameraConfig, cfg: Config, class_names: Sequence[str], output: AlertOutput) -> None:
        self.cam = cam
        self.cfg = cfg
        self.class_names = tuple(class_names)
        self.output = output
        self.zones = {z.id: Zone(z.id, np.asarray(z.points, np.float32), z.units, z.name) for z in cam.zones}
        motion = self.class_names == ("motion",)
        known = {n: i for i, n in enumerate(self.class_names)}
        rules = []
        for r in cam.rules:
            window = (r.time_window.start, r.time_window.end) if r.time_window else None
            ids = None if (r.classes is None or motion) else frozenset(known[n] for n in r.classes)
            rules.append(ZoneRule(
                rule_id=r.id, alert_type=r.type, zone=self.zones[r.zone], class_ids=ids,
                min_duration_s=r.min_duration_s, min_objects=r.min_objects, clear_after_s=r.clear_after_s,
                time_window=window, timezone=cfg.timezone,
            ))
        self.rules = ZoneRuleEngine(cam.id, rules)
        tc = cfg.tracker
        extra = {k: v for k, v in (("track_activation_threshold", tc.track_activation_threshold),
                                   ("minimum_consecutive_frames", tc.minimum_consecutive_frames))
                 if v is not None}
        self.tracker = ByteTracker(frame_rate=cam.analysis_fps or 10.0,
                                   lost_track_buffer_s=tc.lost_track_buffer_s, **extra)
        self.mot = MotWriter(Path(tc.mot_dir) / f"{camera_path_part(cam.id)}.txt") if tc.mot_dir else None
        self.source_key = source_key(cam.url)
        self.homography = None
        if cam.calibration is not None and cam.calibration.points:
            from baqylau.calibrate_cmd import camera_homography
            from calibration.homography import CalibrationError

            try:
                self.homography = camera_homography(cam.calibration)
            except CalibrationError as exc:
                log.warning("camera %s: calibration unusable, alerts get no ground position: %s", cam.id, exc)
        self.counters = CameraCounters()
        from alerts.cooldown import Cooldown

        self.cooldown = Cooldown(cfg.alerts.cooldown_s, cfg.alerts.cooldown_by_type)
        self.open_alerts: dict[str, str] = {}  # rule_id -> alert_id
        self.last_frame: Frame | None = None
        from baqylau.scene import SceneStates, build_scene_detectors

        self.scene = build_scene_detectors(cam, self.zones, self.homography)
        restore = cfg.runtime.scene_restore == "always" or (
            cfg.runtime.scene_restore == "auto" and is_live_url(cam.url))
        self.scene_states = SceneStates(Path(cfg.data_dir) / "scene" / camera_path_part(cam.id), self.scene,
                                        cfg.runtime.scene_save_interval_s, restore)
        self.open_scene: dict[tuple[str, int], str] = {}  # (detector_id, situation_id) -> alert_id
        self.sightings = None
        if cfg.search.enabled and "person" in self.class_names:
            from baqylau.sightings import CameraSightings

            self.sightings = CameraSightings(cam, cfg, output, self.source_key, self.homography)

    def process(self, frame: Frame, dets: Detections) -> None:
        """Track this frame's detections, run the zone rules and raise or update alerts."""
        self.counters.frames_analysed += 1
        self.counters.detections += len(dets)
        self.last_frame = frame
        tracked = self.tracker.update(dets, frame.time_s)
        if self.mot is not None:
            self.mot.write(frame.frame_index + 1, tracked)
        for event in self.rules.update(frame, tracked):
            self._on_event(event)
        people = vehicles = None
        if self.sightings is not None:
            from baqylau.scene import split_movers

            people, vehicles = split_movers(tracked, self.class_names)
            try:
                self.sightings.update(frame, people)
            except Exception:  # noqa: BLE001 - search must never stop alerting
                log.exception("camera %s: sightings failed at t=%.2f s", self.cam.id, frame.time_s)
        if self.scene:
            from baqylau.scene import split_movers

            if people is None:
                people, vehicles = split_movers(tracked, self.class_names)
            for det in self.scene:
                try:
                    events = det.update(frame, people, vehicles)
                except Exception:  # noqa: BLE001 - one detector's bad state must not stop the others
                    log.exception("camera %s: scene detector %s failed at t=%.2f s", self.cam.id,
                                  det.detector_id, frame.time_s)
                    continue
                for sev in events:
                    self._on_scene_event(sev)
            self.scene_states.maybe_save()

    def flush(self) -> None:
        """End every open situation (end of stream or shutdown), save the scene detectors'
        learned references and close the MOT file."""
        for event in self.rules.flush(self.last_frame):
            self._on_event(event)
        from baqylau.scene import still_learning

        for det in self.scene:
            if still_learning(det):
                learn_s = getattr(getattr(det, "config", None), "scene", None)
                log.warning("camera %s: scene detector %s never finished learning its clean reference "
                            "(learn_s %s of stream time, plus 90%% of the zone seen without people), so it "
                            "could report nothing; give it a longer stream or a shorter scene_change.learn_s",
                            self.cam.id, det.detector_id, getattr(learn_s, "learn_s", "?"))
            try:
                for sev in det.flush(self.last_frame):
                    self._on_scene_event(sev, end_reason="end_of_stream")
            except Exception:  # noqa: BLE001
                log.exception("camera %s: scene detector %s failed to flush", self.cam.id, det.detector_id)
        self.scene_states.maybe_save(force=True)
        if self.sightings is not None:
            try:
                self.sightings.flush(self.last_frame)
            except Exception:  # noqa: BLE001
                log.exception("camera %s: sightings failed to flush", self.cam.id)
        if self.mot is not None:
            self.mot.close()
            self.mot = None

    def _on_event(self, ev: RuleEvent) -> None:
        if ev.kind == "started":
            self._create_alert(ev)
            return
        alert_id = self.open_alerts.get(ev.rule_id)
        if alert_id is None:
            return
        store = self.output.store
        if ev.kind == "updated":
            self.output.emit("alert.updated", store.update(alert_id, track_ids=ev.track_ids, conf=ev.conf))
        elif ev.kind == "ended":
            end_utc = datetime.fromtimestamp(ev.end_wall_time_s or time.time(), UTC)
            ended = store.update(alert_id, event="alert.ended", end_time_s=ev.end_time_s, end_utc=end_utc,
                                 track_ids=ev.track_ids)
            self.output.emit("alert.ended", ended)
            if ended is not None:
                self.cooldown.note(self.cam.id, ended.zone_id, ended.type, alert_id, end_utc.timestamp())
            self.open_alerts.pop(ev.rule_id, None)

    def _create_alert(self, ev: RuleEvent) -> None:
        cam = self.cam
        alert_id = make_alert_id(cam.id, self.source_key, ev.rule_id, ev.start_time_s)
        if self._stored_before(alert_id, ev.alert_type):
            # the same file analysed again: the stored alert is already complete; stay silent
            self.open_alerts.pop(ev.rule_id, None)
            return
        merged = self._merge_recent(alert_id, ev.alert_type, ev.zone_id, ev.start_wall_time_s, ev.track_ids, ev.conf)
        if merged is not None:
            self.open_alerts[ev.rule_id] = merged
            return
        self.counters.alerts += 1
        self.open_alerts[ev.rule_id] = alert_id
        snapshot = self._snapshot(alert_id, ev)
        loc = (cam.location.lat, cam.location.lon) if cam.location else None
        details: dict = {"max_dwell_s": round(ev.max_dwell_s, 2),
                         "classes": sorted({self._name(c) for c in ev.class_id.tolist()})}
        loc = self._ground_evidence(ev.xyxy, details) or loc
        alert = Alert(
            alert_id=alert_id, type=ev.alert_type, camera_id=cam.id, camera_name=cam.name,
            zone_id=ev.zone_id, rule_id=ev.rule_id, track_ids=ev.track_ids,
            start_time_s=ev.start_time_s, end_time_s=None,
            start_utc=datetime.fromtimestamp(ev.start_wall_time_s, UTC), end_utc=None, conf=ev.conf,
            snapshot_path=snapshot, location=loc,
            xyxy=tuple(tuple(float(v) for v in row) for row in ev.xyxy.tolist()),
            details=details,
        )
        self.cooldown.note(cam.id, ev.zone_id, ev.alert_type, alert_id, ev.start_wall_time_s)
        if self.output.store.add(alert):
            self.counters.alerts_new += 1
            log.info("ALERT %s camera=%s zone=%s tracks=%s t=%.1fs conf=%.2f snapshot=%s", ev.alert_type,
                     cam.id, ev.zone_id, list(ev.track_ids), ev.start_time_s, ev.conf, snapshot)
            self.output.emit("alert.created", alert)

    def _on_scene_event(self, ev: SceneEvent, end_reason: str = "cleared") -> None:
        from baqylau.scene import event_details, write_evidence

        key = (ev.detector_id, ev.situation_id)
        store = self.output.store
        if ev.kind != "started":
            alert_id = self.open_scene.get(key)
            if alert_id is None:
                return
            if ev.kind == "updated":
                old = store.get(alert_id)
                details = {**(dict(old.details) if old else {}), **event_details(ev)}
                for k in ("onset_time_s", "confirmed_time_s", "delay_s", "reason"):  # keep the first figures
                    if old is not None and k in old.details:
                        details[k] = old.details[k]
                details["latest_reason"] = ev.reason
                self.output.emit("alert.updated", store.update(
                    alert_id, details=details, conf=float(ev.conf),
                    track_ids=tuple(int(t) for t in ev.track_ids)))
            else:
                end_utc = datetime.fromtimestamp(ev.wall_time_s or time.time(), UTC)
                old = store.get(alert_id)
                details = {**(dict(old.details) if old else {}), "end_reason": end_reason}
                ended = store.update(alert_id, event="alert.ended", end_time_s=ev.time_s, end_utc=end_utc,
                                     details=details)
                self.output.emit("alert.ended", ended)
                if ended is not None:
                    self.cooldown.note(self.cam.id, ended.zone_id, ended.type, alert_id, end_utc.timestamp())
                self.open_scene.pop(key, None)
            return
        cam = self.cam
        rule_key = f"{ev.detector_id}#{ev.situation_id}"
        alert_id = make_alert_id(cam.id, self.source_key, rule_key, ev.start_time_s)
        if self._stored_before(alert_id, ev.alert_type):
            return
        merged = self._merge_recent(alert_id, ev.alert_type, ev.zone_id, ev.wall_time_s, ev.track_ids, float(ev.conf))
        if merged is not None:
            self.open_scene[key] = merged
            return
        self.counters.alerts += 1
        self.cooldown.note(cam.id, ev.zone_id, ev.alert_type, alert_id, ev.wall_time_s)
        self.open_scene[key] = alert_id
        details = event_details(ev)
        snapshot = None
        if ev.frame is not None:
            labels = [f"{ev.alert_type} {ev.reason} {a:.0f}px" for a in ev.area_px.tolist()]
            when = datetime.fromtimestamp(ev.wall_time_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            base = self.output.snap_dir / camera_path_part(cam.id) / alert_id
            try:
                snapshot = str(write_snapshot(
                    base.with_suffix(".jpg"), ev.frame.image, ev.xyxy, labels,
                    self.zones[ev.zone_id].polygon_px(ev.frame.resolution_wh),
                    title=f"{cam.id} {ev.alert_type} {ev.zone_id} t={ev.time_s:.1f}s {when}",
                    jpeg_quality=self.cfg.alerts.snapshot_quality))
            except OSError as exc:
                log.error("camera %s: snapshot for %s not written: %s", cam.id, alert_id, exc)
            details["evidence"] = write_evidence(base, ev, self.cfg.alerts.snapshot_quality)
        loc = (cam.location.lat, cam.location.lon) if cam.location else None
        loc = self._ground_evidence(ev.xyxy, details) or loc
        if self.homography is not None and len(ev.xyxy) and "area_m2" not in details:
            from calibration.homography import CalibrationError

            areas: list[float | None] = []
            for x1, y1, x2, y2 in ev.xyxy.tolist():  # the box as a flat patch on the ground
                try:
                    areas.append(round(self.homography.area_m2([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), 3))
                except CalibrationError:
                    areas.append(None)
            details["box_ground_area_m2"] = areas
        alert = Alert(
            alert_id=alert_id, type=ev.alert_type, camera_id=cam.id, camera_name=cam.name,
            zone_id=ev.zone_id, rule_id=ev.detector_id, track_ids=tuple(int(t) for t in ev.track_ids),
            start_time_s=ev.start_time_s, end_time_s=None,
            start_utc=datetime.fromtimestamp(ev.wall_time_s - (ev.time_s - ev.start_time_s), UTC), end_utc=None,
            conf=float(ev.conf), snapshot_path=snapshot, location=loc,
            xyxy=tuple(tuple(float(v) for v in row) for row in ev.xyxy.tolist()), details=details,
        )
        if store.add(alert):
            self.counters.alerts_new += 1
            log.info("ALERT %s camera=%s zone=%s reason=%s onset=%.1fs confirmed=%.1fs urgent=%s snapshot=%s",
                     ev.alert_type, cam.id, ev.zone_id, ev.reason, ev.start_time_s, ev.time_s, ev.urgent, snapshot)
            self.output.emit("alert.created", alert)

    def _merge_recent(self, new_id: str, alert_type: str, zone_id: str | None, wall_s: float,
                      track_ids: Sequence[int], conf: float) -> str | None:
        """Merge a new situation into this camera's recent alert of the same zone and type
        (``alerts.cooldown_s``): the alert is reopened, counts one more occurrence and is
        published as updated.

        Returns:
            ``None`` when there is no recent alert (raise a new one), else the merged alert's id.
        """
        target = self.cooldown.lookup(self.cam.id, zone_id, alert_type, wall_s)
        if target is None:
            return None
        store = self.output.store
        old = store.get(target)
        if old is None:
            return None
        details = {**dict(old.details), "occurrences": int(old.details.get("occurrences", 1)) + 1,
                   "last_occurrence_utc": datetime.fromtimestamp(wall_s, UTC).isoformat()}
        alert = store.update(target, details=details, end_time_s=None, end_utc=None, conf=max(old.conf, float(conf)),
                             track_ids=tuple(sorted(set(old.track_ids) | {int(t) for t in track_ids})),
                             merged_situation=new_id, immediate=True)
        self.counters.alerts_merged += 1
        self.cooldown.note(self.cam.id, zone_id, alert_type, target, wall_s)
        log.info("camera %s: %s in zone %s again within the %.0f s cooldown: alert %s updated (%d occurrences)",
                 self.cam.id, alert_type, zone_id, self.cooldown.seconds(alert_type), target, details["occurrences"])
        self.output.emit("alert.updated", alert)
        return target

    def _stored_before(self, alert_id: str, alert_type: str) -> bool:
        """Whether an earlier run of the same file stored this situation (as an alert, or merged
        into one by the cooldown); counted again so both runs report the same figures."""
        store = self.output.store
        if store.get(alert_id) is not None:
            self.counters.alerts += 1
        elif store.merged_into(alert_id) is not None:
            self.counters.alerts_merged += 1
        else:
            return False
        log.info("camera %s: alert %s (%s) already stored by an earlier run", self.cam.id, alert_id, alert_type)
        return True

    def _ground_evidence(self, xyxy: np.ndarray, details: dict) -> tuple[float, float] | None:
        """With a calibrated camera, add each box's ground position (bottom-centre, metres in the
        calibration's ground frame) and ground width to ``details``; return the WGS84 position of
        the first box when the calibration has a geographic origin."""
        if self.homography is None or len(xyxy) == 0:
            return None
        anchors = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1)
        ground = self.homography.img_to_ground(anchors)
        widths = self.homography.size_m(xyxy)[:, 0]
        def num(v: float) -> float | None:  # NaN (above the horizon) is not JSON
            return round(float(v), 2) if np.isfinite(v) else None

        details["ground_m"] = [[num(x), num(y)] for x, y in ground]
        details["width_m"] = [num(w) for w in widths]
        if self.homography.origin_latlon is None or not np.isfinite(ground[0]).all():
            return None
        lat, lon = self.homography.img_to_latlon(anchors[:1])[0]
        return (round(float(lat), 7), round(float(lon), 7))

    def _name(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)

    def _snapshot(self, alert_id: str, ev: RuleEvent) -> str | None:
        if ev.frame is None:
            return None
        labels = [f"{self._name(c)} #{t} {p:.2f}"
                  for c, t, p in zip(ev.class_id.tolist(), ev.box_track_id.tolist(), ev.box_conf.tolist())]
        when = datetime.fromtimestamp(ev.start_wall_time_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        try:
            return str(write_snapshot(
                self.output.snap_dir / camera_path_part(self.cam.id) / f"{alert_id}.jpg", ev.frame.image, ev.xyxy, labels,
                self.zones[ev.zone_id].polygon_px(ev.frame.resolution_wh),
                title=f"{self.cam.id} {ev.alert_type} {ev.zone_id} t={ev.start_time_s:.1f}s {when}",
                jpeg_quality=self.cfg.alerts.snapshot_quality,
            ))
        except OSError as exc:
            log.error("camera %s: snapshot for %s not written: %s", self.cam.id, alert_id, exc)
            return None

    def summary(self) -> dict[str, int | list[str]]:
        """Counters of this camera's analysis (merged with ingest figures by the layouts), and
        ``scene_learning``: ids of scene detectors still learning their clean reference."""
        from baqylau.scene import still_learning

        c = self.counters
        matches = self.sightings.matches if self.sightings is not None else 0
        return {"frames_analysed": c.frames_analysed, "detections": c.detections,
                "tracks": int(self.tracker.tracks_started), "alerts": c.alerts + matches,
                "alerts_new": c.alerts_new + matches, "alerts_merged": c.alerts_merged,
                "scene_learning": sorted(d.detector_id for d in self.scene if still_learning(d)),
                "sightings": self.sightings.stored if self.sightings is not None else 0,
                "person_matches": self.sightings.matches if self.sightings is not None else 0}
