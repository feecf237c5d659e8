"""Shared fixtures: where the read-only test data lives, and free ports."""

from __future__ import annotations

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


@pytest.fixture
def yolox_path() -> Path:
    return need(YOLOX_PATH)


@pytest.fixture
def vtest_path() -> Path:
    return need(VTEST)
