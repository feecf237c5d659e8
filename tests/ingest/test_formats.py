"""Fault kind 3, frames that are not what was assumed: size changes, 10-bit, full range.

Each decoded frame is compared with ``ffmpeg -pix_fmt rgb24`` output of the same frame (FFmpeg's
own conversion, the reference the issue names), as a mean absolute difference in 8-bit levels.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from calibration.zones import Zone
from ingest.source import CameraStream, SourceOptions
from tests.conftest import need_tool
from tests.ingest.conftest import encode_testsrc, ffmpeg, has_encoder

FRAMES = 5  # frames per clip compared with ffmpeg's rgb24
#: Most a frame's mean |ours - ffmpeg| may be, in 8-bit levels. 8-bit sources match exactly
#: (same swscale path); 10-bit ones differ by swscale's chroma upsampling between FFmpeg 5.1
#: (the CLI) and the FFmpeg PyAV bundles, which sits on the sharp colour edges of testsrc2.
MAX_MEAN_DIFF = 3.0


def ffmpeg_rgb24(path: Path, width: int, height: int) -> np.ndarray:
    """The first :data:`FRAMES` frames of ``path`` as ffmpeg converts them: `(N, H, W, 3)` uint8 RGB."""
    exe = need_tool("ffmpeg")
    raw = subprocess.run([exe, "-v", "error", "-i", str(path), "-frames:v", str(FRAMES), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def decode(path: Path) -> list:
    return list(CameraStream("cam", SourceOptions(str(path))).frames())


def mean_diff(frames: list, reference: np.ndarray) -> float:
    ours = np.stack([f.image[..., ::-1] for f in frames[:len(reference)]]).astype(np.int16)
    return float(np.abs(ours - reference).mean())


FORMATS = {  # name: (extra ffmpeg output options, encoder)
    "h264-8bit": (["-pix_fmt", "yuv420p"], "libx264"),
    "h264-10bit": (["-pix_fmt", "yuv420p10le"], "libx264"),
    "hevc-10bit": (["-pix_fmt", "yuv420p10le", "-x265-params", "log-level=none"], "libx265"),
    "h264-yuvj420p": (["-pix_fmt", "yuvj420p"], "libx264"),
    # 10-bit flagged full range (there is no yuvj 10-bit format): the range comes from the frame.
    "h264-10bit-full-range": (["-vf", "scale=out_range=full", "-pix_fmt", "yuv420p10le",
                               "-color_range", "pc"], "libx264"),
    # BT.709 matrix, tagged: the matrix comes from the frame (decoding it as BT.601 instead is off
    # by 6.6 levels on average, 32 at most).
    "h264-bt709": (["-vf", "scale=out_color_matrix=bt709", "-pix_fmt", "yuv420p", "-colorspace", "bt709",
                    "-color_primaries", "bt709", "-color_trc", "bt709"], "libx264"),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_becomes_8bit_bgr_matching_ffmpeg(name: str, tmp_path: Path) -> None:
    options, encoder = FORMATS[name]
    if not has_encoder(encoder):
        pytest.skip(f"this ffmpeg has no {encoder} encoder")
    clip = encode_testsrc(tmp_path / f"{name}.mp4", *options, size="640x480", seconds=0.4, codec=encoder)
    frames = decode(clip)
    assert len(frames) == 10
    assert all(f.image.dtype == np.uint8 and f.image.shape == (480, 640, 3) for f in frames)
    diff = mean_diff(frames, ffmpeg_rgb24(clip, 640, 480))
    print(f"{name}: mean |ours - ffmpeg rgb24| = {diff:.2f} levels")
    assert diff <= MAX_MEAN_DIFF


def test_resolution_change_mid_stream(tmp_path: Path) -> None:
    small = encode_testsrc(tmp_path / "small.ts", "-g", "5", size="640x480", seconds=0.4)
    large = encode_testsrc(tmp_path / "large.ts", "-g", "5", "-output_ts_offset", "0.4", size="1280x720", seconds=0.4)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + large.read_bytes())
    frames = decode(joined)
    sizes = [f.resolution_wh for f in frames]
    assert sizes == [(640, 480)] * 10 + [(1280, 720)] * 10
    times = [f.time_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[10] - times[9] == pytest.approx(0.04, abs=1e-3)  # continuous timestamps
    assert mean_diff(frames[:10], ffmpeg_rgb24(small, 640, 480)) <= MAX_MEAN_DIFF
    assert mean_diff(frames[10:], ffmpeg_rgb24(large, 1280, 720)) <= MAX_MEAN_DIFF
    # A zone in normalised units follows the new size; one in pixels stays put.
    norm = Zone("z", np.array([[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]], np.float32), units="norm")
    for frame in (frames[0], frames[-1]):
        w, h = frame.resolution_wh
        inside = np.array([[0.75 * w, 0.75 * h], [0.25 * w, 0.25 * h]], np.float32)
        assert norm.contains(inside, frame.resolution_wh).tolist() == [True, False]
    px = Zone("p", np.array([[600, 400], [700, 400], [700, 500], [600, 500]], np.float32), units="px")
    assert px.contains(np.array([[650, 450]], np.float32), frames[-1].resolution_wh).tolist() == [True]
