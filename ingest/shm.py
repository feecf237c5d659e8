"""Frames across process boundaries through shared memory, with only small handles on queues.

A decode worker owns a :class:`FrameSlots` pool: a fixed number of slots per camera, each a
``multiprocessing.shared_memory.SharedMemory`` block that holds one BGR image. Publishing a
frame copies its pixels into a free slot of its camera and returns a :class:`FrameHandle`
(a few hundred bytes: names, shape, timestamps) to put on a queue. The inference process
maps the block by name (:class:`SlotReader`) and reads the pixels without copying them. The
slot stays *in flight* until its owner releases it, so it is never overwritten while being
read; when every slot of a camera is in flight the worker keeps only the newest decoded frame
(back-pressure at the decode side, newest wins) instead of queueing.

A block grows (a new block with a new name) when a camera's resolution grows; handles name
the block, so a reader never reads a block of the wrong size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import shared_memory

import numpy as np

from ingest.errors import BaqylauError
from ingest.frame import Frame

log = logging.getLogger(__name__)


class SlotError(BaqylauError, RuntimeError):
    """A shared-memory slot cannot be created, mapped or read."""


@dataclass(frozen=True, slots=True)
class FrameHandle:
    """What crosses the queue for one frame: where its pixels are, and its metadata.

    Attributes:
        worker: Name of the owning decode worker (routes results back).
        slot: Slot index in the owner's pool.
        shm_name: Name of the shared-memory block holding the image.
        shape_hw: Image height and width in pixels; the block holds `(H, W, 3)` uint8 BGR.
        camera_id, frame_index, pts, time_s, wall_time_s, is_keyframe: as in :class:`Frame`.
        time_base: ``(numerator, denominator)`` of the stream time base.
        published_wall_s: Wall time the frame was put in shared memory (latency tracking).
    """

    worker: str
    slot: int
    shm_name: str
    shape_hw: tuple[int, int]
    camera_id: str
    frame_index: int
    pts: int | None
    time_base: tuple[int, int]
    time_s: float
    wall_time_s: float
    is_keyframe: bool
    published_wall_s: float


def _nbytes(shape_hw: tuple[int, int]) -> int:
    return int(shape_hw[0]) * int(shape_hw[1]) * 3


class FrameSlots:
    """A decode worker's pool of shared-memory frame slots (the worker creates and owns them).

    Args:
        worker: Worker name, part of every block name and handle.
        camera_ids: Cameras this worker owns.
        slots_per_camera: Slots per camera (>= 1). Two keep the detector busy (one being
            analysed, one waiting); more only add latency.
        run_id: A short token unique to this run, so block names never clash with a crashed
            run's leftovers.

    Raises:
        ValueError: When ``slots_per_camera`` < 1 or no camera is given.
    """

    def __init__(self, worker: str, camera_ids: list[str], slots_per_camera: int = 2, run_id: str = "") -> None:
        if slots_per_camera < 1:
            raise ValueError(f"slots_per_camera must be >= 1, got {slots_per_camera}")
        if not camera_ids:
            raise ValueError("a FrameSlots pool needs at least one camera")
        self.worker = worker
        self.run_id = run_id
        self._slots_of: dict[str, list[int]] = {}
        n = 0
        for cid in camera_ids:
            self._slots_of[cid] = list(range(n, n + slots_per_camera))
            n += slots_per_camera
        self._blocks: list[shared_memory.SharedMemory | None] = [None] * n
        self._gen = [0] * n
        self._in_flight: dict[int, float] = {}  # slot -> wall time published
        self.frames: dict[int, Frame] = {}  # slot -> the frame published there (metadata + view)

    def free_slot(self, camera_id: str) -> int | None:
        """A slot of ``camera_id`` not in flight, or ``None`` when all are (back-pressure)."""
        for s in self._slots_of[camera_id]:
            if s not in self._in_flight:
                return s
        return None

    def in_flight(self, camera_id: str | None = None) -> int:
        """Number of slots in flight (of one camera, or of all)."""
        if camera_id is None:
            return len(self._in_flight)
        return sum(1 for s in self._slots_of[camera_id] if s in self._in_flight)

    def _block_for(self, slot: int, nbytes: int) -> shared_memory.SharedMemory:
        block = self._blocks[slot]
        if block is None or block.size < nbytes:
            if block is not None:
                block.close()
                block.unlink()
            self._gen[slot] += 1
            name = f"bq{self.run_id}_{self.worker}_{slot}_{self._gen[slot]}"
            try:
                block = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
            except OSError as exc:
                raise SlotError(f"cannot create shared memory {name} ({nbytes} B): {exc}") from exc
            self._blocks[slot] = block
        return block

    def publish(self, frame: Frame, slot: int) -> FrameHandle:
        """Copy ``frame.image`` into ``slot`` and mark the slot in flight.

        Returns:
            The handle to put on the inference queue.

        Raises:
            SlotError: When the slot is in flight or its block cannot be created.
        """
        if slot in self._in_flight:
            raise SlotError(f"slot {slot} of {self.worker} is still in flight")
        h, w = frame.image.shape[:2]
        block = self._block_for(slot, _nbytes((h, w)))
        view = np.ndarray((h, w, 3), dtype=np.uint8, buffer=block.buf)
        np.copyto(view, frame.image)
        now = time.time()
        self._in_flight[slot] = now
        # keep the frame record, but pointing at the shared pixels (no second copy)
        self.frames[slot] = Frame(frame.camera_id, frame.frame_index, frame.pts, frame.time_base, frame.time_s,
                                  frame.wall_time_s, view, frame.is_keyframe)
        tb = frame.time_base or Fraction(0, 1)
        return FrameHandle(self.worker, slot, block.name, (h, w), frame.camera_id, frame.frame_index, frame.pts,
                           (tb.numerator, tb.denominator), frame.time_s, frame.wall_time_s, frame.is_keyframe, now)

    def release(self, slot: int) -> None:
        """Mark ``slot`` free again (its results were handled, or it timed out)."""
        self._in_flight.pop(slot, None)
        self.frames.pop(slot, None)

    def expired(self, older_than_s: float) -> list[int]:
        """Slots in flight for longer than ``older_than_s`` (their results were lost, e.g. the
        inference process restarted); the caller releases them and counts a drop."""
        limit = time.time() - older_than_s
        return [s for s, t in self._in_flight.items() if t < limit]

    def close(self) -> None:
        """Unmap and unlink every block (the owner's job; call once at exit)."""
        self.frames.clear()
        for i, block in enumerate(self._blocks):
            if block is not None:
                try:
                    block.close()
                    block.unlink()
                except (FileNotFoundError, BufferError):
                    pass
                self._blocks[i] = None


class SlotReader:
    """Maps the blocks named in handles (the inference side) and caches the mappings.

    Processes started by ``multiprocessing`` share their parent's resource tracker, which
    unlinks blocks left behind by a process that died; mapping a block registers it again,
    which the tracker treats as the same entry, so nothing is unregistered here.

    Raises:
        SlotError: From :meth:`image` when a block no longer exists (its worker died).
    """

    def __init__(self, max_cached: int = 4096) -> None:
        self._maps: dict[str, shared_memory.SharedMemory] = {}
        self._last: dict[tuple[str, int], str] = {}  # (worker, slot) -> block name last seen
        self._max_cached = max_cached

    def image(self, handle: FrameHandle) -> np.ndarray:
        """The handle's image as a `(H, W, 3)` uint8 BGR view into shared memory (no copy);
        valid until the owner releases the slot."""
        key = (handle.worker, handle.slot)
        previous = self._last.get(key)
        if previous is not None and previous != handle.shm_name:
            self.forget(previous)  # the slot grew into a new block, or its worker restarted
        self._last[key] = handle.shm_name
        block = self._maps.get(handle.shm_name)
        if block is None:
            if len(self._maps) >= self._max_cached:
                self.close()
            try:
                block = shared_memory.SharedMemory(name=handle.shm_name, create=False)
            except FileNotFoundError:
                raise SlotError(f"shared memory {handle.shm_name} of {handle.worker} is gone") from None
            self._maps[handle.shm_name] = block
        h, w = handle.shape_hw
        if block.size < _nbytes((h, w)):
            raise SlotError(f"shared memory {handle.shm_name} is smaller than {w}x{h}x3")
        return np.ndarray((h, w, 3), dtype=np.uint8, buffer=block.buf)

    def forget(self, shm_name: str) -> None:
        """Drop a cached mapping (its owner replaced or removed the block)."""
        block = self._maps.pop(shm_name, None)
        if block is not None:
            try:
                block.close()
            except BufferError:
                pass

    def close(self) -> None:
        """Unmap every cached block."""
        for name in list(self._maps):
            self.forget(name)
