"""Watchlist end to end on real footage: register people from vtest.avi, run the pipeline, score.

For each embedder (colour histogram, MobileNetV2 ImageNet = the permissive default, and the
``eval-only`` OSNet x0.25 MSMT17, evaluation only) the experiment is:

1. Registration: for each chosen PETS09-S2L1 identity and registration moment, the investigator's
   "photo" is the ground-truth box of that person at that moment (GT frame n = video frame n-1)
   widened by a small margin (:data:`MARGIN_X`, :data:`MARGIN_Y`), JPEG-encoded in a temporary
   folder (crops are never kept) and registered as one watchlist entry with ``whole_image``,
   exactly as ``baqylau watchlist add --whole-image`` does (``search.query.person_from_photo``).
   Every entry goes into one watchlist, so one pipeline run scores them all: entries are matched
   independently and alerts are per entry.
2. The real pipeline (``baqylau run CONFIG --until-eof``: YOLOX-Nano, ByteTrack, sightings, live
   watchlist checks every ``search.watch_every_s`` and at the end of each pass) on the whole clip
   (795 frames; GT covers frames 1-400), writing its tracks as MOTChallenge files.
3. Pipeline tracks are mapped to GT identities: per frame <= 400, pipeline boxes and GT boxes are
   paired by Hungarian assignment on IoU (>= :data:`IOU_MATCH`); a track takes the identity it
   was paired with most often. A ``person_match`` alert is right when its track maps to the
   registered identity, false when it maps to another one, "unmatched" when its track has
   frames <= 400 but no GT pairing, and "outside" when its track starts after frame 400 (no GT).
   A tracker identity switch makes one track show two people (at 5 fps YOLOX-Nano/ByteTrack
   swap PETS09 ids 11 and 13 around frame 45); its alerts count for its majority identity, so
   some "false" alerts there are tracker errors rather than embedder errors.
4. The frame an alert was raised at is the frame whose box of the alert's track equals the
   alert's box (live check); an alert raised when the pass ended (its snapshot is the evidence
   image) counts at the track's last frame. The delay is that frame minus the identity's first
   GT frame, in seconds: how long after the person first came into view the alert came.

Each embedder runs twice: at the default thresholds (:data:`search.watchlist.DEFAULT_THRESHOLDS`),
which gives the alerts and delays, and at a near-zero threshold, which gives for every (entry,
sighting) pair its best score over all checks; from those, "need" is the window of per-entry
thresholds that would give a right alert and no false one within the GT range: above the best
score on other identities and at most the best score on the registered one (empty when the
other identities score higher).

Usage: ``.venv/bin/python benchmarks/watchlist_e2e.py [--json] [--embedders ...] [--ids 1,9]
[--moments 0.25,0.75] [--analysis-fps 10]``; ``BAQYLAU_SHARED`` overrides ``../shared``.
About 2 x 30-70 s per embedder on 2 CPU cores (5 min in all).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import yaml
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from search.watchlist import DEFAULT_THRESHOLDS  # noqa: E402
from tracker.mot import read_mot  # noqa: E402

SHARED = Path(os.environ.get("BAQYLAU_SHARED", REPO.parent / "shared")).resolve()
VTEST = SHARED / "data" / "videos" / "opencv-samples" / "vtest.avi"
PETS_GT = SHARED / "data" / "mot" / "PETS09-S2L1" / "gt-frames-0001-0400.txt"
YOLOX = SHARED / "models" / "yolox-nano-coco" / "yolox_nano.onnx"
MOBILENET = SHARED / "models" / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx"
OSNET_EVAL_ONLY = SHARED / "models" / "eval-only" / "osnet-x0_25-msmt17" / "osnet_x0_25_msmt17.onnx"
#: Embedder name -> (``search.embedder``, model file or None).
EMBEDDERS = {"colour_histogram": ("colour_histogram", None), "imagenet": ("imagenet", MOBILENET),
             "osnet": ("osnet", OSNET_EVAL_ONLY)}
FPS = 10.0
GT_LAST_FRAME = 400
#: Least IoU for a pipeline box to be paired with a GT box (the MOTChallenge CLEAR-MOT value).
IOU_MATCH = 0.5
#: Margin added to each side of the GT box for the registration photo, as a share of its width
#: and height: an investigator's photo is rarely cut as tight as a detector box.
MARGIN_X, MARGIN_Y = 0.10, 0.05
#: A registration box must be at most this share covered by other GT boxes, at least this tall
#: and not touch the frame edge: a usable photo of one person.
MAX_COVERED, MIN_HEIGHT_PX, EDGE_PX = 0.10, 60.0, 2.0
#: Threshold of the scoring run: every (entry, sighting) pair raises an alert carrying its best score.
SCORE_ALL_THRESHOLD = 0.01
DEFAULT_IDS = (1, 9, 11, 12, 13, 14, 15, 16, 17, 19)
DEFAULT_MOMENTS = (0.25, 0.75)


@dataclass(frozen=True, slots=True)
class Registration:
    """One watchlist entry to register.

    Attributes:
        gt_id: PETS09 GT identity.
        moment: Position in the identity's usable frames, 0 = first, 1 = last.
        gt_frame: 1-based GT frame of the photo (video frame index ``gt_frame - 1``).
        xyxy: `(4,)` float photo rectangle, px in the 768x576 frame, margin included.
    """

    gt_id: int
    moment: float
    gt_frame: int
    xyxy: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        return f"gt{self.gt_id}@{self.gt_frame}"


def gt_xyxy(rows: np.ndarray) -> np.ndarray:
    """MOT rows `(N, 6)` (id, left, top, w, h, conf) -> `(N, 4)` float64 xyxy px."""
    return np.column_stack([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]]).reshape(-1, 4)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` `(N, 4)` with every box in ``b`` `(M, 4)`, xyxy px -> `(N, M)`."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def choose_registrations(gt: dict[int, np.ndarray], ids, moments, shape_hw=(576, 768)) -> list[Registration]:
    """Pick the registration photo rectangle of each identity at each moment (see module doc)."""
    usable: dict[int, list[tuple[int, np.ndarray]]] = {}
    for frame in sorted(gt):
        rows = gt[frame]
        boxes = gt_xyxy(rows)
        for i, row in enumerate(rows):
            x1, y1, x2, y2 = boxes[i]
            if row[5] == 0 or y2 - y1 < MIN_HEIGHT_PX or x1 < EDGE_PX or y1 < EDGE_PX \
                    or x2 > shape_hw[1] - EDGE_PX or y2 > shape_hw[0] - EDGE_PX:
                continue
            others = np.delete(boxes, i, axis=0)
            mask = np.zeros((int(y2 - y1) + 1, int(x2 - x1) + 1), bool)
            for ox1, oy1, ox2, oy2 in others:
                mask[max(0, int(oy1 - y1)):max(0, int(oy2 - y1)), max(0, int(ox1 - x1)):max(0, int(ox2 - x1))] = True
            if mask.mean() <= MAX_COVERED:
                usable.setdefault(int(row[0]), []).append((frame, boxes[i]))
    out = []
    for gid in ids:
        cands = usable.get(gid, [])
        if not cands:
            continue
        for m in moments:
            frame, (x1, y1, x2, y2) = cands[min(len(cands) - 1, int(round(m * (len(cands) - 1))))]
            dx, dy = MARGIN_X * (x2 - x1), MARGIN_Y * (y2 - y1)
            rect = (max(0.0, x1 - dx), max(0.0, y1 - dy), min(shape_hw[1], x2 + dx), min(shape_hw[0], y2 + dy))
            out.append(Registration(gid, m, frame, tuple(float(v) for v in rect)))
    return out


def cut_photos(video: Path, regs: list[Registration], folder: Path) -> dict[str, Path]:
    """Write each registration photo as a JPEG in ``folder``; returns name -> path."""
    wanted = {r.gt_frame - 1 for r in regs}
    frames = {}
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="bgr24")
            if index >= max(wanted):
                break
    out = {}
    for r in regs:
        x1, y1, x2, y2 = (int(round(v)) for v in r.xyxy)
        path = folder / f"{r.name}.jpg"
        if not cv2.imwrite(str(path), frames[r.gt_frame - 1][y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"cannot write {path}")
        out[r.name] = path
    return out


def write_config(folder: Path, embedder: str, model: Path | None, analysis_fps: float = FPS) -> Path:
    """Write a one-camera config (vtest.avi, YOLOX-Nano, MOT output) in ``folder``; returns its path."""
    # watchlist forced on: 'auto' matches only with a re-ID model, and this measures every embedder
    search = {"embedder": embedder, "providers": ["CPUExecutionProvider"], "watchlist": True}
    if model is not None:
        search["model_path"] = str(model)
    cfg = {"data_dir": str(folder / "data"), "log_level": "WARNING",
           "detector": {"model_path": str(YOLOX), "providers": ["CPUExecutionProvider"]},
           "tracker": {"mot_dir": str(folder / "mot")}, "search": search,
           "defaults": {"analysis_fps": analysis_fps},
           "cameras": [{"id": "square", "name": "PETS09-S2L1", "url": str(VTEST)}]}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m baqylau ARGS`` in the repository; raise with its stderr on failure."""
    proc = subprocess.run([sys.executable, "-m", "baqylau", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"baqylau {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def register(config: Path, regs: list[Registration], photos: dict[str, Path],
             threshold: float | None) -> dict[str, Registration]:
    """Register every photo as an entry (the CLI's ``--whole-image`` path); returns entry_id -> registration."""
    from baqylau.config import load_config
    from baqylau.sightings import build_embedder
    from search.query import load_photo, person_from_photo
    from search.watchlist import Watchlist

    cfg = load_config(config)
    embedder = build_embedder(cfg)
    wl = Watchlist(Path(cfg.data_dir) / "watchlist")
    try:
        out = {}
        for r in regs:
            crop = person_from_photo(load_photo(photos[r.name]), None, whole_image=True).crop
            entry = wl.add(name=r.name, case_ref=f"BENCH-{r.gt_id}", photos=[crop], embedders=[embedder],
                           threshold=threshold, created_by="benchmark")
            out[entry.entry_id] = r
        return out
    finally:
        wl.close_db()


def run_pipeline(config: Path) -> list[dict]:
    """``baqylau run CONFIG --until-eof``, then its person_match alerts (``alerts list --json``)."""
    cli("run", str(config), "--until-eof")
    listed = cli("alerts", "list", "--config", str(config), "--json", "--type", "person_match")
    return json.loads(listed.stdout)


def track_identities(mot: dict[int, np.ndarray], gt: dict[int, np.ndarray]) -> dict[int, int | None | str]:
    """Map each pipeline track id to its majority GT identity (see module doc).

    Returns:
        track id -> GT id, ``None`` (frames <= 400 but never paired) or ``"outside"`` (no frame <= 400).
    """
    votes: dict[int, dict[int, int]] = {}
    for frame, rows in mot.items():
        rows = rows[rows[:, 0] >= 0]
        for tid in rows[:, 0].astype(int):
            votes.setdefault(int(tid), {})
        if frame > GT_LAST_FRAME or frame not in gt or not len(rows):
            continue
        iou = iou_matrix(gt_xyxy(rows), gt_xyxy(gt[frame]))
        r, c = linear_sum_assignment(-iou)
        for i, j in zip(r, c):
            if iou[i, j] >= IOU_MATCH:
                v = votes[int(rows[i, 0])]
                v[int(gt[frame][j, 0])] = v.get(int(gt[frame][j, 0]), 0) + 1
    first = {}
    for frame in sorted(mot):
        for tid in mot[frame][:, 0].astype(int):
            first.setdefault(int(tid), frame)
    return {tid: (max(v, key=v.get) if v else (None if first[tid] <= GT_LAST_FRAME else "outside"))
            for tid, v in votes.items()}


def raise_frame(alert: dict, mot: dict[int, np.ndarray]) -> int | None:
    """1-based frame at which ``alert`` was raised (see module doc), or ``None`` when not found."""
    tid = alert["track_ids"][0]
    frames = sorted(f for f, rows in mot.items() if (rows[:, 0] == tid).any())
    if not frames:
        return None
    evidence = (alert["details"].get("evidence") or {}).get("side_by_side")
    if alert["snapshot_path"] == evidence:  # raised when the pass ended
        return frames[-1]
    box = np.asarray(alert["xyxy"][0], np.float64)
    for f in frames:
        rows = mot[f][mot[f][:, 0] == tid]
        if np.abs(gt_xyxy(rows)[0] - box).max() < 0.02:
            return f
    return None


def evaluate(alerts: list[dict], entries: dict[str, Registration], mot: dict[int, np.ndarray],
             gt: dict[int, np.ndarray]) -> dict[str, dict]:
    """Per entry: right alert, delay, false alerts, unmatched and outside-GT alerts, best scores."""
    ident = track_identities(mot, gt)
    first_gt = {}
    for frame in sorted(gt):
        for gid in gt[frame][:, 0].astype(int):
            first_gt.setdefault(int(gid), frame)
    out = {}
    for entry_id, reg in entries.items():
        mine = [a for a in alerts if a["details"]["watch_entry_id"] == entry_id]
        res = {"entry_id": entry_id, "gt_id": reg.gt_id, "gt_frame": reg.gt_frame, "right": 0, "delay_s": None,
               "false": 0, "false_ids": [], "unmatched": 0, "outside": 0, "best_right": None, "best_false": None,
               "best_outside": None}
        for a in mine:
            who = ident.get(a["track_ids"][0], "outside")
            score = float(a["details"]["score"])
            if who == reg.gt_id:
                res["right"] += 1
                res["best_right"] = max(res["best_right"] or -1.0, score)
                f = raise_frame(a, mot)
                if f is not None:
                    delay = round((f - first_gt[reg.gt_id]) / FPS, 1)
                    res["delay_s"] = delay if res["delay_s"] is None else min(res["delay_s"], delay)
            elif who == "outside":
                res["outside"] += 1
                res["best_outside"] = max(res["best_outside"] or -1.0, score)
            elif who is None:
                res["unmatched"] += 1
            else:
                res["false"] += 1
                res["false_ids"].append(int(who))
                res["best_false"] = max(res["best_false"] or -1.0, score)
        res["false_ids"] = sorted(set(res["false_ids"]))
        out[reg.name] = res
    return out


def experiment(embedder: str, regs: list[Registration], gt: dict[int, np.ndarray], analysis_fps: float,
               threshold: float | None, work: Path) -> tuple[dict[str, dict], float]:
    """Register ``regs`` and run the pipeline once with one embedder; returns per-entry results and seconds."""
    kind, model = EMBEDDERS[embedder]
    folder = Path(tempfile.mkdtemp(prefix=f"{embedder}-", dir=work))
    config = write_config(folder, kind, model, analysis_fps)
    photos_dir = folder / "photos"
    photos_dir.mkdir()
    entries = register(config, regs, cut_photos(VTEST, regs, photos_dir), threshold)
    started = time.monotonic()
    alerts = run_pipeline(config)
    seconds = time.monotonic() - started
    mot = read_mot(folder / "mot" / "square.txt")
    return evaluate(alerts, entries, mot, gt), seconds


def print_table(results: dict) -> None:
    """Print the per-embedder, per-entry table of :func:`main`'s results."""
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print(f"{'embedder':<17} {'entry':<12} {'right':>5} {'delay_s':>7} {'false':>5} {'false ids':<12} "
          f"{'outside':>7} {'max right':>9} {'max other':>9} need threshold in")
    for name, res in results["embedders"].items():
        for key, r in res["per_entry"].items():
            print(f"{name:<17} {key:<12} {'yes' if r['right'] else 'no':>5} {'-' if r['delay_s'] is None else r['delay_s']:>7} "
                  f"{r['false']:>5} {','.join(map(str, r['false_ids'])) or '-':<12} {r['outside']:>7} "
                  f"{fmt(r['max_score_right']):>9} {fmt(r['max_score_other']):>9} {r['threshold_window'] or 'none'}")
        entries = res["per_entry"].values()
        right = sum(1 for r in entries if r["right"])
        clean = sum(1 for r in entries if r["right"] and not r["false"])
        print(f"{name}: right person alerted for {right}/{len(entries)} registrations, "
              f"with no false alert in frames 1-{GT_LAST_FRAME} for {clean}/{len(entries)}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--embedders", default="colour_histogram,imagenet,osnet")
    p.add_argument("--ids", default=",".join(map(str, DEFAULT_IDS)), help="PETS09 GT identities to register")
    p.add_argument("--moments", default=",".join(map(str, DEFAULT_MOMENTS)),
                   help="registration moments, as positions 0..1 in each identity's usable frames")
    p.add_argument("--analysis-fps", type=float, default=FPS)
    args = p.parse_args(argv)
    for path in (VTEST, PETS_GT, YOLOX):
        if not path.exists():
            sys.exit(f"missing {path} (set BAQYLAU_SHARED)")
    gt = read_mot(PETS_GT)
    regs = choose_registrations(gt, [int(v) for v in args.ids.split(",")], [float(v) for v in args.moments.split(",")])
    results: dict = {"analysis_fps": args.analysis_fps, "registrations": [r.name for r in regs], "embedders": {}}
    with tempfile.TemporaryDirectory(prefix="watchlist-e2e-") as tmp:
        for name in args.embedders.split(","):
            model = EMBEDDERS[name][1]
            if model is not None and not model.exists():
                print(f"skipping {name}: {model} missing", file=sys.stderr)
                continue
            at_default, secs = experiment(name, regs, gt, args.analysis_fps, None, Path(tmp))
            scored, _ = experiment(name, regs, gt, args.analysis_fps, SCORE_ALL_THRESHOLD, Path(tmp))
            for key, res in at_default.items():
                s = scored[key]
                res["max_score_right"], res["max_score_other"] = s["best_right"], s["best_false"]
                res["max_score_outside"] = s["best_outside"]
                lo, hi = s["best_false"], s["best_right"]
                res["threshold_window"] = (None if hi is None or (lo is not None and lo >= hi)
                                           else [None if lo is None else round(lo + 0.001, 3), round(hi, 3)])
            results["embedders"][name] = {"run_s": round(secs, 1), "per_entry": at_default,
                                          "default_thresholds": dict(DEFAULT_THRESHOLDS)}
            print(f"{name}: done in {secs:.0f} s per run", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
        return 0
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
