"""Multi-object tracking by ByteTrack, behind the project's :class:`Detections` type.

ByteTrack: Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box",
ECCV 2022 (arXiv:2110.06864). Implementation: Roboflow ``trackers.ByteTrackTracker``
(Apache-2.0), which keeps its id counter per instance, so each camera's tracker numbers its
tracks from 1 independently of the others.
"""

from __future__ import annotations

import math

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from detectors.types import Detections

#: Roboflow ``trackers`` expresses its lost-track buffer in frames at this reference rate.
_TRACKERS_REFERENCE_FPS = 30.0


class ByteTracker:
    """ByteTrack for one camera: assigns persistent ids to detections frame by frame.

    With ``class_aware=True`` (the default) each class gets its own ByteTrack instance, so a
    person's track is never continued by a car's box; ids still come from one counter per
    camera (1, 2, 3, ... across all classes). With ``class_aware=False`` one instance matches
    boxes of any class (the original ByteTrack behaviour).

    Defaults were chosen by measurement on PETS09-S2L1 frames 1-400 at 10 fps (MOTChallenge
    ground truth) with YOLOX-nano persons at ``conf_threshold=0.3``: activation and high
    thresholds 0.6 with 3 frames to confirm gave HOTA 0.50, IDF1 0.67, MOTA 0.70, against
    0.44 / 0.55 / 0.63 with thresholds 0.5 and 2 frames; 0.7 was no better (0.505 HOTA, fewer
    tracks of partly hidden people). The lost-track buffer (1-6 s) and the IoU threshold
    (0.1-0.3) changed little. See ``tests/tracker/test_quality_pets09.py`` and
    ``tests/tracker/metrics_pets09.json``.

    Attributes:
        frame_rate: Nominal analysis rate in frames per second.
    """

    def __init__(self, frame_rate: float, lost_track_buffer_s: float = 3.0,
                 track_activation_threshold: float = 0.6, high_conf_det_threshold: float = 0.6,
                 minimum_iou_threshold: float = 0.1, minimum_consecutive_frames: int = 3,
                 class_aware: bool = True) -> None:
        """Create an empty tracker; its first confirmed track gets id 1.

        Args:
            frame_rate: Rate at which ``update`` is called (the analysis fps after frame
                sampling), > 0. Scales the Kalman motion model between calls when no
                timestamps are given, and sets the lost-track buffer in frames.
            lost_track_buffer_s: Seconds a track survives without a matching detection.
                Longer bridges occlusions (a person behind a lamp post keeps their id) but
                keeps ghosts of people who left, which may steal the id of a newcomer.
            track_activation_threshold: Minimum detection confidence in [0, 1] to start a
                new track. Higher avoids tracks on false detections but starts tracks of
                hard-to-see people later or never.
            high_conf_det_threshold: Confidence in [0, 1] splitting ByteTrack's first
                association (high-confidence boxes) from its second (low-confidence boxes
                may only continue existing tracks). Higher makes the tracker more
                conservative; lower lets doubtful boxes take part in the first match.
            minimum_iou_threshold: Smallest IoU in [0, 1] between a predicted track box and
                a detection to match them. Higher avoids jumping to a neighbour but loses
                fast movers and tracks at low frame rates; lower is the reverse.
            minimum_consecutive_frames: Matched frames in a row before a new track is
                confirmed and gets an id (>= 1). Higher suppresses ids from one-frame false
                detections but reports each person that many frames later.
            class_aware: One ByteTrack instance per ``class_id`` (True) or one for all.

        Raises:
            ValueError: When a value is out of range.
        """
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ValueError(f"frame_rate must be a finite positive fps, got {frame_rate}")
        if lost_track_buffer_s < 0:
            raise ValueError(f"lost_track_buffer_s must be >= 0, got {lost_track_buffer_s}")
        for label, value in (("track_activation_threshold", track_activation_threshold),
                             ("high_conf_det_threshold", high_conf_det_threshold),
                             ("minimum_iou_threshold", minimum_iou_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        if minimum_consecutive_frames < 1:
            raise ValueError(f"minimum_consecutive_frames must be >= 1, "
                             f"got {minimum_consecutive_frames}")
        self.frame_rate = float(frame_rate)
        self.class_aware = bool(class_aware)
        self._kwargs = dict(
            lost_track_buffer=round(lost_track_buffer_s * _TRACKERS_REFERENCE_FPS),
            frame_rate=self.frame_rate,
            track_activation_threshold=track_activation_threshold,
            minimum_consecutive_frames=minimum_consecutive_frames,
            minimum_iou_threshold=minimum_iou_threshold,
            high_conf_det_threshold=high_conf_det_threshold,
        )
        self._trackers: dict[int, ByteTrackTracker] = {}  # class_id (or -1 for all) -> tracker
        self._ids: dict[tuple[int, int], int] = {}  # (group, library id) -> our id
        self._max_id = 0
        self._updates = 0

    @property
    def tracks_started(self) -> int:
        """Number of distinct confirmed track ids handed out so far (ids are 1..this)."""
        return self._max_id

    def update(self, detections: Detections, time_s: float | None = None) -> Detections:
        """Advance the tracker by one frame.

        Args:
            detections: This frame's detections (pixel ``xyxy``); not modified.
            time_s: Stream time of the frame in seconds (``Frame.time_s``), strictly
                increasing from call to call. When given, the motion model and the
                lost-track buffer use the real gap between frames, so skipped or dropped
                frames are handled; ``None`` assumes exactly ``1 / frame_rate`` between
                calls. Do not mix the two modes within one tracker. A time earlier than
                the previous one is ignored by the library (with a ``UserWarning``) and
                the frame yields no tracked rows.

        Returns:
            A new :class:`Detections` with only the rows that belong to a confirmed track,
            in input order, with ``track_id`` >= 1 and ``xyxy``, ``conf``, ``class_id`` and
            ``data`` taken unchanged from the input rows.
        """
        groups = detections.class_id if self.class_aware else np.full(len(detections), -1, np.int32)
        for g in np.unique(groups).tolist():
            if g not in self._trackers:
                self._trackers[g] = ByteTrackTracker(**self._kwargs)
        rows_out: list[np.ndarray] = []
        ids_out: list[np.ndarray] = []
        for g, lib in self._trackers.items():  # every group, so idle tracks age too
            rows = np.flatnonzero(groups == g)
            sv_dets = sv.Detections(
                xyxy=detections.xyxy[rows].astype(np.float64).reshape(-1, 4),
                confidence=detections.conf[rows].astype(np.float64),
                class_id=detections.class_id[rows].astype(int),
                data={"row": rows},
            )
            result = lib.update(sv_dets, timestamp=time_s)
            if len(result) == 0:
                continue
            lib_ids = np.asarray(result.tracker_id, dtype=np.int64)
            keep = lib_ids >= 0
            rows_out.append(np.asarray(result.data["row"], dtype=np.int64)[keep])
            ids_out.append(np.array([self._our_id(g, int(i)) for i in lib_ids[keep]], dtype=np.int64))
        self._updates += 1
        if self._updates % 500 == 0:
            self._prune_ids()
        if not rows_out:
            return Detections.empty()
        rows = np.concatenate(rows_out)
        ids = np.concatenate(ids_out)
        order = np.argsort(rows)
        return detections[rows[order]].with_track_ids(ids[order])

    def _prune_ids(self) -> None:
        """Forget id mappings of tracks the library has dropped, so memory stays bounded."""
        alive = {(g, int(t.tracker_id)) for g, lib in self._trackers.items() for t in lib.tracks}
        self._ids = {k: v for k, v in self._ids.items() if k in alive}

    def _our_id(self, group: int, lib_id: int) -> int:
        key = (group, lib_id)
        if key not in self._ids:
            self._max_id += 1
            self._ids[key] = self._max_id
        return self._ids[key]

    def reset(self) -> None:
        """Drop all tracks and restart ids at 1 (e.g. after the camera view changed)."""
        self._trackers.clear()
        self._ids.clear()
        self._max_id = 0
