"""The detector interface shared by every model adapter, and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from detectors.types import Detections
from ingest.errors import BaqylauError, ShapeError
from ingest.frame import check_array


class DetectorError(BaqylauError, RuntimeError):
    """A detector cannot be built or cannot run (bad model, failed inference)."""


class ModelNotFoundError(DetectorError, FileNotFoundError):
    """The model file given to a detector does not exist."""


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs from an object detector.

    Attributes:
        name: Short name for logs and events, e.g. ``"yolox_nano"`` or ``"motion"``.
        class_names: Name of each class, indexed by ``Detections.class_id``.
        provider: Execution provider the model really runs on (an onnxruntime provider
            name such as ``"CPUExecutionProvider"``), or ``"opencv"`` for the motion detector.
        max_batch: Most images one ``detect`` call sends to the model at once; larger
            lists are split. ``1`` means the model runs image by image.
    """

    name: str
    class_names: tuple[str, ...]
    provider: str
    max_batch: int

    def detect(self, images: Sequence[np.ndarray],
               camera_ids: Sequence[str]) -> list[Detections]:
        """Detect objects in a batch of frames, possibly from several cameras.

        Args:
            images: Frames, each `(H, W, 3)` uint8 BGR; each may have its own size.
            camera_ids: Camera id of each image, same length as ``images``; stateful
                detectors (background subtraction) keep their state per camera.

        Returns:
            One :class:`Detections` per image, in the same order, with boxes in pixel
            coordinates of that image (origin top-left, y down), ``track_id`` all -1.

        Raises:
            ShapeError: When an image is not `(H, W, 3)` uint8.
            ValueError: When ``camera_ids`` and ``images`` differ in length.
            DetectorError: When inference fails.
        """
        ...


def check_batch(images: Sequence[np.ndarray], camera_ids: Sequence[str]) -> None:
    """Check the arguments of :meth:`Detector.detect`.

    Raises:
        ValueError: When the two sequences differ in length.
        ShapeError: When an image is not a `(H, W, 3)` uint8 array with H, W > 0.
    """
    if len(images) != len(camera_ids):
        raise ValueError(f"detect: got {len(images)} images but {len(camera_ids)} camera_ids")
    for i, image in enumerate(images):
        check_array(f"images[{i}]", image, 3, np.uint8, (None, None, 3))
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ShapeError(f"images[{i}]: empty image of shape {image.shape}")
