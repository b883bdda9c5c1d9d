"""Amazon S3: every version of every object as an ``Item``, and one version opened as a file.

What callers may rely on:

* :func:`enumerate_s3` is a lazy generator over ``s3://bucket[/prefix]`` targets (and
  ``s3://`` alone: every bucket ListBuckets returns, each listed in its own region). It
  lists with ListObjectVersions, page by page, so it holds one page at a time. Every
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
* Details and messages name the bucket and the S3 error code, never object content; keys
  may appear only inside locations, which the engine masks.
"""

from __future__ import annotations

import errno
import fnmatch
import http.client
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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


def enumerate_s3(targets: Sequence[str], options: S3Options) -> Iterator[Item | ItemResult]:
    """A record for every object version under ``targets`` (see the module docstring),
    targets in the order given."""
    for target in targets:
        bucket, prefix = split_location(target)
        if bucket:
            yield from _list_bucket(bucket, prefix, options, None)
        else:
            yield from _list_all_buckets(options)


def _list_all_buckets(options: S3Options) -> Iterator[Item | ItemResult]:
    s3 = aws.client("s3")
    try:
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    except (ClientError, BotoCoreError) as exc:
        reason, why = reason_for(exc, listing=True)
        yield ItemResult(Item(SCHEME, SOURCE), Status.ERROR, reason, f"ListBuckets failed: {why}")
        return
    for name in names:
        yield from _list_bucket(name, "", options, _bucket_region(s3, name))


def _bucket_region(s3: Any, bucket: str) -> str | None:
    """The bucket's region, or None (the default region) when GetBucketLocation is refused:
    botocore then follows S3's redirect to the right region on its own."""
    try:
        location: str | None = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except (ClientError, BotoCoreError):
        return None
    # Buckets in us-east-1 report no constraint; the oldest in eu-west-1 report "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _list_bucket(bucket: str, prefix: str, options: S3Options,
                 region: str | None) -> Iterator[Item | ItemResult]:
    s3 = aws.client("s3", region=region)
    excluded_by = exclude_matcher(options.excludes)
    args = {"Bucket": bucket, **({"Prefix": prefix} if prefix else {})}
    requested: list[Item] = []
    try:
        newer: tuple[str, Any] = ("", None)  # the key and LastModified of the entry listed last
        for page in s3.get_paginator("list_object_versions").paginate(**args):
            for version, is_marker, replaced_by in _entries(page, newer):
                newer = (version["Key"], version.get("LastModified"))
                if is_marker or (options.latest_only and not version.get("IsLatest")):
                    continue
                record = _record(bucket, version, excluded_by, replaced_by)
                if isinstance(record, ItemResult) and record.reason is Reason.INVALID_OBJECT_STATE and (
                        options.restore or (options.restore_pending and options.restore_pending(record.item))):
                    record = _restore(s3, record.item, options, requested)
                yield record
    except (ClientError, BotoCoreError) as exc:
        reason, why = reason_for(exc, listing=True)
        where = f"{SCHEME}{bucket}/{prefix}" if prefix else f"{SCHEME}{bucket}"
        yield ItemResult(Item(where, SOURCE), Status.ERROR, reason,
                         f"cannot list the versions in bucket {bucket}: {why}")
    if requested:
        logger.warning("%s", restore_estimate(bucket, requested, options))


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
    entries.sort(key=lambda e: (e[0]["Key"], -(e[0]["LastModified"].timestamp() if e[0].get("LastModified") else 0)))
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
        self.mismatch = False
        self.failure: S3ReadError | None = None
        self._size: int = 0
        try:
            if item.storage_class == "INTELLIGENT_TIERING":
                self._refuse_archive_tier()
            self._size = self._get(start, item.size)
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

    def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        failures = 0
        while got < size:
            want = size - got
            if self._pos < len(self._head):
                data, cause = self._head[self._pos:self._pos + want], ""
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
            if self._pos == len(self._head) < KEPT_HEAD:
                self._head += data[:KEPT_HEAD - self._pos]
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

    def _get(self, start: int, listed_size: int | None) -> int:
        """GetObject from ``start`` to the end; sets the body and returns the object's size."""
        response = self._request(start, None)
        self._body = response["Body"]
        self._body_pos = start
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
