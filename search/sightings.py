"""Sightings: one person on one camera for one pass, built from that camera's person tracks.

A :class:`SightingBuilder` (one per camera) is fed every analysed frame's tracked people. Per
track it keeps the few best crops (:class:`search.crops.BestCrops`), the image trajectory
(bottom-centre of the box, the ground contact point) and, with a calibrated camera, the ground
trajectory. A track becomes a :class:`Sighting` when it ends (unseen for ``lost_after_s``), when
it has run for ``max_duration_s`` (long-running tracks are cut into consecutive sightings so
that they become searchable while the person is still there), or at :meth:`flush`. Sightings
shorter than ``min_duration_s`` or with no usable crop are dropped (tracker noise).

The embedding and the clothing colours are computed when the sighting is finished, in one
batched call of the configured :class:`search.embed.Embedder` across every sighting that
finished in the same frame; the embedder's ``model_id`` is stored with the embedding so that
embeddings of different models are never compared.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from detectors.types import Detections
from ingest.errors import BaqylauError
from ingest.frame import Frame
from search.colours import mean_clothing_colours
from search.crops import BestCrops, ScoredCrop
from search.embed import Embedder

log = logging.getLogger(__name__)

#: Namespace of sighting UUID5s (itself ``uuid5(NAMESPACE_URL, "urn:baqylau:sighting")``).
SIGHTING_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:baqylau:sighting")


class SightingError(BaqylauError, ValueError):
    """A sighting builder was given invalid parameters."""


class GroundMapper(Protocol):
    """Image-to-ground mapping (``calibration.homography.Homography`` satisfies it)."""

    def img_to_ground(self, points_px: np.ndarray) -> np.ndarray:
        """`(N, 2)` image px -> `(N, 2)` ground metres (NaN above the horizon)."""
        ...


@dataclass(frozen=True, slots=True)
class Sighting:
    """One person on one camera for one pass.

    Attributes:
        sighting_id: Deterministic UUID5 string of camera, source, track and start time.
        camera_id: Camera id.
        track_id: Tracker id within the camera.
        part: 0 for the first sighting of a track; 1, 2, ... for the continuation of a track
            cut at ``max_duration_s``.
        start_time_s: Stream time (s) of the first box.
        end_time_s: Stream time (s) of the last box.
        start_wall_s: Wall-clock time (s since the Unix epoch, UTC) of the first box.
        end_wall_s: Wall-clock time (s since the Unix epoch, UTC) of the last box.
        crops: The best crops, best first (:class:`search.crops.ScoredCrop`, pixels copied).
        times_s: `(T,)` float64 stream time of each trajectory point.
        trajectory_px: `(T, 2)` float32 bottom-centre of the box (ground contact), image px.
        ground_m: `(T, 2)` float32 ground positions in metres of the camera's calibration
            frame (NaN above the horizon), or ``None`` for an uncalibrated camera.
        upper: Clothing colour name of the upper body (shares averaged over the kept crops,
            :func:`search.colours.mean_clothing_colours`), e.g. ``"blue"``.
        lower: Clothing colour name of the lower body.
        upper_shares: Share of the torso band's pixels per colour name (zero shares left out),
            averaged over the kept crops.
        lower_shares: The same for the legs band.
        embedding: `(D,)` float32 L2-normalised appearance embedding of the best crops
            (mean of the crops' embeddings, renormalised), or ``None`` without an embedder.
        model_id: ``Embedder.model_id`` of the embedding, or ``None``.
        conf: Highest detection confidence of the track in [0, 1].
    """

    sighting_id: str
    camera_id: str
    track_id: int
    part: int
    start_time_s: float
    end_time_s: float
    start_wall_s: float
    end_wall_s: float
    crops: tuple[ScoredCrop, ...] = field(repr=False)
    times_s: np.ndarray = field(repr=False)
    trajectory_px: np.ndarray = field(repr=False)
    ground_m: np.ndarray | None = field(repr=False)
    upper: str
    lower: str
    upper_shares: Mapping[str, float] = field(repr=False)
    lower_shares: Mapping[str, float] = field(repr=False)
    embedding: np.ndarray | None = field(repr=False)
    model_id: str | None
    conf: float

    @property
    def duration_s(self) -> float:
        """Length of the pass in stream seconds."""
        return self.end_time_s - self.start_time_s

    def summary(self) -> dict[str, Any]:
        """JSON-able description (no pixels, no embedding) for logs, stores and APIs."""
        def pts(a: np.ndarray | None) -> list | None:
            if a is None:
                return None
            return [[None if not math.isfinite(v) else round(float(v), 2) for v in row] for row in a.tolist()]

        return {"sighting_id": self.sighting_id, "camera_id": self.camera_id, "track_id": self.track_id,
                "part": self.part, "start_time_s": round(self.start_time_s, 3),
                "end_time_s": round(self.end_time_s, 3), "start_wall_s": self.start_wall_s,
                "end_wall_s": self.end_wall_s, "upper": self.upper, "lower": self.lower,
                "upper_shares": {k: round(v, 4) for k, v in self.upper_shares.items()},
                "lower_shares": {k: round(v, 4) for k, v in self.lower_shares.items()},
                "model_id": self.model_id, "conf": round(self.conf, 4),
                "crop_quality": [round(c.quality, 4) for c in self.crops],
                "times_s": [round(float(t), 3) for t in self.times_s],
                "trajectory_px": pts(self.trajectory_px), "ground_m": pts(self.ground_m)}


@dataclass(slots=True, eq=False)
class _Track:
    part: int
    first_s: float
    first_wall_s: float
    last_s: float
    last_wall_s: float
    times: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    conf: float = 0.0
    checked_s: float = -math.inf  # stream time of the last provisional check


class SightingBuilder:
    """Turn one camera's person tracks into :class:`Sighting` records.

    Args:
        camera_id: The camera.
        source_key: Identity of the source run (as for alert ids: a file's path, size and
            mtime; a live stream's URL plus a per-start token), so sighting ids are stable when
            a file is analysed again and never collide across live sessions.
        embedder: Appearance embedder, or ``None`` (sightings then have no embedding).
        ground: Image-to-ground mapping of a calibrated camera, or ``None``.
        crops_per_sighting: Best crops kept per sighting (>= 1).
        lost_after_s: A track unseen for this long (stream s) is finished. Use at least the
            tracker's lost-track buffer, or one pass is split into several sightings.
        max_duration_s: A track longer than this is cut into consecutive sightings, so a person
            who stays is searchable before they leave. Longer makes fewer, later sightings.
        min_duration_s: Sightings shorter than this are dropped (tracker noise, a glimpse).
        max_points: Trajectory points kept per sighting; longer trajectories are thinned
            (every other point) so memory stays bounded.
        crop_gap_s: Least stream time between two kept crops of a sighting
            (:class:`search.crops.BestCrops` ``min_gap_s``), so its crops show different moments.
            0 by default: on PETS09 (6 people seen on both halves of vtest), rank-1 across the
            halves fell from 6/6 to 4/6 (colour histogram) and 5/6 to 2/6 (MobileNetV2) with a
            2 s gap; the best crops by quality embed better than crops spread in time.

    Raises:
        SightingError: For non-positive durations or ``crops_per_sighting`` < 1.
    """

    def __init__(self, camera_id: str, source_key: str = "", embedder: Embedder | None = None,
                 ground: GroundMapper | None = None, crops_per_sighting: int = 3, lost_after_s: float = 3.0,
                 max_duration_s: float = 600.0, min_duration_s: float = 1.0, max_points: int = 512,
                 crop_gap_s: float = 0.0) -> None:
        if crops_per_sighting < 1 or max_points < 2:
            raise SightingError("crops_per_sighting must be >= 1 and max_points >= 2")
        for name, value in (("lost_after_s", lost_after_s), ("max_duration_s", max_duration_s)):
            if not value > 0:
                raise SightingError(f"{name} must be > 0, got {value}")
        if not 0 <= min_duration_s < max_duration_s:
            raise SightingError(f"min_duration_s must be in [0, max_duration_s), got {min_duration_s}")
        self.camera_id = camera_id
        self.source_key = source_key
        self.embedder = embedder
        self.ground = ground
        self.lost_after_s = lost_after_s
        self.max_duration_s = max_duration_s
        self.min_duration_s = min_duration_s
        self.max_points = max_points
        self._crops = BestCrops(crops_per_sighting, min_gap_s=crop_gap_s)
        self._tracks: dict[int, _Track] = {}

    def update(self, frame: Frame, people: Detections) -> list[Sighting]:
        """Feed one analysed frame's tracked people; return the sightings finished by it.

        Args:
            frame: The frame (``time_s`` drives the timers, ``wall_time_s`` the UTC times).
            people: Tracked person detections of this frame, full-frame px; rows with
                ``track_id`` -1 only count as occluders for crop quality.

        Returns:
            Finished sightings (often none), with embeddings and colours.
        """
        now, wall = float(frame.time_s), float(frame.wall_time_s)
        self._crops.offer_detections(frame.image, people, time_s=now, frame_index=frame.frame_index)
        anchors = people.anchors("bottom_center") if len(people) else np.zeros((0, 2), np.float32)
        finished: list[tuple[int, _Track]] = []
        for i, tid in enumerate(people.track_id.tolist()):
            if tid < 0:
                continue
            tr = self._tracks.get(tid)
            if tr is None:
                tr = self._tracks[tid] = _Track(0, now, wall, now, wall)
            elif now - tr.first_s >= self.max_duration_s:
                finished.append((tid, tr))
                tr = self._tracks[tid] = _Track(tr.part + 1, now, wall, now, wall)
            tr.last_s, tr.last_wall_s = now, wall
            tr.times.append(now)
            tr.points.append((float(anchors[i, 0]), float(anchors[i, 1])))
            tr.conf = max(tr.conf, float(people.conf[i]))
            if len(tr.times) > self.max_points:
                tr.times, tr.points = tr.times[::2], tr.points[::2]
        for tid, tr in list(self._tracks.items()):
            if now - tr.last_s > self.lost_after_s:
                finished.append((tid, tr))
                del self._tracks[tid]
        return self._finish(finished)

    def flush(self) -> list[Sighting]:
        """Finish every open track (end of stream or shutdown)."""
        finished = list(self._tracks.items())
        self._tracks.clear()
        return self._finish(finished)

    @property
    def open_tracks(self) -> int:
        """Tracks currently being collected."""
        return len(self._tracks)

    def _finish(self, finished: Sequence[tuple[int, _Track]]) -> list[Sighting]:
        pending: list[tuple[int, _Track, list[ScoredCrop]]] = []
        for tid, tr in finished:
            # a track cut at max_duration_s continues: its crops so far belong to this part
            crops = self._crops.pop(tid)
            if tr.last_s - tr.first_s < self.min_duration_s or not crops:
                log.debug("camera %s: track %d dropped (%.1f s, %d crops)", self.camera_id, tid,
                          tr.last_s - tr.first_s, len(crops))
                continue
            pending.append((tid, tr, crops))
        return self._build(pending)

    def provisional(self, now_s: float, every_s: float = 2.0, min_age_s: float = 1.0) -> list[Sighting]:
        """Sightings of tracks still open, for live checks (a watchlist) before a pass ends.

        Each open track at least ``min_age_s`` old with a kept crop is returned at most once
        every ``every_s`` (stream s), built from its crops so far. Its ``sighting_id`` is the id
        the finished sighting will have (same camera, source, track, part and start), so an alert
        raised on it names the sighting that is stored later. Nothing is removed: the track goes
        on collecting.

        Args:
            now_s: Stream time of the latest frame, s.
            every_s: Least stream time between two checks of one track, s.
            min_age_s: Least track age before its first check, s.

        Returns:
            Provisional sightings with embeddings and colours (often none).
        """
        pending: list[tuple[int, _Track, list[ScoredCrop]]] = []
        for tid, tr in self._tracks.items():
            if now_s - tr.first_s < min_age_s or now_s - tr.checked_s < every_s:
                continue
            crops = self._crops.best(tid)
            if crops:
                tr.checked_s = now_s
                pending.append((tid, tr, crops))
        return self._build(pending)

    def _build(self, pending: Sequence[tuple[int, _Track, list[ScoredCrop]]]) -> list[Sighting]:
        if not pending:
            return []
        embeddings: list[np.ndarray | None] = [None] * len(pending)
        if self.embedder is not None:
            flat = [c.crop for _, _, crops in pending for c in crops]
            vectors = self.embedder.embed(flat)
            start = 0
            for j, (_, _, crops) in enumerate(pending):
                mean = vectors[start:start + len(crops)].mean(axis=0)
                start += len(crops)
                norm = float(np.linalg.norm(mean))
                embeddings[j] = (mean / norm).astype(np.float32) if norm > 0 else None
        out = []
        for (tid, tr, crops), emb in zip(pending, embeddings):
            colours = mean_clothing_colours([c.crop for c in crops])
            times = np.asarray(tr.times, np.float64)
            traj = np.asarray(tr.points, np.float32).reshape(-1, 2)
            ground = None
            if self.ground is not None:
                ground = np.asarray(self.ground.img_to_ground(traj), np.float32).reshape(-1, 2)
            sid = str(uuid.uuid5(SIGHTING_NAMESPACE, repr((self.camera_id, self.source_key, tid, tr.part,
                                                            round(tr.first_s * 1000)))))
            out.append(Sighting(
                sighting_id=sid, camera_id=self.camera_id, track_id=tid, part=tr.part,
                start_time_s=tr.first_s, end_time_s=tr.last_s, start_wall_s=tr.first_wall_s,
                end_wall_s=tr.last_wall_s, crops=tuple(crops), times_s=times, trajectory_px=traj,
                ground_m=ground, upper=colours.upper, lower=colours.lower,
                upper_shares=colours.upper_shares, lower_shares=colours.lower_shares, embedding=emb,
                model_id=self.embedder.model_id if (self.embedder is not None and emb is not None) else None,
                conf=tr.conf))
        return out
