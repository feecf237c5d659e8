"""Health publishing for both layouts: per-camera summaries -> status.json and Prometheus."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from baqylau.config import Config
from baqylau.health import REPORTED_STATES, CameraHealth, HealthRegistry, status_path, utc_iso, write_status

log = logging.getLogger(__name__)



class HealthPublisher:
    """Turns the layouts' per-camera summaries into :class:`CameraHealth` records, keeps them in
    a :class:`HealthRegistry` (served to Prometheus when ``runtime.metrics_port`` is set) and
    writes ``<data_dir>/status.json`` for ``baqylau status``.

    Rates (``fps_in``, ``fps_out``) are computed here from the counters' change between two
    calls, so every layout reports them the same way.

    Args:
        cfg: The configuration.

    Raises:
        baqylau.health.MetricsServerError: When the metrics port cannot be bound.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.names = {c.id: c.name for c in cfg.cameras}
        self.registry = HealthRegistry(stale_after_s=max(10.0, 3 * cfg.runtime.status_interval_s))
        self.path = status_path(cfg.data_dir)
        self._last: dict[str, tuple[float, int, int]] = {}
        self._server = None
        if cfg.runtime.metrics_port:
            self._server = self.registry.serve(cfg.runtime.metrics_port, cfg.runtime.metrics_addr)

    def publish(self, summary: dict[str, dict[str, Any]], layout: str) -> None:
        """Record one summary (camera id -> figures) and rewrite the status file."""
        now = time.monotonic()
        for cid, s in summary.items():
            decoded, analysed = int(s.get("frames_decoded") or 0), int(s.get("frames_analysed") or 0)
            t0, d0, a0 = self._last.get(cid, (now, decoded, analysed))
            dt = now - t0
            fps_in = max(0.0, (decoded - d0) / dt) if dt > 0 else 0.0
            fps_out = max(0.0, (analysed - a0) / dt) if dt > 0 else 0.0
            self._last[cid] = (now, decoded, analysed)
            state = str(s.get("state"))
            if state not in REPORTED_STATES:
                state = "connecting"
            last_wall = s.get("last_frame_wall_s")
            self.registry.update(CameraHealth(
                camera_id=cid, name=self.names.get(cid, ""), worker=str(s.get("worker") or "main"), state=state,
                fps_in=round(fps_in, 2), fps_out=round(fps_out, 2), frames_decoded=decoded,
                frames_analysed=analysed, decode_errors=int(s.get("decode_errors") or 0),
                dropped_frames=int(s.get("dropped_frames") or 0), reconnects=int(s.get("reconnects") or 0),
                last_frame_utc=utc_iso(last_wall) if last_wall else None,
                last_error=s.get("error") or s.get("last_error"), detections=int(s.get("detections") or 0),
                tracks=int(s.get("tracks") or 0), alerts=int(s.get("alerts") or 0), updated_utc=utc_iso(),
                process_restarts=int(s.get("process_restarts") or 0),
            ))
        try:
            write_status(self.path, self.registry.snapshot(), {"layout": layout})
        except OSError as exc:
            log.warning("status file %s not written: %s", self.path, exc)

    def close(self) -> None:
        """Stop the metrics server."""
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._server = None
