"""Records that flow between panscan's stages.

Everything here is plain, frozen, picklable data: it crosses process boundaries (local pool,
Dask) and reaches sinks and the state. Nothing here ever holds a full card number: the only
record that does, ``match.matcher.RawHit``, never leaves a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"
    SKIPPED = "skipped"
    ERROR = "error"


class Reason(StrEnum):
    """Why an item was not read completely (Macie's vocabulary where one exists)."""

    INVALID_OBJECT_STATE = "INVALID_OBJECT_STATE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    ARCHIVE_NESTING_LEVEL_OVER_LIMIT = "ARCHIVE_NESTING_LEVEL_OVER_LIMIT"
    ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT = "ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT"
    ARCHIVE_TOTAL_FILES_OVER_LIMIT = "ARCHIVE_TOTAL_FILES_OVER_LIMIT"
    ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT = "ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT"
    FILE_EXCEEDS_SIZE_LIMIT = "FILE_EXCEEDS_SIZE_LIMIT"
    MALFORMED_FILE = "MALFORMED_FILE"
    UNSUPPORTED_FILE_TYPE = "UNSUPPORTED_FILE_TYPE"
    INVALID_ENCRYPTION = "INVALID_ENCRYPTION"
    OBJECT_VERSION_MISMATCH = "OBJECT_VERSION_MISMATCH"
    TIME_CUT_OFF_REACHED = "TIME_CUT_OFF_REACHED"
    NOT_REGULAR_FILE = "NOT_REGULAR_FILE"
    SYMLINK_NOT_FOLLOWED = "SYMLINK_NOT_FOLLOWED"
    SYMLINK_LOOP = "SYMLINK_LOOP"
    CROSSES_FILESYSTEM = "CROSSES_FILESYSTEM"
    CHANGED_DURING_SCAN = "CHANGED_DURING_SCAN"
    EXCLUDED = "EXCLUDED"
    NOT_FOUND = "NOT_FOUND"
    READ_ERROR = "READ_ERROR"
    WORKER_CRASHED = "WORKER_CRASHED"
    INTERRUPTED = "INTERRUPTED"
    RESTORE_REQUESTED = "RESTORE_REQUESTED"
    JOB_PENDING = "JOB_PENDING"
    SOURCE_OBJECT_NO_LONGER_AVAILABLE = "SOURCE_OBJECT_NO_LONGER_AVAILABLE"  # deleted since listed
    # scan --volumes: an attached EBS volume none of whose filesystems is mounted, and one
    # for which no block device on this machine was found. Gaps in coverage, never "on purpose":
    # the volume was attached to be read.
    VOLUME_NOT_MOUNTED = "VOLUME_NOT_MOUNTED"
    DEVICE_NOT_FOUND = "DEVICE_NOT_FOUND"


#: Reasons of a ``skipped`` item that holds no data of its own: a symbolic link not followed
#: (what it points to is read where the walk finds it, or is outside the scope on purpose), a
#: FIFO, socket or device, a directory reached a second time (a link or bind mount loop: its
#: files are read through the first path) or the mount point of another filesystem. Its time
#: is not the age of any data, so it is never judged for retention.
NOT_DATA_REASONS = frozenset({
    Reason.SYMLINK_NOT_FOLLOWED, Reason.NOT_REGULAR_FILE, Reason.SYMLINK_LOOP, Reason.CROSSES_FILESYSTEM,
})

#: Reasons of a ``skipped`` item left out on purpose: the user's ``--exclude`` and policy
#: excludes, and the things that hold no data (:data:`NOT_DATA_REASONS`). Such an item is
#: listed with its reason but does not make coverage incomplete: coverage is incomplete only
#: when something that should have been read was not (errors, partial reads, permission
#: denied, archived objects not restored, an interruption).
LEFT_OUT_ON_PURPOSE = NOT_DATA_REASONS | {Reason.EXCLUDED}


#: The ``member`` of a finding in a Glacier archive's description (not in its content): the
#: worker scans the description, and so does whoever collects a vault's inventory.
DESCRIPTION_MEMBER = "(archive description)"

#: S3 storage classes whose data cannot be read without a restore (GetObject fails).
ARCHIVED_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class Kind(StrEnum):
    PAN = "pan"
    TRACK1 = "track1"
    TRACK2 = "track2"


class Confidence(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True, slots=True)
class Item:
    """One readable thing a source found: metadata only, no content, no open handles."""

    location: str  # a path, s3://bucket/key or glacier://vault/archive-id
    source: str  # "file", "s3", "glacier", "stdin"
    size: int | None = None
    last_modified: float | None = None  # POSIX seconds, UTC
    version_id: str | None = None
    is_latest: bool | None = None
    storage_class: str | None = None
    etag: str | None = None
    encryption: str | None = None
    inode: int | None = None
    device: int | None = None
    mtime_ns: int | None = None
    volume_id: str | None = None
    # S3 non-current versions: when the version stopped being current (the LastModified of
    # the next newer version or delete marker of the same key). POSIX seconds, UTC.
    noncurrent_since: float | None = None
    # Glacier archives: the ArchiveDescription (scanned for card data like content; masked
    # with the location before it reaches a report or the state), and the succeeded
    # archive-retrieval job whose output holds the content (None: content not retrieved).
    description: str | None = None
    job_id: str | None = None
    # Glacier archives without ``job_id`` when a retrieval was asked for (``--retrieve``): why
    # this one was not retrieved (left out by --max-bytes, not confirmed, a job still running),
    # a short phrase the item's detail quotes. None: no retrieval was asked for.
    not_retrieved: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """What the engine hands a worker: an item, or a byte range [start, end) of one."""

    item: Item
    start: int = 0
    end: int | None = None  # None: to the end of the item

    @property
    def is_range(self) -> bool:
        return self.start != 0 or self.end is not None


@dataclass(frozen=True, slots=True)
class Finding:
    """A masked, storable finding; the JSON Lines ``finding`` record."""

    location: str
    version_id: str | None
    is_latest: bool | None
    member: str | None
    offset: int
    line: int
    kind: Kind
    brand: str
    masked: str
    fingerprint: str
    confidence: Confidence
    test_card: bool
    retention: str | None = None  # "expired" when the item is older than its retention rule
    change: str | None = None  # against the previous sweep (state): "new" or "still present"
    volume_id: str | None = None  # the EBS volume the item sits on (scan --volumes)

    def to_record(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies and costs more than the scan itself
        # when a file holds thousands of findings.
        return {
            "type": "finding", "location": self.location, "version_id": self.version_id,
            "is_latest": self.is_latest, "member": self.member, "offset": self.offset, "line": self.line,
            "kind": str(self.kind), "brand": self.brand, "masked": self.masked,
            "fingerprint": self.fingerprint, "confidence": str(self.confidence),
            "test_card": self.test_card, "retention": self.retention, "change": self.change,
            "volume_id": self.volume_id,
        }


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one item: the JSON Lines ``item`` record plus its findings.

    ``detail`` is a human explanation that has passed the masking boundary (it never holds
    raw content); ``reason`` is set whenever status is not complete.
    """

    item: Item
    status: Status
    reason: Reason | None = None
    detail: str | None = None
    bytes_scanned: int = 0
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    # Not read again: an identical item (same version, or same size, mtime and inode) was
    # scanned completely with the same pattern set in this sweep of the state database.
    unchanged_since_sweep: int | None = None
    # Findings of this item already delivered in batches while it was scanned (a PAN-dense
    # item streams them so memory does not grow with their number); ``findings`` holds the rest.
    earlier_findings: int = 0

    @property
    def findings_total(self) -> int:
        return self.earlier_findings + len(self.findings)

    @property
    def left_out_on_purpose(self) -> bool:
        """Skipped for a reason in :data:`LEFT_OUT_ON_PURPOSE`: listed, but no gap in coverage."""
        return self.status is Status.SKIPPED and self.reason in LEFT_OUT_ON_PURPOSE

    @property
    def holds_data(self) -> bool:
        """False for a skipped item whose reason is in :data:`NOT_DATA_REASONS` (a link, a
        FIFO, a mount point...): it is never judged for retention."""
        return not (self.status is Status.SKIPPED and self.reason in NOT_DATA_REASONS)

    def to_record(self) -> dict[str, Any]:
        record = {
            "type": "item",
            "location": self.item.location,
            "version_id": self.item.version_id,
            "status": str(self.status),
            "reason": str(self.reason) if self.reason else None,
            "detail": self.detail,
            "bytes_scanned": self.bytes_scanned,
            "findings": self.findings_total,
            "size": self.item.size,
            "unchanged_since_sweep": self.unchanged_since_sweep,
            "volume_id": self.item.volume_id,
        }
        if self.item.source == "glacier" and "/" in self.item.location.removeprefix("glacier://"):
            # An archive (not a vault-level record): what the inventory says identifies it, the
            # creation date retention is judged from and the tree hash its content is checked against.
            created = self.item.last_modified
            record["creation_date"] = _iso(created) if created is not None else None
            record["tree_hash"] = self.item.etag
        return record


#: ``Finding.retention`` of a finding in an item older than its retention rule.
EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A finding an ``[[allow]]`` entry of the policy suppresses: the JSON Lines ``suppressed``
    record. It is listed and counted, with the entry's reason, but never in the exit status.

    ``entry`` is the entry's number among the policy's ``[[allow]]`` entries (1-based);
    ``matched_by`` says how it matched (``fingerprint``, ``location``, ``masked``, or
    ``fingerprint+location``/``masked+location``); ``reason`` (masked) and ``expires`` (ISO
    date or None) are the entry's.
    """

    finding: Finding
    entry: int
    matched_by: str
    reason: str
    expires: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {**self.finding.to_record(), "type": "suppressed", "allow_entry": self.entry,
                "matched_by": self.matched_by, "reason": self.reason, "expires": self.expires}


@dataclass(frozen=True, slots=True)
class RetentionVerdict:
    """An item older than its retention rule: the JSON Lines ``retention`` record.

    Ages are whole days, rounded down, as of the sweep's reference time; ``noncurrent_days``
    is how long an S3 version has been non-current (None for current versions and files).
    """

    location: str
    version_id: str | None
    rule: str
    age_days: int
    max_age_days: int
    storage_class: str | None
    size: int | None
    last_modified: float
    noncurrent_days: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "type": "retention", "location": self.location, "version_id": self.version_id,
            "rule": self.rule, "age_days": self.age_days, "max_age_days": self.max_age_days,
            "storage_class": self.storage_class, "size": self.size,
            "last_modified": _iso(self.last_modified), "noncurrent_days": self.noncurrent_days,
        }


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
