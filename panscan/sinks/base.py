"""What every report writer shares: the summary record, the sink interface, the factory.

Sinks receive ``ItemResult`` values whose text fields have already been masked by the
engine (``findings.mask.mask_result``) and a :class:`Summary` at the end. They never see
raw content. A sink writes to a text stream it does not own: the caller opens and closes
it (``-o FILE`` is opened mode 0600 by the runner).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TextIO, TypeVar

from panscan.model import Finding, ItemResult, RetentionVerdict, Suppressed

if TYPE_CHECKING:
    from panscan.config import Policy

FORMATS = ("table", "jsonl", "csv", "html")

EXIT_MEANINGS = {
    0: "nothing found, coverage complete",
    1: "card data found",
    2: "no card data found, but coverage is incomplete",
    3: "usage or configuration error",
}


@dataclass(frozen=True)
class Summary:
    """Totals of one scan; the JSON Lines ``summary`` record.

    ``items`` holds every status (zero counts included); ``reasons`` counts the items that
    were not complete, by reason code. ``left_out`` counts the items skipped on purpose
    (``model.LEFT_OUT_ON_PURPOSE``: excludes, links not followed, FIFOs and devices, other
    filesystems). ``coverage_complete`` is true when every item that should have been read
    (every item but those left out) is complete and the scan was not interrupted.
    """

    items: dict[str, int]
    reasons: dict[str, int]
    findings: int
    by_kind: dict[str, int]
    by_brand: dict[str, int]
    by_confidence: dict[str, int]
    test_cards: int
    bytes_scanned: int
    duration_seconds: float
    coverage_complete: bool
    interrupted: bool
    exit_status: int
    pattern_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Retention (with a policy that sets ages): {"expired_items", "expired_bytes",
    # "expired_with_card_data", "by_rule": {rule: items}, "as_of": ISO time}; None without rules.
    retention: dict[str, Any] | None = None
    # Against the previous sweep in the state: {"previous_sweep": id or None, "new",
    # "still_present", "resolved", "unchanged_items"}; None with --no-state.
    changes: dict[str, Any] | None = None
    sweep_id: int | None = None
    left_out: int = 0
    # Findings found but not reported (engine.suppress): suppressed by [[allow]] entries, and
    # below --min-confidence; neither is in ``findings`` nor in the exit status. ``allow``: the
    # entries in force ({"policy", "directory", "entries": [...]}, each with its count), None
    # without any.
    suppressed: int = 0
    below_threshold: int = 0
    min_confidence: str = "low"
    allow: dict[str, Any] | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Summary:
        """The summary a :meth:`to_record` record describes (the state stores the record and
        ``panscan report`` renders it again). Keys this class does not know (``started``,
        ``panscan_version``, ...) go back to ``extra``; records from before retention and
        change tracking read as None. Raises ValueError for anything but a summary record."""
        if record.get("type") != "summary":
            raise ValueError(f"not a summary record (type {record.get('type')!r})")
        try:
            found = record["findings"]
            return cls(
                items={k: int(v) for k, v in record["items"].items() if k != "total"},
                reasons=dict(record["reasons"]),
                findings=int(found["total"]),
                by_kind=dict(found["by_kind"]),
                by_brand=dict(found["by_brand"]),
                by_confidence=dict(found["by_confidence"]),
                test_cards=int(found["test_cards"]),
                bytes_scanned=int(record["bytes_scanned"]),
                duration_seconds=float(record["duration_seconds"]),
                coverage_complete=bool(record["coverage"]["complete"]),
                interrupted=bool(record["interrupted"]),
                exit_status=int(record["exit_status"]),
                pattern_version=str(record.get("pattern_version", "")),
                extra={k: v for k, v in record.items() if k not in _RECORD_KEYS},
                retention=record.get("retention"),
                changes=record.get("changes"),
                sweep_id=record.get("sweep_id"),
                suppressed=int(found.get("suppressed", 0)),
                below_threshold=int(found.get("below_threshold", 0)),
                min_confidence=str(record.get("min_confidence") or "low"),
                allow=record.get("allow"),
                left_out=int(record["coverage"].get("left_out_on_purpose", 0)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed summary record: {exc!r}") from None

    @property
    def total_items(self) -> int:
        return sum(self.items.values())

    def to_record(self) -> dict[str, Any]:
        total = self.total_items
        complete = self.items.get("complete", 0)
        # The ratio is of the items that should have been read: those left out on purpose
        # are neither read nor missing.
        to_read = total - self.left_out
        return {
            "type": "summary",
            "items": {"total": total, **self.items},
            "reasons": dict(self.reasons),
            "findings": {
                "total": self.findings,
                "by_kind": dict(self.by_kind),
                "by_brand": dict(self.by_brand),
                "by_confidence": dict(self.by_confidence),
                "test_cards": self.test_cards,
                "suppressed": self.suppressed,
                "below_threshold": self.below_threshold,
            },
            "bytes_scanned": self.bytes_scanned,
            "duration_seconds": round(self.duration_seconds, 3),
            "coverage": {
                "complete": self.coverage_complete,
                "items_complete_ratio": round(complete / to_read, 6) if to_read > 0 else 1.0,
                "left_out_on_purpose": self.left_out,
            },
            "interrupted": self.interrupted,
            "pattern_version": self.pattern_version,
            "exit_status": self.exit_status,
            "retention": self.retention,
            "changes": self.changes,
            "sweep_id": self.sweep_id,
            "min_confidence": self.min_confidence,
            "allow": self.allow,
            **self.extra,
        }


# The keys Summary.to_record writes itself; every other key of a record is ``extra``.
_RECORD_KEYS = frozenset({"type", "items", "reasons", "findings", "bytes_scanned", "duration_seconds",
                          "coverage", "interrupted", "pattern_version", "exit_status", "retention",
                          "changes", "sweep_id", "min_confidence", "allow"})


class Sink(Protocol):
    """A report writer."""

    def write_item(self, result: ItemResult) -> None:
        """Record one item and its findings (called once per item, in completion order)."""

    def write_findings(self, findings: Sequence[Finding]) -> None:
        """Record a batch of the findings of an item still being scanned (a PAN-dense one),
        before its ``write_item``, whose result then holds only the rest
        (``earlier_findings`` counts these). Batches of different items may interleave."""

    def write_bucket(self, record: dict[str, Any]) -> None:
        """Record the facts of one S3 bucket (``{"type": "bucket", ...}``, already masked)."""

    def write_volume(self, record: dict[str, Any]) -> None:
        """Record the facts of one EBS volume scanned (``{"type": "volume", ...}``, masked)."""

    def write_retention(self, verdict: RetentionVerdict) -> None:
        """Record an item older than its retention rule (called right after its
        ``write_item``; location already masked)."""

    def write_resolved(self, finding: Finding) -> None:
        """Record a finding of the previous sweep that this sweep no longer found (called
        after the last ``write_item``, before ``finish``)."""

    def write_suppressed(self, records: Sequence[Suppressed]) -> None:
        """Record findings an ``[[allow]]`` entry suppresses (listed with the entry's reason,
        never counted as findings); called before the ``write_item`` or ``write_findings``
        of the same item's reported findings."""

    def finish(self, summary: Summary) -> None:
        """Write what comes at the end and flush; the stream stays open."""


T = TypeVar("T")


class Smallest(Generic[T]):
    """The :attr:`limit` values with the smallest ``key`` among all added, and how many were
    added. Memory stays under twice ``limit`` (sorted and cut each time it gets there)."""

    def __init__(self, limit: int, key: Callable[[T], Any]) -> None:
        self.limit = limit
        self.count = 0
        self._key = key
        self._kept: list[T] = []

    def add(self, value: T) -> None:
        self.count += 1
        self._kept.append(value)
        if len(self._kept) >= 2 * self.limit:
            self._trim()

    def kept(self) -> list[T]:
        """The kept values, smallest key first."""
        self._trim()
        return list(self._kept)

    @property
    def left_out(self) -> int:
        return max(0, self.count - self.limit)

    def _trim(self) -> None:
        self._kept.sort(key=self._key)
        del self._kept[self.limit:]


def format_size(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``1.5 KiB``, ... ``2.0 TiB`` (binary units)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display(text: str) -> str:
    """``text`` safe for a terminal or a spreadsheet cell: bytes that were not UTF-8 and
    control characters (a file name can hold escape sequences) become ``\\xNN``."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def open_sink(fmt: str, stream: TextIO, *, notes: TextIO | None = None, policy: Policy | None = None) -> Sink:
    """A sink for ``fmt`` (one of :data:`FORMATS`) writing to ``stream``.

    ``notes`` is where formats without room for item and summary records (csv) write them
    as text; ``None`` drops them. ``policy`` is the retention policy of the scan: the html
    report charts every item's age against its rule with it (without it, only the items
    past retention have a known rule).
    """
    from panscan.sinks.csv import CsvSink
    from panscan.sinks.html import HtmlSink
    from panscan.sinks.jsonl import JsonlSink
    from panscan.sinks.table import TableSink

    factories: dict[str, Callable[[], Sink]] = {
        "table": lambda: TableSink(stream),
        "jsonl": lambda: JsonlSink(stream),
        "csv": lambda: CsvSink(stream, notes),
        "html": lambda: HtmlSink(stream, policy),
    }
    try:
        return factories[fmt]()
    except KeyError:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})") from None
