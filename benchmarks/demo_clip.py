"""Write the demo's staged street clip: real footage with a staged bin, rubbish, litter and a flood.

The demo's real clips contain none of the scene events (nobody dumps rubbish in PETS09), so
``make demo`` also runs one *staged* camera, built here from real parts (see
:mod:`benchmarks.staging` for what is real and what is staged):

- frames: ``vtest.avi`` (PETS09-S2L1, real), played forward then backward to last
  :data:`DURATION_S`, written at 5 fps as H.264 MP4;
- a real street container (Amsterdam photo) stands on the lawn from the first frame - the bin;
- at :data:`BAGS_AT_S` real black bin bags appear beside it (``bin_overflow``, around the bin);
- at :data:`LITTER_AT_S` a real carton appears at the feet of a real passer-by (PETS09 ground
  truth), who walks on (``littering``, with the tracker's id of that person);
- from :data:`FLOOD_AT_S` a synthetic water sheet (:class:`benchmarks.water.StagedFlood`) spreads
  over the east part of the road, reaching the kerb depth marker (``flooding``, then urgent).

``configs/demo.yaml`` has the matching zones and detectors (camera ``staged-street``). Usage::

    python benchmarks/demo_clip.py OUT.mp4      # ~150 s of video, ~20 s to write on 2 cores

The file is written to a temporary name and renamed, so an interrupted run leaves nothing
half-written; an existing file is kept (``--force`` rewrites it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.staging import cutout, load_clip, paste, pets_gt, place_box, playback_indices  # noqa: E402
from benchmarks.water import StagedFlood  # noqa: E402

log = logging.getLogger("demo_clip")

FPS = 5
DURATION_S = 150.0
#: The staged bin: a real container standing on the lawn, base centre and height, px.
BIN_BASE_XY, BIN_HEIGHT_PX = (120.0, 440.0), 80.0
#: Black bags beside the bin from this time, s.
BAGS_AT_S, BAGS_BASE_XY, BAGS_HEIGHT_PX = 40.0, (200.0, 448.0), 40.0
#: A carton dropped at a passer-by's feet at this time, s (within the ground truth's 40 s).
LITTER_AT_S, LITTER_HEIGHT_PX = 30.0, 20.0
#: The flood: rises from FLOOD_AT_S to FLOOD_FULL_S over the east road.
FLOOD_AT_S, FLOOD_FULL_S = 75.0, 115.0
FLOOD_ZONE_PX = np.float32([[470, 300], [767, 250], [767, 490], [600, 430], [470, 360]])
FLOOD_ORIGIN_XY = (740.0, 470.0)


def litter_spot() -> tuple[float, float]:
    """Feet (bottom-centre, px) of the passer-by nearest the camera on the road at LITTER_AT_S."""
    video_frame = int(round(LITTER_AT_S * 10))  # vtest.avi is 10 fps; GT frame = video frame + 1
    rows = pets_gt()[video_frame + 1]
    feet = np.column_stack([rows[:, 1] + rows[:, 3] / 2, rows[:, 2] + rows[:, 4]])
    on_road = feet[(feet[:, 1] > 215) & (feet[:, 1] < 330) & (feet[:, 0] > 150) & (feet[:, 0] < 600)]
    if not len(on_road):
        raise RuntimeError(f"no passer-by on the road at {LITTER_AT_S} s")
    x, y = on_road[np.argmax(on_road[:, 1])]
    return float(x), float(y)


def write(path: Path) -> Path:
    """Write the staged clip to ``path`` (MP4, H.264, 5 fps, 768x576).

    Raises:
        FileNotFoundError: When ``../shared`` (clip, photos, ground truth) is absent.
    """
    clip = load_clip("square")
    w, h = clip.resolution_wh
    n = int(DURATION_S * FPS)
    order = playback_indices(len(clip.images), n)
    gt = pets_gt()
    container, bags, carton = cutout("container"), cutout("bags_black"), cutout("carton")
    bin_box = place_box(container, BIN_BASE_XY, BIN_HEIGHT_PX)
    bags_box = place_box(bags, BAGS_BASE_XY, BAGS_HEIGHT_PX)
    litter_box = place_box(carton, litter_spot(), LITTER_HEIGHT_PX)
    flood = StagedFlood((w, h), FLOOD_ZONE_PX, FLOOD_ORIGIN_XY, FLOOD_AT_S, FLOOD_FULL_S, max_level=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        stream.time_base = Fraction(1, FPS)
        for i, k in enumerate(order):
            t = i / FPS
            rows = gt.get(int(clip.video_index[k]) + 1)
            people = (np.column_stack([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]]).astype(np.float32)
                      if rows is not None else np.zeros((0, 4), np.float32))
            image = paste(clip.images[k], container, bin_box, people)
            if t >= BAGS_AT_S:
                image = paste(image, bags, bags_box, people)
            if t >= LITTER_AT_S:
                image = paste(image, carton, litter_box, people)
            image = flood.apply(image, t, people)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python benchmarks/demo_clip.py OUT.mp4 [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--force", action="store_true", help="rewrite an existing file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.is_file() and not args.force:
        log.info("%s exists; keeping it (--force rewrites)", args.out)
        return 0
    try:
        write(args.out)
    except FileNotFoundError as exc:
        print(f"demo_clip: {exc}", file=sys.stderr)
        return 2
    log.info("staged demo clip written: %s (%.0f s, bin bags at %.0f s, litter at %.0f s, flood from %.0f s)",
             args.out, DURATION_S, BAGS_AT_S, LITTER_AT_S, FLOOD_AT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
