"""Process resource limits for a decode worker: the open-files limit."""

from __future__ import annotations

import logging
import resource

from ingest.errors import BaqylauError

logger = logging.getLogger(__name__)

#: Open files one camera may hold: RTSP over TCP needs one socket, over UDP one TCP socket plus an
#: RTP/RTCP pair, HTTP/HLS may hold a second connection while a segment is fetched; the rest is
#: headroom. Measured: one RTSP/TCP camera adds 1 descriptor in ``tests/ingest/test_resources.py``.
FDS_PER_CAMERA = 8
#: Open files the worker needs besides its cameras (Python, libraries, logs, queues, sockets).
FDS_RESERVE = 256


class OpenFilesLimitError(BaqylauError, OSError):
    """The configured cameras need more open files than the hard ``RLIMIT_NOFILE`` allows."""


def raise_open_files_limit(cameras: int, fds_per_camera: int = FDS_PER_CAMERA,
                           reserve: int = FDS_RESERVE) -> int:
    """Raise the soft open-files limit (``RLIMIT_NOFILE``) to the hard limit, and check it fits.

    Linux starts most processes with a soft limit of 1024 and a much higher hard limit; an
    unprivileged process may raise its soft limit up to the hard one (``setrlimit(2)``).

    Args:
        cameras: Cameras this process will open, >= 0.
        fds_per_camera: Open files to budget per camera, >= 1.
        reserve: Open files to budget for everything else, >= 0.

    Returns:
        The soft limit now in force.

    Raises:
        ValueError: When an argument is out of range.
        OpenFilesLimitError: When ``cameras * fds_per_camera + reserve`` exceeds the limit even
            after raising it; the message says how many are needed and how to allow more.
    """
    for name, value, low in (("cameras", cameras, 0), ("fds_per_camera", fds_per_camera, 1),
                             ("reserve", reserve, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"raise_open_files_limit: {name} must be an int >= {low}, got {value!r}")
    needed = cameras * fds_per_camera + reserve
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            logger.info("open-files limit raised from %d to %d (hard %s)", soft, target, hard)
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise OpenFilesLimitError(
            f"{cameras} cameras need about {needed} open files ({fds_per_camera} per camera + "
            f"{reserve} reserve) but this process may open only {soft} (hard limit {hard}); "
            f"raise it (ulimit -n, LimitNOFILE= in the systemd unit, nofile in "
            f"/etc/security/limits.conf) or give this worker fewer cameras")
    return int(soft)


#: ``mallopt(3)`` parameter numbers from glibc's ``malloc.h``.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Picture buffers up to this size come from the heap and are reused (a 4K BGR frame is 24.9 MB).
FRAME_MMAP_THRESHOLD_B = 64 << 20
#: Freed heap memory up to this size stays in the process instead of going back to the kernel.
FRAME_TRIM_THRESHOLD_B = 128 << 20


def tune_malloc_for_frames() -> bool:
    """Keep freed picture buffers in the heap so the next frame reuses them (glibc only).

    A 1080p BGR picture is 6.2 MB, above glibc's default mmap threshold, so by default every
    converted picture is a fresh ``mmap`` whose pages fault in one by one, then ``munmap``-ed:
    measured on 1080p H.264 (``benchmarks/ingest.py``, one pinned core) this costs a third of
    the decode time in minor page faults (155 fps vs 227 fps with the buffers reused). Raising
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` with ``mallopt(3)`` (the same as the
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables) makes
    those buffers heap memory that is reused. The cost is memory held at its peak instead of
    returned between frames (about two pictures per camera).

    Returns:
        True when the settings were applied; False on a C library without ``mallopt``
        (musl, macOS), where nothing changes.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD_B)) and bool(
        mallopt(_M_TRIM_THRESHOLD, FRAME_TRIM_THRESHOLD_B))
    if ok:
        logger.debug("malloc tuned for frame buffers (mmap threshold %d B)", FRAME_MMAP_THRESHOLD_B)
    return ok
