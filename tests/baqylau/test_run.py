"""End to end: `baqylau run` on the real demo clips, and bad cameras beside good ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from tests.conftest import MODELS, REPO, SHARED, VIDEOS, need

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "baqylau", *args], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """Run the demo config twice into one data folder; return both summaries and the alerts."""
    need(VIDEOS / "opencv-samples" / "vtest.avi")
    need(MODELS / "yolox-nano-coco" / "yolox_nano.onnx")
    data = tmp_path_factory.mktemp("demo")
    staged = data / "staged-street.mp4"
    made = subprocess.run([sys.executable, "benchmarks/demo_clip.py", str(staged)], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env={**os.environ, "BAQYLAU_SHARED": str(SHARED)})
    assert made.returncode == 0, made.stderr[-2000:]
    env = {"BAQYLAU_DATA": str(data), "BAQYLAU_SAMPLES": str(VIDEOS), "BAQYLAU_MODELS": str(MODELS),
           "BAQYLAU_STAGED": str(staged)}
    summaries = []
    for i in range(2):
        out = data / f"summary{i}.json"
        proc = run_cli("run", "configs/demo.yaml", "--until-eof", "--summary-json", str(out), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summaries.append(json.loads(out.read_text()))
    listed = run_cli("alerts", "list", "--config", "configs/demo.yaml", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    return summaries, json.loads(listed.stdout), data


def test_demo_gives_alerts_with_snapshots_on_every_camera(demo_runs):
    (first, _second), alerts, _data = demo_runs
    assert set(first) == {"square", "hall", "parking-lot", "staged-street"}
    for cid, s in first.items():
        for key in ("frames_decoded", "frames_analysed", "detections", "tracks", "alerts", "decode_errors"):
            assert isinstance(s[key], int), (cid, key)
        assert s["frames_analysed"] > 0 and s["frames_decoded"] >= s["frames_analysed"]
        assert s["alerts"] >= 1, f"camera {cid} raised no alert: {s}"
    by_camera = {a["camera_id"] for a in alerts}
    assert by_camera == set(first)
    for a in alerts:
        img = cv2.imread(a["snapshot_path"])
        assert img is not None and img.ndim == 3, a["snapshot_path"]
        assert a["end_utc"] is not None, "every situation is closed at end of stream"


def test_staged_camera_raises_each_scene_alert_once_with_evidence(demo_runs):
    (first, _), alerts, _data = demo_runs
    staged = [a for a in alerts if a["camera_id"] == "staged-street"]
    assert sorted(a["type"] for a in staged) == ["bin_overflow", "flooding", "littering"], staged
    by_type = {a["type"]: a for a in staged}
    litter = by_type["littering"]
    assert len(litter["track_ids"]) == 1 and 30.0 <= litter["start_time_s"] <= 33.0
    assert litter["details"]["route"] == "police" and 0.05 < litter["details"]["area_m2"] < 0.5
    assert by_type["bin_overflow"]["details"]["route"] == "ticketing"
    assert by_type["bin_overflow"]["start_time_s"] >= 40.0
    flood = by_type["flooding"]
    assert flood["start_time_s"] >= 75.0 and flood["details"]["covered_share"] > 0.25
    assert "kerb-east" in flood["details"]["markers_submerged"]
    for a in staged:
        assert a["location"] is not None and a["details"]["ground_m"], a
        evidence = a["details"]["evidence"]
        for key in ("before", "after"):
            before = cv2.imread(evidence[key])
            assert before is not None and before.ndim == 3, (a["type"], key)
    person = cv2.imread(litter["details"]["evidence"]["person"])
    assert person is not None and person.shape[0] > person.shape[1]  # a standing person
    assert first["staged-street"]["scene_learning"] == []
    saved = sorted(p.name for p in (_data / "scene" / "staged-street").glob("*.npz"))
    assert [n.split("-")[0] for n in saved if not n.endswith(".texture.npz")] == ["bin", "flood", "litter"], saved


def test_learned_scene_reference_is_restored_after_a_restart(tmp_path):
    clip = need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")
    cfg = tmp_path / "restart.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        detector: {{kind: motion}}
        runtime: {{scene_restore: always}}
        cameras:
          - id: lot
            url: {clip}
            analysis_fps: 5
            zones: [{{id: east, units: norm, points: [[0.65, 0.1], [1, 0.1], [1, 1], [0.65, 1]]}}]
            scene:
              - {{id: litter-east, type: littering, zone: east, scene_change: {{learn_s: 5}}}}
        """))
    first = run_cli("run", str(cfg), "--until-eof", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "clean reference learned" in first.stderr and "restored" not in first.stderr
    assert (tmp_path / "data" / "scene" / "lot" / "litter-east-east.npz").is_file()
    second = run_cli("run", str(cfg), "--until-eof", timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "clean reference restored" in second.stderr and "clean reference learned" not in second.stderr


def test_demo_frame_counts_match_the_clips(demo_runs):
    (first, _), _alerts, _ = demo_runs
    assert first["square"]["frames_decoded"] == 795
    assert first["hall"]["frames_decoded"] == 1394
    assert first["parking-lot"]["frames_decoded"] == 377


def test_second_run_appends_without_duplicates(demo_runs):
    (first, second), alerts, _ = demo_runs
    assert len(alerts) == sum(s["alerts"] for s in first.values())
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert sum(s["alerts_new"] for s in second.values()) == 0
    assert sum(s["alerts"] for s in second.values()) == sum(s["alerts"] for s in first.values())
    assert sum(s["alerts_merged"] for s in second.values()) == sum(s["alerts_merged"] for s in first.values())


def test_jsonl_sink_has_created_and_ended_events(demo_runs):
    _, alerts, data = demo_runs
    lines = [json.loads(x) for x in (data / "alerts.jsonl").read_text().splitlines()]
    created = [x for x in lines if x["event"] == "alert.created"]
    ended = [x for x in lines if x["event"] == "alert.ended"]
    assert len(created) == len(alerts)
    # the second run over the same files adds no events for alerts it already stored
    assert sorted({x["alert"]["alert_id"] for x in ended}) == sorted(a["alert_id"] for a in alerts)


def test_bad_cameras_do_not_stop_the_good_one(tmp_path):
    clip = need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        detector: {{model_path: {tmp_path / 'no-model.onnx'}}}
        defaults: {{analysis_fps: 5, open_timeout_s: 1, read_timeout_s: 1, reconnect_initial_s: 0.2,
                    reconnect_max_s: 0.5}}
        cameras:
          - {{id: missing, url: {tmp_path / 'nope.mp4'}}}
          - {{id: deaf, url: "rtsp://127.0.0.1:9/none"}}
          - {{id: good, url: {clip}}}
        """))
    out = tmp_path / "summary.json"
    proc = run_cli("run", str(cfg), "--until-eof", "--summary-json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads(out.read_text())
    assert summary["good"]["frames_decoded"] == 377
    assert summary["missing"]["frames_decoded"] == 0
    assert "nope.mp4" in (summary["missing"]["error"] or "")
    assert summary["deaf"]["frames_decoded"] == 0
    # the missing file and the refused connection each got a one-line message
    assert any("nope.mp4" in line for line in proc.stderr.splitlines())
    assert any("deaf" in line and ("refused" in line.lower() or "error" in line.lower())
               for line in proc.stderr.splitlines())
    # no model file: said clearly, motion fallback used
    assert "falling back to the weights-free motion detector" in proc.stderr


def test_unknown_class_name_is_a_config_error(tmp_path):
    clip = need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")
    model = need(MODELS / "yolox-nano-coco" / "yolox_nano.onnx")
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        detector: {{model_path: {model}}}
        cameras:
          - id: lot
            url: {clip}
            zones: [{{id: all, units: norm, points: [[0, 0], [1, 0], [1, 1]]}}]
            rules: [{{id: r, type: vehicle_stopped, zone: all, classes: [person, automobile]}}]
        """))
    proc = run_cli("run", str(cfg), "--until-eof", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"invalid configuration {cfg}" in proc.stderr
    assert "cameras[0].rules[0].classes: unknown class ['automobile']" in proc.stderr


def test_config_check_knows_class_names(tmp_path):
    model = need(MODELS / "yolox-nano-coco" / "yolox_nano.onnx")
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(textwrap.dedent(f"""
        detector: {{model_path: {model}}}
        cameras:
          - id: lot
            url: x.mp4
            zones: [{{id: all, units: norm, points: [[0, 0], [1, 0], [1, 1]]}}]
            rules: [{{id: r, type: loitering, zone: all, classes: [persn]}}]
        """))
    proc = run_cli("config", "check", str(cfg), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cameras[0].rules[0].classes: unknown class ['persn']" in proc.stderr


def test_every_camera_failing_exits_non_zero(tmp_path):
    cfg = tmp_path / "dead.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        detector: {{kind: motion}}
        cameras:
          - {{id: a, url: {tmp_path / 'a.mp4'}}}
          - {{id: b, url: {tmp_path / 'b.mp4'}}}
        """))
    proc = run_cli("run", str(cfg), "--until-eof", timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "no camera delivered a frame" in proc.stderr and "Traceback" not in proc.stderr


def test_version_and_alert_filters(tmp_path):
    assert run_cli("--version").stdout.startswith("baqylau ")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path}\ncameras: [{{id: a, url: a.mp4}}]\n")
    assert "no alerts stored" in run_cli("alerts", "list", "--config", str(cfg)).stdout
    bad = run_cli("alerts", "list", "--config", str(cfg), "--limit", "0")
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr


def test_calibrated_camera_alerts_carry_ground_position(demo_runs):
    _, alerts, _ = demo_runs
    square = [a for a in alerts if a["camera_id"] == "square" and a["type"] == "person_in_zone"]
    assert square, "the lawn rule raised an alert"
    d = square[0]["details"]
    assert len(d["ground_m"]) == len(square[0]["xyxy"]) and len(d["width_m"]) == len(square[0]["xyxy"])
    # PETS09 ground plane: the lawn lies roughly 5-25 m from the origin; people are 0.3-1.2 m wide
    assert all(w is None or 0.2 < w < 1.5 for w in d["width_m"])
    assert all(abs(x) < 40 and abs(y) < 40 for x, y in d["ground_m"])


def test_a_stream_too_short_to_learn_says_so(tmp_path):
    clip = need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")  # 30 s, default learn_s is 60 s
    cfg = tmp_path / "short.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        detector: {{kind: motion}}
        cameras:
          - id: lot
            url: {clip}
            analysis_fps: 2
            zones: [{{id: east, units: norm, points: [[0.65, 0.1], [1, 0.1], [1, 1], [0.65, 1]]}}]
            scene: [{{id: litter-east, type: littering, zone: east}}]
        """))
    out = tmp_path / "summary.json"
    proc = run_cli("run", str(cfg), "--until-eof", "--summary-json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scene detector litter-east never finished learning its clean reference" in proc.stderr
    assert json.loads(out.read_text())["lot"]["scene_learning"] == ["litter-east"]
