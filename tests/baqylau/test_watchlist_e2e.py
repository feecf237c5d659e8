"""Watchlist end to end on real footage (issue 5): register one PETS09 person from a crop of
vtest.avi, run the pipeline on the clip, and check the ``person_match`` alert against the ground truth.

The registration "photo" is the GT box of identity :data:`GT_ID` at the moment
:data:`MOMENT` of its usable views (``benchmarks.watchlist_e2e.choose_registrations``: whole,
at most 10 % covered, at least 60 px tall) with a
small margin, written to a temporary folder and registered through the real CLI
(``baqylau watchlist add --whole-image``). The pipeline is the real ``baqylau run --until-eof``
(YOLOX-Nano, ByteTrack, sightings, live watchlist checks); its tracks (``tracker.mot_dir``) are
mapped to GT identities by IoU (``benchmarks.watchlist_e2e.track_identities``).

Configuration, from ``benchmarks/watchlist_e2e.py`` (10 identities x 2 registration moments,
default thresholds, 10 fps; benchmarks/RESULTS.md): the permissive default MobileNetV2
(``imagenet``, threshold 0.836) fires on the registered person for 11 of 20 registrations but
also on other GT identities for 12 of the 20, with no threshold that separates most of them;
that is why live matching is off by default without a re-ID model (``search.watchlist: auto``)
and why this test forces it on (``watchlist: true``, set by the benchmark's ``write_config``).
An earlier choice here, identity 15 at GT frame 75, turned out to be a photo mostly covered by
the "fire assembly point" sign, matching the same sign in front of the same person: a lesson
that crop quality does not see static occluders. This test uses the weights-free colour
histogram (threshold 0.807) and identity 9 at GT frame 127, a whole, unoccluded view (dark top,
jeans): best score on identity 9 0.898, best on any other identity within frames 1-400 0.635 at
10 fps, the widest margin measured. It checks that the wiring works end to end on real footage
(alert for that person only, police route, evidence, the alert ends with the pass, closing the
entry stops alerts); it is not evidence that any embedding here is clean for an arbitrary photo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.conftest import PETS_GT, REPO, VTEST, YOLOX_PATH, need

pytestmark = pytest.mark.slow

#: Registered identity and registration moment (see the module docstring): GT frame 127.
GT_ID = 9
MOMENT = 0.25
CASE = "KUI-TEST-0009"
ANALYSIS_FPS = 10.0  # as measured
EMBEDDER = "colour_histogram"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "baqylau", *args], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ), timeout=timeout)
    assert proc.returncode == 0, f"baqylau {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc


def person_matches(config: Path) -> list[dict]:
    return json.loads(run_cli("alerts", "list", "--config", str(config), "--json", "--type", "person_match").stdout)


@pytest.fixture(scope="module")
def watch_run(tmp_path_factory):
    """Register the person through the CLI, run the pipeline once; return what the tests need."""
    from benchmarks import watchlist_e2e as bench
    from tracker.mot import read_mot

    for path in (VTEST, PETS_GT, YOLOX_PATH):
        need(path)
    folder = tmp_path_factory.mktemp("watchlist-e2e")
    gt = read_mot(PETS_GT)
    (reg,) = bench.choose_registrations(gt, [GT_ID], [MOMENT])
    photo = bench.cut_photos(VTEST, [reg], folder)[reg.name]
    config = bench.write_config(folder, EMBEDDER, None, ANALYSIS_FPS)
    added = run_cli("watchlist", "add", "--config", str(config), "--case", CASE, "--name", f"PETS09 person {GT_ID}",
                    "--photo", str(photo), "--whole-image", "--user", "pytest")
    entry_id = re.search(r"registered (W-\d+)", added.stdout).group(1)
    summary = folder / "summary.json"
    run_cli("run", str(config), "--until-eof", "--summary-json", str(summary))
    alerts = person_matches(config)
    mot = read_mot(folder / "mot" / "square.txt")
    return {"bench": bench, "gt": gt, "reg": reg, "config": config, "folder": folder, "entry_id": entry_id,
            "alerts": alerts, "mot": mot, "summary": json.loads(summary.read_text())}


def test_alert_fires_for_the_registered_person_and_no_other(watch_run):
    bench, reg = watch_run["bench"], watch_run["reg"]
    result = bench.evaluate(watch_run["alerts"], {watch_run["entry_id"]: reg}, watch_run["mot"],
                            watch_run["gt"])[reg.name]
    assert result["right"] >= 1, f"no person_match alert on GT identity {GT_ID}: {result}"
    assert result["false"] == 0, f"person_match alerts on other GT identities {result['false_ids']}: {result}"
    assert watch_run["summary"]["square"]["person_matches"] == len(watch_run["alerts"])


def test_alert_carries_case_route_score_and_evidence(watch_run):
    assert watch_run["alerts"], "no person_match alert at all"
    for a in watch_run["alerts"]:
        d = a["details"]
        assert a["type"] == "person_match" and a["track_ids"]
        assert d["route"] == "police" and d["case_ref"] == CASE and d["watch_entry_id"] == watch_run["entry_id"]
        assert d["score"] >= d["threshold"] > 0 and a["conf"] == pytest.approx(d["score"], abs=1e-3)
        # the pass ended (the person left or the file ended), so the alert ended with it
        assert a["end_time_s"] is not None and a["end_time_s"] >= a["start_time_s"], a
        assert d["raised_time_s"] >= a["start_time_s"] and d["generic_embedding"] is True
        assert d["model_id"].startswith("colour_hsv_")
        side = cv2.imread(d["evidence"]["side_by_side"])
        assert side is not None and side.shape[0] == 256 + 44 and side.ndim == 3, d["evidence"]  # caption band
        assert cv2.imread(d["evidence"]["sighting_crop"]) is not None
        snapshot = cv2.imread(a["snapshot_path"])
        assert snapshot is not None and snapshot.ndim == 3, a["snapshot_path"]
        assert Path(d["registered_photo"]).is_file()


def test_closed_entry_raises_no_alert_on_a_fresh_run(watch_run, tmp_path):
    bench, config = watch_run["bench"], watch_run["config"]
    run_cli("watchlist", "close", watch_run["entry_id"], "--config", str(config), "--reason", "found (test)",
            "--user", "pytest")
    listed = json.loads(run_cli("watchlist", "list", "--config", str(config), "--all", "--json").stdout)
    assert [e["status"] for e in listed] == ["closed"]
    # a fresh data_dir holding only the (closed) watchlist: no alert store or sightings carried over
    fresh = bench.write_config(tmp_path, EMBEDDER, None, ANALYSIS_FPS)
    shutil.copytree(watch_run["folder"] / "data" / "watchlist", tmp_path / "data" / "watchlist")
    summary = tmp_path / "summary.json"
    run_cli("run", str(fresh), "--until-eof", "--summary-json", str(summary))
    assert person_matches(fresh) == []
    square = json.loads(summary.read_text())["square"]
    assert square["person_matches"] == 0 and square["sightings"] > 0
