"""Alert sinks: where alert events go besides the store (a JSON Lines file here)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from alerts.record import Alert
from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: Event names a sink accepts.
EVENTS = ("alert.created", "alert.updated", "alert.ended")


class SinkError(BaqylauError, OSError):
    """A sink cannot be opened or written, or was given an unknown event name."""


@runtime_checkable
class Sink(Protocol):
    """Receives alert events. Implementations must be thread-safe."""

    def emit(self, event: str, alert: Alert) -> None:
        """Deliver one event; ``event`` is one of :data:`EVENTS`."""

    def close(self) -> None:
        """Release resources; no ``emit`` afterwards."""


class JsonlSink:
    """Appends one JSON object per line: ``{"event": ..., "alert": Alert.to_dict()}``.

    Each line is encoded first and written with a single unbuffered ``write`` to a file opened
    in append mode, so concurrent writers (threads, or other processes appending to the same
    file) never interleave inside a line and a crash leaves at most one partial last line.
    Text is UTF-8 with non-ASCII kept (``ensure_ascii=False``) so camera names stay readable.

    Args:
        path: Output file; parent directories are created.
        fsync: Also ``os.fsync`` after every line (survives power loss; slower).

    Raises:
        SinkError: When the file cannot be opened.
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise SinkError(f"cannot open JSONL sink {self.path}: {exc}") from exc

    def emit(self, event: str, alert: Alert) -> None:
        """Append one line.

        Raises:
            SinkError: For an unknown ``event``, a closed sink, or a failed write.
        """
        if event not in EVENTS:
            raise SinkError(f"unknown alert event {event!r}; expected one of {EVENTS}")
        line = (json.dumps({"event": event, "alert": alert.to_dict()}, ensure_ascii=False) + "\n").encode()
        with self._lock:
            if self._file.closed:
                raise SinkError(f"JSONL sink {self.path} is closed")
            try:
                view = memoryview(line)
                while view:  # regular files take it in one call; loop only for a short write
                    view = view[self._file.write(view):]
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                raise SinkError(f"cannot write to JSONL sink {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
