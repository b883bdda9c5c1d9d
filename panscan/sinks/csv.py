"""CSV report: one row per finding, with a header row; findings an ``[[allow]]`` entry
suppresses are rows too, with ``suppressed`` true, the entry's number and its reason.

A CSV file holds one kind of row, so items and the summary do not go into it: the sink
writes the items past retention, the findings resolved since the previous sweep, the items
that were not completely scanned and the summary as text to ``notes`` (the runner passes
stderr), in the same form as the table report. Cells that a
spreadsheet would run as a formula (leading ``=``, ``+``, ``-``, ``@``) get a leading
``'``: file names are attacker-controlled text.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from panscan.model import Finding, ItemResult, RetentionVerdict, Suppressed
from panscan.sinks.base import Summary, display
from panscan.sinks.table import (
    PastRetention,
    format_buckets,
    format_incomplete,
    format_resolved,
    format_retention,
    format_summary,
    format_volumes,
    is_incomplete,
    previous_sweep,
)

COLUMNS = ("location", "version_id", "member", "offset", "line", "kind", "brand", "masked",
           "fingerprint", "confidence", "test_card", "retention", "change", "volume_id",
           "suppressed", "allow_entry", "allow_reason")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = display(str(value))
    if text[:1] in ("=", "+", "-", "@"):
        return "'" + text
    return text


class CsvSink:
    def __init__(self, stream: TextIO, notes: TextIO | None = None) -> None:
        self._stream = stream
        self._notes = notes
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow(COLUMNS)
        self._incomplete: list[ItemResult] = []
        self._buckets: list[dict[str, Any]] = []
        self._volumes: list[dict[str, Any]] = []
        self._volume_findings: Counter[str] = Counter()  # findings by volume, for the volumes section
        self._past = PastRetention()
        self._resolved: list[Finding] = []

    def write_bucket(self, record: dict[str, Any]) -> None:
        self._buckets.append(record)  # with the summary on the notes stream: the CSV holds findings

    def write_volume(self, record: dict[str, Any]) -> None:
        self._volumes.append(record)

    def write_item(self, result: ItemResult) -> None:
        self.write_findings(result.findings)
        self._past.note_item(result)
        if is_incomplete(result):
            self._incomplete.append(result)

    def write_findings(self, findings: Sequence[Finding]) -> None:
        for f in findings:
            record = f.to_record()
            record["suppressed"] = False
            self._writer.writerow([_cell(record.get(c)) for c in COLUMNS])
            if f.volume_id:
                self._volume_findings[f.volume_id] += 1

    def write_suppressed(self, records: Sequence[Suppressed]) -> None:
        # Rows like the findings', marked: a spreadsheet filters on the suppressed column.
        for s in records:
            record = {**s.finding.to_record(), "suppressed": True, "allow_entry": s.entry, "allow_reason": s.reason}
            self._writer.writerow([_cell(record.get(c)) for c in COLUMNS])

    def write_retention(self, verdict: RetentionVerdict) -> None:
        self._past.add(verdict)

    def write_resolved(self, finding: Finding) -> None:
        self._resolved.append(finding)  # a row would read as present: it goes to the notes

    def finish(self, summary: Summary) -> None:
        self._stream.flush()
        if self._notes is not None:
            text = (format_retention(self._past) + format_resolved(self._resolved, previous_sweep(summary))
                    + format_volumes(self._volumes, self._volume_findings)
                    + format_incomplete(self._incomplete) + format_buckets(self._buckets)
                    + format_summary(summary))
            self._notes.write(text)
            self._notes.flush()
