"""The multi-process layout: decode workers, one inference process, a supervisor.

::

    supervisor (main process): starts, watches and restarts the others; health -> status.json,
    │                           Prometheus; Ctrl-C/SIGTERM -> orderly stop
    ├── decode-0 … decode-N-1   each owns a share of the cameras: PyAV decode threads, frames
    │        │                  copied once into shared-memory slots (ingest.shm); per camera
    │        │                  CameraAnalysis (ByteTrack, zone rules, alerts) on the results
    │        └─ FrameHandle (small) ──► request queue ──► inference
    └── inference               gathers handles from every worker into batches (up to
             │                  detector.max_batch frames or batch_wait_ms, whichever first),
             └─ Detections ───► the owning worker's result queue

Back-pressure: a camera has ``runtime.slots_per_camera`` slots; while all are in flight the
worker keeps only the newest decoded frame of that camera (its FrameQueue drops the oldest),
so nothing queues without bound when inference is slower than decoding. A frame whose
detections never come back (the inference process died) frees its slot after
``runtime.slot_timeout_s``. A process that exits unexpectedly is restarted with capped
exponential backoff; the others keep running. Processes start with the ``spawn`` method
(no fork of threads or ONNX Runtime state).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import contextlib
import random
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Client, Listener
from typing import Any

from baqylau.analysis import (AlertOutput, CameraAnalysis, build_detector, configured_class_names,
                              drops_oldest, rule_class_problems, source_options)
from baqylau.config import Config, ConfigError
from baqylau.runner import IDLE_NOTICE, camera_summary
from ingest.errors import BaqylauError
from ingest.frame import Frame
from ingest.limits import tune_malloc_for_frames
from ingest.queues import FrameQueue
from ingest.reader import CameraReader
from ingest.shm import FrameHandle, FrameSlots, SlotError, SlotReader
from ingest.source import is_live_url

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
#: Exit status of the inference process when its detector cannot be built: do not restart.
EXIT_FATAL = 3


class SupervisorError(BaqylauError, RuntimeError):
    """The process layout cannot run (e.g. the inference process cannot load its model)."""


def _child_logging(level: str) -> None:
    """Set up a child process: logging, malloc tuned for frames, SIGINT left to the supervisor."""
    tune_malloc_for_frames()
    logging.basicConfig(level=getattr(logging, level), format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger("libav").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us through an Event


# ----------------------------------------------------------------------------- messaging
class _Control:
    """A child's end of its pipe to the supervisor: events out, ``stop`` in.

    One writer and one reader per pipe and no shared locks, so a process killed in the middle
    of a message cannot block any other process (``multiprocessing.Queue`` and ``Event`` hold
    semaphores that a SIGKILL leaves taken).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.stopped = False

    def send(self, message: dict) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            self.stopped = True  # the supervisor is gone: stop too

    def stop_requested(self) -> bool:
        try:
            while not self.stopped and self.conn.poll():
                if self.conn.recv() == "stop":
                    self.stopped = True
        except (EOFError, OSError):
            self.stopped = True
        return self.stopped


# ----------------------------------------------------------------------------- inference
def inference_main(cfg: Config, address: str, control_conn: Any) -> None:
    """Entry point of the inference process: batch frames across cameras, run the detector.

    Decode workers connect to ``address`` (a Unix socket) and send :class:`FrameHandle`s; each
    gets ``(FrameHandle, Detections | None)`` back on its own connection (``None``: the frame
    could not be read or analysed, its slot is freed). A worker that dies only loses its
    connection.

    Args:
        cfg: The configuration.
        address: Path of the Unix socket to listen on (a stale file there is replaced).
        control_conn: Pipe to the supervisor (``inference_ready`` / ``fatal`` out, ``stop`` in).
    """
    _child_logging(cfg.log_level)
    control = _Control(control_conn)
    try:
        detector = build_detector(cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which stops
        control.send({"type": "fatal", "error": f"detector: {exc}"})
        raise SystemExit(EXIT_FATAL) from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)
    listener = Listener(address, family="AF_UNIX")
    conns: list[Any] = []
    lock = threading.Lock()

    def accept() -> None:
        while True:
            try:
                c = listener.accept()
            except OSError:
                return  # listener closed at shutdown
            with lock:
                conns.append(c)

    threading.Thread(target=accept, name="inference-accept", daemon=True).start()
    control.send({"type": "inference_ready", "detector": detector.name, "provider": detector.provider,
                  "max_batch": detector.max_batch, "class_names": list(detector.class_names)})
    reader = SlotReader()
    # A static-batch model runs one frame per call anyway: waiting to fill a batch only adds latency.
    cap = cfg.detector.max_batch if detector.max_batch > 1 else 1
    wait_s = cfg.detector.batch_wait_ms / 1000
    pending: list[tuple[Any, FrameHandle]] = []

    def drop(c: Any) -> None:
        with lock:
            if c in conns:
                conns.remove(c)
        with contextlib.suppress(OSError):
            c.close()

    def receive(timeout_s: float) -> None:
        with lock:
            current = list(conns)
        if not current:
            time.sleep(timeout_s)
            return
        for c in mp_connection.wait(current, timeout=timeout_s):
            try:
                while c.poll():
                    pending.append((c, c.recv()))
            except (EOFError, OSError):
                drop(c)

    def reply(c: Any, handle: FrameHandle, dets: Any) -> None:
        try:
            c.send((handle, dets))
        except (OSError, ValueError):
            drop(c)

    try:
        while not control.stop_requested():
            if not pending:
                receive(0.2)
                if not pending:
                    continue
            deadline = time.monotonic() + wait_s
            while len(pending) < cap and (remaining := deadline - time.monotonic()) > 0:
                receive(remaining)
            batch, pending = pending[:cap], pending[cap:]
            images, ok = [], []
            for c, h in batch:
                try:
                    images.append(reader.image(h))
                    ok.append((c, h))
                except SlotError as exc:
                    log.warning("%s", exc)
                    reply(c, h, None)
            if not ok:
                continue
            try:
                dets = detector.detect(images, [h.camera_id for _, h in ok])
            except Exception as exc:  # noqa: BLE001 - a bad batch frees its slots, the loop goes on
                log.error("detector failed on a batch of %d: %s", len(ok), exc)
                dets = [None] * len(ok)
            del images
            for (c, h), d in zip(ok, dets):
                reply(c, h, d)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        reader.close()


# ----------------------------------------------------------------------------- decode worker
def worker_main(name: str, cfg: Config, camera_ids: list[str], class_names: list[str], address: str,
                control_conn: Any, until_eof: bool, run_id: str) -> None:
    """Entry point of a decode worker: decode its cameras, publish frames, analyse results.

    Args:
        name: Worker name (``decode-0``), also the process name.
        cfg: The configuration.
        camera_ids: The cameras this worker owns.
        class_names: The detector's class names (sent by the inference process).
        address: Unix socket of the inference process; reconnected whenever it drops (all
            frames in flight on a dropped connection are given up and their slots freed).
        control_conn: Pipe to the supervisor: ``health`` (per camera, every status interval),
            ``finished`` (all this worker's finite sources are done) and ``summary`` (at exit)
            out, ``stop`` in.
        until_eof: Whether the run ends with the files (kept for symmetry; workers always
            report when their file sources are done).
        run_id: Token unique to this run, for shared-memory block names.
    """
    _child_logging(cfg.log_level)
    control = _Control(control_conn)
    cams = {c.id: c for c in cfg.cameras if c.id in camera_ids}
    output = AlertOutput(cfg)
    slots = FrameSlots(name, list(cams), cfg.runtime.slots_per_camera, _slot_run_id(run_id, os.getpid()))
    queues = {cid: FrameQueue(c.queue_size, drop_oldest=drops_oldest(c)) for cid, c in cams.items()}
    readers = {cid: CameraReader(cid, source_options(c, len(cams)), queues[cid]) for cid, c in cams.items()}
    analyses = {cid: CameraAnalysis(c, cfg, class_names, output) for cid, c in cams.items()}
    published: dict[int, FrameHandle] = {}
    given_up = dict.fromkeys(cams, 0)
    started = time.monotonic()
    next_report = 0.0
    said_finished = False
    link: list[Any] = [None]  # the connection to the inference process, or None
    next_connect = 0.0
    for r in readers.values():
        r.start()

    def give_up(slot: int, why: str) -> None:
        h = published.pop(slot, None)
        if h is not None:
            given_up[h.camera_id] += 1
            log.debug("camera %s: frame %d given up: %s", h.camera_id, h.frame_index, why)
        slots.release(slot)

    def disconnect(why: str) -> None:
        if link[0] is not None:
            with contextlib.suppress(OSError):
                link[0].close()
            link[0] = None
            lost = list(published)
            for slot in lost:
                give_up(slot, why)
            log.warning("lost the inference process (%s); %d frame(s) in flight given up", why, len(lost))

    def connect() -> None:
        nonlocal next_connect
        if link[0] is not None or time.monotonic() < next_connect:
            return
        try:
            link[0] = Client(address, family="AF_UNIX")
            log.info("connected to the inference process")
        except OSError:
            next_connect = time.monotonic() + 0.2

    def publish() -> None:
        if link[0] is None:
            return  # frames wait in the camera queues (newest wins) until inference is back
        for cid in cams:
            while (slot := slots.free_slot(cid)) is not None:
                frame: Frame | None = queues[cid].get(timeout_s=0)
                if frame is None:
                    break
                handle = slots.publish(frame, slot)
                published[slot] = handle
                try:
                    link[0].send(handle)
                except (OSError, ValueError) as exc:
                    disconnect(str(exc) or type(exc).__name__)
                    return

    def handle_results(timeout_s: float) -> None:
        conn = link[0]
        if conn is None:
            time.sleep(timeout_s)
            return
        try:
            if not conn.poll(timeout_s):
                return
            while conn.poll():
                handle, dets = conn.recv()
                if published.get(handle.slot) != handle:
                    continue  # a stale reply (the slot was given up meanwhile)
                frame = slots.frames[handle.slot]
                try:
                    if dets is not None:
                        analyses[handle.camera_id].process(frame, dets)
                except Exception:  # noqa: BLE001 - one camera's bad state must not stop the others
                    log.exception("camera %s: analysis failed at pts %s", handle.camera_id, handle.pts)
                finally:
                    published.pop(handle.slot, None)
                    slots.release(handle.slot)
        except (EOFError, OSError) as exc:
            disconnect(str(exc) or type(exc).__name__)

    def summaries() -> dict[str, dict]:
        elapsed = time.monotonic() - started
        out = {}
        for cid in cams:
            s = camera_summary(readers[cid], queues[cid], analyses[cid], elapsed)
            s["dropped_frames"] = int(s["dropped_frames"]) + given_up[cid]
            s["worker"] = name
            out[cid] = s
        return out

    try:
        while not control.stop_requested():
            connect()
            publish()
            handle_results(0.01 if published else 0.005)
            for slot in slots.expired(cfg.runtime.slot_timeout_s):
                give_up(slot, f"no detections within {cfg.runtime.slot_timeout_s:g} s")
            now = time.monotonic()
            if now >= next_report:
                next_report = now + cfg.runtime.status_interval_s
                control.send({"type": "health", "worker": name, "cameras": summaries()})
            finite = [c for c in cams if not is_live_url(cams[c].url)]
            if finite and not said_finished and all(
                    readers[c].done and queues[c].qsize() == 0 and not slots.in_flight(c) for c in finite):
                said_finished = True
                control.send({"type": "finished", "worker": name, "cameras": finite})
    finally:
        for r in readers.values():
            r.stop()
        for cid, a in analyses.items():
            try:
                a.flush()
            except Exception:  # noqa: BLE001
                log.exception("camera %s: closing open alerts failed", cid)
        for r in readers.values():
            r.join(timeout_s=5.0)
        control.send({"type": "summary", "worker": name, "cameras": summaries()})
        if published:
            disconnect("stopping")
        if link[0] is not None:
            link[0].close()
        output.close()
        slots.close()


def _slot_run_id(run_id: str, pid: int) -> str:
    """The token in a worker's shared-memory block names (``bq<token>_<worker>_<slot>_<gen>``)."""
    return f"{run_id}{pid}"


def _unlink_blocks(prefix: str) -> int:
    """Unlink the shared-memory blocks whose names start with ``prefix`` (a dead worker's), so
    a crash never leaks frame memory until shutdown. Linux (``/dev/shm``) only; returns how many."""
    from multiprocessing import shared_memory

    try:
        names = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except OSError:
        return 0
    for name in names:
        with contextlib.suppress(OSError):
            block = shared_memory.SharedMemory(name=name, create=False)
            block.close()
            block.unlink()
    return len(names)


#: Per-camera counters that a restarted worker starts again from 0; the supervisor adds the
#: dead process's last figures so that the reported counters never go backwards.
_COUNTERS = ("frames_decoded", "frames_analysed", "detections", "tracks", "alerts", "alerts_new", "alerts_merged",
             "decode_errors", "dropped_frames", "reconnects")


# ----------------------------------------------------------------------------- supervisor
class Supervisor:
    """Runs the multi-process layout and keeps it running.

    Args:
        cfg: The configuration, with ``runtime.decode_workers >= 1``.
        until_eof: Stop when every file source has ended.

    Raises:
        ConfigError: When a rule names a class the detector does not know.
    """

    def __init__(self, cfg: Config, until_eof: bool = False) -> None:
        self.cfg = cfg
        self.until_eof = until_eof
        from baqylau.scene import scene_problems

        problems = rule_class_problems(cfg, configured_class_names(cfg)) + scene_problems(cfg)
        if problems:
            raise ConfigError("configuration", problems)
        self.ctx = mp.get_context("spawn")
        cams = [c for c in cfg.cameras if c.enabled]
        n = max(1, min(cfg.runtime.decode_workers, len(cams)))
        self.assignment: dict[str, list[str]] = {f"decode-{i}": [c.id for c in cams[i::n]] for i in range(n)}
        self.run_id = uuid.uuid4().hex[:6]
        self._tmp = tempfile.TemporaryDirectory(prefix="baqylau-")
        self.address = os.path.join(self._tmp.name, "inference.sock")
        self.procs: dict[str, Any] = {}
        self.conns: dict[str, Any] = {}  # process name -> supervisor end of its pipe
        self.restarts: dict[str, int] = dict.fromkeys([*self.assignment, "inference"], 0)
        self.restart_at: dict[str, float] = {}
        self.latest: dict[str, dict] = {c.id: {"state": "connecting", "frames_analysed": 0, "alerts": 0,
                                               "frames_decoded": 0, "worker": w}
                                        for w, ids in self.assignment.items() for c in cams if c.id in ids}
        self.finished: set[str] = set()
        self.finite = {c.id for c in cams if not is_live_url(c.url)}
        self.carry: dict[str, dict[str, int]] = {cid: dict.fromkeys(_COUNTERS, 0) for cid in self.latest}
        self.process_restarts: dict[str, int] = dict.fromkeys(self.latest, 0)
        self.class_names: list[str] | None = None
        self._stop_requested = False
        #: Relay and route workers of this process (``alerts.deliver: in_process``); the decode
        #: workers write alerts and their outbox rows to the shared SQLite store.
        self.delivery = None
        if cfg.alerts.deliver == "in_process":
            from baqylau.delivery import DeliveryService

            self.delivery = DeliveryService(cfg)

    def stop(self) -> None:
        """Ask every process to stop (safe from a signal handler: only sets a flag)."""
        self._stop_requested = True

    # -- process management
    def _start(self, name: str) -> None:
        ours, theirs = self.ctx.Pipe(duplex=True)
        if name == "inference":
            target, args = inference_main, (self.cfg, self.address, theirs)
        else:
            target, args = worker_main, (name, self.cfg, self.assignment[name], self.class_names, self.address,
                                         theirs, self.until_eof, self.run_id)
        proc = self.ctx.Process(target=target, args=args, name=name, daemon=False)
        proc.start()
        theirs.close()
        old = self.conns.pop(name, None)
        if old is not None:
            old.close()
        self.procs[name], self.conns[name] = proc, ours
        log.info("started %s (pid %d)%s", name, proc.pid,
                 f" for cameras {', '.join(self.assignment[name])}" if name in self.assignment else "")

    def _watch(self) -> None:
        """Restart processes that exited while the layout is running."""
        now = time.monotonic()
        for name, proc in list(self.procs.items()):
            if proc.exitcode is None or self._stop_requested:
                continue
            if name == "inference" and proc.exitcode == EXIT_FATAL:
                continue  # reported as a fatal event; run() stops
            if name in self.assignment and proc.exitcode == 0:
                continue  # a worker that ended normally
            if name not in self.restart_at:
                self.restarts[name] += 1
                delay = min(self.cfg.runtime.restart_backoff_max_s, 0.5 * 2 ** min(self.restarts[name], 10))
                delay = random.uniform(delay / 2, delay)
                log.error("%s exited with status %s; restarting in %.1f s (restart #%d)", name, proc.exitcode,
                          delay, self.restarts[name])
                self.restart_at[name] = now + delay
                if name in self.assignment:
                    freed = _unlink_blocks(f"bq{_slot_run_id(self.run_id, proc.pid)}_{name}_")
                    if freed:
                        log.info("freed %d shared-memory block(s) of the dead %s", freed, name)
                    for cid in self.assignment[name]:
                        # the restarted worker counts from 0 again: keep what the dead one reported
                        self.carry[cid] = {k: int(self.latest[cid].get(k) or 0) for k in _COUNTERS}
                        self.process_restarts[cid] += 1
                        self.latest[cid] = {**self.latest[cid], "state": "connecting",
                                            "process_restarts": self.process_restarts[cid]}
                        self.finished.discard(cid)  # a file camera starts again from its beginning
            elif now >= self.restart_at[name]:
                del self.restart_at[name]
                self._start(name)

    def _events(self, timeout_s: float) -> None:
        """Read every pending event from the children's pipes (waiting up to ``timeout_s``)."""
        by_conn = {c: n for n, c in self.conns.items()}
        if not by_conn:
            time.sleep(timeout_s)
            return
        for conn in mp_connection.wait(list(by_conn), timeout=timeout_s):
            try:
                while conn.poll():
                    self._on_event(conn.recv())
            except (EOFError, OSError):
                self.conns.pop(by_conn[conn], None)  # the child exited; _watch decides what next
                conn.close()

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "fatal":
            raise SupervisorError(ev["error"])
        if kind == "inference_ready":
            self.class_names = ev["class_names"]
            log.info("detector %s on %s (batch up to %d)", ev["detector"], ev["provider"], ev["max_batch"])
        elif kind in ("health", "summary"):
            for cid, fig in ev["cameras"].items():
                fig = dict(fig)
                for k in _COUNTERS:
                    fig[k] = int(fig.get(k) or 0) + self.carry[cid][k]
                fig["process_restarts"] = self.process_restarts[cid]
                self.latest[cid] = fig
        elif kind == "finished":
            self.finished.update(ev["cameras"])

    def run(self, on_tick: Callable[[Supervisor], None] | None = None) -> dict[str, dict]:
        """Start everything, supervise until stopped (or every file ended), stop in order.

        Returns:
            The per-camera summary (see :meth:`summary`).

        Raises:
            SupervisorError: When the inference process cannot build its detector.
        """
        try:
            if self.delivery is not None:
                self.delivery.start()
            self._start("inference")
            deadline = time.monotonic() + 300
            while self.class_names is None and not self._stop_requested:
                self._events(0.2)
                if self.procs["inference"].exitcode is not None and self.class_names is None:
                    self._events(0.5)
                    if self.class_names is None:
                        raise SupervisorError(f"inference process exited with {self.procs['inference'].exitcode}")
                if time.monotonic() > deadline:
                    raise SupervisorError("inference process did not become ready within 300 s")
            for name in self.assignment:
                if not self._stop_requested:
                    self._start(name)
            next_tick = time.monotonic() + 1.0
            said_idle = False
            while not self._stop_requested:
                self._events(0.2)
                self._watch()
                if self.finite and self.finite <= self.finished:
                    if self.until_eof:
                        log.info("every file source has ended; stopping")
                        break
                    if not said_idle and not (set(self.latest) - self.finite):
                        said_idle = True
                        log.info(IDLE_NOTICE)
                if on_tick and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + 1.0
                    on_tick(self)
        finally:
            self._shutdown()
        return self.summary()

    def _shutdown(self) -> None:
        """Workers first (they flush open alerts and report), then the inference process."""
        self._stop_requested = True
        deadline = time.monotonic() + 30
        workers = [n for n in self.procs if n != "inference"]
        for group in ([workers, ["inference"]] if "inference" in self.procs else [workers]):
            for name in group:
                conn = self.conns.get(name)
                if conn is not None:
                    with contextlib.suppress(OSError, ValueError):
                        conn.send("stop")
            while any(self.procs[n].is_alive() for n in group) and time.monotonic() < deadline:
                self._events(0.1)  # keep reading so children can send their summaries and exit
            for name in group:
                proc = self.procs[name]
                if proc.is_alive():
                    log.warning("%s did not stop within 30 s; terminating", name)
                    proc.terminate()
                    proc.join(5)
                proc.join(1)
        self._events(0.1)
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        leaked = _unlink_blocks(f"bq{self.run_id}")  # from a worker that had to be terminated
        if leaked:
            log.warning("freed %d shared-memory block(s) left by terminated workers", leaked)
        self._tmp.cleanup()
        if self.delivery is not None:
            self.delivery.stop()
            self.delivery = None

    def all_failed(self) -> bool:
        """True when no camera delivered a frame and every one reported an error."""
        return bool(self.latest) and all(
            not s.get("frames_decoded") and (s.get("error") or s.get("last_error")) for s in self.latest.values())

    def summary(self) -> dict[str, dict]:
        """Latest per-camera figures reported by the workers (same keys as the in-process
        layout, plus ``worker`` and ``process_restarts``). Counters include what a crashed
        and restarted worker had reported before it died."""
        return {cid: dict(s) for cid, s in sorted(self.latest.items())}
