"""Fault kind 4, damaged bitstreams, and fault kind 5, time, on files made by ffmpeg."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.source import CameraStream, SourceOptions, ffmpeg_log_bridge_enabled


def decode(path: Path, **kwargs) -> tuple[list, CameraStream]:
    stream = CameraStream("cam", SourceOptions(str(path), **kwargs))
    return list(stream.frames()), stream


def test_bit_flipped_packets_are_counted_and_decoding_goes_on(fault_clips: dict[str, Path],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        frames, stream = decode(fault_clips["bitflip"])
    assert stream.stats.state == "ended"
    assert len(frames) == 150  # every picture still comes out, concealed
    assert stream.stats.corrupt_frames + stream.stats.decode_errors >= 10
    ours = [r for r in caplog.records if r.name == "ingest.source"]
    assert len(ours) == 1  # rate-limited: one line per camera per 10 s, not one per error
    assert "'cam'" in ours[0].getMessage() and "\n" not in ours[0].getMessage()
    # PyAV's log bridge stays off: FFmpeg's many error lines never reach Python (nor the GIL).
    assert not ffmpeg_log_bridge_enabled()
    assert not [r for r in caplog.records if r.name.startswith("libav")]


def test_dropped_packets_leave_a_gap_but_never_end_decoding(fault_clips: dict[str, Path]) -> None:
    frames, stream = decode(fault_clips["dropped"])
    assert stream.stats.state == "ended"
    assert 60 < len(frames) < 150
    times = [f.time_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] > 5.0  # reached the end of the 6 s clip


def test_random_bytes_mid_file_are_skipped(fault_clips: dict[str, Path]) -> None:
    frames, stream = decode(fault_clips["garbage"])
    assert stream.stats.state == "ended"
    times = np.array([f.time_s for f in frames])
    assert np.all(np.diff(times) > 0)
    first = times[0]
    assert np.any(times - first < 2.0) and np.any(times - first > 5.0)  # before and after the block
    assert len(frames) < 150  # the block did destroy pictures...


@pytest.mark.parametrize("name", ["cut_ts", "cut_mp4"])
def test_file_cut_mid_packet_decodes_to_its_end(name: str, fault_clips: dict[str, Path]) -> None:
    frames, stream = decode(fault_clips[name])
    assert stream.stats.state == "ended"  # ...and no exception
    assert len(frames) > 40
    assert [f.frame_index for f in frames] == list(range(len(frames)))


def test_long_gop_joined_mid_way_starts_at_the_next_keyframe(fault_clips: dict[str, Path]) -> None:
    frames, stream = decode(fault_clips["gop60_joined"])
    assert stream.stats.state == "ended"
    assert frames, "the keyframe at 60 s was never decoded"
    assert frames[0].is_keyframe  # no grey half-pictures before it
    assert frames[0].time_s > 55.0  # stream time kept from pts: the keyframe sits at 60 s
    assert len(frames) == 100  # 60 s .. 64 s at 25 fps
    assert stream.stats.bytes_in > 0 and stream.stats.last_bytes_wall_s is not None


def test_frames_without_pts_get_a_continuous_time(fault_clips: dict[str, Path]) -> None:
    with av.open(str(fault_clips["no_pts"])) as container:  # the fact this test relies on
        assert all(f.pts is None for f in container.decode(video=0))
    frames, stream = decode(fault_clips["no_pts"])
    assert len(frames) == 50 and stream.stats.state == "ended"
    assert all(f.pts is None for f in frames)
    steps = np.diff([f.time_s for f in frames])
    assert np.allclose(steps, 0.04)  # one frame duration of the stated 25 fps
    assert frames[0].time_base == Fraction(1, 1200000)


def test_backward_jump_is_counted_and_logged_once(clips: dict[str, Path],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest"):
        frames, stream = decode(clips["reset"])  # two 1 s TS clips back to back
    times = [f.time_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert stream.stats.discontinuities == 1
    lines = [r.getMessage() for r in caplog.records if "ran backwards" in r.getMessage()]
    assert len(lines) == 1 and "'cam'" in lines[0]


def test_wall_time_is_our_clock_at_receive_time(clips: dict[str, Path]) -> None:
    import time

    before = time.time()
    frames, stream = decode(clips["h264"])
    after = time.time()
    walls = [f.wall_time_s for f in frames]
    assert before <= walls[0] and walls[-1] <= after
    assert all(b >= a for a, b in zip(walls, walls[1:]))
    assert stream.stats.last_frame_wall_s == walls[-1]
