"""The one YAML configuration file, validated by pydantic v2.

Layout (see ``configs/demo.yaml`` for a full example)::

    data_dir: ../var/demo            # alerts.db, snapshots/, alerts.jsonl
    timezone: Asia/Almaty            # IANA name for daily rule time windows
    detector: {model_path: ..., providers: [CUDAExecutionProvider, CPUExecutionProvider]}
    tracker: {lost_track_buffer_s: 3}
    defaults: {analysis_fps: 5, decode: all, read_timeout_s: 10}
    cameras:
      - id: square
        name: "Площадь"
        url: ${BAQYLAU_SAMPLES:-../../shared/data/videos}/opencv-samples/vtest.avi
        zones: [{id: road, units: norm, points: [[0, 0.3], [1, 0.3], [1, 1]]}]
        rules: [{id: linger, type: loitering, zone: road, classes: [person], min_duration_s: 8}]

Strings may use ``${VAR}`` and ``${VAR:-default}``, expanded from the environment before
validation. Relative file paths (camera ``url`` that is not a URL, ``data_dir``, model
paths) are resolved against the folder holding the YAML file. ``defaults`` are merged
into each camera; a camera overrides only the keys it sets.

Validators here are pure: no file checks, no model loading, no network. Whether a file
exists is found out at run time by the camera that opens it, so one bad camera never
stops the others.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerts.open311 import ServiceCatalog
from alerts.routing import DEFAULT_RULES, RouteRule, Severity, routes_of
from ingest.errors import BaqylauError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CAMERA_ID_RE = r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]{0,62}[^\x00-\x1f\x7f\s])?$"


def camera_path_part(camera_id: str) -> str:
    """The file or folder name of a camera under ``data_dir`` (snapshots, scene state, MOT files).

    A short ASCII id (letters, digits, ``_ . -``) is used as it is; any other id (Cyrillic,
    spaces, ``/``) is percent-encoded by ``search.store.safe_dir_name`` so that
    ``Көктем 3 / кіреберіс`` stays one readable, reversible path part.
    """
    if re.match(_ID_RE, camera_id) and camera_id not in (".", ".."):
        return camera_id
    from search.store import safe_dir_name

    return safe_dir_name(camera_id)


class ConfigError(BaqylauError, ValueError):
    """The configuration file cannot be read or is invalid.

    Attributes:
        problems: One human-readable line per problem, each naming the YAML path
            (``cameras[2].zones[0].points``) and, where known, the file line.
    """

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(_Model):
    """A WGS84 position in decimal degrees."""

    lat: float = Field(ge=-90, le=90, description="Latitude, degrees north (WGS84).")
    lon: float = Field(ge=-180, le=180, description="Longitude, degrees east (WGS84).")


class ZoneConfig(_Model):
    """A polygon on the camera image with declared units."""

    id: str = Field(pattern=_ID_RE, description="Zone id, unique within the camera.")
    name: str = Field("", description="Human name, any Unicode.")
    units: Literal["px", "norm"] = Field(
        description="'px': pixels of the decoded image; 'norm': fractions (0..1) of width and height."
    )
    points: list[tuple[float, float]] = Field(min_length=3, description="Vertices [[x, y], ...], at least 3.")

    @model_validator(mode="after")
    def _norm_in_range(self) -> ZoneConfig:
        if self.units == "norm" and any(not (0 <= v <= 1) for p in self.points for v in p):
            raise ValueError("normalised points must lie in [0, 1]; use units: px for pixels")
        if self.units == "px" and any(v < 0 for p in self.points for v in p):
            raise ValueError("pixel coordinates cannot be negative")
        return self


class TimeWindow(_Model):
    """A daily window in the config's timezone; may wrap midnight (22:00-06:00)."""

    start: dt.time = Field(description="Local start time, HH:MM.")
    end: dt.time = Field(description="Local end time, HH:MM.")


class RuleConfig(_Model):
    """Objects of these classes inside a zone for at least T seconds give one alert per situation."""

    id: str = Field(pattern=_ID_RE)
    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="Alert type, e.g. loitering.")
    zone: str = Field(description="Id of a zone of this camera.")
    classes: list[str] | None = Field(
        None, description="Detector class names (COCO: person, car, truck, ...); omitted = any class."
    )
    min_duration_s: float = Field(1.0, ge=0, description="Dwell time in the zone before the alert, s.")
    min_objects: int = Field(1, ge=1, description="Objects that must qualify at once.")
    clear_after_s: float = Field(
        2.0, ge=0, description="Hysteresis: absence that ends the situation or resets a dwell, s."
    )
    time_window: TimeWindow | None = Field(None, description="Only alert within this daily window.")


class CameraSettings(_Model):
    """Per-camera settings that ``defaults`` may provide for every camera."""

    analysis_fps: float | None = Field(
        5.0, gt=0, le=120, description="Frames per second analysed (sampled by pts); null = every frame."
    )
    decode: Literal["all", "keyframes"] = Field("all", description="'keyframes' decodes only key frames.")
    open_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Deadline to connect and probe a source, s (also bounds stop).")
    read_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A live source silent this long is reconnected, s.")
    reconnect_initial_s: float = Field(1.0, gt=0, le=600, description="Shortest wait before a reconnect, s.")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Backoff cap between reconnects, s.")
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTP transport for RTSP: tcp (interleaved, default) or udp.")
    realtime: bool = Field(False, description="Pace a file at its own frame rate, like a live camera.")
    hwaccel: Literal["cuda", "vaapi", "qsv", "videotoolbox", "d3d11va", "drm"] | None = Field(
        None, description="FFmpeg hardware decoding (cuda = NVDEC); falls back to software with a warning.")
    queue_size: int = Field(8, ge=1, le=1024, description="Frames buffered between decode and analysis.")
    decoder_threads: int | None = Field(
        None, ge=0, le=64,
        description="FFmpeg decoder threads; 0 = FFmpeg's choice; null = 1 when a process decodes at least as "
                    "many cameras as there are cores, else FFmpeg's choice.")

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class CameraDefaults(CameraSettings):
    """``defaults:``: any camera setting, merged into each camera."""


class CalibrationPointConfig(_Model):
    """One image point with its ground position: WGS84 ``lat``/``lon`` or local ``ground_m``."""

    image_px: tuple[float, float] = Field(description="[x, y] image pixels, origin top-left, y down.")
    lat: float | None = Field(None, ge=-90, le=90, description="Latitude, degrees north (WGS84).")
    lon: float | None = Field(None, ge=-180, le=180, description="Longitude, degrees east (WGS84).")
    ground_m: tuple[float, float] | None = Field(
        None, description="[x, y] metres east, north of the calibration origin (instead of lat/lon).")

    @model_validator(mode="after")
    def _one_position(self) -> CalibrationPointConfig:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon")
        if (self.lat is None) == (self.ground_m is None):
            raise ValueError("give exactly one of lat/lon or ground_m")
        if any(v < 0 for v in self.image_px):
            raise ValueError("pixel coordinates cannot be negative")
        return self


class DepthMarkerConfig(_Model):
    """Image points that water covers as it rises (a kerb line, marks on a pole)."""

    id: str = Field(pattern=_ID_RE, description="Marker id, unique within the camera.")
    points_px: list[tuple[float, float]] = Field(min_length=1, description="[[x, y], ...] image pixels.")
    height_m: list[float] = Field(description="Height above road level of each point, metres.")

    @model_validator(mode="after")
    def _same_length(self) -> DepthMarkerConfig:
        if len(self.height_m) != len(self.points_px):
            raise ValueError(f"height_m has {len(self.height_m)} values for {len(self.points_px)} points_px")
        return self


class CalibrationConfig(_Model):
    """Image-to-ground calibration of one camera (``baqylau calibrate check`` fits and draws it)."""

    origin: Location | None = Field(
        None, description="WGS84 origin of the local ground frame; default the first lat/lon point.")
    points: list[CalibrationPointConfig] = Field(
        default_factory=list,
        description="At least 4 image-to-ground pairs spread over the ground, no three on a line; "
                    "empty = no homography (depth markers alone need none).")
    depth_markers: list[DepthMarkerConfig] = Field(default_factory=list)
    max_reprojection_error_m: float = Field(
        1.0, gt=0, description="Largest accepted ground error of any point after the fit, metres.")

    @field_validator("points")
    @classmethod
    def _four_or_none(cls, v: list[CalibrationPointConfig]) -> list[CalibrationPointConfig]:
        if 0 < len(v) < 4:
            raise ValueError(f"a homography needs at least 4 points, got {len(v)} (or none, for depth markers only)")
        return v

    @model_validator(mode="after")
    def _unique_markers(self) -> CalibrationConfig:
        ids = [m.id for m in self.depth_markers]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate depth marker ids")
        return self


class SceneModelConfig(_Model):
    """An optional ONNX model of a scene detector: a bin-crop classifier (``bin_overflow``) or a
    segmentation model with a water class (``flooding``). A site trains and exports its own."""

    model_path: str = Field(min_length=1, description="ONNX file; relative to the config file.")
    threshold: float = Field(0.5, ge=0, le=1, description="Score at or above which the model says yes.")
    input_size: tuple[int, int] | None = Field(
        None, description="[width, height] the model takes; null = read from the model.")
    positive_index: int = Field(
        1, ge=0, description="Output index of the positive class (overflowing bin / water).")


class SceneDetectorConfig(_Model):
    """One scene detector on one zone (``bin_overflow``, ``littering`` or ``flooding``).

    ``littering`` raises ``littering`` for small objects and ``illegal_dumping`` for large ones.
    ``settings`` and ``scene_change`` hold the detector's thresholds (the fields of its config
    class and of ``detectors.scene_change.SceneChangeConfig``; see their docstrings for the
    trade-off each controls); unknown names are reported by ``baqylau config check``.
    """

    id: str = Field(pattern=_ID_RE, description="Detector id, unique within the camera.")
    type: Literal["bin_overflow", "littering", "flooding"]
    zone: str = Field(description="Zone watched: the bin, the pavement, the road.")
    around_zone: str | None = Field(None, description="bin_overflow: the ground around the bin.")
    rim_line: list[tuple[float, float]] | None = Field(
        None, min_length=2, max_length=2,
        description="bin_overflow: two points of the bin's rim, in the zone's units; "
                    "null = the top of the bin zone.")
    depth_markers: list[str] = Field(
        default_factory=list, description="flooding: ids of the camera's calibration depth markers.")
    model: SceneModelConfig | None = Field(None, description="Optional ONNX classifier / water segmenter.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Detector thresholds, e.g. {persistence_s: 120}.")
    scene_change: dict[str, Any] = Field(
        default_factory=dict, description="Shared mechanism thresholds, e.g. {learn_s: 60, fg_threshold: 30}.")

    @field_validator("settings", "scene_change")
    @classmethod
    def _numbers(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [f"{k}: must be a number or true/false, got {val!r}" for k, val in v.items()
               if not isinstance(val, (int, float, bool))]
        if bad:
            raise ValueError("; ".join(bad))
        return v

    @field_validator("rim_line")
    @classmethod
    def _rim(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and (abs(v[0][0] - v[1][0]) + abs(v[0][1] - v[1][1])) == 0:
            raise ValueError("the two rim points are the same point")
        return v

    @model_validator(mode="after")
    def _fields_fit_type(self) -> SceneDetectorConfig:
        if self.type != "bin_overflow" and (self.around_zone or self.rim_line):
            raise ValueError(f"around_zone and rim_line are for bin_overflow, not {self.type}")
        if self.type != "flooding" and self.depth_markers:
            raise ValueError(f"depth_markers are for flooding, not {self.type}")
        if self.type == "littering" and self.model is not None:
            raise ValueError("littering takes no model")
        return self


class CameraConfig(CameraSettings):
    """One camera."""

    id: str = Field(pattern=_CAMERA_ID_RE, description="Camera id: any text up to 64 characters without control "
                                                          "characters or leading/trailing spaces (Cyrillic, Kazakh, "
                                                          "spaces and '/' are fine; file paths use camera_path_part).")
    name: str = Field("", description="Human name, any Unicode (e.g. 'Бәйтерек, оңтүстік кіреберіс').")
    url: str = Field(min_length=1, description="rtsp://, rtsps://, http(s):// or a file path.")
    enabled: bool = Field(True, description="false keeps the camera in the file but does not run it.")
    location: Location | None = Field(None, description="Camera position (WGS84), copied into its alerts.")
    zones: list[ZoneConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    calibration: CalibrationConfig | None = Field(
        None, description="Image-to-ground homography points and depth markers; null = uncalibrated.")
    scene: list[SceneDetectorConfig] = Field(
        default_factory=list, description="Scene detectors: bin_overflow, littering, flooding.")

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        m = _URL_RE.match(v)
        if m and v.split("://", 1)[0].lower() not in ("rtsp", "rtsps", "http", "https", "file", "udp", "tcp", "srt"):
            raise ValueError(f"unsupported URL scheme in {v!r}; use rtsp, rtsps, http(s) or a file path")
        return v

    @model_validator(mode="after")
    def _refs(self) -> CameraConfig:
        ids = [z.id for z in self.zones]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate zone ids {dup}")
        rids = [r.id for r in self.rules]
        if len(set(rids)) != len(rids):
            raise ValueError("duplicate rule ids")
        for r in self.rules:
            if r.zone not in ids:
                raise ValueError(f"rule {r.id!r} refers to unknown zone {r.zone!r} (zones: {ids})")
        problems = []
        sids = [d.id for d in self.scene]
        dup = sorted({i for i in sids if sids.count(i) > 1} | (set(sids) & set(rids)))
        if dup:
            problems.append(f"scene detector ids {dup} repeat or clash with rule ids")
        markers = [m.id for m in self.calibration.depth_markers] if self.calibration else []
        zones = {z.id: z for z in self.zones}
        for j, d in enumerate(self.scene):
            where = f"scene[{j}] ({d.id})"
            for key in ("zone", "around_zone"):
                ref = getattr(d, key)
                if ref is not None and ref not in zones:
                    problems.append(f"{where}.{key}: unknown zone {ref!r} (zones: {ids})")
            for m in d.depth_markers:
                if m not in markers:
                    problems.append(f"{where}.depth_markers: unknown marker {m!r} "
                                    f"(calibration.depth_markers: {markers})")
            if d.rim_line and d.zone in zones and zones[d.zone].units == "norm" and not all(
                    0 <= c <= 1 for p in d.rim_line for c in p):
                problems.append(f"{where}.rim_line: the zone {d.zone!r} is in norm units, so the rim "
                                f"points must be within 0..1, got {d.rim_line}")
        if problems:
            raise ValueError(f"camera {self.id!r}: " + "; ".join(problems))
        return self


class DetectorConfig(_Model):
    """Object detector. Without a model file the weights-free motion detector is used."""

    kind: Literal["auto", "yolox", "motion"] = Field(
        "auto", description="'auto': YOLOX when model_path exists, else motion (with a warning)."
    )
    model_path: str | None = Field(None, description="ONNX file; relative to the config file.")
    classes_path: str | None = Field(None, description="Class names, one per line; default COCO-80.")
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime execution providers in order of preference; CPU is always added.",
    )
    conf_threshold: float = Field(0.3, ge=0, le=1)
    nms_iou_threshold: float = Field(0.45, ge=0, le=1)
    max_batch: int = Field(
        8, ge=1, le=256,
        description="Frames from several cameras gathered per detector call; one ONNX call when the "
                    "model has a dynamic batch axis, else one call per frame.")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="Wait for more frames to fill a batch, ms.")
    threads: int | None = Field(None, ge=1, le=256, description="ONNX Runtime intra-op threads.")
    motion_min_area_px: int = Field(400, ge=1, description="Motion fallback: smallest blob, px^2.")


class TrackerConfig(_Model):
    """ByteTrack settings (Zhang et al. 2022), one tracker per camera."""

    lost_track_buffer_s: float = Field(3.0, gt=0, le=60, description="How long a lost track may return, s.")
    track_activation_threshold: float | None = Field(None, ge=0, le=1)
    minimum_consecutive_frames: int | None = Field(None, ge=1, le=30)
    mot_dir: str | None = Field(None, description="Write MOTChallenge files per camera here.")


_ROUTE_NAME_RE = r"^[^\x00-\x1f\x7f:]{1,64}$"


class WebhookConfig(_Model):
    """One webhook endpoint (Standard Webhooks 1.0); its route is ``webhook:<name>``."""

    name: str = Field(pattern=_ROUTE_NAME_RE, description="Endpoint name (any text, no ':'), used in routes.")
    url: str = Field(pattern=r"^https?://[^/\s]+", description="http(s) URL the events are POSTed to.")
    secrets: list[str] = Field(min_length=1, description="Signing secrets 'whsec_<base64>'; several during "
                                                         "key rotation (each signs). Use ${ENV} to keep them out of the file.")
    timeout_s: float = Field(15.0, gt=0, le=120, description="Timeout of each attempt, s.")
    max_in_flight: int = Field(4, ge=1, le=64, description="Attempts in flight at once (different cameras).")
    retry_schedule_s: list[float] | None = Field(
        None, min_length=1, description="Delays before each attempt, s (first is 0); null = the spec's "
                                        "0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.")

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        from alerts.webhooks import parse_secret

        for s in v:
            parse_secret(s)
        return v

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not (0 <= d <= 86400 * 7) for d in v):
            raise ValueError("retry delays must be between 0 and 604800 s")
        return v


class MqttConfig(_Model):
    """One MQTT broker (optional sink, needs the ``mqtt`` extra); its route is ``mqtt:<name>``."""

    name: str = Field("default", pattern=_ROUTE_NAME_RE, description="Output name, used in routes.")
    host: str = Field(min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("baqylau", min_length=1, description="First topic level(s).")
    qos: Literal[1, 2] = Field(1, description="MQTT QoS of the events (0 is refused: nothing would confirm delivery).")
    retain_state: bool = Field(True, description="Retained <prefix>/<camera>/<type>/state ON/OFF topics.")
    username: str | None = None
    password: str | None = None
    tls: bool = False
    timeout_s: float = Field(10.0, gt=0, le=120, description="Wait for the broker's PUBACK, s.")


class BusConfig(_Model):
    """The alert bus: Redis Streams when ``redis_url`` is set, else embedded (SQLite, one process)."""

    redis_url: str | None = Field(None, description="e.g. redis://127.0.0.1:6379/0; null = embedded bus.")
    prefix: str = Field("baqylau", min_length=1, description="Key prefix: <prefix>:route:<route>.")
    socket_timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of every Redis call, s.")
    connect_timeout_s: float = Field(2.0, gt=0, le=60, description="Timeout of connecting to Redis, s.")
    maxlen: int | None = Field(1_000_000, ge=1000, description="Approximate cap of each route stream (XADD MAXLEN ~).")
    dead_letter_after: int | None = Field(
        None, ge=1, le=100, description="Failed attempts before an event goes to the dead-letter queue; "
                                        "null = the length of the retry schedule.")


class TicketingConfig(_Model):
    """Open311 GeoReport v2 service requests made from alerts routed to ``ticketing``."""

    expected_days: float = Field(7.0, gt=0, le=365, description="expected_datetime = request + this, days.")
    services: ServiceCatalog = Field(default_factory=ServiceCatalog.default,
                                     description="Alert type -> Open311 service (code, name).")


class AlertsConfig(_Model):
    """Where alerts go: the SQLite store in data_dir, the JSONL sink, and the delivery routes."""

    jsonl_path: str | None = Field("alerts.jsonl", description="JSON-lines sink, relative to data_dir; null = off.")
    snapshot_quality: int = Field(85, ge=10, le=100, description="JPEG quality of snapshots.")
    cooldown_s: float = Field(
        30.0, ge=0, le=86400, description="A situation of the same camera, zone and type within this many "
                                          "seconds of the last one updates that alert instead of raising a new one; 0 = off.")
    cooldown_by_type: dict[str, float] = Field(default_factory=dict, description="cooldown_s per alert type.")
    routes: list[RouteRule] = Field(default_factory=lambda: list(DEFAULT_RULES),
                                    description="Routing rules; an alert goes to every matching rule's routes.")
    severity_by_type: dict[str, Severity] = Field(default_factory=dict,
                                                  description="Default severity label per alert type (for routing).")
    media_base_url: str | None = Field(
        None, pattern=r"^https?://", description="URL the snapshots are served under (webhook snapshot_url, "
                                                 "Open311 media_url); null = none.")
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    mqtt: list[MqttConfig] = Field(default_factory=list)
    bus: BusConfig = Field(default_factory=BusConfig)
    ticketing: TicketingConfig = Field(default_factory=TicketingConfig)
    update_interval_s: float = Field(
        10.0, ge=0, le=3600, description="Publish alert.updated of one alert at most this often; the latest "
                                         "state follows when the interval is over, and at once with alert.ended "
                                         "or a status change. 0 = every update.")
    delivery_retention_days: float = Field(
        30.0, ge=1, le=3650, description="Published outbox rows, bus entries (read or not; not dead letters) "
                                         "and delivery attempts older than this are deleted hourly; alerts, "
                                         "their history and tickets are kept.")
    deliver: Literal["in_process", "external"] = Field(
        "in_process", description="in_process: 'baqylau run' also publishes and delivers; external: run "
                                  "'baqylau deliver' separately (scale-out).")

    @field_validator("cooldown_by_type")
    @classmethod
    def _cooldowns(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not 0 <= x <= 86400}
        if bad:
            raise ValueError(f"cooldowns must be between 0 and 86400 s: {bad}")
        return v

    @model_validator(mode="after")
    def _known_routes(self) -> AlertsConfig:
        for kind, outputs in (("webhook", self.webhooks), ("mqtt", self.mqtt)):
            names = [o.name for o in outputs]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate {kind} names {dup}")
        known = {"police", "ticketing"} | {f"webhook:{w.name}" for w in self.webhooks} | {
            f"mqtt:{m.name}" for m in self.mqtt}
        unknown = sorted(routes_of(self.routes) - known)
        if unknown:
            raise ValueError(f"routes name outputs that are not configured: {unknown} (configure them under "
                             "alerts.webhooks / alerts.mqtt)")
        return self


class RuntimeConfig(_Model):
    """Process layout, health reporting."""

    decode_workers: int = Field(
        0, ge=0, le=256,
        description="0: every camera in one process (decode threads + one analysis loop). N >= 1: N decode "
                    "worker processes share the cameras and one inference process batches frames from all "
                    "of them (frames cross in shared memory); a crashed process is restarted.",
    )
    slots_per_camera: int = Field(
        2, ge=1, le=16, description="Shared-memory frames in flight per camera; more adds latency, not speed.")
    slot_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A frame whose detections never came back is given up after this, s.")
    restart_backoff_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait before restarting a crashed process, s.")
    status_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often cameras report health (status.json, metrics), s.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on this port; null = off.")
    metrics_addr: str = Field("127.0.0.1", description="Address the metrics server binds to.")
    scene_save_interval_s: float = Field(
        300.0, gt=0, le=86400,
        description="How often the scene detectors' learned clean references are saved under "
                    "data_dir/scene/ (also at shutdown), wall-clock s.")
    scene_restore: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Restore saved clean references at start: auto = for live streams only (a file "
                    "replays from its beginning, so the state saved at its end does not fit), always, never.")


class SearchConfig(_Model):
    """Sightings for forensic search and the live watchlist (``search/``).

    Every person track becomes a sighting (best crops, colours, embedding, trajectory) in
    ``data_dir/sightings/``; live sightings are compared with the watchlist in
    ``data_dir/watchlist/`` and a match raises a ``person_match`` alert for the police queue.
    """

    enabled: bool = Field(True, description="Collect sightings from person tracks.")
    embedder: Literal["auto", "imagenet", "osnet", "colour_histogram"] = Field(
        "auto",
        description="Appearance embedding: 'imagenet' = an ImageNet backbone such as the MobileNetV2 "
                    "export (the permissive default), 'osnet' = a re-ID model in the OSNet input "
                    "convention [N,3,256,128], 'colour_histogram' = weights-free; 'auto' = 'imagenet' "
                    "when model_path exists, else colour_histogram with a warning.")
    model_path: str | None = Field(None, description="ONNX embedding model; relative to the config file.")
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime providers for the embedder, in order of preference.")
    threads: int | None = Field(None, ge=1, le=256, description="ONNX Runtime intra-op threads.")
    crops_per_sighting: int = Field(3, ge=1, le=10, description="Best crops kept (and embedded) per sighting.")
    lost_after_s: float | None = Field(
        None, gt=0, le=600,
        description="A track unseen this long ends its sighting, stream s; null = the tracker's "
                    "lost_track_buffer_s (shorter splits one pass into several sightings).")
    max_duration_s: float = Field(
        600.0, gt=0, le=86400, description="Longer tracks are cut into consecutive sightings, stream s.")
    min_duration_s: float = Field(1.0, ge=0, le=600, description="Shorter tracks are dropped (noise), s.")
    retention_days: int = Field(
        30, ge=1, le=3650, description="Sightings and crops older than this many UTC days are deleted.")
    watchlist: bool | Literal["auto"] = Field(
        "auto",
        description="Compare live sightings with the active watchlist entries and raise person_match "
                    "alerts. 'auto' = only with a person re-identification model (embedder: osnet): "
                    "with generic embeddings (ImageNet features, colour histogram) most registered "
                    "people drew false matches on PETS09 (benchmarks/RESULTS.md); true forces it on.")
    watch_every_s: float = Field(
        2.0, gt=0, le=600,
        description="While a person is in view, compare their crops so far with the watchlist this "
                    "often (stream s), so a match is raised before they leave.")
    crop_quality: int = Field(90, ge=10, le=100, description="JPEG quality of stored crops.")

    @property
    def watchlist_on(self) -> bool:
        """Whether live watchlist matching runs (``watchlist`` resolved for ``auto``)."""
        return self.watchlist is True or (self.watchlist == "auto" and self.embedder == "osnet")

    @model_validator(mode="after")
    def _durations(self) -> SearchConfig:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError(f"min_duration_s ({self.min_duration_s}) must be below max_duration_s "
                             f"({self.max_duration_s})")
        if self.embedder in ("imagenet", "osnet") and not self.model_path:
            raise ValueError(f"embedder {self.embedder!r} needs model_path")
        return self


class Config(_Model):
    """The whole configuration file."""

    data_dir: str = Field("var", description="Folder for alerts.db, alerts.jsonl and snapshots/.")
    timezone: str = Field("UTC", description="IANA timezone for rule time windows, e.g. Asia/Almaty.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    defaults: CameraDefaults = Field(default_factory=CameraDefaults)
    cameras: Annotated[list[CameraConfig], Field(min_length=1)]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate camera ids {dup}")
        return self


def expand_env(value: Any) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree.

    Raises:
        KeyError: For ``${VAR}`` without a default when VAR is unset (message names VAR).
    """
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = os.environ.get(name)
            if got:
                return got
            if default is None:
                raise KeyError(f"environment variable {name} is not set and has no default")
            return default
        return _ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tuple[", "list[")):  # pydantic internals
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map YAML paths to 1-based line numbers, to point at the offending line."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                walk(v, path + (getattr(k, "value", k),))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _resolve_path(value: str, base: Path) -> str:
    if value.startswith("file://"):
        value = value[len("file://"):]
    if _URL_RE.match(value):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_config(path: str | Path) -> Config:
    """Read, merge and validate the YAML configuration.

    Args:
        path: The YAML file.

    Returns:
        The validated :class:`Config`, with ``defaults`` merged into every camera, ``${VAR}``
        expanded and relative paths made absolute against the file's folder.

    Raises:
        ConfigError: With one message per problem (``cameras[2].zones[0]: ...``), for a
            missing or unreadable file, malformed YAML, unknown keys or invalid values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read: {exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, [f"malformed YAML: {where}{problem}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, ["the top level must be a mapping with at least a 'cameras' list"])
    try:
        raw = expand_env(raw)
    except KeyError as exc:
        raise ConfigError(path, [str(exc.args[0])]) from None

    problems: list[str] = []
    lines = _line_index(text)
    defaults = raw.get("defaults") or {}
    cams = raw.get("cameras")
    inherited: dict[int, set[str]] = {}  # camera index -> keys taken from defaults
    if isinstance(defaults, dict) and isinstance(cams, list):
        merged = []
        for i, cam in enumerate(cams):
            if isinstance(cam, dict):
                inherited[i] = set(defaults) - set(cam)
                merged.append({**copy.deepcopy(defaults), **cam})
            else:
                merged.append(cam)
        raw = {**raw, "cameras": merged}
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if len(loc) > 2 and loc[0] == "cameras" and loc[2] in inherited.get(loc[1], ()):
                continue  # a bad default: reported once, under defaults.*
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
            where = f" (line {line})" if line else ""
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{_loc_to_path(loc)}{where}: {msg}")
        raise ConfigError(path, problems) from None

    base = path.resolve().parent
    det = cfg.detector
    return cfg.model_copy(update={
        "data_dir": _resolve_path(cfg.data_dir, base),
        "detector": det.model_copy(update={
            "model_path": _resolve_path(det.model_path, base) if det.model_path else None,
            "classes_path": _resolve_path(det.classes_path, base) if det.classes_path else None,
        }),
        "search": cfg.search.model_copy(update={
            "model_path": _resolve_path(cfg.search.model_path, base) if cfg.search.model_path else None,
        }),
        "tracker": cfg.tracker.model_copy(update={
            "mot_dir": _resolve_path(cfg.tracker.mot_dir, base) if cfg.tracker.mot_dir else None,
        }),
        "cameras": [c.model_copy(update={
            "url": _resolve_path(c.url, base),
            "scene": [d.model_copy(update={"model": d.model.model_copy(update={
                "model_path": _resolve_path(d.model.model_path, base)})}) if d.model else d for d in c.scene],
        }) for c in cfg.cameras],
    })
