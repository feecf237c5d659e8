"""Follow a person across cameras: chain the most likely next sightings in time order.

From a starting sighting, each hop searches the sighting store for the most similar sightings
that *start after the current one ends* and within ``window_s`` (time filter inside the index
search, :meth:`search.store.SightingStore.similar`), on any camera including the same one later.
The query is always the starting sighting's embedding (the person the investigator chose), so
the chain cannot drift onto someone else who merely resembles the latest hop.

Candidates are re-ranked by appearance plus plausibility::

    rank = cos + W_NEAR * exp(-d / NEAR_SCALE_M) + W_TIME * exp(-excess_s / TIME_SCALE_S)
    excess_s = max(0, gap_s - d / walking_speed_mps)

where ``cos`` is the cosine similarity to the query, ``d`` the haversine distance between the
two sightings' locations (the sighting's own lat/lon when the camera is calibrated, otherwise the
camera position) and ``gap_s`` the time from the end of one to the start of the next. A hop is
dropped when ``max(0, d - POSITION_SLACK_M) / max(gap_s, 1 s)`` exceeds ``max_speed_mps``
(nobody on foot or on a bus covers it). Without locations the nearness term is 0 for every
candidate (it cannot reorder them), ``excess_s`` is the whole gap and nothing is dropped for
speed; the two cameras of a hop on the same camera are 0 m apart. The chain stops when no
candidate has ``cos >= min_score``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from search.store import SightingNotFoundError, SightingRecord, SightingStore, SightingStoreError

logger = logging.getLogger(__name__)

#: Mean Earth radius in metres (IUGG), for the haversine distance.
EARTH_RADIUS_M = 6_371_008.8
#: Weight of the nearness term: a tie-breaker, not an override. Cosine similarities of the same
#: person and of a look-alike differ by 0.05-0.3 (PETS09 colour histograms and MobileNetV2), so
#: at most 0.1 for a camera next door reorders close calls only.
W_NEAR = 0.1
#: Distance at which the nearness term falls to 1/e: about two city blocks, the spacing of street
#: cameras in a centre; farther cameras are reachable but less likely next.
NEAR_SCALE_M = 200.0
#: Weight of the time term (as :data:`W_NEAR`).
W_TIME = 0.1
#: Unexplained time (beyond walking the distance) at which the time term falls to 1/e: after
#: five minutes off camera a person may have gone anywhere and look-alikes accumulate.
TIME_SCALE_S = 300.0
#: Distance forgiven in the speed check: camera positions stand for their whole field of view
#: (a street camera covers 30-60 m), so two views can be far apart while the person barely moved.
POSITION_SLACK_M = 50.0
#: Shortest time gap used in the speed check, s (overlapping views can give gaps of ~0 s).
MIN_GAP_S = 1.0


@dataclass(frozen=True, slots=True)
class Step:
    """One sighting of the followed person.

    Attributes:
        sighting_id: The sighting.
        camera_id: Its camera.
        start_utc: Aware UTC start of the sighting.
        end_utc: Aware UTC end.
        lat: WGS84 latitude in degrees used for the hop (sighting's, else camera's), or ``None``.
        lon: WGS84 longitude in degrees, or ``None``.
        score: Cosine similarity to the starting sighting (1.0 for the start itself).
        rank_score: ``score`` plus the plausibility terms (module docstring); 1.0 for the start.
        transit_s: Time from the end of the previous step to the start of this one, s (0 first).
        distance_m: Haversine distance from the previous step, m, or ``None`` when unknown.
    """

    sighting_id: str
    camera_id: str
    start_utc: dt.datetime
    end_utc: dt.datetime
    lat: float | None
    lon: float | None
    score: float
    rank_score: float
    transit_s: float
    distance_m: float | None


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points in degrees (haversine formula,
    R. W. Sinnott, "Virtues of the Haversine", Sky and Telescope 68(2), 1984)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _where(record: SightingRecord, positions: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    if record.lat is not None and record.lon is not None:
        return record.lat, record.lon
    pos = positions.get(record.camera_id)
    return (float(pos[0]), float(pos[1])) if pos is not None else None


def _step(r: SightingRecord, where: tuple[float, float] | None, score: float, rank: float, transit_s: float,
          distance_m: float | None) -> Step:
    return Step(r.sighting_id, r.camera_id, r.start_utc, r.end_utc, where[0] if where else None,
                where[1] if where else None, score, rank, transit_s, distance_m)


def follow(store: SightingStore, sighting_id: str, *,
           camera_positions: Mapping[str, tuple[float, float]] | None = None, window_s: float = 1800.0,
           min_score: float = 0.7, max_hops: int = 20, walking_speed_mps: float = 1.4,
           max_speed_mps: float = 15.0, k: int = 50) -> list[Step]:
    """Chain the most likely next sightings of a person, in time order.

    Args:
        store: The sighting store.
        sighting_id: The starting sighting (must have an embedding).
        camera_positions: ``camera_id -> (lat, lon)`` WGS84 degrees from the camera map, used for
            sightings without their own location; ``None`` for none.
        window_s: Longest time from the end of one step to the start of the next, s. Longer
            bridges gaps between distant cameras but admits more look-alikes.
        min_score: Least cosine similarity to the start for a next step. Higher stops earlier
            with fewer wrong hops; 0.7 kept the right PETS09 identities with the colour
            histogram (same-person scores 0.80-0.95) but is model-specific: calibrate it per
            embedding model on labelled data.
        max_hops: Most steps after the start.
        walking_speed_mps: Speed assumed for walking between two places, m/s; 1.4 m/s is the
            usual comfortable adult walking speed (R. W. Bohannon, "Comfortable and maximum
            walking speed of adults aged 20-79 years", Age and Ageing 26, 1997). Time beyond the
            walk counts against a candidate.
        max_speed_mps: Hops needing a faster speed are impossible and dropped; 15 m/s (54 km/h)
            is a city bus or car, the fastest a person travels in a city centre.
        k: Candidates fetched per hop.

    Returns:
        Steps, the start first (score 1.0), each starting at or after the previous one's end.

    Raises:
        SightingNotFoundError: ``sighting_id`` is not stored.
        SightingStoreError: The start has no embedding, or a parameter is out of range.
    """
    if window_s <= 0 or walking_speed_mps <= 0 or max_speed_mps <= 0 or max_hops < 0 or k < 1:
        raise SightingStoreError("window_s, walking_speed_mps and max_speed_mps must be > 0, max_hops >= 0, k >= 1")
    positions = camera_positions or {}
    start = store.get(sighting_id)
    if start is None:
        raise SightingNotFoundError(f"no sighting {sighting_id!r} to follow")
    if start.embedding is None or start.model_id is None:
        raise SightingStoreError(f"sighting {sighting_id} has no embedding to follow it with")
    here = _where(start, positions)
    steps = [_step(start, here, 1.0, 1.0, 0.0, 0.0 if here else None)]
    visited = {start.sighting_id}
    current = start
    for _ in range(max_hops):
        end_s = current.end_wall_s
        hits = store.similar(start.embedding, start.model_id, k=k, time_from=end_s, time_to=end_s + window_s,
                             exclude=visited)
        best: tuple[float, Step] | None = None
        for hit in hits:
            r = hit.record
            if hit.score < min_score:
                break  # hits are sorted by decreasing similarity
            gap_s = max(0.0, r.start_wall_s - end_s)
            there = _where(r, positions)
            if here is not None and there is not None:
                d = haversine_m(*here, *there)
            elif r.camera_id == current.camera_id:
                d = 0.0
            else:
                d = None
            if d is not None and max(0.0, d - POSITION_SLACK_M) / max(gap_s, MIN_GAP_S) > max_speed_mps:
                logger.debug("follow %s: hop to %s on %s dropped (%.0f m in %.1f s)", sighting_id,
                             r.sighting_id, r.camera_id, d, gap_s)
                continue
            near = math.exp(-d / NEAR_SCALE_M) if (d is not None and there is not None) else 0.0
            excess_s = max(0.0, gap_s - (d or 0.0) / walking_speed_mps)
            rank = hit.score + W_NEAR * near + W_TIME * math.exp(-excess_s / TIME_SCALE_S)
            if best is None or rank > best[0]:
                best = (rank, _step(r, there, hit.score, rank, gap_s, d))
        if best is None:
            break
        steps.append(best[1])
        visited.add(best[1].sighting_id)
        current = store.get(best[1].sighting_id)
        here = _where(current, positions)
    logger.info("follow %s: %d steps over cameras %s", sighting_id, len(steps),
                ", ".join(dict.fromkeys(s.camera_id for s in steps)))
    return steps
