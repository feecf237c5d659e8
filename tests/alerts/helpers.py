"""Builders shared by the alert tests."""

from __future__ import annotations

import datetime as dt

from alerts.record import Alert, make_alert_id

T0 = dt.datetime(2025, 3, 1, 18, 30, 0, tzinfo=dt.timezone.utc)


def make_alert(i: int = 0, camera_id: str = "cam-1", type: str = "loitering", **kw) -> Alert:  # noqa: A002
    """Alert number ``i``: starts i seconds after T0, ongoing unless end fields are given."""
    args = dict(
        alert_id=make_alert_id(camera_id, "/data/a.mp4:1000:1700000000", "loiter", float(i)),
        type=type, camera_id=camera_id, camera_name="Абай даңғылы / Abai ave", zone_id="door",
        rule_id="loiter", track_ids=(i, i + 1), start_time_s=float(i), end_time_s=None,
        start_utc=T0 + dt.timedelta(seconds=i), end_utc=None, conf=0.75, snapshot_path=None,
        location=(43.238, 76.945), xyxy=((1.0, 2.0, 30.5, 40.0),),
        details={"max_dwell_s": 3.5, "class_names": ["person"]},
    )
    args.update(kw)
    return Alert(**args)
