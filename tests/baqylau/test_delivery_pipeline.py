"""End to end: `baqylau run` on real video delivers its alerts to a real webhook receiver (embedded
bus in one process; Redis Streams with decode worker processes), with a Cyrillic/Kazakh camera id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from alerts.store import AlertStore
from alerts.webhooks import generate_secret
from tests.servers import WebhookReceiver as Receiver
from tests.conftest import REPO, VTEST, need
from tests.servers import redis_server  # noqa: F401

pytestmark = pytest.mark.slow

CAMERA = "Көктем 3 / кіреберіс"
HOOK = "Көктем ops"


def _config(tmp_path: Path, receiver: Receiver, secret: str, extra: str = "") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""
        data_dir: {tmp_path / 'data'}
        timezone: Asia/Almaty
        detector: {{kind: motion}}
        alerts:
          cooldown_s: 5
          media_base_url: https://bq.example/media
          routes:
            - {{types: [loitering], routes: [police, "webhook:{HOOK}"]}}
          webhooks:
            - name: "{HOOK}"
              url: "http://127.0.0.1:{receiver.port}/hook/Көктем ops"   # sent percent-encoded
              secrets: ["{secret}"]
              retry_schedule_s: [0, 0.1, 0.2, 0.5, 1, 1, 1, 1]
        {extra}
        cameras:
          - id: "{CAMERA}"
            name: "Көктем 3, кіреберіс"
            url: {VTEST}
            analysis_fps: 5
            zones: [{{id: walk, units: norm, points: [[0, 0.4], [1, 0.4], [1, 1], [0, 1]]}}]
            rules: [{{id: linger, type: loitering, zone: walk, min_duration_s: 3}}]
        """))
    return cfg


def _run(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baqylau", "run", str(cfg), "--until-eof"], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env=os.environ.copy())


def _check(tmp_path: Path, receiver: Receiver, secret: str) -> None:
    with AlertStore(tmp_path / "data" / "alerts.db") as store:
        alerts = store.list()
        rows = [r for r in store.outbox_rows(limit=100_000) if f"webhook:{HOOK}" in r.routes]
        assert store.outbox_stats()["pending"] == 0
    assert alerts, "the clip raises loitering alerts"
    assert all(a.camera_id == CAMERA for a in alerts)
    for a in alerts:
        assert Path(a.snapshot_path).is_file() and "Көктем%203%20%2F%20кіреберіс" in a.snapshot_path
    got = receiver.accepted()
    ids = [r["headers"]["webhook-id"] for r in got]
    assert sorted(ids) == sorted(r.msg_id for r in rows), "every event delivered exactly once"
    verifier = Webhook(secret)
    from urllib.parse import quote

    for r in got:
        assert r["path"] == "/hook/" + quote("Көктем ops")
        verifier.verify(r["body"], r["headers"])
        assert r["data"]["camera_id"] == CAMERA
        assert r["data"]["snapshot_url"].startswith("https://bq.example/media/")
    # in order of creation: each alert's events arrive in the order they were committed
    seq = {r.msg_id: r.seq for r in rows}
    arrived = [seq[i] for i in ids]
    assert arrived == sorted(arrived)
    created = {r["data"]["alert_id"] for r in got if json.loads(r["body"])["type"] == "alert.created"}
    assert created == {a.alert_id for a in alerts}


def test_run_delivers_alerts_to_webhook_embedded(tmp_path):
    need(VTEST)
    secret = generate_secret()
    receiver = Receiver(secret).start()
    n = [0]

    def plan(msg_id: str, k: int) -> int:  # the first three requests fail: retried, same id
        n[0] += 1
        return 500 if n[0] <= 3 else 200
    receiver.plan = plan
    try:
        done = _run(_config(tmp_path, receiver, secret))
        assert done.returncode == 0, done.stderr[-3000:]
        _check(tmp_path, receiver, secret)
        retried = [ids for ids in receiver.by_msg().values() if len(ids) > 1]
        assert retried and all(r["status"] in (500, 200) for reqs in retried for r in reqs)
    finally:
        receiver.stop()


def test_run_with_redis_and_worker_processes(tmp_path, redis_server):  # noqa: F811
    need(VTEST)
    secret = generate_secret()
    receiver = Receiver(secret).start()
    try:
        extra = textwrap.indent(textwrap.dedent(f"""
            runtime: {{decode_workers: 1}}
            """), "")
        cfg = _config(tmp_path, receiver, secret, extra="")
        text = cfg.read_text().replace("  webhooks:", f"  bus: {{redis_url: '{redis_server.url}'}}\n  webhooks:")
        cfg.write_text(text + extra)
        done = _run(cfg)
        assert done.returncode == 0, done.stderr[-3000:]
        _check(tmp_path, receiver, secret)
        import redis

        r = redis.Redis.from_url(redis_server.url)
        assert r.xlen(f"baqylau:route:webhook:{HOOK}".encode()) == len(receiver.accepted())
        assert r.xlen("baqylau:route:police") >= 1
    finally:
        receiver.stop()
