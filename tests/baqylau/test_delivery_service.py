"""The delivery service of `baqylau run`: relay + webhook worker + deferral watch, drained at stop."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pytest

from alerts.webhooks import generate_secret
from baqylau.config import load_config
from baqylau.delivery import DeliveryService
from tests.alerts.helpers import make_alert
from tests.alerts.test_mqtt import broker, subscriber  # noqa: F401 - fixtures
from tests.conftest import wait_until
from tests.servers import WebhookReceiver as Receiver
from tests.servers import redis_server  # noqa: F401 - fixture


def config(tmp_path, alerts: str, camera: str = "cam"):
    """Write a configuration with ``alerts`` (YAML lines, indented under ``alerts:``) and one
    camera; return it loaded."""
    path = tmp_path / "cfg.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\nalerts:\n" + textwrap.indent(textwrap.dedent(alerts), "  ")
                    + f'cameras: [{{id: "{camera}", url: none.mp4}}]\n')
    return load_config(path)


def ops_webhook(receiver: Receiver) -> str:
    """The ``webhooks:`` line of an endpoint ``ops`` posting to ``receiver``."""
    return f'webhooks: [{{name: ops, url: "{receiver.url}", secrets: ["{receiver.secret}"]}}]\n'


def test_deferred_alert_falls_due_and_stop_drains(tmp_path):
    receiver = Receiver().start()
    cfg = config(tmp_path, 'routes: [{types: [littering], routes: ["webhook:ops", police]}]\n' + ops_webhook(receiver),
                 camera="Көктем 3 / кіреберіс")
    service = DeliveryService(cfg)
    service.deferral_every_s = 0.1
    try:
        service.start()
        alert = make_alert(1, camera_id="Көктем 3 / кіреберіс", type="littering")
        service.store.add(alert)
        now = dt.datetime.now(dt.UTC)
        service.store.transition(alert.alert_id, "deferred", actor="aigerim", note="crew busy",
                                 due_utc=now + dt.timedelta(seconds=0.5), now=now)
        wait_until(lambda: service.store.get(alert.alert_id).status == "new", 10, "the deferral to fall due")
        last = service.store.history(alert.alert_id)[-1]
        assert (last["type"], last["actor"], last["note"]) == ("alert.reopened", "system", "deferral due")
        service.store.transition(alert.alert_id, "resolved", actor="aigerim")
        wait_until(lambda: len(receiver.accepted()) == 4, 10, "four deliveries")
        from prometheus_client import CollectorRegistry, generate_latest

        from baqylau.delivery import DeliveryCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(DeliveryCollector(lambda: service))
        text = generate_latest(registry).decode()
        assert 'baqylau_deliveries_total{outcome="delivered",route="webhook:ops"} 4.0' in text
        assert "baqylau_outbox_pending 0.0" in text and "baqylau_alerts_published_total 4.0" in text
    finally:
        service.stop(drain_s=10)                # returns once everything committed was delivered
        receiver.stop()
    types = [json.loads(r["body"])["type"] for r in receiver.accepted()]
    assert types == ["alert.created", "alert.deferred", "alert.reopened", "alert.resolved"]


def test_config_check_warns_about_outputs_nothing_is_routed_to(tmp_path):
    from baqylau.delivery import delivery_warnings

    cfg = config(tmp_path, f'deliver: external\nwebhooks: [{{name: ops, url: "http://127.0.0.1:9/h", '
                           f'secrets: ["{generate_secret()}"]}}]\n')
    lines = delivery_warnings(cfg)
    assert any("no alerts.routes rule sends to webhook:ops" in x for x in lines)
    assert any("media_base_url" in x for x in lines) and any("baqylau deliver" in x for x in lines)


def test_mqtt_output_from_config_over_redis(tmp_path, redis_server, broker, subscriber):  # noqa: F811
    service = DeliveryService(config(tmp_path, f"""
        routes: [{{types: [bin_overflow], routes: [ticketing, "mqtt:ha"]}}]
        mqtt: [{{name: ha, host: 127.0.0.1, port: {broker.port}, timeout_s: 2}}]
        bus: {{redis_url: "{redis_server.url}"}}
        """, camera="Көктем 3 / кіреберіс")).start()
    try:
        alert = make_alert(1, camera_id="Көктем 3 / кіреберіс", type="bin_overflow")
        service.store.add(alert)
        got = {m.topic: m.payload for m in subscriber.take(4, timeout_s=20)}  # availability, events, event, state
    finally:
        service.stop(drain_s=5)
    assert got["baqylau/Көктем 3 %2F кіреберіс/bin_overflow/state"] == b"ON"
    body = json.loads(got["baqylau/events"])
    assert body["type"] == "alert.created" and body["data"]["alert_id"] == alert.alert_id


def test_replay_of_a_delivered_event_is_sent_again_with_its_webhook_id(tmp_path):
    receiver = Receiver().start()
    cfg = config(tmp_path, 'routes: [{types: [littering], routes: ["webhook:ops"]}]\n' + ops_webhook(receiver))
    service = DeliveryService(cfg).start()
    try:
        alert = make_alert(1, type="littering")
        service.store.add(alert)
        wait_until(lambda: len(receiver.accepted()) == 1, 10, "the first delivery")
        assert service.store.replay("webhook:ops", service.store.outbox_rows(alert_id=alert.alert_id)) == 1
        service.wake()
        wait_until(lambda: len(receiver.accepted()) == 2, 10, "the replay")
    finally:
        service.stop(drain_s=5)
        receiver.stop()
    first, again = receiver.accepted()
    assert first["headers"]["webhook-id"] == again["headers"]["webhook-id"] and first["body"] == again["body"]
    from baqylau.delivery import open_delivery_log

    with_log = open_delivery_log(cfg)
    try:
        assert [a["outcome"] for a in with_log.attempts(route="webhook:ops")] == ["delivered", "delivered"]
    finally:
        with_log.close()


@pytest.mark.parametrize("kind", ["embedded", "redis"])
def test_retention_prunes_delivered_data_and_keeps_alerts(kind, tmp_path, redis_server):  # noqa: F811
    receiver = Receiver().start()
    bus = f"bus: {{redis_url: '{redis_server.url}'}}\n" if kind == "redis" else ""
    cfg = config(tmp_path, 'delivery_retention_days: 1\nroutes: [{types: [littering], routes: ["webhook:ops", police]}]\n'
                 + ops_webhook(receiver) + bus)
    service = DeliveryService(cfg).start()
    try:
        for i in range(3):
            service.store.add(make_alert(i, type="littering"))
        wait_until(lambda: len(receiver.accepted()) == 3, 10, "three deliveries")
        wait_until(service.idle, 10, "the service to be idle")
        assert service.prune() == {"outbox": 0, "bus": 0, "attempts": 0}       # all younger than a day
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
        assert service.prune(now=later) == {"outbox": 3, "bus": 6, "attempts": 3}
        assert service.store.count() == 3 and len(service.store.history(make_alert(0).alert_id)) == 1
    finally:
        service.stop(drain_s=2)
        receiver.stop()
