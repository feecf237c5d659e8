"""The relay: publishes committed outbox rows to the bus, in ``seq`` order, exactly once per route.

One relay per outbox at a time holds the ``relay`` lease in the alert store (renewed every loop,
taken over by another process when it expires), because the bus's idempotence (a Redis entry id
``<seq>-0`` that can only grow) assumes a single publisher. A row is marked published only
after every route accepted it; a crash in between publishes it again, which the bus ignores.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from alerts.bus import Bus, BusError
from alerts.store import AlertStore, AlertStoreError

logger = logging.getLogger(__name__)

#: Name of the lease row.
LEASE = "relay"


class Relay:
    """Moves outbox rows to the bus.

    Args:
        store: The alert store holding the outbox.
        bus: Where rows go (Redis Streams or the embedded bus).
        owner: Lease owner name (default ``host-pid``).
        batch: Rows per round.
        lease_ttl_s: How long the lease lasts without renewal (s); another relay takes over
            after a crash within this time.
        idle_s: Sleep between rounds when nothing is pending (s); :meth:`wake` cuts it short.
        max_backoff_s: Longest wait after a bus or store error (s).
    """

    def __init__(self, store: AlertStore, bus: Bus, *, owner: str | None = None, batch: int = 200,
                 lease_ttl_s: float = 15.0, idle_s: float = 0.1, max_backoff_s: float = 5.0) -> None:
        self.store = store
        self.bus = bus
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = int(batch)
        self.lease_ttl_s = float(lease_ttl_s)
        self.idle_s = float(idle_s)
        self.max_backoff_s = float(max_backoff_s)
        self.published = 0
        self.errors = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Publish up to ``batch`` pending rows if this relay holds the lease.

        Returns:
            Rows marked published (0 when none were pending or another relay holds the lease).

        Raises:
            BusError: When the bus refused or timed out (rows stay pending).
            AlertStoreError: When the store cannot be read or written.
        """
        if not self.store.try_lease(LEASE, self.owner, self.lease_ttl_s, time.time()):
            return 0
        rows = self.store.outbox_pending(self.batch)
        source = self.store.outbox_id
        items = [(route, row.seq, row.fields()) for row in rows for route in row.routes]
        self.bus.publish_many(items, source)   # all or, on an error, some: a retry adds only the rest
        done = [row.seq for row in rows]
        if done:
            self.store.mark_published(done)
            self.published += len(done)
        return len(done)

    def wake(self) -> None:
        """Cut the idle sleep short (call after committing an alert, for lower latency)."""
        self._wake.set()

    def run(self, stop: threading.Event | None = None) -> None:
        """Publish until ``stop`` (or :meth:`stop`) is set; errors are logged and retried with
        a bounded exponential back-off, never raised."""
        stop = stop or self._stop
        backoff = 0.0
        while not stop.is_set() and not self._stop.is_set():
            try:
                n = self.run_once()
                backoff = 0.0
            except (BusError, AlertStoreError) as exc:
                self.errors += 1
                backoff = min(self.max_backoff_s, max(0.2, backoff * 2))
                logger.warning("relay: %s; retrying in %.1f s", exc, backoff)
                self._sleep(backoff, stop)
                continue
            except Exception:  # noqa: BLE001 - the relay must outlive any bug in one row
                self.errors += 1
                logger.exception("relay: unexpected error; retrying in %.1f s", self.max_backoff_s)
                self._sleep(self.max_backoff_s, stop)
                continue
            if n < self.batch:
                self._sleep(self.idle_s, stop)
        try:
            self.store.release_lease(LEASE, self.owner)
        except AlertStoreError:
            pass

    def _sleep(self, seconds: float, stop: threading.Event) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def start(self) -> Relay:
        """Run in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="alert-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after its current round (publishing what it took)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
