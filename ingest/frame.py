"""The decoded-frame record that ingest hands to every later stage."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ingest.errors import ShapeError


def check_array(name: str, value: np.ndarray, ndim: int, dtype: np.dtype | type | None = None,
                shape: tuple[int | None, ...] | None = None) -> None:
    """Check an array field and raise a :class:`ShapeError` naming the field.

    Args:
        name: Field name used in the message, e.g. ``"Frame.image"``.
        value: The array to check.
        ndim: Required number of dimensions.
        dtype: Required dtype, or ``None`` for any.
        shape: Required shape with ``None`` for free axes, or ``None`` to skip.

    Raises:
        ShapeError: When the type, ``ndim``, dtype or shape differ; the message gives the
            expected and the received shape and dtype.
    """
    if not isinstance(value, np.ndarray):
        raise ShapeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    ok = value.ndim == ndim
    if ok and shape is not None:
        ok = all(want is None or want == got for want, got in zip(shape, value.shape))
    if ok and dtype is not None and value.dtype != np.dtype(dtype):
        ok = False
    if not ok:
        want = "x".join("*" if s is None else str(s) for s in shape) if shape else f"{ndim}-d"
        raise ShapeError(
            f"{name}: expected shape ({want}) dtype {np.dtype(dtype) if dtype else 'any'}, "
            f"got shape {value.shape} dtype {value.dtype}"
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame, as handed from ingest to detection.

    Attributes:
        camera_id: Id of the camera (``cameras[i].id`` in the config).
        frame_index: 0-based index of this frame among all frames *decoded* from the
            source since the process started (counts frames that were sampled away too).
        pts: Presentation timestamp in ``time_base`` units, as given by the stream
            (PyAV ``Frame.pts``); ``None`` when the stream gave no timestamp.
        time_base: Seconds per ``pts`` tick (PyAV ``Stream.time_base``).
        time_s: Stream time in seconds, ``pts * time_base`` made continuous by ingest
            (never runs backwards); derived from ``pts``, never from the read-time clock.
        wall_time_s: Wall-clock UTC time of receipt, seconds since the Unix epoch, taken
            from this machine's clock when the frame was decoded.
        image: `(H, W, 3)` uint8, BGR, row-major, origin top-left.
        is_keyframe: Whether the frame was decoded from a key packet.
    """

    camera_id: str
    frame_index: int
    pts: int | None
    time_base: Fraction
    time_s: float
    wall_time_s: float
    image: np.ndarray
    is_keyframe: bool = False

    def __post_init__(self) -> None:
        check_array("Frame.image", self.image, 3, np.uint8, (None, None, 3))

    @property
    def resolution_wh(self) -> tuple[int, int]:
        """Image width and height in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])
