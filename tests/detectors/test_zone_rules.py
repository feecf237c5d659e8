"""Zone rule engine: dwell, hysteresis, situations, time windows, units and class filters."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from calibration.zones import Zone
from detectors.types import Detections
from detectors.zone_rules import RuleEvent, ZoneRule, ZoneRuleEngine, ZoneRuleError
from ingest.errors import BaqylauError
from ingest.frame import Frame

CAM = "cam-1"
FPS = 10.0
WALL0 = dt.datetime(2025, 1, 15, 12, 0, tzinfo=dt.timezone.utc).timestamp()
ZONE = Zone("door", np.array([[10, 10], [50, 10], [50, 40], [10, 40]]), "px")
IN_BOX = (20.0, 10.0, 30.0, 30.0)    # bottom-centre (25, 30): inside ZONE
OUT_BOX = (20.0, 0.0, 30.0, 8.0)     # bottom-centre (25, 8): above ZONE


def make_frame(t: float, wall: float | None = None, wh: tuple[int, int] = (64, 48), cam: str = CAM) -> Frame:
    w, h = wh
    return Frame(cam, round(t * FPS), round(t * 1000), Fraction(1, 1000), t,
                 WALL0 + t if wall is None else wall, np.zeros((h, w, 3), np.uint8))


def make_dets(*rows: tuple[int, tuple[float, float, float, float], int, float]) -> Detections:
    """Rows of (track_id, xyxy, class_id, conf)."""
    if not rows:
        return Detections.empty()
    return Detections(np.array([r[1] for r in rows], np.float32), np.array([r[3] for r in rows], np.float32),
                      np.array([r[2] for r in rows], np.int32), np.array([r[0] for r in rows], np.int64))


def make_rule(**kw) -> ZoneRule:
    args = dict(rule_id="loiter", alert_type="loitering", zone=ZONE, class_ids=frozenset({0}),
                min_duration_s=3.0, clear_after_s=2.0)
    args.update(kw)
    return ZoneRule(**args)


def run(engine: ZoneRuleEngine, duration_s: float, present, wall0: float = WALL0,
        wh=lambda t: (64, 48)) -> list[tuple[float, RuleEvent]]:
    """Feed frames at FPS for duration_s; present(t) gives the detection rows at t."""
    out = []
    for i in range(round(duration_s * FPS)):
        t = i / FPS
        frame = make_frame(t, wall0 + t, wh(t))
        out += [(t, ev) for ev in engine.update(frame, make_dets(*present(t)))]
    return out


def person(tid: int, box=IN_BOX, conf: float = 0.8, cls: int = 0):
    return (tid, box, cls, conf)


def kinds(events) -> list[str]:
    return [ev.kind for _, ev in events]


def test_dwell_below_threshold_gives_nothing():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    events = run(engine, 10, lambda t: [person(1)] if t < 2.5 else [])
    assert events == []
    assert engine.flush() == []


def test_one_started_and_one_ended_after_leaving():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    events = run(engine, 12, lambda t: [person(7, conf=0.6 + 0.01 * t)] if t < 5.0 else [person(7, OUT_BOX)])
    assert kinds(events) == ["started", "ended"]
    (t0, started), (t1, ended) = events
    assert t0 == pytest.approx(3.0) and started.start_time_s == pytest.approx(3.0)
    assert started.start_wall_time_s == pytest.approx(WALL0 + 3.0)
    assert started.track_ids == (7,) and started.zone_id == "door" and started.camera_id == CAM
    assert started.end_time_s is None and started.max_dwell_s == pytest.approx(3.0)
    assert started.xyxy.shape == (1, 4) and started.xyxy.dtype == np.float32
    assert started.class_id.tolist() == [0]
    assert started.frame is not None and started.frame.time_s == pytest.approx(3.0)
    # Ends clear_after_s after the last qualifying frame (4.9 s), and reports that frame as the end.
    assert t1 == pytest.approx(6.9)
    assert ended.end_time_s == pytest.approx(4.9) and ended.end_wall_time_s == pytest.approx(WALL0 + 4.9)
    assert ended.max_dwell_s == pytest.approx(4.9)
    assert ended.conf == pytest.approx(0.6 + 0.049, abs=1e-5)
    assert ended.start_time_s == started.start_time_s


def test_flicker_shorter_than_clear_after_keeps_dwell():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    # Undetected 1.5 s..2.5 s (1 s < clear_after_s = 2 s): dwell still counts from 0 s.
    events = run(engine, 10, lambda t: [person(3)] if t < 1.5 or 2.5 <= t < 6 else [])
    assert kinds(events) == ["started", "ended"]
    assert events[0][0] == pytest.approx(3.0)


def test_absence_longer_than_clear_after_resets_dwell():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    # Outside 1.0 s..3.5 s (2.5 s >= clear_after_s): dwell restarts at 3.5 s, qualifies at 6.5 s.
    events = run(engine, 12, lambda t: [person(3)] if t < 1.0 or 3.5 <= t < 8 else [person(3, OUT_BOX)])
    assert kinds(events) == ["started", "ended"]
    assert events[0][0] == pytest.approx(6.5)


def test_flicker_during_situation_does_not_split_it():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    # Missed on every third frame and for a whole second at 5..6 s, all shorter than clear_after_s.
    present = lambda t: [person(4)] if t < 9 and round(t * FPS) % 3 and not 5 <= t < 6 else []  # noqa: E731
    events = run(engine, 14, present)
    assert kinds(events) == ["started", "ended"]


def test_two_objects_one_situation_with_one_update():
    engine = ZoneRuleEngine(CAM, [make_rule(min_duration_s=2.0)])

    def present(t):
        rows = []
        if t < 6:
            rows.append(person(1, conf=0.5))
        if 1.0 <= t < 7:
            rows.append(person(2, (22, 12, 32, 32), conf=0.9))
        return rows

    events = run(engine, 12, present)
    assert kinds(events) == ["started", "updated", "ended"]
    (t0, s), (t1, u), (t2, e) = events
    assert t0 == pytest.approx(2.0) and s.track_ids == (1,) and s.conf == pytest.approx(0.5)
    assert t1 == pytest.approx(3.0) and u.track_ids == (1, 2) and u.conf == pytest.approx(0.9)
    assert u.xyxy.shape == (2, 4) and u.start_time_s == pytest.approx(2.0)
    assert u.box_track_id.tolist() == [1, 2] and u.box_conf.tolist() == pytest.approx([0.5, 0.9])
    assert u.xyxy.tolist() == [list(IN_BOX), [22, 12, 32, 32]]
    assert e.track_ids == (1, 2) and e.end_time_s == pytest.approx(6.9)


def test_min_objects_waits_for_the_second_object():
    engine = ZoneRuleEngine(CAM, [make_rule(min_duration_s=2.0, min_objects=2, alert_type="crowd")])

    def present(t):
        return ([person(1)] if t < 6 else []) + ([person(2)] if 1.0 <= t < 7 else [])

    events = run(engine, 12, present)
    assert kinds(events) == ["started", "ended"]
    assert events[0][0] == pytest.approx(3.0) and events[0][1].track_ids == (1, 2)
    # The condition (two objects) is false from 6.0 s: the end is the last frame with two.
    assert events[1][1].end_time_s == pytest.approx(5.9)


def local_ts(hour: int, minute: int = 0, second: int = 0, tz: str = "Asia/Almaty") -> float:
    return dt.datetime(2025, 1, 15, hour, minute, second, tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize(("window", "tz", "wall", "expect_alert"), [
    ((dt.time(22), dt.time(6)), "Asia/Almaty", local_ts(23), True),       # wraps midnight, evening
    ((dt.time(22), dt.time(6)), "Asia/Almaty", local_ts(3), True),        # wraps midnight, night
    ((dt.time(22), dt.time(6)), "Asia/Almaty", local_ts(12), False),      # midday
    ((dt.time(22), dt.time(6)), "UTC", local_ts(23), False),              # 23:00 Almaty is 18:00 UTC
    ((dt.time(8), dt.time(18)), "Asia/Almaty", local_ts(9), True),
    ((dt.time(8), dt.time(18)), "Asia/Almaty", local_ts(19), False),
    (None, "UTC", local_ts(3), True),
])
def test_time_window(window, tz, wall, expect_alert):
    rule = make_rule(time_window=window, timezone=tz)
    events = run(ZoneRuleEngine(CAM, [rule]), 8, lambda t: [person(1)] if t < 5 else [], wall0=wall)
    assert kinds(events) == (["started", "ended"] if expect_alert else [])


def test_time_window_closing_ends_the_situation():
    rule = make_rule(min_duration_s=2.0, time_window=(dt.time(22), dt.time(6)), timezone="Asia/Almaty")
    engine = ZoneRuleEngine(CAM, [rule])
    events = run(engine, 20, lambda t: [person(1)], wall0=local_ts(5, 59, 50))
    assert kinds(events) == ["started", "ended"]
    assert events[0][0] == pytest.approx(2.0)
    assert events[1][0] == pytest.approx(10.0)          # the first frame at 06:00:00 local
    assert events[1][1].end_time_s == pytest.approx(9.9)
    assert engine.active_rule_ids() == []


def test_norm_zone_follows_resolution_change():
    zone = Zone("mid", np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]), "norm")
    box_at_20_20 = (15.0, 5.0, 25.0, 20.0)      # bottom-centre (20, 20) px
    box_at_64_48 = (59.0, 30.0, 69.0, 48.0)     # bottom-centre (64, 48) px

    def events_for(box, wh):
        engine = ZoneRuleEngine(CAM, [make_rule(zone=zone, min_duration_s=1.0)])
        return kinds(run(engine, 4, lambda t: [person(1, box)] if t < 2 else [], wh=lambda t: wh))

    assert events_for(box_at_20_20, (64, 48)) == ["started", "ended"]   # norm (0.31, 0.42)
    assert events_for(box_at_20_20, (128, 96)) == []                     # norm (0.16, 0.21)
    assert events_for(box_at_64_48, (128, 96)) == ["started", "ended"]   # norm (0.5, 0.5)
    # A resolution change mid-stream: the object stops qualifying once the frames are larger.
    engine = ZoneRuleEngine(CAM, [make_rule(zone=zone, min_duration_s=1.0, clear_after_s=0.5)])
    events = run(engine, 6, lambda t: [person(1, box_at_20_20)], wh=lambda t: (64, 48) if t < 3 else (128, 96))
    assert [(k.kind, round(t, 1)) for t, k in events] == [("started", 1.0), ("ended", 3.4)]


@pytest.mark.parametrize(("class_ids", "cls", "expect_alert"), [
    (frozenset({0}), 0, True),
    (frozenset({0}), 2, False),
    ({2, 7}, 7, True),
    (None, 5, True),
])
def test_class_filter(class_ids, cls, expect_alert):
    engine = ZoneRuleEngine(CAM, [make_rule(class_ids=class_ids)])
    events = run(engine, 8, lambda t: [person(1, cls=cls)] if t < 5 else [])
    assert kinds(events) == (["started", "ended"] if expect_alert else [])


def test_untracked_rows_are_ignored():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    assert run(engine, 8, lambda t: [person(-1)]) == []


def test_flush_ends_active_situations_and_resets():
    engine = ZoneRuleEngine(CAM, [make_rule(), make_rule(rule_id="intrusion", alert_type="person_in_zone",
                                                         min_duration_s=0.0)])
    events = run(engine, 5, lambda t: [person(1)])
    assert [(ev.rule_id, ev.kind) for _, ev in events] == [("intrusion", "started"), ("loiter", "started")]
    assert sorted(engine.active_rule_ids()) == ["intrusion", "loiter"]
    ended = engine.flush(None)
    assert [(ev.rule_id, ev.kind, ev.frame) for ev in ended] == [("loiter", "ended", None),
                                                                ("intrusion", "ended", None)]
    assert ended[0].end_time_s == pytest.approx(4.9)
    assert engine.active_rule_ids() == [] and engine.flush() == []


def test_wrong_camera_frame_raises():
    engine = ZoneRuleEngine(CAM, [make_rule()])
    with pytest.raises(ZoneRuleError, match="cam-2"):
        engine.update(make_frame(0.0, cam="cam-2"), Detections.empty())


@pytest.mark.parametrize(("kw", "match"), [
    ({"rule_id": ""}, "rule_id"),
    ({"alert_type": ""}, "alert_type"),
    ({"zone": [[0, 0], [1, 0], [1, 1]]}, "zone"),
    ({"class_ids": frozenset()}, "class_ids"),
    ({"class_ids": ["person"]}, "class_ids"),
    ({"min_duration_s": -1.0}, "min_duration_s"),
    ({"min_duration_s": float("nan")}, "min_duration_s"),
    ({"clear_after_s": 0.0}, "clear_after_s"),
    ({"min_objects": 0}, "min_objects"),
    ({"time_window": (dt.time(6), dt.time(6))}, "empty"),
    ({"time_window": ("22:00", "06:00")}, "time_window"),
    ({"time_window": (dt.time(22, tzinfo=dt.timezone.utc), dt.time(6))}, "naive"),
    ({"timezone": "Mars/Olympus"}, "time zone"),
    ({"anchor": "top_left"}, "anchor"),
])
def test_rule_validation(kw, match):
    with pytest.raises(ZoneRuleError, match=match) as info:
        make_rule(**kw)
    assert isinstance(info.value, BaqylauError) and isinstance(info.value, ValueError)


def test_duplicate_rule_ids_raise():
    with pytest.raises(ZoneRuleError, match="duplicate"):
        ZoneRuleEngine(CAM, [make_rule(), make_rule()])
