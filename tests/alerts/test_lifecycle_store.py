"""Alert lifecycle, routing, cooldown and the outbox written with every change (alerts.db schema 2)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest

from alerts.cooldown import Cooldown, CooldownError
from alerts.lifecycle import EVENT_TYPES, TRANSITIONS, LifecycleError, check_transition
from alerts.open311 import from_georeport
from alerts.outbox import OutboxPolicy
from alerts.routing import DEFAULT_RULES, RouteRule, Router
from alerts.store import AlertNotFoundError, AlertStore, AlertStoreError
from alerts.webhooks import message_id
from tests.alerts.helpers import T0, make_alert

NOW = T0 + dt.timedelta(minutes=5)


# -- lifecycle rules --------------------------------------------------------------------------

def test_transitions_allowed_and_refused():
    check_transition("new", "acknowledged", actor="aigerim")
    check_transition("acknowledged", "dispatched", actor="aigerim")
    check_transition("dispatched", "resolved", actor="aigerim")
    check_transition("resolved", "new", actor="aigerim")             # explicit reopen
    with pytest.raises(LifecycleError, match="cannot become"):
        check_transition("resolved", "dispatched", actor="aigerim")
    with pytest.raises(LifecycleError, match="unknown alert status"):
        check_transition("new", "closed", actor="aigerim")
    with pytest.raises(LifecycleError, match="actor"):
        check_transition("new", "acknowledged", actor=" ")
    with pytest.raises(LifecycleError, match="reason"):
        check_transition("new", "rejected", actor="aigerim")
    with pytest.raises(LifecycleError, match="due date"):
        check_transition("new", "deferred", actor="aigerim")
    with pytest.raises(LifecycleError, match="not in the future"):
        check_transition("new", "deferred", actor="a", due_utc=T0, now=NOW)
    with pytest.raises(LifecycleError, match="days away"):
        check_transition("new", "deferred", actor="a", due_utc=NOW + dt.timedelta(days=400), now=NOW)
    assert isinstance(LifecycleError("x"), ValueError)
    assert set(EVENT_TYPES) == set(TRANSITIONS)


# -- routing ----------------------------------------------------------------------------------

def test_default_rules_route_offences_to_police_and_utilities_to_ticketing():
    router = Router(DEFAULT_RULES)
    assert router.routes_for(make_alert(type="littering")) == ("police",)
    assert router.routes_for(make_alert(type="person_match")) == ("police",)
    assert router.routes_for(make_alert(type="flooding")) == ("ticketing",)
    assert router.routes_for(make_alert(type="loitering")) == ()


def test_rules_by_zone_severity_time_of_day_and_union():
    rules = [
        RouteRule(types=["bin_*"], routes=["ticketing"]),
        RouteRule(zones=["door"], severities=["high", "critical"], routes=["police", "webhook:Көктем ops"]),
        # T0 is 18:30 UTC = 23:30 in Asia/Almaty (UTC+5): inside a night window that wraps midnight
        RouteRule(time_of_day={"start": "22:00", "end": "06:00"}, routes=["mqtt:ha"], stop=True),
        RouteRule(routes=["webhook:never"]),
    ]
    router = Router(rules, "Asia/Almaty", {"intrusion": "high"})
    assert router.routes_for(make_alert(type="bin_overflow")) == ("ticketing", "mqtt:ha")
    assert router.routes_for(make_alert(type="intrusion")) == ("police", "webhook:Көктем ops", "mqtt:ha")
    urgent = make_alert(type="flooding", details={"urgent": True})
    assert router.severity(urgent) == "high"
    day = make_alert(type="loitering", start_utc=T0 - dt.timedelta(hours=8))     # 15:30 local
    assert router.routes_for(day) == ("webhook:never",)
    with pytest.raises(ValueError, match="unknown route"):
        RouteRule(routes=["fax"])
    with pytest.raises(ValueError, match="HH:MM"):
        RouteRule(time_of_day={"start": "25:00", "end": "06:00"}, routes=["police"])


# -- cooldown ---------------------------------------------------------------------------------

def test_cooldown_merges_within_window_per_camera_zone_type():
    cd = Cooldown(30.0, {"flooding": 600.0})
    assert cd.lookup("cam", "door", "loitering", 100.0) is None
    cd.note("cam", "door", "loitering", "A", 100.0)
    assert cd.lookup("cam", "door", "loitering", 129.0) == "A"
    assert cd.lookup("cam", "door", "loitering", 131.0) is None       # window passed
    assert cd.lookup("cam", "exit", "loitering", 110.0) is None       # other zone
    assert cd.lookup("cam-2", "door", "loitering", 110.0) is None     # other camera
    cd.note("cam", "road", "flooding", "F", 0.0)
    assert cd.lookup("cam", "road", "flooding", 500.0) == "F"
    assert Cooldown(0.0).lookup("cam", "door", "loitering", 0.0) is None
    with pytest.raises(CooldownError):
        Cooldown(-1.0)


# -- the store: history, outbox, tickets --------------------------------------------------------

def _outbox(store: AlertStore) -> list:
    return store.outbox_rows(limit=10_000)


def test_add_writes_history_outbox_and_ticket_in_one_go(tmp_path):
    with AlertStore(tmp_path / "alerts.db", OutboxPolicy(media_base_url="https://bq.example/media")) as store:
        flood = make_alert(1, camera_id="Көктем 3 / кіреберіс", type="flooding",
                           snapshot_path="/var/snap/x/flood 1.jpg",
                           details={"evidence": {"before": "/var/snap/x/a-before.jpg", "n": 2}})
        loiter = make_alert(2, type="loitering")
        assert store.add(flood, now=NOW) and store.add(loiter, now=NOW)
        assert store.add(flood, now=NOW) is False                    # duplicate: nothing published twice
        rows = _outbox(store)
        assert len(rows) == 1                                        # loitering has no route by default
        row = rows[0]
        assert (row.alert_id, row.camera_id, row.type, row.routes) == (
            flood.alert_id, "Көктем 3 / кіреберіс", "alert.created", ("ticketing",))
        assert row.msg_id == message_id(flood.alert_id, "alert.created", 1)
        body = json.loads(row.body)
        assert body["type"] == "alert.created" and body["data"]["camera_id"] == "Көктем 3 / кіреберіс"
        assert body["data"]["snapshot_url"] == "https://bq.example/media/flood%201.jpg"
        assert "snapshot_path" not in body["data"]
        assert body["data"]["details"]["evidence"] == {"before": "https://bq.example/media/a-before.jpg", "n": 2}
        ticket = from_georeport(json.loads(row.fields()["ticket"]))
        assert ticket.service_code == "street-flooding" and ticket.status == "open"
        assert [t.service_request_id for t in store.tickets(status="open")] == [ticket.service_request_id]
        assert store.routes_of(flood.alert_id) == ("ticketing",)
        assert [e["type"] for e in store.history(flood.alert_id)] == ["alert.created"]


def test_lifecycle_changes_are_events_with_who_when_note(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        bin_alert = make_alert(1, type="bin_overflow")
        store.add(bin_alert, now=NOW)
        store.transition(bin_alert.alert_id, "acknowledged", actor="aigerim", note="seen", now=NOW)
        store.transition(bin_alert.alert_id, "dispatched", actor="aigerim", note="crew 7", now=NOW)
        done = store.transition(bin_alert.alert_id, "resolved", actor="serik", note="emptied", now=NOW)
        assert done.status == "resolved" and store.get(bin_alert.alert_id).status == "resolved"
        hist = store.history(bin_alert.alert_id)
        assert [(h["type"], h["actor"], h["from_status"], h["to_status"], h["note"]) for h in hist[1:]] == [
            ("alert.acknowledged", "aigerim", "new", "acknowledged", "seen"),
            ("alert.dispatched", "aigerim", "acknowledged", "dispatched", "crew 7"),
            ("alert.resolved", "serik", "dispatched", "resolved", "emptied")]
        assert all(h["at_utc"].endswith("Z") for h in hist)
        rows = _outbox(store)
        assert [r.type for r in rows] == ["alert.created", "alert.acknowledged", "alert.dispatched", "alert.resolved"]
        assert len({r.msg_id for r in rows}) == 4
        (ticket,) = store.tickets()
        assert ticket.status == "closed" and "emptied" in ticket.status_notes
        with pytest.raises(LifecycleError):
            store.transition(bin_alert.alert_id, "dispatched", actor="serik")
        assert len(_outbox(store)) == 4                              # a refused change publishes nothing
        with pytest.raises(AlertNotFoundError):
            store.transition("nope", "acknowledged", actor="serik")
        assert isinstance(AlertNotFoundError("x"), (AlertStoreError, LookupError))
        assert [a.alert_id for a in store.list(status="resolved")] == [bin_alert.alert_id]


def test_reject_keeps_reason_and_defer_falls_due(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        a, b = make_alert(1, type="littering"), make_alert(2, type="littering")
        store.add(a, now=NOW)
        store.add(b, now=NOW)
        store.transition(a.alert_id, "rejected", actor="aigerim", reason="false_positive", note="shadow", now=NOW)
        assert store.history(a.alert_id)[-1]["reason"] == "false_positive"
        due = NOW + dt.timedelta(hours=2)
        store.transition(b.alert_id, "deferred", actor="aigerim", due_utc=due, now=NOW)
        assert store.due_deferred(NOW + dt.timedelta(hours=1)) == []
        assert store.due_deferred(NOW + dt.timedelta(hours=3)) == [b.alert_id]
        store.transition(b.alert_id, "new", actor="system", note="deferral due", now=NOW + dt.timedelta(hours=3))
        assert store.due_deferred(NOW + dt.timedelta(hours=4)) == []
        assert [r.type for r in _outbox(store) if r.alert_id == b.alert_id] == [
            "alert.created", "alert.deferred", "alert.reopened"]


def test_updates_and_ends_are_published_with_increasing_revisions(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        a = make_alert(1, type="littering")
        store.add(a, now=NOW)
        store.update(a.alert_id, conf=0.9, now=NOW)
        store.update(a.alert_id, event="alert.ended", end_time_s=9.0, end_utc=T0 + dt.timedelta(seconds=9), now=NOW)
        rows = _outbox(store)
        assert [r.type for r in rows] == ["alert.created", "alert.updated", "alert.ended"]
        assert rows[2].msg_id == message_id(a.alert_id, "alert.ended", 3)
        assert json.loads(rows[2].body)["data"]["end_time_s"] == 9.0


def test_outbox_publication_replay_and_lease(tmp_path):
    with AlertStore(tmp_path / "alerts.db") as store:
        for i in range(3):
            store.add(make_alert(i, type="littering"), now=NOW)
        pending = store.outbox_pending()
        assert [r.seq for r in pending] == sorted(r.seq for r in pending) and len(pending) == 3
        store.mark_published([pending[0].seq])
        assert store.outbox_stats()["pending"] == 2 and store.outbox_stats()["published"] == 1
        assert store.replay("webhook:ops", [pending[0]]) == 1
        again = store.outbox_pending()[-1]
        assert (again.msg_id, again.routes, again.body) == (pending[0].msg_id, ("webhook:ops",), pending[0].body)
        assert again.seq > pending[-1].seq
        assert store.try_lease("relay", "a", 10.0, 1000.0)
        assert not store.try_lease("relay", "b", 10.0, 1005.0)        # held by a
        assert store.try_lease("relay", "b", 10.0, 1011.0)            # expired: taken over
        store.release_lease("relay", "b")
        assert store.try_lease("relay", "a", 10.0, 1012.0)


def test_schema_1_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "alerts.db"
    conn = sqlite3.connect(path)
    old = make_alert(1, type="flooding")
    conn.executescript("""CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, camera_id TEXT NOT NULL,
        type TEXT NOT NULL, start_utc TEXT NOT NULL, body TEXT NOT NULL); PRAGMA user_version=1;""")
    conn.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?)", (old.alert_id, old.camera_id, old.type,
                                                              "2025-03-01T18:30:01.000000Z", json.dumps(old.to_dict())))
    conn.commit()
    conn.close()
    with AlertStore(path) as store:
        assert store.get(old.alert_id) == old
        assert store.transition(old.alert_id, "acknowledged", actor="a").status == "acknowledged"
        assert store.routes_of(old.alert_id) == ()                   # routed before routing existed


def test_updates_are_published_at_most_every_interval(tmp_path):
    with AlertStore(tmp_path / "alerts.db", OutboxPolicy(update_interval_s=10)) as store:
        a = make_alert(1, type="littering")
        store.add(a, now=NOW)
        for k in range(1, 6):                                     # five updates within 5 s: held back
            store.update(a.alert_id, conf=0.5 + k / 20, now=NOW + dt.timedelta(seconds=k))
        assert [r.type for r in _outbox(store)] == ["alert.created"]
        assert len(store.history(a.alert_id)) == 6                 # the history keeps every change
        assert store.flush_updates(NOW + dt.timedelta(seconds=5)) == 0       # not 10 s yet
        assert store.flush_updates(NOW + dt.timedelta(seconds=12)) == 1
        rows = _outbox(store)
        assert [r.type for r in rows] == ["alert.created", "alert.updated"]
        assert json.loads(rows[-1].body)["data"]["conf"] == 0.75            # the latest state
        assert store.flush_updates(NOW + dt.timedelta(seconds=30)) == 0      # once
        store.update(a.alert_id, conf=0.8, now=NOW + dt.timedelta(seconds=13))   # held again
        store.update(a.alert_id, event="alert.ended", end_time_s=20.0, end_utc=T0 + dt.timedelta(seconds=20),
                     now=NOW + dt.timedelta(seconds=14))            # an end is published at once, with it
        rows = _outbox(store)
        assert [r.type for r in rows][-1] == "alert.ended" and json.loads(rows[-1].body)["data"]["conf"] == 0.8
        assert store.flush_updates(NOW + dt.timedelta(seconds=60)) == 0
