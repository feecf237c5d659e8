"""The ``baqylau`` command line.

``baqylau run CONFIG [--until-eof] [--summary-json PATH]``
    run the pipeline; Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
``baqylau alerts list --config CONFIG [--json] [--camera ID] [--type T] [--status S] [--limit N]``
    print the stored alerts.
``baqylau alerts ack|dispatch|resolve|reject|defer|reopen ALERT_ID --config CONFIG [--by U] [--note T] [--reason R] [--until T]``
    move an alert through its lifecycle (reject needs --reason, defer needs --until).
``baqylau alerts history ALERT_ID --config CONFIG [--json]``
    an alert's events: who, when, from -> to, note, reason, due date.
``baqylau tickets list|services --config CONFIG``
    Open311 GeoReport v2 ``requests.json`` (filters, ``--table``) and ``services.json``.
``baqylau webhooks list|attempts|replay|enable|secret``
    webhook endpoints, delivery attempts, replays with the same webhook-id, re-enabling, new secrets.
``baqylau routes status|dead|read --config CONFIG``
    outbox and bus queues per route, dead letters, a pull consumer printing JSON lines.
``baqylau deliver CONFIG``
    run alert delivery (relay, webhook and MQTT workers) until SIGINT/SIGTERM.
``baqylau config check CONFIG``
    validate a configuration file and print one line per problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from alerts.lifecycle import STATES
from baqylau.argtypes import positive_int
from baqylau.config import Config, ConfigError, load_config
from ingest.errors import BaqylauError

log = logging.getLogger("baqylau")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    logging.getLogger("libav").setLevel(logging.ERROR)


def _fail(message: str, code: int = 2) -> int:
    print(f"baqylau: error: {message}", file=sys.stderr)
    return code


def _load(path: str) -> Config:
    return load_config(path)


class _StatusLine:
    """A one-line live status on a terminal (stderr), redrawn about once a second."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, summary: dict) -> None:
        if not self.enabled:
            return
        parts = []
        for cid, s in summary.items():
            parts.append(f"{cid}:{s['state'][:4]} {s['frames_analysed']}f {s['alerts']}a")
        sys.stderr.write("\r\x1b[2K" + " | ".join(parts)[:200])
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _print_summary(summary: dict) -> None:
    cols = ["frames_decoded", "frames_analysed", "analysis_fps", "detections", "tracks", "alerts",
            "decode_errors", "state"]
    heads = ["camera", "decoded", "analysed", "fps", "detections", "tracks", "alerts", "errors", "state"]
    rows = [[cid] + [str(s[c]) for c in cols] for cid, s in summary.items()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    for cid, s in summary.items():
        if s.get("error"):
            print(f"camera {cid}: {s['error']}")


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    _setup_logging(args.log_level or cfg.log_level)
    stop_requested: list[int] = []
    pipeline = None

    def on_signal(signum, _frame) -> None:  # noqa: ANN001
        log.info("signal %s: stopping (open alerts are closed, nothing half-written)", signum)
        stop_requested.append(signum)
        if pipeline is not None:
            pipeline.stop()

    # installed before the model loads, so an early Ctrl-C is never lost
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from baqylau.publish import HealthPublisher  # heavy imports only when running
    from ingest.limits import raise_open_files_limit, tune_malloc_for_frames

    raise_open_files_limit(sum(1 for c in cfg.cameras if c.enabled))
    tune_malloc_for_frames()

    if cfg.runtime.decode_workers >= 1:
        from baqylau.procs import Supervisor

        pipeline = Supervisor(cfg, until_eof=args.until_eof)
        layout = f"{cfg.runtime.decode_workers} decode worker(s) + inference process"
    else:
        from baqylau.runner import Pipeline

        pipeline = Pipeline(cfg, until_eof=args.until_eof)
        layout = "single process"
    if stop_requested:
        pipeline.stop()
    publisher = HealthPublisher(cfg)
    from baqylau.delivery import DeliveryCollector

    publisher.registry.prometheus_registry.register(DeliveryCollector(lambda: getattr(pipeline, "delivery", None)))
    status = _StatusLine()
    from baqylau.sightings import apply_retention

    retention_due = [0.0]  # monotonic time of the next retention pass (sightings, crops, index days)

    def retention() -> None:
        if time.monotonic() >= retention_due[0]:
            retention_due[0] = time.monotonic() + 3600.0
            try:
                apply_retention(cfg)
            except Exception:  # noqa: BLE001 - a retention failure must not stop the cameras
                log.exception("sighting retention failed; retried in an hour")

    retention()

    def on_tick(p) -> None:  # noqa: ANN001
        retention()
        summary = p.summary()
        publisher.publish(summary, layout)
        status(summary)

    try:
        summary = pipeline.run(on_tick=on_tick)
        publisher.publish(summary, layout)
    finally:
        publisher.close()
        status.clear()
    _print_summary(summary)
    if args.summary_json:
        out = Path(args.summary_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if pipeline.all_failed() and not stop_requested:
        return _fail("no camera delivered a frame (every source failed); see the errors above", 1)
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    from alerts import AlertStore

    db = Path(cfg.data_dir) / "alerts.db"
    if not db.exists():
        alerts = []
    else:
        with AlertStore(db) as store:
            alerts = store.list(camera_id=args.camera, type=args.type, limit=args.limit, status=args.status)
    if args.json:
        json.dump([a.to_dict() for a in alerts], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not alerts:
        filtered = args.camera or args.type or args.limit or args.status
        print(f"no alerts {'match these filters' if filtered else 'stored'} in {db}")
        return 0
    for a in alerts:
        end = f"{a.end_time_s:.1f}s" if a.end_time_s is not None else "ongoing"
        print(f"{a.alert_id[:13]}  {a.status:<12} {a.start_utc.strftime('%Y-%m-%d %H:%M:%S')}Z  {a.type:<16} camera={a.camera_id:<10} "
              f"zone={a.zone_id or '-':<10} t={a.start_time_s:.1f}s..{end}  tracks={list(a.track_ids)} "
              f"conf={a.conf:.2f}  {a.snapshot_path or ''}")
        if a.type == "person_match":
            d = a.details
            print(f"    watchlist {d.get('watch_entry_id')} {d.get('name')!r} case={d.get('case_ref')} "
                  f"score={d.get('score')} (threshold {d.get('threshold')}) sighting={d.get('sighting_id')} "
                  f"side-by-side: {(d.get('evidence') or {}).get('side_by_side')}")
    print(f"{len(alerts)} alert(s) in {db}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    from baqylau.analysis import configured_class_names, rule_class_problems

    from baqylau.scene import scene_problems

    from baqylau.sightings import search_problems

    problems = rule_class_problems(cfg, configured_class_names(cfg)) + scene_problems(cfg) + search_problems(cfg)
    if problems:
        raise ConfigError(args.config, problems)
    dc, sc = cfg.detector, cfg.search
    if dc.kind == "auto" and not (dc.model_path and Path(dc.model_path).is_file()):
        print(f"warning: detector.model_path {dc.model_path or '(not set)'} not found: the weights-free motion "
              f"detector will run (no classes, no sightings)")
    if sc.enabled and sc.embedder == "auto" and not (sc.model_path and Path(sc.model_path).is_file()):
        print(f"warning: search.model_path {sc.model_path or '(not set)'} not found: sightings will use the "
              f"colour-histogram embedding")
    from baqylau.delivery import delivery_warnings

    for line in delivery_warnings(cfg):
        print(line)
    if sc.enabled and not sc.watchlist_on:
        print(f"note: live watchlist matching is off (search.watchlist {sc.watchlist!r} with embedder "
              f"{sc.embedder!r}); it runs with a re-ID model (embedder: osnet) or watchlist: true")
    print(f"{args.config}: OK, {len(cfg.cameras)} camera(s), "
          f"{sum(len(c.zones) for c in cfg.cameras)} zone(s), {sum(len(c.rules) for c in cfg.cameras)} rule(s), "
          f"{sum(len(c.scene) for c in cfg.cameras)} scene detector(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``baqylau``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("baqylau")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    p = argparse.ArgumentParser(prog="baqylau", description="Video analytics for city monitoring.")
    p.add_argument("--version", action="version", version=f"baqylau {ver}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the pipeline on the cameras of a config")
    r.add_argument("config", help="YAML configuration file")
    r.add_argument("--until-eof", action="store_true", help="stop when every file source has ended")
    r.add_argument("--summary-json", metavar="PATH", help="also write the per-camera summary as JSON")
    r.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("alerts", help="stored alerts")
    asub = a.add_subparsers(dest="alerts_command", required=True)
    al = asub.add_parser("list", help="list stored alerts")
    al.add_argument("--config", required=True, help="YAML configuration file (for data_dir)")
    al.add_argument("--json", action="store_true", help="print a JSON array")
    al.add_argument("--camera", help="only this camera id")
    al.add_argument("--type", help="only this alert type")
    al.add_argument("--status", choices=STATES, help="only alerts in this lifecycle state")
    al.add_argument("--limit", type=positive_int, help="at most this many (>= 1)")
    al.set_defaults(func=cmd_alerts_list)

    from baqylau import alerts_cmd

    alerts_cmd.add_alert_parsers(asub)
    alerts_cmd.add_parsers(sub)

    from baqylau.status_cmd import add_status_parser

    add_status_parser(sub)

    from baqylau.calibrate_cmd import add_calibrate_parser

    add_calibrate_parser(sub)

    from baqylau.search_cmd import add_parsers, cmd_dispatch

    before = set(sub.choices)
    add_parsers(sub)
    for name in set(sub.choices) - before:
        sub.choices[name].set_defaults(func=cmd_dispatch)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a configuration file")
    cc.add_argument("config")
    cc.set_defaults(func=cmd_config_check)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``baqylau`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        # checks that need the detector (class names) raise without the file name
        path = getattr(args, "config", exc.path) if exc.path == "configuration" else exc.path
        print(f"baqylau: error: invalid configuration {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except BaqylauError as exc:
        text = str(exc.args[0]) if exc.args else ""  # args[0]: a KeyError's str() adds quotes
        return _fail(text.splitlines()[0] if text else type(exc).__name__)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `baqylau status --watch 2 | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
