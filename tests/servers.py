"""Real servers for tests: a throw-away ``redis-server`` on a free port, and a scriptable webhook
receiver (:class:`WebhookReceiver`).

Use the fixture: ``from tests.servers import redis_server  # noqa: F401`` in a test module, then
take ``redis_server`` as an argument (a started :class:`RedisServer` with AOF on; skipped when
``redis-server`` is not installed). Or build one with other options::

    with RedisServer(tmp_path, appendonly=False) as server:
        bus = RedisBus(server.url)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, need_tool

#: How long :meth:`RedisServer.start` waits for PING to answer, s.
START_TIMEOUT_S = 10.0


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1 with its data in ``directory``.

    Persistence: no RDB snapshots (``--save ""``); with ``appendonly`` every write is in the AOF
    and fsynced before the reply (``--appendfsync always``,
    https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/), so a
    ``SHUTDOWN NOSAVE`` or ``kill -9`` loses nothing that was acknowledged, and :meth:`restart`
    (same port, same folder) reloads it.

    Args:
        directory: Working folder for the AOF and the log (created when missing).
        appendonly: Keep the append-only file.
        port: TCP port; a free one when omitted.
    """

    def __init__(self, directory: str | Path, *, appendonly: bool = True, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not installed")
        self.exe = exe
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        """Start the process and wait (at most :data:`START_TIMEOUT_S`) until PING answers.

        Raises:
            RuntimeError: When the server exits or does not answer in time (the log tail is in
                the message).
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--dir", str(self.directory), "--logfile", str(self.log_path)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        with self._client(timeout_s=0.5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self._log_tail()}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING "
                                       f"within {START_TIMEOUT_S} s: {self._log_tail()}")
                time.sleep(0.05)

    def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE`` (the AOF is kept; the connection closing is expected), then wait."""
        with self._client(timeout_s=5.0) as client:
            try:
                client.execute_command("SHUTDOWN", "NOSAVE")
            except redis.ConnectionError:
                pass
        self._wait()

    def kill(self) -> None:
        """SIGKILL the process and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._wait()

    def stop_process(self) -> None:
        """SIGSTOP: the server freezes (connections are accepted by the kernel, never answered)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def cont_process(self) -> None:
        """SIGCONT after :meth:`stop_process`."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> RedisServer:
        """Stop (SIGTERM when still running) and start again on the same port and folder."""
        self.close()
        return self.start()

    def close(self) -> None:
        """Stop the process (SIGCONT, SIGTERM, SIGKILL after 5 s); idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.cont_process()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._wait()

    def _wait(self) -> None:
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def _client(self, timeout_s: float) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, retry=None)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self if self.proc is not None and self.proc.poll() is None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def redis_server(tmp_path):
    """A started :class:`RedisServer` (AOF on, ``appendfsync always``) in ``tmp_path / "redis"``."""
    need_tool("redis-server")
    with RedisServer(tmp_path / "redis") as server:
        yield server


class WebhookReceiver:
    """A real webhook endpoint on 127.0.0.1 with a scripted answer per request.

    ``plan(msg_id, n)`` gives the answer to the n-th (0-based) request with that ``webhook-id``:
    an HTTP status (``429`` adds ``Retry-After: <retry_after>``) or ``"sleep"`` (sleep
    ``sleep_s``, past the sender's timeout, then 503). Default: 200. Requests are recorded with
    ``id`` (the webhook-id), ``at`` (monotonic arrival time, s), the raw ``path``, lower-cased
    ``headers``, ``body``, decoded ``data`` and the ``status`` answered.
    """

    def __init__(self, secret: str | None = None, port: int | None = None, path: str = "/hook",
                 sleep_s: float = 0.8, retry_after: str = "1") -> None:
        from alerts.webhooks import generate_secret

        self.secret = secret or generate_secret()
        self.port, self.path, self.sleep_s, self.retry_after = port or free_port(), path, sleep_s, retry_after
        self.plan: Callable[[str, int], int | str] = lambda msg_id, n: 200
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        """Serve from a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                msg_id = hdrs["webhook-id"]
                with receiver.lock:
                    n = sum(r["id"] == msg_id for r in receiver.requests)
                    action = receiver.plan(msg_id, n)
                    req = dict(id=msg_id, at=time.monotonic(), path=self.path, headers=hdrs, body=body,
                               data=json.loads(body)["data"], status=503 if action == "sleep" else action)
                    receiver.requests.append(req)
                if action == "sleep":
                    time.sleep(receiver.sleep_s)
                try:
                    self.send_response(req["status"])
                    if req["status"] == 429:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender timed out and left

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="receiver").start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); the port is free again for :meth:`start`."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def all(self) -> list[dict]:
        """Every request so far, in arrival order."""
        with self.lock:
            return list(self.requests)

    def accepted(self) -> list[dict]:
        """The requests answered 200."""
        return [r for r in self.all() if r["status"] == 200]

    def accepted_ids(self) -> set[str]:
        """The webhook-ids answered 200."""
        return {r["id"] for r in self.accepted()}

    def by_msg(self) -> dict[str, list[dict]]:
        """Requests grouped by webhook-id."""
        out: dict[str, list[dict]] = {}
        for r in self.all():
            out.setdefault(r["id"], []).append(r)
        return out
