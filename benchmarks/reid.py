"""Re-identification quality of each embedding on real labelled people: PETS09-S2L1 in vtest.avi.

Crops are cut at run time from ``../shared/data/videos/opencv-samples/vtest.avi`` with the
MOTChallenge ground truth of frames 1-400 (``../shared/data/mot/PETS09-S2L1/``; GT frame n is
video frame n-1) and are never written to disk. Protocol:

* every ``--step``-th frame (0.5 s at 10 fps by default), each active GT box (conf flag 1) that
  is whole (not cut by the frame edge) and at most ``MAX_COVERED`` covered by other GT boxes;
* queries: the crops of each identity in its first ``--query-window-s`` seconds;
* gallery of a query: every crop, of any identity, at least ``--gap-s`` (10 s) after the query,
  so the same pass cannot be matched a few frames later; queries whose identity has no crop in
  their gallery are left out and counted;
* cosine similarity, ranking, rank-1 / rank-5 (CMC) and mean average precision (Zheng et al.,
  "Scalable Person Re-identification: A Benchmark", ICCV 2015, Market-1501 protocol).

Embeddings: colour histogram (weights-free), MobileNetV2 ImageNet (``mobilenetv2-embedding``,
the permissive default) and OSNet x0.25 MSMT17 (``eval-only``: evaluation only, never a default).

Watchlist thresholds (``--thresholds``): on the same crops, the cosine score of every
same-identity pair at least ``--gap-s`` apart (genuine) and of every different-identity pair
(impostor, any time), per embedding; the threshold is the lowest score (rounded up to 0.001)
whose false-match rate per comparison (share of impostor pairs scoring >= it) is at most
``--fmr`` (1 %), with the genuine hit rate (share of genuine pairs scoring >= it) at that
threshold. These are the defaults of :data:`search.watchlist.DEFAULT_THRESHOLDS`.

People labelled by eye (``tests/search/reid_labels_by_eye.json``, key ``by_eye`` of the JSON
output, left out with ``--no-by-eye``): tracker boxes of the same person grouped by looking at
contact sheets, in vtest.avi frames 400-794 (PETS09 people seen again after the ground truth ends,
plus two newcomers) and in ``intel-sample-videos/one-by-one-person-detection.mp4`` (six people, one
at a time, nobody comes back). Same protocol per clip, with one change for vtest: the queries are
the ground-truth crops above (each identity's first 2 s) and the gallery is only the by-eye crops
(frames 400+), so a query must find its person among everyone seen 10 s or more later; the
newcomers' first 2 s are queries too. In the one-by-one clip the positives are the same standing
person 10 s later and the distractors the five others.

Usage: ``.venv/bin/python benchmarks/reid.py [--json] [--no-by-eye] [--thresholds [--fmr 0.01]]``;
``BAQYLAU_SHARED`` overrides ``../shared``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from search.embed import (  # noqa: E402
    ColourHistogramEmbedder, Embedder, ImagenetEmbedder, OnnxReidEmbedder)

SHARED = Path(os.environ.get("BAQYLAU_SHARED", REPO.parent / "shared")).resolve()
VTEST = SHARED / "data" / "videos" / "opencv-samples" / "vtest.avi"
PETS_GT = SHARED / "data" / "mot" / "PETS09-S2L1" / "gt-frames-0001-0400.txt"
MOBILENET = SHARED / "models" / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx"
OSNET_EVAL_ONLY = SHARED / "models" / "eval-only" / "osnet-x0_25-msmt17" / "osnet_x0_25_msmt17.onnx"
BY_EYE_LABELS = REPO / "tests" / "search" / "reid_labels_by_eye.json"
#: Identity numbers of by-eye people who are not in the PETS09 ground truth start here.
NEW_IDENTITY_BASE = 1000
FPS = 10.0
#: Largest share of a box covered by other GT boxes for its crop to be used.
MAX_COVERED = 0.3
#: Distance in pixels from the frame border under which a box counts as cut.
EDGE_MARGIN_PX = 2.0


@dataclass(frozen=True)
class CropSet:
    """Crops with their identity and time.

    Attributes:
        crops: List of `(h, w, 3)` uint8 BGR crops.
        ids: `(N,)` int64 ground-truth identities.
        time_s: `(N,)` float64 stream time of each crop's frame (video frame index / 10 fps).
    """

    crops: list[np.ndarray]
    ids: np.ndarray
    time_s: np.ndarray


def covered_share(box: np.ndarray, others: np.ndarray) -> float:
    """Share of ``box`` `(4,)` xyxy covered by the union of ``others`` `(M, 4)` xyxy."""
    x0, y0, x1, y1 = np.round(box).astype(int)
    mask = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), dtype=bool)
    for ox0, oy0, ox1, oy1 in np.round(others).astype(int):
        mask[max(oy0 - y0, 0):max(oy1 - y0, 0), max(ox0 - x0, 0):max(ox1 - x0, 0)] = True
    return float(mask.mean())


def load_crops(step: int = 5, video: Path = VTEST, gt_path: Path = PETS_GT) -> CropSet:
    """Decode the first 400 frames of vtest.avi and cut the usable GT boxes of every ``step``-th.

    Raises:
        FileNotFoundError: When the video or the GT file is absent.
        RuntimeError: When the video cannot be decoded.
    """
    for path in (video, gt_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is absent (../shared not laid out; set BAQYLAU_SHARED)")
    gt = np.loadtxt(gt_path, delimiter=",", ndmin=2)
    gt = gt[gt[:, 6] == 1]  # conf flag 0 = ignored in evaluation
    last_frame = int(gt[:, 0].max())
    capture = cv2.VideoCapture(str(video))
    crops, ids, times = [], [], []
    try:
        for frame_index in range(last_frame):
            ok, image = capture.read()
            if not ok:
                raise RuntimeError(f"{video}: could not decode frame {frame_index}")
            if frame_index % step:
                continue
            rows = gt[gt[:, 0] == frame_index + 1]
            boxes = np.column_stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4],
                                     rows[:, 3] + rows[:, 5]])
            img_h, img_w = image.shape[:2]
            for i, box in enumerate(boxes):
                if (box[0] < EDGE_MARGIN_PX or box[1] < EDGE_MARGIN_PX
                        or box[2] > img_w - EDGE_MARGIN_PX or box[3] > img_h - EDGE_MARGIN_PX):
                    continue
                if covered_share(box, np.delete(boxes, i, axis=0)) > MAX_COVERED:
                    continue
                x0, y0, x1, y1 = np.round(box).astype(int)
                crops.append(image[y0:y1, x0:x1].copy())
                ids.append(int(rows[i, 1]))
                times.append(frame_index / FPS)
    finally:
        capture.release()
    return CropSet(crops, np.asarray(ids, dtype=np.int64), np.asarray(times, dtype=np.float64))


def _rank(features: np.ndarray, data: CropSet, in_gallery: np.ndarray, query_window_s: float,
          gap_s: float) -> tuple[list[int], list[bool], list[bool], list[float], int]:
    """Rank the gallery of every query (see the module docstring).

    Args:
        features: `(N, D)` float32 L2-normalised embeddings of ``data.crops``.
        data: The crops' identities and times.
        in_gallery: `(N,)` bool, which crops may be in a gallery.
        query_window_s: Queries are each identity's crops in its first seconds, s.
        gap_s: Least time from a query to its gallery crops, s.

    Returns:
        ``(query_ids, rank1, rank5, average_precisions, skipped)``: the identity of every crop in a
        query window (with or without a positive), the per-query hits and APs of the queries
        that have a positive, and how many had none.
    """
    first_seen = {int(i): float(data.time_s[data.ids == i].min()) for i in np.unique(data.ids)}
    similarity = features @ features.T
    query_ids, rank1, rank5, average_precisions, skipped = [], [], [], [], 0
    for q in range(len(data.ids)):
        if data.time_s[q] > first_seen[int(data.ids[q])] + query_window_s:
            continue
        query_ids.append(int(data.ids[q]))
        gallery = np.flatnonzero(in_gallery & (data.time_s >= data.time_s[q] + gap_s - 1e-9))
        matches = data.ids[gallery] == data.ids[q]
        if not matches.any():
            skipped += 1
            continue
        order = np.argsort(-similarity[q, gallery], kind="stable")
        hits = matches[order]
        rank1.append(bool(hits[0]))
        rank5.append(bool(hits[:5].any()))
        positions = np.flatnonzero(hits) + 1
        average_precisions.append(float(np.mean(np.arange(1, len(positions) + 1) / positions)))
    return query_ids, rank1, rank5, average_precisions, skipped


def evaluate(features: np.ndarray, data: CropSet, query_window_s: float = 2.0,
             gap_s: float = 10.0) -> dict[str, float]:
    """Rank-1, rank-5 and mAP of L2-normalised ``features`` `(N, D)` under the protocol above."""
    query_ids, rank1, rank5, average_precisions, skipped = _rank(
        features, data, np.ones(len(data.ids), dtype=bool), query_window_s, gap_s)
    return {"rank1": float(np.mean(rank1)), "rank5": float(np.mean(rank5)),
            "mAP": float(np.mean(average_precisions)), "queries": len(rank1),
            "queries_without_positive": skipped, "identities": len(set(query_ids))}


def load_by_eye(clip: str, labels_path: Path = BY_EYE_LABELS, shared: Path = SHARED) -> CropSet:
    """Cut the crops of one clip of the by-eye labels (decoded with OpenCV, never stored).

    Args:
        clip: Key under ``clips`` in the labels file (``"vtest"``, ``"one_by_one"``).
        labels_path: The labels JSON; boxes are ``[frame_index, x1, y1, x2, y2]`` full-frame pixels.
        shared: The ``../shared`` folder the clip's ``path`` is relative to.

    Returns:
        The crops; ``ids`` are the identity's ``pets09_gt_id`` when it has one, else
        :data:`NEW_IDENTITY_BASE` + its position in the file; ``time_s`` = frame index / fps.

    Raises:
        FileNotFoundError: When the labels file or the clip is absent.
        ValueError: When the clip's sha256 differs from the one labelled.
        RuntimeError: When a labelled frame cannot be decoded.
    """
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path} is absent")
    spec = json.loads(labels_path.read_text(encoding="utf-8"))["clips"][clip]
    video = shared / spec["path"]
    if not video.is_file():
        raise FileNotFoundError(f"{video} is absent (../shared not laid out; set BAQYLAU_SHARED)")
    digest = hashlib.sha256(video.read_bytes()).hexdigest()
    if digest != spec["sha256"]:
        raise ValueError(f"{video}: sha256 {digest} is not the labelled clip's {spec['sha256']}")
    wanted: dict[int, list[tuple[int, np.ndarray]]] = {}
    for position, person in enumerate(spec["identities"].values()):
        identity = person.get("pets09_gt_id", NEW_IDENTITY_BASE + position)
        for frame_index, *box in person["boxes"]:
            wanted.setdefault(int(frame_index), []).append((identity, np.asarray(box)))
    crops, ids, times = [], [], []
    capture = cv2.VideoCapture(str(video))
    try:
        for frame_index in range(max(wanted) + 1):
            ok, image = capture.read()
            if not ok:
                raise RuntimeError(f"{video}: could not decode frame {frame_index}")
            for identity, box in wanted.get(frame_index, ()):
                x0, y0, x1, y1 = np.round(box).astype(int)
                crops.append(image[max(y0, 0):y1, max(x0, 0):x1].copy())
                ids.append(identity)
                times.append(frame_index / float(spec["fps"]))
    finally:
        capture.release()
    return CropSet(crops, np.asarray(ids, dtype=np.int64), np.asarray(times, dtype=np.float64))


def evaluate_by_eye(features: np.ndarray, data: CropSet, in_gallery: np.ndarray,
                    query_window_s: float = 2.0, gap_s: float = 10.0) -> dict[str, float]:
    """:func:`evaluate` with the gallery limited to ``in_gallery`` `(N,)` bool crops.

    Returns:
        rank-1, rank-5, mAP, ``queries`` (with a positive), ``queries_without_positive``,
        ``identities`` (with a query crop), ``identities_evaluated`` (with a query that has a
        positive) and ``gallery`` (crops that may be in a gallery).
    """
    query_ids, rank1, rank5, average_precisions, skipped = _rank(
        features, data, in_gallery, query_window_s, gap_s)
    evaluated = {int(i) for i in np.unique(data.ids) if np.any(
        in_gallery & (data.ids == i)
        & (data.time_s >= data.time_s[data.ids == i].min() + gap_s - 1e-9))}
    return {"rank1": float(np.mean(rank1)), "rank5": float(np.mean(rank5)),
            "mAP": float(np.mean(average_precisions)), "queries": len(rank1),
            "queries_without_positive": skipped, "identities": len(set(query_ids)),
            "identities_evaluated": len(evaluated & set(query_ids)),
            "gallery": int(np.count_nonzero(in_gallery))}


def embedders() -> dict[str, Embedder]:
    """The embeddings compared, by name; models absent from ``../shared`` are left out."""
    out: dict[str, Embedder] = {"colour_histogram": ColourHistogramEmbedder()}
    if MOBILENET.is_file():
        out["mobilenetv2"] = ImagenetEmbedder(MOBILENET)
    if OSNET_EVAL_ONLY.is_file():
        out["osnet_x0_25_eval_only"] = OnnxReidEmbedder(OSNET_EVAL_ONLY)
    return out


def run(step: int, query_window_s: float, gap_s: float, by_eye: bool = True) -> dict:
    """Cut the crops once and evaluate every embedding; returns the JSON-ready result.

    With ``by_eye``, also the by-eye clips (key ``by_eye``): for vtest the PETS09 crops above are
    the queries and only the by-eye crops of frames 400+ the gallery.
    """
    start = time.perf_counter()
    data = load_crops(step)
    result: dict = {"sequence": "PETS09-S2L1 (vtest.avi) frames 1-400, MOT15 GT",
                    "step_frames": step, "query_window_s": query_window_s, "gap_s": gap_s,
                    "crops": len(data.crops), "crop_seconds": round(time.perf_counter() - start, 2),
                    "embeddings": {}}
    extra: dict[str, tuple[CropSet, np.ndarray]] = {}
    if by_eye:
        later = load_by_eye("vtest")
        extra["vtest"] = (CropSet(data.crops + later.crops, np.concatenate([data.ids, later.ids]),
                                  np.concatenate([data.time_s, later.time_s])),
                          np.r_[np.zeros(len(data.crops), bool), np.ones(len(later.crops), bool)])
        alone = load_by_eye("one_by_one")
        extra["one_by_one"] = (alone, np.ones(len(alone.crops), bool))
        result["by_eye"] = {"labels": str(BY_EYE_LABELS.relative_to(REPO)), "clips": {
            clip: {"crops": int(np.count_nonzero(in_gallery)), "embeddings": {}}
            for clip, (_, in_gallery) in extra.items()}}
    for name, embedder in embedders().items():
        start = time.perf_counter()
        features = embedder.embed(data.crops)
        elapsed = time.perf_counter() - start
        metrics = evaluate(features, data, query_window_s, gap_s)
        metrics.update(model_id=embedder.model_id, dim=embedder.dim,
                       ms_per_crop=round(1000 * elapsed / max(len(data.crops), 1), 2))
        result["embeddings"][name] = metrics
        for clip, (crops, in_gallery) in extra.items():
            more = embedder.embed(crops.crops[len(data.crops):] if clip == "vtest" else crops.crops)
            both = np.concatenate([features, more]) if clip == "vtest" else more
            result["by_eye"]["clips"][clip]["embeddings"][name] = {
                **evaluate_by_eye(both, crops, in_gallery, query_window_s, gap_s),
                "model_id": embedder.model_id}
    return result


def pair_scores(features: np.ndarray, data: CropSet, gap_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of genuine and impostor crop pairs, each unordered pair once.

    Args:
        features: `(N, D)` float32 L2-normalised embeddings of ``data.crops``.
        data: The crops' identities and times.
        gap_s: Least time between the two crops of a genuine pair, s.

    Returns:
        ``(genuine, impostor)``: `(G,)` and `(I,)` float64 scores of same-identity pairs at least
        ``gap_s`` apart and of all different-identity pairs.
    """
    similarity = features.astype(np.float64) @ features.astype(np.float64).T
    upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
    same = data.ids[:, None] == data.ids[None, :]
    apart = np.abs(data.time_s[:, None] - data.time_s[None, :]) >= gap_s - 1e-9
    return similarity[upper & same & apart], similarity[upper & ~same]


def threshold_at_fmr(genuine: np.ndarray, impostor: np.ndarray, fmr: float = 0.01) -> dict[str, float]:
    """Lowest threshold (a multiple of 0.001) with at most ``fmr`` of ``impostor`` scores >= it.

    Returns:
        ``threshold``, the measured ``fmr`` and genuine ``hit_rate`` at it, and the pair counts.
    """
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(fmr * len(ordered)))  # impostor pairs that may score >= threshold
    boundary = ordered[allowed] if allowed < len(ordered) else -1.0
    threshold = np.ceil(boundary * 1000 + 1e-6) / 1000  # strictly above the first excluded score
    return {"threshold": round(float(threshold), 3), "fmr": float(np.mean(impostor >= threshold)),
            "hit_rate": float(np.mean(genuine >= threshold)), "genuine_pairs": int(len(genuine)),
            "impostor_pairs": int(len(impostor)),
            "genuine_median": round(float(np.median(genuine)), 4),
            "impostor_median": round(float(np.median(impostor)), 4)}


def run_thresholds(step: int, gap_s: float, fmr: float) -> dict:
    """Measure the watchlist threshold of every embedding; returns the JSON-ready result."""
    data = load_crops(step)
    result: dict = {"sequence": "PETS09-S2L1 (vtest.avi) frames 1-400, MOT15 GT",
                    "step_frames": step, "gap_s": gap_s, "target_fmr": fmr, "crops": len(data.crops),
                    "embeddings": {}}
    for name, embedder in embedders().items():
        genuine, impostor = pair_scores(embedder.embed(data.crops), data, gap_s)
        result["embeddings"][name] = {"model_id": embedder.model_id,
                                      **threshold_at_fmr(genuine, impostor, fmr)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--step", type=int, default=5, help="use every STEP-th frame (default 5)")
    parser.add_argument("--query-window-s", type=float, default=2.0,
                        help="queries: each identity's crops in its first seconds (default 2)")
    parser.add_argument("--gap-s", type=float, default=10.0,
                        help="gallery: crops at least this long after the query (default 10)")
    parser.add_argument("--no-by-eye", action="store_true",
                        help="leave out the people labelled by eye (tests/search/reid_labels_by_eye.json)")
    parser.add_argument("--thresholds", action="store_true",
                        help="measure the watchlist thresholds at --fmr instead of the ranking")
    parser.add_argument("--fmr", type=float, default=0.01,
                        help="false-match rate per comparison for --thresholds (default 0.01)")
    args = parser.parse_args(argv)
    try:
        if args.thresholds:
            result = run_thresholds(args.step, args.gap_s, args.fmr)
        else:
            result = run(args.step, args.query_window_s, args.gap_s, by_eye=not args.no_by_eye)
    except (FileNotFoundError, ValueError) as exc:
        print(f"reid benchmark: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    if args.thresholds:
        print(f"{result['sequence']}: {result['crops']} crops; genuine pairs >= {args.gap_s} s apart, "
              f"impostor pairs any time; threshold at false-match rate <= {args.fmr}")
        print(f"{'embedding':24s} {'thresh':>7s} {'FMR':>7s} {'hit':>7s} {'genuine':>8s} "
              f"{'impostor':>9s}  model_id")
        for name, m in result["embeddings"].items():
            print(f"{name:24s} {m['threshold']:7.3f} {m['fmr']:7.4f} {m['hit_rate']:7.3f} "
                  f"{m['genuine_pairs']:8d} {m['impostor_pairs']:9d}  {m['model_id']}")
        return 0
    print(f"{result['sequence']}: {result['crops']} crops, every {args.step}th frame; queries "
          f"in the first {args.query_window_s} s of each identity, gallery >= {args.gap_s} s later")
    print(f"{'embedding':24s} {'rank-1':>7s} {'rank-5':>7s} {'mAP':>7s} {'queries':>8s} "
          f"{'ms/crop':>8s}  model_id")
    for name, m in result["embeddings"].items():
        print(f"{name:24s} {m['rank1']:7.3f} {m['rank5']:7.3f} {m['mAP']:7.3f} {m['queries']:8d} "
              f"{m['ms_per_crop']:8.2f}  {m['model_id']}")
    for clip, section in result.get("by_eye", {}).get("clips", {}).items():
        print(f"\nby eye, {clip}: gallery {section['crops']} crops labelled by eye"
              + (" (queries: the GT crops above)" if clip == "vtest" else ""))
        print(f"{'embedding':24s} {'rank-1':>7s} {'rank-5':>7s} {'mAP':>7s} {'queries':>8s} "
              f"{'ids':>4s} {'no pos':>7s}")
        for name, m in section["embeddings"].items():
            print(f"{name:24s} {m['rank1']:7.3f} {m['rank5']:7.3f} {m['mAP']:7.3f} {m['queries']:8d} "
                  f"{m['identities_evaluated']:4d} {m['queries_without_positive']:7d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
