"""Concurrent S3 listing (issue 15): buckets listed at once, a large bucket's ListObjectVersions
fanned out over key prefixes, and the caller still fed lazily with bounded memory.

Every test compares against, or counts requests of, a real moto server over HTTP; the fault
proxy of ``tests/faults`` holds listing requests so that overlap can be counted.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from proxy import FaultProxy, Seen
from s3_server import MotoS3, moto_server, s3, versioned_bucket

from panscan.model import Item, ItemResult, Reason, Status
from panscan.sources import s3 as s3_source
from panscan.sources.s3 import S3Options, enumerate_s3

# pytest finds the fixtures in the module's namespace; the tests' ``s3`` parameters are them.
FIXTURES = (moto_server, s3)

BUCKET = "fanned"
PREFIXES = 20
KEYS_PER_PREFIX = 5
VERSIONS_PER_KEY = 29  # 20 x 5 x 29 = 2,900 versions under prefixes, plus the top-level keys
TOP_KEYS = 10
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def record_tuple(record: Item | ItemResult) -> tuple[Any, ...]:
    item = record.item if isinstance(record, ItemResult) else record
    verdict = (str(record.status), str(record.reason), record.detail) if isinstance(record, ItemResult) else ()
    return (item, *verdict)


def comparable(records: list[Item | ItemResult]) -> list[tuple[Any, ...]]:
    return sorted((record_tuple(r) for r in records), key=repr)


def sequential(targets: list[str], options: S3Options, monkeypatch: pytest.MonkeyPatch) -> list[Item | ItemResult]:
    """What the plain page-by-page listing yields (fan-out switched off)."""
    with monkeypatch.context() as m:
        m.setattr(s3_source, "_fan_out_point", lambda page, prefix: None)
        return list(enumerate_s3(targets, options))


def populate(s3: MotoS3, bucket: str = BUCKET) -> None:
    """~3,000 versions: many per key, each with its own LastModified, delete markers hiding
    some keys (their versions still listed), some keys deleted and written again."""
    c = versioned_bucket(s3, bucket)
    when = BASE
    keys = [f"p{p:02d}/k{k}.log" for p in range(PREFIXES) for k in range(KEYS_PER_PREFIX)]
    keys += [f"top-{k:02d}.txt" for k in range(TOP_KEYS)]
    for n, key in enumerate(keys):
        for v in range(VERSIONS_PER_KEY if "/" in key else 3):
            version = s3.put_directly(bucket, key, f"{key} v{v}\n".encode())
            s3.set_last_modified(bucket, key, version, when)
            when += timedelta(seconds=1)
        if n % 7 == 0:
            marker = c.delete_object(Bucket=bucket, Key=key)["VersionId"]
            s3.set_last_modified(bucket, key, marker, when)
            when += timedelta(seconds=1)
        if n % 14 == 0:  # written again after the marker: the marker sits between versions
            version = s3.put_directly(bucket, key, b"again\n")
            s3.set_last_modified(bucket, key, version, when)
            when += timedelta(seconds=1)


def listing_requests(s3: MotoS3, bucket: str) -> list[Any]:
    with s3.lock:
        return [r for r in s3.requests if r.path.strip("/") == bucket and "versions" in r.query]


def test_fanned_out_listing_yields_exactly_the_records_of_the_sequential_listing(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(s3)
    expected = sequential([f"s3://{BUCKET}"], S3Options(), monkeypatch)
    s3.requests.clear()

    fanned = list(enumerate_s3([f"s3://{BUCKET}"], S3Options()))

    assert comparable(fanned) == comparable(expected)
    assert len(fanned) == len(set(map(record_tuple, fanned))), "a version listed twice"
    # Every version but no delete marker: 2,900 + 30 + one rewrite per 14 keys.
    assert len(fanned) == PREFIXES * KEYS_PER_PREFIX * VERSIONS_PER_KEY + TOP_KEYS * 3 + len(range(0, 110, 14))
    # The listing really was fanned out: one delimiter listing, then a listing per prefix.
    requests = listing_requests(s3, BUCKET)
    assert sum("delimiter" in r.query for r in requests) == 1
    assert {r.query["prefix"][0] for r in requests if "prefix" in r.query} >= {
        f"p{p:02d}/" for p in range(7, PREFIXES)}


def test_noncurrent_since_of_a_fanned_out_listing_is_when_the_next_newer_version_or_marker_came(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(s3)
    expected = {(i.location, i.version_id): i.noncurrent_since
                for i in sequential([f"s3://{BUCKET}"], S3Options(), monkeypatch) if isinstance(i, Item)}
    fanned = [i for i in enumerate_s3([f"s3://{BUCKET}"], S3Options()) if isinstance(i, Item)]

    assert {(i.location, i.version_id): i.noncurrent_since for i in fanned} == expected
    # p00/k0.log (key 0): 29 versions, a marker, a rewrite. Its last version before the
    # marker stopped being current when the marker came, one second after it was written.
    key0 = sorted((i for i in fanned if i.location == f"s3://{BUCKET}/p00/k0.log"),
                  key=lambda i: i.last_modified or 0)
    assert [i.is_latest for i in key0] == [False] * VERSIONS_PER_KEY + [True]
    hidden = key0[VERSIONS_PER_KEY - 1]
    assert hidden.noncurrent_since == (hidden.last_modified or 0) + 1
    assert key0[-1].noncurrent_since is None
    assert all(older.noncurrent_since == newer.last_modified
               for older, newer in itertools.pairwise(key0[:VERSIONS_PER_KEY]))


def test_latest_only_fanned_out_keeps_exactly_the_current_versions(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(s3)
    options = S3Options(latest_only=True, excludes=(f"s3://{BUCKET}/p03/*",))
    expected = sequential([f"s3://{BUCKET}"], options, monkeypatch)

    fanned = list(enumerate_s3([f"s3://{BUCKET}"], options))

    assert comparable(fanned) == comparable(expected)
    assert sum(isinstance(r, ItemResult) and r.reason is Reason.EXCLUDED for r in fanned) == KEYS_PER_PREFIX


class OverlapProxy(FaultProxy):
    """The fault proxy, counting the ListObjectVersions requests it holds at the same time."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.holding = 0
        self.peak_listings = 0
        self._count_lock = threading.Lock()

    def _hold(self, seen: Seen) -> str:
        listing = "versions" in seen.query
        if listing:
            with self._count_lock:
                self.holding += 1
                self.peak_listings = max(self.peak_listings, self.holding)
        try:
            held: str = super()._hold(seen)
            return held
        finally:
            if listing:
                with self._count_lock:
                    self.holding -= 1


@pytest.fixture
def proxy(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[OverlapProxy]:
    with OverlapProxy(s3.endpoint) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.endpoint)
        yield p


def test_listings_of_the_prefixes_of_a_large_bucket_are_in_flight_together(
        s3: MotoS3, proxy: OverlapProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(s3)
    expected = sequential([f"s3://{BUCKET}"], S3Options(), monkeypatch)
    proxy.hold_bucket_requests(BUCKET, 0.3)

    fanned = list(enumerate_s3([f"s3://{BUCKET}"], S3Options()))

    assert comparable(fanned) == comparable(expected)
    assert proxy.peak_listings >= 4, f"at most {proxy.peak_listings} listing requests overlapped"


def small_bucket(s3: MotoS3, name: str, keys: int) -> None:
    c = versioned_bucket(s3, name)
    for k in range(keys):
        c.put_object(Bucket=name, Key=f"dir/{k}.txt", Body=b"x")
        c.put_object(Bucket=name, Key=f"dir/{k}.txt", Body=b"y")


@pytest.mark.parametrize("every_bucket", [False, True], ids=["named buckets", "s3://"])
def test_buckets_are_listed_together_and_a_denied_one_is_one_error_record(
        s3: MotoS3, proxy: OverlapProxy, every_bucket: bool) -> None:
    names = ["bucket-a", "bucket-b", "bucket-denied", "bucket-c", "bucket-d"]
    for n, name in enumerate(names):
        small_bucket(s3, name, 3 + n)
    for name in names:
        proxy.hold_bucket_requests(name, 0.3)
    proxy.deny_bucket("bucket-denied")
    targets = ["s3://"] if every_bucket else [f"s3://{n}" for n in names]

    records = list(enumerate_s3(targets, S3Options()))

    errors = [r for r in records if isinstance(r, ItemResult)]
    assert errors == [ItemResult(Item("s3://bucket-denied", "s3"), Status.ERROR, Reason.PERMISSION_DENIED,
                                 "cannot list the versions in bucket bucket-denied: AccessDenied: access denied")]
    items = [r for r in records if isinstance(r, Item)]
    assert {(i.location.split("/")[2], i.location.split("/", 3)[3]) for i in items} == {
        (name, f"dir/{k}.txt") for n, name in enumerate(names) if name != "bucket-denied" for k in range(3 + n)}
    assert len(items) == 2 * sum(3 + n for n, name in enumerate(names) if name != "bucket-denied")
    assert proxy.peak_listings >= 3, f"at most {proxy.peak_listings} listing requests overlapped"


def test_expired_credentials_while_fanned_out_are_one_error_record_for_the_bucket(
        s3: MotoS3, proxy: OverlapProxy) -> None:
    populate(s3)
    proxy.expire_after(0)

    records = list(enumerate_s3([f"s3://{BUCKET}"], S3Options()))

    assert len(records) == 1
    record = records[0]
    assert isinstance(record, ItemResult) and record.item.location == f"s3://{BUCKET}"
    assert (record.status, record.reason) == (Status.ERROR, Reason.PERMISSION_DENIED)
    assert (record.detail or "").startswith(f"cannot list the versions in bucket {BUCKET}: ExpiredToken")


def test_listing_threads_stay_within_the_queue_bound_of_a_slow_caller(
        s3: MotoS3, proxy: OverlapProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(s3)
    monkeypatch.setattr(s3_source, "LISTING_QUEUE_PAGES", 2)
    expected = sequential([f"s3://{BUCKET}"], S3Options(), monkeypatch)
    proxy.seen.clear()

    records = enumerate_s3([f"s3://{BUCKET}"], S3Options())
    first = next(records)
    time.sleep(3)  # every listing thread that could run ahead has by now
    ahead = [s for s in proxy.seen if "versions" in s.query]
    rest = list(records)

    # Listing the whole bucket takes 23 requests: the first page, the delimiter listing, 20
    # prefixes (less those the first page covered) and the top-level keys. A caller holding one
    # record lets at most the pages in the queue, one page per thread and the page it reads from
    # be listed: the first page and the delimiter listing (one page each) included.
    total = [s for s in proxy.seen if "versions" in s.query]
    bound = 2 + s3_source.LISTING_QUEUE_PAGES + s3_source.LISTING_THREADS + 1
    assert len(ahead) <= bound < len(total), (len(ahead), len(total))
    assert comparable([first, *rest]) == comparable(expected)


def test_a_caller_that_stops_reading_stops_the_listing(s3: MotoS3, proxy: OverlapProxy,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    populate(s3)
    monkeypatch.setattr(s3_source, "LISTING_QUEUE_PAGES", 1)
    records = enumerate_s3([f"s3://{BUCKET}"], S3Options())
    assert isinstance(records, Generator)
    next(records)
    time.sleep(1)
    records.close()
    # A thread in a request finishes it (on a loaded machine that takes a while), then sees
    # the stop and ends: every listing thread is gone within the bound...
    deadline = time.monotonic() + 20
    while [t for t in threading.enumerate() if t.name.startswith("panscan-s3-list")]:
        assert time.monotonic() < deadline, "listing threads still running after the caller stopped"
        time.sleep(0.1)
    settled = len([s for s in proxy.seen if "versions" in s.query])
    time.sleep(2)
    # ... and no request is sent after that.
    assert len([s for s in proxy.seen if "versions" in s.query]) == settled
