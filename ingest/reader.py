"""A daemon thread per camera that decodes its source into a :class:`FrameQueue`."""

from __future__ import annotations

import logging
import threading

from ingest.errors import SourceError
from ingest.frame import Frame
from ingest.queues import FrameQueue, QueueClosedError
from ingest.source import CameraStream, SourceOptions, SourceStats

logger = logging.getLogger(__name__)


class CameraReader:
    """Runs :meth:`CameraStream.frames` in a thread named ``decode-<camera_id>``.

    One camera failing never affects another: every error is caught in the thread, logged once
    at ERROR (one line, no traceback) and kept in :attr:`error`. When the thread finishes, for
    whatever reason, it closes ``out`` so the consumer sees the end.

    Args:
        camera_id: Camera id for frames, logs and the thread name.
        options: How to open, decode and sample the source.
        out: Queue the frames are put on; closed by this reader when it finishes.

    Raises:
        SourceOptionsError: When ``camera_id`` or ``options`` is invalid.
    """

    def __init__(self, camera_id: str, options: SourceOptions, out: FrameQueue[Frame]) -> None:
        self.camera_id = camera_id
        self.out = out
        self._stream = CameraStream(camera_id, options)
        self._thread = threading.Thread(target=self._run, name=f"decode-{camera_id}", daemon=True)
        self._done = threading.Event()
        self.error: str | None = None

    @property
    def stats(self) -> SourceStats:
        """The stream's live counters."""
        return self._stream.stats

    @property
    def done(self) -> bool:
        """Whether the thread finished (file ended, source failed, or stopped)."""
        return self._done.is_set()

    def start(self) -> None:
        """Start the decoding thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and close ``out``; returns at once.

        Closing the queue wakes a producer blocked on a full queue (``drop_oldest=False``);
        frames already queued can still be got. A blocked open/read ends within the source's
        ``open_timeout_s``/``read_timeout_s`` (see :meth:`CameraStream.stop`).
        """
        self._stream.stop()
        self.out.close()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait up to ``timeout_s`` seconds for the thread; return whether it finished."""
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return self.done

    def _run(self) -> None:
        try:
            for frame in self._stream.frames():
                try:
                    if not self.out.put(frame):
                        break  # closed while waiting for room
                except QueueClosedError:
                    break  # closed by the consumer or by stop()
        except SourceError as exc:
            self.error = str(exc)
            logger.error("%s", self.error)
        except Exception as exc:  # noqa: BLE001 - one camera must never take others down
            self.error = f"camera {self.camera_id!r}: {type(exc).__name__}: {' '.join(str(exc).split())}"
            self.stats.state, self.stats.last_error = "failed", self.error
            logger.error("%s", self.error)
        finally:
            self._stream.stop()
            self.out.close()
            self._done.set()
