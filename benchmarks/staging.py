"""Staged scene events on real footage, with labels, for ``benchmarks/scene.py``.

What is real and what is staged:

- **Real**: every frame comes from a real clip of ``../shared/data/videos`` (decoded with PyAV and
  sampled to :data:`ANALYSIS_FPS`); the people and vehicles handed to the detectors come from the
  real object detector (YOLOX-Nano, ``../shared/models/yolox-nano-coco``) and tracker
  (:class:`tracker.bytetrack.ByteTracker`) run on those frames; the pasted objects are real
  objects cut (``cv2.grabCut`` on a hand-chosen rectangle, feathered edge) from real photos in
  ``../shared/data/images`` (Amsterdam street containers and dumped rubbish, MIT; NAVER recycle
  trash, CC BY 4.0, whose class overlays are burned into the pixels - the tint stays on the
  cut-out); for littering, each object appears at the feet of a real person at a moment that
  person walks past (PETS09-S2L1 ground truth for ``vtest.avi`` frames 0-399, else the tracked
  YOLOX box), and the person walks on as in the recording.
- **Staged**: the pasting itself (no shadow, no perspective change beyond scaling, no motion
  blur), the times, the global brightness ramps (a multiplicative gain, linear in time), and the
  flood water, which is :class:`benchmarks.water.StagedFlood` (synthetic, documented there).
- **Longer than the clip**: the detectors learn a zone for ``learn_s`` before reporting and wait
  seconds to minutes before alerting, longer than the clips; scenarios therefore play the clip
  forward and backward ("ping-pong", :func:`playback_indices`), with stream time running on
  continuously. The content is real but repeats; people walk backwards on odd passes.

People/vehicles are detected on the *unedited* frame (cached per clip frame, so the object
detector runs once per clip frame for the whole benchmark): the staged object is not shown to
YOLOX. Persons standing in front of a pasted object occlude it (the object is not drawn inside
their box when their feet are lower in the image than the object's base).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.water import StagedFlood  # noqa: E402
from calibration.zones import Zone  # noqa: E402
from detectors.types import Detections  # noqa: E402
from ingest.frame import Frame  # noqa: E402

log = logging.getLogger(__name__)

#: ``../shared`` beside the repository, or ``$BAQYLAU_SHARED`` (as in tests/conftest.py).
SHARED = Path(os.environ.get("BAQYLAU_SHARED", REPO.parent / "shared")).resolve()
VIDEOS = SHARED / "data" / "videos"
YOLOX_PATH = SHARED / "models" / "yolox-nano-coco" / "yolox_nano.onnx"
PETS_GT = SHARED / "data" / "mot" / "PETS09-S2L1" / "gt-frames-0001-0400.txt"
BINS = SHARED / "data" / "images" / "bins" / "amsterdam-garbage-object-detection"
LITTER = SHARED / "data" / "images" / "litter" / "naver-recycle-trash"

#: Frames analysed per second of stream time, as in the demo configuration.
ANALYSIS_FPS = 5.0
#: Real clips: name -> path. The GIF previews (1.9-4.7 s each) are left out: shorter than any
#: learning period, a detector would never leave learning on them.
CLIPS: dict[str, Path] = {
    "square": VIDEOS / "opencv-samples" / "vtest.avi",  # outdoor campus square, 768x576, 79.5 s
    "hall": VIDEOS / "intel-sample-videos" / "one-by-one-person-detection.mp4",  # indoor, 139.4 s
    "parking": VIDEOS / "intel-sample-videos" / "car-detection.mp4",  # parking lot, 30.2 s
}
#: COCO class names handed to the detectors as people and as vehicles.
PERSON = ("person",)
VEHICLES = ("bicycle", "car", "motorcycle", "bus", "truck")


def _zone(zone_id: str, points: list[tuple[float, float]]) -> Zone:
    return Zone(zone_id, np.asarray(points, np.float32), "px", zone_id)


#: Zones drawn by hand on the first frame of each clip (full-frame px). Bin zones are put on
#: static objects standing in for a bin where the clip has none (said in each comment).
ZONES: dict[str, dict[str, Zone]] = {
    "square": {  # 768x576
        "lawn": _zone("lawn", [(0, 250), (340, 310), (500, 390), (767, 502), (767, 575), (0, 575)]),
        "road": _zone("road", [(0, 206), (330, 200), (560, 186), (680, 130), (767, 112), (767, 478),
                               (500, 380), (340, 300), (0, 238)]),
        "pavement": _zone("pavement", [(0, 146), (330, 166), (395, 176), (330, 200), (0, 200)]),
        # stand-in bins: the boulder on the lawn edge and the lamp-post base
        "bin_boulder": _zone("bin_boulder", [(158, 246), (200, 246), (200, 280), (158, 280)]),
        "around_boulder": _zone("around_boulder", [(120, 232), (240, 232), (240, 305), (120, 305)]),
        "bin_post": _zone("bin_post", [(416, 330), (448, 330), (448, 396), (416, 396)]),
        "around_post": _zone("around_post", [(380, 320), (490, 320), (490, 420), (380, 420)]),
        # a staged bin (a clean Amsterdam container pasted from t=0) on the open lawn
        "bin_staged": _zone("bin_staged", [(236, 404), (316, 404), (316, 476), (236, 476)]),
        "around_staged": _zone("around_staged", [(190, 390), (370, 390), (370, 520), (190, 520)]),
    },
    "hall": {  # 768x432
        "floor": _zone("floor", [(0, 250), (767, 258), (767, 431), (0, 431)]),
        # stand-in bin: the high table's foot
        "bin_table": _zone("bin_table", [(395, 255), (495, 255), (495, 335), (395, 335)]),
        "around_table": _zone("around_table", [(340, 245), (560, 245), (560, 390), (340, 390)]),
        "bin_staged": _zone("bin_staged", [(130, 300), (214, 300), (214, 392), (130, 392)]),
        "around_staged": _zone("around_staged", [(80, 285), (290, 285), (290, 431), (80, 431)]),
    },
    "parking": {  # 768x432
        "lot_west": _zone("lot_west", [(20, 40), (384, 40), (384, 400), (20, 400)]),
        "lot_east": _zone("lot_east", [(384, 40), (748, 40), (748, 400), (384, 400)]),
        "bin_staged": _zone("bin_staged", [(56, 300), (140, 300), (140, 380), (56, 380)]),
        "around_staged": _zone("around_staged", [(20, 280), (220, 280), (220, 400), (20, 400)]),
        # stand-in bin: the painted bay marking at the bottom right corner
        "bin_marking": _zone("bin_marking", [(728, 380), (767, 380), (767, 431), (728, 431)]),
        "around_marking": _zone("around_marking", [(680, 350), (767, 350), (767, 431), (680, 431)]),
    },
}
#: Rim lines (2 points, full-frame px) of the bin zones: the top edge of the (stand-in) bin.
RIMS: dict[tuple[str, str], np.ndarray] = {
    ("square", "bin_boulder"): np.float32([[158, 252], [200, 252]]),
    ("square", "bin_post"): np.float32([[416, 336], [448, 336]]),
    ("square", "bin_staged"): np.float32([[240, 410], [312, 410]]),
    ("hall", "bin_table"): np.float32([[395, 262], [495, 262]]),
    ("hall", "bin_staged"): np.float32([[134, 306], [210, 306]]),
    ("parking", "bin_staged"): np.float32([[60, 306], [136, 306]]),
    ("parking", "bin_marking"): np.float32([[728, 384], [767, 384]]),
}
#: Boxes (xyxy px) of the staged clean container pasted from t=0 into ``bin_staged``.
STAGED_BINS: dict[str, np.ndarray] = {
    "square": np.float32([232, 400, 320, 478]),
    "hall": np.float32([126, 296, 218, 394]),
    "parking": np.float32([52, 296, 144, 384]),
}
#: Zones used by each detector type on the event-free real footage: (zone, around zone or None).
EVENT_FREE_ZONES: dict[str, dict[str, list[tuple[str, str | None]]]] = {
    "bin_overflow": {"square": [("bin_boulder", "around_boulder"), ("bin_post", "around_post")],
                     "hall": [("bin_table", "around_table")],
                     "parking": [("bin_marking", "around_marking")]},
    "litter": {"square": [("lawn", None), ("road", None), ("pavement", None)],
               "hall": [("floor", None)],
               "parking": [("lot_west", None), ("lot_east", None)]},
    "flooding": {"square": [("lawn", None), ("road", None), ("pavement", None)],
                 "hall": [("floor", None)],
                 "parking": [("lot_west", None), ("lot_east", None)]},
}

#: Real objects: name -> (photo, hand-chosen rectangle ``x, y, w, h`` in photo px around it).
OBJECT_RECTS: dict[str, tuple[Path, tuple[int, int, int, int]]] = {
    "carton": (LITTER / "1.jpg", (560, 235, 530, 515)),  # red paper carton on dry ground
    "bag_blue": (LITTER / "3.jpg", (5, 330, 365, 400)),  # plastic bag (blue class tint)
    "bag_teal": (LITTER / "3.jpg", (300, 150, 500, 835)),  # large plastic bag (teal class tint)
    "bags_black": (BINS / "mdc_photo_cdv_photo_012_1464463139152.jpg", (580, 1620, 780, 560)),
    "bag_white": (BINS / "mdc_photo_cdv_photo_012_1464463139152.jpg", (1440, 1775, 380, 405)),
    "box": (BINS / "mdc_photo_cdv_photo_010_1472929852743.jpg", (1420, 1190, 680, 530)),
    "container": (BINS / "mdc_photo_cdv_photo_341_1508952332388.jpg", (560, 880, 730, 640)),
}


@dataclass(frozen=True)
class Cutout:
    """A real object cut from a photo.

    Attributes:
        name: Key of :data:`OBJECT_RECTS`.
        bgr: `(h, w, 3)` uint8 BGR pixels, cropped to the object.
        alpha: `(h, w)` float32 opacity 0..1 (grabCut foreground, edge feathered).
    """

    name: str
    bgr: np.ndarray = field(repr=False)
    alpha: np.ndarray = field(repr=False)


@lru_cache(maxsize=None)
def cutout(name: str) -> Cutout:
    """Cut object ``name`` out of its photo with ``cv2.grabCut`` (Rother et al. 2004, GrabCut).

    The photo is downscaled so its longer side is at most 800 px, grabCut runs 5 iterations
    initialised from the rectangle, the foreground mask is cleaned by a morphological opening
    and feathered with a 2-px Gaussian, and the result is cropped to the mask's bounding box.

    Raises:
        KeyError: For an unknown name.
        FileNotFoundError: When the photo is absent.
    """
    path, (x, y, w, h) = OBJECT_RECTS[name]
    photo = cv2.imread(str(path))
    if photo is None:
        raise FileNotFoundError(f"photo {path} not found")
    s = min(1.0, 800.0 / max(photo.shape[:2]))
    small = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    rect = tuple(int(round(v * s)) for v in (x, y, w, h))
    mask = np.zeros(small.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(small, mask, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n > 1:  # keep the largest blob
        fg = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    ys, xs = np.nonzero(fg)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 2.0)[y0:y1, x0:x1] * fg[y0:y1, x0:x1].clip(0.5, 1)
    return Cutout(name, small[y0:y1, x0:x1].copy(), np.clip(alpha, 0, 1).astype(np.float32))


def place_box(cut: Cutout, base_xy: tuple[float, float], height_px: float) -> np.ndarray:
    """`(4,)` float32 xyxy (full-frame px) of ``cut`` scaled to ``height_px``, base centre at ``base_xy``."""
    h = float(height_px)
    w = h * cut.bgr.shape[1] / cut.bgr.shape[0]
    x, y = base_xy
    return np.float32([x - w / 2, y - h, x + w / 2, y])


def paste(image: np.ndarray, cut: Cutout, box_xyxy: np.ndarray,
          occluders_xyxy: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend ``cut`` into a copy of ``image`` at ``box_xyxy``.

    Args:
        image: `(H, W, 3)` uint8 BGR frame (not modified).
        cut: The object.
        box_xyxy: `(4,)` target box, full-frame px (the cut-out is resized to it).
        occluders_xyxy: `(M, 4)` boxes of people standing in front (feet lower in the image than
            the object's base); the object is not drawn inside them.

    Returns:
        A new `(H, W, 3)` uint8 frame.
    """
    out = image.copy()
    x0, y0, x1, y1 = (int(round(v)) for v in box_xyxy)
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    bgr = cv2.resize(cut.bgr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(cut.alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    if occluders_xyxy is not None:
        for ox0, oy0, ox1, oy1 in occluders_xyxy:
            if oy1 > y1 - 3:  # in front of the object
                a[max(int(oy0) - y0, 0):max(int(oy1) - y0, 0), max(int(ox0) - x0, 0):max(int(ox1) - x0, 0)] = 0
    H, W = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if cx1 <= cx0 or cy1 <= cy0:
        return out
    sub = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    dst = out[cy0:cy1, cx0:cx1].astype(np.float32)
    aa = a[sub][..., None]
    out[cy0:cy1, cx0:cx1] = np.clip(aa * bgr[sub] + (1 - aa) * dst, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Clip:
    """A real clip sampled to :data:`ANALYSIS_FPS`.

    Attributes:
        name: Key of :data:`CLIPS`.
        images: `(H, W, 3)` uint8 BGR frames, in order.
        video_index: Index of each kept frame among all decoded frames of the file.
        times_s: `(N,)` float64 stream time of each kept frame, s.
        resolution_wh: ``(W, H)`` px.
    """

    name: str
    images: list[np.ndarray] = field(repr=False)
    video_index: np.ndarray
    times_s: np.ndarray
    resolution_wh: tuple[int, int]

    @property
    def duration_s(self) -> float:
        """Played length of one pass, s."""
        return len(self.images) / ANALYSIS_FPS


@lru_cache(maxsize=None)
def load_clip(name: str) -> Clip:
    """Decode clip ``name`` and keep one frame per 1/:data:`ANALYSIS_FPS` s of stream time.

    Raises:
        FileNotFoundError: When the clip is absent.
    """
    path = CLIPS[name]
    if not path.is_file():
        raise FileNotFoundError(f"clip {path} not found (set BAQYLAU_SHARED)")
    images, idx, times, next_t = [], [], [], 0.0
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            t = float(frame.time) if frame.time is not None else i / 10.0
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / ANALYSIS_FPS
            images.append(frame.to_ndarray(format="bgr24"))
            idx.append(i)
            times.append(t)
    h, w = images[0].shape[:2]
    return Clip(name, images, np.asarray(idx), np.asarray(times), (w, h))


@lru_cache(maxsize=1)
def _yolox():
    from detectors.yolox import YoloxOnnxDetector

    if not YOLOX_PATH.is_file():
        raise FileNotFoundError(f"YOLOX model {YOLOX_PATH} not found")
    return YoloxOnnxDetector(YOLOX_PATH)


_DETECTIONS: dict[str, list[Detections]] = {}


def clip_detections(name: str) -> list[Detections]:
    """YOLOX-Nano detections (all classes) of each kept frame of clip ``name``, cached."""
    if name not in _DETECTIONS:
        clip, det = load_clip(name), _yolox()
        _DETECTIONS[name] = [det.detect([image])[0] for image in clip.images]
    return _DETECTIONS[name]


def playback_indices(n_clip: int, n_frames: int, pingpong: bool = True) -> np.ndarray:
    """Clip frame index of each analysed frame: forward, then backward, forward... (ping-pong).

    Args:
        n_clip: Kept frames in the clip (>= 2).
        n_frames: Analysed frames wanted.
        pingpong: ``False`` plays the clip once (``n_frames`` is capped at ``n_clip``).

    Returns:
        `(n_frames,)` int64 indices into the clip's frames.
    """
    i = np.arange(n_frames if pingpong else min(n_frames, n_clip))
    period = 2 * (n_clip - 1)
    m = i % period
    return np.where(m < n_clip, m, period - m).astype(np.int64)


def forward_index(n_clip: int, pass_no: int, clip_index: int) -> int:
    """Analysed-frame index at which forward pass ``pass_no`` (0, 2, 4...) shows ``clip_index``."""
    if pass_no % 2:
        raise ValueError(f"pass {pass_no} is a backward pass")
    return pass_no * (n_clip - 1) + clip_index


_TRACKED: dict[str, tuple[list[Detections], list[Detections]]] = {}


def tracked(name: str, n_frames: int) -> tuple[list[Detections], list[Detections]]:
    """Tracked people and vehicles for the first ``n_frames`` of the ping-pong playback of ``name``.

    ByteTrack (one instance, :data:`ANALYSIS_FPS`, project defaults) runs over the cached YOLOX
    detections in playback order; being causal, a longer run's prefix equals a shorter run, so
    the longest run is cached and sliced.

    Returns:
        ``(people, vehicles)``: one :class:`Detections` per analysed frame each, tracked.
    """
    from detectors.coco import COCO80
    from tracker.bytetrack import ByteTracker

    have = _TRACKED.get(name)
    if have is None or len(have[0]) < n_frames:
        dets, clip = clip_detections(name), load_clip(name)
        tracker = ByteTracker(frame_rate=ANALYSIS_FPS)
        person_ids = [COCO80.index(c) for c in PERSON]
        vehicle_ids = [COCO80.index(c) for c in VEHICLES]
        people, vehicles = [], []
        for i, k in enumerate(playback_indices(len(clip.images), n_frames)):
            d = dets[k]
            keep = np.isin(d.class_id, person_ids + vehicle_ids)
            t = tracker.update(d[keep], i / ANALYSIS_FPS)
            people.append(t[np.isin(t.class_id, person_ids)])
            vehicles.append(t[np.isin(t.class_id, vehicle_ids)])
        _TRACKED[name] = have = (people, vehicles)
    return have[0][:n_frames], have[1][:n_frames]


@lru_cache(maxsize=1)
def pets_gt() -> dict[int, np.ndarray]:
    """PETS09-S2L1 ground truth: GT frame (1-based; video frame n-1) -> `(N, 6)` rows id,x,y,w,h,conf."""
    from tracker.mot import read_mot

    return read_mot(PETS_GT)


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class StagedEvent:
    """One labelled staged change.

    Attributes:
        event_id: Unique label id.
        kind: ``"object"`` (a cut-out appears at ``onset_s``), ``"bin_removed"`` (the scenario's
            staged bin disappears at ``onset_s``) or ``"flood"`` (water rises from ``onset_s``).
        alert_type: Alert type this event should raise (``"littering"``, ``"illegal_dumping"``,
            ``"bin_overflow"``, ``"flooding"``); also the type a wrong alert is counted under.
        zone_id: Zone of the detector that should raise it.
        onset_s: Stream time the change appears, s.
        removed_s: Stream time it is taken away again, or ``None`` (stays).
        expect_alert: Whether an alert is expected (``False``: removed before the wait time).
        xyxy: `(4,)` float32 box of the change, full-frame px (the flood: the zone's box).
        object_name: Key of :data:`OBJECT_RECTS` for ``"object"`` events.
        owner_track_xyxy: For littering: the GT/tracked box of the person at onset, px.
        note: Free text (where, who, why).
    """

    event_id: str
    kind: str
    alert_type: str
    zone_id: str
    onset_s: float
    removed_s: float | None
    expect_alert: bool
    xyxy: np.ndarray
    object_name: str = ""
    owner_xyxy: np.ndarray | None = None
    note: str = ""


@dataclass(frozen=True)
class LightRamp:
    """Whole-frame brightness gain going linearly from 1 at ``start_s`` to ``gain`` at ``end_s``."""

    start_s: float
    end_s: float
    gain: float

    def at(self, t_s: float) -> float:
        """Gain at stream time ``t_s``."""
        u = np.clip((t_s - self.start_s) / max(self.end_s - self.start_s, 1e-6), 0.0, 1.0)
        return float(1.0 + (self.gain - 1.0) * u)


@dataclass(frozen=True)
class Scenario:
    """A clip, one detector on one zone, and labelled staged events.

    Attributes:
        scenario_id: Unique id.
        clip: Key of :data:`CLIPS`.
        detector: ``"bin_overflow"``, ``"litter"`` or ``"flooding"``.
        zone_id: The detector's zone (bins: the bin zone).
        around_zone_id: Bins: the ground around the bin, or ``None``.
        duration_s: Stream seconds to play (ping-pong beyond one pass).
        events: Labelled staged events.
        static_objects: ``(object name, xyxy)`` pasted from t=0 (a staged bin), removed by a
            ``"bin_removed"`` event.
        light: Optional brightness ramp (a distractor).
        flood: Optional staged flood (for ``"flood"`` events).
        config: Keyword overrides of the detector config (documented shorter timers).
    """

    scenario_id: str
    clip: str
    detector: str
    zone_id: str
    duration_s: float
    events: tuple[StagedEvent, ...] = ()
    around_zone_id: str | None = None
    static_objects: tuple[tuple[str, np.ndarray], ...] = ()
    light: LightRamp | None = None
    flood: StagedFlood | None = None
    config: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Analysed frames."""
        return int(round(self.duration_s * ANALYSIS_FPS))


def scenario_frames(sc: Scenario) -> Iterator[tuple[Frame, Detections, Detections]]:
    """Yield the edited real frames of ``sc`` with the tracked people and vehicles.

    Yields:
        ``(frame, people, vehicles)``; ``frame.time_s`` = analysed index / :data:`ANALYSIS_FPS`,
        ``frame.image`` the real clip frame with the scenario's objects, water and light applied.
    """
    clip = load_clip(sc.clip)
    people, vehicles = tracked(sc.clip, sc.n_frames)
    order = playback_indices(len(clip.images), sc.n_frames)
    removed_bin = min((e.onset_s for e in sc.events if e.kind == "bin_removed"), default=np.inf)
    for i, k in enumerate(order):
        t = i / ANALYSIS_FPS
        image = clip.images[k]
        occ = people[i].xyxy
        if sc.flood is not None and t >= sc.flood.onset_s:
            image = sc.flood.apply(image, t)
        if t < removed_bin:
            for name, box in sc.static_objects:
                image = paste(image, cutout(name), box, occ)
        for e in sc.events:
            if e.kind == "object" and e.onset_s <= t and (e.removed_s is None or t < e.removed_s):
                image = paste(image, cutout(e.object_name), e.xyxy, occ)
        if sc.light is not None:
            g = sc.light.at(t)
            if g != 1.0:
                image = cv2.convertScaleAbs(image, alpha=g, beta=0)
        frame = Frame(sc.clip, i, i, Fraction(1, int(ANALYSIS_FPS)), t, t, image)
        yield frame, people[i], vehicles[i]


def passers(clip_name: str, zone: Zone, min_walk_px: float = 60.0) -> list[tuple[int, int, np.ndarray]]:
    """Moments a real person walks through ``zone`` on the first forward pass.

    For ``vtest.avi`` (square) frames 0-399 the PETS09-S2L1 ground truth gives the boxes (track
    ids + 100000); elsewhere the tracked YOLOX boxes. A moment qualifies when the person's feet are in
    the zone and 6 s later they are at least ``min_walk_px`` away (they walk on and leave it).

    Returns:
        ``(clip frame index, track id, (4,) xyxy box)`` tuples in time order.
    """
    clip = load_clip(clip_name)
    n = len(clip.images)
    boxes: dict[int, dict[int, np.ndarray]] = {}  # clip index -> track id -> xyxy
    people, _ = tracked(clip_name, n)
    gt = pets_gt() if clip_name == "square" and PETS_GT.is_file() else {}
    for k in range(n):
        rows = gt.get(int(clip.video_index[k]) + 1)
        if rows is not None:  # GT ids offset so they never equal tracker ids
            boxes[k] = {100000 + int(r[0]): np.float32([r[1], r[2], r[1] + r[3], r[2] + r[4]]) for r in rows}
        else:
            boxes[k] = {int(tid): b for tid, b in zip(people[k].track_id, people[k].xyxy) if tid >= 0}
    out = []
    ahead = int(6 * ANALYSIS_FPS)
    for k in sorted(boxes):
        for tid, b in boxes[k].items():
            feet = np.float32([[(b[0] + b[2]) / 2, b[3]]])
            later = boxes.get(k + ahead, {}).get(tid)
            if later is None or not zone.contains(feet, clip.resolution_wh)[0]:
                continue
            if np.hypot((later[0] + later[2]) / 2 - feet[0, 0], later[3] - feet[0, 1]) >= min_walk_px:
                out.append((k, tid, b))
    return out
