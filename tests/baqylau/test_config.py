"""Configuration loading: merging, env expansion, and one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from baqylau.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_defaults_merge_env_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPS", "/srv/clips")
    p = write(tmp_path, """
        data_dir: out
        defaults: {analysis_fps: 3, read_timeout_s: 7}
        detector: {model_path: models/m.onnx}
        cameras:
          - {id: a, name: "Бәйтерек", url: "${CLIPS}/a.mp4"}
          - {id: b, url: "${NOPE:-clips}/b.mp4", analysis_fps: 10}
          - {id: c, url: "rtsp://127.0.0.1:8554/x", decode: keyframes}
        """)
    cfg = load_config(p)
    a, b, c = cfg.cameras
    assert a.name == "Бәйтерек" and a.url == "/srv/clips/a.mp4"
    assert a.analysis_fps == 3 and a.read_timeout_s == 7
    assert b.analysis_fps == 10 and b.url == str(tmp_path / "clips" / "b.mp4")
    assert c.url.startswith("rtsp://") and c.decode == "keyframes"
    assert cfg.data_dir == str(tmp_path / "out")
    assert cfg.detector.model_path == str(tmp_path / "models" / "m.onnx")


def test_demo_config_is_valid():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert len(cfg.cameras) >= 3
    assert all(c.rules or c.scene for c in cfg.cameras)


BAD = [
    ("malformed", "cameras: [\n  {id: a, url: x.mp4\n", ["malformed YAML", "line"]),
    ("unknown-key", "cameras:\n  - {id: a, url: x.mp4, colour: red}\n", ["cameras[0].colour", "unknown key"]),
    ("two-point-zone", "cameras:\n  - id: a\n    url: x.mp4\n    zones:\n"
     "      - {id: z, units: norm, points: [[0, 0], [1, 1]]}\n", ["cameras[0].zones[0].points", "at least 3"]),
    ("no-units", "cameras:\n  - id: a\n    url: x.mp4\n    zones:\n"
     "      - {id: z, points: [[0, 0], [1, 1], [0, 1]]}\n", ["cameras[0].zones[0].units"]),
    ("norm-out-of-range", "cameras:\n  - id: a\n    url: x.mp4\n    zones:\n"
     "      - {id: z, units: norm, points: [[0, 0], [10, 1], [0, 1]]}\n", ["cameras[0].zones[0]", "[0, 1]"]),
    ("unknown-zone-in-rule", "cameras:\n  - id: a\n    url: x.mp4\n    rules:\n"
     "      - {id: r, type: loitering, zone: nowhere}\n", ["cameras[0]", "unknown zone 'nowhere'"]),
    ("bad-fps", "cameras:\n  - {id: a, url: x.mp4, analysis_fps: 0}\n", ["cameras[0].analysis_fps"]),
    ("bad-scheme", "cameras:\n  - {id: a, url: 'ftp://host/x'}\n", ["cameras[0].url", "unsupported URL scheme"]),
    ("dup-camera", "cameras:\n  - {id: a, url: x.mp4}\n  - {id: a, url: y.mp4}\n", ["duplicate camera ids"]),
    ("bad-default", "defaults: {decode: sometimes}\ncameras:\n  - {id: a, url: x.mp4}\n", ["defaults.decode"]),
    ("bad-timezone", "timezone: Mars/Olympus\ncameras:\n  - {id: a, url: x.mp4}\n", ["timezone"]),
    ("no-cameras", "data_dir: x\n", ["cameras"]),
    ("not-a-mapping", "- just\n- a list\n", ["top level must be a mapping"]),
]


@pytest.mark.parametrize("name,text,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_problem(tmp_path, name, text, needles):
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    joined = "\n".join(err.value.problems)
    for needle in needles:
        assert needle in joined, f"{needle!r} not in {joined!r}"
    assert isinstance(err.value, ValueError)


def test_bad_default_reported_once(tmp_path):
    p = write(tmp_path, """
        defaults: {decode: sometimes}
        cameras: [{id: a, url: x.mp4}, {id: b, url: y.mp4}]
        """)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert len(err.value.problems) == 1


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name,text,needles", BAD[:3], ids=[b[0] for b in BAD[:3]])
def test_cli_prints_one_line_per_problem_without_traceback(tmp_path, name, text, needles):
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "baqylau", "config", "check", str(p)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "invalid configuration" in proc.stderr
    assert needles[0] in proc.stderr


SCENE_CAMERA = """
cameras:
  - id: street
    url: street.mp4
    zones:
      - {id: bin, units: px, points: [[10, 10], [60, 10], [60, 80], [10, 80]]}
      - {id: bin-ground, units: px, points: [[0, 60], [90, 60], [90, 100], [0, 100]]}
      - {id: road, units: norm, points: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}
    calibration:
      points:
        - {image_px: [0, 100], ground_m: [0, 0]}
        - {image_px: [100, 100], ground_m: [5, 0]}
        - {image_px: [100, 50], ground_m: [5, 10]}
        - {image_px: [0, 50], ground_m: [0, 10]}
      depth_markers:
        - {id: kerb, points_px: [[50, 95], [50, 90]], height_m: [0.05, 0.15]}
    scene:
"""


def test_scene_detectors_parse_and_check(tmp_path):
    from baqylau.scene import scene_problems

    p = write(tmp_path, SCENE_CAMERA + """
      - {id: bin-1, type: bin_overflow, zone: bin, around_zone: bin-ground, rim_line: [[10, 20], [60, 20]],
         settings: {persistence_s: 90}, scene_change: {learn_s: 30}}
      - {id: litter, type: littering, zone: road}
      - {id: flood, type: flooding, zone: road, depth_markers: [kerb],
         model: {model_path: models/water.onnx, input_size: [512, 256], positive_index: 3}}
""")
    cfg = load_config(p)
    scene = cfg.cameras[0].scene
    assert [d.type for d in scene] == ["bin_overflow", "littering", "flooding"]
    assert scene[2].model.model_path == str(tmp_path / "models" / "water.onnx")
    assert scene_problems(cfg) == [
        f"cameras[0] (street).scene[2] (flood).model.model_path: file not found: {tmp_path / 'models' / 'water.onnx'}"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "water.onnx").write_bytes(b"")
    assert scene_problems(cfg) == []


@pytest.mark.parametrize("entry,needle", [
    ("{id: b, type: bin_overflow, zone: nowhere}", "unknown zone 'nowhere'"),
    ("{id: f, type: flooding, zone: road, depth_markers: [pole]}", "scene[0] (f).depth_markers: unknown marker 'pole'"),
    ("{id: b, type: bin_overflow, zone: bin, around_zone: bin-grund}", "scene[0] (b).around_zone: unknown zone"),
    ("{id: b, type: bin_overflow, zone: bin, rim_line: [[1, 2], [1, 2]]}", "the two rim points are the same"),
    ("{id: f, type: flooding, zone: road, settings: {persistence_s: soon}}", "persistence_s: must be a number"),
    ("{id: l, type: littering, zone: road, depth_markers: [kerb]}", "depth_markers are for flooding"),
    ("{id: b, type: bin_overflow, zone: bin, rim_line: [[1, 2]]}", "rim_line"),
    ("{id: b, type: bins, zone: bin}", "scene[0].type"),
])
def test_bad_scene_detector_names_the_problem(tmp_path, entry, needle):
    p = write(tmp_path, SCENE_CAMERA + f"      - {entry}\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert any(needle in line for line in info.value.problems), info.value.problems


@pytest.mark.parametrize("entry,needle", [
    ("{id: l, type: littering, zone: road, settings: {wait_seconds: 3}}", "settings.wait_seconds: unknown setting"),
    ("{id: l, type: littering, zone: road, scene_change: {learn: 3}}", "scene_change.learn: unknown setting"),
    ("{id: f, type: flooding, zone: road, settings: {persistence_s: -5}}",
     "cameras[0] (street).scene[0] (f): settings.persistence_s must be >= 0"),
    ("{id: b, type: bin_overflow, zone: bin, model: {model_path: absent.onnx}}", "model.model_path: file not found"),
])
def test_bad_scene_settings_are_reported_by_config_check(tmp_path, entry, needle):
    p = write(tmp_path, SCENE_CAMERA + f"      - {entry}\n")
    proc = subprocess.run([sys.executable, "-m", "baqylau", "config", "check", str(p)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_depth_markers_need_no_homography(tmp_path):
    p = write(tmp_path, """
cameras:
  - id: underpass
    url: u.mp4
    zones: [{id: road, units: norm, points: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]
    calibration:
      depth_markers: [{id: pole, points_px: [[10, 90], [10, 70]], height_m: [0.1, 0.3]}]
    scene: [{id: flood, type: flooding, zone: road, depth_markers: [pole]}]
""")
    cam = load_config(p).cameras[0]
    assert cam.calibration.points == [] and cam.scene[0].depth_markers == ["pole"]


def test_search_section_paths_bounds_and_model_check(tmp_path):
    base = "cameras:\n  - {id: a, url: a.mp4}\n"
    cfg = load_config(write(tmp_path, base + "search: {embedder: osnet, model_path: m/osnet.onnx}\n"))
    assert cfg.search.model_path == str((tmp_path / "m" / "osnet.onnx").resolve())
    assert cfg.search.enabled and cfg.search.retention_days == 30 and cfg.search.watchlist == "auto"
    assert cfg.search.watchlist_on  # auto: on with a re-ID model (osnet) ...
    generic = load_config(write(tmp_path, base + "search: {embedder: colour_histogram}\n")).search
    assert not generic.watchlist_on  # ... off with a generic embedding unless forced
    forced = load_config(write(tmp_path, base + "search: {embedder: colour_histogram, watchlist: true}\n")).search
    assert forced.watchlist_on
    from baqylau.sightings import search_problems

    assert search_problems(cfg) == [f"search.model_path: file not found: {cfg.search.model_path}"]
    for bad, needle in (("search: {embedder: imagenet}", "needs model_path"),
                        ("search: {min_duration_s: 10, max_duration_s: 5}", "min_duration_s"),
                        ("search: {retention_days: 0}", "search.retention_days"),
                        ("search: {embeder: auto}", "unknown key")):
        with pytest.raises(ConfigError) as exc:
            load_config(write(tmp_path, base + bad + "\n"))
        assert needle in " ".join(exc.value.problems), bad
    proc = subprocess.run([sys.executable, "-m", "baqylau", "config", "check",
                           str(write(tmp_path, base + "search: {embedder: osnet, model_path: m/osnet.onnx}\n"))],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "search.model_path: file not found" in proc.stderr
