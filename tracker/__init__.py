"""Multi-object tracking (ByteTrack) and MOTChallenge file I/O and evaluation."""

from tracker.bytetrack import ByteTracker
from tracker.mot import MotWriter, detections_to_mot, read_mot

__all__ = ["ByteTracker", "MotWriter", "detections_to_mot", "read_mot"]
