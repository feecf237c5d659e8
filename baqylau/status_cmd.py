"""``baqylau status --config FILE [--json] [--watch SECONDS [--count N]]``.

Reads ``<data_dir>/status.json`` (written by the running pipeline, see
:func:`baqylau.health.write_status`) and prints one row per camera. Exit status: 0 when
the status file was read, 1 when it is absent or unreadable (one line on stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Any, TextIO

from baqylau.argtypes import positive_int
from baqylau.config import load_config
from baqylau.health import StatusFileError, parse_utc, read_status, status_path

#: A status file older than this is flagged: the pipeline rewrites it about once a second,
#: so 10 s means it stopped (or hangs) rather than a slow write.
STALE_FILE_S = 10.0
#: Longest ``last_error`` shown in the table, characters (``--json`` has the full text).
ERROR_WIDTH = 60
_WATCH_MIN_S, _WATCH_MAX_S = 0.2, 3600.0


def _watch_seconds(text: str) -> float:
    value = float(text)
    if not _WATCH_MIN_S <= value <= _WATCH_MAX_S:
        raise argparse.ArgumentTypeError(f"must be in {_WATCH_MIN_S}..{_WATCH_MAX_S} s, got {text}")
    return value


def add_status_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``status`` subcommand on ``subparsers`` (from ``add_subparsers``).

    The parser's default ``func`` is :func:`cmd_status`.

    Returns:
        The new sub-parser.
    """
    s = subparsers.add_parser("status", help="per-camera health of the running pipeline")
    s.add_argument("--config", required=True, help="YAML configuration file (for data_dir)")
    s.add_argument("--json", action="store_true", help="print the status file as JSON")
    s.add_argument("--watch", type=_watch_seconds, metavar="SECONDS",
                   help=f"redraw every SECONDS ({_WATCH_MIN_S}..{_WATCH_MAX_S:g}) until Ctrl-C")
    s.add_argument("--count", type=positive_int, metavar="N", help="with --watch: stop after N redraws")
    s.set_defaults(func=cmd_status)
    return s


def _age_s(iso: str | None, now: dt.datetime) -> float | None:
    if iso is None:
        return None
    return max(0.0, (now - parse_utc(iso)).total_seconds())


def _table(status: dict[str, Any], configured: list[str], now: dt.datetime) -> list[str]:
    heads = ["camera", "state", "fps in/out", "decoded", "analysed", "dropped", "errors",
             "reconnects", "last frame s", "last error"]
    rows = []
    for cid, h in status["cameras"].items():
        age = _age_s(h.last_frame_utc, now)
        err = (h.last_error or "").replace("\n", " ").removeprefix(f"camera {cid!r}: ")
        if len(err) > ERROR_WIDTH:
            err = err[:ERROR_WIDTH - 3] + "..."
        rows.append([cid, h.state, f"{h.fps_in:.1f}/{h.fps_out:.1f}", str(h.frames_decoded),
                     str(h.frames_analysed), str(h.dropped_frames), str(h.decode_errors),
                     str(h.reconnects), "-" if age is None else f"{age:.1f}", err])
    for cid in configured:
        if cid not in status["cameras"]:
            rows.append([cid, "no report", "-", "-", "-", "-", "-", "-", "-", ""])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [heads, *rows]]
    return lines


def _draw(path, configured: list[str], as_json: bool, out: TextIO, err: TextIO) -> int:
    """Print the status once; return 0, or 1 when the file is absent or unreadable or the
    pipeline that wrote it has exited."""
    try:
        status = read_status(path)
    except StatusFileError as exc:
        print(f"baqylau: {exc}", file=err)
        return 1
    now = dt.datetime.now(dt.timezone.utc)
    file_age_s = _age_s(status["updated_utc"], now)
    note, code = None, 0
    if file_age_s > STALE_FILE_S:
        pid = status.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            note, code = f"note: the pipeline is not running (pid {pid} has exited); figures are from " \
                         f"{file_age_s:.0f} s ago", 1
        else:
            note = f"note: status file is {file_age_s:.0f} s old (pipeline stalled?)"
    if as_json:
        doc = {**status, "cameras": {cid: h.to_dict() for cid, h in status["cameras"].items()}}
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        if note:
            print(note, file=err)  # stdout stays parseable JSON
        return code
    print(f"{path}  updated {status['updated_utc']}  pid {status.get('pid', '?')}", file=out)
    for line in _table(status, configured, now):
        print(line, file=out)
    if note:
        print(note, file=out)
    return code


def _alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_status(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``baqylau status``; returns the exit status.

    Args:
        args: Parsed arguments with ``config``, ``json``, ``watch`` (s or None), ``count``.
        out: Where the table goes (default stdout); ``err`` likewise for errors (stderr).

    Raises:
        ConfigError: When the configuration file is missing or invalid (the CLI prints it).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    cfg = load_config(args.config)
    configured = [c.id for c in cfg.cameras if c.enabled]
    path = status_path(cfg.data_dir)
    if args.watch is None:
        return _draw(path, configured, args.json, out, err)
    clear = "\x1b[H\x1b[2J" if out.isatty() and not args.json else ""
    code, n = 0, 0
    try:
        while True:
            out.write(clear)
            code = _draw(path, configured, args.json, out, err)
            out.flush()
            n += 1
            if args.count is not None and n >= args.count:
                break
            time.sleep(args.watch)
            if not clear and not args.json:
                out.write("\n")
    except KeyboardInterrupt:
        pass
    return code
