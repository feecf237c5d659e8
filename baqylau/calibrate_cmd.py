"""``baqylau calibrate snapshot|check``: a frame to draw zones on, and a visual check.

``baqylau calibrate snapshot CAMERA --config FILE [--out PNG] [--at SECONDS]``
    save one frame of a camera as PNG (default ``<data_dir>/calibration/<camera>.png``) and
    print its path. Exit 1 (one line on stderr) when no frame comes within the camera's
    ``open_timeout_s + read_timeout_s``.
``baqylau calibrate check FILE [--out-dir DIR]``
    for every camera: check its zones (inside the image, not self-intersecting), fit its
    homography, report the reprojection errors, and render an overlay PNG (zones, calibration
    points, depth markers, a 5 m ground grid) over the snapshot. Exit 1 when a camera has a
    problem or an error above its ``max_reprojection_error_m``.

Invalid configuration files give one line on stderr and exit 2, like the other commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from baqylau.config import (CalibrationConfig, CameraConfig, ConfigError, SceneDetectorConfig, camera_path_part,
                            load_config)
from calibration import CalibrationError, GroundPoint, Homography, Zone, ZoneError, fit_homography
from ingest.errors import BaqylauError, SourceError, SourceTimeoutError

#: Spacing of the ground grid drawn by ``check``, metres.
GRID_STEP_M = 5.0
#: The grid covers the calibration points' ground extent plus this margin, metres, capped at
#: ``GRID_MAX_M`` from the points' centre so a far horizon does not draw thousands of lines.
GRID_MARGIN_M = 10.0
GRID_MAX_M = 200.0
#: Opacity of filled zones in the overlay (0..1): higher hides more of the image.
ZONE_ALPHA = 0.3
_COLOURS = [(0, 200, 255), (255, 120, 0), (0, 220, 0), (200, 0, 200), (0, 120, 255), (255, 255, 0)]


def add_calibrate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``calibrate`` subcommand group on ``subparsers`` (from ``add_subparsers``).

    Returns:
        The new sub-parser.
    """
    c = subparsers.add_parser("calibrate", help="camera calibration tools (snapshot, check)")
    csub = c.add_subparsers(dest="calibrate_command", required=True)
    s = csub.add_parser("snapshot", help="save a frame of a camera as PNG, to draw zones on")
    s.add_argument("camera", help="camera id")
    s.add_argument("--config", required=True, help="YAML configuration file")
    s.add_argument("--out", metavar="PNG", help="output file (default <data_dir>/calibration/<camera>.png)")
    s.add_argument("--at", type=float, metavar="SECONDS", help="files only: first frame at or after this time")
    s.set_defaults(func=cmd_snapshot)
    k = csub.add_parser("check", help="validate zones and homographies, render overlay PNGs")
    k.add_argument("config", help="YAML configuration file")
    k.add_argument("--out-dir", metavar="DIR", help="overlay folder (default <data_dir>/calibration)")
    k.set_defaults(func=cmd_check)
    return c


def snapshot_path(data_dir: str | Path, camera_id: str) -> Path:
    """Default snapshot file of a camera: ``<data_dir>/calibration/<camera_id>.png``."""
    return Path(data_dir) / "calibration" / f"{camera_path_part(camera_id)}.png"


def grab_frame(cam: CameraConfig, at_s: float | None = None) -> np.ndarray:
    """Decode one frame of a camera.

    Args:
        cam: The camera (its url and timeouts are used; analysis_fps is ignored).
        at_s: Files only: the first frame whose stream time is at or after this, seconds.

    Returns:
        `(H, W, 3)` uint8 BGR image.

    Raises:
        SourceTimeoutError: When no frame comes within ``open_timeout_s + read_timeout_s``
            (then within ``read_timeout_s`` of the previous frame while seeking ``at_s``).
        SourceError: When a file cannot be read or ends before ``at_s``.
    """
    from baqylau.analysis import source_options  # heavy imports only when a camera is opened
    from ingest.source import CameraStream, is_live_url

    if at_s is not None and is_live_url(cam.url):
        raise SourceError(f"camera {cam.id!r}: --at works on files only")
    stream = CameraStream(cam.id, dataclasses.replace(source_options(cam), analysis_fps=None, realtime=False))
    found: list[np.ndarray] = []
    failure: list[BaseException] = []
    last_frame = [None]  # monotonic time of the last decoded frame
    done = threading.Event()

    def reader() -> None:
        try:
            for frame in stream.frames():
                last_frame[0] = time.monotonic()
                if at_s is None or frame.time_s >= at_s:
                    found.append(frame.image)
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
        finally:
            done.set()

    start = time.monotonic()
    threading.Thread(target=reader, name=f"snapshot-{cam.id}", daemon=True).start()
    while not done.wait(0.1):
        now = time.monotonic()
        late = (now - start > cam.open_timeout_s + cam.read_timeout_s if last_frame[0] is None
                else now - last_frame[0] > cam.read_timeout_s)
        if late:
            stream.stop()
            raise SourceTimeoutError(
                f"camera {cam.id!r}: no frame within {now - start:.1f} s (open_timeout_s "
                f"{cam.open_timeout_s:g} + read_timeout_s {cam.read_timeout_s:g}); last error: "
                f"{stream.stats.last_error or 'none'}")
    stream.stop()
    if failure:
        if isinstance(failure[0], BaqylauError):
            raise failure[0]
        raise SourceError(f"camera {cam.id!r}: {failure[0]}")
    if not found:
        raise SourceError(f"camera {cam.id!r}: the file ended before "
                          f"{'any frame' if at_s is None else f'{at_s:g} s'}")
    return found[0]


def _camera(cfg, camera_id: str) -> CameraConfig:  # noqa: ANN001
    for cam in cfg.cameras:
        if cam.id == camera_id:
            return cam
    raise ConfigError("configuration", [f"no camera {camera_id!r} (cameras: {[c.id for c in cfg.cameras]})"])


def _config_error(exc: ConfigError, path: str) -> int:
    where = path if exc.path == "configuration" else exc.path
    print(f"baqylau: error: invalid configuration {where}: {'; '.join(exc.problems)}", file=sys.stderr)
    return 2


def _quiet_sources() -> None:
    """Reconnect warnings would repeat on stderr; the final error line carries the last one."""
    logging.getLogger("ingest").setLevel(logging.ERROR)
    logging.getLogger("libav").setLevel(logging.CRITICAL)


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Run ``baqylau calibrate snapshot``; returns the exit status (0, 1 no frame, 2 bad config)."""
    _quiet_sources()
    try:
        cfg = load_config(args.config)
        cam = _camera(cfg, args.camera)
    except ConfigError as exc:
        return _config_error(exc, args.config)
    out = Path(args.out) if args.out else snapshot_path(cfg.data_dir, cam.id)
    try:
        image = grab_frame(cam, args.at)
    except BaqylauError as exc:
        print(f"baqylau: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), image):
        print(f"baqylau: error: cannot write {out}", file=sys.stderr)
        return 1
    print(out)
    return 0


def camera_homography(cal: CalibrationConfig) -> Homography:
    """Fit the homography of a camera's ``calibration`` section (least squares, all points).

    Raises:
        CalibrationError: When the points are degenerate or the fit fails.
    """
    if not cal.points:
        raise CalibrationError("no calibration points (depth markers only): no homography")
    pairs = [GroundPoint(p.image_px, lat=p.lat, lon=p.lon,
                         x_m=p.ground_m[0] if p.ground_m else None, y_m=p.ground_m[1] if p.ground_m else None)
             for p in cal.points]
    origin = (cal.origin.lat, cal.origin.lon) if cal.origin else None
    return fit_homography(pairs, origin_latlon=origin)


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """Whether closed segments p1-p2 and q1-q2 intersect (orientation test, e.g. Cormen et al.,
    *Introduction to Algorithms*, section 33.1)."""
    def orient(a, b, c) -> float:  # noqa: ANN001
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    def on(a, b, c) -> bool:  # noqa: ANN001 - c on segment a-b, given collinear
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    d1, d2, d3, d4 = orient(q1, q2, p1), orient(q1, q2, p2), orient(p1, p2, q1), orient(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return ((d1 == 0 and on(q1, q2, p1)) or (d2 == 0 and on(q1, q2, p2))
            or (d3 == 0 and on(p1, p2, q1)) or (d4 == 0 and on(p1, p2, q2)))


def polygon_problems(poly_px: np.ndarray, resolution_wh: tuple[int, int] | None) -> list[str]:
    """Problems of one zone polygon: vertices outside the image, self-intersection, no area.

    Args:
        poly_px: `(K, 2)` float image pixels.
        resolution_wh: Image width, height; None skips the inside-the-image check.

    Returns:
        Human-readable problems, empty when the polygon is fine.
    """
    problems = []
    k = len(poly_px)
    if resolution_wh is not None:
        w, h = resolution_wh
        outside = [i for i, (x, y) in enumerate(poly_px) if not (0 <= x <= w and 0 <= y <= h)]
        if outside:
            problems.append(f"vertices {outside} outside the {w}x{h} image")
    for i in range(k):
        for j in range(i + 1, k):
            if j == i + 1 or (i == 0 and j == k - 1):
                continue  # adjacent edges share a vertex
            if _segments_cross(poly_px[i], poly_px[(i + 1) % k], poly_px[j], poly_px[(j + 1) % k]):
                problems.append(f"edges {i} and {j} cross (self-intersecting)")
    if abs(cv2.contourArea(poly_px.astype(np.float32))) < 1.0:
        problems.append("no area")
    return problems


def _ipt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _label(img: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int]) -> None:
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    at = (min(max(at[0], 2), img.shape[1] - tw - 2), min(max(at[1], th + 2), img.shape[0] - 3))  # keep it readable
    cv2.putText(img, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)


def _draw_grid(img: np.ndarray, hom: Homography) -> None:
    """A ground grid every GRID_STEP_M metres, projected into the image (white; the origin's
    axes yellow)."""
    h, w = img.shape[:2]
    centre = hom.ground_m.mean(axis=0)
    lo = np.maximum(hom.ground_m.min(axis=0) - GRID_MARGIN_M, centre - GRID_MAX_M)
    hi = np.minimum(hom.ground_m.max(axis=0) + GRID_MARGIN_M, centre + GRID_MAX_M)
    lo, hi = np.floor(lo / GRID_STEP_M) * GRID_STEP_M, np.ceil(hi / GRID_STEP_M) * GRID_STEP_M
    t = np.linspace(0, 1, 60)
    lines, is_axis = [], []
    for x in np.arange(lo[0], hi[0] + 1e-9, GRID_STEP_M):
        lines.append(np.c_[np.full_like(t, x), lo[1] + t * (hi[1] - lo[1])])
        is_axis.append(abs(x) < 1e-9)
    for y in np.arange(lo[1], hi[1] + 1e-9, GRID_STEP_M):
        lines.append(np.c_[lo[0] + t * (hi[0] - lo[0]), np.full_like(t, y)])
        is_axis.append(abs(y) < 1e-9)
    for line, axis in zip(lines, is_axis):
        px = hom.ground_to_img(line)
        ok = np.isfinite(px).all(axis=1) & (np.abs(px) < 4 * max(w, h)).all(axis=1)
        # split the line where it leaves the drawable range (beyond the horizon)
        breaks = np.flatnonzero(~ok)
        for run in np.split(px, breaks):
            run = run[np.isfinite(run).all(axis=1) & (np.abs(run) < 4 * max(w, h)).all(axis=1)]
            if len(run) >= 2:
                cv2.polylines(img, [np.round(run).astype(np.int32)], False,
                              (0, 255, 255) if axis else (255, 255, 255), 1, cv2.LINE_AA)


def render_overlay(image: np.ndarray, zones: list[Zone], hom: Homography | None,
                   cal: CalibrationConfig | None, scene: Sequence[SceneDetectorConfig] = (),
                   learned: dict[str, bool] | None = None) -> np.ndarray:
    """Draw zones, the ground grid, calibration points, depth markers and bin rim lines on a
    copy of ``image``.

    Args:
        image: `(H, W, 3)` uint8 BGR snapshot; not modified.
        zones: The camera's zones.
        hom: The fitted homography, or None.
        cal: The calibration section (depth markers), or None.
        scene: The camera's scene detectors (their rim lines are drawn, their ids labelled).
        learned: Per scene detector id, whether its clean reference is saved; ``None`` = unknown.

    Returns:
        `(H, W, 3)` uint8 BGR overlay.
    """
    out = image.copy()
    h, w = out.shape[:2]
    fill = out.copy()
    for i, z in enumerate(zones):
        cv2.fillPoly(fill, [np.round(z.polygon_px((w, h))).astype(np.int32)], _COLOURS[i % len(_COLOURS)])
    out = cv2.addWeighted(fill, ZONE_ALPHA, out, 1 - ZONE_ALPHA, 0)
    if hom is not None:
        _draw_grid(out, hom)
    for i, z in enumerate(zones):
        poly = z.polygon_px((w, h))
        cv2.polylines(out, [np.round(poly).astype(np.int32)], True, _COLOURS[i % len(_COLOURS)], 2, cv2.LINE_AA)
        _label(out, z.zone_id, _ipt(poly.mean(axis=0)), (255, 255, 255))
    if hom is not None:
        back = hom.ground_to_img(hom.ground_m)
        for p, b, e in zip(hom.image_px, back, hom.errors_m):
            cv2.circle(out, _ipt(p), 5, (0, 255, 0), 2, cv2.LINE_AA)
            if np.isfinite(b).all():
                cv2.drawMarker(out, _ipt(b), (0, 0, 255), cv2.MARKER_CROSS, 10, 2)
                cv2.line(out, _ipt(p), _ipt(b), (0, 0, 255), 1, cv2.LINE_AA)
            _label(out, f"{e:.2f} m", (_ipt(p)[0] + 7, _ipt(p)[1] - 7), (0, 255, 0))
    for m in cal.depth_markers if cal else []:
        pts = np.array(m.points_px, dtype=np.float64)
        if len(pts) > 1:
            cv2.polylines(out, [np.round(pts).astype(np.int32)], False, (255, 0, 255), 2, cv2.LINE_AA)
        for p, z_m in zip(pts, m.height_m):
            cv2.circle(out, _ipt(p), 4, (255, 0, 255), -1, cv2.LINE_AA)
            _label(out, f"{m.id} {z_m:g} m", (_ipt(p)[0] + 6, _ipt(p)[1] + 4), (255, 0, 255))
    by_id = {z.zone_id: z for z in zones}
    for d in scene:
        zone = by_id.get(d.zone)
        if zone is None:
            continue
        poly = zone.polygon_px((w, h))
        cx, cy = _ipt(poly.mean(axis=0))
        state = "" if learned is None else (" learned" if learned.get(d.id) else " learning")
        _label(out, f"[{d.type}: {d.id}{state}]", (cx - 40, cy + 18), (0, 255, 255))
        if d.rim_line:
            rim = np.asarray(d.rim_line, np.float64) * ([w, h] if zone.units == "norm" else [1, 1])
            cv2.line(out, _ipt(rim[0]), _ipt(rim[1]), (0, 255, 255), 2, cv2.LINE_AA)
            _label(out, f"{d.id} rim", (_ipt(rim[0])[0], _ipt(rim[0])[1] - 6), (0, 255, 255))
    return out


def check_camera(cam: CameraConfig, data_dir: str, out_dir: Path) -> tuple[bool, str]:
    """Check one camera and write its overlay ``<out_dir>/<camera>-check.png``.

    Returns:
        (ok, one summary line).
    """
    problems: list[str] = []
    snap = snapshot_path(data_dir, cam.id)
    image = cv2.imread(str(snap)) if snap.exists() else None
    if image is None:
        try:
            image = grab_frame(cam)
        except BaqylauError as exc:
            problems.append(f"no image ({str(exc).splitlines()[0]})")
    wh = (image.shape[1], image.shape[0]) if image is not None else None
    zones: list[Zone] = []
    zone_problems = []
    for zc in cam.zones:
        try:
            z = Zone(zc.id, np.array(zc.points, dtype=np.float32), zc.units, zc.name)
        except ZoneError as exc:
            zone_problems.append(f"{zc.id}: {exc}")
            continue
        zones.append(z)
        if z.units == "norm" or wh is not None:
            found = polygon_problems(z.polygon_px(wh or (1, 1)).astype(np.float64), wh)
            zone_problems += [f"{zc.id}: {p}" for p in found]
    problems += zone_problems
    parts = [f"zones OK ({len(zones)})" if not zone_problems else f"zones: {'; '.join(zone_problems)}"]
    hom = None
    cal = cam.calibration
    if cal is not None and not cal.points:
        parts.append("no homography (depth markers only)")
    elif cal is not None:
        try:
            hom = camera_homography(cal)
        except CalibrationError as exc:
            problems.append(str(exc))
            parts.append(f"homography: {exc}")
        if hom is not None:
            rms_m, max_m = hom.reprojection_error_m
            rms_px, max_px = hom.reprojection_error_px
            parts.append(f"homography {hom.n_points} points: RMS {rms_m:.3f} m / {rms_px:.1f} px, "
                         f"max {max_m:.3f} m / {max_px:.1f} px")
            if max_m > cal.max_reprojection_error_m:
                worst = int(np.argmax(hom.errors_m))
                problems.append("error too large")
                parts.append(f"FAIL: point {worst} is {max_m:.2f} m off (> max_reprojection_error_m "
                             f"{cal.max_reprojection_error_m:g})")
        if wh is not None:
            for i, p in enumerate(cal.points):
                if not (0 <= p.image_px[0] <= wh[0] and 0 <= p.image_px[1] <= wh[1]):
                    problems.append(f"calibration point {i} outside the image")
                    parts.append(f"calibration point {i} {p.image_px} outside the {wh[0]}x{wh[1]} image")
    else:
        parts.append("no homography")
    if wh is not None and cal is not None:
        for m in cal.depth_markers:
            if any(not (0 <= x <= wh[0] and 0 <= y <= wh[1]) for x, y in m.points_px):
                problems.append(f"depth marker {m.id} outside the image")
                parts.append(f"depth marker {m.id} has points outside the {wh[0]}x{wh[1]} image")
    learned: dict[str, bool] = {}
    if cam.scene:
        state_dir = Path(data_dir) / "scene" / camera_path_part(cam.id)
        saved = [p.name for p in state_dir.glob("*.npz")] if state_dir.is_dir() else []
        learned = {d.id: any(n.startswith(d.id + "-") for n in saved) for d in cam.scene}
        parts.append("scene: " + ", ".join(
            f"{d.id} ({d.type} on {d.zone}, {'reference learned' if learned[d.id] else 'not learned yet'})"
            for d in cam.scene))
        for j, d in enumerate(cam.scene):
            if d.rim_line and wh is not None:
                zone = next((z for z in zones if z.zone_id == d.zone), None)
                scale = np.array(wh, np.float64) if zone is not None and zone.units == "norm" else 1.0
                rim = np.asarray(d.rim_line, np.float64) * scale
                if ((rim < 0) | (rim > np.array(wh))).any():
                    problems.append(f"scene[{j}] rim line outside the image")
                    parts.append(f"scene[{j}] ({d.id}).rim_line {d.rim_line} is outside the {wh[0]}x{wh[1]} image")
    if image is not None:
        out = out_dir / f"{camera_path_part(cam.id)}-check.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        if cv2.imwrite(str(out), render_overlay(image, zones, hom, cal, cam.scene, learned)):
            parts.append(f"overlay {out}")
        else:
            problems.append("overlay not written")
            parts.append(f"cannot write {out}")
    else:
        parts.append(problems[0])
    return not problems, f"{cam.id}: {'OK' if not problems else 'PROBLEMS'}: " + " | ".join(parts)


def cmd_check(args: argparse.Namespace) -> int:
    """Run ``baqylau calibrate check``; returns the exit status (0 all fine, 1 a camera has a
    problem, 2 bad config)."""
    _quiet_sources()
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _config_error(exc, args.config)
    out_dir = Path(args.out_dir) if args.out_dir else Path(cfg.data_dir) / "calibration"
    all_ok = True
    for cam in cfg.cameras:
        ok, line = check_camera(cam, cfg.data_dir, out_dir)
        all_ok &= ok
        print(line, flush=True)
    return 0 if all_ok else 1
