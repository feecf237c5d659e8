"""Per-camera health: one record per camera, Prometheus metrics and the status file.

Decode workers (processes) report a :class:`CameraHealth` per camera about once a second;
the process that owns a :class:`HealthRegistry` keeps the latest report per camera, serves
it as Prometheus metrics over HTTP and writes it to ``<data_dir>/status.json`` (see
:func:`write_status`) for ``baqylau status``.

A camera whose worker stops reporting (a crashed or hung decode process) turns to state
``unknown`` after ``stale_after_s`` in every snapshot, so neither the metrics nor the status
file keep showing a dead camera as streaming.

Metric names follow https://prometheus.io/docs/practices/naming/ : the application prefix
``baqylau_``, ``_total`` on counters, base units with a unit suffix
(``_timestamp_seconds``: Unix time in seconds), and an ``_info`` pseudo-metric for text
metadata. The camera state uses the enum-as-labels pattern that ``prometheus_client.Enum``
also produces: one series per possible state, value 1 for the current one and 0 for the
others, so ``baqylau_camera_state{state="stalled"} == 1`` is an alert expression.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ingest.errors import BaqylauError

log = logging.getLogger(__name__)

#: States a worker reports, in lifecycle order (issue 3, "Health"): ``ended`` is a file
#: source that reached its end, ``stopped`` a camera shut down on request.
REPORTED_STATES = ("connecting", "streaming", "waiting_for_keyframe", "stalled", "backoff",
                   "failed", "ended", "stopped")
#: Every state a snapshot may hold: ``unknown`` is set by :class:`HealthRegistry` only,
#: for a camera whose last report is older than ``stale_after_s``.
STATES = REPORTED_STATES + ("unknown",)
#: Name of the status file inside ``data_dir``.
STATUS_FILENAME = "status.json"

_INT_FIELDS = ("frames_decoded", "frames_analysed", "decode_errors", "dropped_frames", "reconnects",
               "detections", "tracks", "alerts", "process_restarts")
_FLOAT_FIELDS = ("fps_in", "fps_out")
_RESERVED_KEYS = ("updated_utc", "pid", "cameras")


class StatusFileError(BaqylauError, OSError):
    """The status file is absent, unreadable or not a status file written by :func:`write_status`."""


class MetricsServerError(BaqylauError, OSError):
    """The Prometheus endpoint cannot listen on the requested address and port."""


def utc_iso(t: float | dt.datetime | None = None) -> str:
    """Format a UTC time as ISO 8601 with millisecond precision and a ``Z`` suffix.

    Args:
        t: Unix time in seconds (``time.time()``), an aware ``datetime``, or None for now.

    Returns:
        For example ``"2024-05-01T06:30:00.125Z"``.

    Raises:
        ValueError: For a naive ``datetime`` (its zone would be a guess).
    """
    if t is None:
        t = dt.datetime.now(dt.timezone.utc)
    elif not isinstance(t, dt.datetime):
        t = dt.datetime.fromtimestamp(float(t), dt.timezone.utc)
    elif t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: give a timezone-aware UTC time")
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> dt.datetime:
    """Parse an ISO 8601 time with an explicit zone (``...Z`` or ``+00:00``) into an aware UTC datetime.

    Raises:
        ValueError: When ``text`` is not ISO 8601 or has no zone.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(text).__name__}")
    got = dt.datetime.fromisoformat(text)
    if got.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone; write it as UTC with a Z suffix")
    return got.astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True, slots=True)
class CameraHealth:
    """The latest health report of one camera, sent by its decode worker.

    Counters (``frames_*``, ``decode_errors``, ``dropped_frames``, ``reconnects``,
    ``detections``, ``tracks``, ``alerts``) count since the camera started in this pipeline
    run and never decrease; rates are gauges computed by the reporter over its last window.

    Attributes:
        camera_id: Camera id from the config.
        name: Human camera name, any Unicode (may be empty).
        worker: Name of the process that decodes this camera, e.g. ``"decode-0"``.
        state: One of :data:`STATES`; workers report :data:`REPORTED_STATES` only.
        fps_in: Frames decoded per second over the reporter's last window, frames/s.
        fps_out: Frames analysed (detector + tracker) per second, frames/s.
        frames_decoded: Frames decoded since start.
        frames_analysed: Frames analysed since start.
        decode_errors: Packets or frames the decoder rejected since start.
        dropped_frames: Frames dropped by back-pressure (bounded queues, oldest dropped).
        reconnects: Reconnect attempts since start.
        last_frame_utc: Wall-clock UTC receive time of the newest decoded frame (ISO 8601,
            ``Z``), None before the first frame.
        last_error: The last error message, None when there was none.
        detections: Detections made since start.
        tracks: Tracks started since start.
        alerts: Alerts raised since start.
        updated_utc: When the reporter made this record (ISO 8601, ``Z``).
        process_restarts: Times the process decoding this camera crashed and was restarted
            (multi-process layout); its counters carry on from before the crash.

    Raises:
        ValueError: For an empty ``camera_id``, an unknown ``state``, a negative, non-finite
            or non-numeric number, or a time that is not ISO 8601 with a zone.
    """

    camera_id: str
    name: str
    worker: str
    state: str
    fps_in: float
    fps_out: float
    frames_decoded: int
    frames_analysed: int
    decode_errors: int
    dropped_frames: int
    reconnects: int
    last_frame_utc: str | None
    last_error: str | None
    detections: int
    tracks: int
    alerts: int
    updated_utc: str
    process_restarts: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.camera_id, str) or not self.camera_id:
            raise ValueError(f"camera_id must be a non-empty string, got {self.camera_id!r}")
        if self.state not in STATES:
            raise ValueError(f"camera {self.camera_id}: state {self.state!r} is not one of {STATES}")
        for f in _INT_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"camera {self.camera_id}: {f} must be an int >= 0, got {v!r}")
        for f in _FLOAT_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"camera {self.camera_id}: {f} must be a finite number >= 0, got {v!r}")
        for f in ("last_frame_utc", "updated_utc"):
            v = getattr(self, f)
            if v is None and f == "last_frame_utc":
                continue
            try:
                parse_utc(v)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"camera {self.camera_id}: {f}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of every field (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CameraHealth:
        """Build a record from :meth:`to_dict` output (e.g. read back from JSON).

        Raises:
            ValueError: When keys are missing or unknown, or a value is invalid (see the class).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        optional = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        missing, unknown = sorted(names - set(data) - optional), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"camera health record: missing keys {missing}, unknown keys {unknown}")
        return cls(**data)


class HealthRegistry:
    """The latest :class:`CameraHealth` per camera, thread-safe, with a Prometheus view.

    Args:
        stale_after_s: A camera with no report for this long is shown as state ``unknown``
            (its worker is presumed dead) with both fps at 0. Shorter flags a dead worker
            sooner but needs workers to report more often than this; keep it at least three
            report intervals so one late report does not flap the state.
        clock: Monotonic clock in seconds, injectable for tests. Staleness is measured at
            the receiving side, so it does not depend on the workers' wall clocks.

    Raises:
        ValueError: When ``stale_after_s`` is not a positive finite number.
    """

    def __init__(self, stale_after_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if not (isinstance(stale_after_s, (int, float)) and math.isfinite(stale_after_s) and stale_after_s > 0):
            raise ValueError(f"stale_after_s must be a positive number of seconds, got {stale_after_s!r}")
        self.stale_after_s = float(stale_after_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[CameraHealth, float]] = {}
        #: A private Prometheus registry (not the process-global one), so tests and several
        #: pipelines in one process never collide.
        self.prometheus_registry = CollectorRegistry(auto_describe=False)
        self.prometheus_registry.register(_HealthCollector(self))

    def update(self, health: CameraHealth) -> None:
        """Store ``health`` as the latest report of its camera (replacing the previous one).

        Raises:
            TypeError: When ``health`` is not a :class:`CameraHealth`.
        """
        if not isinstance(health, CameraHealth):
            raise TypeError(f"expected CameraHealth, got {type(health).__name__}")
        with self._lock:
            self._latest[health.camera_id] = (health, self._clock())

    def forget(self, camera_id: str) -> None:
        """Drop a camera (removed from the config); unknown ids are ignored."""
        with self._lock:
            self._latest.pop(camera_id, None)

    def snapshot(self) -> dict[str, CameraHealth]:
        """Return the latest record per camera, sorted by camera id.

        A record older than ``stale_after_s`` comes back with state ``unknown`` and
        ``fps_in``/``fps_out`` 0; its counters and ``updated_utc`` stay as last reported.
        """
        now = self._clock()
        with self._lock:
            items = sorted(self._latest.items())
        out = {}
        for cid, (h, received) in items:
            if now - received > self.stale_after_s and h.state != "unknown":
                h = dataclasses.replace(h, state="unknown", fps_in=0.0, fps_out=0.0)
            out[cid] = h
        return out

    def serve(self, port: int, addr: str = "127.0.0.1"):  # noqa: ANN201 - prometheus_client's types
        """Serve the metrics at ``http://addr:port/metrics`` from a daemon thread.

        Args:
            port: TCP port; 0 is refused (the caller could not learn the port).
            addr: Listen address; the default keeps the endpoint on this machine. Use
                ``0.0.0.0`` only behind a firewall: the endpoint has no authentication.

        Returns:
            ``(server, thread)`` from ``prometheus_client.start_http_server``; stop it with
            ``server.shutdown(); server.server_close(); thread.join()``.

        Raises:
            ValueError: For a port outside 1..65535.
            MetricsServerError: When the address cannot be bound (port in use, bad address).
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be an int in 1..65535, got {port!r}")
        try:
            server, thread = start_http_server(port, addr, registry=self.prometheus_registry)
        except OSError as exc:
            raise MetricsServerError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from exc
        log.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
        return server, thread


class _HealthCollector(Collector):
    """Builds the metric families from :meth:`HealthRegistry.snapshot` at each scrape."""

    def __init__(self, registry: HealthRegistry):
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        snap = self._registry.snapshot()
        cam = ["camera"]
        info = InfoMetricFamily("baqylau_camera", "Camera name and the worker process decoding it.",
                                labels=cam)
        up = GaugeMetricFamily("baqylau_camera_up", "1 when the camera is streaming, else 0.", labels=cam)
        state = GaugeMetricFamily(
            "baqylau_camera_state", "1 for the camera's current state, 0 for the others; 'unknown' "
            "means its worker stopped reporting.", labels=cam + ["state"])
        fps_in = GaugeMetricFamily("baqylau_camera_fps_in", "Frames decoded per second, recent window.",
                                   labels=cam)
        fps_out = GaugeMetricFamily("baqylau_camera_fps_out", "Frames analysed per second, recent window.",
                                    labels=cam)
        last = GaugeMetricFamily("baqylau_camera_last_frame_timestamp_seconds",
                                 "Unix time the newest frame was received; absent before the first.",
                                 labels=cam)
        counters = {
            f: CounterMetricFamily(f"baqylau_camera_{name}", help_, labels=cam)
            for f, name, help_ in (
                ("frames_decoded", "frames_decoded", "Frames decoded."),
                ("frames_analysed", "frames_analysed", "Frames analysed by detector and tracker."),
                ("decode_errors", "decode_errors", "Packets or frames the decoder rejected."),
                ("dropped_frames", "dropped_frames", "Frames dropped by back-pressure (oldest first)."),
                ("reconnects", "reconnects", "Reconnect attempts."),
                ("alerts", "alerts", "Alerts raised."),
                ("process_restarts", "process_restarts", "Restarts of the process decoding the camera."),
            )
        }
        for cid, h in snap.items():
            info.add_metric([cid], {"name": h.name, "worker": h.worker})
            up.add_metric([cid], 1.0 if h.state == "streaming" else 0.0)
            for s in STATES:
                state.add_metric([cid, s], 1.0 if h.state == s else 0.0)
            fps_in.add_metric([cid], float(h.fps_in))
            fps_out.add_metric([cid], float(h.fps_out))
            if h.last_frame_utc is not None:
                last.add_metric([cid], parse_utc(h.last_frame_utc).timestamp())
            for f, fam in counters.items():
                fam.add_metric([cid], float(getattr(h, f)))
        yield from (info, up, state, fps_in, fps_out, last, *counters.values())


def status_path(data_dir: str | os.PathLike[str]) -> Path:
    """Return ``<data_dir>/status.json``, where the pipeline writes its status."""
    return Path(data_dir) / STATUS_FILENAME


def write_status(path: str | os.PathLike[str], snapshot: Mapping[str, CameraHealth],
                 extra: Mapping[str, Any] | None = None) -> None:
    """Write the status file atomically: a temporary file in the same folder, then ``os.replace``.

    A reader therefore sees the old or the new file, never a half-written one. No fsync:
    the file is rewritten every second and a power cut losing the last one is harmless.

    Args:
        path: The status file, usually :func:`status_path` of ``data_dir``; its folder is
            created when missing.
        snapshot: Camera id -> :class:`CameraHealth`, e.g. :meth:`HealthRegistry.snapshot`.
        extra: More top-level JSON-able keys (e.g. ``{"metrics_port": 9108}``).

    Raises:
        ValueError: When ``extra`` uses a reserved key (``updated_utc``, ``pid``, ``cameras``).
        TypeError: When a value in ``extra`` is not JSON-able.
        OSError: When the folder or file cannot be written.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved in the status file")
    doc = {"updated_utc": utc_iso(), "pid": os.getpid(),
           "cameras": {cid: h.to_dict() for cid, h in snapshot.items()}, **extra}
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; operators read it as other users
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a status file written by :func:`write_status`.

    Returns:
        The JSON document with ``cameras`` turned into ``{camera_id: CameraHealth}``; other
        keys (``updated_utc``, ``pid``, extras) as written.

    Raises:
        StatusFileError: When the file is absent, unreadable, not JSON, or not shaped like a
            status file (the message names the path and the problem).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusFileError(f"no status file at {path} (pipeline not running?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StatusFileError(f"cannot read status file {path}: {exc}") from None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("cameras"), dict):
            raise ValueError("top level must be an object with a 'cameras' object")
        parse_utc(doc.get("updated_utc"))
        cameras = {cid: CameraHealth.from_dict(h) for cid, h in doc["cameras"].items()}
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise StatusFileError(f"corrupt status file {path}: {exc}") from None
    return {**doc, "cameras": cameras}
