"""Alert bus: the Redis Streams bus against a real redis-server, and the embedded SQLite bus."""

from __future__ import annotations

import threading
import time

import pytest
from unittest.mock import ANY

from alerts.bus import BusConfigError, BusError, BusMessage, EmbeddedBus, RedisBus, open_bus
from tests.conftest import free_port, need_tool
from tests.servers import RedisServer, redis_server  # noqa: F401  (fixture)

KAZ_ROUTE = "webhook:Көктем 3 / кіреберіс"


def entry(seq: int, source: str = "default") -> dict[str, str]:
    """The fields a consumer reads back: what was published plus ``seq`` and ``source``."""
    return {**fields_of(seq), "seq": str(seq), "source": source}


def fields_of(seq: int) -> dict[str, str]:
    return {"msg_id": f"m{seq}", "type": "bin_overflow", "alert_id": f"a{seq}", "camera_id": "Көктем 3",
            "body": '{"text": "қоқыс жәшігі толы"}'}


def publish_range(bus, route: str, seqs) -> None:
    for seq in seqs:
        assert bus.publish(route, seq, fields_of(seq)) is True


def redis_bus(server: RedisServer, **kw) -> RedisBus:
    return RedisBus(server.url, prefix="t", **{"socket_timeout_s": 2.0, "connect_timeout_s": 1.0, **kw})


@pytest.fixture(params=["embedded", "redis"])
def make_bus(request, tmp_path):
    """A factory: each call opens a new bus object on the same backend (a process restart)."""
    opened = []

    def make():
        if request.param == "embedded":
            bus = EmbeddedBus(tmp_path / "bus.db")
        else:
            bus = redis_bus(request.getfixturevalue("redis_server"))
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        bus.close()


@pytest.fixture
def bus(make_bus):
    return make_bus()


def test_publish_is_idempotent_by_seq(bus):
    publish_range(bus, "police", [1, 2, 3])
    assert bus.publish("police", 2, fields_of(2)) is False
    assert bus.publish("police", 3, {"other": "x"}) is False
    got = bus.read("police", "g", "c1", 10, 0)
    assert [(m.seq, dict(m.fields), m.deliveries) for m in got] == [(s, entry(s), 1) for s in (1, 2, 3)]
    assert bus.stats("police") == {"length": 3, "dead": 0}


def test_order_is_preserved_across_batches(bus):
    publish_range(bus, "ticketing", range(1, 51))
    seqs = []
    while batch := bus.read("ticketing", "g", "c1", 7, 0):
        seqs += [m.seq for m in batch]
    assert seqs == list(range(1, 51))


def test_two_groups_each_get_every_entry(bus):
    bus.ensure_group("police", "ops")
    bus.ensure_group("police", "ops")  # existing group is kept
    publish_range(bus, "police", [1, 2, 3])
    assert [m.seq for m in bus.read("police", "ops", "a", 10, 0)] == [1, 2, 3]
    assert [m.seq for m in bus.read("police", "audit", "b", 10, 0)] == [1, 2, 3]
    assert bus.read("police", "ops", "a2", 10, 0) == []


def test_read_ack_and_pending(bus):
    route = "webhook:city"
    publish_range(bus, route, [1, 2, 3, 4])
    got = bus.read(route, "g", "c1", 3, 0)
    assert bus.stats(route, "g") == {"length": 4, "dead": 0, "pending": 3, "lag": 1, "last_delivered_id": ANY}
    assert bus.ack(route, "g", [got[0].entry_id, got[1].entry_id]) == 2
    assert bus.ack(route, "g", [got[0].entry_id]) == 0
    assert bus.ack(route, "g", []) == 0
    assert bus.stats(route, "g")["pending"] == 1
    assert bus.stats(route, "other") == {"length": 4, "dead": 0, "pending": 0, "lag": 4, "last_delivered_id": ANY}


def test_recover_after_consumer_restart(make_bus):
    first = make_bus()
    publish_range(first, "mqtt:broker", [1, 2, 3])
    got = first.read("mqtt:broker", "g", "c1", 10, 0)
    first.ack("mqtt:broker", "g", [got[1].entry_id])
    first.close()
    again = make_bus()
    back = again.recover("mqtt:broker", "g", "c1", 10)
    assert [(m.seq, m.deliveries, dict(m.fields)) for m in back] == [(1, 2, entry(1)), (3, 2, entry(3))]
    assert again.recover("mqtt:broker", "g", "other", 10) == []
    assert again.read("mqtt:broker", "g", "c1", 10, 0) == []
    publish_range(again, "mqtt:broker", [4])
    assert [m.seq for m in again.read("mqtt:broker", "g", "c1", 10, 0)] == [4]


def test_claim_stale_takes_a_dead_consumers_entries(bus):
    route = "webhook:city"
    publish_range(bus, route, [1, 2, 3])
    bus.read(route, "g", "dead", 10, 0)
    assert bus.claim_stale(route, "g", "alive", 60_000, 10) == []
    time.sleep(0.1)
    claimed = bus.claim_stale(route, "g", "alive", 50, 2)
    assert [(m.seq, m.deliveries) for m in claimed] == [(1, 2), (2, 2)]
    time.sleep(0.1)
    assert [m.seq for m in bus.claim_stale(route, "g", "alive", 50, 10)] == [1, 2, 3]
    assert bus.recover(route, "g", "dead", 10) == []
    assert [m.seq for m in bus.recover(route, "g", "alive", 10)] == [1, 2, 3]


def test_dead_letter_moves_and_acks(bus):
    route = "webhook:city"
    publish_range(bus, route, [1, 2])
    message = bus.read(route, "g", "c1", 1, 0)[0]
    bus.dead_letter(route, "g", message, "HTTP 410 Gone after 5 tries")
    assert bus.stats(route, "g") == {"length": 2, "dead": 1, "pending": 0, "lag": 1, "last_delivered_id": ANY}
    assert bus.recover(route, "g", "c1", 10) == []
    assert bus.dead_letters(route) == [(message, "HTTP 410 Gone after 5 tries")]
    assert bus.dead_letters("police") == []


def test_unicode_route_name(bus):
    publish_range(bus, KAZ_ROUTE, [5, 7])
    got = bus.read(KAZ_ROUTE, "доставка", "жұмысшы 1", 10, 0)
    assert [(m.route, m.seq, m.fields["camera_id"]) for m in got] == [(KAZ_ROUTE, 5, "Көктем 3"), (KAZ_ROUTE, 7, "Көктем 3")]
    bus.dead_letter(KAZ_ROUTE, "доставка", got[0], "сервер жауап бермеді")
    assert bus.dead_letters(KAZ_ROUTE) == [(got[0], "сервер жауап бермеді")]
    bus.ensure_group("police", "ops")
    assert bus.routes() == sorted(["police", KAZ_ROUTE])


def test_blocking_read_wakes_on_publish(bus):
    assert bus.read("police", "g", "c1", 10, 100) == []
    timer = threading.Timer(0.2, lambda: bus.publish("police", 1, fields_of(1)))
    timer.start()
    try:
        got = []
        for _ in range(10):  # the bus may return early (Redis caps block_ms); bounded retries
            got += bus.read("police", "g", "c1", 10, 1500)
            if got:
                break
    finally:
        timer.join()
    assert [m.seq for m in got] == [1]


@pytest.mark.parametrize("call", [
    lambda b: b.publish("sms:x", 1, {"a": "b"}),
    lambda b: b.publish("webhook:", 1, {"a": "b"}),
    lambda b: b.publish("webhook:a\nb", 1, {"a": "b"}),
    lambda b: b.publish("police", 0, {"a": "b"}),
    lambda b: b.publish("police", 1, {}),
    lambda b: b.publish("police", 1, {"a": 1}),
    lambda b: b.read("police", "", "c", 1, 0),
    lambda b: b.read("police", "g", "c", 0, 0),
    lambda b: b.read("police", "g", "c", 1, -1),
    lambda b: b.claim_stale("police", "g", "c", -5, 1),
])
def test_bad_arguments_raise_config_error(bus, call):
    with pytest.raises(BusConfigError):
        call(bus)


def test_open_bus_picks_the_implementation(tmp_path):
    assert isinstance(open_bus(None, tmp_path / "b.db"), EmbeddedBus)
    assert isinstance(open_bus("", tmp_path / "b.db"), EmbeddedBus)
    bus = open_bus("redis://127.0.0.1:1/0", tmp_path / "b.db", prefix="x", socket_timeout_s=1.0)
    assert isinstance(bus, RedisBus) and bus.prefix == "x"


def test_redis_down_raises_bus_error_naming_the_server():
    need_tool("redis-server")
    port = free_port()
    bus = RedisBus(f"redis://127.0.0.1:{port}/0", connect_timeout_s=1.0)
    with pytest.raises(BusError, match=f"127.0.0.1:{port}.*PING"):
        bus.ping()
    with pytest.raises(BusError, match="XADD"):
        bus.publish("police", 1, fields_of(1))
    bus.close()


def test_redis_restart_with_aof_keeps_entries_groups_and_pending(redis_server):
    bus = redis_bus(redis_server)
    publish_range(bus, "police", [1, 2, 3])
    first = bus.read("police", "g", "c1", 2, 0)
    redis_server.restart()
    stats = bus.stats("police", "g")
    assert stats["lag"] in (1, None)  # Redis 7 may not know the lag after loading the AOF
    assert stats | {"lag": 1} == {"length": 3, "dead": 0, "pending": 2, "lag": 1, "last_delivered_id": ANY}
    assert [m.seq for m in bus.recover("police", "g", "c1", 10)] == [m.seq for m in first]
    assert [m.seq for m in bus.read("police", "g", "c1", 10, 0)] == [3]
    assert bus.publish("police", 3, fields_of(3)) is False
    bus.close()


def test_redis_shutdown_nosave_keeps_published_entries_and_recreates_groups(redis_server):
    bus = redis_bus(redis_server)
    publish_range(bus, "ticketing", [1, 2, 3])
    redis_server.shutdown_nosave()
    with pytest.raises(BusError):
        bus.publish("ticketing", 4, fields_of(4))
    redis_server.start()
    assert bus.publish("ticketing", 4, fields_of(4)) is True
    # No group was ever created: read meets NOGROUP, creates it from the start and retries.
    assert [m.seq for m in bus.read("ticketing", "new", "c1", 10, 0)] == [1, 2, 3, 4]
    bus.close()


def test_redis_lost_data_nogroup_is_handled(tmp_path):
    need_tool("redis-server")
    with RedisServer(tmp_path / "r", appendonly=False) as server:
        bus = redis_bus(server)
        publish_range(bus, "police", [1, 2])
        bus.read("police", "g", "c1", 10, 0)
        server.restart()  # everything is gone, the group too
        assert bus.recover("police", "g", "c1", 10) == []
        assert bus.claim_stale("police", "g", "c2", 0, 10) == []
        assert bus.read("police", "g", "c1", 10, 0) == []
        assert bus.publish("police", 1, fields_of(1)) is True  # old ids are accepted again
        assert [m.seq for m in bus.read("police", "g", "c1", 10, 0)] == [1]
        bus.close()


def test_redis_frozen_by_sigstop_raises_then_recovers(redis_server):
    bus = redis_bus(redis_server, socket_timeout_s=1.0, connect_timeout_s=1.0)
    publish_range(bus, "police", [1])
    bus.ensure_group("police", "g")
    redis_server.stop_process()
    try:
        started = time.monotonic()
        with pytest.raises(BusError, match="timed out|Timeout"):
            bus.publish("police", 2, fields_of(2))
        with pytest.raises(BusError):
            bus.read("police", "g", "c1", 10, 5000)
        with pytest.raises(BusError):
            bus.ping()
        assert time.monotonic() - started < 30  # sanity: the calls returned, none hung
        time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    finally:
        redis_server.cont_process()
    bus.ping()
    # The frozen server may still have run the XADD it had received: either way seq 2 is there once.
    assert bus.publish("police", 2, fields_of(2)) in (True, False)
    assert [m.seq for m in bus.read("police", "g", "c1", 10, 0)] == [1, 2]
    bus.close()


def test_bus_message_seq_comes_from_the_fields(redis_server):
    bus = redis_bus(redis_server)
    bus.publish("police", 123456789012, fields_of(1), source="m07")
    [message] = bus.read("police", "g", "c", 1, 0)
    assert message == BusMessage("police", 123456789012, message.entry_id, entry(123456789012, "m07") | {
        k: v for k, v in fields_of(1).items()}, 1)
    bus.close()


def test_two_outboxes_share_a_stream_without_losing_rows(redis_server):
    """Machines with their own outboxes publish to one Redis: the same seq from two sources is
    two entries, and each source stays idempotent on its own."""
    bus = redis_bus(redis_server)
    assert bus.publish("police", 5, fields_of(5), source="machine-a") is True
    assert bus.publish("police", 2, fields_of(2), source="machine-b") is True   # lower seq, other source
    assert bus.publish("police", 5, fields_of(5), source="machine-b") is True
    assert bus.publish("police", 5, fields_of(5), source="machine-a") is False  # a repeat of a's row
    got = bus.read("police", "g", "c", 10, 0)
    assert [(m.fields["source"], m.seq) for m in got] == [("machine-a", 5), ("machine-b", 2), ("machine-b", 5)]
    bus.close()


def test_concurrent_consumers_of_one_group_share_without_repeats(make_bus):
    """Three consumers, each with its own bus object (connection), race on one group."""
    publisher = make_bus()
    publisher.ensure_group("police", "g")
    publish_range(publisher, "police", range(1, 121))
    buses = [make_bus() for _ in range(3)]
    seen: list[list[int]] = [[] for _ in buses]

    def consume(i: int) -> None:
        while batch := buses[i].read("police", "g", f"c{i}", 5, 0):
            seen[i] += [m.seq for m in batch]
            buses[i].ack("police", "g", [m.entry_id for m in batch])

    threads = [threading.Thread(target=consume, args=(i,), name=f"consumer-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(s for part in seen for s in part) == list(range(1, 121))
    assert publisher.stats("police", "g")["pending"] == 0


def test_publish_many_is_idempotent_and_completes_a_prefix(bus):
    items = [("police", 1, fields_of(1)), ("webhook:Көктем ops", 1, fields_of(1)),
             ("police", 2, fields_of(2)), ("webhook:Көктем ops", 2, fields_of(2))]
    assert bus.publish_many(items[:2], source="m1") == [True, True]       # a batch cut short
    assert bus.publish_many(items, source="m1") == [False, False, True, True]
    assert bus.publish_many(items, source="m1") == [False] * 4
    assert [m.seq for m in bus.read("police", "g", "c", 10, 0)] == [1, 2]
    assert [m.seq for m in bus.read("webhook:Көктем ops", "g", "c", 10, 0)] == [1, 2]
    assert bus.publish_many([], source="m1") == []


def test_groups_lists_every_consumer_group(bus):
    publish_range(bus, "police", [1, 2, 3])
    bus.read("police", "city", "c", 1, 0)
    bus.ensure_group("police", "baqylau")
    assert bus.groups("police") == [{"name": "baqylau", "pending": 0, "lag": 3},
                                    {"name": "city", "pending": 1, "lag": 2}]
    assert bus.groups("ticketing") == []
