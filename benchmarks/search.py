"""Sighting index benchmark (issue 5): embedded FAISS day partitions and Milvus Lite in one run.

Indexes N synthetic 512-d unit embeddings with realistic metadata: 200 cameras, 30 UTC days,
N/20 identities. Queries are photos: new sightings of known identities, answered one at a time,
unfiltered, with a 2-day time window and with the window plus 10 random cameras. For each backend
it prints build rate, p50/p99 query latency, recall@10 against exact search under the same filter,
memory (resident set growth, Milvus Lite server process included) and disk, both per million
sightings. Progress goes to stderr.

Synthetic data (``--data reid``, the default), fitted to real re-identification embeddings: OSNet
x0.25 MSMT17 on the 415 PETS09-S2L1 crops of ``benchmarks/reid.py`` (10 identities) gives cosine
similarity 0.751 +- 0.087 between sightings of one person at least 10 s apart, 0.474 +- 0.093
between different people, a mean vector of norm 0.71 (all embeddings share a common direction)
and an effective dimension (participation ratio of the PCA spectrum) of 16 out of 512; MobileNetV2
gives 0.775 / 0.725, norm 0.86, dimension 35. The generator draws identity centres from a
Gaussian with a power-law spectrum (variance of axis i proportional to 1/i) around a common mean
direction, adds sighting noise with the same spectrum plus a small isotropic part, and normalises;
the constants below were fitted by a grid search so that 10 identities x 40 sightings measured
the same way give 0.733 +- 0.055 / 0.463 +- 0.099, norm 0.70, dimension 18. What it does not
model: a real city has far more distinct appearances than one 40 s scene (the spectrum tail),
and camera/lighting effects. Each identity is seen on 3 random days of the 30 and mostly on
cameras near its home camera (camera index order stands for geography).

``--data isotropic`` is the earlier stress case: random centres spread evenly over the sphere with
heavy noise (cosine 0.41 within an identity, 0 +- 0.044 between), intrinsic dimension 512 and no
neighbourhood structure beyond the identity: the worst case for graph indexes, far from re-ID data.

Usage::

    .venv/bin/python benchmarks/search.py [--n 1000000] [--milvus-n 200000] [--quick] [--json]

Milvus Lite ingests through gRPC from Python dicts; ``--milvus-n`` caps its N (default 200,000)
so that one run stays within ~20 minutes on 2 cores; the output says which N each backend used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from search.index import EF_CONSTRUCTION, EF_SEARCH, FaissDayIndex, VectorIndex  # noqa: E402
from search.index_milvus import INDEX_TYPE as MILVUS_INDEX_TYPE  # noqa: E402  (imports pymilvus lazily)

D = 512
CAMERAS = [f"cam-{i:03d}" for i in range(200)]
DAYS = 30
DAY0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc).timestamp()
PER_IDENTITY = 20
#: Days of the 30 on which one identity is seen, and the camera spread around its home camera.
ACTIVE_DAYS = 3
CAMERA_SPREAD = 5
#: ``reid`` generator, fitted to OSNet on PETS09 (module docstring): spectrum exponent, norm of the
#: common mean direction, variance of identity centres, of sighting noise, and isotropic noise norm.
SPECTRUM_EXP, MEAN_NORM, CENTRE_VAR, NOISE_VAR, ISO_NOISE = 1.0, 1.0, 0.6, 0.5, 0.3
#: ``isotropic`` generator: noise norm around uniformly random centres.
ISO_ONLY_NOISE = 1.2


def rss_bytes(pid: int | None = None) -> int:
    """Resident set of a process and its descendants, from /proc (Linux)."""
    pids, total = [pid or os.getpid()], 0
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def make_data(n: int, n_queries: int, kind: str = "reid", seed: int = 0) -> dict:
    """Synthetic sightings and photo queries (module docstring); ``x`` `(n, D)` float32 unit rows."""
    rng = np.random.default_rng(seed)
    n_id = max(n // PER_IDENTITY, 1)
    if kind == "reid":
        sd = (np.arange(1, D + 1) ** -SPECTRUM_EXP)
        sd = np.sqrt(sd / sd.sum()).astype(np.float32)
        centres = np.sqrt(CENTRE_VAR) * sd * rng.standard_normal((n_id, D), dtype=np.float32)
        centres[:, -1] += MEAN_NORM  # common direction on the lowest-variance axis

        def sightings(who: np.ndarray) -> np.ndarray:
            x = centres[who] + np.sqrt(NOISE_VAR) * sd * rng.standard_normal((who.size, D), dtype=np.float32)
            x += ISO_NOISE / np.sqrt(D) * rng.standard_normal((who.size, D), dtype=np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)
    elif kind == "isotropic":
        centres = rng.standard_normal((n_id, D), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)

        def sightings(who: np.ndarray) -> np.ndarray:
            x = centres[who] + ISO_ONLY_NOISE / np.sqrt(D) * rng.standard_normal((who.size, D), dtype=np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    who = rng.integers(0, n_id, n)
    x = np.empty((n, D), np.float32)
    for s in range(0, n, 100_000):
        x[s:s + 100_000] = sightings(who[s:s + 100_000])
    q = sightings(rng.integers(0, n_id, n_queries))
    days = np.stack([rng.choice(DAYS, ACTIVE_DAYS, replace=False) for _ in range(n_id)])
    home = rng.integers(0, len(CAMERAS), n_id)
    day = days[who, rng.integers(0, ACTIVE_DAYS, n)]
    start_s = DAY0 + day * 86400.0 + rng.uniform(0, 86400, n)  # unsorted: every prefix spans all days
    cam_idx = (home[who] + rng.integers(-CAMERA_SPREAD, CAMERA_SPREAD + 1, n)) % len(CAMERAS)
    t_from = DAY0 + rng.uniform(0, (DAYS - 2) * 86400, n_queries)
    # An area: 10 neighbouring cameras (camera index order stands for geography).
    cam_sets = [(c0 + np.arange(10)) % len(CAMERAS) for c0 in rng.integers(0, len(CAMERAS), n_queries)]
    return dict(x=x, q=q, start_s=start_s, cam_idx=cam_idx, t_from=t_from, cam_sets=cam_sets)


def query_filter(data: dict, qi: int, mode: str) -> dict:
    """Keyword arguments of ``search`` for query ``qi`` under ``mode``."""
    if mode == "none":
        return {}
    kw = dict(time_from=float(data["t_from"][qi]), time_to=float(data["t_from"][qi]) + 2 * 86400)
    if mode == "time+camera":
        kw["cameras"] = [CAMERAS[c] for c in data["cam_sets"][qi]]
    return kw


def exact_top10(data: dict, n: int, mode: str, chunk: int = 100_000) -> list[set[int]]:
    """Exact top-10 row numbers of every query under ``mode``, scanning ``x[:n]`` in chunks."""
    nq = data["q"].shape[0]
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sc = data["q"] @ data["x"][s:e].T
        if mode != "none":
            t0 = data["t_from"][:, None]
            st = data["start_s"][None, s:e]
            mask = (st >= t0) & (st <= t0 + 2 * 86400)
            if mode == "time+camera":
                mask &= np.stack([np.isin(data["cam_idx"][s:e], c) for c in data["cam_sets"]])
            sc = np.where(mask, sc, -np.inf)
        all_s = np.hstack([best_s, sc])
        all_i = np.hstack([best_i, np.broadcast_to(np.arange(s, e), sc.shape)])
        top = np.argsort(-all_s, axis=1)[:, :10]
        best_s = np.take_along_axis(all_s, top, 1)
        best_i = np.take_along_axis(all_i, top, 1)
    return [{int(i) for i, v in zip(best_i[r], best_s[r]) if np.isfinite(v)} for r in range(nq)]


MODES = {"none": "", "time": "_time", "time+camera": "_time_camera"}


def build(name: str, idx: VectorIndex, data: dict, n: int) -> dict:
    """Add the first ``n`` sightings in batches of 50,000 and flush; returns the build rate."""
    cams = [CAMERAS[i] for i in data["cam_idx"][:n]]
    t = time.perf_counter()
    for s in range(0, n, 50_000):
        e = min(s + 50_000, n)
        idx.add(np.arange(s, e, dtype=np.int64), data["x"][s:e], cams[s:e], data["start_s"][s:e])
        logging.info("%s: %d / %d added", name, e, n)
    idx.flush()
    return {f"{name}_n": n, f"{name}_build_rows_per_s": round(n / (time.perf_counter() - t), 1)}


def measure(name: str, idx: VectorIndex, data: dict, truth: dict[str, list[set[int]]]) -> dict:
    """Query latency percentiles and recall@10 per filter mode."""
    out = {}
    for mode, key in MODES.items():
        lat_ms, recall = [], []
        for qi in range(data["q"].shape[0]):
            kw = query_filter(data, qi, mode)
            t = time.perf_counter()
            hits = idx.search(data["q"][qi], 10, **kw)
            lat_ms.append((time.perf_counter() - t) * 1e3)
            want = truth[mode][qi]
            recall.append(len({h.id for h in hits} & want) / len(want) if want else float(not hits))
        out[f"{name}{key}_p50_ms"] = round(float(np.percentile(lat_ms, 50)), 2)
        out[f"{name}{key}_p99_ms"] = round(float(np.percentile(lat_ms, 99)), 2)
        out[f"{name}{key}_recall_at_10"] = round(float(np.mean(recall)), 4)
        logging.info("%s %s: p50 %.2f ms, p99 %.2f ms, recall@10 %.4f", name, mode, out[f"{name}{key}_p50_ms"],
                     out[f"{name}{key}_p99_ms"], out[f"{name}{key}_recall_at_10"])
    return out


def run_backend(name: str, idx: VectorIndex, data: dict, n: int, workdir: Path) -> dict:
    """Build, exact ground truth, queries, memory and disk of one backend."""
    rss0 = rss_bytes()
    out = build(name, idx, data, n)
    rss1 = rss_bytes()
    logging.info("%s: exact search for the ground truth", name)
    truth = {mode: exact_top10(data, n, mode) for mode in MODES}
    out.update(measure(name, idx, data, truth))
    out[f"{name}_memory_mb_per_million"] = round((rss1 - rss0) / 2**20 * 1e6 / n, 1)
    out[f"{name}_disk_mb_per_million"] = round(sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file()) / 2**20 * 1e6 / n, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="sightings in the embedded index")
    ap.add_argument("--milvus-n", type=int, default=200_000, help="cap on sightings in Milvus Lite (0 = skip)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 / 10,000 sightings, 50 queries")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--data", choices=("reid", "isotropic"), default="reid", help="synthetic embeddings")
    ap.add_argument("--ef-search", type=int, default=EF_SEARCH, help="embedded HNSW search list size")
    ap.add_argument("--ef-construction", type=int, default=EF_CONSTRUCTION, help="embedded HNSW build list size")
    ap.add_argument("--threads", type=int, default=1, help="embedded search threads")
    ap.add_argument("--milvus-index", default=MILVUS_INDEX_TYPE, help="Milvus index type")
    args = ap.parse_args()
    if args.quick:
        args.n, args.milvus_n, args.queries = 20_000, 10_000, 50
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("faiss.loader", "milvus_lite", "grpc"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    n_m = min(args.n, args.milvus_n)
    logging.info("generating %d %s embeddings", args.n, args.data)
    data = make_data(args.n, args.queries, args.data)
    result: dict = {
        "dim": D, "cameras": len(CAMERAS), "days": DAYS, "queries": args.queries, "cpus": os.cpu_count(),
        "data": args.data, "embedded_ef_search": args.ef_search, "embedded_ef_construction": args.ef_construction,
        "milvus_lite_index": args.milvus_index,
    }
    work = Path(tempfile.mkdtemp(prefix="baqylau-search-bench-"))
    try:
        idx = FaissDayIndex(work / "embedded", D, "synthetic", args.ef_search,
                            ef_construction=args.ef_construction, search_threads=args.threads)
        result.update(run_backend("embedded", idx, data, args.n, work / "embedded"))
        idx.close()
        del idx
        if n_m > 0:
            try:
                from search.index_milvus import MilvusIndex
            except ImportError as exc:
                result["milvus_lite_skipped"] = f"pymilvus/milvus-lite not installed: {exc}"
            else:
                mdir = work / "milvus"
                idx = MilvusIndex(str(mdir / "bench.db"), D, "synthetic", index_type=args.milvus_index)
                result.update(run_backend("milvus_lite", idx, data, n_m, mdir))
                idx.close()
                if n_m < args.n:
                    result["milvus_lite_note"] = f"Milvus Lite ran at N={n_m} (--milvus-n), not {args.n}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:40s} {v}")


if __name__ == "__main__":
    main()
