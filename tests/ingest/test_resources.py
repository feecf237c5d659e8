"""Fault kind 6, resources over long uptime: reconnect churn, open files, FFmpeg's log bridge."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.errors import BaqylauError
from ingest.limits import OpenFilesLimitError, raise_open_files_limit
from ingest.queues import FrameQueue
from ingest.reader import CameraReader
from ingest.source import CameraStream, SourceOptions, ffmpeg_log_bridge_enabled
from tests.conftest import free_port
from tests.ingest.conftest import RtspServer, encode_testsrc, wait_until

RECONNECTS = 2000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))  # native threads too (FFmpeg's decoder threads)


@pytest.mark.slow
def test_2000_reconnects_do_not_leak(tmp_path: Path) -> None:
    # A real open/probe/decode/close cycle each time: a tiny MPEG-TS served over HTTP by a
    # separate Python process; each connection ends after 3 frames ("stream ended") and the
    # camera reconnects at once.
    encode_testsrc(tmp_path / "tiny.ts", "-g", "1", size="64x48", seconds=0.12)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/tiny.ts"
        wait_until(lambda: subprocess.run(["ffprobe", "-v", "quiet", url]).returncode == 0, 15, "the server")
        stream = CameraStream("churn", SourceOptions(url, reconnect_initial_s=1e-3, reconnect_max_s=1e-3,
                                                     open_timeout_s=5, read_timeout_s=5))
        marks: dict[str, tuple[float, int, int]] = {}
        started = time.monotonic()
        for _ in stream.frames():
            n = stream.stats.reconnects
            if n == 200 and "warm" not in marks:
                marks["warm"] = (rss_mb(), open_fds(), threads())
            if n >= RECONNECTS:
                marks["end"] = (rss_mb(), open_fds(), threads())
                stream.stop()
            if time.monotonic() - started > 120:
                pytest.fail(f"only {n} reconnects in 120 s")
    finally:
        server.kill()
        server.wait(5)
    (rss0, fds0, thr0), (rss1, fds1, thr1) = marks["warm"], marks["end"]
    print(f"after 200 / {RECONNECTS} reconnects: RSS {rss0:.1f} / {rss1:.1f} MB, fds {fds0} / {fds1}, "
          f"threads {thr0} / {thr1}, {time.monotonic() - started:.1f} s")
    assert stream.stats.decode_errors == 0 and stream.stats.frames_emitted >= 3 * RECONNECTS
    assert abs(fds1 - fds0) <= 5
    assert thr1 - thr0 <= 2
    assert rss1 - rss0 < 30.0


def test_one_rtsp_camera_holds_few_descriptors(rtsp_server: RtspServer) -> None:
    rtsp_server.start()
    before = open_fds()
    reader = CameraReader("fd", SourceOptions(rtsp_server.url, open_timeout_s=5, read_timeout_s=5),
                          FrameQueue(2, drop_oldest=True))
    reader.start()
    try:
        wait_until(lambda: reader.stats.frames_emitted >= 5, 20, "frames")
        during = open_fds()
    finally:
        reader.stop()
    assert reader.join(10)
    print(f"RTSP/TCP camera: {during - before} descriptors")
    assert during - before <= 4
    assert open_fds() <= before + 1


def test_log_bridge_is_off_so_ffmpeg_logs_never_take_the_gil() -> None:
    import av.logging

    assert av.logging.get_level() is None  # PyAV 18 default: a no-op C callback
    assert not ffmpeg_log_bridge_enabled()


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 512), hard))
        got = raise_open_files_limit(cameras=10)
        assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_too_many_cameras_is_a_clear_error() -> None:
    with pytest.raises(OpenFilesLimitError) as info:
        raise_open_files_limit(cameras=10**9)
    assert isinstance(info.value, OSError) and isinstance(info.value, BaqylauError)
    assert "1000000000 cameras need about" in str(info.value) and "ulimit -n" in str(info.value)


@pytest.mark.parametrize("kwargs", [{"cameras": -1}, {"cameras": 1.5}, {"cameras": 1, "fds_per_camera": 0},
                                    {"cameras": True}, {"cameras": 1, "reserve": -1}])
def test_limit_arguments_are_checked(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        raise_open_files_limit(**kwargs)


def test_malloc_tuning_keeps_frame_buffers_in_the_heap():
    """On glibc the setting applies; decoding a clip afterwards faults in far fewer pages."""
    import platform

    from ingest.limits import tune_malloc_for_frames

    applied = tune_malloc_for_frames()
    if platform.libc_ver()[0] == "glibc":
        assert applied is True


def test_one_decoder_thread_gives_the_same_frames(clips):
    import numpy as np

    from ingest.source import CameraStream, SourceOptions

    def decode(threads: int) -> list:
        return [f for f in CameraStream("t", SourceOptions(url=str(clips["h264"]), decoder_threads=threads)).frames()]

    auto, one = decode(0), decode(1)
    assert len(auto) == len(one) > 0
    assert all(np.array_equal(a.image, b.image) and a.pts == b.pts for a, b in zip(auto, one))
