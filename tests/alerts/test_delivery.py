"""Tests of alerts.delivery: route workers against a real scriptable HTTP receiver, on the embedded
bus and on a real redis-server, checked with the reference Standard Webhooks verifier."""

from __future__ import annotations

import json
import random
import time

import pytest

from alerts.bus import EmbeddedBus, RedisBus
from alerts.delivery import (DeliveryConfigError, DeliveryLog, DeliveryLogError, RouteWorker,
                             WebhookDeliverer)
from alerts.webhooks import WebhookConfigError, generate_secret, message_id
from tests.conftest import need_tool, wait_until
from tests.servers import RedisServer
from tests.servers import WebhookReceiver as Receiver

standardwebhooks = pytest.importorskip("standardwebhooks.webhooks")
Webhook = standardwebhooks.Webhook

CAMERAS = ("Көктем 3 / кіреберіс", "cam-2", "cam-3")
SCHEDULE_S = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
WAIT_S = 30.0


def fields(seq: int, camera_id: str) -> dict[str, str]:
    alert_id = f"a{seq}"
    body = json.dumps({"type": "alert.created", "timestamp": "2025-03-01T18:30:00.000000Z",
                       "data": {"alert_id": alert_id, "camera_id": camera_id, "seq": seq}},
                      ensure_ascii=False, separators=(",", ":"))
    return {"msg_id": message_id(alert_id, "alert.created", 0), "type": "alert.created", "alert_id": alert_id,
            "camera_id": camera_id, "body": body, "created_utc": "2025-03-01T18:30:00.000000Z"}


def publish(bus, route: str, n: int, cameras=CAMERAS, start: int = 1) -> list[dict[str, str]]:
    """Publish entries seq start.. start+n-1, cameras round-robin; returns their fields."""
    out = [fields(seq, cameras[seq % len(cameras)]) for seq in range(start, start + n)]
    for seq, f in zip(range(start, start + n), out):
        assert bus.publish(route, seq, f)
    return out


def check_order_and_signatures(receiver: Receiver, published: list[dict[str, str]]) -> None:
    """Every entry accepted; per camera requests never go back in seq; signatures verify; the body
    and webhook-id of all attempts of one entry are identical."""
    want = {f["msg_id"] for f in published}
    assert {r["headers"]["webhook-id"] for r in receiver.accepted()} == want
    last_seq: dict[str, int] = {}
    with receiver.lock:
        requests = list(receiver.requests)
    for r in requests:
        camera, seq = r["data"]["camera_id"], r["data"]["seq"]
        assert seq >= last_seq.get(camera, 0), f"camera {camera}: seq {seq} after {last_seq[camera]}"
        last_seq[camera] = seq
        assert Webhook(receiver.secret).verify(r["body"], r["headers"])["data"]["seq"] == seq
    by_body = {f["msg_id"]: f["body"].encode() for f in published}
    for msg_id, reqs in receiver.by_msg().items():
        assert {r["body"] for r in reqs} == {by_body[msg_id]}


def make_worker(route, bus, receiver, log, **kw) -> RouteWorker:
    kw.setdefault("schedule_s", SCHEDULE_S)
    kw.setdefault("rng", random.Random(0))
    kw.setdefault("block_ms", 200)
    timeout_s = kw.pop("timeout_s", 0.4)
    deliverer = WebhookDeliverer(route, receiver.url, [receiver.secret], timeout_s=timeout_s)
    return RouteWorker(route, bus, deliverer, log, **kw)


@pytest.fixture
def log(tmp_path):
    log = DeliveryLog(tmp_path / "delivery.sqlite")
    yield log
    log.close()


@pytest.fixture
def bus(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    yield bus
    bus.close()


@pytest.fixture
def receiver():
    receiver = Receiver(generate_secret())
    yield receiver
    receiver.stop()


@pytest.mark.parametrize("kind", ["embedded", "redis"])
def test_main_scenario_order_retries_signatures(kind, tmp_path, log, receiver):
    server = None
    if kind == "redis":
        need_tool("redis-server")
        server = RedisServer(tmp_path / "redis").start()
        the_bus = RedisBus(server.url, socket_timeout_s=1.0, connect_timeout_s=0.5)
    else:
        the_bus = EmbeddedBus(tmp_path / "bus.sqlite")
    route = "webhook:city-desk"
    published = publish(the_bus, route, 24)
    plans = {f["msg_id"]: p for f, p in zip(published, [[], [500], [], ["sleep"], [500, 502], [404]] * 4)}
    receiver.plan = lambda msg_id, n: plans[msg_id][n] if n < len(plans[msg_id]) else 200
    receiver.start()
    worker = make_worker(route, the_bus, receiver, log)
    worker.start()
    try:
        if server is not None:  # Redis restarts mid-way (AOF keeps the stream and the group)
            wait_until(lambda: len(receiver.accepted()) >= 8, WAIT_S, "8 deliveries before the Redis restart")
            server.restart()
            wait_until(lambda: len(receiver.accepted()) >= 14, WAIT_S, "14 deliveries before Redis freezes")
            server.stop_process()  # frozen: connections hang until the socket timeout
            time.sleep(1.5)
            server.cont_process()
        wait_until(lambda: len(receiver.accepted()) >= 24, WAIT_S, "all 24 entries delivered")
        wait_until(lambda: worker.stats()["in_window"] == 0, WAIT_S, "the window to empty")
    finally:
        worker.stop(10)
        the_bus.close()
        if server is not None:
            server.close()
    check_order_and_signatures(receiver, published)
    assert len(receiver.accepted()) == 24  # nothing delivered twice
    for f in published:
        rows = log.attempts(route=route, msg_id=f["msg_id"])
        failures = len(plans[f["msg_id"]])
        assert [r["attempt"] for r in rows] == list(range(1, failures + 2))
        assert [r["outcome"] for r in rows] == ["retry"] * failures + ["delivered"]
        assert rows[-1]["http_status"] == 200 and rows[0]["camera_id"] == f["camera_id"]
        assert len(receiver.by_msg()[f["msg_id"]]) == failures + 1  # same webhook-id on every retry
    sleepy = [r for r in log.attempts(route=route, limit=1000) if r["http_status"] is None]
    assert len(sleepy) == 4 and all("timed out" in r["error"] for r in sleepy)
    stats = worker.stats()
    assert stats["delivered"] == 24 and stats["dead"] == 0 and stats["retried"] == 20
    assert not stats["disabled"]


def test_slow_camera_does_not_block_other_cameras(bus, log, receiver):
    route = "webhook:desk"
    published = publish(bus, route, 12)
    slow = published[0]["msg_id"]  # seq 1, camera cam-2
    receiver.sleep_s = 2.0
    receiver.plan = lambda msg_id, n: "sleep" if msg_id == slow and n == 0 else 200
    receiver.start()
    worker = make_worker(route, bus, receiver, log, timeout_s=5.0)
    worker.start()
    try:
        wait_until(lambda: len(receiver.accepted()) >= 8, WAIT_S, "the other cameras' 8 entries")
        got = receiver.accepted()
        assert {r["data"]["camera_id"] for r in got} == set(CAMERAS) - {"cam-2"}
        wait_until(lambda: len(receiver.accepted()) >= 12, WAIT_S, "all entries")
    finally:
        worker.stop(10)
    check_order_and_signatures(receiver, published)


def test_retry_after_is_honoured(bus, log, receiver):
    route = "webhook:desk"
    published = publish(bus, route, 1)
    receiver.plan = lambda msg_id, n: 429 if n == 0 else 200
    receiver.start()
    worker = make_worker(route, bus, receiver, log)
    worker.start()
    try:
        wait_until(lambda: len(receiver.accepted()) == 1, WAIT_S, "delivery after 429")
    finally:
        worker.stop(10)
    first, second = receiver.by_msg()[published[0]["msg_id"]]
    assert first["status"] == 429 and second["status"] == 200
    assert second["at"] - first["at"] >= 0.95  # Retry-After: 1 beats the 0.05 s schedule step
    assert [r["outcome"] for r in log.attempts(route=route)] == ["retry", "delivered"]


def test_gone_disables_route_while_other_route_delivers_then_enable_resumes(bus, log, receiver):
    gone = Receiver(generate_secret()).start()
    gone.plan = lambda msg_id, n: 410
    workers = []
    try:
        published_ok = publish(bus, "webhook:ok", 15)
        published_gone = publish(bus, "webhook:gone", 15)
        receiver.start()
        ok_worker = make_worker("webhook:ok", bus, receiver, log, consumer="w-ok")
        gone_worker = make_worker("webhook:gone", bus, gone, log, consumer="w-gone", recheck_s=0.2)
        workers += [ok_worker, gone_worker]
        ok_worker.start()
        gone_worker.start()
        wait_until(lambda: log.is_disabled("webhook:gone"), WAIT_S, "the 410 route to be disabled")
        wait_until(lambda: len(receiver.accepted()) == 15, WAIT_S, "the other route's 15 entries")
        wait_until(lambda: gone_worker.stats()["in_window"] == 0, WAIT_S, "the disabled worker to drop its window")
        assert gone_worker.stats()["disabled"] and not log.is_disabled("webhook:ok")
        assert "410 Gone from " + gone.url in log.disabled()["webhook:gone"]["reason"]
        assert 1 <= len(gone.requests) <= 4  # at most max_in_flight attempts were under way
        gone_stats = bus.stats("webhook:gone", "baqylau")
        assert gone_stats["pending"] + gone_stats["lag"] == 15  # nothing acknowledged
        assert not bus.dead_letters("webhook:gone")
        assert {r["outcome"] for r in log.attempts(route="webhook:gone")} == {"disabled"}
        gone_worker.stop(10)

        # A worker started on a disabled route stays idle until the route is re-enabled.
        n_before = len(gone.requests)
        gone.plan = lambda msg_id, n: 200
        again = make_worker("webhook:gone", bus, gone, log, consumer="w-gone", recheck_s=0.2)
        workers.append(again)
        again.start()
        wait_until(lambda: again.stats()["disabled"], WAIT_S, "the new worker to see the route disabled")
        assert len(gone.requests) == n_before
        log.enable("webhook:gone")
        wait_until(lambda: len(gone.accepted()) == 15, WAIT_S, "delivery after enable")
        again.stop(10)
        ok_worker.stop(10)
        check_order_and_signatures(receiver, published_ok)
        check_order_and_signatures(gone, published_gone)
        # The entries that got 410 continue their attempt numbers.
        for f in published_gone:
            rows = log.attempts(route="webhook:gone", msg_id=f["msg_id"])
            assert [r["attempt"] for r in rows] == list(range(1, len(rows) + 1))
    finally:
        for worker in workers:
            worker.stop(10)
        gone.stop()


def test_dead_letter_after_n_attempts_then_next_entry(bus, log, receiver):
    route = "webhook:desk"
    published = publish(bus, route, 6)
    doomed = published[0]
    receiver.plan = lambda msg_id, n: 500 if msg_id == doomed["msg_id"] else 200
    receiver.start()
    worker = make_worker(route, bus, receiver, log, dead_letter_after=3)
    worker.start()
    try:
        wait_until(lambda: len(receiver.accepted()) == 5, WAIT_S, "the 5 other entries")
        wait_until(lambda: worker.stats()["in_window"] == 0, WAIT_S, "the window to empty")
    finally:
        worker.stop(10)
    rows = log.attempts(route=route, msg_id=doomed["msg_id"])
    assert [(r["attempt"], r["outcome"], r["http_status"]) for r in rows] == [
        (1, "retry", 500), (2, "retry", 500), (3, "dead", 500)]
    (dead, reason), = bus.dead_letters(route)
    assert dead.fields["msg_id"] == doomed["msg_id"] and "3 attempts failed" in reason
    assert bus.stats(route, "baqylau")["pending"] == 0
    assert worker.stats()["dead"] == 1 and len(receiver.by_msg()[doomed["msg_id"]]) == 3
    # The same camera's next entry went out only after the dead one gave up.
    camera = doomed["camera_id"]
    seqs = [r["data"]["seq"] for r in receiver.requests if r["data"]["camera_id"] == camera]
    assert seqs == [seqs[0]] * 3 + sorted(seqs[3:])


def test_restart_redelivers_with_continuing_attempt_numbers(bus, log):
    receiver = Receiver(generate_secret())  # not started: connections are refused
    route = "webhook:desk"
    published = publish(bus, route, 9)
    worker = make_worker(route, bus, receiver, log, consumer="w1", dead_letter_after=50)
    worker.start()
    first = published[0]["msg_id"]
    try:
        wait_until(lambda: log.attempt_count(route, first) >= 3, WAIT_S, "3 refused attempts")
    finally:
        worker.stop(10)
    before = {f["msg_id"]: log.attempt_count(route, f["msg_id"]) for f in published}
    assert all(r["http_status"] is None and "Refused" in r["error"] for r in log.attempts(route=route))
    receiver.start()
    try:
        worker2 = make_worker(route, bus, receiver, log, consumer="w1", dead_letter_after=50)
        worker2.start()
        try:
            wait_until(lambda: len(receiver.accepted()) == 9, WAIT_S, "all entries after restart")
        finally:
            worker2.stop(10)
        check_order_and_signatures(receiver, published)
        for f in published:
            rows = log.attempts(route=route, msg_id=f["msg_id"])
            assert [r["attempt"] for r in rows] == list(range(1, before[f["msg_id"]] + 2))
            assert rows[-1]["outcome"] == "delivered"
        assert before[first] >= 3
    finally:
        receiver.stop()


def test_entries_of_a_dead_consumer_are_claimed(bus, log, receiver):
    route = "webhook:desk"
    published = publish(bus, route, 4)
    bus.ensure_group(route, "baqylau")
    assert len(bus.read(route, "baqylau", "crashed-1", 3, 1)) == 3  # handed out, never acknowledged
    time.sleep(0.2)  # the crashed consumer's entries are idle longer than claim_idle_ms
    receiver.start()
    worker = make_worker(route, bus, receiver, log, consumer="w2", claim_idle_ms=100)
    worker.start()
    try:
        wait_until(lambda: len(receiver.accepted()) == 4, WAIT_S, "claimed and new entries delivered")
    finally:
        worker.stop(10)
    check_order_and_signatures(receiver, published)
    assert bus.stats(route, "baqylau")["pending"] == 0


def test_window_bounds_memory_while_receiver_is_down(bus, log, receiver):
    route = "webhook:desk"
    published = publish(bus, route, 500, cameras=CAMERAS + ("cam-4", "cam-5"))
    receiver.plan = lambda msg_id, n: 500
    receiver.start()
    worker = make_worker(route, bus, receiver, log, window=16, dead_letter_after=1000, schedule_s=(0.0, 0.05))
    worker.start()
    try:
        wait_until(lambda: len(receiver.requests) >= 60, WAIT_S, "60 failed attempts")
        assert worker.stats()["peak_window"] <= 16 and worker.stats()["in_window"] == 16
        assert len(receiver.by_msg()) <= 16
        assert bus.stats(route, "baqylau")["lag"] == 500 - 16  # the backlog stays in the bus
        receiver.plan = lambda msg_id, n: 200
        wait_until(lambda: len(receiver.accepted()) == 500, WAIT_S, "all 500 entries")
    finally:
        worker.stop(10)
    assert worker.stats()["peak_window"] <= 16
    check_order_and_signatures(receiver, published)


def test_delivery_log_shared_between_connections(tmp_path):
    a, b = DeliveryLog(tmp_path / "d.sqlite"), DeliveryLog(tmp_path / "d.sqlite")
    try:
        a.record("webhook:x", "msg_1", 1, "retry", alert_id="a1", camera_id=CAMERAS[0], seq=7,
                 http_status=500, error="HTTP 500", elapsed_ms=3.5)
        a.record("webhook:x", "msg_1", 2, "delivered", alert_id="a1", camera_id=CAMERAS[0], seq=7, http_status=200)
        assert b.attempt_count("webhook:x", "msg_1") == 2 and b.attempt_count("webhook:y", "msg_1") == 0
        rows = b.attempts(alert_id="a1")
        assert [r["outcome"] for r in rows] == ["retry", "delivered"] and rows[0]["camera_id"] == CAMERAS[0]
        assert b.attempts(route="webhook:x", limit=1)[0]["attempt"] == 2
        b.disable("webhook:x", "410 Gone from http://h/")
        assert a.is_disabled("webhook:x") and set(a.disabled()) == {"webhook:x"}
        a.enable("webhook:x")
        assert not b.is_disabled("webhook:x") and b.disabled() == {}
        with pytest.raises(DeliveryConfigError):
            a.record("webhook:x", "msg_1", 3, "lost")
    finally:
        a.close()
        b.close()


def test_delivery_log_rejects_non_database(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(DeliveryLogError):
        DeliveryLog(path)


@pytest.mark.parametrize("kw", [dict(url="ftp://h/x"), dict(secrets=[]), dict(secrets=["nope"]),
                                dict(timeout_s=0)])
def test_webhook_deliverer_rejects_bad_config(kw):
    args = dict(route="webhook:x", url="http://127.0.0.1:1/", secrets=[generate_secret()], timeout_s=1.0) | kw
    with pytest.raises(WebhookConfigError):
        WebhookDeliverer(**args)


@pytest.mark.parametrize("kw", [dict(schedule_s=()), dict(schedule_s=(0, -1)), dict(jitter=1.0),
                                dict(dead_letter_after=0), dict(max_in_flight=0), dict(window=0),
                                dict(route="webhook:other")])
def test_route_worker_rejects_bad_config(kw, bus, log):
    deliverer = WebhookDeliverer("webhook:x", "http://127.0.0.1:1/", [generate_secret()])
    args = dict(route="webhook:x", bus=bus, deliverer=deliverer, log=log) | kw
    with pytest.raises(DeliveryConfigError):
        RouteWorker(**args)
