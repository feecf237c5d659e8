"""Re-ID regression gates: ``benchmarks/reid.py --json`` against stored metric tables.

PETS09-S2L1 in vtest.avi (crops cut at test time, never stored): queries are each identity's
first 2 s, the gallery everything at least 10 s later; rank-1, rank-5 and mAP per embedding may
not fall more than :data:`TOLERANCE` below ``reid_metrics_pets09.json`` (44 queries of 10 people:
one query is 0.023 of rank-1, so the tolerance allows about two).

People labelled by eye (``reid_labels_by_eye.json``): vtest.avi frames 400-794 as the gallery of
the PETS09 queries (35 queries with a positive, 7 people: one query is 0.029) and the one-by-one
clip (21 queries, 6 people: 0.048), against ``reid_metrics_by_eye.json`` with the same tolerance.

One benchmark run for both gates, about 40 s on 2 cores. ``BAQYLAU_UPDATE_METRICS=1`` rewrites
the tables after an intended change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import MODELS, PETS_GT, REPO, SHARED, VIDEOS, VTEST, need

TABLE = REPO / "tests" / "search" / "reid_metrics_pets09.json"
BY_EYE_TABLE = REPO / "tests" / "search" / "reid_metrics_by_eye.json"
ONE_BY_ONE = VIDEOS / "intel-sample-videos" / "one-by-one-person-detection.mp4"
EMBEDDINGS = ("colour_histogram", "mobilenetv2", "osnet_x0_25_eval_only")
METRICS = ("rank1", "rank5", "mAP")
#: Absolute amount by which a metric may be worse than the stored table.
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def benchmark() -> dict:
    """The JSON result of one ``benchmarks/reid.py`` run (by-eye part only when its clip is here)."""
    need(VTEST)
    need(PETS_GT)
    need(MODELS / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx")
    need(MODELS / "eval-only" / "osnet-x0_25-msmt17" / "osnet_x0_25_msmt17.onnx")
    command = [sys.executable, "benchmarks/reid.py", "--json"]
    if not ONE_BY_ONE.is_file():
        command.append("--no-by-eye")
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BAQYLAU_SHARED": str(SHARED)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def figures_of(embeddings: dict) -> dict[str, dict[str, float]]:
    """The gated figures (metrics rounded to 4 places, query count) of each embedding."""
    return {name: {k: round(embeddings[name][k], 4) for k in (*METRICS, "queries")}
            for name in EMBEDDINGS}


def regressions(figures: dict, stored: dict) -> list[str]:
    """One line per metric more than :data:`TOLERANCE` below ``stored``."""
    return [f"{name}.{key}: {figures[name][key]:.4f} < stored {stored[name][key]:.4f}"
            for name in EMBEDDINGS for key in METRICS
            if figures[name][key] < stored[name][key] - TOLERANCE]


def test_reid_metrics_do_not_regress(benchmark: dict) -> None:
    result = benchmark
    figures = figures_of(result["embeddings"])
    if os.environ.get("BAQYLAU_UPDATE_METRICS") == "1":
        TABLE.write_text(json.dumps({
            "sequence": result["sequence"],
            "protocol": {k: result[k] for k in ("step_frames", "query_window_s", "gap_s", "crops")},
            "model_ids": {n: result["embeddings"][n]["model_id"] for n in EMBEDDINGS},
            "tolerance": TOLERANCE,
            "metrics": figures,
        }, indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"{TABLE.name} rewritten: {figures}")
    stored = json.loads(TABLE.read_text(encoding="utf-8"))["metrics"]
    worse = regressions(figures, stored)
    assert not worse, f"re-ID regression on PETS09-S2L1: {worse} (now: {figures})"
    assert all(figures[n]["queries"] == stored[n]["queries"] for n in EMBEDDINGS), figures


def test_reid_metrics_by_eye_do_not_regress(benchmark: dict) -> None:
    need(ONE_BY_ONE)
    clips = benchmark["by_eye"]["clips"]
    figures = {clip: figures_of(section["embeddings"]) for clip, section in clips.items()}
    if os.environ.get("BAQYLAU_UPDATE_METRICS") == "1":
        BY_EYE_TABLE.write_text(json.dumps({
            "labels": benchmark["by_eye"]["labels"],
            "protocol": {**{k: benchmark[k] for k in ("step_frames", "query_window_s", "gap_s")},
                         "gallery_crops": {clip: clips[clip]["crops"] for clip in clips},
                         "identities_evaluated": {
                             clip: clips[clip]["embeddings"][EMBEDDINGS[0]]["identities_evaluated"]
                             for clip in clips}},
            "model_ids": {n: benchmark["embeddings"][n]["model_id"] for n in EMBEDDINGS},
            "tolerance": TOLERANCE,
            "metrics": figures,
        }, indent=2) + "\n", encoding="utf-8")
        pytest.skip(f"{BY_EYE_TABLE.name} rewritten: {figures}")
    stored = json.loads(BY_EYE_TABLE.read_text(encoding="utf-8"))["metrics"]
    assert set(figures) == set(stored), (sorted(figures), sorted(stored))
    worse = {clip: regressions(figures[clip], stored[clip]) for clip in stored}
    assert not any(worse.values()), f"re-ID regression on people labelled by eye: {worse} (now: {figures})"
    for clip in stored:
        assert all(figures[clip][n]["queries"] == stored[clip][n]["queries"] for n in EMBEDDINGS), figures
