"""Tests of alerts.webhooks against the official Standard Webhooks verifier and a real HTTP server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import socket
import threading
import time
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.webhooks import (DELIVERED, DISABLED, RETRY, RETRY_SCHEDULE_S, WebhookConfigError,
                             deliver_once, event_body, generate_secret, headers, message_id,
                             next_delay_s, parse_retry_after, sign)
from tests.alerts.helpers import T0, make_alert

standardwebhooks = pytest.importorskip("standardwebhooks.webhooks")
Webhook, WebhookVerificationError = standardwebhooks.Webhook, standardwebhooks.WebhookVerificationError

NAME = "Көктем 3 / кіреберіс"


def signed(secrets, camera_name=NAME):
    body = event_body("alert.created", make_alert(camera_name=camera_name), "https://c.example/s/1.jpg", T0)
    msg_id = message_id(make_alert().alert_id, "alert.created", 0)
    return body, headers(msg_id, int(time.time()), body, secrets)


def test_signature_accepted_by_official_verifier_and_cyrillic_round_trip():
    secret = generate_secret()
    body, hdrs = signed([secret])
    payload = Webhook(secret).verify(body, hdrs)
    assert payload["type"] == "alert.created"
    assert payload["timestamp"] == "2025-03-01T18:30:00.000000Z"
    assert payload["data"]["camera_name"] == NAME
    assert payload["data"]["snapshot_url"] == "https://c.example/s/1.jpg"
    assert "snapshot_path" not in payload["data"]
    assert NAME.encode() in body  # not \u-escaped
    assert hdrs["content-type"] == "application/json"


def test_key_rotation_either_secret_verifies_and_wrong_secret_rejected():
    old, new = generate_secret(), generate_secret()
    body, hdrs = signed([new, old])
    assert len(hdrs["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, hdrs)["data"]["camera_name"] == NAME
    assert Webhook(new).verify(body, hdrs)["data"]["camera_name"] == NAME
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, hdrs)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace(b"0.75", b"0.95"), hdrs)


def test_sign_known_vector():
    # The key is 24 bytes 0x00..0x17; expected value computed independently with the verifier library.
    secret = "whsec_" + base64.b64encode(bytes(range(24))).decode()
    ts = 1674087231
    got = sign("msg_abc", ts, b'{"a":1}', [secret])
    want = Webhook(secret).sign("msg_abc", dt.datetime.fromtimestamp(ts, dt.timezone.utc), '{"a":1}')
    assert got == want


@pytest.mark.parametrize("secret", [
    "abc", "whsec_", "whsec_!!notbase64!!", "whsec_" + base64.b64encode(b"short").decode(),
    "whsec_" + base64.b64encode(bytes(65)).decode(),
])
def test_malformed_secret_raises(secret):
    with pytest.raises(WebhookConfigError):
        sign("msg_1", 1, b"{}", [secret])


@pytest.mark.parametrize("kw", [
    dict(msg_id="msg.1"), dict(msg_id=""), dict(timestamp_s=1.5), dict(secrets=[]),
    dict(secrets="whsec_" + base64.b64encode(bytes(32)).decode()),
])
def test_sign_bad_arguments_raise(kw):
    args = dict(msg_id="msg_1", timestamp_s=1, body=b"{}", secrets=[generate_secret()]) | kw
    with pytest.raises(WebhookConfigError):
        sign(**args)


def test_event_body_is_canonical_and_rejects_bad_type():
    alert = make_alert()
    a = event_body("alert.updated", alert, None, T0)
    assert a == event_body("alert.updated", alert, None, T0)
    canonical = json.dumps(json.loads(a), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert a == canonical.encode("utf-8")
    assert json.loads(a)["data"]["snapshot_url"] is None
    for bad in ("created", "alert created", "alert.", ""):
        with pytest.raises(WebhookConfigError):
            event_body(bad, alert, None, T0)


def test_message_id_stable_and_distinct():
    aid = make_alert().alert_id
    assert message_id(aid, "alert.updated", 2) == message_id(aid, "alert.updated", 2)
    ids = {message_id(aid, t, r) for t in ("alert.created", "alert.updated") for r in (0, 1)}
    assert len(ids) == 4
    assert all(i.startswith("msg_") and "." not in i for i in ids)


def test_next_delay_schedule_jitter_and_retry_after():
    assert RETRY_SCHEDULE_S[:3] == (0.0, 5.0, 300.0)
    rng = random.Random(0)
    for attempt, base in enumerate(RETRY_SCHEDULE_S):
        for _ in range(50):
            d = next_delay_s(attempt, rng=rng)
            assert 0.8 * base <= d <= 1.2 * base
    assert next_delay_s(len(RETRY_SCHEDULE_S)) is None
    with pytest.raises(ValueError):
        next_delay_s(-1)
    assert next_delay_s(1, "120", rng=rng) == 120.0          # larger than 5 s +- 20 %
    assert 240 <= next_delay_s(2, "120", rng=rng) <= 360     # smaller: schedule wins
    now_s = 1_700_000_000.0
    date = format_datetime(dt.datetime.fromtimestamp(now_s + 600, dt.timezone.utc), usegmt=True)
    assert next_delay_s(1, date, rng=rng, now_s=now_s) == pytest.approx(600.0)
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("999999999") == 86400.0


class _Handler(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/ok":
            type(self).received.append((body, dict(self.headers)))
            self.send_response(200)
        elif self.path == "/busy":
            self.send_response(429)
            self.send_header("Retry-After", "7")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
        else:
            self.send_response({"/fail": 500, "/gone": 410, "/missing": 404}[self.path])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, name="webhook-test-receiver", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path, status, outcome, retry_after_s", [
    ("/ok", 200, DELIVERED, None), ("/fail", 500, RETRY, None), ("/busy", 429, RETRY, 7.0),
    ("/gone", 410, DISABLED, None), ("/missing", 404, RETRY, None), ("/redirect", 302, RETRY, None),
])
def test_deliver_once_classifies_responses(server, path, status, outcome, retry_after_s):
    secret = generate_secret()
    body, hdrs = signed([secret])
    result = deliver_once(server + path, body, hdrs, timeout_s=5.0)
    assert (result.status, result.outcome, result.retry_after_s) == (status, outcome, retry_after_s)
    assert (result.error is None) == (outcome == DELIVERED)
    if path == "/ok":
        got_body, got_headers = _Handler.received[-1]
        assert Webhook(secret).verify(got_body, got_headers)["data"]["camera_name"] == NAME


def test_deliver_once_never_answering_times_out_without_raising():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts in the kernel, never replies
        body, hdrs = signed([generate_secret()])
        result = deliver_once(f"http://127.0.0.1:{silent.getsockname()[1]}/", body, hdrs, timeout_s=0.5)
    assert result.status is None and result.outcome == RETRY
    assert "timed out" in result.error.lower()


def test_deliver_once_refused_and_reset_without_raising():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    body, hdrs = signed([generate_secret()])
    result = deliver_once(f"http://127.0.0.1:{port}/", body, hdrs, timeout_s=2.0)
    assert result.status is None and result.outcome == RETRY and "Refused" in result.error

    with socket.create_server(("127.0.0.1", 0)) as closing:
        def accept_and_close():
            conn, _ = closing.accept()
            conn.recv(1)
            conn.close()
        t = threading.Thread(target=accept_and_close, name="webhook-test-closer", daemon=True)
        t.start()
        result = deliver_once(f"http://127.0.0.1:{closing.getsockname()[1]}/", body, hdrs, timeout_s=2.0)
        t.join(5)
    assert result.status is None and result.outcome == RETRY and result.error


@pytest.mark.parametrize("url", ["ftp://h/x", "http:///nohost", "not a url"])
def test_deliver_once_bad_url_raises_config_error(url):
    with pytest.raises(WebhookConfigError):
        deliver_once(url, b"{}", {}, timeout_s=1.0)
