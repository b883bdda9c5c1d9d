"""The default report, for a person at a terminal. Sections, in order, each only when it has
something to say:

1. ``CARD DATA PAST RETENTION`` — findings in items older than their retention rule: card data
   kept longer than policy allows (PCI DSS 3.2.1), the most severe result, so it comes first;
2. ``Findings`` — the findings (with RETENTION and CHANGE columns when those are known), at
   most :data:`FINDING_ROWS`, the first by location (the JSON Lines and CSV reports list all),
   then ``Suppressed by [[allow]] entries`` — findings an entry suppresses, with its number and
   reason, at most :data:`SUPPRESSED_ROWS`;
3. ``Past retention`` — items older than their rule, oldest first, at most
   :data:`RETENTION_ROWS` rows (the JSON Lines report lists them all);
4. ``Resolved since sweep N`` — findings of the previous sweep that this one no longer found;
5. ``Items not completely scanned`` (gaps in coverage), ``Items left out on purpose`` (excludes,
   links not followed, FIFOs and devices, other filesystems: listed, but no gap), ``Buckets``,
   ``Summary``.

Everything is written at the end (column widths need every row), so this sink keeps the
rows it will show: at most :data:`FINDING_ROWS` findings (and as many past retention), the
rest counted, so a PAN-dense file does not fill memory. Items past retention are counted,
but only the oldest ones (and those with card data) are kept.

Colour (ANSI) marks only what needs attention: card data past retention and unencrypted
volumes in bold red, incomplete coverage in yellow, complete coverage in green. It is on
for a terminal (see :func:`use_color`); without it the output is plain text, unchanged.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from panscan.model import EXPIRED, Finding, ItemResult, RetentionVerdict, Status, Suppressed
from panscan.sinks.base import EXIT_MEANINGS, Smallest, Summary, display, format_size

FINDING_COLUMNS = ("LOCATION", "MEMBER", "OFFSET", "LINE", "KIND", "BRAND", "MASKED", "CONFIDENCE", "TEST")
EXPIRED_COLUMNS = ("LOCATION", "VERSION", "MEMBER", "MASKED", "BRAND", "RULE", "AGE (days)", "MAX AGE")
RETENTION_COLUMNS = ("LOCATION", "VERSION", "RULE", "AGE (days)", "MAX AGE", "CLASS", "SIZE", "CARD DATA")
RESOLVED_COLUMNS = ("LOCATION", "VERSION", "MEMBER", "KIND", "BRAND", "MASKED")
ITEM_COLUMNS = ("STATUS", "REASON", "LOCATION", "DETAIL")
SUPPRESSED_COLUMNS = ("LOCATION", "MEMBER", "LINE", "BRAND", "MASKED", "CONFIDENCE", "ALLOW", "REASON")

#: Rows of the "Past retention" section; an account can hold millions of expired versions.
RETENTION_ROWS = 50
#: Rows of the "Suppressed" section: a short reminder of what [[allow]] entries hide (every
#: one is in the JSON Lines and CSV reports).
SUPPRESSED_ROWS = 200
#: Rows of the "Findings" and "CARD DATA PAST RETENTION" sections: a dump of card numbers
#: can hold millions, and a table of them is read by nobody (the JSON Lines report has all).
FINDING_ROWS = 10_000

_Key = tuple[str, str | None]  # (location, version id) of an item

BOLD_RED = "\x1b[1;31m"
YELLOW = "\x1b[33m"
GREEN = "\x1b[32m"
RESET = "\x1b[0m"


def use_color(stream: TextIO) -> bool:
    """Whether a report on ``stream`` gets colour: the stream is a terminal, ``NO_COLOR`` is
    not set to a non-empty value (https://no-color.org) and ``TERM`` is not ``dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # not a file, or already closed
        return False


def paint(text: str, code: str, color: bool) -> str:
    """``text`` in the ANSI style ``code`` when ``color`` is on, else ``text`` unchanged."""
    return f"{code}{text}{RESET}" if color else text


def format_table(header: Sequence[str], rows: list[list[str]],
                 emphasis: Mapping[tuple[str, str], str] | None = None) -> str:
    """Rows in aligned columns. ``emphasis`` maps (column name, cell text) to an ANSI style
    for that cell; widths are measured without the escape codes, so columns stay aligned."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    if not emphasis:
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join(lines) + "\n"

    def cell(name: str, text: str, width: int) -> str:
        code = emphasis.get((name, text))
        # The padding stays outside the escape codes so the line's trailing spaces still strip.
        return text.ljust(width) if code is None else f"{code}{text}{RESET}" + " " * (width - len(text))

    lines += ["  ".join(cell(h, c, w) for h, c, w in zip(header, r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _drop_version_column(header: Sequence[str], rows: list[list[str]],
                         versions: Iterable[str | None]) -> tuple[Sequence[str], list[list[str]]]:
    """Without S3 versions (files only), the VERSION column (index 1) would be all dashes."""
    if any(v is not None for v in versions):
        return header, rows
    return (header[0], *header[2:]), [[r[0], *r[2:]] for r in rows]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# Findings


def _shown(count: int, total: int | None) -> str:
    """The count in a section's title, and a line saying when not every row is shown."""
    if total is None or total <= count:
        return f"({count})\n"
    return (f"({total})\nThe first {count} by location are shown; every one of the {total} is in the "
            "JSON Lines and CSV reports.\n")


def format_findings(findings: list[Finding], *, total: int | None = None, color: bool = False) -> str:
    """The findings table; ``total`` is how many there were when ``findings`` are only the
    first of them."""
    if not findings:
        return "No card data found.\n\n"
    rows = [[display(f.location), display(f.member or "-"), str(f.offset), str(f.line or "?"),
             str(f.kind), f.brand, f.masked, str(f.confidence), "yes" if f.test_card else ""]
            for f in findings]
    header: list[str] = list(FINDING_COLUMNS)
    if any(f.version_id is not None for f in findings):
        # Object versions: an assessor must see which version holds the data and whether it is
        # an old one (hidden behind a newer version or a delete marker).
        header.insert(1, "VERSION")
        for f, row in zip(findings, rows, strict=True):
            row.insert(1, _version(f))
    if any(f.retention is not None for f in findings):
        header.append("RETENTION")
        for f, row in zip(findings, rows, strict=True):
            row.append("EXPIRED" if f.retention == EXPIRED else display(f.retention or ""))
    if any(f.change is not None for f in findings):
        header.append("CHANGE")
        for f, row in zip(findings, rows, strict=True):
            row.append(display(f.change or ""))
    emphasis = {("RETENTION", "EXPIRED"): BOLD_RED} if color else None
    return f"Findings {_shown(len(findings), total)}" + format_table(header, rows, emphasis) + "\n"


def _version(f: Finding) -> str:
    if f.version_id is None:
        return "-"
    return f"{display(f.version_id)}{'' if f.is_latest else ' (non-current)'}"


def _verdict_version(v: RetentionVerdict) -> str:
    if v.version_id is None:
        return "-"
    return f"{display(v.version_id)}{'' if v.noncurrent_days is None else ' (non-current)'}"


def _finding_order(f: Finding) -> tuple[str, str, str, int]:
    return (f.location, f.version_id or "", f.member or "", f.offset)


# Retention


class PastRetention:
    """What a report keeps of the items past retention: how many and how many bytes, the
    oldest :attr:`limit` of them, and the verdicts of those that held card data.

    Call :meth:`note_item` for every item and :meth:`add` for its verdict after it (the
    order the runner keeps), so the verdict knows whether its item had findings.
    """

    def __init__(self, limit: int = RETENTION_ROWS) -> None:
        self.limit = limit
        self.count = 0
        self.bytes = 0
        self.with_card_data: dict[_Key, RetentionVerdict] = {}
        self._items_with_findings: set[_Key] = set()
        self._oldest: list[RetentionVerdict] = []

    def note_item(self, result: ItemResult) -> None:
        if result.findings_total:
            self._items_with_findings.add((result.item.location, result.item.version_id))

    def add(self, verdict: RetentionVerdict) -> None:
        self.count += 1
        self.bytes += verdict.size or 0
        key = (verdict.location, verdict.version_id)
        if key in self._items_with_findings:
            self.with_card_data[key] = verdict
        self._oldest.append(verdict)
        if len(self._oldest) >= 2 * self.limit:
            self._trim()  # amortised: memory stays at most twice the rows shown

    def oldest(self) -> list[RetentionVerdict]:
        """The oldest :attr:`limit` verdicts, oldest first."""
        self._trim()
        return list(self._oldest)

    def _trim(self) -> None:
        self._oldest.sort(key=_oldest_first)
        del self._oldest[self.limit:]


def _oldest_first(v: RetentionVerdict) -> tuple[int, float, str, str]:
    return (-v.age_days, v.last_modified, v.location, v.version_id or "")


def format_expired_findings(findings: list[Finding], past: PastRetention, *, total: int | None = None,
                            color: bool = False) -> str:
    """Findings in items older than their retention rule, oldest item first (``total``: how
    many there were when ``findings`` holds only the first of them by location)."""
    expired = [f for f in findings if f.retention == EXPIRED]
    if not expired:
        return ""

    def verdict(f: Finding) -> RetentionVerdict | None:
        return past.with_card_data.get((f.location, f.version_id))

    def order(f: Finding) -> tuple[int, tuple[str, str, str, int]]:
        v = verdict(f)
        return (-(v.age_days if v else -1), _finding_order(f))

    expired.sort(key=order)
    rows = []
    for f in expired:
        v = verdict(f)
        rows.append([display(f.location), _version(f), display(f.member or "-"), f.masked, f.brand,
                     display(v.rule) if v else "-", str(v.age_days) if v else "-",
                     str(v.max_age_days) if v else "-"])
    header, rows = _drop_version_column(EXPIRED_COLUMNS, rows, (f.version_id for f in expired))
    title, *more = _shown(len(expired), total).splitlines(keepends=True)
    return (paint(f"CARD DATA PAST RETENTION {title.rstrip()}", BOLD_RED, color) + "\n"
            "Card numbers in items kept longer than their retention rule allows (PCI DSS 3.2.1).\n"
            + "".join(more)
            + format_table(header, rows) + "\n")


def format_retention(past: PastRetention) -> str:
    """The items older than their rule, oldest first, at most ``past.limit`` rows."""
    if not past.count:
        return ""
    shown = past.oldest()
    rows = [[display(v.location), _verdict_version(v), display(v.rule), str(v.age_days), str(v.max_age_days),
             display(v.storage_class or "-"), format_size(v.size) if v.size is not None else "-",
             "yes" if (v.location, v.version_id) in past.with_card_data else ""]
            for v in shown]
    header, rows = _drop_version_column(RETENTION_COLUMNS, rows, (v.version_id for v in shown))
    text = f"Past retention ({_plural(past.count, 'item')}, {format_size(past.bytes)})\n" + format_table(header, rows)
    if past.count > len(shown):
        text += f"... and {past.count - len(shown)} more (see --format jsonl)\n"
    return text + "\n"


# Suppressed


def format_suppressed(records: list[Suppressed], *, total: int | None = None) -> str:
    """Findings suppressed by ``[[allow]]`` entries, with the entry and its reason; ``total``:
    how many there were when ``records`` holds only the first of them by location."""
    if not records:
        return ""
    ordered = sorted(records, key=lambda s: _finding_order(s.finding))
    rows = [[display(s.finding.location), display(s.finding.member or "-"), str(s.finding.line or "?"),
             s.finding.brand, s.finding.masked, str(s.finding.confidence), f"#{s.entry} ({s.matched_by})",
             display(s.reason)] for s in ordered]
    count = len(records) if total is None else total
    text = (f"Suppressed by [[allow]] entries ({count}): not counted as findings, not in the exit status\n"
            + format_table(SUPPRESSED_COLUMNS, rows))
    if count > len(records):
        text += f"... and {count - len(records)} more (see --format jsonl or csv)\n"
    return text + "\n"


def nothing_reported(s: Summary) -> str:
    """What stands for the findings table when every finding was suppressed or below the
    threshold: "No card data found" would not be true."""
    parts = ([f"{s.suppressed} suppressed by [[allow]] entries"] if s.suppressed else []) + (
        [f"{s.below_threshold} below --min-confidence {display(s.min_confidence)}"] if s.below_threshold else [])
    return f"No card data reported ({'; '.join(parts)}).\n\n"


def _suppressed_line(s: Summary) -> str:
    entries = (s.allow or {}).get("entries") or []
    text = f"{s.suppressed} by [[allow]] entries"
    used = [f"#{e.get('entry')} {e.get('suppressed')}" for e in entries if e.get("suppressed")]
    if used:
        text += f" (by entry: {', '.join(used)})"
    expired = [f"#{e.get('entry')}" for e in entries if e.get("expired")]
    if expired:
        text += f"; expired, no longer suppressing: {', '.join(expired)}"
    return text


# Changes


def format_resolved(findings: list[Finding], previous_sweep: Any = None) -> str:
    """Findings of the previous sweep that this sweep no longer found."""
    if not findings:
        return ""
    ordered = sorted(findings, key=_finding_order)
    rows = [[display(f.location), _version(f), display(f.member or "-"), str(f.kind), f.brand, f.masked]
            for f in ordered]
    header, rows = _drop_version_column(RESOLVED_COLUMNS, rows, (f.version_id for f in ordered))
    since = f"sweep {previous_sweep}" if previous_sweep is not None else "the previous sweep"
    return f"Resolved since {since} ({len(findings)})\n" + format_table(header, rows) + "\n"


def previous_sweep(summary: Summary) -> Any:
    return (summary.changes or {}).get("previous_sweep")


# Items, buckets


def is_incomplete(result: ItemResult) -> bool:
    """Whether a report lists ``result`` as not completely scanned. An item not read again
    because it is unchanged since a sweep that read it completely is complete."""
    return result.status != Status.COMPLETE and result.unchanged_since_sweep is None


BUCKET_COLUMNS = ("BUCKET", "VERSIONING", "ENCRYPTION", "LOGGING", "LIFECYCLE", "OBJECT LOCK",
                  "PUBLIC ACCESS BLOCK")


def format_buckets(records: list[dict[str, Any]]) -> str:
    """The facts an assessor checks per bucket, one line each."""
    if not records:
        return ""
    rows = [[display(str(r.get("bucket", "?"))), *(_fact(r.get(k)) for k in
             ("versioning", "encryption", "logging", "lifecycle", "object_lock", "public_access_block"))]
            for r in sorted(records, key=lambda r: str(r.get("bucket")))]
    return f"Buckets ({len(records)})\n" + format_table(BUCKET_COLUMNS, rows) + "\n"


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


def format_incomplete(results: list[ItemResult], *, color: bool = False) -> str:
    """The items not completely scanned, in two sections: those that make coverage incomplete,
    then those left out on purpose (``ItemResult.left_out_on_purpose``), which are listed with
    their reason but are no gap in coverage."""
    gaps = [r for r in results if not r.left_out_on_purpose]
    left_out = [r for r in results if r.left_out_on_purpose]
    text = ""
    if gaps:
        text += paint(f"Items not completely scanned ({len(gaps)})", YELLOW, color) + "\n" + _item_rows(gaps)
    if left_out:
        text += f"Items left out on purpose ({len(left_out)}): no gap in coverage\n" + _item_rows(left_out)
    return text


def _item_rows(results: list[ItemResult]) -> str:
    rows = [[str(r.status), str(r.reason or "-"), display(r.item.location), display(r.detail or "")]
            for r in results]
    return format_table(ITEM_COLUMNS, rows) + "\n"


# Summary


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{display(str(k))} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


_size = format_size  # the name this module used before format_size moved to base


def _retention_line(r: dict[str, Any]) -> str:
    expired = int(r.get("expired_items") or 0)
    if not expired:
        text = "nothing past retention"
    else:
        text = (f"{_plural(expired, 'item')} past retention ({format_size(int(r.get('expired_bytes') or 0))}),"
                f" {int(r.get('expired_with_card_data') or 0)} with card data")
        if r.get("by_rule"):
            text += f"; by rule: {_counts(r['by_rule'])}"
    if r.get("as_of"):
        text += f"; as of {display(str(r['as_of']))}"
    return text


def _changes_line(c: dict[str, Any]) -> str:
    prev = c.get("previous_sweep")
    since = f"since sweep {prev}" if prev is not None else "no previous sweep"
    parts = [f"{c.get('new', 0)} new", f"{c.get('still_present', 0)} still present",
             f"{c.get('resolved', 0)} resolved",
             f"{c.get('unchanged_items', 0)} unchanged items not re-read"]
    if "unverified" in c:
        parts.append(f"{c['unverified']} unverified")
    return f"{since}: " + ", ".join(parts)


def exit_meaning(s: Summary) -> str:
    """What ``s.exit_status`` means for this scan (data past retention named as such)."""
    meaning = EXIT_MEANINGS.get(s.exit_status, "")
    expired = int((s.retention or {}).get("expired_items") or 0)
    if s.exit_status == 1 and expired:
        return "card data found, data past retention" if s.findings else "data past retention found"
    return meaning


def format_summary(s: Summary, *, color: bool = False) -> str:
    items = ", ".join(f"{k} {v}" for k, v in s.items.items())
    lines = ["Summary", f"  items:         {s.total_items} ({items})"]
    if s.reasons:
        lines.append(f"  reasons:       {_counts(s.reasons)}")
    found = f"  findings:      {s.findings}"
    if s.findings:
        found += (f" (by kind: {_counts(s.by_kind)}; by brand: {_counts(s.by_brand)};"
                  f" by confidence: {_counts(s.by_confidence)}; published test cards: {s.test_cards})")
    lines.append(found)
    if s.suppressed or s.allow:
        lines.append(f"  suppressed:    {display(_suppressed_line(s))}")
    if s.below_threshold or s.min_confidence != "low":
        lines.append(f"  threshold:     {s.below_threshold} below --min-confidence {display(s.min_confidence)} "
                     "(counted, not listed)")
    if s.retention is not None:
        retention = _retention_line(s.retention)
        if int(s.retention.get("expired_with_card_data") or 0):
            retention = paint(retention, BOLD_RED, color)
        lines.append(f"  retention:     {retention}")
    if s.changes is not None:
        lines.append(f"  changes:       {_changes_line(s.changes)}")
    lines.append(f"  scanned:       {format_size(s.bytes_scanned)} in {s.duration_seconds:.1f} s")
    coverage = "complete" if s.coverage_complete else "INCOMPLETE"
    if s.interrupted:
        coverage += " (interrupted)"
    if s.left_out:
        coverage += f"; {_plural(s.left_out, 'item')} left out on purpose"
    lines.append(f"  coverage:      {paint(coverage, GREEN if s.coverage_complete else YELLOW, color)}")
    if s.sweep_id is not None:
        lines.append(f"  sweep:         {s.sweep_id}")
    lines.append(f"  exit status:   {s.exit_status} ({exit_meaning(s)})")
    return "\n".join(lines) + "\n"


VOLUME_COLUMNS = ("VOLUME", "ENCRYPTED", "KMS KEY", "DEVICE", "MOUNTED AT", "FINDINGS")


def format_volumes(records: list[dict[str, Any]], counts: Mapping[str, int], *, color: bool = False) -> str:
    """The EBS volumes scanned, unencrypted ones holding card data first: card data at rest
    without encryption is what an assessor must see before anything else about a volume.
    ``counts``: findings by volume id."""
    if not records:
        return ""
    ordered = sorted(records, key=lambda r: (not counts.get(r.get("volume_id", "")), bool(r.get("encrypted")),
                                             str(r.get("volume_id"))))
    rows = [[display(str(r.get("volume_id"))), "yes" if r.get("encrypted") else "NO",
             display(str(r.get("kms_key_id") or "-")), display(str(r.get("device") or "not found")),
             display(", ".join(str(m.get("mount_point")) for m in r.get("mounts", []))
                     or ("not mounted" if r.get("device") else "-")),
             str(counts.get(str(r.get("volume_id")), 0))] for r in ordered]
    emphasis = {("ENCRYPTED", "NO"): BOLD_RED} if color else None
    return f"EBS volumes ({len(records)})\n" + format_table(VOLUME_COLUMNS, rows, emphasis) + "\n"


class TableSink:
    """The terminal report; ``color`` None decides by :func:`use_color` on ``stream``."""

    def __init__(self, stream: TextIO, color: bool | None = None) -> None:
        self._stream = stream
        self._color = use_color(stream) if color is None else color
        self._findings = Smallest[Finding](FINDING_ROWS, _finding_order)
        self._expired = Smallest[Finding](FINDING_ROWS, _finding_order)
        self._volume_findings: Counter[str] = Counter()
        self._incomplete: list[ItemResult] = []
        self._buckets: list[dict[str, Any]] = []
        self._volumes: list[dict[str, Any]] = []
        self._past = PastRetention()
        self._resolved: list[Finding] = []
        self._suppressed = Smallest[Suppressed](SUPPRESSED_ROWS, lambda s: _finding_order(s.finding))

    def write_bucket(self, record: dict[str, Any]) -> None:
        self._buckets.append(record)

    def write_volume(self, record: dict[str, Any]) -> None:
        self._volumes.append(record)

    def write_suppressed(self, records: Sequence[Suppressed]) -> None:
        for record in records:
            self._suppressed.add(record)

    def write_findings(self, findings: Sequence[Finding]) -> None:
        for f in findings:
            self._findings.add(f)
            if f.retention == EXPIRED:
                self._expired.add(f)
            if f.volume_id:
                self._volume_findings[f.volume_id] += 1

    def write_item(self, result: ItemResult) -> None:
        self.write_findings(result.findings)
        self._past.note_item(result)
        if is_incomplete(result):
            self._incomplete.append(result)

    def write_retention(self, verdict: RetentionVerdict) -> None:
        self._past.add(verdict)

    def write_resolved(self, finding: Finding) -> None:
        self._resolved.append(finding)

    def finish(self, summary: Summary) -> None:
        self._incomplete.sort(key=lambda r: r.item.location)
        color = self._color
        self._stream.write(
            format_expired_findings(self._expired.kept(), self._past, total=self._expired.count, color=color)
            + (format_findings(self._findings.kept(), total=self._findings.count, color=color)
               if self._findings.count or not (summary.suppressed or summary.below_threshold)
               else nothing_reported(summary))
            + format_suppressed(self._suppressed.kept(), total=self._suppressed.count)
            + format_volumes(self._volumes, self._volume_findings, color=color)
            + format_retention(self._past)
            + format_resolved(self._resolved, previous_sweep(summary))
            + format_incomplete(self._incomplete, color=color)
            + format_buckets(self._buckets)
            + format_summary(summary, color=color))
        self._stream.flush()
