"""Ingest: open video sources (files, RTSP, HTTP), decode with PyAV, sample, hand on frames."""

from ingest.errors import BaqylauError, ShapeError, SourceError, SourceTimeoutError
from ingest.frame import Frame
from ingest.limits import OpenFilesLimitError, raise_open_files_limit
from ingest.queues import FrameQueue, QueueClosedError
from ingest.reader import CameraReader
from ingest.source import (CameraStream, SourceOptions, SourceOptionsError, SourceStats,
                           ffmpeg_log_bridge_enabled, is_live_url, to_bgr)

__all__ = [
    "BaqylauError",
    "CameraReader",
    "CameraStream",
    "Frame",
    "FrameQueue",
    "OpenFilesLimitError",
    "QueueClosedError",
    "ShapeError",
    "SourceError",
    "SourceOptions",
    "SourceOptionsError",
    "SourceStats",
    "SourceTimeoutError",
    "ffmpeg_log_bridge_enabled",
    "is_live_url",
    "raise_open_files_limit",
    "to_bgr",
]
