"""Standard Webhooks 1.0: signing, event bodies, retry schedule and one delivery attempt.

Follows the Standard Webhooks specification 1.0.0 (https://www.standardwebhooks.com/, text in
github.com/standard-webhooks/standard-webhooks ``spec/standard-webhooks.md``): a POST whose body is
``{"type", "timestamp", "data"}`` JSON, with headers ``webhook-id`` (the same on every retry, so a
receiver can de-duplicate), ``webhook-timestamp`` (Unix seconds of the attempt) and
``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 over ``{id}.{timestamp}.{body}``, one per secret
during key rotation). Not yet wired into the pipeline: the caller owns queueing, scheduling and the
record of attempts.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import random
import re
import secrets as _secrets
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from alerts.record import Alert, format_utc
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: Prefix of symmetric secrets (spec, "Signature scheme" table).
SECRET_PREFIX = "whsec_"
#: Secret key length bounds in bytes: "At least 24 bytes (192 bits, 512 maximum)" (spec).
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64

#: Delay (s) before each attempt: the spec's example schedule ("Deliverability and reliability"):
#: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (about 3 days 3.5 h in all).
RETRY_SCHEDULE_S: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0,
                                       50400.0, 72000.0, 86400.0)
#: Relative jitter on each delay; spreads retries so a receiver that failed under load is not hit
#: again by all senders at the same instant (spec recommends "some level of random jitter").
JITTER = 0.2
#: Largest ``Retry-After`` honoured (s); a receiver cannot park a message longer than a day.
MAX_RETRY_AFTER_S = 86400.0
#: Default per-attempt timeout (s); the spec recommends 15-30 s ("Request timeouts").
DEFAULT_TIMEOUT_S = 15.0

#: Outcomes of :class:`DeliveryResult`.
DELIVERED, DISABLED, RETRY = "delivered", "disabled", "retry"

_EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+")


class WebhookConfigError(BaqylauError, ValueError):
    """A malformed webhook secret, event type, message id or endpoint URL."""


def parse_secret(secret: str) -> bytes:
    """Decode a ``whsec_<base64>`` secret into its HMAC key.

    Args:
        secret: ``"whsec_"`` followed by the standard base64 of 24..64 random bytes.

    Returns:
        The key bytes.

    Raises:
        WebhookConfigError: When the prefix is missing, the base64 is invalid, or the key is
            shorter than 24 or longer than 64 bytes (spec bounds).
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise WebhookConfigError(f"webhook secret must be a string starting with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookConfigError("webhook secret is not valid base64 after 'whsec_'") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise WebhookConfigError(f"webhook secret key must be {SECRET_MIN_BYTES}..{SECRET_MAX_BYTES} "
                                 f"bytes, got {len(key)}")
    return key


def generate_secret(n_bytes: int = 32) -> str:
    """Return a new random ``whsec_`` secret of ``n_bytes`` key bytes (24..64).

    Raises:
        WebhookConfigError: When ``n_bytes`` is outside 24..64.
    """
    if not SECRET_MIN_BYTES <= n_bytes <= SECRET_MAX_BYTES:
        raise WebhookConfigError(f"n_bytes must be {SECRET_MIN_BYTES}..{SECRET_MAX_BYTES}, got {n_bytes}")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(n_bytes)).decode("ascii")


def sign(msg_id: str, timestamp_s: int, body: bytes, secrets: Sequence[str]) -> str:
    """Return the ``webhook-signature`` header value.

    One ``v1,<base64 HMAC-SHA256(key, f"{msg_id}.{timestamp_s}.".encode() + body)>`` per secret,
    space-separated, in the order given (spec, "Signature scheme" and "Webhook headers").

    Args:
        msg_id: The ``webhook-id``; non-empty, without ``.`` (spec: ids must not contain full stops).
        timestamp_s: Unix time of the attempt, integer seconds (UTC).
        body: Exact bytes sent as the request body.
        secrets: One or more ``whsec_`` secrets; several while rotating keys.

    Raises:
        WebhookConfigError: For an empty or dotted id, a non-integer timestamp, no secrets, or a
            malformed secret (see :func:`parse_secret`).
    """
    if not isinstance(msg_id, str) or not msg_id or "." in msg_id:
        raise WebhookConfigError(f"webhook id must be a non-empty string without '.', got {msg_id!r}")
    if isinstance(timestamp_s, bool) or not isinstance(timestamp_s, int):
        raise WebhookConfigError(f"timestamp_s must be an int (Unix seconds), got {timestamp_s!r}")
    if isinstance(secrets, str) or not secrets:
        raise WebhookConfigError("secrets must be a non-empty sequence of 'whsec_' strings")
    to_sign = f"{msg_id}.{timestamp_s}.".encode() + bytes(body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(parse_secret(s), to_sign, hashlib.sha256).digest()).decode()
        for s in secrets)


def headers(msg_id: str, timestamp_s: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """Return the request headers of one attempt: ``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature`` and ``content-type: application/json``.

    Args:
        msg_id: See :func:`sign`; keep it the same for every retry of one message.
        timestamp_s: Unix seconds of this attempt (new on each retry; receivers reject old ones).
        body: Exact body bytes.
        secrets: ``whsec_`` secrets.

    Raises:
        WebhookConfigError: As :func:`sign`.
    """
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(msg_id, timestamp_s, body, secrets),
        "content-type": "application/json",
    }


def event_body(event_type: str, alert: Alert, snapshot_url: str | None, now: dt.datetime) -> bytes:
    """Encode an alert event as the webhook body.

    ``{"type": event_type, "timestamp": ISO 8601 UTC, "data": {...Alert.to_dict()...,
    "snapshot_url": ...}}`` as compact JSON with sorted keys, UTF-8 with non-ASCII kept. The
    server-local ``snapshot_path`` is replaced by ``snapshot_url``; images are never inlined
    (spec, "Payload size").

    Args:
        event_type: Full-stop delimited type of ``[A-Za-z0-9_]`` parts, e.g. ``"alert.created"``,
            ``"alert.updated"``, ``"alert.resolved"`` (spec, "Event types").
        alert: The alert; not modified.
        snapshot_url: Where the receiver can fetch the snapshot, or ``None``.
        now: Aware time of the event (not of the attempt).

    Raises:
        WebhookConfigError: For a malformed event type.
        AlertRecordError: For a naive ``now``.
    """
    if not isinstance(event_type, str) or not _EVENT_TYPE_RE.fullmatch(event_type):
        raise WebhookConfigError(f"event type must look like 'alert.created', got {event_type!r}")
    data = alert.to_dict()
    data.pop("snapshot_path", None)
    data["snapshot_url"] = snapshot_url
    payload = {"type": event_type, "timestamp": format_utc(now), "data": data}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      allow_nan=False).encode("utf-8")


def message_id(alert_id: str, event_type: str, revision: int) -> str:
    """Return a ``webhook-id`` that is the same for every retry and replay of one event.

    ``"msg_"`` + the first 32 hex digits (128 bits) of SHA-256 over the JSON list
    ``[alert_id, event_type, revision]``.

    Args:
        alert_id: Alert id.
        event_type: Event type, e.g. ``"alert.updated"``.
        revision: Revision of the alert this event reports (distinguishes successive updates).
    """
    name = json.dumps([alert_id, event_type, int(revision)], ensure_ascii=False)
    return "msg_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header (RFC 9110 section 10.2.3): delay seconds or an HTTP-date.

    Args:
        value: Header value, or ``None``.
        now_s: Current Unix time (s) for HTTP-dates; ``time.time()`` when ``None``.

    Returns:
        Seconds to wait (>= 0, at most :data:`MAX_RETRY_AFTER_S`), or ``None`` when absent or
        unparsable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def next_delay_s(attempt: int, retry_after_header: str | None = None,
                 rng: random.Random | None = None, now_s: float | None = None) -> float | None:
    """Return the delay (s) before attempt number ``attempt``, or ``None`` to give up.

    The delay is ``RETRY_SCHEDULE_S[attempt]`` times a uniform factor in ``[1 - JITTER,
    1 + JITTER]``; when the previous response carried a ``Retry-After`` that asks for longer, that
    is used instead (spec, "Delivery success and failure").

    Args:
        attempt: 0-based index of the attempt to schedule (0 is the first, sent immediately).
        retry_after_header: ``Retry-After`` of the previous response, if any.
        rng: Random source for the jitter (seed it in tests); the module's ``random`` if ``None``.
        now_s: Current Unix time (s) for HTTP-date ``Retry-After``; ``time.time()`` if ``None``.

    Raises:
        ValueError: For a negative ``attempt``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if attempt >= len(RETRY_SCHEDULE_S):
        return None
    delay = RETRY_SCHEDULE_S[attempt] * (rng or random).uniform(1.0 - JITTER, 1.0 + JITTER)
    retry_after = parse_retry_after(retry_after_header, now_s)
    return delay if retry_after is None else max(delay, retry_after)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Result of one delivery attempt.

    Attributes:
        status: HTTP status code, or ``None`` when no response came (timeout, refused, reset).
        retry_after_s: Parsed ``Retry-After`` of the response (s), or ``None``.
        error: Why it failed (``None`` when delivered), for the attempt record.
        elapsed_ms: Wall time of the attempt (ms, monotonic clock).
    """

    status: int | None
    retry_after_s: float | None
    error: str | None
    elapsed_ms: float

    @property
    def outcome(self) -> str:
        """``"delivered"`` for 2xx, ``"disabled"`` for 410 Gone (stop sending to this endpoint),
        ``"retry"`` for everything else: 3xx (redirects are not followed), 4xx, 429, 5xx and
        network errors (spec, "Delivery success and failure")."""
        if self.status is not None and 200 <= self.status < 300:
            return DELIVERED
        if self.status == 410:
            return DISABLED
        return RETRY


def deliver_once(url: str, body: bytes, headers: Mapping[str, str],
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> DeliveryResult:
    """POST ``body`` to ``url`` once; never raises on network errors.

    Uses ``http.client`` directly so redirects are not followed. The timeout applies to the
    connect and to each socket read or write, so a receiver trickling bytes can take longer;
    run attempts off the pipeline's threads. The response body is not read beyond 1 KiB.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        body: Exact body bytes (as signed).
        headers: From :func:`headers`.
        timeout_s: Per-operation socket timeout (s), > 0.

    Returns:
        The result; see :attr:`DeliveryResult.outcome`.

    Raises:
        WebhookConfigError: For a URL that is not http(s) with a host, or ``timeout_s <= 0``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"webhook URL must be http(s)://host/..., got {url!r}")
    if not timeout_s > 0:
        raise WebhookConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    # a raw non-ASCII or space character in the configured URL is sent percent-encoded (RFC 3986)
    target = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    send_headers = {"user-agent": "baqylau-webhooks", **headers}
    start = time.monotonic()
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("POST", target, body=bytes(body), headers=send_headers)
        resp = conn.getresponse()
        resp.read(1024)
        status = resp.status
        retry_after = parse_retry_after(resp.getheader("Retry-After"))
    except (OSError, http.client.HTTPException) as exc:
        elapsed_ms = (time.monotonic() - start) * 1000.0
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("webhook %s to %s failed after %.0f ms: %s",
                       headers.get("webhook-id"), parts.hostname, elapsed_ms, error)
        return DeliveryResult(None, None, error, elapsed_ms)
    finally:
        conn.close()
    elapsed_ms = (time.monotonic() - start) * 1000.0
    error = None if 200 <= status < 300 else f"HTTP {status}"
    if error:
        logger.warning("webhook %s to %s answered %s", headers.get("webhook-id"), parts.hostname, error)
    return DeliveryResult(status, retry_after, error, elapsed_ms)
