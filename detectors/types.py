"""Detections: the record handed from a detector to the tracker and the rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from ingest.errors import ShapeError
from ingest.frame import check_array


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes found in one frame.

    Empty is zero-length arrays, never ``None``. Instances are immutable: stages return new
    objects (``dataclasses.replace``) rather than writing into their input.

    Attributes:
        xyxy: `(N, 4)` float32, pixel corners ``x1, y1, x2, y2`` in the frame's image,
            origin top-left, y down.
        conf: `(N,)` float32 in [0, 1], detection confidence.
        class_id: `(N,)` int32, index into the detector's class names.
        track_id: `(N,)` int64, tracker id, ``-1`` for untracked.
        data: extra per-row arrays, each with first axis N.

    Raises:
        ShapeError: When an array's shape or dtype differs from the above.
    """

    xyxy: np.ndarray
    conf: np.ndarray
    class_id: np.ndarray
    track_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.track_id is None:
            object.__setattr__(self, "track_id", np.full(len(self.xyxy), -1, dtype=np.int64))
        check_array("Detections.xyxy", self.xyxy, 2, np.float32, (None, 4))
        n = self.xyxy.shape[0]
        check_array("Detections.conf", self.conf, 1, np.float32, (n,))
        check_array("Detections.class_id", self.class_id, 1, np.int32, (n,))
        check_array("Detections.track_id", self.track_id, 1, np.int64, (n,))
        for key, arr in self.data.items():
            if not isinstance(arr, np.ndarray) or arr.shape[:1] != (n,):
                raise ShapeError(f"Detections.data[{key!r}]: expected first axis {n}, got "
                                 f"{getattr(arr, 'shape', type(arr).__name__)}")
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    def __reduce__(self):  # noqa: ANN204 - pickling: MappingProxyType itself does not pickle
        return (Detections, (self.xyxy, self.conf, self.class_id, self.track_id, dict(self.data)))

    @classmethod
    def empty(cls) -> Detections:
        """Return detections with N = 0."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        """Select rows by boolean mask, index array or slice; returns a new object."""
        return Detections(self.xyxy[index], self.conf[index], self.class_id[index],
                          self.track_id[index], {k: v[index] for k, v in self.data.items()})

    def with_track_ids(self, track_id: np.ndarray) -> Detections:
        """Return a copy with ``track_id`` `(N,)` int64 replaced."""
        return replace(self, track_id=np.asarray(track_id, dtype=np.int64), data=dict(self.data))

    def anchors(self, anchor: str = "bottom_center") -> np.ndarray:
        """Return one point per box, `(N, 2)` float32 pixels.

        Args:
            anchor: ``"bottom_center"`` (feet of a person, wheels of a car; the default for
                ground-plane zones) or ``"center"``.

        Raises:
            ValueError: For an unknown anchor name.
        """
        x1, y1, x2, y2 = self.xyxy.T
        if anchor == "bottom_center":
            return np.stack([(x1 + x2) / 2, y2], axis=1).astype(np.float32)
        if anchor == "center":
            return np.stack([(x1 + x2) / 2, (y1 + y2) / 2], axis=1).astype(np.float32)
        raise ValueError(f"unknown anchor {anchor!r}; expected 'bottom_center' or 'center'")
