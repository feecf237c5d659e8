"""The pipeline reads a real RTSP stream, survives the server being killed, and resumes."""

from __future__ import annotations

import threading
import time

import pytest

from baqylau.config import Config
from baqylau.runner import Pipeline
from detectors.motion import MotionDetector
from tests.ingest.conftest import RtspServer, clips  # noqa: F401  (fixture)
from tests.conftest import need_tool, wait_until


def test_pipeline_reconnects_after_rtsp_server_restart(tmp_path, clips):  # noqa: F811
    need_tool("ffmpeg")
    server = RtspServer(clips["h264"])
    server.start()
    cfg = Config.model_validate({
        "data_dir": str(tmp_path),
        "defaults": {"analysis_fps": 10, "open_timeout_s": 2, "read_timeout_s": 2,
                     "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
        "cameras": [{"id": "live", "url": server.url, "zones": [
            {"id": "all", "units": "norm", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}],
    })
    pipe = Pipeline(cfg, detector=MotionDetector())
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(pipe.run()), name="pipeline", daemon=True)
    runner.start()
    try:
        analysed = lambda: pipe.summary()["live"]["frames_analysed"]  # noqa: E731
        wait_until(lambda: analysed() >= 10, 30, "first frames over RTSP")
        server.kill()
        wait_until(lambda: pipe.summary()["live"]["state"] in ("backoff", "stalled", "connecting"), 15,
                 "the camera to notice the dead server")
        before = analysed()
        time.sleep(1.0)
        server.start()
        wait_until(lambda: analysed() >= before + 10, 40, "frames after the server came back")
    finally:
        pipe.stop()
        runner.join(20)
        server.kill()
    assert not runner.is_alive(), "pipeline did not stop"
    assert result["live"]["reconnects"] >= 1
    assert result["live"]["state"] == "stopped"
