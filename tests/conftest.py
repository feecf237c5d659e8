"""Shared fixtures: where the read-only test data lives, and free ports."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: ``../shared`` beside the repository, or ``$BAQYLAU_SHARED``.
SHARED = Path(os.environ.get("BAQYLAU_SHARED", REPO.parent / "shared")).resolve()
VIDEOS = SHARED / "data" / "videos"
MODELS = SHARED / "models"
YOLOX_PATH = MODELS / "yolox-nano-coco" / "yolox_nano.onnx"
VTEST = VIDEOS / "opencv-samples" / "vtest.avi"
PETS_GT = SHARED / "data" / "mot" / "PETS09-S2L1" / "gt-frames-0001-0400.txt"


def need(path: Path) -> Path:
    """Skip the calling test with a clear reason when a ``../shared`` file is absent."""
    if not path.exists():
        pytest.skip(f"test data {path} is absent (../shared not laid out here; set BAQYLAU_SHARED)")
    return path


def need_tool(name: str) -> str:
    """Skip when an executable such as ffmpeg or redis-server is not on PATH."""
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed (make test installs it)")
    return exe


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail with ``what`` when it is not true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


@functools.lru_cache(maxsize=2)
def pets_clip(step: int = 2) -> tuple[list, list[float], list]:
    """PETS09-S2L1 frames 0..399 of vtest.avi, every ``step``-th, with their ground truth.

    Returns:
        ``(images, times_s, xyxy)``: `(576, 768, 3)` uint8 BGR frames, stream times in seconds,
        and per frame the GT person boxes `(N, 4)` float32 xyxy px with ids `(N,)` int64 as
        ``(boxes, ids)`` (GT frame n = video frame n - 1). Skips when ../shared is absent.
    """
    import av
    import numpy as np

    from tracker.mot import read_mot

    gt = read_mot(need(PETS_GT))
    images, times, people = [], [], []
    with av.open(str(need(VTEST))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= 400:
                break
            if index % step:
                continue
            images.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.time))
            rows = gt.get(index + 1, np.zeros((0, 6)))
            xyxy = np.column_stack([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]]).astype(np.float32).reshape(-1, 4)
            people.append((xyxy, rows[:, 0].astype(np.int64)))
    return images, times, people


@pytest.fixture
def yolox_path() -> Path:
    return need(YOLOX_PATH)


@pytest.fixture
def vtest_path() -> Path:
    return need(VTEST)
