"""Sighting index benchmark (issue 5): embedded FAISS day partitions and Milvus Lite in one run.

Indexes N synthetic 512-d unit embeddings with realistic metadata: 200 cameras, 30 UTC days,
identities of ~20 sightings each (a random centre plus noise of norm ~1.2, so that a sighting's
neighbours are mostly, not always, the same person's: recall@10 is meaningful). Queries are new
sightings of known identities, answered one at a time, unfiltered, with a time window (2 days)
and with a time window plus 10 cameras. For each backend it prints build rate, p50/p99 query
latency, recall@10 against exact search under the same filter, memory (resident set growth,
Milvus Lite server process included) and disk, both scaled per million sightings.

Usage::

    .venv/bin/python benchmarks/search.py [--n 1000000] [--milvus-n 200000] [--quick] [--json]

Milvus Lite ingests through gRPC from Python dicts; ``--milvus-n`` caps its N (default 200,000)
so that one run stays within ~15 minutes on 2 cores; the output says which N each backend used.
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

from search.index import FaissDayIndex, VectorIndex  # noqa: E402

D = 512
CAMERAS = [f"cam-{i:03d}" for i in range(200)]
DAYS = 30
DAY0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc).timestamp()
NOISE = 1.2
PER_IDENTITY = 20


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


def make_data(n: int, n_queries: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_id = max(n // PER_IDENTITY, 1)
    centres = rng.standard_normal((n_id, D), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, D), np.float32)
    for s in range(0, n, 100_000):
        e = min(s + 100_000, n)
        chunk = centres[rng.integers(0, n_id, e - s)] + NOISE / np.sqrt(D) * rng.standard_normal((e - s, D), dtype=np.float32)
        x[s:e] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    q = centres[rng.integers(0, n_id, n_queries)] + NOISE / np.sqrt(D) * rng.standard_normal((n_queries, D), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    start_s = DAY0 + rng.uniform(0, DAYS * 86400, n)  # unsorted: every prefix spans all days
    cam_idx = rng.integers(0, len(CAMERAS), n)
    t_from = DAY0 + rng.uniform(0, (DAYS - 2) * 86400, n_queries)
    cam_sets = [rng.choice(len(CAMERAS), 10, replace=False) for _ in range(n_queries)]
    return dict(x=x, q=q, start_s=start_s, cam_idx=cam_idx, t_from=t_from, cam_sets=cam_sets)


def exact_top10(data: dict, n: int, qi: int, mode: str) -> set[int]:
    s = data["x"][:n] @ data["q"][qi]
    if mode != "none":
        t0 = data["t_from"][qi]
        mask = (data["start_s"][:n] >= t0) & (data["start_s"][:n] <= t0 + 2 * 86400)
        if mode == "time+camera":
            mask &= np.isin(data["cam_idx"][:n], data["cam_sets"][qi])
        s = np.where(mask, s, -np.inf)
    top = np.argpartition(-s, 10)[:10]
    return {int(i) for i in top if np.isfinite(s[i])}


def run_backend(name: str, idx: VectorIndex, data: dict, n: int, workdir: Path, n_queries: int) -> dict:
    rss0 = rss_bytes()
    cams = [CAMERAS[i] for i in data["cam_idx"][:n]]
    t = time.perf_counter()
    batch = 50_000
    for s in range(0, n, batch):
        e = min(s + batch, n)
        idx.add(np.arange(s, e, dtype=np.int64), data["x"][s:e], cams[s:e], data["start_s"][s:e])
        logging.info("%s: %d / %d added", name, e, n)
    idx.flush()
    build_s = time.perf_counter() - t
    out = {f"{name}_n": n, f"{name}_build_rows_per_s": round(n / build_s, 1)}
    for mode in ("none", "time", "time+camera"):
        lat_ms, recall = [], []
        for qi in range(n_queries):
            kw = {}
            if mode != "none":
                kw = dict(time_from=data["t_from"][qi], time_to=data["t_from"][qi] + 2 * 86400)
                if mode == "time+camera":
                    kw["cameras"] = [CAMERAS[c] for c in data["cam_sets"][qi]]
            t = time.perf_counter()
            hits = idx.search(data["q"][qi], 10, **kw)
            lat_ms.append((time.perf_counter() - t) * 1e3)
            truth = exact_top10(data, n, qi, mode)
            recall.append(len({h.id for h in hits} & truth) / len(truth) if truth else float(not hits))
        key = {"none": "", "time": "_time", "time+camera": "_time_camera"}[mode]
        out[f"{name}{key}_p50_ms"] = round(float(np.percentile(lat_ms, 50)), 2)
        out[f"{name}{key}_p99_ms"] = round(float(np.percentile(lat_ms, 99)), 2)
        out[f"{name}{key}_recall_at_10"] = round(float(np.mean(recall)), 4)
    out[f"{name}_memory_mb_per_million"] = round((rss_bytes() - rss0) / 2**20 * 1e6 / n, 1)
    out[f"{name}_disk_mb_per_million"] = round(sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file()) / 2**20 * 1e6 / n, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="sightings in the embedded index")
    ap.add_argument("--milvus-n", type=int, default=200_000, help="cap on sightings in Milvus Lite (0 = skip)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 / 10,000 sightings, 50 queries")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.n, args.milvus_n, args.queries = 20_000, 10_000, 50
    logging.basicConfig(level=logging.INFO if not args.json else logging.WARNING, format="%(asctime)s %(message)s")
    for noisy in ("faiss.loader", "milvus_lite", "grpc"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    n_m = min(args.n, args.milvus_n)
    data = make_data(args.n, args.queries)
    result: dict = {"dim": D, "cameras": len(CAMERAS), "days": DAYS, "queries": args.queries, "cpus": os.cpu_count()}
    work = Path(tempfile.mkdtemp(prefix="baqylau-search-bench-"))
    try:
        idx = FaissDayIndex(work / "embedded", D, "synthetic")
        result.update(run_backend("embedded", idx, data, args.n, work / "embedded", args.queries))
        idx.close()
        del idx
        if n_m > 0:
            try:
                from search.index_milvus import MilvusIndex
            except ImportError as exc:
                result["milvus_lite_skipped"] = f"pymilvus/milvus-lite not installed: {exc}"
            else:
                mdir = work / "milvus"
                idx = MilvusIndex(str(mdir / "bench.db"), D, "synthetic")
                result.update(run_backend("milvus_lite", idx, data, n_m, mdir, args.queries))
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
