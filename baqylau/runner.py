"""The in-process layout: every camera's decoder a thread, one analysis loop, one process.

Threads (named after their role and camera)::

    decode-<camera>  x N   PyAV decode + sampling  -> FrameQueue (bounded) per camera
    main (analysis)        round-robin over the queues -> one batched detector call
                           -> per camera: CameraAnalysis (ByteTrack -> zone rules -> alerts)

A live camera's queue drops its oldest frame when full (latency never grows); a file's
queue blocks its decoder instead, so every sampled frame is analysed. One camera failing
(missing file, refused connection) is logged once and never stops the others. The
multi-process layout (``runtime.decode_workers >= 1``) is in :mod:`baqylau.procs`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from baqylau.analysis import (AlertOutput, CameraAnalysis, build_detector, drops_oldest,
                              rule_class_problems, source_options)
from baqylau.config import CameraConfig, Config, ConfigError
from detectors.base import Detector
from ingest.frame import Frame
from ingest.queues import FrameQueue
from ingest.reader import CameraReader
from ingest.source import is_live_url

log = logging.getLogger(__name__)

#: Said once when every source has ended but the run goes on (no --until-eof), in both layouts.
IDLE_NOTICE = ("every camera source has ended or failed; still running until stopped "
               "(Ctrl-C; --until-eof exits by itself)")

# Re-exported for callers of the first layout (CLI, benchmarks, tests).
__all__ = ["Pipeline", "build_detector", "camera_summary"]


def camera_summary(reader: CameraReader, queue: FrameQueue, analysis: CameraAnalysis,
                   elapsed_s: float) -> dict[str, int | float | str | None]:
    """One camera's summary: ingest figures, analysis counters and state."""
    st = reader.stats
    out: dict[str, int | float | str | None] = {"frames_decoded": int(st.frames_decoded)}
    out.update(analysis.summary())
    out["analysis_fps"] = round(analysis.counters.frames_analysed / max(elapsed_s, 1e-6), 2)
    out.update({
        "decode_errors": int(st.decode_errors),
        "dropped_frames": int(queue.drops),
        "reconnects": int(st.reconnects),
        "state": st.state,
        "error": reader.error,
        "last_error": st.last_error,
        "last_frame_wall_s": analysis.last_frame.wall_time_s if analysis.last_frame else None,
    })
    return out


@dataclass
class CameraRuntime:
    """One camera in the in-process layout."""

    cfg: CameraConfig
    reader: CameraReader
    queue: FrameQueue
    analysis: CameraAnalysis


class Pipeline:
    """The single-process pipeline over all enabled cameras of a config.

    Args:
        cfg: Validated configuration (``baqylau.config.load_config``).
        until_eof: Finish when every finite (file) source has ended.
        detector: Override the configured detector (tests).

    Raises:
        ConfigError: When a rule names a class the detector does not know.
    """

    def __init__(self, cfg: Config, until_eof: bool = False, detector: Detector | None = None):
        self.cfg = cfg
        self.until_eof = until_eof
        self.stop_event = threading.Event()
        self.detector = detector or build_detector(cfg)
        from baqylau.scene import scene_problems

        problems = rule_class_problems(cfg, self.detector.class_names) + scene_problems(cfg)
        if problems:
            raise ConfigError("configuration", problems)
        log.info("detector %s on %s (batch up to %d)", self.detector.name, self.detector.provider,
                 self.detector.max_batch)
        self.output = AlertOutput(cfg)
        self.delivery = None
        if cfg.alerts.deliver == "in_process":
            from baqylau.delivery import DeliveryService

            self.delivery = DeliveryService(cfg, self.output.store)
            self.output.on_change = self.delivery.wake
        self.cameras: dict[str, CameraRuntime] = {}
        enabled = [c for c in cfg.cameras if c.enabled]
        for cam in enabled:
            queue = FrameQueue(cam.queue_size, drop_oldest=drops_oldest(cam))
            self.cameras[cam.id] = CameraRuntime(
                cam, CameraReader(cam.id, source_options(cam, len(enabled)), queue), queue,
                CameraAnalysis(cam, cfg, self.detector.class_names, self.output))
        self.started_s = time.monotonic()
        self.finished_s: float | None = None

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
        """Take at most one frame per camera, round-robin, up to ``detector.max_batch`` frames,
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

    def run(self, on_tick: Callable[[Pipeline], None] | None = None) -> dict[str, dict]:
        """Run until stopped (or, with ``until_eof``, until every file has ended).

        Args:
            on_tick: Called about once a second from the analysis thread (status line).

        Returns:
            The per-camera summary (see :meth:`summary`).
        """
        for cam in self.cameras.values():
            cam.reader.start()
        if self.delivery is not None:
            self.delivery.start()
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
                    log.info(IDLE_NOTICE)
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
                cam.analysis.process(frame, dets)
            except Exception:  # one camera's bad state must not stop the others
                log.exception("camera %s: analysis failed at pts %s", cam.cfg.id, frame.pts)

    def _shutdown(self) -> None:
        self.finished_s = time.monotonic()
        for cam in self.cameras.values():
            cam.reader.stop()
        for cam in self.cameras.values():
            try:
                cam.analysis.flush()
            except Exception:
                log.exception("camera %s: closing open alerts failed", cam.cfg.id)
        for cam in self.cameras.values():
            cam.reader.join(timeout_s=5.0)
        if self.delivery is not None:
            self.delivery.stop()
        self.output.close()

    def summary(self) -> dict[str, dict]:
        """Per-camera figures: frames_decoded, frames_analysed, analysis_fps, detections,
        tracks, alerts (raised this run), alerts_new (not stored before), decode_errors,
        dropped_frames, reconnects, state, error (why a camera failed for good) and
        last_error (the latest problem, e.g. a refused connection being retried)."""
        elapsed = (self.finished_s or time.monotonic()) - self.started_s
        return {cid: camera_summary(c.reader, c.queue, c.analysis, elapsed) for cid, c in self.cameras.items()}
