"""Ingest: open video sources (files, RTSP, HTTP), decode with PyAV, sample, hand on frames."""

from ingest.errors import BaqylauError, ShapeError, SourceError, SourceTimeoutError
from ingest.frame import Frame

__all__ = ["BaqylauError", "Frame", "ShapeError", "SourceError", "SourceTimeoutError"]
