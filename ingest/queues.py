"""A bounded frame queue that either drops the oldest item (live) or blocks the producer (files)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

from ingest.errors import BaqylauError

T = TypeVar("T")


class QueueClosedError(BaqylauError, RuntimeError):
    """An item was put on a :class:`FrameQueue` after :meth:`FrameQueue.close`."""


class FrameQueue(Generic[T]):
    """Bounded FIFO between one decoding thread and its consumer.

    Args:
        maxsize: Most items held at once (>= 1). A small value (1-4) keeps live latency low.
        drop_oldest: When full, ``True`` drops the oldest item and counts it in :attr:`drops`
            (live cameras: latency never grows, decoding never blocks); ``False`` blocks the
            producer until there is room (files read to the end: nothing is skipped).

    Raises:
        ValueError: When ``maxsize`` is not an int >= 1.
    """

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"FrameQueue.maxsize: expected an int >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self.drop_oldest = bool(drop_oldest)
        self.drops = 0
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (items already queued can still be got)."""
        return self._closed

    def qsize(self) -> int:
        """Number of items waiting now."""
        with self._cond:
            return len(self._items)

    def put(self, item: T) -> bool:
        """Add ``item``; drop the oldest or wait for room when full (see ``drop_oldest``).

        Returns:
            True when the item was queued; False when the queue was closed while waiting for
            room (the item is then discarded).

        Raises:
            QueueClosedError: When the queue was already closed.
        """
        with self._cond:
            if self._closed:
                raise QueueClosedError("FrameQueue.put: the queue is closed")
            if len(self._items) >= self.maxsize:
                if self.drop_oldest:
                    self._items.popleft()
                    self.drops += 1
                else:
                    self._cond.wait_for(lambda: self._closed or len(self._items) < self.maxsize)
                    if self._closed:
                        return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None = None) -> T | None:
        """Take the oldest item, waiting up to ``timeout_s`` seconds (``None``: no limit).

        Returns:
            The item, or ``None`` when the wait timed out, or when the queue is closed and empty.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Close the queue: a blocked :meth:`put` returns False, :meth:`get` drains then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
