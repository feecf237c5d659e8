"""Fixtures for the ingest tests: clips made by a real ffmpeg, ffprobe facts, an RTSP server."""

from __future__ import annotations

import json
import os
import random
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

from tests.conftest import free_port, need_tool, wait_until  # noqa: F401 (re-exported)

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
    """``rtsp_relay.py`` (ffmpeg RTP + an RTSP/TCP relay) in its own process group.

    Args:
        clip: Clip to loop.
        audio: Serve the clip's audio only (a source with no video stream).
    """

    def __init__(self, clip: Path, audio: bool = False) -> None:
        self.clip = clip
        self.audio = audio
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start serving and wait (bounded) until the port accepts connections."""
        self.proc = subprocess.Popen([sys.executable, str(RELAY), "--port", str(self.port),
                                      "--clip", str(self.clip), *(["--audio"] if self.audio else [])],
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
            os.killpg(self.proc.pid, signal.SIGCONT)  # a frozen group dies all the same
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP the relay and its ffmpeg: sockets stay open, no byte is sent."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the relay and its ffmpeg."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def rtsp_server(clips: dict[str, Path]) -> Iterator[RtspServer]:
    need_tool("ffmpeg")
    server = RtspServer(clips["h264"])
    try:
        yield server
    finally:
        server.kill()


def has_encoder(name: str) -> bool:
    """Whether this ffmpeg was built with encoder ``name`` (libx265 is optional in builds)."""
    exe = need_tool("ffmpeg")
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def encode_testsrc(path: Path, *args: str, size: str = "320x240", seconds: float = 2, rate: int = 25,
            codec: str = "libx264") -> Path:
    """Encode ``testsrc2`` to ``path`` with ffmpeg; ``args`` are extra output options."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-t", str(seconds), "-c:v", codec,
           "-preset", "ultrafast", *args, str(path))
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def fault_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips for the fault kinds, all made by ffmpeg: damaged, long-GOP, odd formats, no pts."""
    need_tool("ffmpeg")
    root = tmp_path_factory.mktemp("faults")
    out: dict[str, Path] = {}
    base = encode_testsrc(root / "base.ts", "-g", "25", seconds=6)  # 150 frames, keyframe every 1 s
    out["base"] = base
    out["bitflip"] = root / "bitflip.ts"  # ~1 byte in 3000 flipped by the noise bitstream filter
    ffmpeg("-i", str(base), "-c:v", "copy", "-bsf:v", "noise=amount=3000", str(out["bitflip"]))
    out["dropped"] = root / "dropped.ts"  # packets dropped at random by the noise filter
    ffmpeg("-i", str(base), "-c:v", "copy", "-bsf:v", "noise=dropamount=5", str(out["dropped"]))
    data = bytearray(base.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 65536] = random.Random(7).randbytes(65536)
    out["garbage"] = write(root / "garbage.ts", bytes(data))
    whole = base.read_bytes()
    out["cut_ts"] = write(root / "cut.ts", whole[:len(whole) * 2 // 3 + 101])  # mid-packet
    faststart = encode_testsrc(root / "faststart.mp4", "-g", "25", "-movflags", "+faststart", seconds=4)
    whole = faststart.read_bytes()
    out["cut_mp4"] = write(root / "cut.mp4", whole[:len(whole) * 2 // 3 + 7])
    # A 60 s GOP (keyframes at 0 s and 60 s), joined a quarter of the way in (TS-packet aligned).
    long_gop = encode_testsrc(root / "gop60.ts", "-g", "1500", "-keyint_min", "1500", "-sc_threshold", "0",
                       size="160x120", seconds=64)
    whole = long_gop.read_bytes()
    out["gop60_joined"] = write(root / "gop60-joined.ts", whole[len(whole) // 4 // 188 * 188:])
    # Raw H.264 elementary stream: the demuxer gives no pts at all.
    out["no_pts"] = encode_testsrc(root / "raw.h264", "-g", "10", "-bsf:v", "h264_mp4toannexb", "-f", "h264",
                            seconds=2)
    return out
