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
    source: str  # "file", "s3", "glacier"
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
    retention: str | None = None

    def to_record(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies and costs more than the scan itself
        # when a file holds thousands of findings.
        return {
            "type": "finding", "location": self.location, "version_id": self.version_id,
            "is_latest": self.is_latest, "member": self.member, "offset": self.offset, "line": self.line,
            "kind": str(self.kind), "brand": self.brand, "masked": self.masked,
            "fingerprint": self.fingerprint, "confidence": str(self.confidence),
            "test_card": self.test_card, "retention": self.retention,
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

    def to_record(self) -> dict[str, Any]:
        return {
            "type": "item",
            "location": self.item.location,
            "version_id": self.item.version_id,
            "status": str(self.status),
            "reason": str(self.reason) if self.reason else None,
            "detail": self.detail,
            "bytes_scanned": self.bytes_scanned,
            "findings": len(self.findings),
            "size": self.item.size,
        }
