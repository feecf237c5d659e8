"""End-to-end failure tests of alert delivery (issue 6): store + outbox -> relay -> bus -> route
worker -> a real loopback webhook receiver, over a real ``redis-server`` (AOF, ``appendfsync
always``) and the embedded bus.

Covers what ``test_delivery.py`` (route workers fed by hand) does not: the whole path from
``AlertStore.add``, processes killed with SIGKILL between storing and publishing, Redis shut down
or frozen while alerts flow, receiver failures over Redis, a 410 endpoint next to a healthy one,
a 1,000-alert burst, and Unicode names everywhere. Signatures are checked with the reference
Standard Webhooks verifier (``standardwebhooks``).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable

import pytest
import redis

from alerts.bus import EmbeddedBus, RedisBus
from alerts.delivery import DeliveryLog, RouteWorker, WebhookDeliverer
from alerts.outbox import OutboxPolicy, OutboxRow
from alerts.relay import Relay
from alerts.routing import RouteRule, Router
from alerts.store import AlertStore
from tests.alerts.helpers import make_alert
from tests.conftest import REPO, need_tool, wait_until
from tests.servers import RedisServer
from tests.servers import WebhookReceiver as Receiver

Webhook = pytest.importorskip("standardwebhooks.webhooks").Webhook

ROUTE = "webhook:rx"
CAMERAS = ("Көктем 3 / кіреберіс", "cam-2", "Абай даңғылы 12")
#: Short retry schedule; its last delay repeats, and nothing is dead-lettered before 1000 attempts.
SCHEDULE_S = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
DEAD_AFTER = 1000
WAIT_S = 30.0


class Flow:
    """The whole delivery path of one alert store: relay and one route worker per receiver.

    Alerts are routed to every receiver's route (``OutboxPolicy`` with one rule).
    """

    def __init__(self, tmp_path, bus, receivers: dict[str, Receiver], **worker_kw) -> None:
        self.bus = bus
        self.store = AlertStore(tmp_path / "alerts.db", OutboxPolicy(Router([RouteRule(routes=list(receivers))])))
        self.log = DeliveryLog(tmp_path / "deliveries.db")
        self.relay = Relay(self.store, bus, idle_s=0.02, max_backoff_s=0.5)
        worker_kw = dict(schedule_s=SCHEDULE_S, dead_letter_after=DEAD_AFTER, block_ms=200) | worker_kw
        self.workers = {route: RouteWorker(route, bus, WebhookDeliverer(route, rx.url, [rx.secret], timeout_s=0.4),
                                           self.log, rng=random.Random(0), **worker_kw)
                        for route, rx in receivers.items()}
        self.added = 0

    def start(self) -> Flow:
        self.relay.start()
        for worker in self.workers.values():
            worker.start()
        return self

    def add(self, n: int, cameras: Iterable[str] = CAMERAS, every_s: float = 0.0) -> None:
        """Add ``n`` alerts, cameras round-robin, one every ``every_s`` seconds, waking the relay."""
        cameras = tuple(cameras)
        for _ in range(n):
            i = self.added
            assert self.store.add(make_alert(i, camera_id=cameras[i % len(cameras)], camera_name=cameras[i % len(cameras)]))
            self.added += 1
            self.relay.wake()
            if every_s:
                time.sleep(every_s)

    def rows(self, route: str = ROUTE) -> list[OutboxRow]:
        return [r for r in self.store.outbox_rows(limit=100_000) if route in r.routes]

    def alive(self) -> bool:
        """The relay thread and every worker thread are running."""
        names = {t.name for t in threading.enumerate() if t.is_alive()}
        return "alert-relay" in names and all(f"deliver-{route}" in names for route in self.workers)

    def stop(self) -> None:
        self.relay.stop(10)
        for worker in self.workers.values():
            worker.stop(10)
        self.log.close()
        self.store.close()


def check_delivery(rx: Receiver, rows: list[OutboxRow], *, exactly_once: bool) -> None:
    """Every row accepted (once when ``exactly_once``), in outbox order per camera, each request
    signed as Standard Webhooks requires, with the outbox body and ``webhook-id`` on every attempt."""
    by_id = {r.msg_id: r for r in rows}
    accepted = rx.accepted()
    assert {r["id"] for r in accepted} == set(by_id)
    if exactly_once:
        assert len(accepted) == len(by_id)
    first: dict[str, list[int]] = defaultdict(list)
    for r in accepted:
        seq = by_id[r["id"]].seq
        if seq not in first[r["data"]["camera_id"]]:
            first[r["data"]["camera_id"]].append(seq)
    for camera, seqs in first.items():
        assert seqs == sorted(seqs), f"camera {camera!r} got outbox seqs out of order: {seqs}"
    verifier = Webhook(rx.secret)
    for r in rx.all():
        row = by_id[r["id"]]
        assert r["body"] == row.body.encode("utf-8")
        assert verifier.verify(r["body"], r["headers"])["data"]["alert_id"] == row.alert_id
        assert r["data"]["camera_id"] == row.camera_id


def stream_seqs(server: RedisServer, route: str, prefix: str = "baqylau") -> list[int]:
    """The outbox ``seq`` field of every entry of a route's stream, in stream order, read with a
    plain redis-py client."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return [int(f["seq"]) for _, f in client.xrange(f"{prefix}:route:{route}")]
    finally:
        client.close()


def rss_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``, second field, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def receiver():
    rx = Receiver()
    yield rx
    rx.stop()


@pytest.fixture
def server(tmp_path):
    need_tool("redis-server")
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


def redis_bus(server: RedisServer) -> RedisBus:
    return RedisBus(server.url, socket_timeout_s=1.0, connect_timeout_s=0.5)


# --- a. SIGKILL between storing and publishing ---------------------------------------------------

#: Run in a child process: ``db redis_url mode k``. Adds k alerts, then dies by SIGKILL:
#: ``stored`` before any relay ran; ``after_first_xadd`` right after the relay's first XADD;
#: ``before_mark`` after the relay's XADDs, when it is about to mark the rows published.
CHILD = r"""
import os, signal, sys
from alerts.bus import RedisBus
from alerts.outbox import OutboxPolicy
from alerts.relay import Relay
from alerts.routing import RouteRule, Router
from alerts.store import AlertStore
from tests.alerts.helpers import make_alert

db, url, mode, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cameras = ("Көктем 3 / кіреберіс", "cam-2", "Абай даңғылы 12")
store = AlertStore(db, OutboxPolicy(Router([RouteRule(routes=["webhook:rx"])])))
for i in range(k):
    store.add(make_alert(i, camera_id=cameras[i % 3], camera_name=cameras[i % 3]))

def die(*args, **kw):
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "stored":
    die()
bus = RedisBus(url, socket_timeout_s=2.0)
relay = Relay(store, bus, lease_ttl_s=1.0)
if mode == "after_first_xadd":  # the batch got as far as its first entry
    publish_many = bus.publish_many
    def publish_then_die(items, source):
        publish_many(items[:1], source)
        die()
    bus.publish_many = publish_then_die
else:
    store.mark_published = die
relay.run_once()
sys.exit(3)
"""


@pytest.mark.parametrize("mode", ["stored", "after_first_xadd", "before_mark"])
def test_sigkill_between_store_and_publish_publishes_once(mode, tmp_path, server, receiver):
    k = 20
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "alerts.db"), server.url, mode, str(k)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(stream_seqs(server, ROUTE)) == {"stored": 0, "after_first_xadd": 1, "before_mark": k}[mode]

    receiver.start()
    flow = Flow(tmp_path, redis_bus(server), {ROUTE: receiver})
    assert flow.store.outbox_stats() == {"pending": k, "published": 0,
                                         "oldest_pending_utc": flow.rows()[0].created_utc}
    flow.start()  # takes the relay lease over once the dead child's 1 s lease expires
    try:
        wait_until(lambda: len(receiver.accepted()) >= k, WAIT_S, f"{k} deliveries after the restart")
        wait_until(lambda: flow.workers[ROUTE].stats()["in_window"] == 0, WAIT_S, "the window to empty")
        wait_until(lambda: flow.store.outbox_stats()["pending"] == 0, WAIT_S, "the outbox to be published")
        rows = flow.rows()
        assert len(rows) == k and flow.store.count() == k
        assert stream_seqs(server, ROUTE) == [r.seq for r in rows]  # each row published once
        check_delivery(receiver, rows, exactly_once=True)
    finally:
        flow.stop()
        flow.bus.close()


# --- b. Redis shut down or frozen while alerts flow ----------------------------------------------

def test_redis_shutdown_nosave_and_restart_while_alerts_flow(tmp_path, server, receiver):
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    client.close()
    receiver.start()
    flow = Flow(tmp_path, redis_bus(server), {ROUTE: receiver}).start()
    adder = threading.Thread(target=flow.add, args=(150,), kwargs=dict(every_s=0.02), name="adder")
    try:
        adder.start()
        wait_until(lambda: len(receiver.accepted()) >= 20, WAIT_S, "20 deliveries before the shutdown")
        server.shutdown_nosave()
        time.sleep(1.0)
        assert flow.alive()
        server.start()  # same port and folder: the AOF brings back streams, groups and pending lists
        adder.join(WAIT_S)
        wait_until(lambda: len(receiver.accepted_ids()) >= 150, WAIT_S, "all 150 alerts after the restart")
        wait_until(lambda: flow.store.outbox_stats()["pending"] == 0, WAIT_S, "the outbox to be published")
        assert flow.alive()
        rows = flow.rows()
        assert len(rows) == 150
        assert stream_seqs(server, ROUTE) == [r.seq for r in rows]
        check_delivery(receiver, rows, exactly_once=False)  # an ack lost in the shutdown may repeat one
    finally:
        flow.stop()
        flow.bus.close()


@pytest.mark.slow
def test_redis_frozen_60s_then_resumed(tmp_path, server, receiver, caplog):
    caplog.set_level(logging.WARNING, logger="alerts.delivery")
    receiver.start()
    flow = Flow(tmp_path, redis_bus(server), {ROUTE: receiver}).start()
    adder = threading.Thread(target=flow.add, args=(150,), kwargs=dict(every_s=0.02), name="adder")
    try:
        adder.start()
        wait_until(lambda: len(receiver.accepted()) >= 20, WAIT_S, "20 deliveries before the freeze")
        server.stop_process()  # SIGSTOP: connections are accepted by the kernel, never answered
        time.sleep(5)
        relay_errors, worker_warnings = flow.relay.errors, len(caplog.records)
        delivered = len(receiver.accepted_ids())
        time.sleep(55)
        # Every call gives up after its timeout: both loops keep turning instead of hanging.
        assert flow.relay.errors > relay_errors and len(caplog.records) > worker_warnings
        assert len(receiver.accepted_ids()) == delivered and flow.alive()
        adder.join(1)
        assert not adder.is_alive() and flow.store.count() == 150  # the store never waited for Redis
        server.cont_process()
        wait_until(lambda: len(receiver.accepted_ids()) >= 150, 20, "all 150 alerts after SIGCONT")
        wait_until(lambda: flow.store.outbox_stats()["pending"] == 0, WAIT_S, "the outbox to be published")
        assert flow.alive()
        rows = flow.rows()
        assert stream_seqs(server, ROUTE) == [r.seq for r in rows]
        check_delivery(receiver, rows, exactly_once=False)
    finally:
        server.cont_process()
        flow.stop()
        flow.bus.close()


# --- c. receiver failures over Redis -------------------------------------------------------------

def test_receiver_failures_over_redis_keep_order_ids_and_signatures(tmp_path, server):
    receiver = Receiver()  # not listening yet: the first attempts are refused
    flow = Flow(tmp_path, redis_bus(server), {ROUTE: receiver}, max_in_flight=3)
    flow.add(30)
    rows = flow.rows()
    plans = {r.msg_id: p for r, p in zip(rows, [[], [500], ["sleep"], [429], [500, 503], [], [404, 429]] * 5)}
    receiver.plan = lambda msg_id, n: plans[msg_id][n] if n < len(plans[msg_id]) else 200
    flow.start()
    try:
        wait_until(lambda: len(flow.log.attempts(route=ROUTE)) >= 6, WAIT_S, "6 refused attempts")
        receiver.start()
        wait_until(lambda: len(receiver.accepted()) >= 30, WAIT_S, "all 30 alerts")
        wait_until(lambda: flow.workers[ROUTE].stats()["in_window"] == 0, WAIT_S, "the window to empty")
    finally:
        flow.stop()
        flow.bus.close()
        receiver.stop()
    check_delivery(receiver, rows, exactly_once=True)
    assert {r.camera_id for r in rows} == set(CAMERAS)
    # Per camera, not even a retry goes back to an earlier alert.
    seq_of = {r.msg_id: r.seq for r in rows}
    for camera in CAMERAS:
        seqs = [seq_of[r["id"]] for r in receiver.all() if r["data"]["camera_id"] == camera]
        assert seqs == sorted(seqs)
    log = DeliveryLog(tmp_path / "deliveries.db")
    try:
        refused = 0
        for row in rows:
            plan, got = plans[row.msg_id], [r for r in receiver.all() if r["id"] == row.msg_id]
            assert [r["status"] for r in got] == [503 if p == "sleep" else p for p in plan] + [200]
            attempts = log.attempts(route=ROUTE, msg_id=row.msg_id)
            assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
            assert [a["outcome"] for a in attempts] == ["retry"] * (len(attempts) - 1) + ["delivered"]
            refused += sum(a["error"] is not None and "Refused" in a["error"] for a in attempts)
            assert len(attempts) - len(got) == sum(a["error"] is not None and "Refused" in a["error"]
                                                   for a in attempts)
            for before, after in zip(got, got[1:]):
                if before["status"] == 429:  # Retry-After: 1 beats the 0.05-0.2 s schedule steps
                    assert after["at"] - before["at"] >= 0.9
        assert refused >= 6
        timed_out = [a for a in log.attempts(route=ROUTE, limit=1000) if a["error"] and "timed out" in a["error"]]
        assert len(timed_out) == sum(p.count("sleep") for p in plans.values())
    finally:
        log.close()


# --- d. 410 disables one endpoint only -----------------------------------------------------------

def test_gone_endpoint_is_disabled_while_another_on_the_same_redis_keeps_receiving(tmp_path, server, receiver):
    gone = Receiver().start()
    gone.plan = lambda msg_id, n: 410
    receiver.start()
    flow = Flow(tmp_path, redis_bus(server), {"webhook:ok": receiver, "webhook:gone": gone}).start()
    try:
        flow.add(20)
        wait_until(lambda: flow.log.is_disabled("webhook:gone"), WAIT_S, "the 410 endpoint to be disabled")
        wait_until(lambda: len(receiver.accepted()) >= 20, WAIT_S, "the healthy endpoint's 20 alerts")
        wait_until(lambda: flow.workers["webhook:gone"].stats()["disabled"], WAIT_S, "the gone worker to idle")
        asked = len(gone.all())
        flow.add(10)
        wait_until(lambda: len(receiver.accepted()) >= 30, WAIT_S, "the healthy endpoint's next 10 alerts")
        assert len(gone.all()) == asked <= 4  # at most max_in_flight attempts were under way
        assert set(flow.log.disabled()) == {"webhook:gone"}
        assert {a["outcome"] for a in flow.log.attempts(route="webhook:gone")} == {"disabled"}
        wait_until(lambda: flow.store.outbox_stats()["pending"] == 0, WAIT_S, "the outbox to be published")
        gone_stats = flow.bus.stats("webhook:gone", "baqylau")
        assert gone_stats["length"] == 30 and gone_stats["dead"] == 0  # kept for re-enabling
        assert flow.alive()
        check_delivery(receiver, flow.rows("webhook:ok"), exactly_once=True)
    finally:
        flow.stop()
        flow.bus.close()
        gone.stop()


# --- e. a burst of 1,000 alerts ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["embedded", "redis"])
def test_burst_of_1000_alerts_nothing_lost_or_duplicated_memory_bounded(kind, tmp_path, receiver):
    n, window = 1000, 64
    if kind == "redis":
        need_tool("redis-server")
        server = RedisServer(tmp_path / "redis").start()
        bus = redis_bus(server)
    else:
        server, bus = None, EmbeddedBus(tmp_path / "bus.db")
    receiver.start()
    flow = Flow(tmp_path, bus, {ROUTE: receiver}, window=window)
    worker = flow.workers[ROUTE]
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], worker.stats()["in_window"])
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    rss_before = rss_bytes()
    flow.start()
    sampler.start()
    try:
        flow.add(n, cameras=[f"{c} #{j}" for c in CAMERAS for j in range(3)])
        wait_until(lambda: len(receiver.accepted_ids()) >= n, 60, f"all {n} alerts")
        wait_until(lambda: worker.stats()["in_window"] == 0, WAIT_S, "the window to empty")
        rss_growth = rss_bytes() - rss_before
        sampling.set()
        sampler.join(5)
        assert flow.store.count() == n and len(flow.rows()) == n
        assert flow.store.outbox_stats()["pending"] == 0
        assert flow.bus.stats(ROUTE)["length"] == n
        check_delivery(receiver, flow.rows(), exactly_once=True)
        assert peak[0] <= window and worker.stats()["peak_window"] <= window
        assert worker.stats()["delivered"] == n
        assert rss_growth < 100 * 2**20, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
    finally:
        sampling.set()
        flow.stop()
        bus.close()
        if server is not None:
            server.close()


# --- f. Unicode names ----------------------------------------------------------------------------

def test_unicode_camera_and_webhook_names_survive_every_hop(tmp_path, server):
    name = "Көктем ops"
    route = f"webhook:{name}"
    cameras = ("Көктем 3 / кіреберіс", "Абай даңғылы 12 / шығыс", "cam 7 (Әуезов)")
    receiver = Receiver(path="/hooks/" + urllib.parse.quote(name)).start()
    flow = Flow(tmp_path, redis_bus(server), {route: receiver}).start()
    try:
        flow.add(9, cameras=cameras)
        wait_until(lambda: len(receiver.accepted()) >= 9, WAIT_S, "9 Unicode alerts")
        wait_until(lambda: flow.store.outbox_stats()["pending"] == 0, WAIT_S, "the outbox to be published")
        raw = redis.Redis.from_url(server.url)  # bytes: the key is stored as UTF-8
        try:
            key = f"baqylau:route:{route}".encode("utf-8")
            assert key in raw.keys("baqylau:route:*") and raw.xlen(key) == 9
            assert {f[b"camera_id"].decode("utf-8") for _, f in raw.xrange(key)} == set(cameras)
        finally:
            raw.close()
        assert flow.bus.routes() == [route]
        rows = flow.rows(route)
        check_delivery(receiver, rows, exactly_once=True)
        for r in receiver.all():
            assert r["path"] == "/hooks/%D0%9A%D3%A9%D0%BA%D1%82%D0%B5%D0%BC%20ops"
            assert urllib.parse.unquote(r["path"]) == f"/hooks/{name}"
            assert r["data"]["camera_name"] == r["data"]["camera_id"] in cameras
        for camera in cameras:
            alerts = flow.store.list(camera_id=camera)
            assert len(alerts) == 3 and {(a.camera_id, a.camera_name) for a in alerts} == {(camera, camera)}
        attempts = flow.log.attempts(route=route)
        assert {a["camera_id"] for a in attempts} == set(cameras) and {a["route"] for a in attempts} == {route}
    finally:
        flow.stop()
        flow.bus.close()
        receiver.stop()
