"""MqttDeliverer against a real mosquitto broker on a free port."""

from __future__ import annotations

import datetime as dt
import json
import queue
import shutil
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (the mqtt extra)")

from alerts.bus import BusMessage  # noqa: E402
from alerts.mqtt import MqttConfigError, MqttDeliverer, topic_level  # noqa: E402
from alerts.webhooks import DELIVERED, RETRY, event_body  # noqa: E402
from tests.alerts.helpers import T0, make_alert  # noqa: E402
from tests.conftest import free_port, wait_until  # noqa: E402

CAMERA = "Көктем 3 / кіреберіс"


def mosquitto_exe() -> str:
    """The mosquitto binary (often in /usr/sbin, off a user's PATH); skips when absent."""
    exe = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return exe


class Broker:
    """A mosquitto process on 127.0.0.1:``port`` that can be stopped and started again."""

    def __init__(self, exe: str, port: int, tmp: Path) -> None:
        self.exe, self.port, self.tmp = exe, port, tmp
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def start(self) -> None:
        log = open(self.tmp / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        wait_until(lambda: self.accepts() or self.proc.poll() is not None, 10.0, "mosquitto to listen")
        if self.proc.poll() is not None:
            pytest.fail(f"mosquitto exited: {(self.tmp / 'mosquitto.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(mosquitto_exe(), free_port(), tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A paho client subscribed to ``topic`` with QoS 1, collecting messages in a queue."""

    def __init__(self, port: int, topic: str = "baqylau/#") -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        subscribed.get(timeout=5)

    def take(self, n: int, timeout_s: float = 5.0) -> list[paho.MQTTMessage]:
        return [self.messages.get(timeout=timeout_s) for _ in range(n)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker):
    s = Subscriber(broker.port)
    yield s
    s.close()


def bus_message(event_type: str = "alert.created", seq: int = 1, camera_id: str = CAMERA,
                ended: bool = False, type: str = "loitering") -> BusMessage:  # noqa: A002
    """A bus entry as the relay publishes it, body from the real webhook encoder."""
    alert = make_alert(0, camera_id=camera_id, type=type,
                       **({"end_time_s": 9.0, "end_utc": T0 + dt.timedelta(seconds=9)} if ended else {}))
    body = event_body(event_type, alert, None, T0).decode("utf-8")
    fields = {"msg_id": f"msg_{seq}", "type": event_type, "alert_id": alert.alert_id,
              "camera_id": camera_id, "body": body, "created_utc": "2025-03-01T18:30:00Z"}
    return BusMessage(route="mqtt:ha", seq=seq, entry_id=f"{seq}-0", fields=fields)


def deliverer(port: int, **kw) -> MqttDeliverer:
    return MqttDeliverer("mqtt:ha", "127.0.0.1", port, **{"timeout_s": 5.0, **kw})


@pytest.mark.parametrize("text, escaped", [
    ("cam-1", "cam-1"),
    (CAMERA, "Көктем 3 %2F кіреберіс"),
    ("a+b#c%d", "a%2Bb%23c%25d"),
    ("nul\x00tab\tdel\x7f", "nul%00tab%09del%7F"),
    ("\ufffe\U0010ffff", "%EF%BF%BE%F4%8F%BF%BF"),
    ("$SYS", "$SYS"),
])
def test_topic_level_escapes_reversibly(text, escaped):
    assert topic_level(text) == escaped
    assert urllib.parse.unquote(escaped, errors="surrogatepass") == text


@pytest.mark.parametrize("kw", [
    {"topic_prefix": ""}, {"topic_prefix": "$SYS"}, {"topic_prefix": "a/+"}, {"topic_prefix": "a#"},
    {"qos": 0}, {"qos": 3}, {"port": 0}, {"timeout_s": 0}, {"keepalive_s": 0},
])
def test_bad_settings_raise(kw):
    with pytest.raises(MqttConfigError):
        MqttDeliverer("mqtt:ha", "127.0.0.1", **kw)


def test_event_arrives_on_all_topics_with_exact_body(broker, subscriber):
    d = deliverer(broker.port)
    try:
        message = bus_message()
        result = d.deliver(message, 0)
        assert result.outcome == DELIVERED and result.status == 200 and result.error is None
        got = {m.topic: m for m in subscriber.take(4)}  # availability + 3
    finally:
        d.close()
    base = f"baqylau/{topic_level(CAMERA)}/loitering"
    assert set(got) == {"baqylau/availability", "baqylau/events", base, f"{base}/state"}
    body = message.fields["body"].encode("utf-8")
    assert got["baqylau/events"].payload == body and got[base].payload == body
    assert got[f"{base}/state"].payload == b"ON"
    assert got["baqylau/events"].qos == 1  # published with QoS 1, subscribed with QoS 1
    assert got["baqylau/availability"].payload == b"online"
    # The camera id round-trips from the topic level.
    level = got[base].topic.split("/")[1]
    assert urllib.parse.unquote(level) == CAMERA
    assert json.loads(got[base].payload)["data"]["camera_id"] == CAMERA


def test_state_is_retained_on_then_off(broker):
    d = deliverer(broker.port)
    state_topic = f"baqylau/{topic_level(CAMERA)}/loitering/state"
    try:
        assert d.deliver(bus_message("alert.created", 1), 0).outcome == DELIVERED
        late = Subscriber(broker.port, state_topic)
        (msg,) = late.take(1)
        late.close()
        assert (msg.payload, msg.retain) == (b"ON", True)
        assert d.deliver(bus_message("alert.ended", 2, ended=True), 0).outcome == DELIVERED
        late = Subscriber(broker.port, state_topic)
        (msg,) = late.take(1)
        late.close()
        assert (msg.payload, msg.retain) == (b"OFF", True)
    finally:
        d.close()
    # close() leaves "offline" retained on the availability topic.
    late = Subscriber(broker.port, "baqylau/availability")
    (msg,) = late.take(1)
    late.close()
    assert (msg.payload, msg.retain) == (b"offline", True)


def test_resolved_event_turns_state_off_and_unknown_types_leave_it(broker, subscriber):
    d = deliverer(broker.port, retain_state=True)
    try:
        assert d.deliver(bus_message("alert.resolved", 1), 0).outcome == DELIVERED
        assert d.deliver(bus_message("alert.commented", 2), 0).outcome == DELIVERED
        got = [(m.topic.rsplit("/", 1)[-1], m.payload) for m in subscriber.take(6)]
    finally:
        d.close()
    assert [p for t, p in got if t == "state"] == [b"OFF"]


def test_broker_down_then_back_same_deliverer(tmp_path):
    b = Broker(mosquitto_exe(), free_port(), tmp_path)  # not started yet
    d = deliverer(b.port, timeout_s=1.0)
    try:
        result = d.deliver(bus_message(seq=1), 0)
        assert result.outcome == RETRY and result.status is None and "not connected" in result.error
        assert result.elapsed_ms < 10_000  # bounded by timeout_s, never hangs
        b.start()
        sub = Subscriber(b.port, "baqylau/events")
        try:
            outcomes = []
            wait_until(lambda: outcomes.append(d.deliver(bus_message(seq=2), len(outcomes) + 1).outcome)
                       or outcomes[-1] == DELIVERED, 20.0, "delivery after the broker came up")
            (msg,) = sub.take(1)
            assert json.loads(msg.payload)["type"] == "alert.created"
            # The broker goes away and comes back: the same deliverer reconnects.
            b.stop()
            assert d.deliver(bus_message(seq=3), 0).outcome == RETRY
        finally:
            sub.close()
        b.start()
        outcomes = []
        wait_until(lambda: outcomes.append(d.deliver(bus_message(seq=4), 1).outcome)
                   or outcomes[-1] == DELIVERED, 40.0, "delivery after the broker restarted")
    finally:
        d.close()
        b.stop()


def test_deliver_after_close_is_a_retry(broker):
    d = deliverer(broker.port)
    d.close()
    result = d.deliver(bus_message(), 0)
    assert result.outcome == RETRY and result.error == "deliverer is closed"
