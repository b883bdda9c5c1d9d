"""Metadata-only retention sweep rate: ``panscan retention`` over an S3 Inventory report and over a
ListObjectVersions listing, both served by a moto server on loopback.

    python benchmarks/retention.py                          # 100,000 inventory rows, 5,000 listed versions
    python benchmarks/retention.py --rows 20000 --versions 1000 --reps 1   # a quick look

The inventory is a generated CSV.gz of ``--rows`` versions (ages spread over 400 days, a third
in GLACIER) with its manifest; the listing is a versioned bucket of ``--versions`` versions stored
through moto's backend in this process. Each sweep is the whole command (process start, listing,
verdicts, jsonl report written to a file), median of ``--reps``; the rate is items per second.
moto builds every ListObjectVersions page from a deep copy of the whole bucket, so the listing
figure is moto's cost far more than panscan's; the inventory figure is panscan's own.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3 import aws_env, panscan_command, start_moto

AS_OF = datetime(2026, 9, 30, tzinfo=UTC)


def inventory(client: object, rows: int, glacier_every: int = 3) -> str:
    """Upload a generated inventory of ``rows`` versions (one in ``glacier_every`` in GLACIER);
    returns its s3-inventory:// target."""
    text = io.StringIO()
    out = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for i in range(rows):
        modified = (AS_OF - timedelta(days=(i * 7919) % 400)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        out.writerow(["source", f"orders/{i // 1000:04d}/o{i}.csv", f"v{i}", "true", "false", "2048",
                      modified, "0" * 32, "GLACIER" if i % glacier_every == 0 else "STANDARD", "false"])
    data = gzip.compress(text.getvalue().encode())
    put = client.put_object  # type: ignore[attr-defined]
    put(Bucket="inventory", Key="inv/data/part-0.csv.gz", Body=data)
    manifest = {"sourceBucket": "source", "destinationBucket": "arn:aws:s3:::inventory",
                "version": "2016-11-30", "creationTimestamp": "1700000000000", "fileFormat": "CSV",
                "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, "
                              "StorageClass, IsMultipartUploaded",
                "files": [{"key": "inv/data/part-0.csv.gz", "size": len(data),
                           "MD5checksum": hashlib.md5(data).hexdigest()}]}
    put(Bucket="inventory", Key="inv/manifest.json", Body=json.dumps(manifest).encode())
    return "s3-inventory://inventory/inv/manifest.json"


def listed_bucket(versions: int) -> str:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(versions):
        backend.put_object("listed", f"k{i % (versions // 4 or 1):05d}", b"x" * 64)
    return "s3://listed"


def sweep(target: str, policy: Path, env: dict[str, str], out: Path) -> tuple[float, int]:
    cmd = [*panscan_command(), "retention", target, "--policy", str(policy), "--as-of", AS_OF.isoformat(),
           "--format", "jsonl", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=out.parent, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"panscan retention exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    summary = json.loads(out.read_text().splitlines()[-1])
    return elapsed, int(summary["items"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="inventory rows (default 100000)")
    ap.add_argument("--versions", type=int, default=5_000, help="listed versions (default 5000)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="panscan-retention-bench-"))
    server, endpoint = start_moto()
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="inventory")
        client.create_bucket(Bucket="listed")
        client.put_bucket_versioning(Bucket="listed", VersioningConfiguration={"Status": "Enabled"})
        targets = [("inventory", inventory(client, args.rows), args.rows)]
        if args.versions:
            targets.append(("listing", listed_bucket(args.versions), args.versions))
        policy = work / "policy.toml"
        policy.write_text('[retention]\ndefault_max_age = "180d"\n')
        env = aws_env(endpoint, work)
        print(f"{'source':<10} {'items':>8} {'median s':>9} {'items/s':>9}  runs")
        for name, target, expected in targets:
            times = []
            for _ in range(args.reps):
                elapsed, items = sweep(target, policy, env, work / "out.jsonl")
                if items != expected:
                    raise SystemExit(f"{name}: {items} items reported, {expected} expected")
                times.append(elapsed)
            median = statistics.median(times)
            print(f"{name:<10} {expected:>8} {median:>9.2f} {expected / median:>9.0f}  "
                  + " ".join(f"{t:.2f}" for t in times))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
