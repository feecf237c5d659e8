"""``baqylau search ...``, ``baqylau watchlist ...`` and ``baqylau audit ...``: the investigator's CLI.

Every search needs a case reference (``--case``) and records who asked (``--user``, default the
login name), the case and the query in the audit log (``data_dir/audit.db``) *before* any result
is shown. Results are ranked with their score and the path of each sighting's best crop; with
``--sheet PATH`` a contact sheet JPEG of the thumbnails is written too, and ``--json`` prints one
JSON object for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
import math
import sys
import zoneinfo
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from baqylau.argtypes import positive_int
from baqylau.config import Config
from ingest.errors import BaqylauError

log = logging.getLogger(__name__)

#: Thumbnail height in the contact sheet, px; 8 thumbnails a row.
SHEET_THUMB_H_PX = 192
SHEET_COLUMNS = 8
#: Longest watchlist expiry accepted by ``--days``: ten years, the longest sighting retention
#: (``search.retention_days``); an entry that should outlive that is re-registered.
MAX_WATCH_DAYS = 3650


class CliInputError(BaqylauError, ValueError):
    """A command-line value the search commands cannot use (printed without a traceback)."""


class CliOutputError(BaqylauError, OSError):
    """An output file (``--sheet``) cannot be written (printed without a traceback)."""


def parse_time(text: str | None, tz_name: str) -> dt.datetime | None:
    """Parse an ISO 8601 time; without an offset it is read in the configuration's timezone.

    Raises:
        CliInputError: For text that is not ISO 8601.
    """
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliInputError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-30T14:05 or "
                            f"2026-11-30T14:05+05:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(tz_name))
    return value


def camera_positions(cfg: Config) -> dict[str, tuple[float, float]]:
    """WGS84 ``(lat, lon)`` of each camera: its ``location``, else its calibration origin, else
    its first calibration point given in lat/lon. Cameras with none are left out."""
    out: dict[str, tuple[float, float]] = {}
    for cam in cfg.cameras:
        if cam.location is not None:
            out[cam.id] = (cam.location.lat, cam.location.lon)
        elif cam.calibration is not None and cam.calibration.origin is not None:
            out[cam.id] = (cam.calibration.origin.lat, cam.calibration.origin.lon)
        elif cam.calibration is not None:
            pts = [p for p in cam.calibration.points if p.lat is not None and p.lon is not None]
            if pts:
                out[cam.id] = (pts[0].lat, pts[0].lon)
    return out


def _filters(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    from search.index import BBox

    t_from = parse_time(args.time_from, cfg.timezone)
    t_to = parse_time(args.time_to, cfg.timezone)
    if t_from is not None and t_to is not None and t_to < t_from:
        raise CliInputError(f"--to ({args.time_to}) is before --from ({args.time_from})")
    bbox = None
    if args.bbox:
        try:
            lat_min, lon_min, lat_max, lon_max = (float(v) for v in args.bbox.split(","))
        except ValueError:
            raise CliInputError(f"--bbox wants LAT_MIN,LON_MIN,LAT_MAX,LON_MAX, got {args.bbox!r}") from None
        bbox = BBox(lat_min, lon_min, lat_max, lon_max)
    known = {c.id for c in cfg.cameras}
    unknown = [c for c in args.camera or [] if c not in known]
    if unknown:
        log.warning("camera(s) %s are not in the configuration (searched anyway: older sightings "
                    "may come from cameras since removed)", unknown)
    return {"time_from": t_from, "time_to": t_to, "cameras": args.camera or None, "bbox": bbox}


def _query_json(args: argparse.Namespace, filters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    q = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in filters.items() if v is not None}
    if q.get("bbox") is not None:
        b = q["bbox"]
        q["bbox"] = [b.lat_min, b.lon_min, b.lat_max, b.lon_max]
    return {**q, **extra}


def _audit(cfg: Config, args: argparse.Namespace, action: str, query: dict[str, Any], results: int) -> None:
    from search.audit import AuditLog

    log_ = AuditLog(Path(cfg.data_dir) / "audit.db")
    try:
        log_.record(user=args.user, case_ref=args.case, action=action, query=query, results=results)
    finally:
        log_.close()


def _record_row(rank: int, score: float | None, rec: Any, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    local = rec.start_utc.astimezone(tz)
    return {"rank": rank, "score": None if score is None else round(float(score), 4),
            "sighting_id": rec.sighting_id, "camera_id": rec.camera_id, "camera_name": rec.camera_name,
            "start_utc": rec.start_utc.isoformat(), "end_utc": rec.end_utc.isoformat(),
            "start_local": local.isoformat(timespec="seconds"), "duration_s": round(rec.end_time_s - rec.start_time_s, 1),
            "upper": rec.upper, "lower": rec.lower,
            "lat": rec.lat, "lon": rec.lon,
            "thumbnail": str(rec.crop_paths[0]) if rec.crop_paths else None}


def _print_rows(rows: Sequence[dict[str, Any]], header: str) -> None:
    print(header)
    if not rows:
        print("no sightings match")
        return
    for r in rows:
        score = f"{r['score']:.3f}" if r.get("score") is not None else "  -  "
        where = f"  @{r['lat']:.5f},{r['lon']:.5f}" if r.get("lat") is not None else ""
        print(f"{r['rank']:>3}  {score}  {r['start_local']}  {r['camera_id']:<14} "
              f"{r['upper']:>6}/{r['lower']:<6} {r['duration_s']:>6.1f}s  {r['sighting_id']}{where}")
        if r.get("thumbnail"):
            print(f"     {r['thumbnail']}")


def write_sheet(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write a contact sheet JPEG: each result's best crop with its rank, score and camera.

    Args:
        path: Output JPEG path.
        rows: Result rows with ``thumbnail``, ``rank``, ``score``, ``camera_id``.

    Returns:
        The path written.

    Raises:
        CliOutputError: When the file cannot be written.
    """
    from alerts.snapshot import to_ascii

    tiles = []
    for r in rows:
        img = cv2.imread(r["thumbnail"]) if r.get("thumbnail") else None
        if img is None:
            img = np.full((SHEET_THUMB_H_PX, SHEET_THUMB_H_PX // 2, 3), 127, np.uint8)
        w = max(1, round(img.shape[1] * SHEET_THUMB_H_PX / img.shape[0]))
        tile = np.full((SHEET_THUMB_H_PX + 52, max(w, 120), 3), 255, np.uint8)
        tile[:SHEET_THUMB_H_PX, :w] = cv2.resize(img, (w, SHEET_THUMB_H_PX))
        score = f" {r['score']:.2f}" if r.get("score") is not None else ""
        cv2.putText(tile, f"#{r['rank']}{score}", (2, SHEET_THUMB_H_PX + 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
        when = (r.get("start_local") or "")[5:19].replace("T", " ")  # MM-DD HH:MM:SS, local time
        cv2.putText(tile, f"{when} {(r.get('sighting_id') or '')[:8]}", (2, SHEET_THUMB_H_PX + 46),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(tile, to_ascii(r["camera_id"])[:18], (2, SHEET_THUMB_H_PX + 30), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        tiles = [np.full((SHEET_THUMB_H_PX + 52, 120, 3), 255, np.uint8)]
    tile_w = max(t.shape[1] for t in tiles)
    rows_img = []
    for start in range(0, len(tiles), SHEET_COLUMNS):
        line = [cv2.copyMakeBorder(t, 0, 0, 0, tile_w - t.shape[1] + 4, cv2.BORDER_CONSTANT, value=(255, 255, 255))
                for t in tiles[start:start + SHEET_COLUMNS]]
        line += [np.full_like(line[0], 255)] * (SHEET_COLUMNS - len(line)) if start else []
        rows_img.append(cv2.hconcat(line))
    width = max(r.shape[1] for r in rows_img)
    rows_img = [cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
                for r in rows_img]
    path = Path(path)
    # encoded in memory so that the sheet is a JPEG whatever the file's extension
    ok, data = cv2.imencode(".jpg", cv2.vconcat(rows_img), [int(cv2.IMWRITE_JPEG_QUALITY), 85])
    if not ok:
        raise CliOutputError(f"cannot encode the contact sheet for {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise CliOutputError(f"cannot write contact sheet {path}: {exc.strerror or exc}") from exc
    return path


def _emit(args: argparse.Namespace, cfg: Config, header: str, rows: list[dict[str, Any]],
          extra: dict[str, Any] | None = None) -> None:
    if args.sheet:
        write_sheet(args.sheet, rows)
    if args.json:
        json.dump({"query": header, **(extra or {}), "results": rows}, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    _print_rows(rows, header)
    if args.sheet:
        print(f"contact sheet: {args.sheet}")


def _store(cfg: Config):  # noqa: ANN202
    from search.store import SightingStore

    return SightingStore(Path(cfg.data_dir) / "sightings", jpeg_quality=cfg.search.crop_quality)


def _person_detector(cfg: Config, whole_image: bool) -> Any:
    """The configured detector for finding the person in a photo, or ``None`` with ``--whole-image``.

    Raises:
        CliInputError: When the configured detector has no "person" class (the motion fallback).
    """
    from baqylau.analysis import build_detector

    if whole_image:
        return None
    detector = build_detector(cfg)
    if "person" not in tuple(getattr(detector, "class_names", ())):
        raise CliInputError("photos need the person detector (detector.model_path); or pass --whole-image "
                            "when the photo is already a crop of the person")
    return detector


def cmd_search_photo(args: argparse.Namespace, cfg: Config) -> int:
    """Search sightings by an investigator's photo."""
    from baqylau.sightings import build_embedder
    from search.query import load_photo, person_from_photo

    filters = _filters(args, cfg)
    if args.whole_image and args.person is not None:
        raise CliInputError("--person picks one of several people the detector finds; with --whole-image "
                            "the whole photo is the person: give one or the other")
    image = load_photo(args.image)
    detector = _person_detector(cfg, args.whole_image)
    person = person_from_photo(image, detector, choose=args.person, whole_image=args.whole_image)
    embedder = build_embedder(cfg)
    vector = embedder.embed([person.crop])[0]
    with _store(cfg) as store:
        results = store.similar(vector, embedder.model_id, k=args.limit, **filters)
        if not results:
            stored = store.models()
            if stored and embedder.model_id not in stored:
                log.warning("no sighting is embedded with model %s (the configured search.embedder); the "
                            "stored sightings use %s", embedder.model_id, ", ".join(sorted(stored)))
        query = _query_json(args, filters, photo=str(Path(args.image).resolve()),
                            photo_sha256=_sha256(args.image), person=args.person,
                            whole_image=bool(args.whole_image), model_id=embedder.model_id, limit=args.limit)
        _audit(cfg, args, "search.photo", query, len(results))
        tz = zoneinfo.ZoneInfo(cfg.timezone)
        rows = [_record_row(i + 1, r.score, r.record, tz) for i, r in enumerate(results)]
    _emit(args, cfg, f"photo {args.image} (person box {[round(v) for v in person.xyxy]}, model {embedder.model_id})",
          rows)
    return 0


def _sha256(path: str | Path) -> str:
    """SHA-256 of a file (hex), so the audit log names the exact photo searched with."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve_sighting(store: Any, sighting_id: str) -> str:
    """Accept a unique prefix (at least 8 characters) of a sighting id, as printed ids are long.

    Raises:
        CliInputError: When the prefix matches no sighting or several.
    """
    if store.get(sighting_id) is not None or len(sighting_id) < 8:
        return sighting_id
    found = store.ids_with_prefix(sighting_id, limit=2)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CliInputError(f"sighting id prefix {sighting_id!r} matches several sightings; give more of it")
    return sighting_id


def cmd_search_similar(args: argparse.Namespace, cfg: Config) -> int:
    """Search sightings like an existing one ("more like this")."""
    filters = _filters(args, cfg)
    with _store(cfg) as store:
        args.sighting_id = _resolve_sighting(store, args.sighting_id)
        results = store.more_like(args.sighting_id, k=args.limit, **filters)
        _audit(cfg, args, "search.similar", _query_json(args, filters, sighting_id=args.sighting_id,
                                                        limit=args.limit), len(results))
        tz = zoneinfo.ZoneInfo(cfg.timezone)
        rows = [_record_row(i + 1, r.score, r.record, tz) for i, r in enumerate(results)]
    _emit(args, cfg, f"more like sighting {args.sighting_id}", rows)
    return 0


def cmd_search_colour(args: argparse.Namespace, cfg: Config) -> int:
    """Search sightings by clothing colours, time, camera and area (a colour or a filter is needed)."""
    from search.colours import COLOUR_NAMES

    filters = _filters(args, cfg)
    if not args.upper and not args.lower and all(v is None for v in filters.values()):
        raise CliInputError(f"give --upper and/or --lower (colour names: {' '.join(COLOUR_NAMES)}), "
                            f"or at least --from/--to/--camera/--bbox")
    with _store(cfg) as store:
        results = store.find(upper=args.upper, lower=args.lower, min_share=args.min_share, limit=args.limit,
                             **filters)
        _audit(cfg, args, "search.colour", _query_json(args, filters, upper=args.upper, lower=args.lower,
                                                       min_share=args.min_share, limit=args.limit), len(results))
        tz = zoneinfo.ZoneInfo(cfg.timezone)
        rows = [_record_row(i + 1, r.score, r.record, tz) for i, r in enumerate(results)]
    _emit(args, cfg, f"colours upper={args.upper or 'any'} lower={args.lower or 'any'}", rows)
    return 0


def cmd_search_follow(args: argparse.Namespace, cfg: Config) -> int:
    """Follow a person from one sighting across cameras."""
    from search.follow import follow

    from search.watchlist import default_threshold

    with _store(cfg) as store:
        args.sighting_id = _resolve_sighting(store, args.sighting_id)
        start = store.get(args.sighting_id)
        min_score = args.min_score
        if min_score is None:  # the model's calibrated match threshold (1 % false matches per pair)
            min_score = default_threshold(start.model_id) if start is not None and start.model_id else 0.7
        steps = follow(store, args.sighting_id, camera_positions=camera_positions(cfg),
                       window_s=args.window_s, max_hops=args.max_hops, min_score=min_score)
        _audit(cfg, args, "search.follow", {"sighting_id": args.sighting_id, "window_s": args.window_s,
                                            "max_hops": args.max_hops, "min_score": min_score}, len(steps))
        tz = zoneinfo.ZoneInfo(cfg.timezone)
        rows = []
        for st in steps:
            rec = store.get(st.sighting_id)
            if rec is None:  # deleted by retention since the follow
                continue
            row = _record_row(len(rows) + 1, st.score, rec, tz)
            row.update({"lat": st.lat, "lon": st.lon,
                        "transit_s": None if st.transit_s is None else round(float(st.transit_s), 1),
                        "distance_m": None if st.distance_m is None or not math.isfinite(st.distance_m)
                        else round(float(st.distance_m), 1)})
            rows.append(row)
    _emit(args, cfg, f"follow {args.sighting_id}: {len(rows)} step(s), each scored against the first "
                     f"(minimum {min_score:.3f}; a re-ID guess, check every hop by eye)", rows,
          {"trajectory": [[r.get("camera_id"), r.get("start_utc"), r.get("lat"), r.get("lon")] for r in rows]})
    return 0


def cmd_search_retention(args: argparse.Namespace, cfg: Config) -> int:
    """Apply the retention period now."""
    days = cfg.search.retention_days if args.days is None else args.days
    if days < 1:
        raise CliInputError(f"--days must be >= 1 (today counts as day 1), got {days}")
    with _store(cfg) as store:
        report = store.delete_older_than(days)
    _audit(cfg, args, "search.retention", {"days": days, "sightings": report.sightings,
                                           "crop_files": report.crop_files, "index_rows": report.index_rows},
           report.sightings)
    print(f"deleted {report.sightings} sighting(s), {report.crop_files} crop file(s), "
          f"{report.index_rows} index row(s) older than {days} day(s)")
    return 0


def split_photo_spec(spec: str) -> tuple[str, int | None]:
    """Split ``IMAGE[#N]`` into the path and the person index (``None`` when not given).

    A path that exists as given is taken whole, so file names containing ``#`` still work.

    Raises:
        CliInputError: When ``N`` is not an integer >= 0.
    """
    if "#" not in spec or Path(spec).exists():
        return spec, None
    path, _, choose = spec.rpartition("#")
    if not choose.isdigit():
        raise CliInputError(f"--photo {spec!r}: the part after '#' must be a person number (0, 1, ...)")
    return path, int(choose)


def _read_photos(paths: Sequence[str], detector: Any, whole_image: bool) -> list[np.ndarray]:
    from search.query import load_photo, person_from_photo

    from search.query import SeveralPeopleError

    crops = []
    for spec in paths:
        path, choose = split_photo_spec(spec)
        image = load_photo(path)
        try:
            person = person_from_photo(image, detector, choose=choose, whole_image=whole_image)
        except SeveralPeopleError as exc:
            boxes = "; ".join(f"#{b.index}: box {[round(v) for v in b.xyxy]} conf {b.conf:.2f}" for b in exc.boxes)
            raise CliInputError(f"{path}: {len(exc.boxes)} people in the photo ({boxes}); choose one with "
                                f"--photo '{path}#N'") from None
        crops.append(person.crop)
    return crops


def cmd_watchlist_add(args: argparse.Namespace, cfg: Config) -> int:
    """Register a missing or wanted person."""
    from baqylau.sightings import build_embedder
    from search.watchlist import Watchlist

    expires = parse_time(args.expires, cfg.timezone)
    if expires is None:
        if not 0 < args.days <= MAX_WATCH_DAYS:
            raise CliInputError(f"--days must be in (0, {MAX_WATCH_DAYS}] (entries always expire), got {args.days}")
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.days)
    elif expires <= dt.datetime.now(dt.UTC):
        raise CliInputError(f"--expires {args.expires} is in the past")
    crops = _read_photos(args.photo, _person_detector(cfg, args.whole_image), args.whole_image)
    wl = Watchlist(Path(cfg.data_dir) / "watchlist")
    try:
        entry = wl.add(name=args.name, case_ref=args.case, photos=crops, embedders=[build_embedder(cfg)],
                       kind=args.kind, threshold=args.threshold, expires_utc=expires, notes=args.notes or "",
                       created_by=args.user)
    finally:
        wl.close_db()
    _audit(cfg, args, "watchlist.add", {"entry_id": entry.entry_id, "name": args.name, "kind": args.kind,
                                        "photos": [str(Path(split_photo_spec(p)[0]).resolve()) for p in args.photo],
                                        "whole_image": bool(args.whole_image),
                                        "threshold": args.threshold,
                                        "expires_utc": expires.isoformat() if expires else None}, None)
    print(f"registered {entry.entry_id}: {entry.name} ({entry.kind}, case {entry.case_ref}), "
          f"{len(crops)} photo(s), expires {entry.expires_utc.isoformat() if entry.expires_utc else 'never'}")
    if not cfg.search.watchlist_on:
        print(f"note: live matching is OFF in {args.config}: search.watchlist is "
              f"{cfg.search.watchlist!r} and search.embedder is {cfg.search.embedder!r}, not a person "
              f"re-identification model (generic embeddings raised false matches for most registered people, "
              f"see benchmarks/RESULTS.md). Configure a re-ID export (search.embedder: osnet) or set "
              f"search.watchlist: true to match anyway.")
    return 0


def cmd_watchlist_list(args: argparse.Namespace, cfg: Config) -> int:
    """List watchlist entries."""
    from search.watchlist import Watchlist

    wl = Watchlist(Path(cfg.data_dir) / "watchlist")
    try:
        entries = wl.list(active_only=not args.all)
    finally:
        wl.close_db()
    if args.json:
        json.dump([_entry_dict(e) for e in entries], sys.stdout,
                  indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return 0
    if not entries:
        print("no active watchlist entries" if not args.all else "the watchlist is empty")
        return 0
    for e in entries:
        d = _entry_dict(e)
        print(f"{d['entry_id']:<12} {d['status']:<8} {d['kind']:<8} case={d['case_ref']:<14} {d['name']}  "
              f"photos={len(d['photo_paths'])} expires={d['expires_utc'] or 'never'}")
    return 0


def _entry_dict(e: Any) -> dict[str, Any]:
    from collections.abc import Mapping
    from dataclasses import fields

    def plain(k: str, v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return v.isoformat()
        if isinstance(v, Mapping):
            return dict(v)
        if k == "photo_paths":
            return [str(p) for p in v]
        return v

    return {f.name: plain(f.name, getattr(e, f.name)) for f in fields(e)}


def cmd_watchlist_close(args: argparse.Namespace, cfg: Config) -> int:
    """Close a watchlist entry (found, withdrawn)."""
    from search.watchlist import Watchlist

    wl = Watchlist(Path(cfg.data_dir) / "watchlist")
    try:
        entry = wl.get(args.entry_id)
        if entry.status == "closed":
            raise CliInputError(f"{args.entry_id} is already closed ({entry.closed_utc:%Y-%m-%d %H:%M}Z by "
                                f"{entry.closed_by}: {entry.close_reason})")
        wl.close(args.entry_id, by=args.user, reason=args.reason)
    finally:
        wl.close_db()
    _audit(cfg, args, "watchlist.close", {"entry_id": args.entry_id, "reason": args.reason}, None)
    print(f"closed {args.entry_id}: {args.reason}")
    return 0


def cmd_audit_list(args: argparse.Namespace, cfg: Config) -> int:
    """Show the audit log (and check its hash chain)."""
    from search.audit import AuditLog

    log_ = AuditLog(Path(cfg.data_dir) / "audit.db")
    try:
        entries = log_.entries(user=args.by, case_ref=args.for_case, limit=args.limit)
        ok = log_.verify()
    finally:
        log_.close()
    if args.json:
        json.dump({"chain_ok": bool(ok), "entries": [_entry_dict(e) for e in entries]}, sys.stdout, indent=2,
                  ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return 0 if ok else 1
    for e in entries:
        d = _entry_dict(e)
        print(f"{d['time_utc'][:19]}Z  {d['user']:<12} case={d['case_ref']:<14} {d['action']:<16} "
              f"results={'-' if d.get('results') is None else d['results']}  "
              f"{json.dumps(d.get('query'), ensure_ascii=False)}")
    print("audit chain: OK" if ok else "audit chain: BROKEN (a row was changed or deleted)")
    return 0 if ok else 1


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Load the configuration and run the chosen search, watchlist or audit command."""
    from baqylau.config import load_config

    cfg = load_config(args.config)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.search_fn(args, cfg) or 0)
    except KeyError as exc:
        # SightingNotFoundError, WatchlistNotFoundError: str() of a KeyError quotes the message
        if isinstance(exc, BaqylauError) and exc.args:
            raise CliInputError(str(exc.args[0])) from exc
        raise


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``search``, ``watchlist`` and ``audit`` command groups to the CLI."""
    def common(p: argparse.ArgumentParser, case: bool = True, out: bool = True) -> None:
        p.add_argument("--config", required=True, help="YAML configuration file (for data_dir, models)")
        p.add_argument("--user", default=getpass.getuser(), help="who asks (audit log; default: login name)")
        if case:
            p.add_argument("--case", required=True, help="case reference (audit log), e.g. KUI-2026-0412")
        if out:
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.add_argument("--sheet", metavar="JPEG", help="also write a contact sheet of the thumbnails")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--from", dest="time_from", metavar="TIME",
                       help="earliest sighting start, ISO 8601 (config timezone when no offset)")
        p.add_argument("--to", dest="time_to", metavar="TIME", help="latest sighting start, ISO 8601")
        p.add_argument("--camera", action="append", metavar="ID", help="only this camera (repeatable)")
        p.add_argument("--bbox", metavar="LAT_MIN,LON_MIN,LAT_MAX,LON_MAX", help="only sightings in this map area")
        p.add_argument("--limit", type=positive_int, default=20, help="results (default 20)")

    s = sub.add_parser("search", help="forensic search of recorded sightings")
    ss = s.add_subparsers(dest="search_cmd", required=True)
    p = ss.add_parser("photo", help="sightings that look like the person in a photo")
    p.add_argument("image", help="JPEG/PNG photo")
    p.add_argument("--person", type=int, help="which person when the photo shows several (index, largest first)")
    p.add_argument("--whole-image", action="store_true", help="the photo is already a crop of the person")
    common(p); filters(p)
    p.set_defaults(search_fn=cmd_search_photo)
    p = ss.add_parser("similar", help="sightings like an existing one (more like this)")
    p.add_argument("sighting_id")
    common(p); filters(p)
    p.set_defaults(search_fn=cmd_search_similar)
    p = ss.add_parser("colour", aliases=["color"], help="sightings by clothing colours")
    p.add_argument("--upper", help="upper-body colour name")
    p.add_argument("--lower", help="lower-body colour name")
    p.add_argument("--min-share", type=float, default=0.2,
                   help="least share of the body band in that colour (default 0.2)")
    common(p); filters(p)
    p.set_defaults(search_fn=cmd_search_colour)
    p = ss.add_parser("follow", help="follow a person from one sighting across cameras")
    p.add_argument("sighting_id")
    p.add_argument("--window-s", type=float, default=1800.0, help="longest gap between two steps, s")
    p.add_argument("--max-hops", type=int, default=20, help="most steps after the start")
    p.add_argument("--min-score", type=float,
                   help="least appearance score of a hop (default: the model's calibrated match threshold)")
    common(p)
    p.set_defaults(search_fn=cmd_search_follow)
    p = ss.add_parser("retention", help="delete sightings older than the retention period now")
    p.add_argument("--days", type=int, help="override search.retention_days")
    common(p, case=False, out=False)
    p.add_argument("--case", default="retention", help="reference for the audit log (default 'retention')")
    p.set_defaults(search_fn=cmd_search_retention)

    w = sub.add_parser("watchlist", help="missing and wanted persons matched live")
    ws = w.add_subparsers(dest="watch_cmd", required=True)
    p = ws.add_parser("add", help="register a person with one or more photos")
    p.add_argument("--name", required=True)
    p.add_argument("--photo", action="append", required=True, metavar="IMAGE[#N]",
                   help="photo (repeatable); IMAGE#N picks person N of a photo with several")
    p.add_argument("--kind", choices=["missing", "wanted"], default="missing")
    p.add_argument("--threshold", type=float, help="match threshold (default: calibrated per model)")
    p.add_argument("--expires", metavar="TIME", help="expiry, ISO 8601")
    p.add_argument("--days", type=float, default=30.0, help="expiry in days when --expires is not given")
    p.add_argument("--notes")
    p.add_argument("--whole-image", action="store_true", help="the photos are already crops of the person")
    common(p, out=False)
    p.set_defaults(search_fn=cmd_watchlist_add)
    p = ws.add_parser("list", help="list entries")
    p.add_argument("--all", action="store_true", help="also closed and expired entries")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", required=True)
    p.set_defaults(search_fn=cmd_watchlist_list)
    p = ws.add_parser("close", help="close an entry")
    p.add_argument("entry_id")
    p.add_argument("--reason", required=True, help="e.g. 'found 2026-11-30 14:10'")
    common(p, case=False, out=False)
    p.add_argument("--case", default="-", help="case reference for the audit log")
    p.set_defaults(search_fn=cmd_watchlist_close)

    a = sub.add_parser("audit", help="who searched what")
    as_ = a.add_subparsers(dest="audit_cmd", required=True)
    p = as_.add_parser("list", help="show audit entries and check the hash chain")
    p.add_argument("--config", required=True)
    p.add_argument("--by", help="only this user")
    p.add_argument("--for-case", help="only this case reference")
    p.add_argument("--limit", type=positive_int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(search_fn=cmd_audit_list)
