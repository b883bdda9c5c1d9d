"""The Dask engine beside the local engine: the same S3 scan on a moto server, and the cost of a batch.

    python benchmarks/dask_engine.py                                   # ~3 minutes on 2 cores
    python benchmarks/dask_engine.py --objects 50 --size 64K --big 0 --reps 1 --overhead 500   # a quick look

Data as in benchmarks/s3.py (its helpers are reused): log-like text with planted Luhn-valid
numbers, ``--objects`` objects of about ``--size`` bytes under ``s3://bench/small/`` and one
``--big`` object under ``s3://bench/big/`` (over the 64 MiB split threshold: Range tasks), on a
``moto.server.ThreadedMotoServer`` on 127.0.0.1 in this process. Each measurement runs in a
child process of its own, as ``panscan scan`` would (so the coordinator, and the Dask
scheduler a ``LocalCluster`` runs in it, do not share this process's GIL with moto): it lists
the prefix, starts the engine, and scans the listing with

    local   LocalEngine(workers=2)         forked worker processes, pipes
    dask    DaskEngine(workers=2)          a LocalCluster of 2 processes x 1 thread, TCP on loopback

with default batching. The scan time (``engine.run`` over the listing, engine started) is the
median of ``--reps``; the engines take turns, so both see the same drift in the load of a shared
machine. The engine's start-up and close are timed apart. Every run's PAN finding count is
checked against the planted count and every item must be complete.

Per-batch overhead: ``--overhead`` items that need no I/O (a source with no reader: the worker
answers ``skipped`` at once) through the local engine, through the Dask engine with one item per
batch (``batch_items=1``: the cost of one round trip through the scheduler), and with the default
256 items per batch; microseconds per item and milliseconds per batch.

moto and both engines' workers share the machine's cores: the figures compare the engines, they
are not AWS's.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import parse_size
from s3 import BUCKET, MB, aws_env, corpora, start_moto

KEY = b"b" * 32


# --------------------------------------------------------------------------------------------
# One measurement, in a child process.


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the scan ``spec`` describes; its timings and counts."""
    from panscan.engine.dask import DaskEngine
    from panscan.engine.local import LocalEngine
    from panscan.engine.worker import WorkerContext
    from panscan.model import Item, Kind, Status
    from panscan.sources.s3 import S3Options, enumerate_s3

    if spec["target"]:
        items: list[Any] = list(enumerate_s3([spec["target"]], S3Options()))
    else:
        items = [Item(f"none://{i}", "none") for i in range(spec["none"])]
    ctx = WorkerContext(KEY)
    engine: Any
    if spec["engine"] == "local":
        engine = LocalEngine(ctx, 2)
    else:
        engine = DaskEngine(ctx, workers=2, **({"batch_items": spec["batch_items"]} if spec["batch_items"] else {}))
    t0 = time.perf_counter()
    with engine:
        t1 = time.perf_counter()
        results = list(engine.run(items))
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    return {"startup": (t1 - t0) + (t3 - t2), "scan": t2 - t1, "items": len(items), "results": len(results),
            "complete": sum(r.status is Status.COMPLETE for r in results),
            "pans": sum(1 for r in results for f in r.findings if f.kind is Kind.PAN)}


def run_child(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                          env=env, check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise SystemExit(f"measurement {spec} failed: {tail}")
    out: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if out["results"] != out["items"]:
        raise SystemExit(f"{spec['engine']}: {out['results']} results for {out['items']} items")
    return out


def interleaved(reps: int, specs: dict[str, dict[str, Any]], env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each of ``specs`` ``reps`` times, taking turns: the machine's load drifts (it is shared),
    and turns expose every contender to the same drift."""
    out: dict[str, list[dict[str, Any]]] = {label: [] for label in specs}
    for _ in range(reps):
        for label, spec in specs.items():
            out[label].append(run_child(spec, env))
    return out


# --------------------------------------------------------------------------------------------
# The harness.


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(measure(json.loads(argv[1]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=200, help="small objects (default 200)")
    ap.add_argument("--size", type=parse_size, default=parse_size("256K"), help="small object size (default 256K)")
    ap.add_argument("--big", type=parse_size, default=parse_size("96M"),
                    help="size of the one large object (default 96M; 0: none)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--overhead", type=int, default=2000, help="no-I/O items for the per-batch overhead")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="panscan-dask-bench-"))
    server = None
    try:
        sets = corpora(args.objects, args.size, args.big, args.seed, work)

        import boto3
        from botocore.config import Config

        server, endpoint = start_moto()
        home = work / "aws-home"
        home.mkdir()
        env = aws_env(endpoint, home)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"mode": "standard", "max_attempts": 2}))
        s3.create_bucket(Bucket=BUCKET)
        for name, bodies, _ in sets:
            for i, body in enumerate(bodies):
                s3.put_object(Bucket=BUCKET, Key=f"{name}/app-{i:05d}.log", Body=body)

        rows = []
        for name, bodies, planted in sets:
            size = sum(map(len, bodies))
            del bodies
            specs = {kind: {"engine": kind, "target": f"s3://{BUCKET}/{name}/", "none": 0, "batch_items": 0}
                     for kind in ("local", "dask")}
            for kind, runs in interleaved(args.reps, specs, env).items():
                for r in runs:
                    if r["complete"] != r["items"] or r["pans"] != planted:
                        raise SystemExit(f"{name} {kind}: {r['complete']}/{r['items']} complete, "
                                         f"{r['pans']} PANs found, {planted} planted")
                scans = [r["scan"] for r in runs]
                scan = statistics.median(scans)
                startup = statistics.median(r["startup"] for r in runs)
                objects = runs[0]["items"]
                rows.append({"set": name, "engine": kind, "objects": objects, "mb": size / MB, "planted": planted,
                             "scan": scan, "startup": startup, "objects_per_s": objects / scan,
                             "mb_per_s": size / MB / scan})
                print(f"  {name:5} {kind:5}: scan {scan:6.2f} s ({min(scans):.2f}-{max(scans):.2f}), "
                      f"start-up + close {startup:.2f} s", file=sys.stderr)
        print_throughput(rows)
        print()
        print_overhead(overhead(args.overhead, args.reps, env), args.overhead)
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def overhead(n: int, reps: int, env: dict[str, str]) -> list[tuple[str, int, float]]:
    """(engine, items per batch (0: no batches), median scan seconds) for ``n`` no-I/O items."""
    specs = {"local 0": {"engine": "local", "target": "", "none": n, "batch_items": 0},
             "dask 1": {"engine": "dask", "target": "", "none": n, "batch_items": 1},
             "dask 256": {"engine": "dask", "target": "", "none": n, "batch_items": 256}}
    out = []
    for label, runs in interleaved(reps, specs, env).items():
        kind, per_batch = label.split()
        scans = [r["scan"] for r in runs]
        out.append((kind, int(per_batch), statistics.median(scans)))
        print(f"  overhead {label:8}: {out[-1][2]:.2f} s ({min(scans):.2f}-{max(scans):.2f})", file=sys.stderr)
    return out


def print_throughput(rows: list[dict[str, Any]]) -> None:
    print("| data | engine (2 workers) | objects | MB | planted = found | scan s (median) | objects/s | MB/s "
          "| start-up + close s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['engine']} | {r['objects']} | {r['mb']:.1f} | {r['planted']} | {r['scan']:.2f} "
              f"| {r['objects_per_s']:.1f} | {r['mb_per_s']:.1f} | {r['startup']:.2f} |")


def print_overhead(rows: list[tuple[str, int, float]], n: int) -> None:
    print(f"| engine (2 workers) | items per batch | {n} no-I/O items, s (median) | per item, µs | per batch, ms |")
    print("|---|---|---|---|---|")
    for kind, per_batch, seconds in rows:
        if not per_batch:  # the local engine has no batches: up to 8 tasks per pipe write
            print(f"| {kind} | — | {seconds:.2f} | {seconds / n * 1e6:.0f} | — |")
            continue
        batches = -(-n // per_batch)
        print(f"| {kind} | {per_batch} | {seconds:.2f} | {seconds / n * 1e6:.0f} | {seconds / batches * 1e3:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
