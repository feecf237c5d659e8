"""Alert delivery benchmark (issue 6): end-to-end throughput and latency of store -> relay -> bus -> webhook.

N alerts (several cameras) are added as fast as one thread can to a fresh ``AlertStore`` in a
temporary folder, while a ``Relay`` publishes the outbox to the bus and a ``RouteWorker`` with a
``WebhookDeliverer`` POSTs them to a real loopback receiver (``http.server``) that records the
arrival time of every ``webhook-id``. Measured once over Redis Streams (a ``redis-server`` started
here with AOF and ``appendfsync always``, as in the tests) and once over the embedded (SQLite) bus:

- alerts/s: N / (last receiver answer - first add);
- delivery latency per alert: first arrival at the receiver - the moment ``store.add`` returned
  (both ``time.time()`` in this process), p50 and p99 in ms;
- lost (never arrived) and duplicated (accepted more than once), summed over all runs.

The burst runs measure capacity (their latency is mostly queueing: adds outrun delivery); two
more runs pace the adds at ``PACED_RATE_PER_S`` for 10 s and report the latency below capacity
(``paced``).

Baselines measured in the same run show where the time goes: the raw Redis Streams round trips
(``XADD`` one entry at a time from one thread, ``XREADGROUP`` + one ``XACK`` per entry in
another, with redis-py, bodies of the same size) and raw HTTP POSTs of the same bodies to the same
receiver (a new connection per POST like ``deliver_once``, as many threads as the worker's
``max_in_flight``). Store adds alone are reported as ``store_adds_per_s_*`` (adds overlap with
delivery in the end-to-end runs).

Usage:
    .venv/bin/python benchmarks/alerts.py [--alerts 2000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import logging
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from alerts.bus import EmbeddedBus, RedisBus  # noqa: E402
from alerts.delivery import DeliveryLog, RouteWorker, WebhookDeliverer  # noqa: E402
from alerts.outbox import OutboxPolicy  # noqa: E402
from alerts.record import Alert, make_alert_id  # noqa: E402
from alerts.relay import Relay  # noqa: E402
from alerts.routing import RouteRule, Router  # noqa: E402
from alerts.store import AlertStore  # noqa: E402
from alerts.webhooks import generate_secret, headers, message_id  # noqa: E402

log = logging.getLogger("benchmarks.alerts")

ROUTE = "webhook:bench"
CAMERAS = tuple(f"Көктем {i} / кіреберіс" for i in range(8))
#: Concurrent attempts of the route worker (the configuration's default) and raw HTTP threads.
MAX_IN_FLIGHT = 4
#: Rate of the paced runs (latency below capacity), alerts/s.
PACED_RATE_PER_S = 100.0
#: Longest wait for one run to deliver everything, s.
RUN_TIMEOUT_S = 300.0

T0 = dt.datetime(2025, 3, 1, 18, 30, tzinfo=dt.timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_alert(i: int) -> Alert:
    """Alert number ``i`` of camera ``CAMERAS[i % 8]`` (the shape the pipeline stores)."""
    camera = CAMERAS[i % len(CAMERAS)]
    return Alert(alert_id=make_alert_id(camera, "bench", "loiter", float(i)), type="loitering", camera_id=camera,
                 camera_name=camera, zone_id="door", rule_id="loiter", track_ids=(i,), start_time_s=float(i),
                 end_time_s=None, start_utc=T0 + dt.timedelta(seconds=i), end_utc=None, conf=0.75,
                 snapshot_path=None, location=(43.238, 76.945), xyxy=((1.0, 2.0, 30.5, 40.0),),
                 details={"max_dwell_s": 3.5, "class_names": ["person"]})


class Receiver:
    """Loopback webhook receiver in its own process (so its threads do not compete for this
    process's GIL), answering 200 and recording ``time.time()`` per ``webhook-id``.

    Control endpoints on the same server: ``POST /reset``, ``GET /count`` (``{"unique", "total"}``)
    and ``GET /arrivals`` (``{webhook-id: [times]}``).
    """

    def __init__(self) -> None:
        self.port = free_port()
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(target=serve_receiver, args=(self.port,), name="receiver", daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                self.count()
                break
            except OSError:
                if time.monotonic() > deadline or not self.proc.is_alive():
                    raise SystemExit("the receiver process did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _call(self, method: str, path: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=b"" if method == "POST" else None)
            return json.loads(conn.getresponse().read() or b"{}")
        finally:
            conn.close()

    def reset(self) -> None:
        self._call("POST", "/reset")

    def count(self) -> dict:
        return self._call("GET", "/count")

    def arrivals(self) -> dict[str, list[float]]:
        return self._call("GET", "/arrivals")

    def wait_for(self, n: int, timeout_s: float) -> bool:
        """Poll every 20 ms until ``n`` distinct ids arrived; ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.count()["unique"] < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(10)


def serve_receiver(port: int) -> None:
    """The receiver process's main function (see :class:`Receiver`)."""
    lock = threading.Lock()
    arrivals: dict[str, list[float]] = {}
    total = [0]

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, payload: bytes = b"") -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/reset":
                with lock:
                    arrivals.clear()
                    total[0] = 0
                return self._answer()
            now = time.time()
            with lock:
                arrivals.setdefault(self.headers["webhook-id"], []).append(now)
                total[0] += 1
            self._answer()

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with lock:
                data = {"unique": len(arrivals), "total": total[0]} if self.path == "/count" else dict(arrivals)
            self._answer(json.dumps(data).encode())

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 128
    httpd.serve_forever()


class RedisProcess:
    """A throw-away ``redis-server`` on 127.0.0.1 with AOF (``appendfsync always``) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(directory), "--logfile", str(directory / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                self.version = client.info("server")["redis_version"]
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def percentile_ms(values_s: list[float], q: int) -> float:
    """The q-th percentile (1..99) of values in seconds, in ms."""
    return round(statistics.quantiles(values_s, n=100, method="inclusive")[q - 1] * 1000.0, 2)


def run_end_to_end(kind: str, n: int, folder: Path, receiver: Receiver, redis_url: str | None,
                   block_ms: int = 1000, rate_per_s: float | None = None) -> dict:
    """Add ``n`` alerts (a burst, or paced at ``rate_per_s``) and deliver them through the whole
    path; returns the run's figures."""
    folder.mkdir()
    bus = RedisBus(redis_url) if kind == "redis" else EmbeddedBus(folder / "bus.db")
    store = AlertStore(folder / "alerts.db", OutboxPolicy(Router([RouteRule(routes=[ROUTE])])))
    delivery_log = DeliveryLog(folder / "deliveries.db")
    relay = Relay(store, bus)
    worker = RouteWorker(ROUTE, bus, WebhookDeliverer(ROUTE, receiver.url, [generate_secret()], timeout_s=15.0),
                         delivery_log, max_in_flight=MAX_IN_FLIGHT, block_ms=block_ms)
    alerts = [make_alert(i) for i in range(n)]
    added_at: dict[str, float] = {}
    receiver.reset()
    relay.start()
    worker.start()
    try:
        t_start = time.time()
        for i, alert in enumerate(alerts):
            if rate_per_s:
                time.sleep(max(0.0, t_start + i / rate_per_s - time.time()))
            store.add(alert)
            added_at[message_id(alert.alert_id, "alert.created", 1)] = time.time()
            relay.wake()
        t_added = time.time()
        if not receiver.wait_for(n, RUN_TIMEOUT_S):
            log.error("%s run: only %d of %d alerts arrived within %.0f s", kind, receiver.count()["unique"], n,
                      RUN_TIMEOUT_S)
        time.sleep(0.5)  # let a late duplicate show up
        arrivals, total = receiver.arrivals(), receiver.count()["total"]
        stats = worker.stats()
    finally:
        relay.stop()
        worker.stop()
        bus.close()
        delivery_log.close()
        outbox = store.outbox_stats()
        count = store.count()
        store.close()
    got = [arrivals[m][0] for m in added_at if m in arrivals]
    latencies = [arrivals[m][0] - t for m, t in added_at.items() if m in arrivals]
    return {
        "alerts_per_s": round(n / (max(got) - t_start), 1) if got else 0.0,
        "p50_delivery_ms": percentile_ms(latencies, 50) if len(latencies) > 1 else None,
        "p99_delivery_ms": percentile_ms(latencies, 99) if len(latencies) > 1 else None,
        "store_adds_per_s": round(n / (t_added - t_start), 1),
        "lost": n - len(got),
        "duplicated": total - len(arrivals),
        "stored": count,
        "outbox_rows": outbox["pending"] + outbox["published"],
        "peak_window": stats["peak_window"],
    }


def sample_body() -> bytes:
    """A real event body of the benchmark's alerts (the size every baseline sends)."""
    return OutboxPolicy().body("alert.created", make_alert(0), T0).encode("utf-8")


def raw_redis(n: int, url: str, body: bytes) -> dict[str, float]:
    """Redis Streams alone, with redis-py and ``n`` entries of ``body``: one producer ``XADD``-ing
    one entry at a time while one consumer ``XREADGROUP``-s (up to 256, block 100 ms) and
    ``XACK``-s each entry (``overlapped_per_s``, what the relay and a worker do at once); then the
    two halves alone (``xadd_per_s``, ``read_ack_per_s``)."""
    fields = {"msg_id": "msg_x", "camera_id": CAMERAS[0], "body": body}
    producer, consumer = redis.Redis.from_url(url), redis.Redis.from_url(url)

    def consume(key: str) -> None:
        acked = 0
        while acked < n:
            for _, entries in consumer.xreadgroup("g", "c", {key: ">"}, count=256, block=100) or []:
                for entry_id, _ in entries:
                    consumer.xack(key, "g", entry_id)
                    acked += 1

    def produce(key: str) -> None:
        for seq in range(1, n + 1):
            producer.xadd(key, fields, id=f"{seq}-0")

    out = {}
    for key in ("bench:raw1", "bench:raw2"):
        producer.delete(key)
        producer.xgroup_create(key, "g", id="0", mkstream=True)
    reader = threading.Thread(target=consume, args=("bench:raw1",), name="raw-consumer")
    t0 = time.perf_counter()
    reader.start()
    produce("bench:raw1")
    reader.join()
    out["overlapped_per_s"] = round(n / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    produce("bench:raw2")
    t1 = time.perf_counter()
    consume("bench:raw2")
    t2 = time.perf_counter()
    out["xadd_per_s"], out["read_ack_per_s"] = round(n / (t1 - t0), 1), round(n / (t2 - t1), 1)
    producer.delete("bench:raw1", "bench:raw2")
    producer.close()
    consumer.close()
    return out


def raw_http(n: int, receiver: Receiver, body: bytes) -> float:
    """POSTs/s of ``n`` signed POSTs to the receiver from ``MAX_IN_FLIGHT`` threads, a new
    connection per POST (as :func:`alerts.webhooks.deliver_once`)."""
    secret = [generate_secret()]
    receiver.reset()
    counter = iter(range(n))
    lock = threading.Lock()

    def post() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=15)
            conn.request("POST", "/hook", body=body, headers=headers(f"msg_raw{i}", int(time.time()), body, secret))
            conn.getresponse().read()
            conn.close()

    threads = [threading.Thread(target=post, name=f"raw-http-{k}") for k in range(MAX_IN_FLIGHT)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if receiver.count()["unique"] != n:
        log.error("raw HTTP: %d of %d POSTs arrived", receiver.count()["unique"], n)
    return round(n / elapsed, 1)


def run(n: int) -> dict:
    """The whole benchmark: both end-to-end runs and the two baselines."""
    with tempfile.TemporaryDirectory(prefix="baqylau-alerts-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "redis").mkdir()
        server = RedisProcess(tmp / "redis")
        receiver = Receiver()
        try:
            body = sample_body()
            redis_run = run_end_to_end("redis", n, tmp / "redis-run", receiver, server.url)
            embedded_run = run_end_to_end("embedded", n, tmp / "embedded-run", receiver, None)
            # Latency below capacity: alerts paced at PACED_RATE_PER_S (a city's busy hour is far lower).
            paced_n = min(n, int(PACED_RATE_PER_S * 10))
            redis_paced = run_end_to_end("redis", paced_n, tmp / "redis-paced", receiver, server.url,
                                         rate_per_s=PACED_RATE_PER_S)
            embedded_paced = run_end_to_end("embedded", paced_n, tmp / "embedded-paced", receiver, None,
                                            rate_per_s=PACED_RATE_PER_S)
            raw_redis_figures = raw_redis(n, server.url, body)
            raw_http_per_s = raw_http(n, receiver, body)
        finally:
            receiver.close()
            server.close()
    out = {"alerts": n}
    for kind, figures in (("redis", redis_run), ("embedded", embedded_run)):
        for key in ("alerts_per_s", "p50_delivery_ms", "p99_delivery_ms", "store_adds_per_s", "peak_window"):
            out[f"{key}_{kind}"] = figures[key]
    out["ratio_redis_embedded"] = round(out["alerts_per_s_redis"] / out["alerts_per_s_embedded"], 3)
    out["lost"] = redis_run["lost"] + embedded_run["lost"]
    out["duplicated"] = redis_run["duplicated"] + embedded_run["duplicated"]
    out["stored_ok"] = all(r["stored"] == n and r["outbox_rows"] == n for r in (redis_run, embedded_run))
    out["raw_redis_xadd_xreadgroup_xack_per_s"] = raw_redis_figures["overlapped_per_s"]
    out["raw_redis_xadd_alone_per_s"] = raw_redis_figures["xadd_per_s"]
    out["raw_redis_xreadgroup_xack_alone_per_s"] = raw_redis_figures["read_ack_per_s"]
    out["raw_http_posts_per_s"] = raw_http_per_s
    out["e2e_redis_share_of_raw_http"] = round(out["alerts_per_s_redis"] / raw_http_per_s, 3)
    out["paced"] = {"rate_per_s": PACED_RATE_PER_S, "alerts": paced_n, **{
        f"{key}_{kind}": figures[key] for kind, figures in (("redis", redis_paced), ("embedded", embedded_paced))
        for key in ("p50_delivery_ms", "p99_delivery_ms")}}
    out["lost"] += redis_paced["lost"] + embedded_paced["lost"]
    out["duplicated"] += redis_paced["duplicated"] + embedded_paced["duplicated"]
    out["body_bytes"] = len(body)
    out["max_in_flight"] = MAX_IN_FLIGHT
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "redis": server.version,
                      "platform": platform.platform()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=2000, help="alerts per run (default 2000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.alerts < 2:
        ap.error("--alerts must be >= 2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.alerts)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    r = result
    print(f"{r['alerts']} alerts, {len(CAMERAS)} cameras, worker max_in_flight {MAX_IN_FLIGHT}, "
          f"body {r['body_bytes']} B")
    for kind in ("redis", "embedded"):
        print(f"  {kind:9s} {r[f'alerts_per_s_{kind}']:8.1f} alerts/s end to end; delivery latency "
              f"p50 {r[f'p50_delivery_ms_{kind}']} ms, p99 {r[f'p99_delivery_ms_{kind}']} ms; "
              f"store adds alone {r[f'store_adds_per_s_{kind}']:.0f}/s")
    print(f"  redis/embedded throughput ratio {r['ratio_redis_embedded']}")
    p = r["paced"]
    print(f"  paced at {p['rate_per_s']} alerts/s ({p['alerts']} alerts): delivery latency redis p50 "
          f"{p['p50_delivery_ms_redis']} ms p99 {p['p99_delivery_ms_redis']} ms; embedded p50 "
          f"{p['p50_delivery_ms_embedded']} ms p99 {p['p99_delivery_ms_embedded']} ms")
    print(f"  lost {r['lost']}, duplicated {r['duplicated']}, store and outbox counts ok: {r['stored_ok']}")
    print(f"  baselines: raw XADD+XREADGROUP+XACK {r['raw_redis_xadd_xreadgroup_xack_per_s']:.0f} entries/s "
          f"(XADD alone {r['raw_redis_xadd_alone_per_s']:.0f}/s, XREADGROUP+XACK alone "
          f"{r['raw_redis_xreadgroup_xack_alone_per_s']:.0f}/s); "
          f"raw signed POSTs ({MAX_IN_FLIGHT} threads) {r['raw_http_posts_per_s']:.0f}/s; "
          f"end to end over Redis = {r['e2e_redis_share_of_raw_http']:.0%} of raw HTTP")


if __name__ == "__main__":
    main()
