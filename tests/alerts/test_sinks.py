"""JSON Lines sink: every line parses, concurrent writers do not interleave."""

from __future__ import annotations

import json
import threading

import pytest

from alerts.record import Alert
from alerts.sinks import EVENTS, JsonlSink, Sink, SinkError
from tests.alerts.helpers import make_alert


def test_lines_parse_and_round_trip(tmp_path):
    path = tmp_path / "out" / "alerts.jsonl"
    alert = make_alert(1)
    with JsonlSink(path, fsync=True) as sink:
        assert isinstance(sink, Sink)
        for event in EVENTS:
            sink.emit(event, alert)
    with JsonlSink(path) as sink:                       # reopening appends
        sink.emit("alert.ended", alert)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in lines] == [*EVENTS, "alert.ended"]
    assert Alert.from_dict(json.loads(lines[0])["alert"]) == alert
    assert "Абай" in lines[0]                          # UTF-8, not \\u escapes


def test_concurrent_emitters_write_whole_lines(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink(path)
    big = make_alert(0, details={"pad": "x" * 20000})   # lines larger than a pipe buffer

    def emitter(k: int) -> None:
        for i in range(40):
            sink.emit("alert.created", big if i % 10 == 0 else make_alert(i, camera_id=f"cam-{k}"))

    threads = [threading.Thread(target=emitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 161
    assert all(json.loads(line)["event"] == "alert.created" for line in lines[:-1])


def test_errors(tmp_path):
    sink = JsonlSink(tmp_path / "a.jsonl")
    with pytest.raises(SinkError, match="unknown alert event"):
        sink.emit("alert.deleted", make_alert())
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.emit("alert.created", make_alert())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot open"):
        JsonlSink(blocker / "a.jsonl")
