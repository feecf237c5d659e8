"""SQLite alert store: round trip, duplicates, WAL, threads, reopen, errors."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest

from alerts.record import AlertRecordError
from alerts.store import SCHEMA_VERSION, AlertStore, AlertStoreError
from ingest.errors import BaqylauError
from tests.alerts.helpers import T0, make_alert


def test_round_trip_and_duplicates(tmp_path):
    with AlertStore(tmp_path / "deep" / "dir" / "alerts.db") as store:
        alert = make_alert(1)
        assert store.add(alert) is True
        assert store.get(alert.alert_id) == alert
        assert store.add(make_alert(1, conf=0.1)) is False          # same id: ignored, not replaced
        assert store.get(alert.alert_id).conf == 0.75
        assert store.count() == 1
        assert store.get("no-such-id") is None


def test_wal_mode_and_schema_version(tmp_path):
    path = tmp_path / "alerts.db"
    AlertStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexed = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"alerts_camera", "alerts_type", "alerts_start"} <= indexed
    finally:
        conn.close()


def test_list_filters_and_order(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        for i in (5, 1, 3, 2, 4):
            store.add(make_alert(i, camera_id="cam-a" if i % 2 else "cam-b",
                                 type="loitering" if i < 4 else "person_in_zone"))
        assert [a.start_time_s for a in store.list()] == [1, 2, 3, 4, 5]
        assert [a.start_time_s for a in store.list(camera_id="cam-a")] == [1, 3, 5]
        assert [a.start_time_s for a in store.list(type="person_in_zone")] == [4, 5]
        assert [a.start_time_s for a in store.list(since_utc=T0 + dt.timedelta(seconds=2.5))] == [3, 4, 5]
        almaty = dt.timezone(dt.timedelta(hours=5))
        since = (T0 + dt.timedelta(seconds=4)).astimezone(almaty)
        assert [a.start_time_s for a in store.list(since_utc=since)] == [4, 5]
        assert [a.start_time_s for a in store.list(camera_id="cam-a", limit=2)] == [1, 3]
        assert store.count("cam-b") == 2 and store.count() == 5
        with pytest.raises(AlertRecordError, match="naive"):
            store.list(since_utc=dt.datetime(2025, 1, 1))


def test_same_start_orders_by_id(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        alerts = [make_alert(0, alert_id=f"id-{c}") for c in "cab"]
        for a in alerts:
            store.add(a)
        assert [a.alert_id for a in store.list()] == ["id-a", "id-b", "id-c"]


def test_update(tmp_path):
    with AlertStore(tmp_path / "a.db") as store:
        alert = make_alert(2)
        store.add(alert)
        end = T0 + dt.timedelta(seconds=8)
        updated = store.update(alert.alert_id, end_time_s=8.0, end_utc=end, track_ids=(2, 3, 9),
                               snapshot_path="snaps/x.jpg", conf=0.9, details={"max_dwell_s": 6.0})
        assert updated == store.get(alert.alert_id)
        assert (updated.end_time_s, updated.end_utc, updated.track_ids) == (8.0, end, (2, 3, 9))
        assert updated.snapshot_path == "snaps/x.jpg" and updated.conf == 0.9
        assert dict(updated.details) == {"max_dwell_s": 6.0}
        assert updated.camera_name == alert.camera_name and updated.start_utc == alert.start_utc
        assert store.update(alert.alert_id, snapshot_path=None).snapshot_path is None
        assert store.update("missing", conf=0.5) is None
        with pytest.raises(AlertRecordError):
            store.update(alert.alert_id, end_utc=dt.datetime(2025, 1, 1))   # naive: rolled back
        assert store.get(alert.alert_id).end_utc == end


def test_concurrent_writers(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    results: list[bool] = []
    lock = threading.Lock()

    def writer(cam: str) -> None:
        for i in range(50):
            ok = store.add(make_alert(i, camera_id=cam))
            ok_again = store.add(make_alert(i, camera_id=cam))
            store.update(make_alert(i, camera_id=cam).alert_id, conf=0.5)
            store.list(camera_id=cam, limit=3)
            with lock:
                results.extend([ok, ok_again])

    threads = [threading.Thread(target=writer, args=(f"cam-{k}",), name=f"writer-cam-{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 200 and results.count(False) == 200
    assert store.count() == 200 and all(a.conf == 0.5 for a in store.list())
    store.close()


def test_reopen_keeps_data_and_rerun_adds_nothing(tmp_path):
    path = tmp_path / "a.db"
    with AlertStore(path) as store:
        assert [store.add(make_alert(i)) for i in range(3)] == [True] * 3
    with AlertStore(path) as store:
        assert store.count() == 3
        assert [store.add(make_alert(i)) for i in range(4)] == [False, False, False, True]
        assert store.count() == 4


def test_closed_store_raises(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    store.close()
    with pytest.raises(AlertStoreError, match="closed"):
        store.add(make_alert())


def test_corrupt_file_raises(tmp_path):
    path = tmp_path / "alerts.db"
    path.write_bytes(b"this is not a sqlite database, just some text " * 100)
    with pytest.raises(AlertStoreError, match="corrupt") as info:
        AlertStore(path)
    assert isinstance(info.value, BaqylauError) and isinstance(info.value, OSError)


def test_newer_schema_raises(tmp_path):
    path = tmp_path / "alerts.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(AlertStoreError, match="newer"):
        AlertStore(path)


def test_unwritable_path_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AlertStoreError, match="cannot open"):
        AlertStore(blocker / "sub" / "alerts.db")          # parent is a regular file
    with pytest.raises(AlertStoreError):
        AlertStore(tmp_path)                               # a directory, not a file


def test_two_connections_on_one_file(tmp_path):
    """Two stores on the same file (as two processes would be) serialise their writes."""
    path = tmp_path / "a.db"
    stores = [AlertStore(path), AlertStore(path)]

    def writer(k: int) -> None:
        for i in range(30):
            stores[k].add(make_alert(i, camera_id=f"cam-{k}"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].count() == stores[1].count() == 60
    for s in stores:
        s.close()
