"""MOTChallenge text files: write tracker output, read ground truth and results.

Format (Milan et al., "MOT16: A Benchmark for Multi-Object Tracking", arXiv:1603.00831, and
motchallenge.net): one box per line, ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,x,y,z``;
``frame`` 1-based, boxes in pixels with origin top-left; ``x,y,z`` are -1 in 2-D results.
In ground truth, ``conf`` 0 marks an entry to ignore in evaluation.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from detectors.types import Detections

#: Columns of the arrays returned by :func:`read_mot` and :func:`detections_to_mot`.
MOT_COLUMNS = ("id", "bb_left", "bb_top", "bb_width", "bb_height", "conf")


def detections_to_mot(detections: Detections) -> np.ndarray:
    """Convert detections to MOT rows.

    Returns:
        `(N, 6)` float64 ``id, bb_left, bb_top, bb_width, bb_height, conf`` (pixels; id -1
        for untracked rows).
    """
    xyxy = detections.xyxy.astype(np.float64)
    return np.column_stack([detections.track_id.astype(np.float64), xyxy[:, :2],
                            xyxy[:, 2:] - xyxy[:, :2], detections.conf.astype(np.float64)])


class MotWriter:
    """Writes tracker output as a MOTChallenge CSV file, like a text file object.

    The file is created (parents too) when the writer is constructed; use it as a context
    manager or call :meth:`close`.

    Example::

        with MotWriter("out/cam1.txt") as mot:
            mot.write(frame_index + 1, tracked)
    """

    def __init__(self, path: str | Path) -> None:
        """Create (truncate) the file.

        Raises:
            OSError: When the file cannot be created.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", encoding="ascii", newline="\n")

    def __enter__(self) -> MotWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the file; further writes raise. Safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, frame: int, detections: Detections) -> None:
        """Append one frame's rows.

        Args:
            frame: 1-based frame number (MOTChallenge convention: video frame index + 1).
            detections: Rows to write; ``track_id`` -1 is written as id -1.

        Raises:
            ValueError: When ``frame`` < 1 or the writer is closed.
        """
        if self._file is None:
            raise ValueError(f"MotWriter({self.path}) is closed")
        if frame < 1:
            raise ValueError(f"MOT frame numbers are 1-based, got {frame}")
        for tid, left, top, w, h, conf in detections_to_mot(detections):
            self._file.write(f"{frame},{int(tid)},{left:.2f},{top:.2f},{w:.2f},{h:.2f},"
                             f"{conf:.4f},-1,-1,-1\n")


def read_mot(path: str | Path) -> dict[int, np.ndarray]:
    """Read a MOTChallenge ground-truth or result file.

    Args:
        path: Text file, comma-separated, at least 7 columns per line; blank lines skipped.

    Returns:
        Frame number (1-based) -> `(N, 6)` float64 rows ``id, bb_left, bb_top, bb_width,
        bb_height, conf`` in file order; frames without boxes are absent.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When a line has fewer than 7 numeric fields.
    """
    frames: dict[int, list[list[float]]] = {}
    with Path(path).open(encoding="ascii") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                fields = [float(v) for v in line.split(",")]
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not a MOT line: {line.strip()!r}") from exc
            if len(fields) < 7:
                raise ValueError(f"{path}:{lineno}: expected >= 7 fields, got {len(fields)}")
            frames.setdefault(int(fields[0]), []).append(fields[1:7])
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 6) for k, v in frames.items()}
