"""Tracking quality against MOTChallenge ground truth: CLEAR MOT, IDF1 and HOTA.

Metric code comes from maintained libraries, imported lazily because they are test extras:

- py-motmetrics (MIT): MOTA (Bernardin & Stiefelhagen, "Evaluating Multiple Object Tracking
  Performance: The CLEAR MOT Metrics", 2008), IDF1 (Ristani et al., ECCV-W 2016), recall and
  precision at IoU >= 0.5.
- TrackEval (MIT): HOTA (Luiten et al., "HOTA: A Higher Order Metric for Evaluating
  Multi-Object Tracking", IJCV 2021), averaged over IoU thresholds 0.05-0.95.

Ignored ground truth (``conf == 0``) follows TrackEval's MOTChallenge preprocessing: in each
frame, hypothesis boxes matched (Hungarian on IoU, IoU >= 0.5) to an ignored box are removed,
then the ignored boxes are removed, so a tracker is neither rewarded nor punished for them.
Both libraries then see the same filtered boxes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

_EPS = np.finfo(float).eps


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes given as ``left, top, width, height``.

    Args:
        a: `(N, 4)` float boxes in pixels.
        b: `(M, 4)` float boxes in pixels.

    Returns:
        `(N, M)` float64 IoU in [0, 1].
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = np.prod(a[:, 2:], axis=1)[:, None] + np.prod(b[:, 2:], axis=1)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _drop_ignored(gt: np.ndarray, hyp: np.ndarray,
                  iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Remove ignored GT rows (conf 0) and the hypothesis rows matched to them."""
    ignored = gt[:, 5] == 0
    if ignored.any() and len(hyp):
        score = box_iou_xywh(gt[:, 1:5], hyp[:, 1:5])
        score[score < iou_threshold - _EPS] = 0
        rows, cols = linear_sum_assignment(-score)
        matched = score[rows, cols] > _EPS
        drop = cols[matched & ignored[rows]]
        hyp = np.delete(hyp, drop, axis=0)
    return gt[~ignored], hyp


def evaluate_mot(gt: Mapping[int, np.ndarray], hyp: Mapping[int, np.ndarray],
                 frames: Iterable[int] | None = None,
                 iou_threshold: float = 0.5) -> dict[str, float]:
    """Score tracker output against ground truth for one sequence.

    Args:
        gt: Frame number -> `(N, 6)` rows ``id, bb_left, bb_top, bb_width, bb_height, conf``
            (as from :func:`tracker.mot.read_mot`); rows with conf 0 are ignore entries.
        hyp: Frame number -> `(M, 6)` rows of the tracker, same columns; every row counts
            (its conf is not used).
        frames: Frames to score; default the union of the frames in ``gt`` and ``hyp``. A
            frame absent from a mapping has no boxes there.
        iou_threshold: IoU for a hypothesis to match a GT box in the CLEAR MOT / IDF1 /
            recall / precision figures and for ignore-region matching (0.5 is standard).
            HOTA integrates over its own thresholds.

    Returns:
        ``det_recall``, ``det_precision`` (matched boxes over GT boxes / over hypothesis
        boxes), ``mota``, ``idf1``, ``hota``, ``deta``, ``assa`` as floats (NaN where
        undefined, e.g. no GT at all), and the counts ``num_frames``, ``num_gt``,
        ``num_hyp`` (after removing ignored rows), ``id_switches``, ``gt_ids``, ``hyp_ids``.

    Raises:
        ImportError: When motmetrics or trackeval is not installed (``pip install .[test]``).
    """
    import motmetrics as mm
    from trackeval.metrics import HOTA

    frame_list = sorted(set(gt) | set(hyp)) if frames is None else sorted(frames)
    empty = np.zeros((0, 6))
    acc = mm.MOTAccumulator(auto_id=False)
    per_frame: list[tuple[np.ndarray, np.ndarray]] = []
    for f in frame_list:
        g, h = _drop_ignored(np.asarray(gt.get(f, empty)).reshape(-1, 6),
                             np.asarray(hyp.get(f, empty)).reshape(-1, 6), iou_threshold)
        iou = box_iou_xywh(g[:, 1:5], h[:, 1:5])
        # Same distance as mm.distances.iou_matrix(max_iou=1 - iou_threshold), which calls the
        # np.asfarray removed in NumPy 2 (motmetrics 1.4.0).
        dist = np.where(iou >= iou_threshold - _EPS, 1.0 - iou, np.nan)
        acc.update(g[:, 0].astype(int).tolist(), h[:, 0].astype(int).tolist(), dist, frameid=f)
        per_frame.append((g, h))

    num_gt = sum(len(g) for g, _ in per_frame)
    num_hyp = sum(len(h) for _, h in per_frame)
    gt_ids = np.unique(np.concatenate([g[:, 0] for g, _ in per_frame] or [[]]))
    hyp_ids = np.unique(np.concatenate([h[:, 0] for _, h in per_frame] or [[]]))
    out: dict[str, float] = {
        "num_frames": len(frame_list), "num_gt": num_gt, "num_hyp": num_hyp,
        "gt_ids": len(gt_ids), "hyp_ids": len(hyp_ids), "id_switches": 0,
        "det_recall": math.nan, "det_precision": math.nan, "mota": math.nan,
        "idf1": math.nan, "hota": math.nan, "deta": math.nan, "assa": math.nan,
    }
    if num_gt == 0 and num_hyp == 0:
        return out

    summary = mm.metrics.create().compute(
        acc, metrics=["recall", "precision", "mota", "idf1", "num_switches"], name="seq")
    row = summary.loc["seq"]
    out.update(det_recall=float(row["recall"]), det_precision=float(row["precision"]),
               mota=float(row["mota"]), idf1=float(row["idf1"]),
               id_switches=int(row["num_switches"]))

    # HOTA wants ids renumbered 0..n-1 and IoU similarity per frame (TrackEval's data layout).
    gt_index = {v: i for i, v in enumerate(gt_ids)}
    hyp_index = {v: i for i, v in enumerate(hyp_ids)}
    data = {
        "num_gt_dets": num_gt, "num_tracker_dets": num_hyp,
        "num_gt_ids": len(gt_ids), "num_tracker_ids": len(hyp_ids),
        "gt_ids": [np.array([gt_index[v] for v in g[:, 0]], dtype=int) for g, _ in per_frame],
        "tracker_ids": [np.array([hyp_index[v] for v in h[:, 0]], dtype=int)
                        for _, h in per_frame],
        "similarity_scores": [box_iou_xywh(g[:, 1:5], h[:, 1:5]) for g, h in per_frame],
    }
    hota = HOTA().eval_sequence(data)
    out.update(hota=float(np.mean(hota["HOTA"])), deta=float(np.mean(hota["DetA"])),
               assa=float(np.mean(hota["AssA"])))
    return out
