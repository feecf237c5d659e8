"""Fixtures for the ingest tests: clips made by a real ffmpeg, ffprobe facts, an RTSP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

from tests.conftest import free_port, need_tool

RELAY = Path(__file__).with_name("rtsp_relay.py")


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test with its stderr when it fails."""
    exe = need_tool("ffmpeg")
    proc = subprocess.run([exe, "-nostdin", "-v", "error", "-y", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"ffmpeg {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class Probe:
    """What ``ffprobe -show_frames`` says about a file's first video stream."""

    time_base: Fraction
    width: int
    height: int
    pts: list[int | None]
    key_frames: list[bool]


def ffprobe_frames(path: Path) -> Probe:
    """Decode ``path`` with ffprobe and return every video frame's pts and key flag."""
    exe = need_tool("ffprobe")
    out = subprocess.run(
        [exe, "-v", "error", "-select_streams", "v:0", "-show_frames",
         "-show_entries", "frame=pts,key_frame:stream=time_base,width,height", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    stream = data["streams"][0]
    frames = data["frames"]
    return Probe(Fraction(stream["time_base"]), int(stream["width"]), int(stream["height"]),
                 [f.get("pts") for f in frames], [f["key_frame"] == 1 for f in frames])


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small clips made by ffmpeg: H.264 GOP 10 (mp4), a timestamp reset (ts), broken MJPEG, audio only."""
    need_tool("ffmpeg")
    root = tmp_path_factory.mktemp("clips")
    h264 = root / "testsrc-gop10.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "4", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p", str(h264))
    # Two MPEG-TS files back to back: pts jumps back to the start in the middle.
    part = root / "part.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "1", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "10", str(part))
    reset = root / "reset.ts"
    reset.write_bytes(part.read_bytes() * 2)
    mjpeg = root / "testsrc.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "3", "-c:v", "mjpeg", str(mjpeg))
    audio = root / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", str(audio))
    return {"h264": h264, "reset": reset, "mjpeg": mjpeg, "audio": audio}


class RtspServer:
    """``rtsp_relay.py`` (ffmpeg RTP + an RTSP/TCP relay) in its own process group."""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start serving and wait (bounded) until the port accepts connections."""
        self.proc = subprocess.Popen([sys.executable, str(RELAY), "--port", str(self.port),
                                      "--clip", str(self.clip)],
                                     stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rtsp_relay exited with {self.proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        pytest.fail("rtsp_relay did not start listening within 15 s")

    def kill(self) -> None:
        """SIGKILL the relay and its ffmpeg."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def rtsp_server(clips: dict[str, Path]) -> Iterator[RtspServer]:
    need_tool("ffmpeg")
    server = RtspServer(clips["h264"])
    try:
        yield server
    finally:
        server.kill()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail with ``what`` when it is not true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
