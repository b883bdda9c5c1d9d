"""Report writers: record order and fields, CSV safety, the table's sections."""

from __future__ import annotations

import csv
import io
import json

import pytest

from panscan.model import Confidence, Finding, Item, ItemResult, Kind, Reason, Status
from panscan.sinks import Summary, open_sink
from panscan.sinks.base import display


def finding(location: str, offset: int, *, member: str | None = None) -> Finding:
    return Finding(location, None, None, member, offset, 3, Kind.PAN, "Visa", "453201******0366", "ab" * 32,
                   Confidence.HIGH, False)


def results() -> list[ItemResult]:
    return [
        ItemResult(Item("/data/a.csv", "file", size=100), Status.COMPLETE, None, None, 100,
                   (finding("/data/a.csv", 10), finding("/data/a.csv", 50))),
        ItemResult(Item("/data/pipe", "file"), Status.SKIPPED, Reason.NOT_REGULAR_FILE, "not a regular file"),
        ItemResult(Item("/data/b.txt", "file", size=7), Status.COMPLETE, None, None, 7),
    ]


def summary(exit_status: int = 1) -> Summary:
    return Summary(items={"complete": 2, "partial": 0, "skipped": 1, "error": 0},
                   reasons={"NOT_REGULAR_FILE": 1}, findings=2, by_kind={"pan": 2}, by_brand={"Visa": 2},
                   by_confidence={"high": 2}, test_cards=0, bytes_scanned=107, duration_seconds=0.25,
                   coverage_complete=False, interrupted=False, exit_status=exit_status, pattern_version="v1")


def render(fmt: str) -> tuple[str, str]:
    out, notes = io.StringIO(), io.StringIO()
    sink = open_sink(fmt, out, notes=notes)
    for r in results():
        sink.write_item(r)
    sink.finish(summary())
    return out.getvalue(), notes.getvalue()


def test_jsonl_writes_each_items_findings_before_its_item_record_and_the_summary_last() -> None:
    out, notes = render("jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["type"] for r in records] == ["finding", "finding", "item", "item", "item", "summary"]
    assert notes == ""
    item = records[2]
    assert item == {"type": "item", "location": "/data/a.csv", "version_id": None, "status": "complete",
                    "reason": None, "detail": None, "bytes_scanned": 100, "findings": 2, "size": 100}
    assert records[3]["reason"] == "NOT_REGULAR_FILE" and records[3]["status"] == "skipped"
    s = records[-1]
    assert s["items"] == {"total": 3, "complete": 2, "partial": 0, "skipped": 1, "error": 0}
    assert s["findings"] == {"total": 2, "by_kind": {"pan": 2}, "by_brand": {"Visa": 2},
                             "by_confidence": {"high": 2}, "test_cards": 0}
    assert s["coverage"] == {"complete": False, "items_complete_ratio": pytest.approx(2 / 3, rel=1e-5)}
    assert (s["bytes_scanned"], s["duration_seconds"], s["exit_status"]) == (107, 0.25, 1)


def test_jsonl_keeps_names_that_are_not_utf8_as_escapes() -> None:
    out = io.StringIO()
    sink = open_sink("jsonl", out)
    sink.write_item(ItemResult(Item("/data/\udcff.bin", "file"), Status.COMPLETE))
    sink.finish(summary(0))
    assert out.getvalue().isascii()
    assert json.loads(out.getvalue().splitlines()[0])["location"] == "/data/\udcff.bin"


def test_csv_has_one_row_per_finding_and_puts_items_and_summary_in_the_notes() -> None:
    out, notes = render("csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2
    assert rows[0]["location"] == "/data/a.csv" and rows[0]["offset"] == "10"
    assert rows[0]["masked"] == "453201******0366" and rows[0]["test_card"] == "false"
    assert "/data/pipe" in notes and "NOT_REGULAR_FILE" in notes and "exit status:   1" in notes
    assert "/data/pipe" not in out


def test_csv_defuses_spreadsheet_formulas_in_names() -> None:
    out = io.StringIO()
    sink = open_sink("csv", out)
    sink.write_item(ItemResult(Item("=HYPERLINK(\"x\")", "file"), Status.COMPLETE, None, None, 1,
                               (finding("=HYPERLINK(\"x\")", 0, member="+cmd"),)))
    sink.finish(summary())
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["location"].startswith("'=") and row["member"].startswith("'+")


def test_table_shows_findings_incomplete_items_and_summary() -> None:
    out, _ = render("table")
    assert out.index("Findings (2)") < out.index("Items not completely scanned (1)") < out.index("Summary")
    assert "453201******0366" in out and "NOT_REGULAR_FILE" in out
    assert "coverage:      INCOMPLETE" in out
    assert "exit status:   1 (card data found)" in out


def test_table_says_so_when_nothing_is_found() -> None:
    out = io.StringIO()
    sink = open_sink("table", out)
    sink.finish(Summary(items={"complete": 0, "partial": 0, "skipped": 0, "error": 0}, reasons={}, findings=0,
                        by_kind={}, by_brand={}, by_confidence={}, test_cards=0, bytes_scanned=0,
                        duration_seconds=0.0, coverage_complete=True, interrupted=False, exit_status=0))
    assert "No card data found." in out.getvalue() and "exit status:   0" in out.getvalue()


def test_display_escapes_terminal_control_characters_and_undecodable_bytes() -> None:
    assert display("a\x1b[31mred\nb\udcff") == "a\\x1b[31mred\\x0ab\\xff"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        open_sink("xml", io.StringIO())


def test_finding_record_carries_every_finding_field() -> None:
    from dataclasses import fields

    from panscan.model import Confidence, Finding, Kind

    finding = Finding("f", None, None, None, 1, 1, Kind.PAN, "Visa", "411111******1111", "ab",
                      Confidence.HIGH, True, None)
    record = finding.to_record()
    assert record["type"] == "finding"
    assert set(record) - {"type"} == {f.name for f in fields(Finding)}
    assert record["kind"] == "pan" and record["confidence"] == "high"


def test_table_shows_object_versions_and_marks_non_current_ones() -> None:
    from panscan.model import Confidence, Finding, Kind
    from panscan.sinks.table import format_findings

    def finding(version: str | None, latest: bool | None) -> Finding:
        return Finding("s3://b/k", version, latest, None, 0, 1, Kind.PAN, "Visa", "411111******1111",
                       "ab", Confidence.HIGH, True, None)

    text = format_findings([finding("v1", False), finding("v2", True)])
    assert "VERSION" in text
    assert "v1 (non-current)" in text and "v2 " in text and "v2 (non-current)" not in text
    assert "VERSION" not in format_findings([finding(None, None)])
