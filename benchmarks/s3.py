"""S3 throughput: ``panscan scan s3://...`` against a moto server on loopback, beside the same data
as local files.

    python benchmarks/s3.py                         # 200 x 256 KB objects + one 96 MB object, ~80 s
    python benchmarks/s3.py --objects 50 --size 64K --big 0 --reps 1   # a quick look

It starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (in this process; nothing leaves
loopback), generates log-like text with planted Luhn-valid numbers (corpus.py, kind ``log``),
uploads it as ``--objects`` objects of about ``--size`` bytes under ``s3://bench/small/`` (cut at
line ends, so the planted count is kept) and one object of ``--big`` bytes under ``s3://bench/big/``
(above panscan's 64 MiB split threshold, so it is read as Range tasks), and writes the same bytes
as files in a temp dir. Then, for each set, it measures the whole command (wall time, median of
``--reps``):

    s3-w1   panscan scan s3://bench/PREFIX --workers 1
    s3-w2   panscan scan s3://bench/PREFIX --workers 2
    local   panscan scan DIR --workers 2

and prints objects/s and MB/s. Every run's PAN finding count is checked against the planted count
and every item must be complete. moto answers from memory but through a Python WSGI server in
this process, about 10 ms a GetObject: the figures are panscan's overhead plus moto's, not AWS's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import generate, parse_size

MB = 1 << 20
BUCKET = "bench"


def panscan_command() -> list[str]:
    script = Path(sys.executable).parent / "panscan"
    if script.exists():
        return [str(script)]
    found = shutil.which("panscan")
    return [found] if found else [sys.executable, "-m", "panscan"]


def split_lines(data: bytes, n: int) -> list[bytes]:
    """``data`` in ``n`` pieces of about equal size, each ending at a line end."""
    pieces, start = [], 0
    step = len(data) // n
    for i in range(n):
        if i == n - 1:
            end = len(data)
        else:
            end = data.find(b"\n", max(start, (i + 1) * step)) + 1 or len(data)
        pieces.append(data[start:end])
        start = end
    return [p for p in pieces if p]


def corpora(objects: int, size: int, big: int, seed: int, work: Path) -> list[tuple[str, list[bytes], int]]:
    """The object sets: ``objects`` log-like pieces of about ``size`` bytes cut at line ends
    ("small"), and one object of ``big`` bytes ("big", when big > 0); each with its planted count."""
    sets: list[tuple[str, list[bytes], int]] = []
    corpus = work / "small.dat"
    planted = generate("log", objects * size, corpus, seed=seed)
    sets.append(("small", split_lines(corpus.read_bytes(), objects), planted))
    corpus.unlink()
    if big:
        corpus = work / "big.dat"
        planted = generate("log", big, corpus, seed=seed + 1)
        sets.append(("big", [corpus.read_bytes()], planted))
        corpus.unlink()
    return sets


def start_moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def aws_env(endpoint: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    })
    return env


def run_scan(target: str, workers: int, env: dict[str, str], out: Path) -> tuple[float, int, int]:
    """Wall time, PAN findings, items (all must be complete) of one whole command."""
    cmd = [*panscan_command(), "scan", target, "--workers", str(workers), "--no-state",
           "--format", "jsonl", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False, env=env, cwd=out.parent)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 1:
        tail = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise SystemExit(f"panscan exited {proc.returncode} on {target} (expected 1): {tail}")
    findings = items = 0
    with open(out, "rb") as fh:
        for line in fh:
            record = json.loads(line)
            if record.get("type") == "finding" and record.get("kind") == "pan":
                findings += 1
            elif record.get("type") == "item":
                items += 1
                if record.get("status") != "complete":
                    raise SystemExit(f"item not complete: {record.get('status')} {record.get('reason')}")
    out.unlink()
    return elapsed, findings, items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=200, help="small objects (default 200)")
    ap.add_argument("--size", type=parse_size, default=parse_size("256K"), help="small object size (default 256K)")
    ap.add_argument("--big", type=parse_size, default=parse_size("96M"),
                    help="size of the one large object (default 96M; 0: none)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="panscan-s3-bench-"))
    server = None
    try:
        t0 = time.perf_counter()
        sets = corpora(args.objects, args.size, args.big, args.seed, work)
        print(f"corpora generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

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
        t0 = time.perf_counter()
        for name, bodies, _ in sets:
            (work / "local" / name).mkdir(parents=True)
            for i, body in enumerate(bodies):
                key = f"{name}/app-{i:05d}.log"
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                (work / "local" / key).write_bytes(body)
        print(f"uploaded to moto in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        rows = []
        out = work / "out.jsonl"
        for name, bodies, planted in sets:
            size = sum(map(len, bodies))
            del bodies
            for label, target, workers in (("s3", f"s3://{BUCKET}/{name}/", 1), ("s3", f"s3://{BUCKET}/{name}/", 2),
                                           ("local", str(work / "local" / name), 1),
                                           ("local", str(work / "local" / name), 2)):
                times = []
                for _ in range(args.reps):
                    elapsed, found, items = run_scan(target, workers, env, out)
                    if found != planted:
                        raise SystemExit(f"{label} {name} w{workers}: found {found} PANs, planted {planted}")
                    times.append(elapsed)
                median = statistics.median(times)
                row = {"set": name, "source": label, "workers": workers, "objects": items, "mb": size / MB,
                       "planted": planted, "seconds": median, "spread": (min(times), max(times)),
                       "objects_per_s": items / median, "mb_per_s": size / MB / median}
                rows.append(row)
                print(f"  {name:5} {label:5} w{workers}: {median:6.2f} s  ({min(times):.2f}-{max(times):.2f})",
                      file=sys.stderr)
        print_table(rows)
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| data | source | workers | objects | MB | planted = found | wall s (median) | objects/s | MB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['source']} | {r['workers']} | {r['objects']} | {r['mb']:.1f} | {r['planted']} "
              f"| {r['seconds']:.2f} | {r['objects_per_s']:.1f} | {r['mb_per_s']:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
