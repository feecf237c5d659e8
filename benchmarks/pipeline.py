"""Pipeline benchmark: plain ffmpeg decode vs our decode vs the full pipeline, per demo camera.

Runs, in one process and one session, for every camera of ``configs/demo.yaml``:

1. ``ffmpeg -threads 1 -i CLIP -f null -`` (the baseline): decode fps, median of ``--repeat``;
2. our decode only (``ingest.CameraStream``, every frame converted to BGR, no analysis);
3. the full pipeline (decode, sampling to ``analysis_fps``, YOLOX, ByteTrack, zone rules,
   alerts into a throw-away data folder) on that camera alone, to EOF;
4. the full pipeline on all cameras together.

Prints a Markdown table with fps and ratios to the baseline; paste it into RESULTS.md.
Usage: ``.venv/bin/python benchmarks/pipeline.py [--config configs/demo.yaml] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baqylau.config import Config, load_config  # noqa: E402
from baqylau.runner import Pipeline  # noqa: E402
from ingest.source import CameraStream, SourceOptions  # noqa: E402


def ffmpeg_decode_s(clip: str) -> float:
    """Wall seconds for ``ffmpeg -threads 1 -i clip -f null -``."""
    t0 = time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", clip, "-f", "null", "-"],
                   check=True)
    return time.perf_counter() - t0


def our_decode(clip: str) -> tuple[int, float]:
    """Frames and wall seconds for our decode path (all frames to BGR, no sampling)."""
    stream = CameraStream("bench", SourceOptions(url=clip, analysis_fps=None))
    t0 = time.perf_counter()
    n = sum(1 for _ in stream.frames())
    return n, time.perf_counter() - t0


def pipeline_run(cfg: Config, camera_ids: list[str]) -> tuple[dict, float]:
    """Run the pipeline on some cameras of ``cfg`` to EOF; return summary and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        sub = cfg.model_copy(update={
            "data_dir": tmp, "cameras": [c for c in cfg.cameras if c.id in camera_ids]})
        pipe = Pipeline(sub, until_eof=True)
        t0 = time.perf_counter()
        summary = pipe.run()
        return summary, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--repeat", type=int, default=3, help="runs of each decode measurement (median)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from ingest.limits import tune_malloc_for_frames

    tune_malloc_for_frames()  # as `baqylau run` does
    cfg = load_config(args.config)
    for cam in cfg.cameras:
        if not Path(cam.url).exists():
            print(f"clip {cam.url} is absent: set BAQYLAU_SAMPLES", file=sys.stderr)
            return 2

    rows = []
    for cam in cfg.cameras:
        base = statistics.median(ffmpeg_decode_s(cam.url) for _ in range(args.repeat))
        ours = [our_decode(cam.url) for _ in range(args.repeat)]
        frames = ours[0][0]
        ours_s = statistics.median(t for _, t in ours)
        summary, full_s = pipeline_run(cfg, [cam.id])
        s = summary[cam.id]
        rows.append((cam.id, frames, cam.analysis_fps, frames / base, frames / ours_s,
                     s["frames_decoded"] / full_s, s["frames_analysed"] / full_s, s["alerts"]))
    summary, all_s = pipeline_run(cfg, [c.id for c in cfg.cameras])
    total_frames = sum(s["frames_decoded"] for s in summary.values())
    total_analysed = sum(s["frames_analysed"] for s in summary.values())

    import onnxruntime

    print(f"# pipeline benchmark, {time.strftime('%Y-%m-%d')}")
    from baqylau.runner import build_detector

    det = build_detector(cfg)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, detector {det.name} on "
          f"{det.provider} (batch {det.max_batch}); decode figures are medians of {args.repeat} runs\n")
    print("| camera | frames | analysis fps (config) | ffmpeg -threads 1 decode fps | our decode fps | "
          "ours / ffmpeg | pipeline decoded fps | pipeline / ffmpeg | pipeline analysed fps | alerts |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cid, n, afps, ff, ours_fps, full_dec, full_an, alerts in rows:
        print(f"| {cid} | {n} | {afps} | {ff:.0f} | {ours_fps:.0f} | {ours_fps / ff:.2f} | "
              f"{full_dec:.0f} | {full_dec / ff:.2f} | {full_an:.1f} | {alerts} |")
    print(f"\nall {len(cfg.cameras)} cameras together: {total_frames} frames decoded and "
          f"{total_analysed} analysed in {all_s:.1f} s = {total_frames / all_s:.0f} decoded fps, "
          f"{total_analysed / all_s:.1f} analysed fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
