"""Crop quality and the few best crops of each track, for sightings and re-ID.

A track passes through many frames; only a few crops are embedded and shown to an
investigator. They should be large, sharp, whole (not cut by the frame edge) and not covered by
other people.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.types import Detections
from ingest.errors import ShapeError
from ingest.frame import check_array

log = logging.getLogger(__name__)

#: Box height in pixels at which the size term saturates at 1: OSNet's input is 256x128 and a
#: 128 px tall person already shows clothes and build; smaller crops are upsampled blur.
FULL_HEIGHT_PX = 128.0
#: Variance of the Laplacian at which the sharpness term is 0.5 (term = v / (v + this)). The
#: variance-of-Laplacian focus measure is from Pech-Pacheco et al., "Diatom autofocusing in
#: brightfield microscopy: a comparative study", ICPR 2000; 100 is the blur threshold commonly
#: used on 8-bit images (pyimagesearch, "Blur detection with OpenCV", 2015). Lower values favour
#: size over focus.
SHARPNESS_HALF = 100.0
#: Factor applied to a box within :data:`EDGE_MARGIN_PX` of the frame border: a cut person is
#: still better than nothing, but any whole crop of similar size should win.
EDGE_FACTOR = 0.5
#: Distance from the frame border in pixels under which a box counts as cut by the edge.
EDGE_MARGIN_PX = 2.0


def _check_box(name: str, xyxy: np.ndarray) -> np.ndarray:
    box = np.asarray(xyxy, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ShapeError(f"{name}: expected 4 finite numbers (x0, y0, x1, y1), got {xyxy!r}")
    return box


def crop_quality(image: np.ndarray, xyxy: Sequence[float] | np.ndarray,
                 others_xyxy: np.ndarray | Sequence[Sequence[float]] = ()) -> float:
    """Score how useful the crop of one box is for re-identification and display.

    The score is the product of four terms in [0, 1]: size ``min(1, h / FULL_HEIGHT_PX)`` on
    the box height inside the frame; sharpness ``v / (v + SHARPNESS_HALF)`` with ``v`` the
    variance of the Laplacian of the grey crop; ``EDGE_FACTOR`` when the box reaches within
    ``EDGE_MARGIN_PX`` of the frame border (else 1); and the share of the box not covered by
    the union of the other boxes.

    Args:
        image: The frame, `(H, W, 3)` uint8 BGR.
        xyxy: The box `(4,)` in pixels of ``image`` (origin top-left, y down).
        others_xyxy: `(M, 4)` boxes of the other objects in the same frame, same frame of
            reference (the box itself must not be among them); may be empty.

    Returns:
        Quality in [0, 1]; 0 for a box with no area inside the frame.

    Raises:
        ShapeError: When ``image`` is not `(H, W, 3)` uint8 or a box is not 4 finite numbers.
    """
    check_array("image", image, 3, np.uint8, (None, None, 3))
    box = _check_box("xyxy", xyxy)
    others = np.asarray(others_xyxy, dtype=np.float64).reshape(-1, 4) if len(others_xyxy) else \
        np.zeros((0, 4))
    img_h, img_w = image.shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), img_w), min(int(np.ceil(box[3])), img_h)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    size = min(1.0, (y1 - y0) / FULL_HEIGHT_PX)
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    variance = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    sharpness = variance / (variance + SHARPNESS_HALF)
    cut = (box[0] < EDGE_MARGIN_PX or box[1] < EDGE_MARGIN_PX
           or box[2] > img_w - EDGE_MARGIN_PX or box[3] > img_h - EDGE_MARGIN_PX)
    covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for ox0, oy0, ox1, oy1 in others:
        cx0, cy0 = max(int(np.floor(ox0)) - x0, 0), max(int(np.floor(oy0)) - y0, 0)
        cx1, cy1 = min(int(np.ceil(ox1)) - x0, x1 - x0), min(int(np.ceil(oy1)) - y0, y1 - y0)
        if cx1 > cx0 and cy1 > cy0:
            covered[cy0:cy1, cx0:cx1] = True
    visible = 1.0 - float(covered.mean())
    return size * sharpness * visible * (EDGE_FACTOR if cut else 1.0)


@dataclass(frozen=True, slots=True)
class ScoredCrop:
    """One kept crop of a track.

    Attributes:
        quality: :func:`crop_quality` score in [0, 1].
        crop: `(h, w, 3)` uint8 BGR, a copy of the box's pixels clipped to the frame.
        xyxy: `(4,)` float32 box in frame pixels, as offered (not clipped).
        time_s: Stream time of the frame in seconds, when given.
        frame_index: Index of the frame in its stream, when given.
    """

    quality: float
    crop: np.ndarray
    xyxy: np.ndarray
    time_s: float | None = None
    frame_index: int | None = None


class BestCrops:
    """Keep the ``k`` best crops (by :func:`crop_quality`) of each track.

    Pixels are copied only when a crop enters a track's top ``k``, so offering every frame
    costs one quality computation per box. Not thread-safe; one instance per camera.
    """

    def __init__(self, k: int = 3, min_quality: float = 0.0, min_gap_s: float = 0.0) -> None:
        """Create an empty keeper.

        Args:
            k: Crops kept per track, >= 1.
            min_quality: Crops scoring below this are never kept, in [0, 1]; higher keeps
                tracks seen only as tiny or hidden boxes without any crop.
            min_gap_s: Kept crops of a track are at least this far apart in stream time (a
                better crop replaces the kept ones closer than this), so the ``k`` crops show
                the person at different moments: one static occluder (a sign, a pole) or one
                odd pose then spoils one crop, not all. 0 keeps the ``k`` best regardless.

        Raises:
            ValueError: When ``k`` < 1 or ``min_quality`` is outside [0, 1].
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= min_quality <= 1.0:
            raise ValueError(f"min_quality must be in [0, 1], got {min_quality}")
        if not min_gap_s >= 0.0:
            raise ValueError(f"min_gap_s must be >= 0, got {min_gap_s}")
        self.k = k
        self.min_quality = min_quality
        self.min_gap_s = float(min_gap_s)
        self._heaps: dict[int, list[tuple[float, int, ScoredCrop]]] = {}
        self._order = itertools.count()

    def offer(self, track_id: int, image: np.ndarray, xyxy: Sequence[float] | np.ndarray,
              others_xyxy: np.ndarray | Sequence[Sequence[float]] = (), *,
              time_s: float | None = None, frame_index: int | None = None) -> bool:
        """Score one box of a track and keep a copy of its crop if it is among the best ``k``.

        Args:
            track_id: Track the box belongs to.
            image: The frame, `(H, W, 3)` uint8 BGR; not kept, only the crop is copied.
            xyxy: `(4,)` box in frame pixels.
            others_xyxy: `(M, 4)` other boxes of the frame (see :func:`crop_quality`).
            time_s: Stream time of the frame in seconds, stored with the crop.
            frame_index: Frame index, stored with the crop.

        Returns:
            Whether the crop was kept.

        Raises:
            ShapeError: As :func:`crop_quality`.
        """
        quality = crop_quality(image, xyxy, others_xyxy)
        heap = self._heaps.setdefault(int(track_id), [])
        if quality <= 0.0 or quality < self.min_quality:
            return False
        near: list[int] = []
        if self.min_gap_s > 0 and time_s is not None:
            near = [j for j, (_, _, it) in enumerate(heap)
                    if it.time_s is not None and abs(it.time_s - time_s) < self.min_gap_s]
            if any(quality <= heap[j][0] for j in near):
                return False
        if not near and len(heap) >= self.k and quality <= heap[0][0]:
            return False
        box = np.asarray(xyxy, dtype=np.float32).copy()
        h, w = image.shape[:2]
        x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
        item = ScoredCrop(quality, image[y0:y1, x0:x1].copy(), box, time_s, frame_index)
        entry = (quality, next(self._order), item)
        if near:  # replaces every kept crop too close in time (all of them worse)
            for j in sorted(near, reverse=True):
                heap.pop(j)
            heapq.heapify(heap)
        if len(heap) < self.k:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)
        return True

    def offer_detections(self, image: np.ndarray, detections: Detections, *,
                         time_s: float | None = None, frame_index: int | None = None) -> int:
        """Offer every tracked box of one frame; the other boxes of the frame count as occluders.

        Args:
            image: The frame the detections were made on, `(H, W, 3)` uint8 BGR.
            detections: Boxes of that frame; rows with ``track_id`` -1 are occluders only.
            time_s: Stream time of the frame in seconds.
            frame_index: Frame index.

        Returns:
            How many crops were kept.
        """
        boxes = detections.xyxy
        kept = 0
        for i in range(len(detections)):
            if detections.track_id[i] < 0:
                continue
            others = np.delete(boxes, i, axis=0)
            kept += self.offer(int(detections.track_id[i]), image, boxes[i], others,
                               time_s=time_s, frame_index=frame_index)
        return kept

    def best(self, track_id: int) -> list[ScoredCrop]:
        """The kept crops of a track, best first (empty for an unknown track)."""
        return [item for _, _, item in sorted(self._heaps.get(int(track_id), []), reverse=True)]

    def pop(self, track_id: int) -> list[ScoredCrop]:
        """Return :meth:`best` for a finished track and forget it."""
        crops = self.best(track_id)
        self._heaps.pop(int(track_id), None)
        return crops

    @property
    def track_ids(self) -> list[int]:
        """Tracks with at least one offered box, in first-offer order."""
        return list(self._heaps)
