"""Audit log: record and filter, the hash chain, and tampering through raw SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.errors import BaqylauError
from search.audit import AuditError, AuditLog, GENESIS_HASH
from tests.conftest import REPO


def make_log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db")
    log.record(user="aliya", case_ref="KZ-2026-001", action="search.photo",
               query={"photo_sha256": "ab" * 32, "from": "2026-01-01T00:00:00Z", "camera": ["c1"]}, results=12)
    log.record(user="berik", case_ref="KZ-2026-002", action="search.colour",
               query={"upper": "red", "lower": "blue"}, results=0, note="caller's description")
    log.record(user="aliya", case_ref="KZ-2026-002", action="watchlist.add", query={"entry_id": "W-000001"})
    return log


def test_record_and_entries_with_filters(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    rows = log.entries()
    assert [r.seq for r in rows] == [3, 2, 1]  # newest first
    assert rows[2].query == {"photo_sha256": "ab" * 32, "from": "2026-01-01T00:00:00Z", "camera": ["c1"]}
    assert rows[2].results == 12 and rows[0].results is None and rows[1].note == "caller's description"
    assert rows[0].time_utc.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - rows[0].time_utc).total_seconds()) < 600
    assert [r.seq for r in log.entries(user="aliya")] == [3, 1]
    assert [r.seq for r in log.entries(case_ref="KZ-2026-002")] == [3, 2]
    assert [r.seq for r in log.entries(user="aliya", case_ref="KZ-2026-002")] == [3]
    assert [r.seq for r in log.entries(limit=1)] == [3]
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert log.entries(since=future) == []
    assert len(log.entries(since=rows[2].time_utc)) == 3
    assert log.head() == (3, rows[0].hash)
    assert log.verify()


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    log = AuditLog(tmp_path / "audit.db")
    assert log.record(user="chingiz", case_ref="KZ-1", action="search.follow", query={"sighting_id": "x"}) == 4
    check = log.verify()
    assert check.ok and check.rows == 4


def test_other_process_appends_to_the_same_chain(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    code = ("import sys; from search.audit import AuditLog; "
            "print(AuditLog(sys.argv[1]).record(user='dana', case_ref='K', action='a', query={}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "audit.db")], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "4"
    assert log.record(user="aliya", case_ref="K", action="a", query={}) == 5
    assert log.verify().rows == 5


@pytest.mark.parametrize("kwargs", [
    {"user": "", "case_ref": "K", "action": "a", "query": {}},
    {"user": "  ", "case_ref": "K", "action": "a", "query": {}},
    {"user": "u", "case_ref": "", "action": "a", "query": {}},
    {"user": "u", "case_ref": "K", "action": "", "query": {}},
    {"user": "u", "case_ref": "K", "action": "a", "query": {"photo": object()}},
    {"user": "u", "case_ref": "K", "action": "a", "query": {"x": float("nan")}},
    {"user": "u", "case_ref": "K", "action": "a", "query": ["not", "a", "mapping"]},
    {"user": "u", "case_ref": "K", "action": "a", "query": {}, "results": -1},
])
def test_invalid_records_are_refused(tmp_path: Path, kwargs: dict) -> None:
    log = AuditLog(tmp_path / "audit.db")
    with pytest.raises(AuditError) as info:
        log.record(**kwargs)
    assert isinstance(info.value, (BaqylauError, ValueError))
    assert log.entries() == []


def test_naive_since_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError):
        AuditLog(tmp_path / "audit.db").entries(since=dt.datetime(2026, 1, 1))


def test_update_and_delete_are_refused_by_the_database(tmp_path: Path) -> None:
    make_log(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "audit.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET user = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 1")


def tamper(path: Path, *statements: str) -> None:
    """Change the file as an attacker with raw SQLite access would: drop the guards first."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("statements", "bad_seq"), [
    (["UPDATE audit SET user = 'someone-else' WHERE seq = 2"], 2),
    (["UPDATE audit SET query = '{\"upper\":\"green\",\"lower\":\"blue\"}' WHERE seq = 2"], 2),
    (["UPDATE audit SET results = 99 WHERE seq = 1"], 1),
    (["UPDATE audit SET time_utc = '2020-01-01T00:00:00.000000Z' WHERE seq = 3"], 3),
    (["DELETE FROM audit WHERE seq = 2"], 2),
    (["DELETE FROM audit WHERE seq = 3"], 3),
    # a row rewritten with a fresh hash still breaks the link to the next one
    (["UPDATE audit SET user = 'x', hash = '" + "f" * 64 + "' WHERE seq = 1"], 1),
])
def test_tampering_is_detected(tmp_path: Path, statements: list[str], bad_seq: int) -> None:
    make_log(tmp_path).close()
    tamper(tmp_path / "audit.db", *statements)
    check = AuditLog(tmp_path / "audit.db").verify()
    assert not check and check.first_bad_seq == bad_seq, check
    assert check.reason


def test_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    from search.audit import row_hash

    make_log(tmp_path).close()
    fields = {"seq": 1, "time_utc": AuditLog(tmp_path / "audit.db").entries()[-1].time_utc
              .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "user": "mallory", "case_ref": "KZ-2026-001",
              "action": "search.photo", "query": {"photo_sha256": "ab" * 32, "from": "2026-01-01T00:00:00Z",
                                                  "camera": ["c1"]}, "results": 12, "note": ""}
    tamper(tmp_path / "audit.db",
           f"UPDATE audit SET user = 'mallory', hash = '{row_hash(GENESIS_HASH, fields)}' WHERE seq = 1")
    check = AuditLog(tmp_path / "audit.db").verify()
    assert not check and check.first_bad_seq == 2 and "prev_hash" in check.reason
