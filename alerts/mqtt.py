"""MQTT output for alert events: an optional route sink (``mqtt:<name>``) built on paho-mqtt.

Many integrators (Home Assistant, Node-RED, Frigate users) consume events from MQTT topics.
:class:`MqttDeliverer` is a route ``Deliverer`` (``deliver(message, attempt) -> DeliveryResult``)
that publishes each bus entry's ``body`` (the webhook event JSON, ``{"type", "timestamp",
"data"}``) with QoS 1 to:

- ``{prefix}/events``: every event (like Frigate's ``frigate/events``);
- ``{prefix}/{camera}/{alert_type}``: the same body, per camera and alert type (``data.type``,
  e.g. ``loitering``, not the event type);
- ``{prefix}/{camera}/{alert_type}/state`` (when ``retain_state``): retained ``"ON"`` while the
  alert is ongoing and ``"OFF"`` once it ended or was resolved, the payloads of a Home Assistant
  MQTT ``binary_sensor`` (https://www.home-assistant.io/integrations/binary_sensor.mqtt/);
- ``{prefix}/availability``: retained ``"online"`` on connect, ``"offline"`` as the Last Will and
  on :meth:`MqttDeliverer.close` (Home Assistant ``availability_topic`` convention).

``{camera}`` and ``{alert_type}`` are escaped with :func:`topic_level`.

Delivery is at least once, never exactly once: QoS 1 (MQTT 3.1.1 section 4.3.2, "QoS 1: At least
once delivery") may duplicate, a timed-out attempt is retried by the route worker, and paho resends
a message that was in flight when the connection dropped once it reconnects. Receivers de-duplicate
on ``data.alert_id`` + ``type`` + ``timestamp``.

Spec references are to MQTT Version 3.1.1, OASIS Standard, 29 October 2014
(https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from typing import Any

import paho.mqtt.client as paho

from alerts.bus import BusMessage
from alerts.webhooks import DeliveryResult
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: Event types that end an alert's ``ON`` state whatever ``data.end_utc`` says.
ENDING_TYPES = frozenset({"alert.ended", "alert.resolved"})
#: Event types whose state follows ``data.end_utc`` (``None`` = ongoing = ``"ON"``); other event
#: types publish no state.
STATEFUL_TYPES = frozenset({"alert.created", "alert.updated", "alert.acknowledged"}) | ENDING_TYPES
#: Reconnect back-off bounds (s) for paho's ``reconnect_delay_set``: the delay doubles from the
#: minimum after each failed attempt up to the maximum. A lower maximum finds a restarted broker
#: sooner; a higher one knocks less on a broker that is down for long.
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30

# Characters percent-encoded inside one topic level; see topic_level.
_ESCAPE_RE = re.compile(
    "[%/+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(p + 0xFFFE)}{chr(p + 0xFFFF)}" for p in range(0, 0x110000, 0x10000))
    + "]")


class MqttConfigError(BaqylauError, ValueError):
    """A malformed MQTT sink setting (topic prefix, QoS, port, timeout)."""


def topic_level(text: str) -> str:
    """Escape ``text`` so it is exactly one level of an MQTT topic name, reversibly.

    Topic names are UTF-8 strings in which ``/`` separates levels and ``+`` and ``#`` are
    wildcards that must not appear in a published name (MQTT 3.1.1 section 4.7.1, 4.7.3); spaces
    and any other Unicode are allowed, so ``"Көктем 3"`` stays as it is. Percent-encoded (``%``
    and two upper-case hex digits per UTF-8 byte, as in URLs) are:

    - ``/``, ``+``, ``#`` (section 4.7), and ``%`` itself so the encoding can be undone with
      ``urllib.parse.unquote(level, errors="surrogatepass")``;
    - U+0000 and the surrogates U+D800..U+DFFF, which MUST NOT appear (section 1.5.3,
      [MQTT-1.5.3-1], [MQTT-1.5.3-2]);
    - the control characters U+0001..U+001F, U+007F..U+009F and the Unicode non-characters
      (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF), which SHOULD NOT appear and on which a receiver MAY close
      the connection (section 1.5.3). Mosquitto 2.0 does close it ("malformed packet"), and paho
      would resend the message after reconnecting, so one camera id with a tab in it would stall
      the route.

    A leading ``$`` is kept: it only matters in the first level (section 4.7.2), which is the
    prefix, checked by :class:`MqttDeliverer`.

    Args:
        text: Any string, e.g. a camera id ``"Көктем 3 / кіреберіс"``.

    Returns:
        The escaped level, e.g. ``"Көктем 3 %2F кіреберіс"``.
    """
    return _ESCAPE_RE.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), text)


def _event_parts(message: BusMessage) -> tuple[str | None, str | None, str | None, str | None]:
    """``(event_type, camera_id, alert_type, state)`` of a bus entry, each ``None`` when unknown.

    Taken from the body JSON (``type``, ``data.camera_id``, ``data.type``, ``data.end_utc``),
    falling back to the entry fields ``type`` and ``camera_id``.
    """
    fields = message.fields
    try:
        body = json.loads(fields.get("body", ""))
    except ValueError:
        body = None
    data: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        data = body["data"]
    event_type = body.get("type") if isinstance(body, dict) else None
    event_type = event_type if isinstance(event_type, str) else fields.get("type")
    camera_id = data.get("camera_id") if isinstance(data.get("camera_id"), str) else fields.get("camera_id")
    alert_type = data.get("type") if isinstance(data.get("type"), str) else None
    state = None
    if event_type in ENDING_TYPES:
        state = "OFF"
    elif event_type in STATEFUL_TYPES and "end_utc" in data:
        state = "ON" if data["end_utc"] is None else "OFF"
    return event_type, camera_id, alert_type, state


class MqttDeliverer:
    """Route deliverer that publishes alert events to an MQTT broker (paho-mqtt).

    One paho ``Client`` (callback API version 2, MQTT 3.1.1, clean session) runs its network loop
    in a background thread (``loop_start``). It connects on the first :meth:`deliver`, and after a
    lost connection reconnects by itself with exponential back-off between
    :data:`RECONNECT_MIN_S` and :data:`RECONNECT_MAX_S`. Thread-safe; one instance per route.

    Args:
        route: Route name, e.g. ``"mqtt:home-assistant"``; used in log messages.
        host: Broker host name or address.
        port: Broker TCP port (1883 plain, 8883 usual for TLS).
        topic_prefix: First topic level(s), e.g. ``"baqylau"`` or ``"city/baqylau"``; must be
            non-empty, must not start with ``$`` (reserved for the broker, section 4.7.2) and must
            not contain ``+``, ``#`` or characters :func:`topic_level` escapes other than ``/``.
        qos: QoS of the event publishes, 1 (default: the broker acknowledges with PUBACK, section
            4.3.2) or 2 (exactly once between client and broker, twice the round trips). 0 is
            refused: nothing would confirm the delivery.
        retain_state: Also publish the retained ``.../state`` topic (``"ON"``/``"OFF"``).
        username: Broker user name, or ``None`` for anonymous.
        password: Broker password (with ``username``).
        tls: Use TLS with the system's CA certificates (``Client.tls_set()`` defaults).
        client_id: MQTT client id; ``None`` lets paho pick a random one. Two live clients with
            the same id knock each other off the broker (section 3.1.4).
        keepalive_s: MQTT keep-alive (s); the broker drops the client after 1.5 times this
            without traffic (section 3.1.2.10), and paho pings in between. Lower notices a dead
            link sooner at the cost of more pings.
        timeout_s: Longest time (s) one :meth:`deliver` waits for the connection and the PUBACKs.
            Longer rides out a slow broker; shorter frees the route worker sooner.

    Raises:
        MqttConfigError: For a bad prefix, QoS, port, keep-alive or timeout.
    """

    def __init__(self, route: str, host: str, port: int = 1883, *, topic_prefix: str = "baqylau",
                 qos: int = 1, retain_state: bool = True, username: str | None = None,
                 password: str | None = None, tls: bool = False, client_id: str | None = None,
                 keepalive_s: int = 30, timeout_s: float = 10.0) -> None:
        if (not isinstance(topic_prefix, str) or not topic_prefix or topic_prefix.startswith("$")
                or topic_level(topic_prefix.replace("/", "")) != topic_prefix.replace("/", "")):
            raise MqttConfigError(f"topic_prefix must be non-empty, not start with '$' and hold no "
                                  f"'+', '#', '%' or control characters, got {topic_prefix!r}")
        if qos not in (1, 2):
            raise MqttConfigError(f"qos must be 1 or 2, got {qos!r}")
        if not 0 < int(port) < 65536:
            raise MqttConfigError(f"port must be 1..65535, got {port!r}")
        if not 0 < keepalive_s <= 65535:
            raise MqttConfigError(f"keepalive_s must be 1..65535 (section 3.1.2.10), got {keepalive_s!r}")
        if not timeout_s > 0:
            raise MqttConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.route, self.host, self.port = route, host, int(port)
        self.topic_prefix, self.qos, self.retain_state = topic_prefix, qos, retain_state
        self.keepalive_s, self.timeout_s = int(keepalive_s), float(timeout_s)
        self.availability_topic = f"{topic_prefix}/availability"
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._started = self._closed = False
        self._last_error: str | None = None

        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                             clean_session=True, protocol=paho.MQTTv311)
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set()
        client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._last_error = f"broker refused the connection: {reason_code}"
            logger.warning("%s: MQTT broker %s:%d refused the connection: %s",
                           self.route, self.host, self.port, reason_code)
            return
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        self._connected.set()
        logger.info("%s: connected to MQTT broker %s:%d", self.route, self.host, self.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._last_error = f"disconnected from broker: {reason_code}"
        if was_connected and not self._closed:
            logger.warning("%s: lost MQTT broker %s:%d (%s); reconnecting",
                           self.route, self.host, self.port, reason_code)

    def _start(self) -> None:
        """Begin connecting in the background (first call only)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._last_error = "not connected yet"
            self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
            self._client.loop_start()

    def topics(self, message: BusMessage) -> list[tuple[str, bytes, bool]]:
        """The publishes one bus entry becomes: ``(topic, payload, retain)`` in sending order.

        Args:
            message: A bus entry whose ``fields["body"]`` is the event JSON text.

        Returns:
            ``{prefix}/events`` with the body; ``{prefix}/{camera}/{alert_type}`` with the body
            when both are known; ``.../state`` with ``b"ON"``/``b"OFF"`` (retained) when
            ``retain_state`` and the event type says whether the alert is ongoing.
        """
        body = message.fields.get("body", "").encode("utf-8")
        _, camera_id, alert_type, state = _event_parts(message)
        out = [(f"{self.topic_prefix}/events", body, False)]
        if camera_id is not None and alert_type is not None:
            base = f"{self.topic_prefix}/{topic_level(camera_id)}/{topic_level(alert_type)}"
            out.append((base, body, False))
            if self.retain_state and state is not None:
                out.append((f"{base}/state", state.encode("ascii"), True))
        else:
            logger.warning("%s: entry %s has no camera id or alert type; published on %s/events only",
                           self.route, message.entry_id, self.topic_prefix)
        return out

    def deliver(self, message: BusMessage, attempt: int) -> DeliveryResult:
        """Publish one bus entry and wait for the broker to acknowledge every publish.

        Waits at most ``timeout_s`` in all: for the connection (the first call, or while the
        broker is down) and then for the PUBACKs (QoS 1, MQTT 3.1.1 section 4.3.2; PUBCOMP for
        QoS 2). Nothing is published while disconnected, so paho's queue does not grow during an
        outage. Never raises on network errors.

        Args:
            message: The bus entry (``fields["body"]`` is published as is, UTF-8).
            attempt: Attempt number (1-based, as the route worker counts), for the log only.

        Returns:
            ``status=200`` when the broker acknowledged all publishes; ``status=None`` with an
            ``error`` (outcome ``"retry"``) when not connected, timed out or refused.
        """
        start = time.monotonic()
        deadline = start + self.timeout_s

        def result(status: int | None, error: str | None) -> DeliveryResult:
            elapsed_ms = (time.monotonic() - start) * 1000.0
            if error is not None:
                logger.warning("%s: MQTT delivery of entry %s (attempt %d) failed after %.0f ms: %s",
                               self.route, message.entry_id, attempt, elapsed_ms, error)
            return DeliveryResult(status, None, error, elapsed_ms)

        if self._closed:
            return result(None, "deliverer is closed")
        publishes = self.topics(message)
        self._start()
        if not self._connected.wait(self.timeout_s):
            return result(None, f"not connected to {self.host}:{self.port} ({self._last_error})")
        infos = []
        try:
            for topic, payload, retain in publishes:
                qos = 1 if retain else self.qos
                infos.append((topic, self._client.publish(topic, payload, qos=qos, retain=retain)))
            for topic, info in infos:
                info.wait_for_publish(max(deadline - time.monotonic(), 0.0))
                if not info.is_published():
                    return result(None, f"no acknowledgement for {topic!r} within {self.timeout_s} s")
        except (ValueError, RuntimeError) as exc:  # paho: queue full, not connected, bad topic
            return result(None, f"{type(exc).__name__}: {exc}")
        return result(200, None)

    def close(self) -> None:
        """Publish ``"offline"`` on the availability topic, disconnect and stop the network
        thread (idempotent). A clean disconnect does not fire the Last Will (section 3.14.4)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._started:
                return
        if self._connected.is_set():
            try:
                self._client.publish(self.availability_topic, "offline", qos=1,
                                     retain=True).wait_for_publish(min(self.timeout_s, 2.0))
            except (ValueError, RuntimeError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
