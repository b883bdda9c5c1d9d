"""The default report: findings table, items not completely scanned, summary.

Everything is written at the end (column widths need every row), so this sink keeps the
masked findings in memory; use ``jsonl`` for very large result sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from panscan.model import Finding, ItemResult
from panscan.sinks.base import EXIT_MEANINGS, Summary, display

FINDING_COLUMNS = ("LOCATION", "MEMBER", "OFFSET", "LINE", "KIND", "BRAND", "MASKED", "CONFIDENCE", "TEST")
ITEM_COLUMNS = ("STATUS", "REASON", "LOCATION", "DETAIL")


def _table(header: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def format_findings(findings: list[Finding]) -> str:
    if not findings:
        return "No card data found.\n\n"
    rows = [[display(f.location), display(f.member or "-"), str(f.offset), str(f.line or "?"),
             str(f.kind), f.brand, f.masked, str(f.confidence), "yes" if f.test_card else ""]
            for f in findings]
    header: Sequence[str] = FINDING_COLUMNS
    if any(f.version_id is not None for f in findings):
        # Object versions: an assessor must see which version holds the data and whether it is
        # an old one (hidden behind a newer version or a delete marker).
        header = (*FINDING_COLUMNS[:1], "VERSION", *FINDING_COLUMNS[1:])
        for f, row in zip(findings, rows, strict=True):
            row.insert(1, _version(f))
    return f"Findings ({len(findings)})\n" + _table(header, rows) + "\n"


def _version(f: Finding) -> str:
    if f.version_id is None:
        return "-"
    return f"{display(f.version_id)}{'' if f.is_latest else ' (non-current)'}"


BUCKET_COLUMNS = ("BUCKET", "VERSIONING", "ENCRYPTION", "LOGGING", "LIFECYCLE", "OBJECT LOCK",
                  "PUBLIC ACCESS BLOCK")


def format_buckets(records: list[dict[str, Any]]) -> str:
    """The facts an assessor checks per bucket, one line each."""
    if not records:
        return ""
    rows = [[display(str(r.get("bucket", "?"))), *(_fact(r.get(k)) for k in
             ("versioning", "encryption", "logging", "lifecycle", "object_lock", "public_access_block"))]
            for r in sorted(records, key=lambda r: str(r.get("bucket")))]
    return f"Buckets ({len(records)})\n" + _table(BUCKET_COLUMNS, rows) + "\n"


def _fact(value: Any) -> str:
    """A fact in a few words: a string as it is, a record as its set fields."""
    if isinstance(value, str):
        return display(value)
    if isinstance(value, list):
        return f"{len(value)} rule(s)" if value else "none"
    if isinstance(value, dict):
        shown = [f"{k}={v}" for k, v in value.items() if v not in (None, False, "", [], {})]
        return display(", ".join(shown) or "off")
    return "-"


def format_incomplete(results: list[ItemResult]) -> str:
    if not results:
        return ""
    rows = [[str(r.status), str(r.reason or "-"), display(r.item.location), display(r.detail or "")]
            for r in results]
    return f"Items not completely scanned ({len(results)})\n" + _table(ITEM_COLUMNS, rows) + "\n"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_summary(s: Summary) -> str:
    items = ", ".join(f"{k} {v}" for k, v in s.items.items())
    lines = ["Summary", f"  items:         {s.total_items} ({items})"]
    if s.reasons:
        lines.append(f"  reasons:       {_counts(s.reasons)}")
    found = f"  findings:      {s.findings}"
    if s.findings:
        found += (f" (by kind: {_counts(s.by_kind)}; by brand: {_counts(s.by_brand)};"
                  f" by confidence: {_counts(s.by_confidence)}; published test cards: {s.test_cards})")
    lines.append(found)
    lines.append(f"  scanned:       {_size(s.bytes_scanned)} in {s.duration_seconds:.1f} s")
    coverage = "complete" if s.coverage_complete else "INCOMPLETE"
    if s.interrupted:
        coverage += " (interrupted)"
    lines.append(f"  coverage:      {coverage}")
    lines.append(f"  exit status:   {s.exit_status} ({EXIT_MEANINGS.get(s.exit_status, '')})")
    return "\n".join(lines) + "\n"


class TableSink:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._findings: list[Finding] = []
        self._incomplete: list[ItemResult] = []
        self._buckets: list[dict[str, Any]] = []

    def write_bucket(self, record: dict[str, Any]) -> None:
        self._buckets.append(record)

    def write_item(self, result: ItemResult) -> None:
        self._findings.extend(result.findings)
        if result.status != "complete":
            self._incomplete.append(result)

    def finish(self, summary: Summary) -> None:
        self._findings.sort(key=lambda f: (f.location, f.member or "", f.offset))
        self._incomplete.sort(key=lambda r: r.item.location)
        self._stream.write(format_findings(self._findings) + format_incomplete(self._incomplete)
                           + format_buckets(self._buckets) + format_summary(summary))
        self._stream.flush()
