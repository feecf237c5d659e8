"""``baqylau calibrate snapshot|check`` as subprocesses on the real vtest.avi (PETS09-S2L1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

from tests.calibration.test_homography import pets_pairs
from tests.conftest import REPO, VTEST, free_port, need


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baqylau", "calibrate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s)


def write_config(tmp_path: Path, *, url: str | None = None, points: list | None = None,
                 zones: list | None = None, **cam: object) -> Path:
    """A one-camera config on vtest.avi calibrated with the PETS09 GT-derived points."""
    if points is None:
        points = [{"image_px": list(p.image_px), "ground_m": [p.x_m, p.y_m]} for p in pets_pairs(12)[0]]
    camera = {
        "id": "square", "url": url or str(need(VTEST)), "open_timeout_s": 2, "read_timeout_s": 2,
        "zones": zones if zones is not None else [
            {"id": "left", "units": "norm", "points": [[0.02, 0.4], [0.45, 0.4], [0.45, 0.95], [0.02, 0.95]]},
            {"id": "crossing", "units": "px", "points": [[420, 300], [700, 300], [740, 560], [380, 560]]}],
        "calibration": {"points": points, "max_reprojection_error_m": 0.5,
                        "depth_markers": [{"id": "kerb", "points_px": [[300, 420], [500, 430]],
                                           "height_m": [0.0, 0.15]}]},
        **cam,
    }
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "cameras": [camera]}))
    return path


def test_snapshot_default_path_and_at(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    res = run_cli("snapshot", "square", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    out = Path(res.stdout.strip())
    assert out == tmp_path / "data" / "calibration" / "square.png"
    first = cv2.imread(str(out))
    assert first is not None and first.shape == (576, 768, 3)
    res = run_cli("snapshot", "square", "--config", str(cfg), "--at", "5", "--out", str(tmp_path / "t5.png"))
    assert res.returncode == 0, res.stderr
    later = cv2.imread(str(tmp_path / "t5.png"))
    assert later.shape == first.shape and cv2.absdiff(later, first).mean() > 0.5  # people have moved
    res = run_cli("snapshot", "square", "--config", str(cfg), "--at", "1000")
    assert res.returncode == 1 and "ended before" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("camera", "url", "code", "message"), [
    ("nosuch", None, 2, "no camera 'nosuch'"),
    ("square", "/nonexistent/clip.mp4", 1, "cannot"),
    ("square", "rtsp://127.0.0.1:{port}/silent", 1, "no frame within"),
])
def test_snapshot_failures_are_one_line(tmp_path: Path, camera: str, url: str | None, code: int,
                                        message: str) -> None:
    cfg = write_config(tmp_path, url=url.format(port=free_port()) if url else None,
                       open_timeout_s=1, read_timeout_s=1)
    res = run_cli("snapshot", camera, "--config", str(cfg))
    assert res.returncode == code and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""


def test_check_renders_overlay_with_real_calibration(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)  # no snapshot yet: check grabs a frame itself
    res = run_cli("check", str(cfg), "--out-dir", str(tmp_path / "overlays"))
    assert res.returncode == 0, res.stdout + res.stderr
    (line,) = res.stdout.strip().splitlines()
    assert line.startswith("square: OK: zones OK (2) | homography 12 points: RMS 0.0") and " m / " in line
    overlay = cv2.imread(str(tmp_path / "overlays" / "square-check.png"))
    assert overlay is not None and overlay.shape == (576, 768, 3)
    # with a snapshot present, check draws on it and writes to <data_dir>/calibration by default
    assert run_cli("snapshot", "square", "--config", str(cfg)).returncode == 0
    res = run_cli("check", str(cfg))
    assert res.returncode == 0 and cv2.imread(str(tmp_path / "data" / "calibration" / "square-check.png")) is not None


def test_check_fails_on_large_error_and_bad_zones(tmp_path: Path) -> None:
    points = [{"image_px": list(p.image_px), "ground_m": [p.x_m, p.y_m]} for p in pets_pairs(12)[0]]
    points[3]["ground_m"][0] += 4.0  # a mistyped ground position
    zones = [{"id": "bowtie", "units": "px", "points": [[100, 100], [300, 300], [300, 100], [100, 300]]},
             {"id": "off", "units": "px", "points": [[700, 500], [900, 500], [900, 700]]}]
    res = run_cli("check", str(write_config(tmp_path, points=points, zones=zones)))
    assert res.returncode == 1
    assert "FAIL: point 3" in res.stdout and "self-intersecting" in res.stdout and "outside the 768x576" in res.stdout
    assert (tmp_path / "data" / "calibration" / "square-check.png").exists()  # still drawn, to look at


@pytest.mark.parametrize(("points", "message"), [
    ([{"image_px": [1, 2], "ground_m": [0, 0]}] * 3, "at least 4"),
    ([{"image_px": [1, 2], "ground_m": [0, 0], "lat": 1, "lon": 2}] * 4, "exactly one of"),
])
def test_bad_calibration_config_is_one_line(tmp_path: Path, points: list, message: str) -> None:
    cfg = write_config(tmp_path, points=points)
    for args in (["check", str(cfg)], ["snapshot", "square", "--config", str(cfg)]):
        res = run_cli(*args)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "calibration.points" in res.stderr
