"""The HTML report: sections, counts, escaping, no full number and nothing that fetches.

The report is read back through ``html.parser`` (what a browser's tokenizer sees), not by
searching the source, so a test of a cell's text would fail if the markup around it broke.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from panscan.config import Policy, RetentionRule
from panscan.model import EXPIRED, Confidence, Finding, Item, ItemResult, Kind, Reason, RetentionVerdict, Status
from panscan.retention import DAY
from panscan.sinks import Summary, open_sink
from panscan.sinks.html import ROWS, SECTIONS, HtmlSink, location_group

AS_OF = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
VISA = "453201******0366"
MASTERCARD = "545454******5454"
AMEX = "378282*****0005"

POLICY = Policy(default_max_age_days=365, rules=(
    RetentionRule("payment-logs", ("s3://acme-payments/logs/*",), 90, "chargeback window"),))


def finding(location: str, masked: str = VISA, brand: str = "Visa", *, offset: int = 10,
            version_id: str | None = None, is_latest: bool | None = None, member: str | None = None,
            confidence: Confidence = Confidence.HIGH, test_card: bool = False, retention: str | None = None,
            change: str | None = None, volume_id: str | None = None) -> Finding:
    return Finding(location, version_id, is_latest, member, offset, 1, Kind.PAN, brand, masked, "ab" * 32,
                   confidence, test_card, retention, change, volume_id)


def days_ago(days: float) -> float:
    return AS_OF - days * DAY


def sweep() -> tuple[list[tuple[ItemResult, RetentionVerdict | None]], list[dict[str, object]],
                     list[dict[str, object]], list[Finding]]:
    """Items (with their verdicts), bucket records, volume records and resolved findings."""
    old_log = "s3://acme-payments/logs/2023/app.log"
    old_item = Item(old_log, "s3", size=2048, last_modified=days_ago(400), version_id="v1AbC", is_latest=False,
                    storage_class="STANDARD", noncurrent_since=days_ago(300))
    verdict = RetentionVerdict(old_log, "v1AbC", "payment-logs", 400, 90, "STANDARD", 2048, days_ago(400),
                               noncurrent_days=300)
    items: list[tuple[ItemResult, RetentionVerdict | None]] = [
        (ItemResult(old_item, Status.COMPLETE, bytes_scanned=2048, findings=(
            finding(old_log, version_id="v1AbC", is_latest=False, retention=EXPIRED, change="new"),
            finding(old_log, MASTERCARD, "Mastercard", offset=90, version_id="v1AbC", is_latest=False,
                    retention=EXPIRED, change="new"),
        )), verdict),
        (ItemResult(Item("s3://acme-payments/logs/2024/app.log", "s3", size=512, last_modified=days_ago(10),
                         version_id="v2XyZ", is_latest=True), Status.COMPLETE, bytes_scanned=512, findings=(
            finding("s3://acme-payments/logs/2024/app.log", version_id="v2XyZ", is_latest=True,
                    confidence=Confidence.MEDIUM, change="still present"),
        )), None),
        (ItemResult(Item("/data/exports/cards.csv", "file", size=100, last_modified=days_ago(40),
                         volume_id="vol-0abc"), Status.COMPLETE, bytes_scanned=100, findings=(
            finding("/data/exports/cards.csv", AMEX, "American Express", test_card=True, volume_id="vol-0abc"),
        )), None),
        (ItemResult(Item("/data/exports/big.zip", "file", size=5000, last_modified=days_ago(5)), Status.PARTIAL,
                    Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT, "expanded past 4 GiB", 3000), None),
        (ItemResult(Item("/data/pipe", "file"), Status.SKIPPED, Reason.NOT_REGULAR_FILE,
                    "not a regular file"), None),
        (ItemResult(Item("s3://acme-payments/deep/obj", "s3", size=70, last_modified=days_ago(20),
                         storage_class="DEEP_ARCHIVE"), Status.SKIPPED, Reason.INVALID_OBJECT_STATE,
                    "archived"), None),
        (ItemResult(Item("/data/readme.txt", "file", size=30, last_modified=days_ago(3)), Status.COMPLETE,
                    bytes_scanned=30), None),
        (ItemResult(Item("/data/old.txt", "file", size=64, last_modified=days_ago(200)), Status.COMPLETE,
                    bytes_scanned=64, unchanged_since_sweep=6), None),
    ]
    buckets: list[dict[str, object]] = [{
        "type": "bucket", "bucket": "acme-payments", "versioning": "Enabled", "encryption": "not configured",
        "logging": {"target_bucket": "acme-logs", "target_prefix": "s3/"},
        "lifecycle": [{"id": "expire", "enabled": True, "prefix": "logs/", "expiration_days": 400,
                       "expiration_date": None, "noncurrent_expiration_days": None, "transitions": [],
                       "noncurrent_transitions": [], "narrowed": False}],
        "object_lock": "not configured",
        "public_access_block": {"block_public_acls": True, "ignore_public_acls": True,
                                "block_public_policy": False, "restrict_public_buckets": True},
    }]
    volumes: list[dict[str, object]] = [
        {"type": "volume", "volume_id": "vol-0abc", "encrypted": False, "kms_key_id": None, "device": "/dev/nvme1n1",
         "mounts": [{"device": "/dev/nvme1n1", "mount_point": "/data"}]},
        {"type": "volume", "volume_id": "vol-0def", "encrypted": True, "kms_key_id": "alias/ebs", "device": "/dev/xvdf",
         "mounts": []},
    ]
    resolved = [finding("s3://acme-payments/tmp/dump.txt", MASTERCARD, "Mastercard")]
    return items, buckets, volumes, resolved


def summary(**changes: object) -> Summary:
    return Summary(
        items={"complete": 5, "partial": 1, "skipped": 2, "error": 0},
        reasons={"ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT": 1, "NOT_REGULAR_FILE": 1, "INVALID_OBJECT_STATE": 1},
        findings=4, by_kind={"pan": 4}, by_brand={"Visa": 2, "Mastercard": 1, "American Express": 1},
        by_confidence={"high": 3, "medium": 1}, test_cards=1, bytes_scanned=5754, duration_seconds=3.25,
        coverage_complete=False, interrupted=False, exit_status=1, pattern_version="abc123def4567890" * 4,
        extra={"started": "2024-06-01T00:00:00+00:00", "panscan_version": "0.1.0"},
        retention={"expired_items": 1, "expired_bytes": 2048, "expired_with_card_data": 1,
                   "findings_past_retention": 2, "by_rule": {"payment-logs": 1}, "as_of": "2024-06-01T00:00:00+00:00"},
        changes={"previous_sweep": 6, "new": 2, "still_present": 1, "resolved": 1, "unverified": 0,
                 "unchanged_items": 1, **changes},
        sweep_id=7)


def render(policy: Policy | None = POLICY, items: list[tuple[ItemResult, RetentionVerdict | None]] | None = None,
           s: Summary | None = None) -> str:
    default_items, buckets, volumes, resolved = sweep()
    out = io.StringIO()
    sink = open_sink("html", out, policy=policy)
    for record in buckets:
        sink.write_bucket(record)
    for record in volumes:
        sink.write_volume(record)
    for result, verdict in (default_items if items is None else items):
        sink.write_item(result)
        if verdict is not None:
            sink.write_retention(verdict)
    for f in resolved:
        sink.write_resolved(f)
    sink.finish(s or summary())
    return out.getvalue()


class Page(HTMLParser):
    """What the parser sees: section ids, headings, the cells of every table (by caption),
    every attribute value and every text node, and the tags in use."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.headings: list[str] = []
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.texts: list[str] = []
        self.tables: dict[str, list[list[str]]] = defaultdict(list)  # caption -> rows of cell texts
        self.section_text: dict[str, list[str]] = defaultdict(list)
        self._section = ""
        self._in_heading = False
        self._caption: list[str] | None = None
        self._table = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
        if tag == "section":
            self._section = dict(attrs).get("id") or ""
            self.sections.append(self._section)
        elif tag == "h2":
            self._in_heading = True
            self.headings.append("")
        elif tag == "table":
            self._table = f"{self._section}:{len(self.tables)}"
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_heading = False
        elif tag == "caption" and self._caption is not None:
            self._table = f"{self._section}:{''.join(self._caption).strip()}"
            self._caption = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        self.section_text[self._section].append(data)
        if self._in_heading:
            self.headings[-1] += data
        if self._caption is not None:
            self._caption.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, section: str, caption_start: str) -> list[list[str]]:
        """The rows (header row first) of the table in ``section`` whose caption starts so."""
        found = [rows for key, rows in self.tables.items()
                 if key.startswith(f"{section}:{caption_start}")]
        assert len(found) == 1, (section, caption_start, list(self.tables))
        return found[0]

    def text_of(self, section: str) -> str:
        return " ".join(" ".join(self.section_text[section]).split())


# A candidate card number as DESIGN.md defines one: 13 to 19 digits, contiguous or in groups
# separated by single spaces or dashes.
DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")


def long_digit_runs(text: str) -> list[str]:
    return [m[0] for m in DIGIT_RUN.finditer(text) if len(re.sub(r"\D", "", m[0])) >= 13]


def assert_no_full_number(source: str, page: Page) -> None:
    assert not re.search(r"\d{13,19}", source)
    for where in (source, *page.texts, *(value for _, _, value in page.attributes)):
        assert not long_digit_runs(where), where


def assert_fetches_nothing(source: str, page: Page) -> None:
    lowered = source.lower()
    for needle in ("http://", "https://", "<script", "@import", "url(", "<link", "<img", "<iframe", "<object",
                   "<embed", "xmlns", "@font-face"):
        assert needle not in lowered, needle
    # A protocol-relative URL (//host/x) anywhere, text included.
    assert "//" not in source
    assert "script" not in page.tags and "img" not in page.tags and "link" not in page.tags
    for tag, name, value in page.attributes:
        assert not name.startswith("on"), (tag, name)  # no event handler
        assert name not in ("src", "srcset", "action", "formaction", "xlink:href", "background", "poster"), name
        if name == "href":
            assert value.startswith("#"), value  # in-page navigation only
        assert "//" not in value and "url(" not in value.lower(), (tag, name, value)


def test_report_has_every_section_with_a_heading_in_order() -> None:
    page = Page(render())
    assert page.sections == [sid for sid, _ in SECTIONS]
    assert page.headings == [title for _, title in SECTIONS]
    assert "svg" in page.tags and "style" in page.tags


def test_summary_names_scope_versions_exit_status_coverage_and_sweep() -> None:
    text = Page(render()).text_of("summary")
    assert "s3://acme-payments" in text and "/data" in text
    assert "2024-06-01T00:00:00+00:00" in text and "3.2 s" in text
    assert "0.1.0" in text and "abc123def456" in text
    assert "1 (card data found, data past retention)" in text
    assert "INCOMPLETE" in text and "Sweep 7" in text


def test_summary_lists_the_targets_when_the_summary_records_them() -> None:
    s = summary()
    s.extra["targets"] = ["s3://acme-payments/logs", "/srv/exports"]
    text = Page(render(s=s)).text_of("summary")
    assert "s3://acme-payments/logs" in text and "/srv/exports" in text


def test_card_data_counts_findings_by_brand_confidence_and_location_group() -> None:
    page = Page(render())
    brands = {row[0]: row[1:] for row in page.table("card-data", "By brand")[1:]}
    assert brands == {"Visa": ["2", "1", "0"], "Mastercard": ["1", "1", "0"], "American Express": ["1", "0", "1"]}
    assert page.table("card-data", "By confidence")[1:] == [["high", "3"], ["medium", "1"]]
    groups = {row[0]: row[1:] for row in page.table("card-data", "By location group")[1:]}
    assert groups["s3://acme-payments/logs/"] == ["3", "2", "Visa 2, Mastercard 1", "high 2, medium 1", "2", "2", "0"]
    assert groups["vol-0abc"] == ["1", "1", "American Express 1", "high 1", "0", "0", "1"]
    assert list(groups) == ["s3://acme-payments/logs/", "vol-0abc"]  # expired card data first


def test_findings_mark_non_current_versions_expired_items_and_test_cards() -> None:
    source = render()
    page = Page(source)
    rows = page.table("card-data", "Findings")
    assert rows[0] == ["Location", "Version", "Member", "Line", "Kind", "Brand", "Masked", "Confidence", "Change",
                       "Retention"]
    by_masked = {(r[0], r[6]): r for r in rows[1:] if len(r) > 1}
    old = by_masked[("s3://acme-payments/logs/2023/app.log", VISA)]
    assert old[1] == "v1AbC non-current" and old[9] == "EXPIRED" and old[8] == "new"
    current = by_masked[("s3://acme-payments/logs/2024/app.log", VISA)]
    assert current[1] == "v2XyZ" and current[9] == "" and current[8] == "still present"
    assert by_masked[("/data/exports/cards.csv", AMEX + " published test card")][5] == "American Express"
    # Group header rows separate the groups.
    assert ["s3://acme-payments/logs/"] in rows and ["vol-0abc"] in rows
    # Highlighted rows carry a class a stylesheet (and a reader of the source) can see.
    classes = [value for tag, name, value in page.attributes if tag == "tr" and name == "class"]
    assert classes.count("expired noncurrent") == 2


def test_retention_charts_each_rule_with_its_max_age_and_lists_expired_items() -> None:
    source = render()
    page = Page(source)
    text = page.text_of("retention")
    assert "Rule payment-logs (max age 90d): 2 items, 1 past retention" in text
    assert "Rule default (max age 1y): 6 items, 0 past retention, 1 of unknown age (not charted)" in text
    assert "max age 90d" in text
    past = page.table("retention", "Items past retention")
    assert past[1][:5] == ["s3://acme-payments/logs/2023/app.log", "v1AbC non-current", "payment-logs", "400", "90"]
    assert past[1][7] == "card data"
    # The expired item's bar lies right of the dashed line: 400 days is in the 365d-1y.. bucket.
    section = source[source.index('<section id="retention">'):source.index('<section id="findings-by-location">')]
    assert "1y-2y: 1 past retention" in section and 'class="limit"' in section


def test_without_a_policy_the_chart_covers_all_items_and_counts_verdicts_by_rule() -> None:
    page = Page(render(policy=None))
    text = page.text_of("retention")
    assert "No retention policy was applied" not in text  # the sweep judged: its summary says so
    assert "All items: 8 items, 1 past retention, 1 of unknown age" in text
    assert page.table("retention", "Items past retention by rule")[1:] == [["payment-logs", "90", "1"]]


def test_retention_section_shows_the_policy_and_the_summary_names_it() -> None:
    page = Page(render())
    assert page.table("retention", "Retention policy")[1:] == [
        ["payment-logs", "s3://acme-payments/logs/*", "90d", "chargeback window"],
        ["default", "everything else", "1y", "-"]]
    assert "Retention policy given (1 rule, default max age 1y)" in page.text_of("summary")


def test_buckets_volumes_and_lifecycle_against_the_policy() -> None:
    page = Page(render())
    buckets = page.table("buckets", "1 bucket")
    assert buckets[0][:6] == ["Bucket", "Versioning", "Default encryption", "Access logging", "Lifecycle rules",
                              "Lifecycle vs policy"]
    row = buckets[1]
    assert row[:5] == ["acme-payments", "Enabled", "not configured", "target_bucket=acme-logs, target_prefix=s3/",
                       "1 (1 enabled)"]
    assert "lifecycle expires current versions after 400 days" in row[5]
    assert row[6:] == ["not configured", "off: block_public_policy"]
    volumes = page.table("volumes", "2 volumes")
    assert volumes[1] == ["vol-0abc", "NO", "-", "/dev/nvme1n1", "/data", "1"]
    assert volumes[2] == ["vol-0def", "yes", "alias/ebs", "/dev/xvdf", "not mounted", "0"]


def test_coverage_ledger_counts_items_and_bytes_by_status_and_reason() -> None:
    page = Page(render())
    ledger = {row[0]: row[1:] for row in page.table("coverage", "Items by status")[1:]}
    assert ledger == {"complete": ["5", "2.7 KiB", "2.7 KiB"], "partial": ["1", "4.9 KiB", "2.9 KiB"],
                      "skipped": ["2", "70 B", "0 B"], "error": ["0", "0 B", "0 B"],
                      "total": ["8", "7.6 KiB", "5.6 KiB"]}
    reasons = page.table("coverage", "Items not completely read, by reason")[1:]
    assert [r[:3] for r in reasons] == [["partial", "ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT", "1"],
                                        ["skipped", "INVALID_OBJECT_STATE", "1"]]
    # A FIFO is left out on purpose (issue 17): listed with its reason, apart from the gaps.
    left_out = page.table("coverage", "Items left out on purpose, by reason")[1:]
    assert [r[:3] for r in left_out] == [["skipped", "NOT_REGULAR_FILE", "1"]]
    assert "1 item was not read again (64 B)" in page.text_of("coverage")
    items = page.table("coverage", "Items not completely read: 2")
    assert [r[2] for r in items[1:]] == ["/data/exports/big.zip", "s3://acme-payments/deep/obj"]
    assert [r[2] for r in page.table("coverage", "Items left out on purpose: 1")[1:]] == ["/data/pipe"]


def test_changes_show_counts_and_resolved_findings() -> None:
    page = Page(render())
    counts = dict((r[0], r[1]) for r in page.table("changes", "Findings against the previous sweep")[1:])
    assert counts["new"] == "2" and counts["still present"] == "1" and counts["resolved"] == "1"
    resolved = page.table("changes", "Resolved")
    # No resolved finding has a version, so there is no Version column.
    assert resolved[0] == ["Location", "Member", "Kind", "Brand", "Masked"]
    assert resolved[1] == ["s3://acme-payments/tmp/dump.txt", "-", "pan", "Mastercard", MASTERCARD]
    assert "Compared with sweep 6." in page.text_of("changes")


def test_sections_with_nothing_to_show_say_so() -> None:
    empty = Summary(items={"complete": 0, "partial": 0, "skipped": 0, "error": 0}, reasons={}, findings=0,
                    by_kind={}, by_brand={}, by_confidence={}, test_cards=0, bytes_scanned=0, duration_seconds=0.0,
                    coverage_complete=True, interrupted=False, exit_status=0)
    out = io.StringIO()
    HtmlSink(out).finish(empty)
    page = Page(out.getvalue())
    assert page.sections == [sid for sid, _ in SECTIONS]
    assert "No card data found." in page.text_of("card-data")
    assert "No S3 bucket was scanned." in page.text_of("buckets")
    assert "No EBS volume was scanned." in page.text_of("volumes")
    assert "Change tracking was off" in page.text_of("changes")
    assert "No item with a known age to chart." in page.text_of("retention")
    assert "nothing to chart" in page.text_of("findings-by-location")


def test_report_holds_no_full_card_number() -> None:
    source = render()
    page = Page(source)
    assert_no_full_number(source, page)
    assert VISA in source and MASTERCARD in source  # masked values are shown


def test_report_fetches_nothing_and_runs_nothing() -> None:
    source = render()
    assert_fetches_nothing(source, Page(source))
    assert source.startswith("<!DOCTYPE html>")


def test_hostile_names_are_escaped_and_cannot_smuggle_a_url() -> None:
    hostile = "s3://acme/<script>alert(1)</script>/https://evil.example/x\"onload=\"y url(//evil) @import"
    items = [(ItemResult(Item(hostile, "s3", size=1, last_modified=days_ago(1)), Status.COMPLETE, bytes_scanned=1,
                         findings=(finding(hostile, member="<img src=x onerror=alert(2)>"),)), None),
             (ItemResult(Item("/data/\x1b[31mred", "file"), Status.ERROR, Reason.READ_ERROR, "<b>boom</b>"), None)]
    source = render(items=items)
    page = Page(source)
    assert_fetches_nothing(source, page)
    assert "<script>" not in source and "<b>" not in source and "\x1b" not in source
    cells = [c for rows in page.tables.values() for row in rows for c in row]
    assert hostile in cells  # the reader sees the name as it is
    assert "Version" not in page.table("card-data", "Findings")[0]  # no item has a version
    assert "<img src=x onerror=alert(2)>" in cells
    assert "/data/\\x1b[31mred" in cells


def test_a_huge_sweep_stays_capped_and_says_how_many_more() -> None:
    out = io.StringIO()
    sink = HtmlSink(out, POLICY)
    n = 3000
    for i in range(n):
        location = f"s3://bulk-{i % 1500}/k{i}.txt"
        sink.write_item(ItemResult(Item(location, "s3", size=10, last_modified=days_ago(i % 900)), Status.COMPLETE,
                                   bytes_scanned=10, findings=(finding(location), finding(location, offset=99))))
        if i % 900 > 365:
            sink.write_retention(RetentionVerdict(location, None, "default", i % 900, 365, "STANDARD", 10,
                                                  days_ago(i % 900)))
        sink.write_item(ItemResult(Item(f"/x/{i}", "file"), Status.SKIPPED, Reason.NOT_REGULAR_FILE))
    sink.finish(summary())
    source = out.getvalue()
    page = Page(source)
    findings = page.table("card-data", "Findings:")
    assert len([r for r in findings if len(r) > 1]) == ROWS + 1  # header + capped rows
    assert f"... and {2 * n - ROWS:,} more (see the JSON Lines report)" in page.text_of("card-data")
    assert len(page.table("card-data", "By location group")) == ROWS + 1
    assert len(page.table("retention", "Items past retention")) == ROWS + 1
    assert len(page.table("coverage", "Items left out on purpose:")) == ROWS + 1
    assert source.count('class="bar-ok"') < 100  # top 20 bars and the histogram, not one per location
    assert len(source) < 2_000_000
    assert_no_full_number(source, page)


def test_location_groups() -> None:
    assert location_group("s3://b/logs/2024/x") == "s3://b/logs/"
    assert location_group("s3://b/top.txt") == "s3://b"
    assert location_group("glacier://vault/archive-id") == "glacier://vault"
    assert location_group("/data/a/b.csv") == "/data/a"
    assert location_group("/mnt/ebs/a.csv", "vol-1") == "vol-1"


def test_html_format_is_offered_by_the_factory() -> None:
    from panscan.sinks import FORMATS

    assert "html" in FORMATS
    assert isinstance(open_sink("html", io.StringIO()), HtmlSink)


# The table sink's colour lives here too: it is the terminal form of the same report.


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def render_table(out: io.StringIO, color: bool | None = None) -> str:
    from panscan.sinks.table import TableSink

    items, _, volumes, resolved = sweep()
    sink = TableSink(out, color=color)
    for record in volumes:
        sink.write_volume(record)
    for result, verdict in items:
        sink.write_item(result)
        if verdict is not None:
            sink.write_retention(verdict)
    for f in resolved:
        sink.write_resolved(f)
    sink.finish(summary())
    return out.getvalue()


def test_table_colours_expired_card_data_unencrypted_volumes_and_incomplete_coverage() -> None:
    from panscan.sinks.table import BOLD_RED, RESET, YELLOW

    coloured = render_table(io.StringIO(), color=True)
    assert f"{BOLD_RED}CARD DATA PAST RETENTION (2){RESET}" in coloured
    assert f"{BOLD_RED}EXPIRED{RESET}" in coloured
    assert f"{BOLD_RED}NO{RESET}" in coloured
    assert f"coverage:      {YELLOW}INCOMPLETE{RESET}" in coloured
    # Without the escape codes it is the plain report, columns aligned as before.
    assert ANSI.sub("", coloured) == render_table(io.StringIO(), color=False)


def test_table_colours_complete_coverage_green() -> None:
    from dataclasses import replace

    from panscan.sinks.table import GREEN, RESET, format_summary

    assert f"{GREEN}complete{RESET}" in format_summary(replace(summary(), coverage_complete=True), color=True)


def test_table_has_no_colour_unless_the_stream_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert "\x1b" not in render_table(io.StringIO())
    assert "\x1b[" in render_table(Terminal())
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in render_table(Terminal())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert "\x1b" not in render_table(Terminal())
