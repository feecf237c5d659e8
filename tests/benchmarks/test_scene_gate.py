"""Quality gate of the scene detectors: the full ``benchmarks/scene.py`` run against a stored table.

The staged events (real footage, real objects from real photos, synthetic water; see
``benchmarks/staging.py``) and the event-free real clips are scored per alert type; the counts
must not get worse than ``scene_metrics.json`` by more than :data:`TOLERANCE` events per type
(about 6 staged positives per type, so one event is ~0.17 of recall: the sample is small and the
tolerance says so). ``BAQYLAU_UPDATE_METRICS=1`` rewrites the table after an intended change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED, VIDEOS, YOLOX_PATH, need

pytestmark = pytest.mark.slow

TABLE = REPO / "tests" / "benchmarks" / "scene_metrics.json"
TYPES = ("bin_overflow", "littering", "illegal_dumping", "flooding")
#: Events per alert type by which a count may be worse than the stored table.
TOLERANCE = 1


def test_scene_detectors_do_not_regress() -> None:
    need(VIDEOS / "opencv-samples" / "vtest.avi")
    need(YOLOX_PATH)
    proc = subprocess.run([sys.executable, "benchmarks/scene.py", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "BAQYLAU_SHARED": str(SHARED)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    now = {t: {k: result[t][k] for k in ("tp", "fp", "fn", "false_alarms", "false_alarms_pingpong")}
           for t in TYPES}
    if os.environ.get("BAQYLAU_UPDATE_METRICS") == "1" or not TABLE.exists():
        TABLE.write_text(json.dumps(now, indent=2) + "\n", encoding="utf-8")
    stored = json.loads(TABLE.read_text(encoding="utf-8"))
    worse = []
    for t in TYPES:
        s, n = stored[t], now[t]
        if n["tp"] < s["tp"] - TOLERANCE:
            worse.append(f"{t}: {n['tp']} staged events found, stored {s['tp']}")
        for k in ("fp", "false_alarms", "false_alarms_pingpong"):
            if n[k] > s[k] + TOLERANCE:
                worse.append(f"{t}: {k} {n[k]}, stored {s[k]}")
    assert not worse, "; ".join(worse) + f" (full result: {json.dumps(now)})"
