"""Ctrl-C stops `baqylau run` cleanly: exit 0, summary printed, open alerts closed, store intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import MODELS, REPO, VTEST, need

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_and_closes_open_alerts(tmp_path, signum):
    need(VTEST)
    model = need(MODELS / "yolox-nano-coco" / "yolox_nano.onnx")
    cfg = tmp_path / "live.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        detector: {{model_path: {model}}}
        cameras:
          - id: square
            url: {VTEST}
            realtime: true          # paced like a live camera: the run would take 80 s
            analysis_fps: 5
            zones: [{{id: all, units: norm, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}}]
            rules: [{{id: anyone, type: person_in_zone, zone: all, classes: [person], min_duration_s: 0.5}}]
        """))
    out = tmp_path / "summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "baqylau", "run", str(cfg), "--summary-json", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        db = tmp_path / "data" / "alerts.jsonl"
        while time.monotonic() < deadline and not (db.exists() and db.stat().st_size > 0):
            time.sleep(0.2)
        assert db.exists(), "no alert was raised within 60 s"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "stopping" in stderr
    summary = json.loads(out.read_text())
    assert 0 < summary["square"]["frames_decoded"] < 795
    assert summary["square"]["alerts"] >= 1
    listed = subprocess.run([sys.executable, "-m", "baqylau", "alerts", "list", "--config", str(cfg), "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    alerts = json.loads(listed.stdout)
    assert alerts and all(a["end_utc"] is not None for a in alerts), "open alerts are closed on stop"
    events = [json.loads(x)["event"] for x in db.read_text().splitlines()]
    assert events[0] == "alert.created" and events[-1] == "alert.ended"
