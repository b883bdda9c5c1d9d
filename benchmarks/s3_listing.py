"""Listing one large versioned bucket behind request latency: sequential vs fanned out over prefixes.

    python benchmarks/s3_listing.py                       # 20,000 versions in 40 prefixes, +30 ms
    python benchmarks/s3_listing.py --versions 4000 --reps 1

It starts a moto server on 127.0.0.1 (``s3.start_moto``) and the fault proxy of the tests in front
of it, holding every bucket request (the listings) ``--delay`` seconds, writes ``--versions``
versions (two per key) under ``--prefixes`` prefixes, and times ``enumerate_s3`` over the bucket
with fan-out switched off (the page-by-page listing of before) and on; versions/s, medians of
``--reps`` runs, and the records of both compared.

moto builds each ListObjectVersions answer from a deep copy of every version in the bucket
(seconds per request at 20,000 versions, whatever the prefix), which would measure moto, not the
listing: unless ``--moto-as-is``, that copy is made shallow here, in this process only (the
answers are the same). moto still sorts the whole bucket per request, on the same 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "faults"))

from s3 import aws_env, start_moto  # noqa: E402

BUCKET = "listing"


class _ShallowCopies:
    """Stands in for the ``copy`` module inside moto's S3 backend: ``deepcopy`` of a key's
    versions makes shallow views whose ``__del__`` leaves the shared buffer open."""

    _views: dict[type, type] = {}

    def deepcopy(self, versions: list[Any]) -> list[Any]:
        out = []
        for v in versions:
            cls = type(v)
            view = self._views.setdefault(cls, type(cls.__name__, (cls,), {"__del__": lambda self: None}))
            clone = object.__new__(view)
            clone.__dict__.update(v.__dict__)
            out.append(clone)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def populate(prefixes: int, versions: int) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    backend.put_bucket_versioning(BUCKET, "Enabled")
    for n in range(versions):
        backend.put_object(BUCKET, f"p{n % prefixes:03d}/key-{n // 2:06d}.log", b"x" * 64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", type=int, default=20_000)
    ap.add_argument("--prefixes", type=int, default=40)
    ap.add_argument("--delay", type=float, default=0.030, help="seconds added to every request (default 0.030)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--moto-as-is", action="store_true", help="keep moto's deep copy of the bucket per request")
    args = ap.parse_args(argv)

    import os

    from proxy import FaultProxy

    if not args.moto_as_is:
        import moto.s3.models

        moto.s3.models.copy = _ShallowCopies()  # type: ignore[assignment]
    server, endpoint = start_moto()
    proxy = FaultProxy(endpoint).start()
    work = Path(tempfile.mkdtemp(prefix="panscan-s3-listing-"))
    try:
        os.environ.update(aws_env(proxy.endpoint, work))
        from panscan.sources import s3 as s3_source
        from panscan.sources.s3 import S3Options, enumerate_s3

        populate(args.prefixes, args.versions)
        proxy.hold_bucket_requests(BUCKET, args.delay)
        fan_out = s3_source._fan_out_point
        times: dict[str, list[float]] = {"sequential": [], "fanned out": []}
        requests: dict[str, int] = {}
        results: dict[str, Any] = {}
        for _ in range(args.reps):
            for mode in times:
                s3_source._fan_out_point = fan_out if mode == "fanned out" else (lambda page, prefix: None)
                proxy.seen.clear()
                t0 = time.perf_counter()
                records = list(enumerate_s3([f"s3://{BUCKET}"], S3Options()))
                times[mode].append(time.perf_counter() - t0)
                requests[mode] = sum("versions" in s.query for s in proxy.seen)
                results[mode] = sorted(map(repr, records))
                print(f"  {mode}: {len(records)} records, {requests[mode]} requests, {times[mode][-1]:.2f} s",
                      file=sys.stderr)
        s3_source._fan_out_point = fan_out
        if results["sequential"] != results["fanned out"] or len(results["sequential"]) != args.versions:
            raise SystemExit("the fanned-out listing differs from the sequential one")
        print(f"| listing {args.versions:,} versions in {args.prefixes} prefixes, +{args.delay * 1000:.0f} ms "
              f"| requests | wall s (median) | versions/s |")
        print("|---|---|---|---|")
        for mode, runs in times.items():
            median = statistics.median(runs)
            print(f"| {mode} | {requests[mode]} | {median:.2f} | {args.versions / median:,.0f} |")
        return 0
    finally:
        proxy.stop()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
