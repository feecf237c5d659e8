"""Smoke test of ``benchmarks/scene.py --quick --json`` and of the staging helpers it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO, SHARED, VIDEOS, YOLOX_PATH, need

SCRIPT = REPO / "benchmarks" / "scene.py"
TYPES = ("bin_overflow", "littering", "illegal_dumping", "flooding")
PER_TYPE = ("precision", "recall", "median_delay_s", "false_alarms_per_camera_hour")


def test_quick_run_reports_every_type_and_key() -> None:
    need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")
    need(YOLOX_PATH)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "BAQYLAU_SHARED": str(SHARED)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {len(lines)}"
    result = json.loads(lines[0])
    for t in TYPES:
        assert all(k in result[t] for k in PER_TYPE), (t, sorted(result[t]))
        for k in ("precision", "recall"):
            assert result[t][k] is None or 0.0 <= result[t][k] <= 1.0
    assert result["cpu_ms_per_frame_per_zone"] > 0
    # the staged bin overflow of the quick run (short timers) is found after its onset
    assert result["bin_overflow"]["recall"] == 1.0
    assert result["bin_overflow"]["median_delay_s"] > 0
    assert result["bin_overflow"]["camera_hours"] > 0


def test_ping_pong_playback_turns_at_both_ends() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.staging import forward_index, playback_indices

    order = playback_indices(4, 10)
    assert order.tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert order[forward_index(4, 2, 1)] == 1
    assert playback_indices(4, 10, pingpong=False).tolist() == [0, 1, 2, 3]


def test_cutout_is_a_real_object_with_a_soft_mask() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.staging import OBJECT_RECTS, cutout, paste, place_box

    need(OBJECT_RECTS["carton"][0])
    cut = cutout("carton")
    assert cut.bgr.shape[:2] == cut.alpha.shape
    assert 0.2 < float(cut.alpha.mean()) < 0.95  # the background around the object is cut away
    image = np.full((100, 100, 3), 128, np.uint8)
    box = place_box(cut, (50, 90), 40)
    out = paste(image, cut, box)
    assert out is not image and (image == 128).all()  # input not modified
    assert np.abs(out.astype(int) - 128).sum() > 0
    hidden = paste(image, cut, box, occluders_xyxy=np.float32([[0, 0, 100, 99]]))  # a person in front
    assert (hidden == 128).all()
