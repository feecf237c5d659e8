"""FrameQueue: drop-oldest for live cameras, blocking (but closable) for files."""

from __future__ import annotations

import threading

import pytest

from ingest.queues import FrameQueue, QueueClosedError


def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    q: FrameQueue[int] = FrameQueue(3, drop_oldest=True)
    for i in range(10):
        assert q.put(i) is True
    assert q.qsize() == 3
    assert q.drops == 7
    assert [q.get(0) for _ in range(3)] == [7, 8, 9]
    assert q.get(0.01) is None


def test_blocking_put_waits_for_room_and_skips_nothing() -> None:
    q: FrameQueue[int] = FrameQueue(2, drop_oldest=False)
    done = threading.Event()

    def produce() -> None:
        for i in range(50):
            q.put(i)
        q.close()
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    got = []
    while (item := q.get(5.0)) is not None:
        got.append(item)
        assert q.qsize() <= 2
    assert got == list(range(50))
    assert q.drops == 0
    assert done.wait(5.0)


def test_close_wakes_a_blocked_put() -> None:
    q: FrameQueue[int] = FrameQueue(1, drop_oldest=False)
    q.put(0)
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(q.put(1)), daemon=True)
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # blocked on the full queue
    q.close()
    producer.join(5.0)
    assert not producer.is_alive()
    assert result == [False]
    assert q.closed


def test_get_drains_after_close_then_returns_none() -> None:
    q: FrameQueue[str] = FrameQueue(4, drop_oldest=True)
    q.put("a")
    q.put("b")
    q.close()
    assert [q.get(0), q.get(0), q.get(None)] == ["a", "b", None]
    with pytest.raises(QueueClosedError):
        q.put("c")


def test_close_wakes_a_blocked_get() -> None:
    q: FrameQueue[int] = FrameQueue(1, drop_oldest=True)
    result: list[object] = []
    consumer = threading.Thread(target=lambda: result.append(q.get(None)), daemon=True)
    consumer.start()
    consumer.join(0.1)
    q.close()
    consumer.join(5.0)
    assert result == [None]


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True])
def test_maxsize_is_checked(maxsize: object) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        FrameQueue(maxsize, drop_oldest=True)  # type: ignore[arg-type]
