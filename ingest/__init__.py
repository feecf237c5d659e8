"""Ingest: open video sources (files, RTSP, HTTP), decode with PyAV, sample, hand on frames."""

from ingest.errors import BaqylauError, ShapeError, SourceError, SourceTimeoutError
from ingest.frame import Frame
from ingest.queues import FrameQueue, QueueClosedError
from ingest.reader import CameraReader
from ingest.source import (CameraStream, SourceOptions, SourceOptionsError, SourceStats,
                           is_live_url)

__all__ = [
    "BaqylauError",
    "CameraReader",
    "CameraStream",
    "Frame",
    "FrameQueue",
    "QueueClosedError",
    "ShapeError",
    "SourceError",
    "SourceOptions",
    "SourceOptionsError",
    "SourceStats",
    "SourceTimeoutError",
    "is_live_url",
]
