"""Ingest benchmark (issue 3): our decode against ffmpeg, keyframe decode, cameras per core, batching.

Everything is measured in one run on clips made here with ffmpeg (libx264) from the OpenCV sample
``vtest.avi`` (scaled to 1920x1080, retimed to 25 fps, 4 Mb/s CBR-like, no B-frames, fixed GOP:
what a typical IP camera sends), or from ffmpeg's ``testsrc2`` when ``../shared`` is absent.

Decode figures are taken on ONE pinned CPU (``os.sched_setaffinity``; the ffmpeg children inherit
it) and are based on CPU seconds (user + system, all threads of the process), not wall time, so
that other load on a shared machine distorts them as little as possible; wall times are reported
too. With one CPU in its affinity mask FFmpeg's automatic thread count is 1 (``av_cpu_count``
reads the mask), so ``CameraStream``'s ``thread_type = "AUTO"`` decodes on one thread there, like
``ffmpeg -threads 1``; the threads it starts unpinned are reported as well.

The batch benchmark uses all CPUs (onnxruntime's default thread pool), then one pinned CPU with
one onnxruntime thread for the per-core figure.

Usage:
    .venv/bin/python benchmarks/ingest.py --json            # full run, about 2-3 min on 2 cores
    .venv/bin/python benchmarks/ingest.py --json --quick    # tiny clips, a few seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.source import CameraStream, SourceOptions  # noqa: E402

SHARED = Path(os.environ.get("BAQYLAU_SHARED", REPO.parent / "shared")).resolve()
VTEST = SHARED / "data" / "videos" / "opencv-samples" / "vtest.avi"
YOLOX = SHARED / "models" / "yolox-nano-coco" / "yolox_nano.onnx"

log = logging.getLogger("benchmarks.ingest")

#: Analysed frames per second per camera that the capacity figures assume.
ANALYSIS_FPS = 2.0
#: Camera-like stream rate of the generated clips (frames per second).
STREAM_FPS = 25
#: Cameras in the capacity note.
DEPLOYMENT_CAMERAS = 40_000


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run."""

    width: int
    height: int
    frames: int
    repeat: int
    batch_frames: int
    batch_sizes: tuple[int, ...]
    verify_s: float


FULL = Profile(1920, 1080, 500, 4, 32, (1, 2, 4, 8, 16), 12.0)
QUICK = Profile(480, 270, 50, 1, 4, (1, 2, 4), 0.0)


@dataclass(frozen=True)
class Timing:
    """One measurement: wall and CPU (user + system) seconds, and the frames it produced."""

    wall_s: float
    cpu_s: float
    frames: int


def median_timing(runs: list[Timing]) -> Timing:
    """The run with the median CPU time (so wall and frames stay from the same run)."""
    ordered = sorted(runs, key=lambda t: t.cpu_s)
    return ordered[(len(ordered) - 1) // 2]


def timed(fn: Callable[[], int]) -> Callable[[], Timing]:
    """Wrap ``fn`` (runs in this process, returns a frame count) into a timed run."""
    def run() -> Timing:
        w0, c0 = time.perf_counter(), time.process_time()
        n = fn()
        return Timing(time.perf_counter() - w0, time.process_time() - c0, n)
    return run


def ffmpeg_timed(args: list[str], frames: int) -> Callable[[], Timing]:
    """A timed run of ``ffmpeg ARGS`` as a child (it inherits our CPU affinity)."""
    def run() -> Timing:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args], check=True)
        wall = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return Timing(wall, cpu, frames)
    return run


def interleaved(variants: dict[str, Callable[[], Timing]], repeat: int) -> dict[str, Timing]:
    """Run every variant once per round, ``repeat`` rounds; median per variant by CPU time.

    Rounds rather than back-to-back repeats, so that load from other processes on a shared
    machine falls on all variants alike.
    """
    runs: dict[str, list[Timing]] = {k: [] for k in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            runs[name].append(fn())
    return {k: median_timing(v) for k, v in runs.items()}


def fps(t: Timing) -> float:
    """Frames per CPU second."""
    return t.frames / t.cpu_s


def rnd(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


# -- clips -----------------------------------------------------------------------------------------

def make_clip(path: Path, prof: Profile, gop: int) -> dict:
    """Encode a camera-like H.264 clip: ``prof`` size, 25 fps, ``gop`` frames per GOP, no B-frames."""
    if VTEST.exists():
        src = ["-i", str(VTEST)]
        vf = f"setpts=N/{STREAM_FPS}/TB,scale={prof.width}:{prof.height}"
        source = "vtest.avi (OpenCV sample, 768x576 10 fps) scaled and retimed"
    else:
        src = ["-f", "lavfi", "-i", f"testsrc2=size={prof.width}x{prof.height}:rate={STREAM_FPS}"]
        vf = "null"
        source = "ffmpeg testsrc2 (synthetic: ../shared absent)"
    kbps = max(300, int(4000 * prof.width * prof.height / (1920 * 1080)))
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *src, "-frames:v", str(prof.frames), "-vf", vf,
         "-r", str(STREAM_FPS), "-an", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
         "-bf", "0", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
         "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
         "-pix_fmt", "yuv420p", str(path)], check=True)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"file": path.name, "codec": s.codec_context.name, "profile": s.codec_context.profile,
                "width": s.codec_context.width, "height": s.codec_context.height,
                "fps": float(s.average_rate), "frames": s.frames,
                "duration_s": round(s.frames / float(s.average_rate), 3), "gop_frames": gop,
                "gop_s": gop / STREAM_FPS, "bitrate_kbps": kbps, "b_frames": 0, "source": source}
    return info


# -- decode paths ----------------------------------------------------------------------------------

def camera_stream_count(url: str, decode: str = "all", analysis_fps: float | None = None,
                        threads_seen: list[int] | None = None) -> int:
    """Iterate ``CameraStream(...).frames()`` (BGR arrays) to the end; return frames emitted.

    ``threads_seen`` receives the number of OS threads of this process at the 10th frame.
    """
    stream = CameraStream("bench", SourceOptions(url=url, decode=decode, analysis_fps=analysis_fps))
    n = 0
    for _ in stream.frames():
        n += 1
        if n == 10 and threads_seen is not None:
            threads_seen.append(len(os.listdir("/proc/self/task")))
    return n


def pyav_count(url: str, convert: Callable[[av.VideoFrame], object] | None,
               thread_type: str | None = "AUTO", thread_count: int | None = None,
               seen: dict | None = None) -> int:
    """Plain PyAV decode loop (the same ``thread_type`` as CameraStream unless told).

    Args:
        convert: Called on every decoded frame (``None``: decode only).
        seen: Receives the codec's ``thread_count`` and this process's OS threads at frame 10.
    """
    n = 0
    with av.open(url) as container:
        stream = container.streams.video[0]
        if thread_type is not None:
            stream.thread_type = thread_type
        if thread_count is not None:
            stream.codec_context.thread_count = thread_count
        for frame in container.decode(stream):
            if convert is not None:
                convert(frame)
            n += 1
            if n == 10 and seen is not None:
                seen["thread_count"] = stream.codec_context.thread_count
                seen["os_threads"] = len(os.listdir("/proc/self/task"))
    return n


def plain_bgr(frame: av.VideoFrame) -> np.ndarray:
    """PyAV's default conversion (matrix from the frame, range unspecified)."""
    return frame.to_ndarray(format="bgr24")


def reused_reformatter() -> Callable[[av.VideoFrame], np.ndarray]:
    """Conversion through one :class:`VideoReformatter` kept for the whole stream."""
    reformatter = VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="bgr24").to_ndarray()


def project_to_bgr() -> Callable[[av.VideoFrame], np.ndarray] | None:
    """``ingest.source.to_bgr`` (CameraStream's conversion) when that module has one."""
    import ingest.source

    return getattr(ingest.source, "to_bgr", None)


#: glibc malloc settings that keep freed image buffers in the heap instead of returning them
#: to the kernel (``mallopt(3)``: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, as environment variables).
MALLOC_TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}

_CHILD = """
import os, resource, sys, time
sys.path.insert(0, {repo!r})
os.sched_setaffinity(0, {{{cpu}}})
from ingest.source import CameraStream, SourceOptions
def run():
    return sum(1 for _ in CameraStream("bench", SourceOptions(url={url!r})).frames())
run()  # the second pass is the steady state of a long-running worker
r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
n = run()
r1, c1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
print(n, c1 - c0, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt)
"""


def camera_stream_child(url: str, cpu: int, env: dict[str, str]) -> dict:
    """CameraStream decode (second pass) in a fresh pinned child with extra environment ``env``."""
    code = _CHILD.format(repo=str(REPO), cpu=cpu, url=url)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True,
                         capture_output=True, text=True).stdout.split()
    n, cpu_s, sys_s, faults = int(out[0]), float(out[1]), float(out[2]), int(out[3])
    return {"fps": rnd(n / cpu_s, 1), "system_cpu_s": rnd(sys_s), "minor_page_faults": faults}


def malloc_section(url: str, cpu: int, repeat: int) -> dict:
    """CameraStream in fresh children with glibc's default malloc and with ``MALLOC_TUNED_ENV``.

    A 1080p BGR picture is 6.2 MB, above glibc's mmap threshold: by default every converted
    picture may be mapped fresh and page-faulted in (system time), unless it reuses heap memory.
    """
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(repeat):
        runs["default"].append(camera_stream_child(url, cpu, {}))
        runs["tuned"].append(camera_stream_child(url, cpu, MALLOC_TUNED_ENV))
    med = {k: sorted(v, key=lambda r: r["fps"])[(len(v) - 1) // 2] for k, v in runs.items()}
    return {"our_decode_child_default": med["default"], "our_decode_child_malloc_tuned": med["tuned"],
            "malloc_tuned_env": MALLOC_TUNED_ENV}


def decode_section(clip: Path, prof: Profile, cpu: int) -> dict:
    """Our decode vs ffmpeg on one pinned CPU, and what the gap is made of."""
    url = str(clip)
    all_cpus = os.sched_getaffinity(0)
    to_bgr = project_to_bgr()
    os.sched_setaffinity(0, {cpu})
    try:
        base_threads = len(os.listdir("/proc/self/task"))
        frames = pyav_count(url, None)
        seen_threads: list[int] = []
        pinned_seen: dict = {}
        variants = {
            "ffmpeg": ffmpeg_timed(["-threads", "1", "-i", url, "-f", "null", "-"], frames),
            "ffmpeg_bgr": ffmpeg_timed(["-threads", "1", "-filter_threads", "1", "-i", url,
                                        "-pix_fmt", "bgr24", "-f", "null", "-"], frames),
            "ours": timed(lambda: camera_stream_count(url, threads_seen=seen_threads)),
            "only": timed(lambda: pyav_count(url, None, seen=pinned_seen)),
            "bgr": timed(lambda: pyav_count(url, plain_bgr)),
            "reuse": timed(lambda: pyav_count(url, reused_reformatter())),
            "one_thread": timed(lambda: pyav_count(url, plain_bgr, thread_type=None, thread_count=1)),
        }
        if to_bgr is not None:
            variants["to_bgr"] = timed(lambda: pyav_count(url, to_bgr))
        t = interleaved(variants, prof.repeat)
    finally:
        os.sched_setaffinity(0, all_cpus)

    # What CameraStream does when not pinned (the default in a worker process).
    unpinned_seen: list[int] = []
    ours_unpinned = timed(lambda: camera_stream_count(url, threads_seen=unpinned_seen))()
    plain_seen: dict = {}
    pyav_count(url, None, seen=plain_seen)

    per = {k: v.cpu_s / v.frames * 1e3 for k, v in t.items()}
    conv_key = "to_bgr" if "to_bgr" in t else "bgr"
    gap_ms = per["ours"] - per["ffmpeg"]
    conversion_ms = per[conv_key] - per["only"]
    return {
        "ffmpeg_decode_fps": rnd(fps(t["ffmpeg"]), 1),
        "ffmpeg_decode_bgr_fps": rnd(fps(t["ffmpeg_bgr"]), 1),
        "our_decode_fps": rnd(fps(t["ours"]), 1),
        "pyav_decode_only_fps": rnd(fps(t["only"]), 1),
        "pyav_decode_bgr_fps": rnd(fps(t["bgr"]), 1),
        "pyav_decode_project_to_bgr_fps": rnd(fps(t["to_bgr"]), 1) if "to_bgr" in t else None,
        "pyav_decode_bgr_reused_reformatter_fps": rnd(fps(t["reuse"]), 1),
        "pyav_decode_bgr_thread_count_1_fps": rnd(fps(t["one_thread"]), 1),
        "decode_ratio": rnd(fps(t["ours"]) / fps(t["ffmpeg"])),
        "decode_ratio_vs_ffmpeg_bgr": rnd(fps(t["ours"]) / fps(t["ffmpeg_bgr"])),
        "conversion_share_of_gap": rnd(conversion_ms / gap_ms) if gap_ms > 0 else None,
        "gap_ms_per_frame": {
            "total": rnd(gap_ms),
            "bgr_conversion": rnd(conversion_ms),
            "conversion_measured_with": "ingest.source.to_bgr" if conv_key == "to_bgr" else "to_ndarray('bgr24')",
            "decoder_and_demux_pyav_vs_ffmpeg_cli": rnd(per["only"] - per["ffmpeg"]),
            "camera_stream_rest": rnd(per["ours"] - per[conv_key]),
        },
        "decode_wall_s": {k: rnd(v.wall_s) for k, v in t.items()},
        "decode_frames": frames,
        "decoder_threads": {
            "ffmpeg_cli": 1,
            "camera_stream_pinned_extra_os_threads": (seen_threads[0] - base_threads) if seen_threads else None,
            "pyav_auto_pinned_thread_count": pinned_seen.get("thread_count"),
            "pyav_auto_unpinned_thread_count": plain_seen.get("thread_count"),
            "camera_stream_unpinned_extra_os_threads": (unpinned_seen[0] - base_threads) if unpinned_seen else None,
        },
        "our_decode_unpinned": {"cpus": len(all_cpus),
                                "fps_wall": rnd(ours_unpinned.frames / ours_unpinned.wall_s, 1),
                                "fps_per_cpu_second": rnd(fps(ours_unpinned), 1)},
    }


def other_clip_section(url: str, repeat: int, cpu: int) -> dict:
    """ffmpeg vs our decode on a shared clip (vtest.avi, MPEG-4 part 2), pinned."""
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        frames = pyav_count(url, None)
        t = interleaved({
            "ffmpeg": ffmpeg_timed(["-threads", "1", "-i", url, "-f", "null", "-"], frames),
            "ours": timed(lambda: camera_stream_count(url)),
            "only": timed(lambda: pyav_count(url, None)),
        }, repeat)
    finally:
        os.sched_setaffinity(0, all_cpus)
    return {"clip": Path(url).name, "frames": frames, "ffmpeg_decode_fps": rnd(fps(t["ffmpeg"]), 1),
            "our_decode_fps": rnd(fps(t["ours"]), 1), "pyav_decode_only_fps": rnd(fps(t["only"]), 1),
            "decode_ratio": rnd(fps(t["ours"]) / fps(t["ffmpeg"]))}


def capacity_section(clip_gop2: dict, path_gop2: Path, clip_gop05: dict, path_gop05: Path,
                     prof: Profile, cpu: int) -> dict:
    """Keyframe speed-up and cameras per core (decode + conversion of analysed frames only)."""
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        u2, u05 = str(path_gop2), str(path_gop05)
        t = interleaved({
            "full_all": timed(lambda: camera_stream_count(u2)),
            "full_2": timed(lambda: camera_stream_count(u2, analysis_fps=ANALYSIS_FPS)),
            "key_2s": timed(lambda: camera_stream_count(u2, decode="keyframes")),
            "key_05": timed(lambda: camera_stream_count(u05, decode="keyframes")),
            "full_05": timed(lambda: camera_stream_count(u05, analysis_fps=ANALYSIS_FPS)),
        }, prof.repeat)
    finally:
        os.sched_setaffinity(0, all_cpus)
    full_all, full_2, key_2s, key_05, full_05 = (
        t[k] for k in ("full_all", "full_2", "key_2s", "key_05", "full_05"))

    def per_core(t: Timing, duration_s: float) -> float:
        return duration_s / t.cpu_s  # stream seconds per CPU second = cameras one core sustains

    d2, d05 = clip_gop2["duration_s"], clip_gop05["duration_s"]
    cams_full = per_core(full_2, d2)
    cams_key = per_core(key_05, d05)
    best_mode = "keyframes" if cams_key > cams_full else "all"
    return {
        "keyframe_speedup": rnd(full_all.cpu_s / key_2s.cpu_s, 2),
        "keyframe_speedup_vs_full_sampled_2fps": rnd(full_2.cpu_s / key_2s.cpu_s, 2),
        "keyframe_detail": {
            "clip": clip_gop2["file"], "gop_s": clip_gop2["gop_s"],
            "full_frames_emitted": full_all.frames, "keyframes_emitted": key_2s.frames,
            "full_cpu_s": rnd(full_all.cpu_s), "full_sampled_2fps_cpu_s": rnd(full_2.cpu_s),
            "keyframes_cpu_s": rnd(key_2s.cpu_s),
        },
        "cameras_per_core_at_2fps_full": rnd(cams_full, 1),
        "cameras_per_core_at_2fps_keyframes": rnd(cams_key, 1),
        "cameras_per_core_at_2fps": rnd(max(cams_full, cams_key), 1),
        "cameras_per_core_at_2fps_mode": best_mode,
        "cameras_per_core_detail": {
            "transport": "local files (no RTSP server: serving N 1080p streams with ffmpeg would "
                         "take the second of this machine's 2 cores); demux cost is included, "
                         "network/RTP depacketisation is not",
            "excludes": "detection, tracking and everything after decode: decode of every frame "
                        "the mode needs plus BGR conversion of the analysed frames only",
            "full": {"clip": clip_gop2["file"], "analysed_fps": ANALYSIS_FPS,
                     "cpu_s_per_stream_s": rnd(full_2.cpu_s / d2, 4),
                     "analysed_frames": full_2.frames},
            "full_gop05_clip": {"clip": clip_gop05["file"], "cameras": rnd(per_core(full_05, d05), 1)},
            "keyframes": {"clip": clip_gop05["file"], "gop_s": clip_gop05["gop_s"],
                          "analysed_fps": rnd(key_05.frames / d05, 2),
                          "cpu_s_per_stream_s": rnd(key_05.cpu_s / d05, 4),
                          "note": "keyframe-only decode gives one frame per GOP: 2 fps needs a "
                                  "camera GOP of 0.5 s; at the usual 2 s GOP it gives 0.5 fps"},
            "keyframes_gop2s_at_0_5fps": rnd(per_core(key_2s, d2), 1),
        },
    }


def verify_section(path: Path, n_cameras: int, seconds: float, cpu: int) -> dict:
    """Run ``n_cameras`` realtime CameraStreams (2 fps analysed) on one pinned CPU; do they keep up?"""
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # threads started below inherit the mask
    lateness: dict[int, float] = {}
    counts: dict[int, int] = {}
    streams = [CameraStream(f"cam{i}", SourceOptions(url=str(path), analysis_fps=ANALYSIS_FPS,
                                                     realtime=True)) for i in range(n_cameras)]

    def run(i: int) -> None:
        start = first_t = None
        for frame in streams[i].frames():
            now = time.monotonic()
            if start is None:
                start, first_t = now, frame.time_s
            lateness[i] = (now - start) - (frame.time_s - first_t)
            counts[i] = counts.get(i, 0) + 1

    try:
        threads = [threading.Thread(target=run, args=(i,), name=f"bench-cam{i}") for i in range(n_cameras)]
        c0, w0 = time.process_time(), time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        cpu_used = (time.process_time() - c0) / (time.perf_counter() - w0)
        for s in streams:
            s.stop()
        for t in threads:
            t.join(timeout=10)
    finally:
        os.sched_setaffinity(0, all_cpus)
    expected = ANALYSIS_FPS * seconds
    worst = max(lateness.values(), default=math.inf)
    return {"cameras": n_cameras, "seconds": seconds, "cpu_busy_fraction": rnd(cpu_used, 2),
            "analysed_frames_min": min(counts.values(), default=0), "analysed_frames_expected": expected,
            "worst_lateness_s": rnd(worst, 2),
            "kept_up": bool(worst < 1.0 and min(counts.values(), default=0) >= 0.9 * expected)}


# -- batched detector ------------------------------------------------------------------------------

def make_dynamic_batch(src: Path, dst: Path) -> int:
    """Copy the static-batch YOLOX ONNX with a symbolic batch axis ``N``; return Reshapes fixed.

    The export's three head Reshapes carry a constant ``[1, 85, -1]``; ``0`` copies the input's
    first dimension (ONNX Reshape semantics without ``allowzero``), so they become ``[0, 85, -1]``.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for vi in (*graph.input, *graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del graph.value_info[:]  # stale batch-1 shapes; onnxruntime re-infers them
    inits = {i.name: i for i in graph.initializer}
    fixed = set()
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] in fixed:
            continue
        name = node.input[1]
        if name not in inits:
            raise RuntimeError(f"Reshape {node.name}: shape {name} is not a constant initializer")
        shape = numpy_helper.to_array(inits[name]).copy()
        if shape[0] == 1:
            shape[0] = 0
            inits[name].CopyFrom(numpy_helper.from_array(shape, name))
            fixed.add(name)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return len(fixed)


def read_frames(n: int) -> list[np.ndarray]:
    """``n`` BGR frames of vtest.avi, every 10th frame (varied scenes)."""
    out = []
    for frame in CameraStream("vtest", SourceOptions(url=str(VTEST))).frames():
        if frame.frame_index % 10 == 0:
            out.append(frame.image)
        if len(out) == n:
            break
    return out


def batch_section(prof: Profile, tmp: Path, cpu: int) -> dict:
    """Detector throughput per batch size (all CPUs) and per core (one pinned CPU, one thread)."""
    if not (YOLOX.exists() and VTEST.exists()):
        return {"batch_speedup": None, "batch_skipped": f"{YOLOX} or {VTEST} absent"}
    import onnxruntime as ort

    from detectors.yolox import YoloxOnnxDetector, letterbox

    dyn = tmp / "yolox_nano_dynamic.onnx"
    n_fixed = make_dynamic_batch(YOLOX, dyn)
    frames = read_frames(prof.batch_frames)
    ids = [f"cam{i}" for i in range(len(frames))]

    # Same outputs per frame at batch 1 (static model) and batch 2/4/8 (dynamic copy).
    static = ort.InferenceSession(str(YOLOX), providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(str(dyn), providers=["CPUExecutionProvider"])
    blobs = np.stack([letterbox(f, (416, 416))[0] for f in frames])
    name = static.get_inputs()[0].name
    ref = np.concatenate([static.run(None, {name: blobs[i:i + 1]})[0] for i in range(len(blobs))])
    max_diff = 0.0
    for b in (2, 4, 8):
        if b > len(blobs):
            break
        out = dynamic.run(None, {name: blobs[:b]})[0]
        max_diff = max(max_diff, float(np.abs(out - ref[:b]).max()))
    del static, dynamic

    def throughputs(dets: dict[str, YoloxOnnxDetector], rounds: int) -> dict[str, float]:
        """Frames per wall second of ``detect`` over all frames; rounds interleave detectors."""
        for det in dets.values():
            det.detect(frames[: det.max_batch], ids[: det.max_batch])  # warm-up
        walls: dict[str, list[float]] = {k: [] for k in dets}
        for _ in range(rounds):
            for name, det in dets.items():
                t0 = time.perf_counter()
                det.detect(frames, ids)
                walls[name].append(time.perf_counter() - t0)
        return {k: len(frames) / statistics.median(v) for k, v in walls.items()}

    rounds = max(prof.repeat, 3)
    dets = {str(b): YoloxOnnxDetector(dyn, max_batch=b) for b in prof.batch_sizes}
    dets["static"] = YoloxOnnxDetector(YOLOX)
    got = throughputs(dets, rounds)
    del dets
    static_fps = got.pop("static")
    per_batch = {int(k): v for k, v in got.items()}
    best = max(per_batch, key=per_batch.get)

    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # onnxruntime's pool (1 thread) is created pinned
    try:
        core = throughputs({str(b): YoloxOnnxDetector(dyn, max_batch=b, intra_op_num_threads=1)
                            for b in (1, 8)}, rounds)
    finally:
        os.sched_setaffinity(0, all_cpus)
    return {
        "batch_speedup": rnd(per_batch[best] / per_batch[1]),
        "batch_detail": {
            "model": "YOLOX-Nano 416x416 (shared export, static batch 1) -> dynamic-batch copy",
            "reshapes_fixed": n_fixed, "max_abs_diff_vs_batch1": max_diff,
            "frames": len(frames), "rounds": rounds,
            "threads": f"onnxruntime default ({len(all_cpus)} CPUs)",
            "fps_by_batch": {str(b): rnd(v, 1) for b, v in per_batch.items()},
            "static_model_batch1_fps": rnd(static_fps, 1), "best_batch": best,
            "timed": "YoloxOnnxDetector.detect: letterbox + session.run + decode/NMS",
        },
        "detector_fps_per_core": {"batch1": rnd(core["1"], 1), "batch8": rnd(core["8"], 1),
                                  "threads": "1 onnxruntime thread, pinned to one CPU"},
    }


# -- machine ---------------------------------------------------------------------------------------

def machine_info(cpu: int) -> dict:
    import onnxruntime as ort

    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ffmpeg_cli = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {
        "cpu_model": model, "cores": os.cpu_count(), "affinity_cpus": sorted(os.sched_getaffinity(0)),
        "pinned_cpu": cpu, "python": platform.python_version(), "pyav": av.__version__,
        "pyav_ffmpeg_libs": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "ffmpeg_cli": re.sub(r" Copyright.*", "", ffmpeg_cli), "onnxruntime": ort.__version__,
        "numpy": np.__version__, "timing_basis": "CPU seconds (user+system) of the decoding "
        "process or ffmpeg child, one pinned CPU; detector figures wall time",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object (default: indented JSON)")
    ap.add_argument("--quick", action="store_true", help="tiny clips and batches (smoke test)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per decode measurement (median)")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed", file=sys.stderr)
        return 2
    prof = QUICK if args.quick else FULL
    if args.repeat:
        prof = dataclasses.replace(prof, repeat=args.repeat)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    started = time.perf_counter()
    result: dict = {"mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d"),
                    "machine": machine_info(cpu)}
    result["machine"]["loadavg_1min_start"] = os.getloadavg()[0]
    # as `baqylau run` and its decode workers do at start (ingest.limits.tune_malloc_for_frames)
    from ingest.limits import tune_malloc_for_frames

    result["machine"]["malloc_tuned_for_frames"] = tune_malloc_for_frames()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        log.info("encoding clips")
        gop2, gop05 = 2 * STREAM_FPS, STREAM_FPS // 2
        p2, p05 = tmp / f"h264_{prof.height}p_gop2s.mp4", tmp / f"h264_{prof.height}p_gop0.5s.mp4"
        clip2 = make_clip(p2, prof, gop2)
        clip05 = make_clip(p05, prof, gop05)
        result["clips"] = [clip2, clip05]
        log.info("decode vs ffmpeg")
        result.update(decode_section(p2, prof, cpu))
        result["malloc"] = malloc_section(str(p2), cpu, max(1, prof.repeat // 2))
        if VTEST.exists() and not args.quick:
            result["other_clip"] = other_clip_section(str(VTEST), prof.repeat, cpu)
        log.info("keyframes and cameras per core")
        result.update(capacity_section(clip2, p2, clip05, p05, prof, cpu))
        if prof.verify_s > 0:
            n = max(1, int(0.75 * result["cameras_per_core_at_2fps_full"]))
            log.info("verifying %d concurrent realtime cameras on one CPU", n)
            result["cameras_per_core_verify"] = verify_section(p2, n, prof.verify_s, cpu)
        log.info("batched detector")
        result.update(batch_section(prof, tmp, cpu))
    result["machine"]["loadavg_1min_end"] = os.getloadavg()[0]
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
