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
    assert all(c.rules for c in cfg.cameras)


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
