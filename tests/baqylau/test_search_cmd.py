"""The investigator's CLI end to end: `baqylau run` fills a sighting store from real PETS09 video,
then `baqylau search|watchlist|audit ...` are used as an investigator would, through
``baqylau.cli.main`` (and once through a real subprocess for the exact stderr)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
import zoneinfo
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import yaml

from baqylau.cli import main
from tests.conftest import MODELS, PETS_GT, REPO, VTEST, YOLOX_PATH, need, need_tool

pytestmark = pytest.mark.slow

TZ = "Asia/Almaty"
USER = "inspector.Сәкен"
#: The second camera: an id in ASCII (config ids are), a Kazakh display name.
KOKTEM_ID = "koktem-3"
KOKTEM_NAME = "Көктем 3 / кіреберіс"
KOKTEM_LATLON = (43.2331, 76.9412)
SQUARE_LATLON = (51.1282, 71.4304)
#: The query person: PETS09-S2L1 ground-truth id 9 at video frame 230 (GT frame 231, t = 23.0 s),
#: alone within 30 px (checked against the GT when the still is cut).
QUERY_FRAME, QUERY_GT_ID, QUERY_MARGIN_PX = 230, 9, 30
SHORT_CLIP_S = 30
BUS = Path(str(VTEST)).parents[2] / "images" / "street" / "bus.jpg"
BINS = Path(str(VTEST)).parents[2] / "images" / "bins" / "amsterdam-garbage-object-detection"
MOBILENET = MODELS / "mobilenetv2-embedding" / "mobilenetv2_bottle_imagenet.onnx"
ROW_KEYS = {"rank", "score", "sighting_id", "camera_id", "camera_name", "start_utc", "end_utc", "start_local",
            "duration_s", "upper", "lower", "lat", "lon", "thumbnail"}


def write_config(path: Path, data_dir: Path, cameras: list[dict], search: dict) -> Path:
    cfg = {"data_dir": str(data_dir), "timezone": TZ, "log_level": "WARNING",
           "detector": {"model_path": str(YOLOX_PATH), "providers": ["CPUExecutionProvider"]},
           "search": search, "defaults": {"analysis_fps": 3}, "cameras": cameras}
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run_pipeline(cfg: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "baqylau", "run", str(cfg), "--until-eof"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def query_still(out: Path) -> tuple[Path, float, np.ndarray]:
    """Cut the query person out of a vtest frame; return the JPEG, its stream time and GT box."""
    from tracker.mot import read_mot

    rows = read_mot(need(PETS_GT))[QUERY_FRAME + 1]
    boxes = np.column_stack([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]])
    box = boxes[rows[:, 0] == QUERY_GT_ID][0]
    roi = np.round(box + [-QUERY_MARGIN_PX, -QUERY_MARGIN_PX, QUERY_MARGIN_PX, QUERY_MARGIN_PX]).astype(int)
    others = boxes[rows[:, 0] != QUERY_GT_ID]
    overlap = (others[:, 0] < roi[2]) & (others[:, 2] > roi[0]) & (others[:, 1] < roi[3]) & (others[:, 3] > roi[1])
    assert not overlap.any(), "the query still must show one person"
    with av.open(str(VTEST)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == QUERY_FRAME:
                image, time_s = frame.to_ndarray(format="bgr24"), float(frame.time)
                break
    assert cv2.imwrite(str(out), image[roi[1]:roi[3], roi[0]:roi[2]])
    return out, time_s, box.astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two cameras (full vtest; a 30 s cut of it with a Kazakh name) run once into one data dir."""
    need(VTEST)
    need(YOLOX_PATH)
    ffmpeg = need_tool("ffmpeg")
    tmp = tmp_path_factory.mktemp("investigator")
    short = tmp / "vtest-30s.mp4"
    cut = subprocess.run([ffmpeg, "-v", "error", "-i", str(VTEST), "-t", str(SHORT_CLIP_S), "-c:v", "libx264",
                          "-preset", "ultrafast", "-crf", "18", "-an", str(short)], capture_output=True, text=True)
    assert cut.returncode == 0, cut.stderr
    cameras = [
        {"id": "square", "url": str(VTEST), "location": dict(zip(("lat", "lon"), SQUARE_LATLON))},
        {"id": KOKTEM_ID, "name": KOKTEM_NAME, "url": str(short),
         "location": dict(zip(("lat", "lon"), KOKTEM_LATLON))},
    ]
    cfg = write_config(tmp / "city.yaml", tmp / "data", cameras, {"embedder": "colour_histogram"})
    before = dt.datetime.now(dt.UTC)
    run_pipeline(cfg)
    after = dt.datetime.now(dt.UTC)
    still, still_time_s, still_box = query_still(tmp / "one-person.jpg")
    return SimpleNamespace(tmp=tmp, cfg=str(cfg), data=tmp / "data", short=short, cameras=cameras, before=before,
                           after=after, still=still, still_time_s=still_time_s, still_box=still_box)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def search(capsys, world, kind: str, *args: str, case: str = "KUI-2026-0412") -> tuple[int, str, str]:
    return cli(capsys, "search", kind, *args, "--config", world.cfg, "--user", USER, "--case", case)


def search_json(capsys, world, kind: str, *args: str, case: str = "KUI-2026-0412") -> dict:
    rc, out, err = search(capsys, world, kind, *args, "--json", case=case)
    assert rc == 0, err
    return json.loads(out)


def local_naive(t: dt.datetime) -> str:
    """``t`` as a wall-clock time of the config's timezone without an offset, to the second."""
    return t.astimezone(zoneinfo.ZoneInfo(TZ)).replace(tzinfo=None).isoformat(timespec="seconds")


def store_record(world, sighting_id: str):
    from search.store import SightingStore

    with SightingStore(world.data / "sightings") as store:
        return store.get(sighting_id)


def shows_query_person(world, sighting_id: str, tol_px: float = 30.0) -> bool:
    """Whether a sighting's trajectory passes the query person's GT foot point at the still's time."""
    rec = store_record(world, sighting_id)
    if rec is None or not rec.times_s[0] - 0.5 <= world.still_time_s <= rec.times_s[-1] + 0.5:
        return False
    i = int(np.argmin(np.abs(rec.times_s - world.still_time_s)))
    foot = np.array([(world.still_box[0] + world.still_box[2]) / 2, world.still_box[3]])
    return bool(np.linalg.norm(rec.trajectory_px[i] - foot) <= tol_px)


# -- search colour ---------------------------------------------------------------------------------

def test_colour_search_lists_ranked_sightings_with_thumbnails(capsys, world):
    rc, out, err = search(capsys, world, "colour", "--upper", "blue", "--limit", "5")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "colours upper=blue lower=any"
    ranked = [ln for ln in lines[1:] if not ln.startswith("     ")]
    assert [int(ln.split()[0]) for ln in ranked] == list(range(1, len(ranked) + 1)) and 1 <= len(ranked) <= 5
    thumbs = [ln.strip() for ln in lines[1:] if ln.startswith("     ")]
    assert len(thumbs) == len(ranked) and all(Path(t).is_file() for t in thumbs)

    got = search_json(capsys, world, "colour", "--upper", "blue", "--lower", "black", "--min-share", "0.1")
    assert set(got) == {"query", "results"} and got["query"] == "colours upper=blue lower=black"
    rows = got["results"]
    assert rows, "PETS09 has people in blue tops and black trousers"
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["camera_id"] in {"square", KOKTEM_ID}
        assert dt.datetime.fromisoformat(r["start_local"]).utcoffset() == dt.timedelta(hours=5)
        assert world.before <= dt.datetime.fromisoformat(r["start_utc"]) <= world.after
        rec = store_record(world, r["sighting_id"])
        assert rec.upper_shares.get("blue", 0) >= 0.1 and rec.lower_shares.get("black", 0) >= 0.1
        assert cv2.imread(r["thumbnail"]) is not None


def test_colour_search_time_window_with_and_without_offset(capsys, world):
    everyone = search_json(capsys, world, "colour", "--upper", "black", "--limit", "500")["results"]
    assert everyone
    start, end = world.before - dt.timedelta(seconds=1), world.after + dt.timedelta(seconds=1)
    # without an offset the times are read in the config's timezone (Asia/Almaty, UTC+5)
    local = search_json(capsys, world, "colour", "--upper", "black", "--limit", "500",
                        "--from", local_naive(start), "--to", local_naive(end))["results"]
    assert [r["sighting_id"] for r in local] == [r["sighting_id"] for r in everyone]
    utc = search_json(capsys, world, "colour", "--upper", "black", "--limit", "500",
                      "--from", start.isoformat(timespec="seconds"), "--to", end.isoformat(timespec="seconds"))
    assert len(utc["results"]) == len(everyone)
    # the UTC clock reading without its offset is 5 h earlier in Almaty: nothing then
    naive_utc_clock = end.replace(tzinfo=None).isoformat(timespec="seconds")
    rc, out, err = search(capsys, world, "colour", "--upper", "black", "--to", naive_utc_clock)
    assert rc == 0 and "no sightings match" in out, err
    later = search_json(capsys, world, "colour", "--upper", "black", "--from", end.isoformat())
    assert later["results"] == []
    # the first half of the run only: some, not all
    mid = world.before + (world.after - world.before) / 2
    first_half = search_json(capsys, world, "colour", "--upper", "black", "--limit", "500",
                             "--to", local_naive(mid))["results"]
    assert 0 < len(first_half) < len(everyone)
    assert all(dt.datetime.fromisoformat(r["start_utc"]) <= mid for r in first_half)


def test_colour_search_by_camera_and_map_area(capsys, world):
    koktem = search_json(capsys, world, "colour", "--lower", "black", "--camera", KOKTEM_ID, "--limit", "500")
    assert koktem["results"]
    assert {(r["camera_id"], r["camera_name"]) for r in koktem["results"]} == {(KOKTEM_ID, KOKTEM_NAME)}
    lat, lon = KOKTEM_LATLON
    bbox = f"{lat - 0.01},{lon - 0.01},{lat + 0.01},{lon + 0.01}"
    area = search_json(capsys, world, "colour", "--lower", "black", "--bbox", bbox, "--limit", "500")
    assert sorted(r["sighting_id"] for r in area["results"]) == sorted(r["sighting_id"] for r in koktem["results"])
    assert all((r["lat"], r["lon"]) == KOKTEM_LATLON for r in area["results"])
    both = search_json(capsys, world, "colour", "--lower", "black", "--camera", "square", "--camera", KOKTEM_ID,
                       "--limit", "500")["results"]
    assert {r["camera_id"] for r in both} == {"square", KOKTEM_ID}
    nowhere = search_json(capsys, world, "colour", "--lower", "black", "--bbox", "40,60,40.1,60.1")
    assert nowhere["results"] == []
    # a time/camera-only search (no colour) lists everyone seen there, score 1
    seen = search_json(capsys, world, "colour", "--camera", KOKTEM_ID, "--limit", "500")["results"]
    assert len(seen) >= len(koktem["results"]) and {r["score"] for r in seen} == {1.0}


def test_colour_search_writes_a_contact_sheet(capsys, world, tmp_path):
    sheet = tmp_path / "sheets" / "blue.jpg"
    rc, out, err = search(capsys, world, "colour", "--upper", "blue", "--limit", "10", "--sheet", str(sheet))
    assert rc == 0, err
    assert out.splitlines()[-1] == f"contact sheet: {sheet}"
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] >= 192 and img.shape[1] >= 120
    # JSON output and a sheet path without an extension: still a JPEG
    bare = tmp_path / "sheet"
    got = search_json(capsys, world, "colour", "--upper", "blue", "--limit", "3", "--sheet", str(bare))
    assert got["results"] and bare.read_bytes()[:3] == b"\xff\xd8\xff"


# -- search photo ----------------------------------------------------------------------------------

def test_photo_of_one_person_finds_them_near_the_top(capsys, world):
    got = search_json(capsys, world, "photo", str(world.still), "--limit", "5")
    assert got["query"].startswith(f"photo {world.still} (person box ")
    top = got["results"][:3]
    assert any(shows_query_person(world, r["sighting_id"]) for r in top), top
    # restricted to the other camera, the same person is found there too
    koktem = search_json(capsys, world, "photo", str(world.still), "--camera", KOKTEM_ID, "--limit", "3")
    assert any(shows_query_person(world, r["sighting_id"]) for r in koktem["results"])
    assert {r["camera_id"] for r in koktem["results"]} == {KOKTEM_ID}


def test_photo_used_whole_without_detection(capsys, world):
    got = search_json(capsys, world, "photo", str(world.still), "--whole-image", "--limit", "5")
    h, w = cv2.imread(str(world.still)).shape[:2]
    assert f"(person box [0, 0, {w}, {h}]" in got["query"]
    assert len(got["results"]) == 5


def test_photo_with_several_people_needs_person(capsys, world):
    need(BUS)
    rc, out, err = search(capsys, world, "photo", str(BUS))
    assert rc == 2 and out == ""
    (line,) = [ln for ln in err.splitlines() if ln.startswith("baqylau: error:")]
    assert "people in the photo" in line and "--person N" in line and "#0 box" in line and "#1 box" in line
    got = search_json(capsys, world, "photo", str(BUS), "--person", "0", "--limit", "3")
    assert len(got["results"]) == 3


# -- similar and follow ----------------------------------------------------------------------------

def test_similar_and_follow_from_a_colour_result(capsys, world):
    found = search_json(capsys, world, "colour", "--upper", "blue", "--camera", "square", "--limit", "50")
    # a sighting that ended within the first 25 s of the clip, so its twin is on the 30 s cut too
    sid = next(r["sighting_id"] for r in found["results"] if store_record(world, r["sighting_id"]).end_time_s < 25)
    similar = search_json(capsys, world, "similar", sid, "--limit", "5")
    assert similar["query"] == f"more like sighting {sid}"
    ids = [r["sighting_id"] for r in similar["results"]]
    assert len(ids) == 5 and sid not in ids
    scores = [r["score"] for r in similar["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0001
    # the twin on the cut copy of the clip (same person, same frames, re-encoded) is among the best
    assert any(r["camera_id"] == KOKTEM_ID and r["score"] > 0.9 for r in similar["results"][:3]), similar
    only_square = search_json(capsys, world, "similar", sid, "--camera", "square", "--limit", "3")
    assert {r["camera_id"] for r in only_square["results"]} == {"square"}

    followed = search_json(capsys, world, "follow", sid, "--window-s", "120")
    steps = followed["results"]
    assert steps[0]["sighting_id"] == sid and steps[0]["score"] == 1.0 and steps[0]["transit_s"] == 0.0
    assert followed["query"].startswith(f"follow {sid}: {len(steps)} step(s), each scored against the first")
    short = search_json(capsys, world, "similar", sid[:8])  # a unique prefix, as people copy ids
    assert short["query"] == f"more like sighting {sid}"
    assert len(followed["trajectory"]) == len(steps)
    for prev, nxt in zip(steps, steps[1:]):
        assert nxt["start_utc"] >= prev["end_utc"] and nxt["transit_s"] >= 0
    rc, out, err = search(capsys, world, "follow", sid, "--max-hops", "0")
    assert rc == 0 and f"follow {sid}: 1 step(s)" in out, err


# -- errors ----------------------------------------------------------------------------------------

def _photo_files(tmp: Path) -> dict[str, Path]:
    corrupt = tmp / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    oversized = tmp / "oversized.jpg"
    with oversized.open("wb") as f:  # sparse: 21 MB on paper, nothing on disk
        f.truncate(21 * 1024 * 1024)
    long_side = tmp / "panorama.png"
    cv2.imwrite(str(long_side), np.zeros((4, 8001, 3), np.uint8))
    return {"corrupt": corrupt, "oversized": oversized, "long_side": long_side, "missing": tmp / "missing.jpg"}


ERRORS = [  # (name, args after "search"/"watchlist", fragments of the one error line)
    ("unknown colour", ["search", "colour", "--upper", "turquoise"],
     ["unknown colour 'turquoise'", "black, white, grey, red", "brown"]),
    ("--to before --from", ["search", "colour", "--upper", "red", "--from", "2026-11-30T14:00",
                            "--to", "2026-11-30T13:00"], ["--to (2026-11-30T13:00) is before --from"]),
    ("not a time", ["search", "colour", "--upper", "red", "--from", "yesterday"], ["not an ISO 8601 time"]),
    ("bad bbox", ["search", "colour", "--upper", "red", "--bbox", "43.2,76.9"], ["--bbox wants LAT_MIN"]),
    ("nothing to search", ["search", "colour"], ["give --upper and/or --lower", "black white grey"]),
    ("unknown sighting", ["search", "similar", "no-such-id"], ["no sighting 'no-such-id'"]),
    ("follow unknown", ["search", "follow", "no-such-id"], ["no sighting 'no-such-id'"]),
    ("bad follow window", ["search", "follow", "no-such-id", "--window-s", "-5"], ["window_s"]),
    ("missing photo", ["search", "photo", "{missing}"], ["cannot read photo", "No such file"]),
    ("corrupt photo", ["search", "photo", "{corrupt}"], ["not a readable image"]),
    ("oversized photo", ["search", "photo", "{oversized}"], ["22.0 MB", "more than the 21 MB"]),
    ("photo too long", ["search", "photo", "{long_side}"], ["8001x4 px", "8000 px"]),
    ("bin photo", ["search", "photo", "{bin}"], ["no person detected"]),
    ("person out of range", ["search", "photo", "{bus}", "--person", "7"], ["--person 7 is out of range"]),
    ("retention 0 days", ["search", "retention", "--days", "0"], ["--days must be >= 1"]),
    ("person and whole image", ["search", "photo", "{bus}", "--person", "0", "--whole-image"],
     ["give one or the other"]),
    ("unwritable sheet", ["search", "colour", "--upper", "blue", "--sheet", "{corrupt}/sheet.jpg"],
     ["cannot write contact sheet"]),
    ("close unknown", ["watchlist", "close", "W-999999", "--reason", "found"], ["no watchlist entry 'W-999999'"]),
    ("expires in the past", ["watchlist", "add", "--name", "A", "--photo", "{still}", "--expires", "2020-01-01"],
     ["--expires 2020-01-01 is in the past"]),
    ("no expiry", ["watchlist", "add", "--name", "A", "--photo", "{still}", "--days", "0"], ["--days must be in"]),
    ("bad person number", ["watchlist", "add", "--name", "A", "--photo", "{bus}#first"],
     ["the part after '#' must be a person number"]),
    ("watch bus unchosen", ["watchlist", "add", "--name", "A", "--photo", "{bus}"], ["people in the photo", "#N'"]),
    ("watch no person", ["watchlist", "add", "--name", "A", "--photo", "{bin}"], ["no person detected"]),
]


@pytest.mark.parametrize(("argv", "fragments"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_print_one_line_and_return_2(capsys, world, tmp_path, argv, fragments):
    files = {**_photo_files(tmp_path), "still": world.still, "bus": BUS,
             "bin": sorted(BINS.glob("*.jpg"))[0] if BINS.is_dir() else BINS / "absent.jpg"}
    argv = [a.format(**files) for a in argv]
    for a in argv:
        if a.startswith(str(BUS)) or a.startswith(str(BINS)):
            need(Path(a.split("#")[0]))
    extra = ["--case", "KUI-ERR"] if argv[:2] != ["watchlist", "close"] and argv[:2] != ["search", "retention"] else []
    rc, out, err = cli(capsys, *argv, "--config", world.cfg, "--user", USER, *extra)
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("baqylau: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_case_is_an_argparse_error(capsys, world):
    with pytest.raises(SystemExit) as exc:
        main(["search", "colour", "--upper", "red", "--config", world.cfg])
    assert exc.value.code == 2
    assert "the following arguments are required: --case" in capsys.readouterr().err


def test_error_in_a_real_process_is_one_stderr_line(world):
    proc = subprocess.run([sys.executable, "-m", "baqylau", "search", "similar", "no-such-id", "--config", world.cfg,
                           "--case", "KUI-ERR"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"baqylau: error: no sighting 'no-such-id' in {world.data / 'sightings'}"]


# -- retention -------------------------------------------------------------------------------------

def test_retention_deletes_only_old_days(capsys, world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world.data, data)
    cfg = write_config(tmp_path / "copy.yaml", data, world.cameras, {"embedder": "colour_histogram"})
    rc, out, err = cli(capsys, "search", "retention", "--days", "1", "--config", str(cfg))
    assert rc == 0 and out == "deleted 0 sighting(s), 0 crop file(s), 0 index row(s) older than 1 day(s)\n", err

    # age the square camera's sightings by 40 days (rows and their crop folder)
    db = sqlite3.connect(data / "sightings" / "sightings.db")
    with db:
        n_old = db.execute("UPDATE sightings SET day = '2020-01-01', start_wall_s = start_wall_s - 3456000, "
                           "end_wall_s = end_wall_s - 3456000 WHERE camera_id = 'square'").rowcount
        n_kept = db.execute("SELECT COUNT(*) FROM sightings WHERE camera_id != 'square'").fetchone()[0]
    db.close()
    (day_dir,) = (data / "sightings" / "crops").iterdir()
    old_dir = data / "sightings" / "crops" / "2020-01-01"
    old_dir.mkdir()
    shutil.move(day_dir / "square", old_dir / "square")
    n_files = sum(1 for p in old_dir.rglob("*") if p.is_file())
    assert n_old > 0 and n_kept > 0 and n_files >= n_old

    rc, out, err = cli(capsys, "search", "retention", "--config", str(cfg))  # config's 30 days
    assert rc == 0, err
    assert out.startswith(f"deleted {n_old} sighting(s), {n_files} crop file(s), ") and "30 day(s)" in out
    assert not old_dir.exists()
    rc, out, err = cli(capsys, "search", "colour", "--camera", "square", "--config", str(cfg), "--case", "K")
    assert rc == 0 and "no sightings match" in out
    rc, out, err = cli(capsys, "search", "colour", "--camera", KOKTEM_ID, "--config", str(cfg), "--case", "K",
                       "--json", "--limit", "500")
    assert len(json.loads(out)["results"]) == n_kept


# -- watchlist -------------------------------------------------------------------------------------

def _watch(capsys, world, *args: str) -> tuple[int, str, str]:
    return cli(capsys, "watchlist", *args, "--config", world.cfg, "--user", USER)


def _listed(capsys, world, *args: str) -> dict[str, dict]:
    rc, out, err = cli(capsys, "watchlist", "list", "--config", world.cfg, "--json", *args)
    assert rc == 0, err
    return {e["entry_id"]: e for e in json.loads(out)}


def test_watchlist_add_list_close(capsys, world):
    rc, out, err = _watch(capsys, world, "add", "--name", "Айгерім Б.", "--photo", str(world.still),
                          "--case", "KUI-2026-0500", "--notes", "қызыл сөмке / red bag", "--days", "7")
    assert rc == 0, err
    assert out.startswith("registered W-") and "Айгерім Б. (missing, case KUI-2026-0500), 1 photo(s)" in out
    assert "live matching is OFF" in out and "search.embedder: osnet" in out  # colour histogram, watchlist auto
    missing_id = out.split()[1].rstrip(":")
    rc, out, err = _watch(capsys, world, "add", "--name", "unknown man", "--photo", str(world.still),
                          "--photo", f"{BUS}#1", "--kind", "wanted", "--case", "KUI-2026-0501",
                          "--expires", (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat())
    assert rc == 0 and "(wanted, case KUI-2026-0501), 2 photo(s)" in out, err
    wanted_id = out.split()[1].rstrip(":")
    rc, out, err = _watch(capsys, world, "add", "--name", "crop given", "--photo", str(world.still), "--whole-image",
                          "--case", "KUI-2026-0502")
    assert rc == 0, err
    crop_id = out.split()[1].rstrip(":")

    active = _listed(capsys, world)
    assert {missing_id, wanted_id, crop_id} <= set(active)
    entry = active[missing_id]
    assert entry["name"] == "Айгерім Б." and entry["kind"] == "missing" and entry["status"] == "active"
    assert entry["created_by"] == USER and entry["notes"] == "қызыл сөмке / red bag"
    expires = dt.datetime.fromisoformat(entry["expires_utc"]) - dt.datetime.fromisoformat(entry["created_utc"])
    assert abs(expires - dt.timedelta(days=7)) < dt.timedelta(minutes=1)
    assert len(active[wanted_id]["photo_paths"]) == 2
    assert all(cv2.imread(p) is not None for e in active.values() for p in e["photo_paths"])
    still_hw = cv2.imread(str(world.still)).shape[:2]
    assert cv2.imread(active[crop_id]["photo_paths"][0]).shape[:2] == still_hw  # the whole photo
    assert cv2.imread(entry["photo_paths"][0]).shape[:2] < still_hw  # the detected person only

    rc, out, err = _watch(capsys, world, "close", wanted_id, "--reason", "found 2026-11-30 14:10")
    assert rc == 0 and out == f"closed {wanted_id}: found 2026-11-30 14:10\n", err
    assert wanted_id not in _listed(capsys, world)
    closed = _listed(capsys, world, "--all")[wanted_id]
    assert closed["status"] == "closed" and closed["closed_by"] == USER
    rc, out, err = _watch(capsys, world, "close", wanted_id, "--reason", "again")
    assert rc == 2 and "is already closed" in err and "found 2026-11-30 14:10" in err
    rc, out, err = cli(capsys, "watchlist", "list", "--config", world.cfg)
    assert rc == 0 and missing_id in out and wanted_id not in out and "Айгерім Б." in out
    rc, out, err = cli(capsys, "watchlist", "list", "--config", world.cfg, "--all")
    assert any(ln.startswith(wanted_id) and "closed" in ln for ln in out.splitlines())


# -- audit -----------------------------------------------------------------------------------------

def test_audit_records_every_search_with_user_and_case(capsys, world):
    case, user = "KUI-AUDIT-1", "audit.Нұрлан"
    args = ["--config", world.cfg, "--user", user, "--case", case]
    found = search_json(capsys, world, "colour", "--upper", "blue", "--limit", "1", case=case)
    sid = found["results"][0]["sighting_id"]
    runs = [["search", "colour", "--lower", "black", "--camera", KOKTEM_ID, "--from", "2026-01-01T00:00"],
            ["search", "photo", str(world.still), "--whole-image", "--limit", "2"],
            ["search", "similar", sid, "--limit", "2"],
            ["search", "follow", sid, "--max-hops", "1"]]
    for argv in runs:
        rc, _out, err = cli(capsys, *argv, *args)
        assert rc == 0, err
    rc, out, err = cli(capsys, "watchlist", "add", "--name", "Б.", "--photo", str(world.still), *args)
    assert rc == 0, err
    entry_id = out.split()[1].rstrip(":")
    rc, _out, err = cli(capsys, "watchlist", "close", entry_id, "--reason", "withdrawn", *args)
    assert rc == 0, err

    rc, out, err = cli(capsys, "audit", "list", "--config", world.cfg, "--for-case", case, "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["chain_ok"] is True
    entries = got["entries"]
    assert [e["action"] for e in entries] == ["watchlist.close", "watchlist.add", "search.follow", "search.similar",
                                              "search.photo", "search.colour", "search.colour"]  # newest first
    assert [e["seq"] for e in entries] == sorted((e["seq"] for e in entries), reverse=True)
    assert {e["case_ref"] for e in entries} == {case}
    assert [e["user"] for e in entries] == [user] * 6 + [USER]
    by_action = {e["action"]: e for e in entries}  # the oldest of each action
    assert by_action["search.colour"]["query"] == {"upper": "blue", "lower": None, "min_share": 0.2,
                                                  "limit": 1}
    colour = entries[-2]["query"]
    assert colour["cameras"] == [KOKTEM_ID] and colour["lower"] == "black"
    assert colour["time_from"] == "2026-01-01T00:00:00+05:00"  # the config's timezone, written down
    assert by_action["search.photo"]["query"]["photo"] == str(world.still.resolve())
    assert by_action["search.photo"]["query"]["whole_image"] is True and by_action["search.photo"]["results"] == 2
    assert by_action["search.similar"]["query"]["sighting_id"] == sid
    assert by_action["search.follow"]["query"] == {"sighting_id": sid, "window_s": 1800.0, "max_hops": 1,
                                                   "min_score": 0.807}  # the colour histogram's threshold
    assert by_action["watchlist.add"]["query"]["entry_id"] == entry_id
    assert by_action["watchlist.close"]["query"] == {"entry_id": entry_id, "reason": "withdrawn"}

    rc, out, err = cli(capsys, "audit", "list", "--config", world.cfg, "--for-case", case, "--by", user)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[-1] == "audit chain: OK" and len(lines) == 7
    assert all(f"case={case}" in ln and user in ln for ln in lines[:-1])
    assert "results=-" in lines[0] and "search.photo" in lines[4] and "results=2" in lines[4]
    # every search of the other tests is in the log too, under its own case
    rc, out, err = cli(capsys, "audit", "list", "--config", world.cfg, "--limit", "1000", "--json")
    actions = {(e["action"], e["case_ref"]) for e in json.loads(out)["entries"]}
    assert ("search.colour", "KUI-2026-0412") in actions and ("watchlist.add", "KUI-2026-0500") in actions


# -- the MobileNetV2 default embedder ---------------------------------------------------------------

def test_photo_search_with_the_mobilenet_embedder(capsys, world, tmp_path, caplog):
    need(MOBILENET)
    search_cfg = {"embedder": "imagenet", "model_path": str(MOBILENET), "providers": ["CPUExecutionProvider"]}
    # the colour-histogram store searched with MobileNet: no results, and a warning saying why
    mixed = write_config(tmp_path / "mixed.yaml", world.data, world.cameras, search_cfg)
    with caplog.at_level("WARNING", logger="baqylau.search_cmd"):
        rc, out, err = cli(capsys, "search", "photo", str(world.still), "--whole-image", "--config", str(mixed),
                           "--case", "K")
    assert rc == 0 and "no sightings match" in out, err
    assert any("colour_hsv" in r.getMessage() for r in caplog.records), caplog.text

    camera = {**world.cameras[1], "url": str(world.short)}
    cfg = write_config(tmp_path / "mobilenet.yaml", tmp_path / "data", [camera], search_cfg)
    run_pipeline(cfg)
    rc, out, err = cli(capsys, "search", "photo", str(world.still), "--config", str(cfg), "--case", "K",
                       "--json", "--limit", "3")
    assert rc == 0, err
    got = json.loads(out)
    assert "mobilenet" in got["query"].lower() or "imagenet" in got["query"].lower(), got["query"]
    mob = SimpleNamespace(**{**vars(world), "data": tmp_path / "data"})
    assert any(shows_query_person(mob, r["sighting_id"]) for r in got["results"]), got["results"]
