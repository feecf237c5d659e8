"""The multi-process layout: same alerts as one process, crashes restarted, health published."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import MODELS, REPO, VIDEOS, free_port, need, wait_until

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baqylau", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def two_camera_config(tmp: Path, workers: int, extra: str = "", realtime: bool = False,
                      detector: str | None = None) -> Path:
    hall = need(VIDEOS / "intel-sample-videos" / "one-by-one-person-detection.mp4")
    lot = need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")
    det = detector or f"{{model_path: {need(MODELS / 'yolox-nano-coco' / 'yolox_nano.onnx')}}}"
    cfg = tmp / f"w{workers}.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp / f'data{workers}'}
        detector: {det}
        runtime: {{decode_workers: {workers}, status_interval_s: 0.5, slot_timeout_s: 2 {extra}}}
        defaults: {{analysis_fps: 5, realtime: {str(realtime).lower()}}}
        cameras:
          - id: hall
            url: {hall}
            zones: [{{id: table, units: norm, points: [[0.40, 0.62], [0.78, 0.62], [0.78, 1.0], [0.40, 1.0]]}}]
            rules: [{{id: at-table, type: person_in_zone, zone: table, classes: [person], min_duration_s: 3}}]
            scene: [{{id: litter-table, type: littering, zone: table, scene_change: {{learn_s: 5}}}}]
          - id: lot
            url: {lot}
            zones: [{{id: bays, units: norm, points: [[0, 0.1], [0.65, 0.1], [0.65, 1], [0, 1]]}}]
            rules: [{{id: in-bays, type: vehicle_in_zone, zone: bays, min_duration_s: 1.5}}]
            scene: [{{id: flood-bays, type: flooding, zone: bays, scene_change: {{learn_s: 5}}}}]
        """))
    return cfg


def test_processes_give_the_same_alerts_as_one_process(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    results = {}
    for workers in (0, 2):
        cfg = two_camera_config(tmp_path, workers)
        out = tmp_path / f"summary{workers}.json"
        proc = cli("run", str(cfg), "--until-eof", "--summary-json", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        listed = json.loads(cli("alerts", "list", "--config", str(cfg), "--json").stdout)
        results[workers] = (json.loads(out.read_text()), listed, proc.stderr)
    (one, alerts_one, _), (multi, alerts_multi, err) = results[0], results[2]
    assert "started decode-0" in err and "started decode-1" in err and "started inference" in err
    assert "scene detector" not in err or "failed" not in err  # scene detectors ran in both layouts
    assert err.count("clean reference learned") == 2
    for cid in ("hall", "lot"):
        for key in ("frames_decoded", "frames_analysed", "detections", "tracks", "alerts"):
            assert multi[cid][key] == one[cid][key], (cid, key, one[cid], multi[cid])
    assert sorted(a["alert_id"] for a in alerts_multi) == sorted(a["alert_id"] for a in alerts_one)
    assert all(Path(a["snapshot_path"]).is_file() for a in alerts_multi)
    assert not [n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("bq")], \
        "shared memory left behind"


def _pids(stderr_path: Path, timeout_s: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = dict(re.findall(r"started (\S+) \(pid (\d+)\)", stderr_path.read_text()))
        if {"inference", "decode-0", "decode-1"} <= set(found):
            return {k: int(v) for k, v in found.items()}
        time.sleep(0.2)
    pytest.fail(f"processes did not start: {stderr_path.read_text()[-2000:]}")


def _status(cfg: Path) -> dict:
    proc = cli("status", "--config", str(cfg), "--json", timeout=60)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _analysed(cfg: Path, cid: str) -> int:
    return int(_status(cfg).get("cameras", {}).get(cid, {}).get("frames_analysed", 0))


def test_crashed_worker_and_inference_are_restarted_and_health_is_published(tmp_path):
    port = free_port()
    cfg = two_camera_config(tmp_path, 2, extra=f", metrics_port: {port}, restart_backoff_max_s: 1",
                            realtime=True, detector="{kind: motion}")
    err = tmp_path / "stderr.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "baqylau", "run", str(cfg)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=fh)
    try:
        pids = _pids(err)
        wait_until(lambda: _analysed(cfg, "hall") > 5 and _analysed(cfg, "lot") > 5, 60, "both cameras analysed")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'baqylau_camera_up{camera="hall"} 1.0' in metrics
        assert 'baqylau_camera_frames_analysed_total{camera="lot"}' in metrics

        # kill -9 the worker that owns "hall": "lot" keeps going, "hall" comes back
        hall_worker = _status(cfg)["cameras"]["hall"]["worker"]
        other = "lot"
        before_other = _analysed(cfg, other)
        before_hall = _analysed(cfg, "hall")
        os.kill(pids[hall_worker], signal.SIGKILL)
        wait_until(lambda: f"{hall_worker} exited with status -9" in err.read_text(), 30, "the crash to be noticed")
        wait_until(lambda: _analysed(cfg, other) > before_other + 5, 30, "the other camera to keep going")
        wait_until(lambda: err.read_text().count(f"started {hall_worker}") >= 2, 30, "the worker restart")
        wait_until(lambda: _status(cfg)["cameras"]["hall"]["state"] == "streaming", 60, "hall streaming again")
        hall = _status(cfg)["cameras"]["hall"]
        assert hall["process_restarts"] == 1
        assert hall["frames_analysed"] >= before_hall, "counters carry on across the restart"
        assert "baqylau_camera_process_restarts_total" in urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        pid_tag = f"_{hall_worker}_"
        leaked = [n for n in os.listdir("/dev/shm") if pid_tag in n and str(pids[hall_worker]) in n]
        assert not leaked, f"the dead worker's shared memory was not freed: {leaked}"

        # kill -9 the inference process: restarted, frames in flight are given up, analysis resumes
        os.kill(pids["inference"], signal.SIGKILL)
        wait_until(lambda: err.read_text().count("started inference") >= 2, 30, "the inference restart")
        after = _analysed(cfg, "lot")
        wait_until(lambda: _analysed(cfg, "lot") > after + 5, 60, "analysis after the inference restart")

        table = cli("status", "--config", str(cfg), timeout=60)
        assert table.returncode == 0 and "hall" in table.stdout and "streaming" in table.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, err.read_text()[-3000:]
