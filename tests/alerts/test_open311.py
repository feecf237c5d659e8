"""Open311 GeoReport v2 service requests from utility alerts."""

from __future__ import annotations

import datetime as dt
import json

import pydantic
import pytest

from alerts.open311 import (GEOREPORT_REQUEST_FIELDS, GEOREPORT_REQUIRED_FIELDS, Open311Error,
                            Service, ServiceCatalog, Ticket, from_georeport, service_request_id_for,
                            ticket_from_alert, to_georeport_json)
from tests.alerts.helpers import T0, make_alert

KAZ_CAMERA = "Көктем 3 / кіреберіс"
BASE = "https://media.example.kz/snapshots"


def bin_alert(i: int = 0, **kw):
    """A bin-overflow alert on a camera with a Kazakh name and a Kazakh snapshot file name."""
    args = dict(type="bin_overflow", camera_id="Көктем 3", camera_name=KAZ_CAMERA, zone_id="bins",
                snapshot_path="/var/snap/Көктем 3/қоқыс жәшігі #1.jpg",
                details={"reason": "covered share 0.62 > 0.4", "severity": "high"})
    args.update(kw)
    return make_alert(i, **args)


def test_ticket_has_every_spec_field_and_kazakh_text():
    ticket = ticket_from_alert(bin_alert(), ServiceCatalog.default(), media_base_url=BASE + "/")
    data = ticket.to_dict()
    assert tuple(data) == GEOREPORT_REQUEST_FIELDS
    assert data["service_code"] == "waste-bin-overflow" and data["status"] == "open"
    assert data["address"] == KAZ_CAMERA
    assert KAZ_CAMERA in data["description"]
    assert "zone: bins" in data["description"] and "severity: high" in data["description"]
    assert "covered share 0.62" in data["description"]
    assert data["lat"] == 43.238 and data["long"] == 76.945
    assert data["media_url"] == (BASE + "/%D2%9B%D0%BE%D2%9B%D1%8B%D1%81%20%D0%B6%D3%99%D1%88%D1%96"
                                 "%D0%B3%D1%96%20%231.jpg")
    assert data["media_url"].isascii()
    assert data["service_request_id"].startswith("BQ-") and len(data["service_request_id"]) == 15
    assert data["requested_datetime"] == "2025-03-01T18:30:00+00:00"
    for key in GEOREPORT_REQUIRED_FIELDS:
        assert data[key] not in (None, "")


def test_expected_is_seven_days_after_request_and_id_is_stable():
    alert = bin_alert(5)
    ticket = ticket_from_alert(alert, ServiceCatalog.default())
    assert ticket.requested_datetime == T0 + dt.timedelta(seconds=5)
    assert ticket.expected_datetime - ticket.requested_datetime == dt.timedelta(days=7)
    assert ticket_from_alert(alert, ServiceCatalog.default(), expected_days=2).expected_datetime == (
        ticket.requested_datetime + dt.timedelta(days=2))
    assert ticket.service_request_id == service_request_id_for(alert.alert_id)
    assert ticket.service_request_id == "BQ-" + alert.alert_id.replace("-", "")[:12]
    assert ticket_from_alert(alert, ServiceCatalog.default()) == ticket
    assert ticket.media_url is None  # no base URL


def test_local_time_zone_keeps_the_offset():
    almaty = dt.timezone(dt.timedelta(hours=5))
    data = ticket_from_alert(bin_alert(), ServiceCatalog.default(), tz=almaty).to_dict()
    assert data["requested_datetime"] == "2025-03-01T23:30:00+05:00"
    assert data["expected_datetime"] == "2025-03-08T23:30:00+05:00"


HOUR = T0 + dt.timedelta(hours=1)


@pytest.mark.parametrize("kw, now, status, updated", [
    ({}, None, "open", T0),
    ({}, HOUR, "open", HOUR),
    ({"end_time_s": 40.0, "end_utc": T0 + dt.timedelta(seconds=40.4)}, HOUR, "open", HOUR),
    ({"end_time_s": 40.0, "end_utc": T0 + dt.timedelta(seconds=40.4)}, None, "open",
     T0 + dt.timedelta(seconds=40)),
    ({"end_time_s": 40.0, "end_utc": T0 + dt.timedelta(seconds=40.4), "status": "resolved"}, HOUR, "closed", HOUR),
    ({"status": "resolved"}, HOUR, "closed", HOUR),
    ({"status": "rejected"}, None, "closed", T0),
    ({"status": "acknowledged"}, HOUR, "open", HOUR),
])
def test_status_follows_the_alert(kw, now, status, updated):
    ticket = ticket_from_alert(bin_alert(**kw), ServiceCatalog.default(), now=now)
    assert ticket.status == status and ticket.updated_datetime == updated
    assert ticket.status_notes


def test_no_location_gives_null_lat_long():
    data = ticket_from_alert(bin_alert(location=None), ServiceCatalog.default()).to_dict()
    assert data["lat"] is None and data["long"] is None


@pytest.mark.parametrize("alert_kw, call_kw, match", [
    ({"type": "loitering"}, {}, "no Open311 service for alert type 'loitering'"),
    ({}, {"expected_days": 0}, "expected_days"),
    ({}, {"now": dt.datetime(2025, 3, 2)}, "aware"),
    ({}, {"media_base_url": "media/snaps"}, "media_base_url"),
])
def test_bad_inputs_raise(alert_kw, call_kw, match):
    with pytest.raises(Open311Error, match=match) as info:
        ticket_from_alert(bin_alert(**alert_kw), ServiceCatalog.default(), **call_kw)
    assert isinstance(info.value, ValueError)


def test_services_list():
    services = ServiceCatalog.default().services()
    assert {s["service_code"] for s in services} == {
        "waste-bin-overflow", "street-flooding", "littering", "illegal-dumping"}
    for s in services:
        assert set(s) == {"service_code", "service_name", "description", "metadata", "type",
                          "keywords", "group"}
        assert s["metadata"] is False and s["type"] == "realtime" and isinstance(s["keywords"], str)
    json.dumps(services)


def test_catalogue_from_mapping_validates():
    catalog = ServiceCatalog.model_validate({
        "services_by_type": {"flooding": {"service_code": "su-basu", "service_name": "Су басу"}},
        "agency_responsible": "Алматы Су"})
    ticket = ticket_from_alert(bin_alert(type="flooding"), catalog)
    assert ticket.service_code == "su-basu" and ticket.agency_responsible == "Алматы Су"
    with pytest.raises(pydantic.ValidationError):
        ServiceCatalog.model_validate({"services_by_type": {}, "extra": 1})
    dup = Service(service_code="x", service_name="X")
    with pytest.raises(pydantic.ValidationError, match="more than one"):
        ServiceCatalog(services_by_type={"a": dup, "b": dup})


def test_json_round_trip_keeps_utf8():
    catalog = ServiceCatalog.default()
    tickets = [ticket_from_alert(bin_alert(0), catalog, media_base_url=BASE),
               ticket_from_alert(bin_alert(1, type="flooding", location=None,
                                           end_time_s=9.0, end_utc=T0 + dt.timedelta(seconds=9)), catalog)]
    text = to_georeport_json(tickets)
    assert KAZ_CAMERA in text  # UTF-8, not \\u escapes
    objs = json.loads(text)
    assert isinstance(objs, list) and len(objs) == 2
    assert [from_georeport(o) for o in objs] == tickets


def test_reading_a_server_response():
    # Shape of the spec's GET requests.json example, plus a non-standard key and string coordinates.
    obj = {"service_request_id": 638344, "status": "closed", "status_notes": "Duplicate request.",
           "service_name": "Sidewalk and Curb Issues", "service_code": "006",
           "requested_datetime": "2010-04-14T06:37:38-08:00", "updated_datetime": "2010-04-14T06:37:38Z",
           "lat": "37.762221815", "long": "-122.4651145", "extended_attributes": {}}
    ticket = from_georeport(obj)
    assert ticket.lat == pytest.approx(37.762221815) and ticket.description is None
    assert ticket.requested_datetime.utcoffset() == dt.timedelta(hours=-8)


@pytest.mark.parametrize("change, match", [
    ({"service_request_id": None}, "service_request_id"),
    ({"status": None}, "status"),
    ({"service_code": ""}, "service_code"),
    ({"requested_datetime": None}, "requested_datetime"),
    ({"status": "pending"}, "'open' or 'closed'"),
    ({"requested_datetime": "2025-03-01T18:30:00"}, "no UTC offset"),
    ({"expected_datetime": "next week"}, "not ISO 8601"),
    ({"lat": 91.0}, "out of range"),
    ({"long": None}, "together"),
    ({"lat": "north"}, "not a number"),
])
def test_required_fields_and_values_are_checked(change, match):
    obj = ticket_from_alert(bin_alert(), ServiceCatalog.default()).to_dict()
    obj.update(change)
    with pytest.raises(Open311Error, match=match):
        from_georeport(obj)


def test_not_a_mapping_raises():
    with pytest.raises(Open311Error, match="JSON object"):
        from_georeport([1, 2])


def test_ticket_is_frozen():
    ticket = ticket_from_alert(bin_alert(), ServiceCatalog.default())
    with pytest.raises(AttributeError):
        ticket.status = "closed"  # type: ignore[misc]
    assert isinstance(ticket, Ticket)
