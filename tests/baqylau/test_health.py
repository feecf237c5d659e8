"""Camera health: registry, Prometheus endpoint over real HTTP, status file, ``baqylau status``."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import os
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from baqylau.health import (
    STATES,
    CameraHealth,
    HealthRegistry,
    MetricsServerError,
    StatusFileError,
    parse_utc,
    read_status,
    status_path,
    utc_iso,
    write_status,
)
from baqylau.status_cmd import add_status_parser
from ingest.errors import BaqylauError
from tests.conftest import free_port

T0 = 1_714_545_000.0  # 2024-05-01T06:30:00Z


def health(camera_id: str = "square", **kw) -> CameraHealth:
    """A valid record; keyword arguments override fields."""
    base = dict(camera_id=camera_id, name="Бәйтерек", worker="decode-0", state="streaming",
                fps_in=25.0, fps_out=5.0, frames_decoded=1000, frames_analysed=200, decode_errors=3,
                dropped_frames=7, reconnects=1, last_frame_utc=utc_iso(T0), last_error=None,
                detections=50, tracks=4, alerts=2, updated_utc=utc_iso(T0 + 0.5))
    base.update(kw)
    return CameraHealth(**base)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- the record --------------------------------------------------------------------------

def test_utc_iso_round_trip():
    assert utc_iso(T0 + 0.125) == "2024-05-01T06:30:00.125Z"
    assert parse_utc(utc_iso(T0)).timestamp() == T0


def test_record_dict_round_trip_through_json():
    h = health(last_error="RTSP 404 Not Found")
    assert CameraHealth.from_dict(json.loads(json.dumps(h.to_dict()))) == h


@pytest.mark.parametrize("field, value, match", [
    ("state", "dancing", "state"),
    ("camera_id", "", "camera_id"),
    ("frames_decoded", -1, "frames_decoded"),
    ("dropped_frames", 1.5, "dropped_frames"),
    ("fps_in", float("nan"), "fps_in"),
    ("fps_out", -0.1, "fps_out"),
    ("updated_utc", "yesterday", "updated_utc"),
    ("last_frame_utc", "2024-05-01T06:30:00", "no zone"),
])
def test_record_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        health(**{field: value})


def test_from_dict_names_missing_and_unknown_keys():
    d = health().to_dict()
    del d["fps_in"]
    d["colour"] = "red"
    with pytest.raises(ValueError, match=r"missing keys \['fps_in'\], unknown keys \['colour'\]"):
        CameraHealth.from_dict(d)


# --- the registry ------------------------------------------------------------------------

def test_registry_keeps_latest_and_marks_stale_as_unknown():
    clock = FakeClock()
    reg = HealthRegistry(stale_after_s=5.0, clock=clock)
    reg.update(health("b", state="connecting"))
    reg.update(health("a", frames_decoded=10))
    reg.update(health("a", frames_decoded=20))  # replaces the first report of a
    snap = reg.snapshot()
    assert list(snap) == ["a", "b"]
    assert snap["a"].frames_decoded == 20 and snap["b"].state == "connecting"

    clock.t += 4.0
    reg.update(health("b", state="streaming"))
    clock.t += 2.0  # a: 6 s since its report (dead worker), b: 2 s
    snap = reg.snapshot()
    assert snap["a"].state == "unknown" and snap["a"].fps_in == 0 and snap["a"].fps_out == 0
    assert snap["a"].frames_decoded == 20  # counters stay as last reported
    assert snap["b"].state == "streaming" and snap["b"].fps_in == 25.0

    reg.update(health("a", state="streaming"))  # the restarted worker reports again
    assert reg.snapshot()["a"].state == "streaming"
    reg.forget("a")
    assert list(reg.snapshot()) == ["b"]


def test_registry_checks_inputs():
    with pytest.raises(ValueError, match="stale_after_s"):
        HealthRegistry(stale_after_s=0)
    with pytest.raises(TypeError, match="CameraHealth"):
        HealthRegistry().update(health().to_dict())
    with pytest.raises(ValueError, match="port"):
        HealthRegistry().serve(0)


# --- Prometheus over real HTTP -----------------------------------------------------------

@pytest.fixture
def served():
    """A registry with two cameras, served on a free port; yields (registry, clock, url)."""
    clock = FakeClock()
    reg = HealthRegistry(stale_after_s=5.0, clock=clock)
    reg.update(health("square"))
    reg.update(health("gate", name="Gate", worker="decode-1", state="stalled", fps_in=0.0, fps_out=0.0,
                      last_frame_utc=None, last_error="read timeout after 10 s", alerts=0))
    port = free_port()
    server, thread = reg.serve(port)
    try:
        yield reg, clock, f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """GET the endpoint; return {sample name: {sorted label items: value}}."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode("utf-8")
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_endpoint_serves_values_and_labels(served):
    reg, clock, url = served
    m = scrape(url)
    sq, gate = (("camera", "square"),), (("camera", "gate"),)
    assert m["baqylau_camera_up"] == {sq: 1.0, gate: 0.0}
    states = m["baqylau_camera_state"]
    assert len(states) == 2 * len(STATES)
    assert states[(("camera", "gate"), ("state", "stalled"))] == 1.0
    assert states[(("camera", "square"), ("state", "streaming"))] == 1.0
    assert sum(v for k, v in states.items() if k[0] == ("camera", "gate")) == 1.0
    assert m["baqylau_camera_fps_in"][sq] == 25.0 and m["baqylau_camera_fps_out"][sq] == 5.0
    assert m["baqylau_camera_frames_decoded_total"][sq] == 1000
    assert m["baqylau_camera_frames_analysed_total"][sq] == 200
    assert m["baqylau_camera_decode_errors_total"][sq] == 3
    assert m["baqylau_camera_dropped_frames_total"][sq] == 7
    assert m["baqylau_camera_reconnects_total"][sq] == 1
    assert m["baqylau_camera_alerts_total"] == {sq: 2.0, gate: 0.0}
    # a camera that never delivered a frame has no last-frame sample (absent, not 1970)
    assert m["baqylau_camera_last_frame_timestamp_seconds"] == {sq: T0}
    info = m["baqylau_camera_info"]
    assert info[(("camera", "square"), ("name", "Бәйтерек"), ("worker", "decode-0"))] == 1.0
    assert not any(name.endswith("_created") for name in m)

    # values are read at scrape time: a dead worker shows as unknown on the next scrape
    clock.t += 6.0
    reg.update(health("gate", state="backoff", reconnects=2))
    m = scrape(url)
    assert m["baqylau_camera_up"][sq] == 0.0
    assert m["baqylau_camera_state"][(("camera", "square"), ("state", "unknown"))] == 1.0
    assert m["baqylau_camera_state"][(("camera", "gate"), ("state", "backoff"))] == 1.0
    assert m["baqylau_camera_reconnects_total"][gate] == 2.0


def test_metrics_port_in_use_is_a_clear_error(served):
    _, _, url = served
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(MetricsServerError, match=f"127.0.0.1:{port}") as info:
        HealthRegistry().serve(port)
    assert isinstance(info.value, OSError) and isinstance(info.value, BaqylauError)


# --- the status file ---------------------------------------------------------------------

def test_status_file_round_trip(tmp_path):
    snap = {"a": health("a"), "b": health("b", state="failed", last_error="no video stream")}
    path = status_path(tmp_path / "var")
    write_status(path, snap, {"metrics_port": 9108, "workers": ["decode-0"]})
    assert sorted(os.listdir(path.parent)) == ["status.json"]  # no temporary file left
    got = read_status(path)
    assert got["cameras"] == snap
    assert got["pid"] == os.getpid() and got["metrics_port"] == 9108 and got["workers"] == ["decode-0"]
    assert abs(parse_utc(got["updated_utc"]).timestamp() - parse_utc(utc_iso()).timestamp()) < 3600
    write_status(path, {"a": health("a", frames_decoded=5000)})  # replaces the file
    assert read_status(path)["cameras"]["a"].frames_decoded == 5000


def test_status_file_rejects_reserved_extra(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write_status(tmp_path / "s.json", {}, {"pid": 1})
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("content, match", [
    (None, "no status file"),
    ("{not json", "corrupt"),
    ("[1, 2]", "corrupt"),
    ('{"updated_utc": "2024-05-01T06:30:00Z", "cameras": {"a": {"camera_id": "a"}}}', "missing keys"),
])
def test_read_status_errors(tmp_path, content, match):
    path = tmp_path / "status.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(StatusFileError, match=match) as info:
        read_status(path)
    assert isinstance(info.value, OSError) and isinstance(info.value, BaqylauError)


# --- baqylau status ----------------------------------------------------------------------

@pytest.fixture
def config(tmp_path) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent("""
        data_dir: var
        cameras:
          - {id: square, url: clips/a.mp4}
          - {id: gate, url: "rtsp://127.0.0.1:8554/gate"}
          - {id: roof, url: clips/c.mp4}
        """), encoding="utf-8")
    return p


def run_status(argv: list[str]) -> tuple[int, str, str]:
    """Parse ``argv`` with a parser holding only ``status``, run it, return (code, out, err)."""
    parser = argparse.ArgumentParser(prog="baqylau")
    add_status_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out=out, err=err), out.getvalue(), err.getvalue()


def test_status_command_prints_table(config):
    now = utc_iso()
    write_status(config.parent / "var" / "status.json", {
        "square": health("square", last_frame_utc=now, updated_utc=now),
        "gate": health("gate", state="stalled", fps_in=0.0, fps_out=0.0, last_frame_utc=None,
                       last_error="read timeout after 10 s; " + "x" * 200, updated_utc=now),
    })
    code, out, err = run_status(["status", "--config", str(config)])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["camera", "state", "fps"]
    rows = {ln.split()[0]: ln for ln in lines[2:]}
    assert rows["square"].split()[1:8] == ["streaming", "25.0/5.0", "1000", "200", "7", "3", "1"]
    assert rows["gate"].split()[1] == "stalled" and "read timeout after 10 s" in rows["gate"]
    assert "x" * 100 not in rows["gate"] and rows["gate"].endswith("...")
    assert rows["roof"].split()[1:3] == ["no", "report"]  # configured, never reported
    assert "pipeline not running" not in out

    code, out, err = run_status(["status", "--config", str(config), "--json"])
    doc = json.loads(out)
    assert code == 0 and doc["cameras"]["gate"]["state"] == "stalled" and doc["pid"] == os.getpid()


def test_status_command_flags_old_file_and_watch_redraws(config):
    old = utc_iso(T0)
    path = config.parent / "var" / "status.json"
    write_status(path, {"square": health("square", updated_utc=old)})
    doc = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**doc, "updated_utc": old}), encoding="utf-8")
    # written by this (live) process: old but alive means stalled
    code, out, _ = run_status(["status", "--config", str(config), "--watch", "0.2", "--count", "2"])
    assert code == 0
    assert out.count("pipeline stalled?") == 2 and out.count("streaming") == 2
    # written by a process that has exited: said plainly, exit status 1
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    path.write_text(json.dumps({**doc, "updated_utc": old, "pid": int(dead.stdout)}), encoding="utf-8")
    code, out, _ = run_status(["status", "--config", str(config)])
    assert code == 1 and f"pid {int(dead.stdout)} has exited" in out


def test_status_command_without_status_file_is_one_line(config):
    code, out, err = run_status(["status", "--config", str(config)])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no status file" in err and "Traceback" not in err
    assert str(config.parent / "var" / "status.json") in err


def test_status_watch_interval_is_bounded(config):
    with pytest.raises(SystemExit):
        run_status(["status", "--config", str(config), "--watch", "0"])
