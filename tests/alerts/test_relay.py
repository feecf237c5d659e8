"""The relay: outbox rows reach the bus once, in seq order, from one relay at a time."""

from __future__ import annotations

import datetime as dt

from alerts.bus import EmbeddedBus
from alerts.outbox import OutboxPolicy
from alerts.relay import Relay
from alerts.routing import RouteRule, Router
from alerts.store import AlertStore
from tests.alerts.helpers import T0, make_alert

NOW = T0 + dt.timedelta(minutes=1)


def _store(path) -> AlertStore:
    return AlertStore(path, OutboxPolicy(Router([RouteRule(types=["littering"], routes=["police", "webhook:rx"]),
                                                 RouteRule(types=["flooding"], routes=["ticketing"])])))


def test_rows_reach_every_route_once_in_order(tmp_path):
    with _store(tmp_path / "alerts.db") as store:
        bus = EmbeddedBus(tmp_path / "bus.db")
        for i in range(5):
            store.add(make_alert(i, camera_id="Көктем 3 / кіреберіс", type="littering"), now=NOW)
        store.add(make_alert(9, type="flooding"), now=NOW)
        relay = Relay(store, bus, owner="a")
        assert relay.run_once() == 6
        assert relay.run_once() == 0
        police = bus.read("police", "g", "c", 100, 0)
        assert [m.seq for m in police] == sorted(m.seq for m in police) and len(police) == 5
        assert police[0].fields["camera_id"] == "Көктем 3 / кіреберіс"
        (ticket,) = bus.read("ticketing", "g", "c", 100, 0)
        assert "ticket" in ticket.fields and "ticket" not in police[0].fields
        assert len(bus.read("webhook:rx", "g", "c", 100, 0)) == 5
        bus.close()


def test_a_crash_before_marking_publishes_nothing_twice(tmp_path):
    with _store(tmp_path / "alerts.db") as store:
        bus = EmbeddedBus(tmp_path / "bus.db")
        for i in range(3):
            store.add(make_alert(i, type="littering"), now=NOW)
        for row in store.outbox_pending():                   # published, then "crashed" before marking
            for route in row.routes:
                bus.publish(route, row.seq, row.fields())
        assert Relay(store, bus, owner="b").run_once() == 3  # the next relay marks them, adds nothing
        assert bus.stats("police")["length"] == 3
        bus.close()


def test_only_the_lease_holder_publishes(tmp_path):
    with _store(tmp_path / "alerts.db") as store:
        bus = EmbeddedBus(tmp_path / "bus.db")
        store.add(make_alert(1, type="littering"), now=NOW)
        first, second = Relay(store, bus, owner="a"), Relay(store, bus, owner="b")
        assert first.run_once() == 1
        store.add(make_alert(2, type="littering"), now=NOW)
        assert second.run_once() == 0                        # a holds the lease
        assert first.run_once() == 1
        bus.close()
