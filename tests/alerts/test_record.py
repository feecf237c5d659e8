"""Alert record: JSON round trip, validation, deterministic ids."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from alerts.record import Alert, AlertRecordError, make_alert_id
from tests.alerts.helpers import T0, make_alert


def test_to_dict_is_json_and_round_trips():
    alert = make_alert(3, end_time_s=9.25, end_utc=T0 + dt.timedelta(seconds=9.25), snapshot_path="s/a.jpg")
    data = json.loads(json.dumps(alert.to_dict()))
    assert data["start_utc"] == "2025-03-01T18:30:03.000000Z"
    assert data["end_utc"] == "2025-03-01T18:30:09.250000Z"
    assert data["camera_name"] == "Абай даңғылы / Abai ave"
    back = Alert.from_dict(data)
    assert back == alert
    assert back.start_utc.tzinfo is not None and back.location == (43.238, 76.945)


def test_offset_times_are_normalised_to_utc():
    almaty = dt.timezone(dt.timedelta(hours=5))
    alert = make_alert(start_utc=dt.datetime(2025, 3, 1, 23, 30, tzinfo=almaty))
    assert alert.start_utc == T0 and alert.start_utc.utcoffset() == dt.timedelta(0)
    assert alert.to_dict()["start_utc"].endswith("Z")


def test_details_are_read_only_copies():
    details = {"max_dwell_s": 1.0}
    alert = make_alert(details=details)
    details["max_dwell_s"] = 99.0
    assert alert.details["max_dwell_s"] == 1.0
    with pytest.raises(TypeError):
        alert.details["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(("kw", "match"), [
    ({"alert_id": ""}, "alert_id"),
    ({"start_utc": dt.datetime(2025, 1, 1)}, "start_utc"),
    ({"end_utc": dt.datetime(2025, 1, 1)}, "end_utc"),
    ({"conf": 1.5}, "conf"),
    ({"location": (95.0, 0.0)}, "location"),
    ({"xyxy": ((1.0, 2.0, 3.0),)}, "xyxy"),
    ({"details": {"frame": object()}}, "JSON"),
])
def test_validation(kw, match):
    with pytest.raises(AlertRecordError, match=match):
        make_alert(**kw)


@pytest.mark.parametrize(("data", "match"), [
    ({"bogus": 1}, "unknown"),
    ({"start_utc": "yesterday"}, "ISO"),
    ({"start_utc": "2025-03-01T18:30:00"}, "offset"),
])
def test_from_dict_errors(data, match):
    base = make_alert().to_dict()
    base.update(data)
    with pytest.raises(AlertRecordError, match=match):
        Alert.from_dict(base)


def test_from_dict_missing_key():
    data = make_alert().to_dict()
    del data["camera_id"]
    with pytest.raises(AlertRecordError, match="camera_id"):
        Alert.from_dict(data)


def test_make_alert_id_deterministic_and_distinct():
    args = ("cam-1", "/data/a.mp4:1000:1700000000", "loiter", 12.3456)
    first = make_alert_id(*args)
    assert first == make_alert_id(*args)
    assert uuid.UUID(first).version == 5
    assert make_alert_id("cam-1", args[1], "loiter", 12.3458) == first      # same millisecond
    variants = {
        make_alert_id("cam-2", *args[1:]),
        make_alert_id("cam-1", "/data/a.mp4:1000:1700000001", "loiter", 12.3456),
        make_alert_id("cam-1", args[1], "intrusion", 12.3456),
        make_alert_id("cam-1", args[1], "loiter", 12.347),
        # Separators inside fields cannot make two different inputs collide.
        make_alert_id("cam-1:x", "y", "loiter", 12.3456),
        make_alert_id("cam-1", "x:y", "loiter", 12.3456),
    }
    assert first not in variants and len(variants) == 6


def test_make_alert_id_rejects_nan():
    with pytest.raises(AlertRecordError):
        make_alert_id("c", "s", "r", float("nan"))
