"""Weights-free fallback detector: moving regions from background subtraction.

Uses OpenCV's MOG2 Gaussian-mixture background model (Zivkovic, "Improved adaptive Gaussian
mixture model for background subtraction", ICPR 2004; ``cv2.createBackgroundSubtractorMOG2``)
with one model per camera. It finds anything that moves (people, cars, swaying trees, light
changes) and nothing that stands still, so it is a stand-in when no model file is available,
not a replacement for a trained detector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from detectors.base import check_batch
from detectors.types import Detections

log = logging.getLogger(__name__)

#: MOG2 marks foreground 255 and shadows 127; pixels above this are kept as foreground.
FOREGROUND_MIN = 200


class MotionDetector:
    """Boxes around moving foreground blobs, one MOG2 background model per camera.

    Every box has ``class_id`` 0 (``class_names == ("motion",)``) and ``conf`` = the fraction
    of the box's pixels that are foreground, so a compact blob scores high and a sparse,
    noisy region scores low.

    Attributes:
        name: ``"motion"``.
        class_names: ``("motion",)``.
        provider: ``"opencv"``.
        max_batch: 1 (frames are processed one by one; batching gains nothing here).
    """

    name = "motion"
    class_names: tuple[str, ...] = ("motion",)
    provider = "opencv"
    max_batch = 1

    def __init__(self, min_area_px: float = 400.0, history: int = 500,
                 var_threshold: float = 16.0, learning_rate: float = -1.0,
                 warmup_frames: int = 10, kernel_px: int = 5) -> None:
        """Set up the detector; background models are created per camera on first use.

        Args:
            min_area_px: Smallest blob (contour area, pixels of the frame as given) reported.
                Lower finds smaller or more distant movers but reports more noise (leaves,
                compression flicker); 400 px is about a 15x30 px person. It is in pixels of
                the input image, so scale it with the resolution.
            history: Frames the background model remembers. Longer keeps a person who stops
                briefly in the foreground longer but adapts more slowly to lighting changes
                and to objects that were moved and stay.
            var_threshold: Squared Mahalanobis distance for a pixel to count as foreground
                (MOG2 ``varThreshold``). Lower is more sensitive (finds low-contrast clothing)
                but fires on sensor noise and compression artefacts; 16 is OpenCV's default.
            learning_rate: Background update rate in [0, 1] per frame; -1 lets MOG2 choose
                ``1 / min(frames seen, history)``. 0 freezes the background; high values
                absorb slow movers into the background.
            warmup_frames: Frames per camera during which the model learns and no boxes are
                returned; too few gives whole-frame false boxes at start-up, too many delays
                detection after a restart.
            kernel_px: Side of the elliptical kernel for the morphological open (removes
                speckle) and close (fills holes in a body). Larger merges nearby people into
                one blob; smaller leaves people split into parts.

        Raises:
            ValueError: When a parameter is out of range.
        """
        if min_area_px < 0 or history < 1 or var_threshold <= 0 or warmup_frames < 0 \
                or kernel_px < 1 or not (learning_rate == -1 or 0 <= learning_rate <= 1):
            raise ValueError(
                f"MotionDetector: bad parameters min_area_px={min_area_px}, history={history}, "
                f"var_threshold={var_threshold}, learning_rate={learning_rate}, "
                f"warmup_frames={warmup_frames}, kernel_px={kernel_px}")
        self.min_area_px = float(min_area_px)
        self.history = history
        self.var_threshold = var_threshold
        self.learning_rate = learning_rate
        self.warmup_frames = warmup_frames
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_px, kernel_px))
        # camera_id -> (subtractor, frames seen, image shape)
        self._state: dict[str, tuple[cv2.BackgroundSubtractorMOG2, int, tuple[int, ...]]] = {}

    def detect(self, images: Sequence[np.ndarray],
               camera_ids: Sequence[str]) -> list[Detections]:
        """Update each camera's background model and return its moving blobs.

        Frames of one camera must come in time order. A camera whose resolution changes
        gets a fresh background model (and a new warm-up).

        Args:
            images: Frames, each `(H, W, 3)` uint8 BGR.
            camera_ids: Camera of each frame.

        Returns:
            One :class:`Detections` per image, pixel ``xyxy`` of the blob bounding boxes,
            ``conf`` float32 in [0, 1], ``class_id`` 0.

        Raises:
            ShapeError: When an image is not `(H, W, 3)` uint8.
            ValueError: When the two sequences differ in length.
        """
        check_batch(images, camera_ids)
        return [self._detect_one(img, cam) for img, cam in zip(images, camera_ids)]

    def reset(self, camera_id: str) -> None:
        """Forget one camera's background model (e.g. after the camera was moved)."""
        self._state.pop(camera_id, None)

    def _detect_one(self, image: np.ndarray, camera_id: str) -> Detections:
        state = self._state.get(camera_id)
        if state is None or state[2] != image.shape:
            if state is not None:
                log.warning("camera %s: resolution changed %s -> %s; background model reset",
                            camera_id, state[2], image.shape)
            sub = cv2.createBackgroundSubtractorMOG2(history=self.history,
                                                     varThreshold=self.var_threshold,
                                                     detectShadows=True)
            state = (sub, 0, image.shape)
        sub, seen, shape = state
        mask = sub.apply(image, learningRate=self.learning_rate)
        self._state[camera_id] = (sub, seen + 1, shape)
        if seen < self.warmup_frames:
            return Detections.empty()
        fg = np.where(mask > FOREGROUND_MIN, np.uint8(255), np.uint8(0))
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._kernel)
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes, confs = [], []
        for contour in contours:
            if cv2.contourArea(contour) < self.min_area_px:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((x, y, x + w, y + h))
            confs.append(cv2.countNonZero(fg[y:y + h, x:x + w]) / float(w * h))
        if not boxes:
            return Detections.empty()
        n = len(boxes)
        return Detections(np.asarray(boxes, np.float32), np.asarray(confs, np.float32),
                          np.zeros(n, np.int32))
