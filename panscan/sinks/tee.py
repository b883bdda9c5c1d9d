"""One sink that writes to several: the report asked for, and the copies an evidence bundle
keeps (JSON Lines and HTML), from the same stream of results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from panscan.model import Finding, ItemResult, RetentionVerdict, Suppressed
from panscan.sinks.base import Sink, Summary


class TeeSink:
    def __init__(self, sinks: Sequence[Sink]) -> None:
        self._sinks = tuple(sinks)

    def write_item(self, result: ItemResult) -> None:
        for sink in self._sinks:
            sink.write_item(result)

    def write_findings(self, findings: Sequence[Finding]) -> None:
        for sink in self._sinks:
            sink.write_findings(findings)

    def write_suppressed(self, records: Sequence[Suppressed]) -> None:
        for sink in self._sinks:
            sink.write_suppressed(records)

    def write_bucket(self, record: dict[str, Any]) -> None:
        for sink in self._sinks:
            sink.write_bucket(record)

    def write_volume(self, record: dict[str, Any]) -> None:
        for sink in self._sinks:
            sink.write_volume(record)

    def write_retention(self, verdict: RetentionVerdict) -> None:
        for sink in self._sinks:
            sink.write_retention(verdict)

    def write_resolved(self, finding: Finding) -> None:
        for sink in self._sinks:
            sink.write_resolved(finding)

    def finish(self, summary: Summary) -> None:
        for sink in self._sinks:
            sink.finish(summary)
