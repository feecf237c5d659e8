"""CameraReader threads on real files and a real RTSP server (ffmpeg + relay) that dies and comes back."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from ingest.queues import FrameQueue
from ingest.reader import CameraReader
from ingest.source import SourceOptions
from tests.conftest import free_port
from tests.ingest.conftest import RtspServer, ffprobe_frames, wait_until

LIVE = dict(open_timeout_s=3.0, read_timeout_s=2.0, reconnect_initial_s=0.1, reconnect_max_s=0.5)


def drain(q: FrameQueue, timeout_s: float = 30.0) -> list:
    """Get frames until the queue is closed and empty (bounded by ``timeout_s``)."""
    out, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = q.get(0.5)
        if item is None and q.closed and q.qsize() == 0:
            return out
        if item is not None:
            out.append(item)
    pytest.fail(f"queue not closed within {timeout_s} s")


def test_file_reader_delivers_every_frame_then_closes(clips: dict[str, Path]) -> None:
    q = FrameQueue(2, drop_oldest=False)
    reader = CameraReader("file-cam", SourceOptions(str(clips["h264"])), q)
    reader.start()
    assert any(t.name == "decode-file-cam" and t.daemon for t in threading.enumerate())
    frames = drain(q)
    assert reader.join(10.0)
    assert len(frames) == len(ffprobe_frames(clips["h264"]).pts)
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert reader.done and reader.error is None
    assert reader.stats.state == "ended"


def test_missing_file_sets_a_one_line_error(caplog: pytest.LogCaptureFixture) -> None:
    q = FrameQueue(2, drop_oldest=True)
    reader = CameraReader("gone", SourceOptions("/nonexistent/nope.mp4"), q)
    with caplog.at_level(logging.ERROR, logger="ingest"):
        reader.start()
        assert reader.join(10.0)
    assert reader.done
    assert reader.error == "camera 'gone': cannot open '/nonexistent/nope.mp4': No such file or directory"
    assert reader.stats.state == "failed"
    assert q.closed and q.get(0) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None and "\n" not in errors[0].getMessage()


def test_unreachable_rtsp_retries_while_another_camera_finishes(clips: dict[str, Path],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"  # nothing listens there
    dead_q, file_q = FrameQueue(2, drop_oldest=True), FrameQueue(4, drop_oldest=False)
    dead = CameraReader("dead", SourceOptions(url, **LIVE), dead_q)
    alive = CameraReader("alive", SourceOptions(str(clips["h264"])), file_q)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        dead.start()
        alive.start()
        try:
            frames = drain(file_q)
            assert alive.join(10.0) and alive.error is None
            assert len(frames) == 100 and alive.stats.state == "ended"
            wait_until(lambda: dead.stats.reconnects >= 2, 20.0, "two reconnect attempts")
            assert dead.stats.state in ("backoff", "connecting")
            assert dead.stats.last_error is not None and "\n" not in dead.stats.last_error
            assert "camera 'dead'" in dead.stats.last_error
            assert not dead.done and dead.error is None
        finally:
            dead.stop()
        assert dead.join(5.0)  # no open in flight blocks: refused connects return at once
    assert dead.error is None and dead.stats.state == "stopped"
    warnings = [r for r in caplog.records if r.name == "ingest.source" and "dead" in r.getMessage()]
    assert warnings and all(r.exc_info is None and "\n" not in r.getMessage() for r in warnings)


def test_rtsp_camera_reconnects_after_server_is_killed(rtsp_server: RtspServer) -> None:
    rtsp_server.start()
    q = FrameQueue(8, drop_oldest=True)
    reader = CameraReader("rtsp-cam", SourceOptions(rtsp_server.url, **LIVE), q)
    frames: list = []

    def take(n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        target = len(frames) + n
        while len(frames) < target:
            if time.monotonic() > deadline:
                pytest.fail(f"got {len(frames)} frames, wanted {target}; stats {reader.stats}")
            if (frame := q.get(0.2)) is not None:
                frames.append(frame)

    reader.start()
    try:
        take(20, 30.0)
        assert reader.stats.state == "streaming" and reader.stats.reconnects == 0
        rtsp_server.kill()
        wait_until(lambda: reader.stats.state in ("backoff", "stalled"), 10.0, "the camera to notice")
        before = len(frames)
        time.sleep(2.0)
        rtsp_server.start()
        take(20, 30.0)
        assert reader.stats.reconnects >= 1
        assert reader.stats.state == "streaming"
    finally:
        reader.stop()
    assert reader.join(10.0) and reader.error is None
    assert before >= 20
    times = [f.time_s for f in frames]
    assert all(b >= a for a, b in zip(times, times[1:]))
    indices = [f.frame_index for f in frames]
    assert all(b > a for a, b in zip(indices, indices[1:]))
    assert frames[-1].image.shape == (240, 320, 3)


def test_silent_rtsp_server_hits_the_open_deadline() -> None:
    with socket.socket() as server:  # accepts TCP, never answers RTSP
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/live"
        opts = SourceOptions(url, open_timeout_s=0.5, read_timeout_s=0.5,
                             reconnect_initial_s=0.1, reconnect_max_s=0.2)
        reader = CameraReader("silent", opts, FrameQueue(2, drop_oldest=True))
        reader.start()
        try:
            wait_until(lambda: reader.stats.reconnects >= 1, 20.0, "a timed-out open")
            assert "no answer within 0.5 s" in (reader.stats.last_error or "")
        finally:
            reader.stop()
        assert reader.join(5.0) and reader.error is None
