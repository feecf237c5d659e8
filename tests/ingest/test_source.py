"""CameraStream on real files: frame counts and timestamps against ffprobe, sampling, keyframes, errors."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ingest import SourceError
from ingest.source import (CameraStream, SourceOptions, SourceOptionsError, _Clock, _Sampler,
                           is_live_url)
from tests.conftest import VIDEOS, need
from tests.ingest.conftest import Probe, ffprobe_frames

SAMPLES = {
    "vtest": VIDEOS / "opencv-samples" / "vtest.avi",
    "one-by-one": VIDEOS / "intel-sample-videos" / "one-by-one-person-detection.mp4",
    "car": VIDEOS / "intel-sample-videos" / "car-detection.mp4",
}
_PROBES: dict[Path, Probe] = {}


def probe(path: Path) -> Probe:
    """ffprobe facts for ``path``, cached for the session (ffprobe decodes the whole file)."""
    if path not in _PROBES:
        _PROBES[path] = ffprobe_frames(path)
    return _PROBES[path]


def decode(path: Path, **kwargs) -> tuple[list, CameraStream]:
    stream = CameraStream("cam", SourceOptions(str(path), **kwargs))
    return list(stream.frames()), stream


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_file_frames_match_ffprobe(name: str) -> None:
    path = need(SAMPLES[name])
    facts = probe(path)
    frames, stream = decode(path)
    assert len(frames) == len(facts.pts)
    assert stream.stats.state == "ended"
    assert stream.stats.frames_decoded == stream.stats.frames_emitted == len(frames)
    assert stream.stats.decode_errors == 0
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    for frame, pts in zip(frames[:5] + frames[-3:], facts.pts[:5] + facts.pts[-3:]):
        assert frame.pts == pts
        assert frame.time_base == facts.time_base
        assert frame.time_s == pytest.approx(float(pts * facts.time_base))
    assert sum(f.is_keyframe for f in frames) == sum(facts.key_frames)
    assert all(b.time_s > a.time_s for a, b in zip(frames, frames[1:]))
    image = frames[0].image
    assert image.shape == (facts.height, facts.width, 3) and image.dtype == np.uint8
    assert all(f.camera_id == "cam" for f in frames[:3])


def test_analysis_fps_samples_by_stream_time() -> None:
    path = need(SAMPLES["vtest"])  # 10 fps, 795 frames
    frames, stream = decode(path, analysis_fps=2.0)
    assert len(frames) == math.ceil(795 / 5)
    assert [f.frame_index for f in frames[:4]] == [0, 5, 10, 15]
    assert stream.stats.frames_decoded == 795
    assert stream.stats.frames_emitted == len(frames)
    steps = np.diff([f.time_s for f in frames])
    assert np.allclose(steps, 0.5)


def test_analysis_fps_on_12_5_fps_clip_keeps_grid() -> None:
    path = need(SAMPLES["car"])  # 12.5 fps, 377 frames, 30.16 s
    frames, _ = decode(path, analysis_fps=3.0)
    times = np.array([f.time_s for f in frames])
    assert len(frames) == pytest.approx(30.16 * 3, abs=2)
    assert np.all(np.diff(times) > 0)
    # No drift: the k-th kept frame is the first one at or after k/3 s.
    assert np.all(times >= np.arange(len(times)) / 3.0 - 1e-6)
    assert np.all(times < np.arange(len(times)) / 3.0 + 0.08 + 1e-6)


@pytest.mark.parametrize("name", ["h264", "car"])
def test_keyframes_mode_decodes_only_keyframes(name: str, clips: dict[str, Path]) -> None:
    path = clips["h264"] if name == "h264" else need(SAMPLES["car"])
    facts = probe(path)
    frames, stream = decode(path, decode="keyframes")
    assert len(frames) == sum(facts.key_frames)
    assert all(f.is_keyframe for f in frames)
    key_pts = [p for p, k in zip(facts.pts, facts.key_frames) if k]
    assert [f.pts for f in frames] == key_pts
    assert stream.stats.frames_decoded == len(frames)


def test_timestamp_reset_keeps_time_monotonic(clips: dict[str, Path]) -> None:
    frames, _ = decode(clips["reset"])  # two 1 s, 25 fps TS clips back to back
    assert len(frames) == 50
    pts = [f.pts for f in frames]
    assert pts[25] < pts[24]  # the raw timestamps do go back...
    times = [f.time_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))  # ...stream time does not
    assert times[25] - times[24] == pytest.approx(0.04)


def test_realtime_paces_a_file(clips: dict[str, Path]) -> None:
    frames, _ = decode(clips["reset"], realtime=True)
    assert len(frames) == 50
    # Sleeping can only make the span longer than the stream span: a safe lower bound.
    assert frames[-1].wall_time_s - frames[0].wall_time_s >= 0.5 * (frames[-1].time_s - frames[0].time_s)


def test_stop_ends_a_file_early(clips: dict[str, Path]) -> None:
    stream = CameraStream("cam", SourceOptions(str(clips["h264"])))
    got = []
    for frame in stream.frames():
        got.append(frame)
        if len(got) == 3:
            stream.stop()
    assert len(got) == 3
    assert stream.stats.state == "stopped"


def test_decode_errors_are_counted_and_decoding_goes_on(clips: dict[str, Path], tmp_path: Path) -> None:
    import av

    with av.open(str(clips["mjpeg"])) as container:  # 30 MJPEG frames
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(clips["mjpeg"].read_bytes())
    for pos, size in packets[5:8]:  # wipe three JPEG payloads, keep the container intact
        data[pos + 2:pos + size - 2] = bytes(size - 4)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(bytes(data))
    frames, stream = decode(broken)
    assert stream.stats.decode_errors >= 1
    assert stream.stats.state == "ended"
    assert len(frames) + stream.stats.decode_errors == len(packets)
    assert [f.frame_index for f in frames] == list(range(len(frames)))


def test_missing_file_is_a_one_line_source_error() -> None:
    stream = CameraStream("x", SourceOptions("/nonexistent/nope.mp4"))
    with pytest.raises(SourceError) as info:
        next(stream.frames())
    assert str(info.value) == "camera 'x': cannot open '/nonexistent/nope.mp4': No such file or directory"
    assert isinstance(info.value, OSError)
    assert stream.stats.state == "failed"
    assert stream.stats.last_error == str(info.value)


def test_source_without_video_is_an_error(clips: dict[str, Path]) -> None:
    stream = CameraStream("x", SourceOptions(str(clips["audio"])))
    with pytest.raises(SourceError, match="no video stream"):
        list(stream.frames())
    assert stream.stats.state == "failed"


@pytest.mark.parametrize(("url", "live"), [
    ("rtsp://10.0.0.5:554/stream1", True),
    ("RTSPS://cam/x", True),
    ("http://cam/mjpg", True),
    ("https://cam/hls.m3u8", True),
    ("udp://@:1234", True),
    ("tcp://cam:9000", True),
    ("srt://cam:9000", True),
    ("/data/video.mp4", False),
    ("video.mp4", False),
    ("file:///data/video.mp4", False),
])
def test_is_live_url(url: str, live: bool) -> None:
    assert is_live_url(url) is live


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"url": ""}, "url"),
    ({"decode": "key"}, "decode"),
    ({"analysis_fps": 0}, "analysis_fps"),
    ({"analysis_fps": float("nan")}, "analysis_fps"),
    ({"open_timeout_s": 0}, "open_timeout_s"),
    ({"read_timeout_s": -1}, "read_timeout_s"),
    ({"reconnect_initial_s": 0}, "reconnect_initial_s"),
    ({"reconnect_initial_s": 5, "reconnect_max_s": 1}, "reconnect_max_s"),
    ({"rtsp_transport": "http"}, "rtsp_transport"),
    ({"realtime": "yes"}, "realtime"),
    ({"probe_s": 0}, "probe_s"),
])
def test_source_options_are_checked(kwargs: dict, field: str) -> None:
    kwargs = {"url": "rtsp://cam/x", **kwargs}
    with pytest.raises(SourceOptionsError, match=f"SourceOptions.{field}"):
        SourceOptions(**kwargs)
    assert issubclass(SourceOptionsError, ValueError)


def test_sampler_resyncs_after_a_gap() -> None:
    sampler = _Sampler(fps=2.0)
    kept = [t for t in (0.0, 0.1, 0.5, 0.9, 1.0, 10.0, 10.4, 10.5, 11.0) if sampler.keep(t)]
    assert kept == [0.0, 0.5, 1.0, 10.0, 10.5, 11.0]


def test_clock_extrapolates_missing_pts() -> None:
    clock = _Clock()
    tb = Fraction(1, 10)
    assert clock.time_s(0, tb, 0.0) == 0.0
    assert clock.time_s(None, tb, 0.1) == pytest.approx(0.04)  # fallback 25 fps
    assert clock.time_s(None, None, 0.2) == pytest.approx(0.08)


def test_hwaccel_falls_back_to_software_without_a_gpu(caplog):
    """No GPU here (CI never has one): asking for NVDEC must decode in software, with a warning."""
    import logging

    from ingest.source import CameraStream, SourceOptions
    from tests.conftest import VIDEOS, need

    clip = need(VIDEOS / "intel-sample-videos" / "car-detection.mp4")
    caplog.set_level(logging.WARNING, logger="ingest.source")
    stream = CameraStream("hw", SourceOptions(url=str(clip), hwaccel="cuda"))
    frames = [f for _, f in zip(range(20), stream.frames())]
    stream.stop()
    assert len(frames) == 20 and frames[0].image.shape == (432, 768, 3)
    assert any("hardware decoding 'cuda'" in r.getMessage() for r in caplog.records)
