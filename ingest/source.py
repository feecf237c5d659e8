"""Open one camera (file, RTSP, HTTP) with PyAV, decode, sample and hand on :class:`Frame` records.

A :class:`CameraStream` turns a source URL into an iterator of frames. Files are decoded to the
end; live sources (RTSP and friends) are reconnected forever with capped exponential backoff and
full jitter until :meth:`CameraStream.stop` is called, and never raise out of
:meth:`CameraStream.frames`.

One mechanism per kind of camera fault:

* **Silence** (a server that accepts and never answers, or freezes mid-stream): the open and every
  packet read have deadlines (PyAV's interrupt callback). A deadline that passes means *no bytes*:
  the camera shows ``"stalled"`` (within ``read_timeout_s`` of the last video packet, plus the
  100 ms FFmpeg polls its interrupt callback at), the connection is dropped and re-opened after a
  backoff wait. Nothing is yielded while stalled: no frame is repeated or invented.
* **Bytes but no pictures** (a long GOP joined mid-way, damaged packets): video packets keep the
  watchdog fed, so the camera shows ``"waiting_for_keyframe"`` and is never reconnected for it.
* **Failed connects** (refused, timed out, no video stream in the re-read stream list) all go to
  ``"backoff"``; each connect re-reads the stream list.
* **Damaged bitstreams**: a packet the decoder rejects, or a frame it had to conceal, is counted
  per camera and logged at most once per :data:`DECODE_ERROR_LOG_INTERVAL_S`; decoding goes on.
* **Odd frames**: every frame is converted explicitly to 8-bit BGR at its own size, using its own
  colour matrix and range (10-bit, full-range, resolution changes).
* **Time**: see :class:`_Clock` (never backwards downstream, one log line per discontinuity).

FFmpeg logging: PyAV 18 installs a no-op, GIL-free log callback at import
(``av/logging.py``: ``lib.av_log_set_callback(nolog_callback)``; its docs warn that the Python
bridge ``set_level(int)`` "doesn't play nicely with multi-threaded workflows" because each FFmpeg
log line then takes the GIL). This module keeps that default and warns once when someone turned
the bridge on (see :func:`ffmpeg_log_bridge_enabled`).
"""

from __future__ import annotations

import errno
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal
from urllib.parse import urlsplit

import av
import av.error
import av.logging
import numpy as np

from ingest.errors import BaqylauError, SourceError, SourceTimeoutError
from ingest.frame import Frame

logger = logging.getLogger(__name__)

#: URL schemes that name a live, unbounded source; anything else is a finite file.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "udp", "tcp", "srt"})
#: Frame duration assumed when the stream states no rate and no two frames were seen yet
#: (25 fps, the PAL rate most CCTV cameras default to).
FALLBACK_FRAME_DURATION_S = 1.0 / 25.0
#: Decode errors and timestamp discontinuities are logged at most once per this many seconds per
#: camera (the first always is); counters in :class:`SourceStats` count every one.
DECODE_ERROR_LOG_INTERVAL_S = 10.0
#: Window of the ``fps_in``/``fps_out`` rate meters, in seconds: longer is smoother but slower to
#: show a change.
FPS_WINDOW_S = 5.0

State = Literal["connecting", "waiting_for_keyframe", "streaming", "stalled", "backoff",
                "ended", "failed", "stopped"]


#: Hardware device types that failed to open in this process; not tried again.
_HWACCEL_FAILED: set[str] = set()


def _hwaccel(device_type: str | None) -> object | None:
    """A PyAV ``HWAccel`` for ``device_type``, or ``None`` for software decoding (none asked,
    not built into this FFmpeg, or failed before in this process)."""
    if device_type is None or device_type in _HWACCEL_FAILED:
        return None
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:  # PyAV < 14
        _HWACCEL_FAILED.add(device_type)
        logger.warning("hardware decoding %r needs PyAV >= 14; decoding in software", device_type)
        return None
    if device_type not in hwdevices_available():
        _HWACCEL_FAILED.add(device_type)
        logger.warning("hardware decoding %r is not built into this FFmpeg (available: %s); decoding in software",
                       device_type, ", ".join(hwdevices_available()) or "none")
        return None
    return HWAccel(device_type, allow_software_fallback=True)


class SourceOptionsError(BaqylauError, ValueError):
    """A :class:`SourceOptions` field has an invalid value."""


def is_live_url(url: str) -> bool:
    """Tell whether ``url`` names a live (unbounded, reconnectable) source.

    Args:
        url: A source URL or a local file path.

    Returns:
        True for the ``rtsp``, ``rtsps``, ``http``, ``https``, ``udp``, ``tcp`` and ``srt``
        schemes (case-insensitive); False for anything else, which is read as a finite file.
    """
    return urlsplit(url).scheme.lower() in LIVE_SCHEMES


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to open, decode and sample one video source.

    Attributes:
        url: ``rtsp://``, ``rtsps://``, ``http(s)://`` (or ``udp``/``tcp``/``srt``) URL, or a local
            file path.
        decode: ``"all"`` decodes every frame; ``"keyframes"`` makes the decoder skip every
            non-key frame (``skip_frame = NONKEY``), which costs a fraction of the CPU but gives
            only one frame per GOP (often 1 per 1-10 s on cameras).
        analysis_fps: Frames per second of stream time to hand on, sampled by ``pts``; ``None``
            hands on every decoded frame. Lower values save detector time at the price of
            coarser tracks.
        open_timeout_s: Deadline in seconds for opening the source (connect, RTSP handshake,
            stream probing). Also bounds how long :meth:`CameraStream.stop` may wait for an
            open in progress.
        read_timeout_s: Deadline in seconds between two video packets (the stall watchdog); a
            live camera that sends no video for this long is ``"stalled"`` and reconnected.
            Shorter values notice a frozen camera sooner but must stay above the longest normal
            gap between packets (a few frame durations). Also bounds how long
            :meth:`CameraStream.stop` may wait for a read in progress.
        reconnect_initial_s: Smallest wait before reconnecting a live source, in seconds.
        reconnect_max_s: Largest wait before reconnecting, in seconds (the backoff cap).
        rtsp_transport: RTP transport for RTSP: ``"tcp"`` (interleaved; survives NAT and loss,
            the default) or ``"udp"`` (lower latency, drops packets on a lossy network).
        realtime: For files only: pace frames at their ``pts`` rate to simulate a live camera.
            ``False`` (default) decodes as fast as possible. Ignored for live sources.
        probe_s: Live sources only: most stream time, in seconds, FFmpeg reads at open to learn
            the streams' parameters (its ``analyzeduration``; FFmpeg's default is 5 s). FFmpeg
            keeps probing until it has decoded a picture, so on a long-GOP camera joined
            mid-way a long probe keeps the camera in ``"connecting"`` (and can hit
            ``open_timeout_s``, a reconnect loop) until the next keyframe; a short one hands over
            to the decoder, which shows ``"waiting_for_keyframe"`` meanwhile. Too short and an
            odd stream may open without its parameters (the decoder still finds them in-band).
        hwaccel: FFmpeg hardware decoding device type (``"cuda"`` for NVDEC, ``"vaapi"``,
            ``"qsv"``, ...; PyAV ``HWAccel``), frames downloaded to system memory; ``None``
            decodes in software. Where the device cannot be opened the camera logs one warning
            and decodes in software.
        decoder_threads: FFmpeg decoder threads for this camera; 0 lets FFmpeg choose (frame
            and slice threads, about one per core: lowest latency for a few cameras). With as
            many cameras as cores, 1 decodes as many frames per CPU second without the extra
            threads and their hand-over latency (``benchmarks/ingest.py``).

    Raises:
        SourceOptionsError: When a field has an invalid value; the message names the field.
    """

    url: str
    decode: Literal["all", "keyframes"] = "all"
    analysis_fps: float | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 30.0
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    realtime: bool = False
    probe_s: float = 1.0
    hwaccel: str | None = None
    decoder_threads: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise SourceOptionsError(f"SourceOptions.url: expected a non-empty string, got {self.url!r}")
        if self.decode not in ("all", "keyframes"):
            raise SourceOptionsError(
                f"SourceOptions.decode: expected 'all' or 'keyframes', got {self.decode!r}")
        if self.analysis_fps is not None and not _positive(self.analysis_fps):
            raise SourceOptionsError(
                f"SourceOptions.analysis_fps: expected None or a finite number > 0, "
                f"got {self.analysis_fps!r}")
        for name in ("open_timeout_s", "read_timeout_s", "reconnect_initial_s", "reconnect_max_s",
                     "probe_s"):
            value = getattr(self, name)
            if not _positive(value):
                raise SourceOptionsError(
                    f"SourceOptions.{name}: expected a finite number > 0, got {value!r}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise SourceOptionsError(
                f"SourceOptions.reconnect_max_s ({self.reconnect_max_s}) must be >= "
                f"reconnect_initial_s ({self.reconnect_initial_s})")
        if isinstance(self.decoder_threads, bool) or not isinstance(self.decoder_threads, int) \
                or not 0 <= self.decoder_threads <= 64:
            raise SourceOptionsError(f"SourceOptions.decoder_threads: expected an int in 0..64, "
                                     f"got {self.decoder_threads!r}")
        if self.hwaccel is not None and (not isinstance(self.hwaccel, str) or not self.hwaccel.isidentifier()):
            raise SourceOptionsError(f"SourceOptions.hwaccel: expected None or a device type name such as "
                                     f"'cuda', got {self.hwaccel!r}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise SourceOptionsError(
                f"SourceOptions.rtsp_transport: expected 'tcp' or 'udp', got {self.rtsp_transport!r}")
        if not isinstance(self.realtime, bool):
            raise SourceOptionsError(
                f"SourceOptions.realtime: expected a bool, got {self.realtime!r}")


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


@dataclass(slots=True)
class SourceStats:
    """Live counters of one :class:`CameraStream`.

    Written only by the decoding thread; other threads may read any field at any time (each
    field is a single reference, so a read is never torn under CPython).

    Attributes:
        state: ``"connecting"`` (opening: connect, handshake, stream probing);
            ``"waiting_for_keyframe"`` (open, video bytes arriving, no picture decoded yet on
            this connection: a long GOP joined mid-way; never a reason to reconnect);
            ``"streaming"`` (pictures coming out); ``"stalled"`` (live: a deadline passed with no
            video bytes, from an open or a read; the stream waits its backoff, then reconnects);
            ``"backoff"`` (live: waiting to retry after a refused or failed connect, a source
            without video, or the end of the stream); ``"ended"`` (file decoded to the end);
            ``"failed"`` (file could not be opened or read) or ``"stopped"``
            (:meth:`CameraStream.stop` was called).
        frames_decoded: Frames that came out of the decoder, including those sampled away.
        frames_emitted: Frames handed on by :meth:`CameraStream.frames`.
        decode_errors: Packets the decoder rejected (skipped, decoding went on).
        corrupt_frames: Frames the decoder output but flagged as damaged (error concealment;
            PyAV ``Frame.is_corrupt``). They are handed on: a concealed picture is still the
            newest view of the scene.
        reconnects: Connection attempts after the first one (live sources).
        stalls: Times a deadline passed with no video bytes (open or read).
        discontinuities: Times the stream's timestamps ran backwards and were re-anchored.
        bytes_in: Video packet bytes demuxed since start (all connections).
        last_bytes_wall_s: Wall-clock UTC time (s since the Unix epoch) the latest video packet
            was demuxed, or ``None`` before the first.
        last_frame_wall_s: Wall-clock UTC time (s since the Unix epoch) of the latest emitted
            frame, or ``None`` before the first.
        fps_in: Decoded frames per second over the last :data:`FPS_WINDOW_S` of wall time;
            0.0 when not streaming.
        fps_out: Emitted (sampled) frames per second over the same window; 0.0 when not
            streaming.
        last_error: One-line description of the latest open/read/decode failure, or ``None``.
    """

    state: State = "connecting"
    frames_decoded: int = 0
    frames_emitted: int = 0
    decode_errors: int = 0
    corrupt_frames: int = 0
    reconnects: int = 0
    stalls: int = 0
    discontinuities: int = 0
    bytes_in: int = 0
    last_bytes_wall_s: float | None = None
    last_frame_wall_s: float | None = None
    fps_in: float = 0.0
    fps_out: float = 0.0
    last_error: str | None = None


def ffmpeg_log_bridge_enabled() -> bool:
    """Tell whether PyAV routes FFmpeg log lines through Python logging.

    With the bridge on (``av.logging.set_level(<int>)``) every FFmpeg log line at or above the
    level, and every ERROR line regardless, takes the GIL in the decoding thread, which
    serialises the decoders of all cameras of a process on a damaged stream. PyAV 18's default
    (``set_level(None)``, a no-op C callback) does not.

    Returns:
        True when the bridge is on.
    """
    return av.logging.get_level() is not None


class _RateMeter:
    """Events per second over a sliding window of wall time (monotonic clock)."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque()

    def tick(self, now: float) -> float:
        """Record one event at ``now`` (monotonic s) and return the current rate in events/s."""
        times = self.times
        times.append(now)
        while now - times[0] > self.window_s:
            times.popleft()
        span = now - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    def reset(self) -> None:
        self.times.clear()


def _describe(exc: BaseException) -> str:
    """One-line text of an exception: FFmpeg's ``strerror`` when there is one."""
    if isinstance(exc, av.error.ExitError):
        return "timed out (interrupted)"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


class _Clock:
    """Turns raw ``pts`` into a continuous, never-decreasing stream time in seconds.

    ``time_s = pts * time_base + offset_s``. The offset is re-anchored on the first frame of
    every connection (so a reconnected camera whose timestamps restart carries on where it left
    off, plus the wall-clock time of the outage) and whenever timestamps run backwards within a
    connection (a reset or wrap): then time continues one frame duration after the last frame.
    A frame without ``pts`` is placed one frame duration after the previous one.
    """

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.last_time_s: float | None = None
        self.last_wall_s = 0.0
        self.frame_duration_s = FALLBACK_FRAME_DURATION_S
        self.rebase = False
        self.discontinuities = 0  # backward jumps within a connection, re-anchored

    def new_connection(self, stream: av.video.stream.VideoStream) -> None:
        rate = stream.average_rate or stream.guessed_rate
        if rate and rate > 0:
            self.frame_duration_s = float(1 / rate)
        self.rebase = self.last_time_s is not None

    def time_s(self, pts: int | None, time_base: Fraction | None, wall_s: float) -> float:
        last = self.last_time_s
        if pts is None or time_base is None:
            t = 0.0 if last is None else last + self.frame_duration_s
        else:
            raw = float(pts * time_base)
            if self.rebase and last is not None:
                gap_s = max(self.frame_duration_s, wall_s - self.last_wall_s)
                self.offset_s = last + gap_s - raw
                self.rebase = False
            t = raw + self.offset_s
            if last is not None and t < last:
                self.discontinuities += 1
                self.offset_s += last + self.frame_duration_s - t
                t = last + self.frame_duration_s
        self.last_time_s, self.last_wall_s = t, wall_s
        return t


class _Sampler:
    """Keeps frames whose stream time reaches the next due time, stepping by ``1/fps``.

    The due time advances by exactly one period per kept frame (no drift); when the stream
    jumped more than a period ahead, it is resynchronised to the current frame.
    """

    EPS_S = 1e-6  # float slack so a frame exactly on the grid is kept

    def __init__(self, fps: float | None) -> None:
        self.period_s = None if fps is None else 1.0 / fps
        self.next_due_s: float | None = None

    def keep(self, t: float) -> bool:
        if self.period_s is None:
            return True
        if self.next_due_s is None:
            self.next_due_s = t + self.period_s
            return True
        if t + self.EPS_S < self.next_due_s:
            return False
        self.next_due_s += self.period_s
        if self.next_due_s <= t + self.EPS_S:
            self.next_due_s = t + self.period_s
        return True


class _Stall(SourceTimeoutError):
    """No video bytes within the read deadline (internal: turns into the ``stalled`` state)."""


class CameraStream:
    """Decodes one camera's source into :class:`Frame` records.

    Args:
        camera_id: Camera id, used in frames, log lines and error messages.
        options: How to open, decode and sample the source.

    Raises:
        SourceOptionsError: When ``camera_id`` is empty or ``options`` is not a SourceOptions.
    """

    def __init__(self, camera_id: str, options: SourceOptions) -> None:
        if not isinstance(camera_id, str) or not camera_id:
            raise SourceOptionsError(f"camera_id: expected a non-empty string, got {camera_id!r}")
        if not isinstance(options, SourceOptions):
            raise SourceOptionsError(
                f"options: expected SourceOptions, got {type(options).__name__}")
        self.camera_id = camera_id
        self.options = options
        self.stats = SourceStats()
        self.is_live = is_live_url(options.url)
        self._stop = threading.Event()
        self._clock = _Clock()
        self._sampler = _Sampler(options.analysis_fps)
        self._fps_in = _RateMeter()
        self._fps_out = _RateMeter()
        self._next_log_s: dict[str, float] = {}

    def stop(self) -> None:
        """Ask :meth:`frames` to end; safe to call from any thread, any number of times.

        A backoff wait ends at once. An open or read blocked in FFmpeg returns within
        ``open_timeout_s`` / ``read_timeout_s``: PyAV 18 has no way to interrupt a container
        from another thread, so those deadlines bound how long stopping can take.
        """
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def frames(self) -> Iterator[Frame]:
        """Yield decoded (and sampled) frames until the file ends or :meth:`stop` is called.

        Yields:
            :class:`Frame` records in decode order, ``image`` `(H, W, 3)` uint8 BGR at the
            frame's own resolution (it may change mid-stream), ``time_s`` never decreasing.
            Each decoded picture is yielded at most once; nothing is yielded while the source
            is silent.

        Raises:
            SourceError: Files only: the file cannot be opened, has no video stream, or fails
                while reading (``stats.state`` is then ``"failed"``). Live sources never raise;
                they reconnect until stopped.
        """
        if ffmpeg_log_bridge_enabled():
            self._log_limited("bridge", logging.WARNING,
                              "camera %r: PyAV routes FFmpeg logs through Python logging "
                              "(av.logging.set_level(%r)): each FFmpeg log line takes the GIL",
                              self.camera_id, av.logging.get_level())
        try:
            if self.is_live:
                yield from self._live_frames()
            else:
                yield from self._file_frames()
        finally:
            if self.stats.state not in ("ended", "failed"):
                self._set_state("stopped")

    # -- files ---------------------------------------------------------------------------------

    def _file_frames(self) -> Iterator[Frame]:
        self._set_state("connecting")
        try:
            container = self._open()
        except SourceError as exc:
            self.stats.state, self.stats.last_error = "failed", str(exc)
            raise
        with container:
            start: tuple[float, float] | None = None  # (monotonic, time_s) of the first frame
            try:
                for frame in self._decode(container):
                    if self.options.realtime:
                        if start is None:
                            start = (time.monotonic(), frame.time_s)
                        delay_s = start[0] + (frame.time_s - start[1]) - time.monotonic()
                        if delay_s > 0 and self._stop.wait(delay_s):
                            return
                    yield frame
                    if self._stop.is_set():
                        return
            except (av.error.FFmpegError, OSError) as exc:
                message = f"camera {self.camera_id!r}: cannot read {self.options.url!r}: {_describe(exc)}"
                self._set_state("failed")
                self.stats.last_error = message
                raise SourceError(message) from None
        if not self._stop.is_set():
            self._set_state("ended")

    # -- live sources --------------------------------------------------------------------------

    def _live_frames(self) -> Iterator[Frame]:
        attempt = 0
        while not self._stop.is_set():
            self._set_state("connecting")
            got_frame = False
            try:
                with self._open() as container:
                    for frame in self._decode(container):
                        if not got_frame:
                            got_frame, attempt = True, 0  # backoff resets after a good read
                        yield frame
                        if self._stop.is_set():
                            return
                if self._stop.is_set():
                    return
                reason, state = f"{self._where()}: stream ended", "backoff"
            except SourceTimeoutError as exc:  # a deadline passed with no bytes: open or read
                reason, state = str(exc), "stalled"
                self.stats.stalls += 1
            except SourceError as exc:
                reason, state = str(exc), "backoff"
            except Exception as exc:  # noqa: BLE001 - a live camera must never end the pipeline
                reason, state = f"{self._where()}: {_describe(exc)}", "backoff"
            if self._stop.is_set():
                return
            self._set_state(state)
            self.stats.last_error = reason
            delay_s = self._backoff_s(attempt)
            attempt += 1
            logger.warning("%s%s; reconnecting in %.1f s", reason,
                           " (stalled)" if state == "stalled" else "", delay_s)
            if self._stop.wait(delay_s):
                return
            self.stats.reconnects += 1

    def _backoff_s(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter.

        Source: Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog (2015),
        https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/ : the wait is
        drawn uniformly below ``min(cap, base * 2**attempt)``. Unlike the blog's ``[0, ceiling]``
        the draw starts at ``reconnect_initial_s`` so a camera is never hammered faster than that.
        """
        lo, cap = self.options.reconnect_initial_s, self.options.reconnect_max_s
        ceiling = min(cap, lo * 2.0 ** min(attempt, 62))
        return random.uniform(lo, ceiling)

    def _where(self) -> str:
        return f"camera {self.camera_id!r}: {self._redacted_url()!r}"

    def _redacted_url(self) -> str:
        """The URL with any password replaced, for log lines."""
        parts = urlsplit(self.options.url)
        if parts.password is None:
            return self.options.url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()

    # -- common --------------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state != "streaming":
            self.stats.fps_in = self.stats.fps_out = 0.0
            self._fps_in.reset()
            self._fps_out.reset()
        self.stats.state = state

    def _log_limited(self, key: str, level: int, message: str, *args: object) -> bool:
        """Log at most once per :data:`DECODE_ERROR_LOG_INTERVAL_S` per ``key``; return whether it did."""
        now = time.monotonic()
        if now < self._next_log_s.get(key, 0.0):
            return False
        self._next_log_s[key] = now + DECODE_ERROR_LOG_INTERVAL_S
        logger.log(level, message, *args)
        return True

    def _format_options(self) -> dict[str, str]:
        """FFmpeg demuxer/protocol options for the URL's scheme.

        RTSP and HTTP take a socket I/O timeout in microseconds (``timeout``; FFmpeg < 5 named
        it ``stimeout`` for RTSP), on top of PyAV's interrupt-callback deadlines.
        """
        scheme = urlsplit(self.options.url).scheme.lower()
        if not self.is_live:
            return {}
        socket_timeout_us = str(int(self.options.read_timeout_s * 1e6))
        options = {"analyzeduration": str(int(self.options.probe_s * 1e6))}
        if scheme in ("rtsp", "rtsps"):
            key = "timeout" if av.library_versions["libavformat"][0] >= 59 else "stimeout"
            options.update({"rtsp_transport": self.options.rtsp_transport, key: socket_timeout_us})
        elif scheme in ("http", "https"):
            options["timeout"] = socket_timeout_us
        return options

    def _open(self) -> av.container.InputContainer:
        """Open the source and re-read its stream list; it must have a video stream.

        Raises:
            SourceTimeoutError: The open did not finish within ``open_timeout_s``.
            SourceError: Any other open failure, or no video stream; one-line message naming
                the camera and the URL.
        """
        where = f"camera {self.camera_id!r}: cannot open {self._redacted_url()!r}"
        started_s = time.monotonic()
        hw = _hwaccel(self.options.hwaccel)
        try:
            try:
                container = av.open(self.options.url, mode="r", options=self._format_options(),
                                    timeout=(self.options.open_timeout_s, self.options.read_timeout_s),
                                    **({"hwaccel": hw} if hw is not None else {}))
            except (av.error.FFmpegError, OSError) as hw_exc:
                if hw is None:
                    raise
                # Was it the device? Open in software: if that works, the device is unusable here.
                container = av.open(self.options.url, mode="r", options=self._format_options(),
                                    timeout=(self.options.open_timeout_s, self.options.read_timeout_s))
                _HWACCEL_FAILED.add(self.options.hwaccel)
                logger.warning("camera %r: hardware decoding %r could not open its device (%s: no GPU or no "
                               "driver access?); decoding in software", self.camera_id, self.options.hwaccel,
                               _describe(hw_exc))
        except (av.error.FFmpegError, OSError) as exc:
            # The interrupt callback surfaces as ExitError, the socket timeout as ETIMEDOUT, or
            # as whatever error the demuxer turns them into (RTSP reports InvalidDataError), so
            # judge a timeout by the clock too. The socket timeout (read_timeout_s) may fire
            # before the open deadline.
            deadline_s = self.options.open_timeout_s
            if "timeout" in self._format_options() or "stimeout" in self._format_options():
                deadline_s = min(deadline_s, self.options.read_timeout_s)
            if (isinstance(exc, (av.error.ExitError, TimeoutError))
                    or getattr(exc, "errno", None) == errno.ETIMEDOUT
                    or time.monotonic() - started_s >= 0.95 * deadline_s):
                raise SourceTimeoutError(f"{where}: no answer within {deadline_s:g} s") from None
            raise SourceError(f"{where}: {_describe(exc)}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{where}: no video stream")
        return container

    def _decode(self, container: av.container.InputContainer) -> Iterator[Frame]:
        """Demux and decode the first video stream under the stall watchdog.

        All streams are demuxed so that the watchdog sees the time since the last *video*
        packet: audio still flowing from a camera whose video froze is a stall too.

        Raises:
            SourceTimeoutError: No video packet for ``read_timeout_s`` (live sources).
            av.error.FFmpegError, OSError: The demuxer failed for another reason.
        """
        stream = container.streams.video[0]
        if self.options.decoder_threads == 0:
            stream.thread_type = "AUTO"
        else:
            stream.codec_context.thread_count = self.options.decoder_threads
        if self.options.decode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        self._clock.new_connection(stream)
        self._set_state("waiting_for_keyframe")
        read_timeout_s = self.options.read_timeout_s
        last_video_s = time.monotonic()
        packets = container.demux()
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as exc:
                if self.is_live and (isinstance(exc, av.error.ExitError)
                                     or time.monotonic() - last_video_s >= 0.95 * read_timeout_s):
                    raise self._stall() from None
                raise
            now = time.monotonic()
            if packet.stream.index != stream.index:
                if self.is_live and now - last_video_s >= read_timeout_s:
                    raise self._stall()
                continue
            if packet.size:
                last_video_s = now
                self.stats.bytes_in += packet.size
                self.stats.last_bytes_wall_s = time.time()
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                self._decode_error(exc, packet.pts)
                continue
            for av_frame in decoded:
                frame = self._to_frame(av_frame, stream)
                if frame is not None:
                    yield frame

    def _stall(self) -> _Stall:
        return _Stall(f"{self._where()}: no video bytes for "
                      f"{self.options.read_timeout_s:g} s")

    def _to_frame(self, av_frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> Frame | None:
        wall_s = time.time()
        now = time.monotonic()
        index = self.stats.frames_decoded
        self.stats.frames_decoded += 1
        if self.stats.state != "streaming":
            self._set_state("streaming")
        self.stats.fps_in = self._fps_in.tick(now)
        if av_frame.is_corrupt:
            self.stats.corrupt_frames += 1
            self._log_limited("decode", logging.WARNING,
                              "camera %r: concealed decode errors in the frame at pts %s "
                              "(%d corrupt frames, %d decode errors so far)", self.camera_id,
                              av_frame.pts, self.stats.corrupt_frames, self.stats.decode_errors)
        time_base = av_frame.time_base or stream.time_base
        jumps = self._clock.discontinuities
        time_s = self._clock.time_s(av_frame.pts, time_base, wall_s)
        if self._clock.discontinuities != jumps:
            self.stats.discontinuities += 1
            self._log_limited("time", logging.WARNING,
                              "camera %r: timestamps ran backwards at pts %s; stream time carries "
                              "on from %.3f s (%d discontinuities so far)", self.camera_id,
                              av_frame.pts, time_s, self.stats.discontinuities)
        if not self._sampler.keep(time_s):
            return None
        frame = Frame(
            camera_id=self.camera_id,
            frame_index=index,
            pts=av_frame.pts,
            time_base=time_base,
            time_s=time_s,
            wall_time_s=wall_s,
            image=to_bgr(av_frame),
            is_keyframe=bool(av_frame.key_frame),
        )
        self.stats.frames_emitted += 1
        self.stats.last_frame_wall_s = wall_s
        self.stats.fps_out = self._fps_out.tick(now)
        return frame

    def _decode_error(self, exc: BaseException, pts: int | None) -> None:
        self.stats.decode_errors += 1
        message = f"camera {self.camera_id!r}: decode error at pts {pts}: {_describe(exc)}"
        self.stats.last_error = message
        self._log_limited("decode", logging.WARNING,
                          "%s (%d decode errors, %d corrupt frames so far; next report in >= %.0f s)",
                          message, self.stats.decode_errors, self.stats.corrupt_frames,
                          DECODE_ERROR_LOG_INTERVAL_S)


def to_bgr(av_frame: av.VideoFrame) -> np.ndarray:
    """Convert a decoded picture of any pixel format to 8-bit BGR at its own size.

    PyAV 18 converts with ``sws_scale_frame``, which reads the colour matrix and range from the
    frame's own metadata (``av/video/reformatter.py``: the source frame's ``colorspace`` is left
    as decoded, ``color_range`` is only overridden when a range is given); the range is passed
    explicitly all the same so the intent does not hang on a default. An unspecified matrix falls
    back to BT.601, as FFmpeg's own ``-pix_fmt rgb24`` does; ``yuvj*`` formats are full range by
    definition; 10- and 12-bit formats are scaled down to 8 bits by swscale. (``src_colorspace``
    is not passed: PyAV reads it as an ``SWS_CS_*`` constant, not the frame's ``AVColorSpace``.)

    Args:
        av_frame: A decoded PyAV video frame (any pixel format, any size).

    Returns:
        `(H, W, 3)` uint8 BGR array, ``H, W`` the frame's own height and width.
    """
    return av_frame.reformat(format="bgr24", src_color_range=av_frame.color_range).to_ndarray()
