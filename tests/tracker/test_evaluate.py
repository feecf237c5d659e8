"""MOT metrics (py-motmetrics + TrackEval HOTA) on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import SHARED, need
from tracker import read_mot
from tracker.evaluate import evaluate_mot

TUD = SHARED / "data" / "mot" / "motmetrics-1.4.0" / "TUD-Campus"


def rows(*boxes: tuple[float, ...]) -> np.ndarray:
    """MOT rows ``id, left, top, w, h, conf``."""
    return np.array(boxes, np.float64).reshape(-1, 6)


def test_tud_campus_matches_motmetrics_reference() -> None:
    """py-motmetrics' own TUD-Campus example (its README: Rcll 58.2, Prcn 94.1, MOTA 52.6,
    IDF1 55.8, 7 switches); HOTA agrees with the independent ``trackers.eval`` port."""
    gt, hyp = read_mot(need(TUD / "gt.txt")), read_mot(need(TUD / "test.txt"))
    m = evaluate_mot(gt, hyp)
    assert m["num_frames"] == 71 and m["num_gt"] == 359 and m["num_hyp"] == 222
    assert m["det_recall"] == pytest.approx(0.582, abs=1e-3)
    assert m["det_precision"] == pytest.approx(0.941, abs=1e-3)
    assert m["mota"] == pytest.approx(0.526, abs=1e-3)
    assert m["idf1"] == pytest.approx(0.558, abs=1e-3)
    assert m["id_switches"] == 7

    from trackers.eval import compute_hota_metrics

    from tracker.evaluate import box_iou_xywh
    frames = sorted(set(gt) | set(hyp))
    empty = np.zeros((0, 6))
    gts = [gt.get(f, empty) for f in frames]
    hyps = [hyp.get(f, empty) for f in frames]
    gid = {v: i for i, v in enumerate(np.unique(np.concatenate(gts)[:, 0]))}
    hid = {v: i for i, v in enumerate(np.unique(np.concatenate(hyps)[:, 0]))}
    other = compute_hota_metrics(
        [np.array([gid[v] for v in g[:, 0]], int) for g in gts],
        [np.array([hid[v] for v in h[:, 0]], int) for h in hyps],
        [box_iou_xywh(g[:, 1:5], h[:, 1:5]) for g, h in zip(gts, hyps)])
    assert m["hota"] == pytest.approx(other["HOTA"], abs=1e-9)
    assert 0.3 < m["hota"] < 0.5


def test_perfect_and_empty() -> None:
    gt = {1: rows((1, 0, 0, 10, 20, 1), (2, 50, 0, 10, 20, 1)), 2: rows((1, 2, 0, 10, 20, 1))}
    m = evaluate_mot(gt, gt)
    assert (m["mota"], m["idf1"], m["hota"], m["det_recall"]) == (1.0, 1.0, 1.0, 1.0)
    m = evaluate_mot({}, {})
    assert (m["num_frames"], m["num_gt"], m["num_hyp"], m["id_switches"]) == (0, 0, 0, 0)
    assert math.isnan(m["mota"]) and math.isnan(m["hota"])
    m = evaluate_mot(gt, {})
    assert m["det_recall"] == 0.0 and m["hota"] == 0.0 and m["num_gt"] == 3


def test_ignored_ground_truth() -> None:
    """A box on an ignore entry (conf 0) is neither a hit nor a false positive."""
    gt = {1: rows((1, 0, 0, 10, 20, 1), (2, 100, 0, 10, 20, 0))}
    hyp = {1: rows((7, 0, 0, 10, 20, 1), (8, 101, 0, 10, 20, 1))}
    m = evaluate_mot(gt, hyp)
    assert (m["num_gt"], m["num_hyp"]) == (1, 1)
    assert m["det_precision"] == 1.0 and m["mota"] == 1.0
    hyp_far = {1: rows((7, 0, 0, 10, 20, 1), (8, 300, 0, 10, 20, 1))}
    assert evaluate_mot(gt, hyp_far)["det_precision"] == 0.5  # not on the ignore box: an FP
