"""Amazon S3: every version of every object as an ``Item``, and one version opened as a file.

What callers may rely on:

* :func:`enumerate_s3` is a lazy generator over ``s3://bucket[/prefix]`` targets (and
  ``s3://`` alone: every bucket ListBuckets returns, each listed in its own region). It
  lists with ListObjectVersions in a few threads (targets and buckets at once, and a large
  listing fanned out over its key prefixes), which stay a bounded number of pages ahead of the
  caller: records of different targets interleave, and memory does not grow with the number
  of versions. Every
  version is one record, including versions hidden behind a delete marker and the
  ``null`` version of objects written before versioning was enabled; delete markers
  themselves hold no data and produce no record. With ``latest_only`` only current
  versions are kept (a key whose current version is a delete marker yields nothing).
* Items have location ``s3://bucket/key``, source ``"s3"``, and the listing's version id,
  is-latest flag, size, last-modified time (POSIX seconds), storage class and ETag.
* Versions in GLACIER or DEEP_ARCHIVE are never read (no GetObject is sent): each is an
  ``ItemResult`` ``skipped``/``INVALID_OBJECT_STATE`` carrying its size and age.
  INTELLIGENT_TIERING versions are listed as readable, because a listing does not say
  whether they sit in an archive tier: :func:`open_s3` asks HeadObject first, and one in the
  Archive Access or Deep Archive Access tier without a ready restored copy is refused as
  ``INVALID_OBJECT_STATE`` without any GetObject.
* A target that cannot be listed (AccessDenied, NoSuchBucket, an unreachable endpoint)
  becomes one ``error`` ``ItemResult`` for ``s3://bucket[/prefix]`` (``PERMISSION_DENIED``,
  ``NOT_FOUND``, ``READ_ERROR``) and the other targets are still listed. Records already
  yielded for a target whose listing fails on a later page stay valid.
* :func:`open_s3` opens exactly the listed version (GetObject with its VersionId, ``null``
  included) as a read-only, seekable binary file; see :class:`S3Object`. It raises only
  ``SourceError`` (reasons in :func:`reason_for`). A read that fails later raises
  :class:`S3ReadError`, and :func:`read_failure` tells the S3 reason afterwards.
* What an object carries besides its content is given as text for the worker to scan:
  :func:`object_metadata` (user metadata and Content-Disposition, from the GetObject response
  the object was opened with: no request of its own) and :func:`object_tags` (one
  GetObjectTagging per version, only when asked for).
* Details and messages name the bucket and the S3 error code, never object content; keys
  may appear only inside locations, which the engine masks.
"""

from __future__ import annotations

import errno
import fnmatch
import http.client
import io
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import urllib3.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from panscan.model import ARCHIVED_STORAGE_CLASSES, Item, ItemResult, Reason, Status
from panscan.sources import aws
from panscan.sources.files import SourceError
from panscan.sources.remote import RemoteFile

SOURCE = "s3"
SCHEME = "s3://"

logger = logging.getLogger(__name__)

ARCHIVED_CLASSES = ARCHIVED_STORAGE_CLASSES
#: Range requests made in a row, without a byte of progress, to resume a body cut
#: mid-stream before the read fails (READ_ERROR).
MAX_RESUMES = 5
#: The first bytes of an object that an :class:`S3Object` keeps once read, so that reading
#: them again (a type sniff, then the scan from offset 0) sends no second GetObject.
KEPT_HEAD = 64 * 1024
#: Intelligent-Tiering tiers (HeadObject's ``ArchiveStatus``) that GetObject refuses until
#: the object is restored.
IT_ARCHIVE_TIERS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})

# What a body cut mid-stream looks like, depending on where the cut is noticed (urllib3,
# http.client, botocore's content-length check, the socket).
_CUT = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionClosedError,
        urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, http.client.IncompleteRead,
        ConnectionError, TimeoutError)


@dataclass(frozen=True)
class S3Options:
    """How to list: ``latest_only`` keeps current versions only; ``excludes`` are fnmatch
    globs over ``s3://bucket/key`` locations (matches are ``skipped``/``EXCLUDED``);
    ``restore`` (``Bulk``, ``Standard``, ``Expedited``) asks S3 to restore archived versions
    for ``restore_days`` days, and reads the ones whose restored copy is ready."""

    latest_only: bool = False
    excludes: tuple[str, ...] = ()
    restore: str | None = None
    restore_days: int = 7
    # Versions whose restore an earlier run requested (the state's pending restores): their
    # restored copy is read when ready, even without ``restore``; nothing new is requested.
    restore_pending: Callable[[Item], bool] | None = None
    # Yield None in place of a record while none is ready (at most every WAIT_SECONDS): a
    # caller that has other work (collecting results from workers) is not held by a listing
    # waiting for an answer.
    waiting: bool = False


#: How long a ``waiting`` listing waits for a record before it yields None.
WAIT_SECONDS = 0.2


#: Retrieval list prices (USD per GB, USD per 1,000 requests) and times, us-east-1, for the
#: estimate printed before restores are requested. Check your region's price list.
RESTORE_PRICES: dict[tuple[str, str], tuple[float, float, str]] = {
    ("GLACIER", "Expedited"): (0.03, 10.0, "1-5 minutes"),
    ("GLACIER", "Standard"): (0.01, 0.05, "3-5 hours"),
    ("GLACIER", "Bulk"): (0.0025, 0.025, "5-12 hours"),
    ("DEEP_ARCHIVE", "Standard"): (0.02, 0.10, "within 12 hours"),
    ("DEEP_ARCHIVE", "Bulk"): (0.0025, 0.025, "within 48 hours"),
}


def is_s3_target(target: str) -> bool:
    return target.startswith(SCHEME)


def split_location(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); the key is everything after the first ``/``
    (it may be empty, start with ``/`` or contain ``//``)."""
    if not is_s3_target(location):
        raise ValueError("not an s3:// location")
    bucket, _, key = location[len(SCHEME):].partition("/")
    return bucket, key


# --- enumeration -----------------------------------------------------------------------


def enumerate_s3(targets: Sequence[str], options: S3Options) -> Iterator[Item | ItemResult | None]:
    """A record for every object version under ``targets`` (see the module docstring).

    Targets (and, for ``s3://``, buckets) are listed concurrently by up to
    :data:`LISTING_THREADS` threads, so records of different targets interleave; the records
    of one target keep their listing order within each key prefix listed on its own. Listing
    threads stay at most :data:`LISTING_QUEUE_PAGES` pages ahead of the caller (each thread
    then holds one more page), so memory does not grow with the number of versions. A large
    listing is fanned out over key prefixes (see :func:`_fan_out_point`): the set of records
    and each record are those of the plain sequential listing."""
    listing = _Listing(options)
    try:
        for target in targets:
            bucket, prefix = split_location(target)
            if bucket:
                listing.add(bucket, prefix, None, locate=False)
                continue
            failure = listing.add_every_bucket()
            if failure is not None:
                yield failure
        yield from listing.records()
    finally:
        listing.close()


#: ListObjectVersions requests in flight at once (across targets and key prefixes): listing
#: is bound by request latency (AWS answers a page in tens of ms), not by this process.
LISTING_THREADS = 8
#: Pages of records the listing threads may hold ready for the caller before they wait.
LISTING_QUEUE_PAGES = 4
#: Versions in a page of ListObjectVersions (the most S3 returns).
PAGE_SIZE = 1000


@dataclass(eq=False)
class _Target:
    """One ``s3://bucket[/prefix]`` being listed, and what its listing threads share."""

    bucket: str
    prefix: str
    region: str | None
    locate: bool  # look the region up first (a bucket found by ListBuckets)
    s3: Any = None
    pending: int = 0  # units submitted and not finished; the target is done at 0
    failed: bool = False
    requested: list[Item] = field(default_factory=list)  # restores requested (the caller's side)

    @property
    def location(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


class _Stopped(Exception):
    """The caller stopped reading: a listing thread drops what it was doing."""


# A message from a listing thread: ("records", target, [records]), ("done", target, None)
# once every unit of the target finished, or ("bug", target, exception).
_Message = tuple[str, _Target, Any]


class _Listing:
    """The listing threads of one :func:`enumerate_s3` call and the bounded queue between
    them and the caller."""

    def __init__(self, options: S3Options) -> None:
        self._options = options
        self._excluded_by = exclude_matcher(options.excludes)
        self._queue: queue.Queue[_Message] = queue.Queue(maxsize=LISTING_QUEUE_PAGES)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Daemon threads of our own rather than a ThreadPoolExecutor: the interpreter joins an
        # executor's threads at exit, so a listing request that hangs (a stalled connection)
        # would keep the scan from ending after Ctrl-C.
        self._jobs: queue.SimpleQueue[tuple[_Target, Callable[..., None], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._targets = 0
        # Built here, in the caller's thread: a client built in a listing thread would take the
        # client factory's lock there, and a worker forked meanwhile would inherit it held.
        self._s3 = aws.client("s3")

    # the caller's side

    def add(self, bucket: str, prefix: str, region: str | None, *, locate: bool) -> None:
        target = _Target(bucket, prefix, region, locate, s3=None if locate or region else self._s3)
        self._targets += 1
        self._submit(target, self._list_target)

    def add_every_bucket(self) -> ItemResult | None:
        """Every bucket ListBuckets returns, each to be listed in its own region; the error
        record when ListBuckets fails."""
        try:
            names = [b["Name"] for b in self._s3.list_buckets().get("Buckets", [])]
        except (ClientError, BotoCoreError) as exc:
            reason, why = reason_for(exc, listing=True)
            return ItemResult(Item(SCHEME, SOURCE), Status.ERROR, reason, f"ListBuckets failed: {why}")
        for name in names:
            self.add(name, "", None, locate=True)
        return None

    def records(self) -> Iterator[Item | ItemResult | None]:
        done = 0
        options = self._options
        while done < self._targets:
            try:
                kind, target, payload = self._queue.get(timeout=WAIT_SECONDS if options.waiting else None)
            except queue.Empty:
                yield None  # nothing listed yet: the caller may do other work meanwhile
                continue
            if kind == "bug":
                raise payload
            if kind == "done":
                done += 1
                if target.requested:
                    logger.warning("%s", restore_estimate(target.bucket, target.requested, options))
                continue
            for record in payload:
                # Restores run here, in the caller's thread: restore_pending reads the caller's
                # state, and the estimate needs every request of the target.
                if isinstance(record, ItemResult) and record.reason is Reason.INVALID_OBJECT_STATE and (
                        options.restore or (options.restore_pending and options.restore_pending(record.item))):
                    record = _restore(target.s3, record.item, options, target.requested)
                yield record

    def close(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._jobs.put(None)  # each thread ends after its current request
        # Threads waiting to put a page see the stop within a put timeout; emptying the queue
        # lets them go at once.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    # the listing threads' side

    def _submit(self, target: _Target, unit: Callable[..., None], *args: Any) -> None:
        with self._lock:
            target.pending += 1
        self._jobs.put((target, unit, args))
        with self._lock:  # listing threads submit too (the prefixes of a fanned-out listing)
            if len(self._threads) < LISTING_THREADS and not self._stop.is_set():
                thread = threading.Thread(target=self._serve, name=f"panscan-s3-list-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            self._run(*job)

    def _run(self, target: _Target, unit: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            if not target.failed and not self._stop.is_set():
                unit(target, *args)
        except _Stopped:
            pass
        except (ClientError, BotoCoreError) as exc:
            self._fail(target, exc)
        except BaseException as exc:  # a bug: raised in the caller's thread, where it is seen
            self._put(("bug", target, exc), quiet=True)
        with self._lock:
            target.pending -= 1
            finished = target.pending == 0
        if finished:
            self._put(("done", target, None), quiet=True)

    def _put(self, message: _Message, *, quiet: bool = False) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.2)
                return
            except queue.Full:
                continue
        if not quiet:
            raise _Stopped

    def _fail(self, target: _Target, exc: Exception) -> None:
        """The first failure of a target's listing is its one error record; its other units
        stop at their next page (as the sequential listing stopped at the failed page)."""
        with self._lock:
            if target.failed:
                return
            target.failed = True
        reason, why = reason_for(exc, listing=True)
        self._put(("records", target, [ItemResult(Item(target.location, SOURCE), Status.ERROR, reason,
                                                  f"cannot list the versions in bucket {target.bucket}: {why}")]),
                  quiet=True)

    def _list_target(self, target: _Target) -> None:
        if target.locate:
            target.region = _bucket_region(self._s3, target.bucket)
        if target.s3 is None:
            target.s3 = aws.client("s3", region=target.region)
        self._list_prefix(target, target.prefix)

    def _pages(self, target: _Target, prefix: str, **extra: str) -> Iterator[dict[str, Any]]:
        args = {"Bucket": target.bucket, **({"Prefix": prefix} if prefix else {}), **extra}
        for page in target.s3.get_paginator("list_object_versions").paginate(
                **args, PaginationConfig={"PageSize": PAGE_SIZE}):
            if target.failed:
                raise _Stopped
            yield page

    def _list_prefix(self, target: _Target, prefix: str) -> None:
        """Every version under ``prefix``: listed page by page, or, when its first page shows
        the listing is large and spread over few key prefixes, each of them on its own."""
        pages = self._pages(target, prefix)
        first = next(pages, None)
        if first is None:
            return
        split = _fan_out_point(first, prefix)
        if split is None:
            newer: tuple[str, Any] = ("", None)
            for page in itertools.chain([first], pages):
                records, newer = self._page_records(target, page, newer)
                self._put(("records", target, records))
            return
        # The first page's groups before the last one are whole (a prefix's keys are one
        # contiguous key range); the last may continue on the next page, so it is listed again.
        records, _ = self._page_records(target, first, ("", None), lambda key: _group(prefix, key) < split)
        self._put(("records", target, records))
        newer = ("", None)
        for page in self._pages(target, prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                if common["Prefix"] >= split:
                    self._submit(target, self._list_prefix, common["Prefix"])
            # Keys with no "/" after the prefix: their own group, compared as such.
            records, newer = self._page_records(target, page, newer, lambda key: key >= split)
            self._put(("records", target, records))

    def _page_records(self, target: _Target, page: dict[str, Any], newer: tuple[str, Any],
                      keep: Callable[[str], bool] | None = None) -> tuple[list[Item | ItemResult], tuple[str, Any]]:
        """The page's records (of the keys ``keep`` accepts) and the ``newer`` for the next page."""
        records: list[Item | ItemResult] = []
        for version, is_marker, replaced_by in _entries(page, newer):
            newer = (version["Key"], version.get("LastModified"))
            if is_marker or (self._options.latest_only and not version.get("IsLatest")):
                continue
            if keep is not None and not keep(version["Key"]):
                continue
            records.append(_record(target.bucket, version, self._excluded_by, replaced_by))
        return records, newer


def _group(prefix: str, key: str) -> str:
    """What a delimiter listing of ``prefix`` makes of ``key``: the common prefix it falls
    under (up to its first ``/`` after ``prefix``), or the key itself. Groups compare as the
    key ranges they cover do."""
    slash = key.find("/", len(prefix))
    return key if slash < 0 else key[:slash + 1]


def _fan_out_point(page: dict[str, Any], prefix: str) -> str | None:
    """The group (see :func:`_group`) of the last key on the first page of a listing of
    ``prefix``, when fanning that listing out over its key prefixes pays; else None.

    It pays when there are more pages and the first one spans few groups: then the groups are
    large, and listing each on its own keeps several requests in flight. A first page that
    spans many groups means small ones, where a request per group would cost more requests
    than the pages of the plain listing (a prefix of 100,000 one-file "directories")."""
    if not page.get("IsTruncated"):
        return None
    keys = [e["Key"] for e in itertools.chain(page.get("Versions", ()), page.get("DeleteMarkers", ()))]
    if not keys:
        return None
    groups = {_group(prefix, key) for key in keys}
    if len(groups) > LISTING_THREADS:
        return None
    return max(groups)


def _bucket_region(s3: Any, bucket: str) -> str | None:
    """The bucket's region, or None (the default region) when GetBucketLocation is refused:
    botocore then follows S3's redirect to the right region on its own."""
    try:
        location: str | None = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except (ClientError, BotoCoreError):
        return None
    # Buckets in us-east-1 report no constraint; the oldest in eu-west-1 report "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _restore(s3: Any, item: Item, options: S3Options, requested: list[Item]) -> Item | ItemResult:
    """An archived version with ``--restore``: the item itself once its restored copy is
    ready (it is then read like any object), else a restore requested (or already running)."""
    bucket, key = split_location(item.location)
    version = {"VersionId": item.version_id} if item.version_id else {}
    try:
        state = s3.head_object(Bucket=bucket, Key=key, **version).get("Restore") or ""
        if 'ongoing-request="false"' in state:
            return item  # restored copy available until its expiry date
        if 'ongoing-request="true"' in state:
            return ItemResult(item, Status.SKIPPED, Reason.RESTORE_REQUESTED,
                              "restore in progress; run the scan again when it completes")
        if not options.restore:  # requested earlier, copy expired since: not re-requested unasked
            return ItemResult(item, Status.SKIPPED, Reason.INVALID_OBJECT_STATE,
                              f"storage class {item.storage_class}: the restored copy requested earlier "
                              "has expired; use --restore to request it again")
        s3.restore_object(Bucket=bucket, Key=key, **version, RestoreRequest={
            "Days": options.restore_days, "GlacierJobParameters": {"Tier": options.restore}})
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == \
                "RestoreAlreadyInProgress":
            return ItemResult(item, Status.SKIPPED, Reason.RESTORE_REQUESTED,
                              "restore in progress; run the scan again when it completes")
        reason, why = reason_for(exc)
        return ItemResult(item, Status.ERROR, reason, f"restore request failed: {why}")
    requested.append(item)
    return ItemResult(item, Status.SKIPPED, Reason.RESTORE_REQUESTED,
                      f"{options.restore} restore requested for {options.restore_days} days; "
                      "run the scan again when it completes")


def restore_estimate(bucket: str, items: list[Item], options: S3Options) -> str:
    """What the restores just requested in ``bucket`` cost and take, at list prices."""
    total_bytes = sum(i.size or 0 for i in items)
    cost = 0.0
    times = set()
    for cls in sorted({i.storage_class or "GLACIER" for i in items}):
        chosen = [i for i in items if (i.storage_class or "GLACIER") == cls]
        per_gb, per_k, when = RESTORE_PRICES.get((cls, options.restore or ""), (0.0, 0.0, "unknown"))
        cost += per_gb * sum(i.size or 0 for i in chosen) / 1e9 + per_k * len(chosen) / 1000
        times.add(f"{cls}: {when}")
    return (f"restore requested for {len(items)} archived versions in bucket {bucket} "
            f"({total_bytes / 2**30:.2f} GiB, {options.restore} tier): about ${cost:.2f} at us-east-1 "
            f"list prices plus storage of the copies for {options.restore_days} days; ready "
            f"{'; '.join(sorted(times))}")


def _entries(page: dict[str, Any], newer: tuple[str, Any]) -> Iterator[tuple[dict[str, Any], bool, tuple[str, Any]]]:
    """The page's versions and delete markers in listing order (by key, newest first), each
    with the key and LastModified of the entry just newer than it (``newer`` carries that
    across pages), which is when a non-current version stopped being current."""
    entries = [(v, False) for v in page.get("Versions", ())] + [(m, True) for m in page.get("DeleteMarkers", ())]
    # S3 returns the two lists separately; within a key both are newest first, so one stable
    # sort by key and descending time restores the order the versions replaced each other in.
    # LastModified has whole seconds: a put and a delete in the same second tie. The latest
    # entry comes first, then a delete marker before a version (the delete of what was just
    # written, the common case), so a version behind a marker knows when it stopped being current.
    entries.sort(key=lambda e: (e[0]["Key"], -(e[0]["LastModified"].timestamp() if e[0].get("LastModified") else 0),
                                not e[0].get("IsLatest"), not e[1]))
    for entry, is_marker in entries:
        yield entry, is_marker, newer
        newer = (entry["Key"], entry.get("LastModified"))


def _record(bucket: str, version: dict[str, Any], excluded_by: Callable[[str], str | None],
            newer: tuple[str, Any] = ("", None)) -> Item | ItemResult:
    modified = version.get("LastModified")
    replaced = newer[1] if newer[0] == version["Key"] and not version.get("IsLatest") else None
    item = Item(
        location=f"{SCHEME}{bucket}/{version['Key']}", source=SOURCE, size=version.get("Size"),
        last_modified=modified.timestamp() if modified is not None else None,
        version_id=version.get("VersionId"), is_latest=version.get("IsLatest"),
        storage_class=version.get("StorageClass") or "STANDARD", etag=version.get("ETag"),
        noncurrent_since=replaced.timestamp() if replaced is not None else None,
    )
    return classify(item, excluded_by)


def classify(item: Item, excluded_by: Callable[[str], str | None]) -> Item | ItemResult:
    """What becomes of a listed version before any read: excluded, archived (never read), or
    an item to scan. The inventory source uses the same verdicts, in the same order."""
    pattern = excluded_by(item.location)
    if pattern is not None:
        return ItemResult(item, Status.SKIPPED, Reason.EXCLUDED, f"excluded by {pattern!r}")
    if item.storage_class in ARCHIVED_CLASSES:
        return ItemResult(item, Status.SKIPPED, Reason.INVALID_OBJECT_STATE,
                          f"storage class {item.storage_class}: not readable without a restore")
    return item


def exclude_matcher(patterns: tuple[str, ...]) -> Callable[[str], str | None]:
    """The first of the fnmatch ``patterns`` a location matches, or None."""

    def excluded_by(location: str) -> str | None:
        return next((p for p in patterns if fnmatch.fnmatchcase(location, p)), None)

    return excluded_by


# --- errors ----------------------------------------------------------------------------


def reason_for(exc: Exception, *, listing: bool = False) -> tuple[Reason, str]:
    """The reason code for a failed S3 call and a short explanation naming the S3 error
    code only (its message may quote a key).

    KMS failures (key disabled, pending deletion, decrypt not permitted) and SSE-C objects
    read without their key are ``INVALID_ENCRYPTION``; AccessDenied ``PERMISSION_DENIED``;
    a missing bucket ``NOT_FOUND``; a version or key gone since it was listed
    ``SOURCE_OBJECT_NO_LONGER_AVAILABLE`` (``NOT_FOUND`` while listing); an archived object
    ``INVALID_OBJECT_STATE``; a failed If-Match ``OBJECT_VERSION_MISMATCH``; credentials
    that expired mid-scan (ExpiredToken, InvalidToken... with a 400 or a 403) or that botocore
    cannot find or refresh ``PERMISSION_DENIED`` with the detail of
    :func:`aws.credentials_detail`, which :func:`aws.credentials_problem` recognises so the
    scan stops instead of failing every remaining object; anything else (throttling or 5xx
    beyond the retries, an unreachable endpoint) ``READ_ERROR``.
    """
    refused = aws.credentials_refused(exc)
    if refused is not None:
        return Reason.PERMISSION_DENIED, aws.credentials_detail(*refused)
    if not isinstance(exc, ClientError):
        return Reason.READ_ERROR, f"request failed ({type(exc).__name__})"
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    lowered = message.lower()
    if code.startswith("KMS.") or (code == "AccessDenied" and "kms" in lowered):
        return Reason.INVALID_ENCRYPTION, f"{code}: the object's KMS key cannot be used"
    if code == "InvalidRequest" and ("customer" in lowered or "server side encryption" in lowered):
        return Reason.INVALID_ENCRYPTION, f"{code}: the object is encrypted with a customer-provided key (SSE-C)"
    if code == "InvalidObjectState":
        return Reason.INVALID_OBJECT_STATE, f"{code}: archived, not readable without a restore"
    if code == "PreconditionFailed" or status == 412:
        return Reason.OBJECT_VERSION_MISMATCH, f"{code or status}: the object changed since it was listed"
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem") or status == 403:
        return Reason.PERMISSION_DENIED, f"{code or status}: access denied"
    if code == "NoSuchBucket":
        return Reason.NOT_FOUND, f"{code}: the bucket does not exist"
    if code in ("NoSuchKey", "NoSuchVersion") or status == 404:
        reason = Reason.NOT_FOUND if listing else Reason.SOURCE_OBJECT_NO_LONGER_AVAILABLE
        return reason, f"{code or status}: the version no longer exists"
    if status == 400 and not code.isalpha():
        # HeadObject on an SSE-C object without its key: a bare 400 with no error body.
        return Reason.INVALID_ENCRYPTION, f"{code or status}: the object needs a customer-provided key (SSE-C)"
    return Reason.READ_ERROR, f"{code or status}: request failed"


# --- opening ---------------------------------------------------------------------------


class S3ReadError(OSError):
    """A read that failed after the object was opened. The extractors and the worker see an
    ``OSError`` (``strerror`` is the explanation) and call it ``READ_ERROR``; ``reason`` is
    what S3 said, which :func:`read_failure` gives back afterwards."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(errno.EIO, detail)
        self.reason = reason


def open_s3(item: Item, start: int = 0) -> BinaryIO:
    """``item``'s version open for reading from offset ``start`` (see :class:`S3Object`);
    the first GetObject is sent here, so refusals surface as ``SourceError`` before any byte
    is read. The caller closes the file."""
    bucket, key = split_location(item.location)
    return cast(BinaryIO, S3Object(aws.client("s3"), bucket, key, item, start))


def version_changed(item: Item, f: BinaryIO) -> tuple[Reason, str] | None:
    """After reading: ``OBJECT_VERSION_MISMATCH`` when an unversioned object was overwritten
    while it was read (a later request saw another ETag), else None."""
    if isinstance(f, S3Object) and f.mismatch:
        return Reason.OBJECT_VERSION_MISMATCH, "the object was overwritten while it was read"
    return None


def object_metadata(f: BinaryIO) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The texts ``f`` carries besides its content, as (header, texts): each user metadata
    entry as ``("x-amz-meta-<name>", (name, value))`` and the Content-Disposition header as
    ``("Content-Disposition", (value,))`` when set, in the order S3 gave them. They come from
    the GetObject response ``f`` was opened with (a prefetched object keeps them with its
    body): no request is sent. ``()`` when ``f`` is no S3 object."""
    return f.metadata if isinstance(f, S3Object) else ()


def object_tags(f: BinaryIO) -> tuple[tuple[str, str], ...]:
    """The tags of the version ``f`` was opened on, as (key, value) pairs: one GetObjectTagging
    request, sent once per object (a prefetched object had it sent in the fetching thread, see
    :meth:`S3Object.load_tags`). Raises ``SourceError`` (reasons of :func:`reason_for`) when it
    was refused; ``()`` when ``f`` is no S3 object."""
    return f.tags() if isinstance(f, S3Object) else ()


def _metadata_of(response: dict[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # botocore gives user metadata without its x-amz-meta- prefix, names in lower case.
    found: list[tuple[str, tuple[str, ...]]] = [
        (f"x-amz-meta-{name}", (str(name), str(value))) for name, value in (response.get("Metadata") or {}).items()]
    disposition = response.get("ContentDisposition")
    if disposition:
        found.append(("Content-Disposition", (str(disposition),)))
    return tuple(found)


def read_failure(f: BinaryIO) -> tuple[Reason, str] | None:
    """After a failed read of ``f``: the reason and explanation of the :class:`S3ReadError`
    that ended it (the version deleted mid-read, access revoked, the object overwritten, a
    body cut too often), or None when ``f`` is no S3 object or no read of it failed."""
    failure = f.failure if isinstance(f, S3Object) else None
    if failure is None:
        return None
    return failure.reason, f"read failed: {failure.strerror}"


class S3Object(RemoteFile):
    """One object version as a read-only, seekable file, opened at offset ``start``.

    The first request is GetObject from ``start`` (``Range: bytes=start-`` when ``start`` is
    not 0), and its body is streamed in the sizes asked for. A ``seek`` away from where the
    body stands drops it; the next ``read`` sends GetObject with ``Range: bytes=N-`` on the
    same VersionId. A body cut mid-stream is resumed the same way from the current offset;
    after ``MAX_RESUMES`` attempts in a row that bring no byte, ``read`` raises
    :class:`S3ReadError` (``READ_ERROR``). A request refused during a read raises
    :class:`S3ReadError` with the S3 reason, kept in :attr:`failure`.

    Opened at ``start`` > 0 (a byte-range task), reads before ``start`` (the sniff of the
    first bytes) are each served by a bounded Range GET (``bytes=N-M``) and leave the body at
    ``start`` open. The first ``KEPT_HEAD`` bytes, once read, are kept: reading them again
    sends nothing.

    An INTELLIGENT_TIERING version is asked about with HeadObject before any GetObject: one
    in an archive tier without a ready restored copy is ``SourceError``
    ``INVALID_OBJECT_STATE`` on open.

    An unversioned object (version id None or ``null``) can be overwritten between the
    listing and the read: every response's ETag is compared with the listed one, and a
    difference is ``OBJECT_VERSION_MISMATCH`` (``SourceError`` on open; afterwards
    :class:`S3ReadError` with :attr:`mismatch` set).

    :attr:`metadata` holds the user metadata and Content-Disposition of the first response
    (see :func:`object_metadata`); :meth:`tags` the version's tags, asked for once.
    """

    def __init__(self, s3: Any, bucket: str, key: str, item: Item, start: int = 0) -> None:
        super().__init__()
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._version = item.version_id
        # Versions are immutable; only the current data of an unversioned key can change.
        self._etag = item.etag if item.version_id in (None, "null") else None
        self._start = start
        self._pos = start
        self._body: Any = None
        self._body_pos = start
        self._head = b""
        # How many bytes from offset 0 are kept once read: KEPT_HEAD, or the whole object
        # after load() (a prefetch).
        self._keep = KEPT_HEAD
        # A failure met by load(), raised by the read that reaches it (see load()).
        self._deferred: S3ReadError | None = None
        self.mismatch = False
        self.failure: S3ReadError | None = None
        self.metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
        # The version's tags once asked for (load_tags), or why they could not be read.
        self._tags: tuple[tuple[str, str], ...] | None = None
        self._tags_refused: SourceError | None = None
        self._size: int = 0
        try:
            if item.storage_class == "INTELLIGENT_TIERING":
                self._refuse_archive_tier()
            self._size = self._get(start, item.size, first=True)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(*reason_for(exc)) from None

    # io plumbing (the rest in RemoteFile)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the current offset (exactly ``size`` unless the object
        ends first); ``b""`` at the end."""
        if self.closed:
            raise ValueError("read of a closed S3 object")
        if size is None or size < 0:
            return self.readall()
        size = min(size, self._size - self._pos)
        if size <= 0:
            return b""
        try:
            return self._read(size)
        except S3ReadError as exc:
            # Kept for read_failure(): the extractors above turn this into READ_ERROR.
            self.failure = exc
            raise

    def load(self) -> None:
        """Read the whole object into memory now, so that the reads that follow send no
        request: what a fetching thread does ahead of the matcher (``sources.fetch``). Only
        for an object opened at offset 0.

        The reads that follow behave exactly as they would have without it: a body cut
        mid-stream is resumed here the same way, and a read failure met here
        (:class:`S3ReadError`: the version deleted mid-read, access revoked, the object
        overwritten, a body cut too often) is raised by the later read that reaches the
        offset where it happened, which then sets :attr:`failure`; :attr:`mismatch` is set
        here. Nothing raises from this method."""
        if self._start != 0 or self.closed:
            return
        self._keep = self._size
        try:
            self._read(self._size - self._pos)
        except S3ReadError as exc:
            self._deferred = exc
        self._pos = 0
        if self._body is not None and self._body_pos >= self._size:
            self._finish_body()

    def load_tags(self) -> None:
        """Ask for the version's tags now (GetObjectTagging), once: what a fetching thread does
        ahead of the matcher when tags are scanned. A refusal is kept and raised by
        :meth:`tags`; nothing raises from this method."""
        if self._tags is not None or self._tags_refused is not None:
            return
        try:
            answer = self._s3.get_object_tagging(**self._args())
        except (ClientError, BotoCoreError) as exc:
            reason, why = reason_for(exc)
            self._tags_refused = SourceError(reason, f"object tags not read (GetObjectTagging {why})")
            return
        self._tags = tuple((str(t.get("Key", "")), str(t.get("Value", ""))) for t in answer.get("TagSet") or ())

    def tags(self) -> tuple[tuple[str, str], ...]:
        """The version's tags (asked for on first use); ``SourceError`` when refused."""
        self.load_tags()
        if self._tags_refused is not None:
            raise self._tags_refused
        return self._tags or ()

    def _finish_body(self) -> None:
        """Drop a body read to its last byte, reading its end first: urllib3 can hand the
        connection of a response read to its end back to the pool, where closing a response
        it still counts as unread drops the connection."""
        body, self._body = self._body, None
        try:
            body.read()
        except Exception:  # the end of a body already read whole: a failure here changes nothing
            logger.debug("reading the end of an S3 body failed", exc_info=False)
        self._close(body)

    def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        failures = 0
        while got < size:
            want = size - got
            if self._pos < len(self._head):
                data, cause = self._head[self._pos:self._pos + want], ""
            elif self._deferred is not None:
                failure, self._deferred = self._deferred, None
                raise failure
            elif self._pos < self._start:
                data, cause = self._read_before_start(min(want, self._start - self._pos))
            else:
                data, cause = self._read_body(want)
            if not data:
                failures += 1
                if failures >= MAX_RESUMES:
                    raise S3ReadError(Reason.READ_ERROR,
                                      f"body cut mid-stream {failures} times in a row ({cause})")
                logger.debug("S3 body cut at offset %d (%s); resuming with a range request", self._pos, cause)
                continue
            failures = 0
            if self._pos == len(self._head) < self._keep:
                self._head += data[:self._keep - self._pos]
            parts.append(data)
            got += len(data)
            self._pos += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_body(self, want: int) -> tuple[bytes, str]:
        """Up to ``want`` bytes from the streamed body at the current offset (reopened there
        if it stands elsewhere); ``b""`` and the cause when it was cut (it is then dropped)."""
        if self._body is None or self._body_pos != self._pos:
            self._reopen()
        try:
            data: bytes = self._body.read(want)
        except _CUT as exc:
            data, cause = b"", type(exc).__name__
        else:
            cause = "the body ended early"
        if data:
            self._body_pos += len(data)
        else:
            # Cut mid-stream (or ended before Content-Length): the next try resumes from here.
            self._drop_body()
        return data, cause

    def _read_before_start(self, count: int) -> tuple[bytes, str]:
        """Up to ``count`` bytes at the current offset, before ``start``, from a bounded Range
        GET of their own: the body waiting at ``start`` is what the caller opened for, and
        dropping it for a few bytes of sniffing would cost a second GET of the range."""
        try:
            response = self._request(self._pos, self._pos + count - 1)
        except SourceError as exc:
            raise S3ReadError(exc.reason, exc.detail) from None
        except (ClientError, BotoCoreError) as exc:
            raise S3ReadError(*reason_for(exc)) from None
        body = response["Body"]
        try:
            return body.read(), "the body ended early"
        except _CUT as exc:
            return b"", type(exc).__name__
        finally:
            self._close(body)

    # requests

    def _refuse_archive_tier(self) -> None:
        """Intelligent-Tiering moves unread objects into its archive tiers on its own, and a
        listing does not say where one is: HeadObject does (``ArchiveStatus``). A GetObject
        there would only be refused, so none is sent; a restored copy that is ready
        (``Restore: ongoing-request="false"``) is read like any object.

        A refused HeadObject leaves the decision to the GetObject that follows: HEAD answers
        carry no error code (a bare 403, 404 or 400), GetObject's do, and one of an archived
        object is refused with InvalidObjectState anyway."""
        try:
            head = self._s3.head_object(**self._args())
        except ClientError as exc:
            logger.debug("HeadObject refused (%s); GetObject decides",
                         exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            return
        tier = head.get("ArchiveStatus")
        if tier in IT_ARCHIVE_TIERS and 'ongoing-request="false"' not in (head.get("Restore") or ""):
            raise SourceError(Reason.INVALID_OBJECT_STATE,
                              f"Intelligent-Tiering archive tier {tier}: not readable without a restore")

    def _reopen(self) -> None:
        self._drop_body()
        try:
            self._get(self._pos, None)
        except SourceError as exc:
            raise S3ReadError(exc.reason, exc.detail) from None
        except (ClientError, BotoCoreError) as exc:
            raise S3ReadError(*reason_for(exc)) from None

    def _args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if self._version is not None:
            args["VersionId"] = self._version
        return args

    def _request(self, first: int, last: int | None) -> Any:
        """GetObject of bytes ``first``..``last`` (None: to the end; no Range header for the
        whole object), its ETag checked against the listed one."""
        args = self._args()
        if first > 0 or last is not None:
            args["Range"] = f"bytes={first}-{'' if last is None else last}"
        response = self._s3.get_object(**args)
        if self._etag is not None and response.get("ETag") != self._etag:
            self._close(response["Body"])
            self.mismatch = True
            raise SourceError(Reason.OBJECT_VERSION_MISMATCH, "the object changed since it was listed")
        return response

    def _get(self, start: int, listed_size: int | None, first: bool = False) -> int:
        """GetObject from ``start`` to the end; sets the body and returns the object's size.
        The ``first`` request's metadata is kept (later ones resume the same version)."""
        response = self._request(start, None)
        self._body = response["Body"]
        self._body_pos = start
        if first:
            self.metadata = _metadata_of(response)
        if listed_size is not None:
            return listed_size
        total = str(response.get("ContentRange") or "").rpartition("/")[2]
        return int(total) if total.isdigit() else start + int(response.get("ContentLength") or 0)

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            self._close(body)

    @staticmethod
    def _close(body: Any) -> None:
        try:
            body.close()
        except Exception:  # closing a broken connection may fail; nothing to keep
            logger.debug("closing an S3 body failed", exc_info=False)
