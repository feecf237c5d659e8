"""Shared-memory frame slots: publish, read from another process, back-pressure, growth."""

from __future__ import annotations

import multiprocessing as mp
from fractions import Fraction

import numpy as np
import pytest

from ingest.frame import Frame
from ingest.shm import FrameSlots, SlotError, SlotReader


def frame(camera: str, index: int, h: int = 48, w: int = 64) -> Frame:
    img = np.full((h, w, 3), index % 251, np.uint8)
    img[0, 0] = (1, 2, 3)
    return Frame(camera, index, index * 100, Fraction(1, 1000), index / 10, 1e9 + index, img)


def _child_sum(handle, out) -> None:  # runs in a spawned process
    reader = SlotReader()
    img = reader.image(handle)
    out.put((img.shape, int(img.sum(dtype=np.int64)), img[0, 0].tolist()))
    reader.close()


def test_frame_crosses_a_process_boundary_without_pickling_pixels():
    slots = FrameSlots("w0", ["a"], 2, run_id="t1")
    try:
        f = frame("a", 7)
        handle = slots.publish(f, slots.free_slot("a"))
        assert len(__import__("pickle").dumps(handle)) < 1024
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        p = ctx.Process(target=_child_sum, args=(handle, out))
        p.start()
        shape, total, corner = out.get(timeout=60)
        p.join(30)
        assert shape == (48, 64, 3) and total == int(f.image.sum(dtype=np.int64)) and corner == [1, 2, 3]
        assert slots.frames[handle.slot].time_s == f.time_s and handle.time_base == (1, 1000)
    finally:
        slots.close()


def test_back_pressure_and_release():
    slots = FrameSlots("w0", ["a", "b"], 2, run_id="t2")
    try:
        for i in range(2):
            slots.publish(frame("a", i), slots.free_slot("a"))
        assert slots.free_slot("a") is None, "every slot of camera a is in flight"
        assert slots.free_slot("b") is not None, "camera b is not held back by camera a"
        with pytest.raises(SlotError):
            slots.publish(frame("a", 3), 0)
        slots.release(0)
        assert slots.free_slot("a") == 0 and slots.in_flight("a") == 1
    finally:
        slots.close()


def test_slot_grows_for_a_larger_frame_and_reader_follows():
    slots = FrameSlots("w0", ["a"], 1, run_id="t3")
    reader = SlotReader()
    try:
        h1 = slots.publish(frame("a", 1, 48, 64), 0)
        assert reader.image(h1).shape == (48, 64, 3)
        slots.release(0)
        h2 = slots.publish(frame("a", 2, 720, 1280), 0)
        assert h2.shm_name != h1.shm_name
        img = reader.image(h2)
        assert img.shape == (720, 1280, 3) and img[5, 5, 0] == 2
        slots.release(0)
        slots.close()
        with pytest.raises(SlotError, match="is gone"):
            SlotReader().image(h2)
    finally:
        reader.close()
        slots.close()


def test_expired_slots_are_reported():
    slots = FrameSlots("w0", ["a"], 2, run_id="t4")
    try:
        slots.publish(frame("a", 1), 0)
        assert slots.expired(older_than_s=3600) == []
        assert slots.expired(older_than_s=-1) == [0]
    finally:
        slots.close()
