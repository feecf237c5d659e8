"""Re-ID regression gate: ``benchmarks/reid.py --json`` against ``reid_metrics_pets09.json``.

PETS09-S2L1 in vtest.avi (crops cut at test time, never stored): queries are each identity's
first 2 s, the gallery everything at least 10 s later; rank-1, rank-5 and mAP per embedding may
not fall more than :data:`TOLERANCE` below the stored table (44 queries of 10 people: one query
is 0.023 of rank-1, so the tolerance allows about two). Takes about 20 s on 2 cores.
``BAQYLAU_UPDATE_METRICS=1`` rewrites the table after an intended change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import MODELS, PETS_GT, REPO, SHARED, VTEST, need

TABLE = REPO / "tests" / "search" / "reid_metrics_pets09.json"
EMBEDDINGS = ("colour_histogram", "mobilenetv2", "osnet_x0_25_eval_only")
METRICS = ("rank1", "rank5", "mAP")
#: Absolute amount by which a metric may be worse than the stored table.
TOLERANCE = 0.05


def test_reid_metrics_do_not_regress() -> None:
    need(VTEST)
    need(PETS_GT)
    need(MODELS / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx")
    need(MODELS / "eval-only" / "osnet-x0_25-msmt17" / "osnet_x0_25_msmt17.onnx")
    proc = subprocess.run([sys.executable, "benchmarks/reid.py", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BAQYLAU_SHARED": str(SHARED)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    figures = {name: {k: round(result["embeddings"][name][k], 4) for k in (*METRICS, "queries")}
               for name in EMBEDDINGS}
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
    worse = [f"{name}.{key}: {figures[name][key]:.4f} < stored {stored[name][key]:.4f}"
             for name in EMBEDDINGS for key in METRICS
             if figures[name][key] < stored[name][key] - TOLERANCE]
    assert not worse, f"re-ID regression on PETS09-S2L1: {worse} (now: {figures})"
    assert all(figures[n]["queries"] == stored[n]["queries"] for n in EMBEDDINGS), figures
