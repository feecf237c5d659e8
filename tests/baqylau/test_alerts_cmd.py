"""The delivery CLI as an operator and an integrator use it: lifecycle commands with history,
Open311 tickets, routes and the pull consumer, webhook replays, and ``baqylau deliver`` as a real
subprocess posting to a real loopback HTTP receiver (no pipeline run: alerts are put into the
store with ``open_alert_store(cfg).add``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alerts.delivery import DeliveryLog
from alerts.relay import Relay
from alerts.webhooks import generate_secret
from baqylau.cli import main
from baqylau.config import load_config
from baqylau.delivery import open_alert_store, open_configured_bus
from tests.alerts.helpers import make_alert
from tests.conftest import REPO
from tests.servers import WebhookReceiver

KOKTEM_NAME = "Көктем 3 / кіреберіс"
HOOK = "Көктем ops"
USER = "inspector.Сәкен"
#: Longest wait for the deliver subprocess to post or to stop, s.
WAIT_S = 30.0


def write_config(tmp_path: Path, hook_url: str = "http://127.0.0.1:9/hook", name: str = "cfg.yaml") -> Path:
    cfg = {"data_dir": str(tmp_path / "var"), "timezone": "Asia/Almaty", "log_level": "WARNING",
           "cameras": [{"id": "koktem-3", "name": KOKTEM_NAME, "url": str(tmp_path / "absent.mp4")}],
           "alerts": {
               "webhooks": [{"name": HOOK, "url": hook_url, "secrets": [generate_secret()],
                             "retry_schedule_s": [0, 0.2, 0.5]}],
               "routes": [{"types": ["littering"], "routes": ["police"]},
                          {"types": ["bin_overflow"], "routes": ["ticketing"]},
                          {"routes": [f"webhook:{HOOK}"]}]}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def add_alerts(cfg_path: Path, **ids: str):
    """Store a bin_overflow (ticketing) and a littering (police) alert; return them."""
    bin_alert = make_alert(1, camera_id="koktem-3", type="bin_overflow", camera_name=KOKTEM_NAME,
                           **({"alert_id": ids["bin_id"]} if "bin_id" in ids else {}))
    litter = make_alert(2, camera_id="koktem-3", type="littering", camera_name=KOKTEM_NAME, rule_id="litter",
                        **({"alert_id": ids["litter_id"]} if "litter_id" in ids else {}))
    with open_alert_store(load_config(cfg_path)) as store:
        assert store.add(bin_alert) and store.add(litter)
    return bin_alert, litter


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_lifecycle_history_and_tickets(cfg_path, capsys):
    bin_alert, litter = add_alerts(cfg_path)
    c = str(cfg_path)
    code, out, _ = cli(capsys, "alerts", "ack", bin_alert.alert_id[:8], "--config", c, "--by", USER)
    assert code == 0 and "new -> acknowledged" in out and USER in out
    assert cli(capsys, "alerts", "dispatch", bin_alert.alert_id, "--config", c, "--by", USER)[0] == 0
    code, out, _ = cli(capsys, "alerts", "resolve", bin_alert.alert_id[:12], "--config", c, "--by", USER,
                       "--note", "Бак босатылды")
    assert code == 0 and "dispatched -> resolved" in out

    code, out, _ = cli(capsys, "alerts", "history", bin_alert.alert_id[:8], "--config", c, "--json")
    hist = json.loads(out)
    assert hist["status"] == "resolved"
    assert [e["to_status"] for e in hist["events"]] == ["new", "acknowledged", "dispatched", "resolved"]
    assert [e["actor"] for e in hist["events"][1:]] == [USER] * 3
    assert hist["events"][-1]["note"] == "Бак босатылды"
    code, out, _ = cli(capsys, "alerts", "history", bin_alert.alert_id, "--config", c)
    assert code == 0 and "acknowledged -> dispatched" in out and "Бак босатылды" in out

    # a forbidden move and a rejection without reason are user errors with one clear line
    code, _, err = cli(capsys, "alerts", "resolve", bin_alert.alert_id, "--config", c)
    assert code == 2 and "cannot become 'resolved'" in err
    code, _, err = cli(capsys, "alerts", "reject", litter.alert_id, "--config", c)
    assert code == 2 and "--reason" in err and "false_positive" in err
    code, _, err = cli(capsys, "alerts", "ack", "abc", "--config", c)
    assert code == 2 and "at least 8" in err

    before = dt.datetime.now(dt.timezone.utc)
    code, out, _ = cli(capsys, "alerts", "defer", litter.alert_id, "--config", c, "--until", "+1h", "--note", "түнде")
    assert code == 0 and "new -> deferred" in out
    code, out, _ = cli(capsys, "alerts", "history", litter.alert_id, "--config", c, "--json")
    due = dt.datetime.fromisoformat(json.loads(out)["events"][-1]["due_utc"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=59) < due - before < dt.timedelta(minutes=61)
    code, out, _ = cli(capsys, "alerts", "defer", litter.alert_id, "--config", c, "--until", "tomorrow")
    assert code == 2

    code, out, _ = cli(capsys, "alerts", "list", "--config", c, "--status", "resolved", "--json")
    assert [a["alert_id"] for a in json.loads(out)] == [bin_alert.alert_id]

    code, out, _ = cli(capsys, "tickets", "list", "--config", c)
    tickets = json.loads(out)
    assert code == 0 and len(tickets) == 1 and "Көктем" in out  # UTF-8 unescaped
    assert tickets[0]["status"] == "closed" and "Бак босатылды" in tickets[0]["status_notes"]
    assert tickets[0]["service_code"] == "waste-bin-overflow"
    assert json.loads(cli(capsys, "tickets", "list", "--config", c, "--status", "open")[1]) == []
    code, out, _ = cli(capsys, "tickets", "list", "--config", c, "--table")
    assert code == 0 and "closed" in out and "1 ticket(s)" in out
    code, out, _ = cli(capsys, "tickets", "services", "--config", c)
    assert "waste-bin-overflow" in {s["service_code"] for s in json.loads(out)}


def test_prefix_must_be_unique(cfg_path, capsys):
    add_alerts(cfg_path, bin_id="deadbeef-0000-5000-8000-000000000001",
               litter_id="deadbeef-0000-5000-8000-000000000002")
    code, _, err = cli(capsys, "alerts", "ack", "deadbeef", "--config", str(cfg_path))
    assert code == 2 and "matches 2 alerts" in err
    code, out, _ = cli(capsys, "alerts", "ack", "deadbeef-0000-5000-8000-0000000000", "--config", str(cfg_path))
    assert code == 2
    code, out, _ = cli(capsys, "alerts", "ack", "deadbeef-0000-5000-8000-000000000002", "--config", str(cfg_path))
    assert code == 0 and "littering" in out


def test_routes_read_replay_and_endpoints(cfg_path, capsys):
    cfg, c = load_config(cfg_path), str(cfg_path)
    bin_alert, litter = add_alerts(cfg_path)
    assert cli(capsys, "alerts", "ack", bin_alert.alert_id, "--config", c)[0] == 0

    # the lifecycle command published the outbox itself (no pipeline is running here)
    status = json.loads(cli(capsys, "routes", "status", "--config", c, "--json")[1])
    assert [r["route"] for r in status["routes"]] == ["police", "ticketing", f"webhook:{HOOK}"]
    with open_alert_store(cfg) as store:
        bus = open_configured_bus(cfg)
        try:
            relay = Relay(store, bus)
            assert relay.run_once() == 0           # nothing left, and the CLI gave the lease back
            store.release_lease("relay", relay.owner)
        finally:
            bus.close()
    by_route = {r["route"]: r for r in status["routes"]}
    assert status["outbox"]["pending"] == 0 and status["outbox"]["published"] == 3
    assert (by_route["ticketing"]["length"], by_route["police"]["length"], by_route[f"webhook:{HOOK}"]["length"]) \
        == (2, 1, 3)
    code, out, _ = cli(capsys, "routes", "status", "--config", c)
    assert code == 0 and f"webhook:{HOOK}" in out and "3 published" in out

    code, out, _ = cli(capsys, "routes", "read", "ticketing", "--config", c, "--group", "city", "--ack")
    entries = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["fields"]["type"] for e in entries] == ["alert.created", "alert.acknowledged"]
    assert all(e["fields"]["alert_id"] == bin_alert.alert_id for e in entries)
    assert entries[0]["fields"]["ticket"]["service_code"] == "waste-bin-overflow"
    assert entries[0]["fields"]["body"]["data"]["camera_name"] == KOKTEM_NAME
    assert cli(capsys, "routes", "read", "ticketing", "--config", c, "--group", "city", "--ack")[1] == ""
    assert cli(capsys, "routes", "read", "ticketing", "--config", c, "--group", "city", "--pending")[1] == ""
    code, _, err = cli(capsys, "routes", "read", "ticketing", "--config", c, "--group", "baqylau")
    assert code == 2 and "own delivery workers" in err
    code, _, err = cli(capsys, "routes", "read", "nowhere", "--config", c, "--group", "city")
    assert code == 2 and "route" in err
    code, out, _ = cli(capsys, "routes", "dead", f"webhook:{HOOK}", "--config", c, "--json")
    assert code == 0 and json.loads(out) == []

    # replay: new outbox rows for the endpoint with the original webhook-ids
    with open_alert_store(cfg) as store:
        original = store.outbox_rows(alert_id=bin_alert.alert_id)
    code, out, _ = cli(capsys, "webhooks", "replay", HOOK, "--config", c, "--alert", bin_alert.alert_id[:10])
    assert code == 0 and "queued 2 event(s)" in out
    code, out, _ = cli(capsys, "webhooks", "replay", HOOK, "--config", c, "--msg", original[0].msg_id)
    assert code == 0 and "queued 1 event(s)" in out
    with open_alert_store(cfg) as store:
        pending = store.outbox_pending()
    assert [r.msg_id for r in pending] == [r.msg_id for r in original] + [original[0].msg_id]
    assert all(r.routes == (f"webhook:{HOOK}",) for r in pending)
    code, _, err = cli(capsys, "webhooks", "replay", HOOK, "--config", c, "--msg", "msg_nope")
    assert code == 2 and "msg_nope" in err
    code, _, err = cli(capsys, "webhooks", "replay", "nobody", "--config", c, "--alert", bin_alert.alert_id)
    assert code == 2 and HOOK in err

    # endpoint state: disabled after a 410 (as a worker would record it), then re-enabled
    dlog = DeliveryLog(Path(cfg.data_dir) / "deliveries.db")
    dlog.record(f"webhook:{HOOK}", original[0].msg_id, 1, "disabled", http_status=410, error="410 Gone")
    dlog.disable(f"webhook:{HOOK}", "410 Gone")
    dlog.close()
    hooks = json.loads(cli(capsys, "webhooks", "list", "--config", c, "--json")[1])
    assert hooks[0]["name"] == HOOK and hooks[0]["disabled"] and hooks[0]["disabled_reason"] == "410 Gone"
    assert hooks[0]["last_attempt"]["http_status"] == 410
    code, out, _ = cli(capsys, "webhooks", "enable", HOOK, "--config", c)
    assert code == 0 and "enabled" in out
    assert not json.loads(cli(capsys, "webhooks", "list", "--config", c, "--json")[1])[0]["disabled"]
    code, out, _ = cli(capsys, "webhooks", "attempts", "--config", c, "--endpoint", HOOK, "--json")
    assert [a["http_status"] for a in json.loads(out)] == [410]
    code, out, _ = cli(capsys, "webhooks", "secret")
    assert code == 0 and out.startswith("whsec_")


def test_deliver_posts_and_stops_on_sigterm(tmp_path, capsys):
    receiver = WebhookReceiver().start()
    try:
        cfg_path = write_config(tmp_path, receiver.url)
        bin_alert, litter = add_alerts(cfg_path)
        proc = subprocess.Popen([sys.executable, "-m", "baqylau", "deliver", str(cfg_path), "--log-level", "INFO"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            deadline = time.monotonic() + WAIT_S
            while len(receiver.accepted()) < 2 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert len(receiver.accepted()) == 2, proc.stderr.read() if proc.poll() is not None else "no deliveries"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err[-2000:]
        assert "delivery stopped" in err
    finally:
        receiver.stop()
    with open_alert_store(load_config(cfg_path)) as store:
        msg_ids = {r.msg_id for r in store.outbox_rows()}
    got = receiver.accepted_ids()
    assert got == msg_ids
    assert {r["data"]["alert_id"] for r in receiver.accepted()} == {bin_alert.alert_id, litter.alert_id}
    assert all(r["headers"]["webhook-signature"].startswith("v1,") for r in receiver.accepted())
    code, out, _ = cli(capsys, "webhooks", "attempts", "--config", str(cfg_path), "--json")
    assert sorted(a["outcome"] for a in json.loads(out)) == ["delivered", "delivered"]
    hooks = json.loads(cli(capsys, "webhooks", "list", "--config", str(cfg_path), "--json")[1])
    assert hooks[0]["delivered"] == 2 and hooks[0]["last_attempt"]["outcome"] == "delivered"
