"""JSON Lines report: one object per line, schema in DESIGN.md.

For each item, its ``suppressed`` records (findings an ``[[allow]]`` entry suppresses) and
``finding`` records come first, then its ``item`` record, then its
``retention`` record when it is older than its rule (the findings of a PAN-dense item come
in batches while it is scanned, so they may sit between other items' records); ``resolved`` records (findings of the
previous sweep that this one no longer found) follow the last item; the ``summary`` record
is the last line. Output is ASCII (``ensure_ascii``), so names that are not valid UTF-8
survive as ``\\udcXX`` escapes instead of breaking the stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from panscan.model import Finding, ItemResult, RetentionVerdict, Suppressed
from panscan.sinks.base import Summary

#: ``change`` of a ``resolved`` record.
RESOLVED = "resolved"


# One encoder for every record: json.dumps with separators builds a new encoder per call,
# which costs more than encoding a small item record.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class JsonlSink:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _write(self, record: dict[str, Any]) -> None:
        self._stream.write(_ENCODE(record) + "\n")

    def write_item(self, result: ItemResult) -> None:
        self.write_findings(result.findings)
        self._write(result.to_record())

    def write_findings(self, findings: Sequence[Finding]) -> None:
        for finding in findings:
            self._write(finding.to_record())

    def write_suppressed(self, records: Sequence[Suppressed]) -> None:
        for record in records:
            self._write(record.to_record())

    def write_bucket(self, record: dict[str, Any]) -> None:
        self._write(record)

    def write_volume(self, record: dict[str, Any]) -> None:
        self._write(record)

    def write_retention(self, verdict: RetentionVerdict) -> None:
        self._write(verdict.to_record())

    def write_resolved(self, finding: Finding) -> None:
        # The finding record's fields under its own type, so a consumer can tell "was there,
        # is gone" from "is there" without reading the change field.
        self._write({**finding.to_record(), "type": "resolved", "change": RESOLVED})

    def finish(self, summary: Summary) -> None:
        self._write(summary.to_record())
        self._stream.flush()
