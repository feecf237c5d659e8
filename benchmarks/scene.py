"""Scene-detector benchmark: false alarms on real event-free footage, and staged events on real frames.

Two parts (issue 4, "Evaluation" and "Benchmark"):

1. **Event-free real footage**: every scene detector type (bin overflow, littering/dumping,
   flooding) runs on every real clip of ``../shared/data/videos`` (the GIF previews excluded:
   1.9-4.7 s, shorter than any learning period) with hand-drawn zones
   (:data:`benchmarks.staging.ZONES`), people and vehicles from the real YOLOX-Nano detector and
   ByteTrack, at 5 fps. Nothing happens in these clips, so every ``"started"`` event is a false
   alarm. Main figure: each clip played once ("plain"), with the learning period shortened to
   :data:`PLAIN_LEARN_S` so that the 30-s parking clip is watched at all (the detectors' other
   timers are their defaults). Second figure: each clip played forward and backward
   (:data:`PINGPONG_PASSES` passes, the same real content repeated) with all defaults.
2. **Staged events** (:mod:`benchmarks.staging`): real objects cut from real photos pasted into
   real frames, flood water from :mod:`benchmarks.water`, brightness ramps; the detectors'
   defaults except the shorter timers of :data:`STAGED_TIMERS` (learning 20 s, bin and flood
   persistence 30 s), clips played ping-pong where a scenario is longer than the clip. An alert matches a label
   when it has the same alert type, the detector's zone, a box overlapping the staged change and
   a time after the onset; each label is matched once (later matches are duplicates, counted as
   false positives). Precision, recall and the median delay from onset to the ``"started"``
   event are per alert type.

``cpu_ms_per_frame_per_zone`` is the time spent inside ``detector.update`` per analysed frame per
detector instance (one zone each; a bin detector's bin, rim strip and surroundings count as one),
over all runs. YOLOX and ByteTrack are not included (shared by all detectors of a camera).

Usage: ``.venv/bin/python benchmarks/scene.py [--json] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import staging as st  # noqa: E402
from benchmarks.staging import ANALYSIS_FPS, LightRamp, Scenario, StagedEvent  # noqa: E402

log = logging.getLogger("benchmarks.scene")

ALERT_TYPES = ("bin_overflow", "littering", "illegal_dumping", "flooding")
#: Alert types each detector kind can raise.
KIND_TYPES = {"bin_overflow": ("bin_overflow",), "litter": ("littering", "illegal_dumping"),
              "flooding": ("flooding",)}
#: Learning period (s) for the plain (played once) event-free runs; default is 60 s.
PLAIN_LEARN_S = 10.0
#: Passes (forward, backward, ...) of each clip for the ping-pong event-free runs.
PINGPONG_PASSES = 4


# --------------------------------------------------------------------------- detectors


def _configured(cls, overrides: dict):
    """``cls()`` with ``overrides``; keys ``"scene.x"`` go to the nested scene-change config."""
    cfg = cls()
    scene = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("scene.")}
    top = {k: v for k, v in overrides.items() if not k.startswith("scene.")}
    if scene:
        top["scene"] = dataclasses.replace(cfg.scene, **scene)
    return dataclasses.replace(cfg, **top) if top else cfg


def make_detector(kind: str, detector_id: str, clip: str, zone_id: str, around_id: str | None,
                  overrides: dict):
    """Build one scene detector of ``kind`` on a zone of :data:`benchmarks.staging.ZONES`."""
    zones = st.ZONES[clip]
    if kind == "bin_overflow":
        from detectors.bin_overflow import BinOverflowConfig, BinOverflowDetector

        return BinOverflowDetector(detector_id, zones[zone_id], around_zone=zones.get(around_id or ""),
                                   rim_line=st.RIMS.get((clip, zone_id)),
                                   config=_configured(BinOverflowConfig, overrides))
    if kind == "litter":
        from detectors.litter import LitteringConfig, LitteringDetector

        return LitteringDetector(detector_id, zones[zone_id], config=_configured(LitteringConfig, overrides))
    if kind == "flooding":
        from detectors.flooding import FloodingConfig, FloodingDetector

        return FloodingDetector(detector_id, zones[zone_id], config=_configured(FloodingConfig, overrides))
    raise ValueError(f"unknown detector kind {kind!r}")


def available_kinds() -> list[str]:
    """Detector kinds whose module can be imported (the others are reported as missing)."""
    out = []
    for kind, module in (("bin_overflow", "detectors.bin_overflow"), ("litter", "detectors.litter"),
                         ("flooding", "detectors.flooding")):
        try:
            __import__(module)
            out.append(kind)
        except ImportError as exc:
            log.warning("detector %s unavailable: %s", kind, exc)
    return out


@dataclasses.dataclass(frozen=True)
class Alert:
    """The parts of a ``"started"`` :class:`~detectors.scene.SceneEvent` the scoring needs."""

    alert_type: str
    zone_id: str
    reason: str
    time_s: float
    start_time_s: float
    xyxy: np.ndarray
    track_ids: tuple[int, ...]

    def __str__(self) -> str:
        box = np.round(self.xyxy[0]).astype(int).tolist() if len(self.xyxy) else []
        return (f"{self.alert_type}/{self.reason} {self.zone_id} t={self.time_s:.1f}s "
                f"onset={self.start_time_s:.1f}s box={box}" + (f" tracks={list(self.track_ids)}" if self.track_ids else ""))


def run_scenario(sc: Scenario) -> tuple[list[Alert], float, int]:
    """Run ``sc``'s detector over its frames; return (alerts, seconds inside ``update``, frames)."""
    det = make_detector(sc.detector, sc.scenario_id, sc.clip, sc.zone_id, sc.around_zone_id, sc.config)
    events, spent, n, frame = [], 0.0, 0, None
    for frame, people, vehicles in st.scenario_frames(sc):
        t0 = time.perf_counter()
        events += det.update(frame, people, vehicles)
        spent += time.perf_counter() - t0
        n += 1
    events += det.flush(frame)
    alerts = [Alert(e.alert_type, e.zone_id, e.reason, float(e.time_s), float(e.start_time_s), e.xyxy,
                    tuple(e.track_ids)) for e in events if e.kind == "started"]
    log.info("%s: %d alerts, %.1f ms/frame", sc.scenario_id, len(alerts), 1000 * spent / max(n, 1))
    return alerts, spent, n


def _init_worker(detections: dict) -> None:
    import cv2

    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    st._DETECTIONS.update(detections)


def run_all(scenarios: list[Scenario], workers: int) -> list[tuple[list[Alert], float, int]]:
    """Run scenarios, in ``workers`` spawned processes when > 1 (given the cached YOLOX detections).

    Spawned, not forked: a forked child of a process that has used onnxruntime's and OpenCV's
    thread pools can deadlock. Each worker decodes the clips again (seconds) and re-runs ByteTrack.
    """
    if workers <= 1:
        return [run_scenario(sc) for sc in scenarios]
    import multiprocessing

    dets = {c: st.clip_detections(c) for c in {sc.clip for sc in scenarios}}
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (dets,)) as pool:
        return pool.map(run_scenario, scenarios, chunksize=1)


#: Staged runs: the detectors' defaults except these shorter, documented timers (the default
#: learning periods of 60-120 s and the 120-s bin/flood persistence would need clips played
#: ping-pong for many minutes each; the waiting logic is the same, only shorter).
STAGED_TIMERS: dict[str, dict] = {
    "bin_overflow": {"scene.learn_s": 20.0, "persistence_s": 30.0},
    "litter": {"scene.learn_s": 20.0},
    "flooding": {"scene.learn_s": 20.0, "persistence_s": 30.0},
}
#: ``--quick`` (smoke test): very short timers, one scenario per detector on the 30-s parking clip;
#: the littering detector without the owner rule (the parking clip has no pedestrians).
QUICK_TIMERS: dict[str, dict] = {
    "bin_overflow": {"scene.learn_s": 5.0, "persistence_s": 5.0},
    "litter": {"scene.learn_s": 5.0, "wait_s": 8.0, "require_owner": False},
    "flooding": {"scene.learn_s": 5.0, "persistence_s": 5.0, "scene.persistence_s": 3.0},
}


def _config(kind: str, overrides: dict):
    if kind == "bin_overflow":
        from detectors.bin_overflow import BinOverflowConfig as cls
    elif kind == "litter":
        from detectors.litter import LitteringConfig as cls
    else:
        from detectors.flooding import FloodingConfig as cls
    return _configured(cls, overrides)


def _timing(kind: str, overrides: dict) -> tuple[float, float]:
    """(learning period, rough alert wait after onset) of ``kind`` with ``overrides``, s."""
    cfg = _config(kind, overrides)
    own = max((float(getattr(cfg, n)) for n in ("persistence_s", "wait_s") if hasattr(cfg, n)), default=30.0)
    scene = 0.0 if kind == "litter" else float(cfg.scene.persistence_s)
    return float(cfg.scene.learn_s), own + scene + 1.5 * float(cfg.scene.short_term_tau_s)


def _box(xyxy) -> np.ndarray:
    return np.asarray(xyxy, np.float32)


#: Staged littering objects cover this multiple of the detector's ``large_area_share`` of the
#: frame: small (littering) and large (illegal dumping).
LARGE_SHARE_FACTOR = {False: 1 / 3, True: 3.0}


def litter_scenarios(quick: bool) -> list[Scenario]:
    """Littering and dumping: real objects at the feet of real passers-by, two carried away again."""
    timers = QUICK_TIMERS["litter"] if quick else STAGED_TIMERS["litter"]
    learn, wait = _timing("litter", timers)
    if quick:
        t = learn + 5
        box = st.place_box(st.cutout("box"), (300, 260), 60)
        ev = StagedEvent("litter-q", "object", "illegal_dumping", "lot_west", t, None, True, box, "box",
                         note="unowned box (owner rule off)")
        return [Scenario("litter-q-parking", "parking", "litter", "lot_west", t + wait + 15, (ev,), config=timers)]
    small = ["carton", "bag_white", "bag_blue"]
    large = ["bags_black", "box", "bag_teal"]
    plans = [("square", "road"), ("square", "lawn"), ("hall", "floor")]
    cands = {p: [c for c in st.passers(*p[:1], st.ZONES[p[0]][p[1]]) if c[0] / ANALYSIS_FPS >= learn + 8
                 and c[2][3] - c[2][1] >= 40] for p in plans}
    used: dict[tuple, list[float]] = {p: [] for p in plans}
    out: list[Scenario] = []
    count = 0
    while count < 14 and any(cands.values()):
        plan = plans[count % len(plans)]
        pick = None
        while cands[plan]:
            k, tid, b = cands[plan].pop(0)
            if all(abs(k / ANALYSIS_FPS - u) >= 8 for u in used[plan]):
                pick = (k, tid, b)
                break
        if pick is None:
            plans = [p for p in plans if p != plan]
            if not plans:
                break
            continue
        k, tid, b = pick
        clip, zone_id = plan
        c = st.load_clip(clip)
        t = k / ANALYSIS_FPS
        used[plan].append(t)
        is_large = count % 2 == 1
        removed = t + 0.4 * wait if count in (4, 11) else None  # carried away again
        name = (large if is_large else small)[(count // 2) % 3]
        # size from a target object area far from the detector's littering/dumping boundary
        # (large_area_share of the frame), so that the label is unambiguous: 1/3 or 3x of it
        cut = st.cutout(name)
        frame_px = c.resolution_wh[0] * c.resolution_wh[1]
        target_px = LARGE_SHARE_FACTOR[is_large] * _config("litter", timers).large_area_share * frame_px
        fill = float(cut.alpha.mean()) * cut.bgr.shape[1] / cut.bgr.shape[0]  # area = fill * height^2
        height = float(np.sqrt(target_px / fill))
        side = 1 if count % 4 < 2 else -1
        base = ((b[0] + b[2]) / 2 + side * (0.45 * (b[2] - b[0]) + 0.3 * height), float(b[3]) - 1)
        box = st.place_box(cut, base, height)
        area = float((box[2] - box[0]) * (box[3] - box[1])) * float(cut.alpha.mean())
        alert_type = "illegal_dumping" if is_large else "littering"
        who = f"GT person {tid - 100000}" if tid >= 100000 else f"track {tid}"
        ev = StagedEvent(f"litter{count}", "object", alert_type, zone_id, t, removed, removed is None, box,
                         name, np.asarray(b, np.float32), f"{name} ({area:.0f} px) at the feet of {who}")
        light = LightRamp(t - 20, t + 40, 0.75) if count == 3 else None
        out.append(Scenario(f"litter{count}-{clip}-{zone_id}", clip, "litter", zone_id,
                            t + wait + 45, (ev,), light=light, config=timers))
        count += 1
    out.append(Scenario("litter-light-square-road", "square", "litter", "road", learn + 90,
                        light=LightRamp(learn + 5, learn + 65, 0.65), config=timers))
    return out


def bin_scenarios(quick: bool) -> list[Scenario]:
    """Bins: a staged real container with real rubbish above its rim or around it, or removed."""
    timers = QUICK_TIMERS["bin_overflow"] if quick else STAGED_TIMERS["bin_overflow"]
    learn, wait = _timing("bin_overflow", timers)
    onset = learn + (5 if quick else 15)
    dur = onset + wait + (15 if quick else 40)
    out: list[Scenario] = []
    bins = st.STAGED_BINS
    plans = [  # clip, object, where, removed early?, light?
        ("square", "bags_black", "around_right", False, None),
        ("square", "bag_white", "above_rim", False, None),
        ("square", None, "bin_removed", False, None),
        ("hall", "box", "around_left", False, None),
        ("hall", "bags_black", "above_rim", False, None),
        ("hall", None, "bin_removed", False, None),
        ("square", "box", "around_left", False, LightRamp(onset - 30, onset + 60, 0.7)),
        ("square", "bag_white", "around_right", True, None),
        ("hall", "bags_black", "around_right", True, None),
    ]
    if quick:
        plans = [("parking", "bags_black", "around_right", False, None)]
    for idx, (clip, name, where, early, light) in enumerate(plans):
        b = bins[clip]
        bw, bh = b[2] - b[0], b[3] - b[1]
        removed = onset + 0.4 * wait if early else None
        if where == "bin_removed":
            ev = StagedEvent(f"bin{idx}", "bin_removed", "bin_overflow", "bin_staged", onset, None, True, b,
                             "container", note="staged bin taken away")
        else:
            if where == "above_rim":
                h = 0.55 * bh
                box = st.place_box(st.cutout(name), ((b[0] + b[2]) / 2, b[1] + 0.25 * h), h)
            else:
                h = 0.6 * bh
                side = 1 if where == "around_right" else -1
                x = (b[0] + b[2]) / 2 + side * (bw / 2 + 0.45 * h * 1.2)
                box = st.place_box(st.cutout(name), (x, b[3] - 2), h)
            ev = StagedEvent(f"bin{idx}", "object", "bin_overflow", "bin_staged", onset, removed,
                             removed is None, box, name, note=f"{name} {where}")
        out.append(Scenario(f"bin{idx}-{clip}-{where}{'-removed' if early else ''}", clip, "bin_overflow",
                            "bin_staged", dur, (ev,), around_zone_id="around_staged",
                            static_objects=(("container", b),), light=light, config=timers))
    if not quick:
        out.append(Scenario("bin-light-square", "square", "bin_overflow", "bin_staged", dur,
                            around_zone_id="around_staged", static_objects=(("container", bins["square"]),),
                            light=LightRamp(learn + 5, learn + 95, 0.65), config=timers))
    return out


def flood_scenarios(quick: bool) -> list[Scenario]:
    """Flooding: a water sheet rising over real road, lawn, pavement, floor and parking zones."""
    timers = QUICK_TIMERS["flooding"] if quick else STAGED_TIMERS["flooding"]
    learn, wait = _timing("flooding", timers)
    onset = learn + (3 if quick else 10)
    rise = 5.0 if quick else 30.0
    out: list[Scenario] = []
    plans = [  # clip, zone, origin (low point), max level, recede (s after onset) or None, expect
        ("square", "road", (520, 330), 1.0, None, True),
        ("parking", "lot_west", (200, 380), 1.0, None, True),
        ("hall", "floor", (384, 420), 1.0, None, True),
        ("square", "lawn", (300, 560), 1.0, None, True),
        ("parking", "lot_east", (600, 60), 1.0, None, True),
        ("square", "pavement", (100, 190), 1.0, None, True),
        ("square", "road", (200, 225), 0.08, None, False),  # a small puddle (a few % of the zone)
        ("parking", "lot_west", (100, 200), 1.0, 0.5 * rise, False),  # drains long before the wait
    ]
    if quick:
        plans = plans[1:2]
    for idx, (clip, zone_id, origin, level, recede, expect) in enumerate(plans):
        c = st.load_clip(clip)
        zone_px = st.ZONES[clip][zone_id].polygon_px(c.resolution_wh)
        flood = st.StagedFlood(c.resolution_wh, zone_px, origin, onset, onset + rise,
                               recede_s=onset + recede if recede else float("inf"),
                               dry_s=onset + recede + 10 if recede else float("inf"), max_level=level, seed=idx)
        xyxy = _box([zone_px[:, 0].min(), zone_px[:, 1].min(), zone_px[:, 0].max(), zone_px[:, 1].max()])
        ev = StagedEvent(f"flood{idx}", "flood", "flooding", zone_id, onset, onset + recede if recede else None,
                         expect, xyxy, note=f"level {level}, peak share {flood.share(onset + min(rise, recede or rise)):.2f}"
                         + (f", dry {recede + 10:.0f} s after onset" if recede else ""))
        light = LightRamp(onset - 10, onset + 50, 0.8) if idx == 3 else None
        out.append(Scenario(f"flood{idx}-{clip}-{zone_id}", clip, "flooding", zone_id,
                            onset + rise + wait + (10 if quick else 40), (ev,), light=light, flood=flood,
                            config=timers))
    if not quick:
        out.append(Scenario("flood-light-parking", "parking", "flooding", "lot_west", learn + 100,
                            light=LightRamp(learn + 5, learn + 65, 0.65), config=timers))
    return out


# --------------------------------------------------------------------------- scoring


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def score(sc: Scenario, started: list) -> dict:
    """Match ``started`` alerts to ``sc.events``; return per-type TP/FP/FN counts and delays."""
    res = {t: {"tp": 0, "fp": 0, "fn": 0, "delays": [], "wrong_type": 0} for t in ALERT_TYPES}
    matched: set[str] = set()
    zones = {sc.zone_id, sc.around_zone_id}
    for e in started:
        hit = None
        for lab in sc.events:
            if e.zone_id in zones and lab.zone_id in zones and e.time_s >= lab.onset_s and \
                    any(_overlaps(box, lab.xyxy) for box in e.xyxy):
                if lab.alert_type == e.alert_type:
                    hit = lab
                    break
                res[e.alert_type]["wrong_type"] += 1
        if hit is not None and hit.expect_alert and hit.event_id not in matched:
            matched.add(hit.event_id)
            res[e.alert_type]["tp"] += 1
            res[e.alert_type]["delays"].append(float(e.time_s - hit.onset_s))
        else:
            res[e.alert_type]["fp"] += 1
    for lab in sc.events:
        if lab.expect_alert and lab.event_id not in matched:
            res[lab.alert_type]["fn"] += 1
    return res


def _merge(into: dict, res: dict) -> None:
    for t, r in res.items():
        for k, v in r.items():
            into[t][k] = into[t][k] + v


# --------------------------------------------------------------------------- main


def event_free_scenarios(kinds: list[str], quick: bool) -> list[tuple[Scenario, int]]:
    """Event-free runs: (scenario, frames of one plain pass) per detector kind, clip and zone."""
    out = []
    for clip in (["parking"] if quick else list(st.CLIPS)):
        n = len(st.load_clip(clip).images)
        n_pp = n if quick else PINGPONG_PASSES * (n - 1) + 1
        for kind in (kinds[:1] if quick else kinds):
            for zone_id, around in st.EVENT_FREE_ZONES[kind].get(clip, [])[: 1 if quick else None]:
                out.append((Scenario(f"free-{kind}-{clip}-{zone_id}", clip, kind, zone_id, n_pp / ANALYSIS_FPS,
                                     around_zone_id=around, config={"scene.learn_s": PLAIN_LEARN_S}), n))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="a small subset (smoke test)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes for the detector runs (default 2; --quick runs in one)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    for path in list(st.CLIPS.values()) + [st.YOLOX_PATH]:
        if not path.exists():
            print(f"{path} is absent: set BAQYLAU_SHARED", file=sys.stderr)
            return 2
    wall0 = time.perf_counter()
    kinds = available_kinds()
    cpu = {k: [0.0, 0] for k in ("bin_overflow", "litter", "flooding")}

    # YOLOX once per clip frame (cached), timed
    t0 = time.perf_counter()
    n_det = sum(len(st.clip_detections(c)) for c in (["parking"] if args.quick else st.CLIPS))
    yolox_ms = 1000 * (time.perf_counter() - t0) / max(n_det, 1)

    builders = {"litter": litter_scenarios, "bin_overflow": bin_scenarios, "flooding": flood_scenarios}
    free_runs = event_free_scenarios(kinds, args.quick)
    staged_runs = [sc for kind in kinds for sc in builders[kind](args.quick)]
    jobs = [sc for sc, _ in free_runs] + staged_runs
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].n_frames)  # longest first
    outputs = run_all([jobs[i] for i in order], 1 if args.quick else args.workers)
    results = [None] * len(jobs)
    for i, out in zip(order, outputs):
        results[i] = out
    for sc, (_, spent, frames) in zip(jobs, results):
        cpu[sc.detector][0] += spent
        cpu[sc.detector][1] += frames

    free = {t: {"alerts_plain": 0, "hours_plain": 0.0, "alerts_pingpong": 0, "hours_pingpong": 0.0,
                "alerts": []} for t in ALERT_TYPES}
    counted: set[tuple[str, str]] = set()
    for (sc, n_plain), (alerts, _, _) in zip(free_runs, results[:len(free_runs)]):
        plain_s = n_plain / ANALYSIS_FPS
        for a in alerts:
            free[a.alert_type]["alerts_pingpong"] += 1
            free[a.alert_type]["alerts_plain"] += a.time_s < plain_s
            free[a.alert_type]["alerts"].append(f"{sc.clip}: {a}{' (plain pass)' if a.time_s < plain_s else ''}")
        if (sc.detector, sc.clip) not in counted:  # camera-hours once per camera
            counted.add((sc.detector, sc.clip))
            for t in KIND_TYPES[sc.detector]:
                free[t]["hours_plain"] += plain_s / 3600
                free[t]["hours_pingpong"] += sc.duration_s / 3600

    staged = {t: {"tp": 0, "fp": 0, "fn": 0, "delays": [], "wrong_type": 0} for t in ALERT_TYPES}
    labels = {t: {"positives": 0, "negatives": 0} for t in ALERT_TYPES}
    rows = []
    for sc, (alerts, spent, frames) in zip(staged_runs, results[len(free_runs):]):
        res = score(sc, alerts)
        _merge(staged, res)
        for lab in sc.events:
            labels[lab.alert_type]["positives" if lab.expect_alert else "negatives"] += 1
        rows.append({"scenario": sc.scenario_id, "duration_s": round(sc.duration_s, 1),
                     "labels": [f"{e.alert_type} {'+' if e.expect_alert else '-'} onset {e.onset_s:.1f}s"
                                f"{f' removed {e.removed_s:.1f}s' if e.removed_s else ''}: {e.note}"
                                for e in sc.events],
                     "light": dataclasses.asdict(sc.light) if sc.light else None,
                     "alerts": [str(a) for a in alerts],
                     "tp": sum(r["tp"] for r in res.values()), "fp": sum(r["fp"] for r in res.values()),
                     "fn": sum(r["fn"] for r in res.values())})

    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "analysis_fps": ANALYSIS_FPS,
        "detectors_available": kinds,
        "timers": {"staged": QUICK_TIMERS if args.quick else STAGED_TIMERS,
                   "staged_note": "detector defaults except these; clips played forward/backward (ping-pong)",
                   "event_free": f"defaults except scene.learn_s = {PLAIN_LEARN_S} s; plain = first pass "
                                 f"of each clip, ping-pong = {1 if args.quick else PINGPONG_PASSES} passes"},
    }
    for t in ALERT_TYPES:
        s, f = staged[t], free[t]
        tp, fp, fn = s["tp"], s["fp"], s["fn"]
        result[t] = {
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None,
            "median_delay_s": round(statistics.median(s["delays"]), 1) if s["delays"] else None,
            "false_alarms_per_camera_hour": round(f["alerts_plain"] / f["hours_plain"], 1) if f["hours_plain"] else None,
            "false_alarms": f["alerts_plain"],
            "camera_hours": round(f["hours_plain"], 4),
            "false_alarms_per_camera_hour_pingpong":
                round(f["alerts_pingpong"] / f["hours_pingpong"], 1) if f["hours_pingpong"] else None,
            "false_alarms_pingpong": f["alerts_pingpong"],
            "camera_hours_pingpong": round(f["hours_pingpong"], 4),
            "tp": tp, "fp": fp, "fn": fn, "wrong_type": s["wrong_type"], **labels[t],
            "delays_s": [round(d, 1) for d in s["delays"]],
            "false_alarm_list": f["alerts"],
        }
    total_s, total_n = sum(v[0] for v in cpu.values()), sum(v[1] for v in cpu.values())
    result["cpu_ms_per_frame_per_zone"] = round(1000 * total_s / total_n, 2) if total_n else None
    result["cpu_ms_per_frame_per_zone_by_detector"] = {
        k: round(1000 * v[0] / v[1], 2) for k, v in cpu.items() if v[1]}
    result["yolox_ms_per_frame"] = round(yolox_ms, 1)
    result["scenarios"] = rows
    result["wall_s"] = round(time.perf_counter() - wall0, 1)

    if args.json:
        print(json.dumps(result))
        return 0
    print(f"# scene benchmark {result['date']}{' (quick)' if args.quick else ''}: {result['machine']}, "
          f"{ANALYSIS_FPS:g} fps, detectors {', '.join(kinds)}")
    print("| type | precision | recall | median delay s | staged +/- | FA/cam-h plain (n, h) | FA/cam-h ping-pong |")
    print("|---|---|---|---|---|---|---|")
    for t in ALERT_TYPES:
        r = result[t]
        print(f"| {t} | {r['precision']} | {r['recall']} | {r['median_delay_s']} | {r['positives']}/{r['negatives']} "
              f"| {r['false_alarms_per_camera_hour']} ({r['false_alarms']}, {r['camera_hours']}) "
              f"| {r['false_alarms_per_camera_hour_pingpong']} ({r['false_alarms_pingpong']}, "
              f"{r['camera_hours_pingpong']}) |")
    print(f"\ncpu ms per frame per zone: {result['cpu_ms_per_frame_per_zone']} "
          f"{result['cpu_ms_per_frame_per_zone_by_detector']}; YOLOX {result['yolox_ms_per_frame']} ms/frame; "
          f"wall {result['wall_s']} s")
    for row in rows:
        print(f"- {row['scenario']}: tp {row['tp']} fp {row['fp']} fn {row['fn']}; {row['labels']}; {row['alerts']}")
    for t in ALERT_TYPES:
        for a in result[t]["false_alarm_list"]:
            print(f"- false alarm {t}: {a}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
