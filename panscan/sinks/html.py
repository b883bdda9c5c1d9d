"""The assessor's report: one self-contained HTML5 file (``--format html -o report.html``).

QSAs and compliance leads read it in a browser, offline, or printed. What a reader and a
caller may rely on:

* **Self-contained.** Inline CSS and inline SVG charts only: no script, no font, no image,
  no stylesheet or link to anywhere, and a Content-Security-Policy that forbids fetching
  anything, so opening the file makes no request. Text taken from records has ``//`` written
  as ``/&#47;`` (and ``url(``, ``@import`` defused the same way) so that no string in the
  file reads as a URL, whatever an attacker named an object.
* **Sections**, in this order, each a ``<section id=...>`` with an ``<h2>``: ``summary``,
  ``card-data``, ``suppressed`` (findings ``[[allow]]`` entries suppress, with their reasons,
  and the entries in force), ``retention``, ``findings-by-location``, ``buckets``, ``volumes``,
  ``coverage``, ``changes``. A section with nothing to show says so in one line.
* **Escaped.** Every text from a record (locations are names an attacker may choose) passes
  :func:`~panscan.sinks.base.display`, then :func:`html.escape`.
* **Bounded memory.** Counts are aggregated while items stream in; each table keeps at most
  :data:`ROWS` rows (the most important ones: findings past retention and in non-current
  versions first, the oldest expired items) and says how many more the JSON Lines report holds.
* **Masked values only.** Sinks never see a full number; fingerprints are left out, and the
  pattern-set hash is shortened, so no long run of digits is printed.
* **Printable.** Light colours only; ``@media print`` keeps sections and rows on one page
  where they fit and hides the navigation.
"""

from __future__ import annotations

import html
import math
import os
import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

from panscan.config import Policy
from panscan.model import EXPIRED, LEFT_OUT_ON_PURPOSE, Finding, ItemResult, RetentionVerdict, Status, Suppressed
from panscan.retention import DAY, DEFAULT_RULE, has_rules, rule_for
from panscan.sinks.base import Smallest, Summary, display, format_size
from panscan.sinks.table import exit_meaning, is_incomplete

#: Rows per table (findings, items past retention, buckets, ...); the JSON Lines report has all.
ROWS = 200
#: Location groups counted one by one; findings in further groups are counted together.
MAX_GROUPS = 1000
#: Bars of the findings-per-location chart.
CHART_BARS = 20
#: Scope roots (buckets, vaults) named in the summary when the targets are not known.
MAX_ROOTS = 50
#: Age histogram bucket edges in days (each rule's max_age is added as an edge of its own).
AGE_EDGES = (30, 90, 180, 365, 730, 1825)

ALL_ITEMS = "all items"
NO_RULE = "no rule applies"
OTHER_GROUPS = "(other locations)"
SECTIONS = (("summary", "Summary"), ("card-data", "Card data found"), ("suppressed", "Suppressed findings"),
            ("retention", "Data age and retention"),
            ("findings-by-location", "Findings by location"), ("buckets", "S3 buckets"),
            ("volumes", "EBS volumes"), ("coverage", "Coverage"), ("changes", "Changes since the previous sweep"))

_STATUS_ORDER = {str(s): i for i, s in enumerate((Status.ERROR, Status.PARTIAL, Status.SKIPPED, Status.COMPLETE))}
_CONFIDENCE_ORDER = {"high": 0, "medium": 1, "low": 2}
_MORE = "... and {n} more (see the JSON Lines report)"


# --- escaping ---------------------------------------------------------------------------

_DEFANG = re.compile(r"//|(?i:url)\(|@(?i:import)")


def _defang(m: re.Match[str]) -> str:
    s = m[0]
    if s == "//":
        return "/&#47;"
    if s.endswith("("):
        return s[:-1] + "&#40;"
    return "&#64;" + s[1:]


def esc(value: object) -> str:
    """``value`` as HTML text or attribute value: terminal-safe (:func:`display`), escaped,
    and with nothing that reads as a URL or a CSS fetch (the browser shows the same text)."""
    return _DEFANG.sub(_defang, html.escape(display(str(value)), quote=True))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def _span(text: str, cls: str) -> str:
    return f'<span class="{cls}">{esc(text)}</span>' if cls else esc(text)


def _badge(text: str, kind: str) -> str:
    # The leading space keeps a copied cell readable ("v3 non-current", not "v3non-current").
    return f' <span class="badge {kind}">{esc(text)}</span>'


def _num(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{_num(n)} {word if n == 1 else (words or word + 's')}"


# --- grouping -------------------------------------------------------------------------------


def location_group(location: str, volume_id: str | None = None) -> str:
    """Where a finding sits, for grouping: the EBS volume id when it is on one, else
    ``s3://bucket/first-prefix-segment/`` (``s3://bucket`` for keys at the top),
    ``glacier://vault``, or a file's parent directory."""
    if volume_id:
        return volume_id
    if location.startswith("s3://"):
        bucket, _, key = location[len("s3://"):].partition("/")
        first, slash, _ = key.partition("/")
        return f"s3://{bucket}/{first}/" if slash else f"s3://{bucket}"
    if location.startswith("glacier://"):
        return "glacier://" + location[len("glacier://"):].split("/", 1)[0]
    parent = os.path.dirname(location)
    return parent or "."


def _scope_root(location: str) -> str | None:
    """The bucket or vault of a location; None for a file (files share a common path)."""
    for scheme in ("s3://", "glacier://"):
        if location.startswith(scheme):
            return scheme + location[len(scheme):].split("/", 1)[0]
    return None


@dataclass
class _Group:
    findings: int = 0
    expired: int = 0
    noncurrent: int = 0
    test_cards: int = 0
    items: int = 0
    brands: Counter[str] = field(default_factory=Counter)
    confidences: Counter[str] = field(default_factory=Counter)


class _Pending(NamedTuple):
    """The last item written, so that its retention verdict (written right after it) can
    move it in the age histogram and say whether it held card data."""

    location: str
    version_id: str | None
    rule: str
    day: int | None  # floor(last_modified / DAY); None: age unknown
    findings: bool


def _finding_priority(f: Finding) -> tuple[Any, ...]:
    # Findings past retention, then in non-current versions, then real cards by confidence.
    return (f.retention != EXPIRED, f.is_latest is not False, f.test_card,
            _CONFIDENCE_ORDER.get(str(f.confidence), 3), f.location, f.version_id or "", f.member or "", f.offset)


def _finding_order(f: Finding) -> tuple[str, str, str, int]:
    return (f.location, f.version_id or "", f.member or "", f.offset)


def _oldest_first(entry: tuple[RetentionVerdict, bool]) -> tuple[int, float, str, str]:
    v = entry[0]
    return (-v.age_days, v.last_modified, v.location, v.version_id or "")


def _incomplete_order(r: ItemResult) -> tuple[int, str, str]:
    return (_STATUS_ORDER.get(str(r.status), 9), r.item.location, r.item.version_id or "")


class HtmlSink:
    """Writes the report to ``stream`` at :meth:`finish`; ``policy`` (optional) gives every
    item's retention rule for the age charts."""

    def __init__(self, stream: TextIO, policy: Policy | None = None) -> None:
        self._stream = stream
        self._policy = policy if policy is not None and has_rules(policy) else None
        self._policy_source = policy.source if policy is not None else None
        # card data
        self._groups: dict[str, _Group] = {}
        self._findings = Smallest[Finding](ROWS, _finding_priority)
        self._brands: Counter[str] = Counter()
        self._brand_expired: Counter[str] = Counter()
        self._brand_tests: Counter[str] = Counter()
        self._confidences: Counter[str] = Counter()
        self._volume_findings: Counter[str] = Counter()
        self._items_with_findings = 0
        # location groups of the items whose findings came in batches, until their write_item
        self._streamed_groups: dict[tuple[str, str | None], set[str]] = {}
        # scope
        self._roots: dict[str, None] = {}
        self._more_roots = False
        self._file_root: str | None = None
        # retention: items by rule and UTC day of last modification (not past retention), and
        # by rule and age in days (past retention, from the verdicts, exact)
        self._ages: dict[str, Counter[int]] = {}
        self._expired_ages: dict[str, Counter[int]] = {}
        self._age_unknown: Counter[str] = Counter()
        self._rule_max: dict[str, int] = {}
        if self._policy is not None:
            self._rule_max.update((r.name, r.max_age_days) for r in self._policy.rules)
            if self._policy.default_max_age_days is not None:
                self._rule_max.setdefault(DEFAULT_RULE, self._policy.default_max_age_days)
        self._verdict_rules: Counter[tuple[str, int]] = Counter()
        self._past = Smallest[tuple[RetentionVerdict, bool]](ROWS, _oldest_first)
        self._past_bytes = 0
        self._past_with_card_data = 0
        self._pending: _Pending | None = None
        # buckets, volumes
        self._buckets = Smallest[dict[str, Any]](ROWS, lambda r: str(r.get("bucket", "")))
        self._volumes = Smallest[dict[str, Any]](ROWS, lambda r: str(r.get("volume_id", "")))
        # coverage: (status, reason) -> [items, size, bytes read]
        self._ledger: dict[tuple[str, str], list[int]] = {}
        self._unchanged = [0, 0]  # items, size
        self._incomplete = Smallest[ItemResult](ROWS, _incomplete_order)
        self._left_out = Smallest[ItemResult](ROWS, _incomplete_order)  # skipped on purpose: no gap
        # changes
        self._resolved = Smallest[Finding](ROWS, _finding_order)
        # suppressed by [[allow]] entries
        self._suppressed = Smallest[Suppressed](ROWS, lambda s: _finding_order(s.finding))

    # --- streaming -----------------------------------------------------------------------

    def write_item(self, result: ItemResult) -> None:
        item = result.item
        self._note_scope(item.location)
        size = item.size if item.size is not None else result.bytes_scanned
        status = str(result.status)
        reason = str(result.reason) if result.reason is not None and result.status is not Status.COMPLETE else ""
        entry = self._ledger.setdefault((status, reason), [0, 0, 0])
        entry[0] += 1
        entry[1] += size
        entry[2] += result.bytes_scanned
        if result.unchanged_since_sweep is not None:
            self._unchanged[0] += 1
            self._unchanged[1] += size
        if is_incomplete(result):
            # Kept without its findings: the ledger lists the item, the findings are counted below.
            listed = self._left_out if result.left_out_on_purpose else self._incomplete
            listed.add(replace(result, findings=()) if result.findings else result)
        rule = self._rule_of(item.location, item.source)
        day = None if item.last_modified is None else math.floor(item.last_modified / DAY)
        if day is None:
            self._age_unknown[rule] += 1
        else:
            self._ages.setdefault(rule, Counter())[day] += 1
        self._pending = _Pending(item.location, item.version_id, rule, day, result.findings_total > 0)
        if result.findings_total:
            self._items_with_findings += 1
            groups_of_item = self._streamed_groups.pop((item.location, item.version_id), set())
            for f in result.findings:
                groups_of_item.add(self._note_finding(f))
            for name in groups_of_item:
                self._groups[name].items += 1

    def write_findings(self, findings: Sequence[Finding]) -> None:
        for f in findings:
            self._streamed_groups.setdefault((f.location, f.version_id), set()).add(self._note_finding(f))

    def _note_scope(self, location: str) -> None:
        root = _scope_root(location)
        if root is None:
            current = self._file_root
            if current is None:
                self._file_root = location
            elif location != current and not location.startswith(current.rstrip("/") + "/"):
                try:
                    self._file_root = os.path.commonpath([current, location]) or "."
                except ValueError:  # an absolute and a relative path: keep the first
                    pass
        elif root not in self._roots:
            if len(self._roots) < MAX_ROOTS:
                self._roots[root] = None
            else:
                self._more_roots = True

    def _rule_of(self, location: str, source: str) -> str:
        if self._policy is None:
            return ALL_ITEMS
        if source == "file" and not os.path.isabs(location):
            location = os.path.abspath(location)  # as the sweep matches files (engine.sweep.judge_item)
        # The location is masked; a glob that names digits could match the unmasked one
        # differently, but the verdicts (judged before masking) decide which items are expired.
        applied = rule_for(self._policy, location)
        return NO_RULE if applied is None else applied[0]

    def _note_finding(self, f: Finding) -> str:
        name = location_group(f.location, f.volume_id)
        group = self._groups.get(name)
        if group is None:
            if len(self._groups) >= MAX_GROUPS:
                name = OTHER_GROUPS
            group = self._groups.setdefault(name, _Group())
        expired = f.retention == EXPIRED
        group.findings += 1
        group.expired += expired
        group.noncurrent += f.is_latest is False
        group.test_cards += f.test_card
        group.brands[f.brand] += 1
        group.confidences[str(f.confidence)] += 1
        self._brands[f.brand] += 1
        self._brand_expired[f.brand] += expired
        self._brand_tests[f.brand] += f.test_card
        self._confidences[str(f.confidence)] += 1
        if f.volume_id:
            self._volume_findings[f.volume_id] += 1
        self._findings.add(f)
        return name

    def write_bucket(self, record: dict[str, Any]) -> None:
        self._buckets.add(record)

    def write_volume(self, record: dict[str, Any]) -> None:
        self._volumes.add(record)

    def write_retention(self, verdict: RetentionVerdict) -> None:
        pending, had_findings = self._pending, False
        if pending is not None and (pending.location, pending.version_id) == (verdict.location, verdict.version_id):
            # The item was counted by its day as not expired; the verdict knows its exact age.
            had_findings = pending.findings
            if pending.day is None:
                self._age_unknown[pending.rule] -= 1
            else:
                self._ages[pending.rule][pending.day] -= 1
            self._pending = None
        rule = verdict.rule if self._policy is not None else ALL_ITEMS
        self._expired_ages.setdefault(rule, Counter())[verdict.age_days] += 1
        if self._policy is not None:
            self._rule_max.setdefault(verdict.rule, verdict.max_age_days)
        self._verdict_rules[(verdict.rule, verdict.max_age_days)] += 1
        self._past.add((verdict, had_findings))
        self._past_bytes += verdict.size or 0
        self._past_with_card_data += had_findings

    def write_resolved(self, finding: Finding) -> None:
        self._resolved.add(finding)

    def write_suppressed(self, records: Sequence[Suppressed]) -> None:
        for record in records:
            self._suppressed.add(record)

    def finish(self, summary: Summary) -> None:
        write = self._stream.write
        write(_head(summary))
        for section_id, title in SECTIONS:
            body = getattr(self, "_section_" + section_id.replace("-", "_"))(summary)
            write(f'<section id="{section_id}">\n<h2>{esc(title)}</h2>\n{body}</section>\n')
        write(_foot(summary))
        self._stream.flush()

    # --- sections --------------------------------------------------------------------------

    def _section_summary(self, s: Summary) -> str:
        facts: list[tuple[str, str]] = [("Scope", self._scope_html(s))]
        started = s.extra.get("started")
        facts.append(("Started", esc(started) if started else "not recorded"))
        facts.append(("Duration", esc(f"{s.duration_seconds:.1f} s")))
        facts.append(("panscan version", esc(s.extra.get("panscan_version") or "not recorded")))
        # The first 12 hex digits: enough to tell pattern sets apart, never a long digit run.
        facts.append(("Pattern set", f"<code>{esc(s.pattern_version[:12] or 'not recorded')}</code>"))
        facts.append(("Retention policy", esc(self._policy_text())))
        facts.append(("Exit status", f"{s.exit_status} ({esc(exit_meaning(s))})"))
        coverage = ('<span class="good-text">complete</span>' if s.coverage_complete
                    else '<span class="warn-text">INCOMPLETE</span>')
        if s.interrupted:
            coverage += " (interrupted)"
        if s.left_out:
            coverage += f"; {_plural(s.left_out, 'item')} left out on purpose"
        facts.append(("Coverage", coverage))
        items = ", ".join(f"{esc(k)} {_num(v)}" for k, v in s.items.items())
        facts.append(("Items", f"{_num(s.total_items)} ({items})"))
        facts.append(("Scanned", esc(f"{format_size(s.bytes_scanned)} read")))
        found = _plural(s.findings, "finding")
        if s.findings:
            found += (f"; by brand: {esc(_counts(s.by_brand))}; by confidence: {esc(_counts(s.by_confidence))};"
                      f" published test cards: {_num(s.test_cards)}")
        facts.append(("Card data", found))
        if s.suppressed or s.below_threshold or s.allow:
            facts.append(("Not reported", esc(_not_reported_text(s))))
        if s.retention is not None:
            facts.append(("Retention", esc(_retention_text(s.retention))))
        if s.changes is not None:
            facts.append(("Changes", esc(_changes_text(s.changes))))
        facts.append(("Sweep", esc(s.sweep_id) if s.sweep_id is not None else "not recorded (no state database)"))
        rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>\n" for k, v in facts)
        return _verdict(s) + f'<dl class="facts">\n{rows}</dl>\n'

    def _policy_text(self) -> str:
        policy = self._policy
        if policy is None:
            return "none given" if self._policy_source is None else f"{self._policy_source} (no retention rules)"
        text = self._policy_source or "given"
        text += f" ({_plural(len(policy.rules), 'rule')}"
        if policy.default_max_age_days is not None:
            text += f", default max age {_days(policy.default_max_age_days)}"
        return text + ")"

    def _scope_html(self, s: Summary) -> str:
        targets = s.extra.get("targets")
        if isinstance(targets, list | tuple) and targets:
            roots = [str(t) for t in targets]
            more = False
        else:
            roots = list(self._roots)
            if self._file_root is not None:
                roots.insert(0, self._file_root)
            more = self._more_roots
        if not roots:
            return "nothing was listed"
        text = "".join(f"<li><code>{esc(r)}</code></li>" for r in roots[:MAX_ROOTS])
        if more or len(roots) > MAX_ROOTS:
            text += "<li>and more</li>"
        return f'<ul class="plain">{text}</ul>'

    def _section_card_data(self, s: Summary) -> str:
        total = self._findings.count
        if not total:
            if s.findings:
                return _empty(f"{_plural(s.findings, 'finding')} recorded in the summary, none listed here.")
            if s.suppressed or s.below_threshold:
                return _empty(f"No card data reported: {_not_reported_text(s)}")
            return _empty("No card data found.")
        groups = self._groups
        expired = sum(g.expired for g in groups.values())
        noncurrent = sum(g.noncurrent for g in groups.values())
        tests = sum(g.test_cards for g in groups.values())
        out = [f"<p>{_plural(total, 'finding')} in {_plural(self._items_with_findings, 'item')}, "
               f"{_plural(len(groups), 'location group')}: "
               f"{_span(f'{_num(expired)} past retention', 'bad-text' if expired else '')}, "
               f"{_num(noncurrent)} in non-current versions, {_num(tests)} published test "
               f"{'card' if tests == 1 else 'cards'}.</p>\n"]
        brand_rows = [[esc(b), _num(n), _num(self._brand_expired[b]), _num(self._brand_tests[b])]
                      for b, n in _ranked(self._brands)]
        out.append(_table(("Brand", "Findings", "Past retention", "Published test cards"), brand_rows,
                          numeric={1, 2, 3}, caption="By brand"))
        conf_rows = [[esc(c), _num(n)] for c, n in sorted(self._confidences.items(),
                                                          key=lambda kv: _CONFIDENCE_ORDER.get(kv[0], 3))]
        out.append(_table(("Confidence", "Findings"), conf_rows, numeric={1}, caption="By confidence"))
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1].expired, -kv[1].findings, kv[0]))
        group_rows, classes = [], []
        for name, g in ranked[:ROWS]:
            group_rows.append([f'<span class="loc">{esc(name)}</span>', _num(g.findings), _num(g.items),
                               esc(_counts(g.brands)), esc(_counts(g.confidences)), _num(g.expired),
                               _num(g.noncurrent), _num(g.test_cards)])
            classes.append("expired" if g.expired else "noncurrent" if g.noncurrent else "")
        out.append(_table(("Location group", "Findings", "Items", "By brand", "By confidence", "Past retention",
                           "Non-current", "Test cards"), group_rows, numeric={1, 2, 5, 6, 7}, classes=classes,
                          caption="By location group", more=len(ranked) - len(group_rows)))
        out.append(self._findings_table())
        return "".join(out)

    def _findings_table(self) -> str:
        kept = self._findings.kept()
        kept.sort(key=lambda f: (location_group(f.location, f.volume_id), *_finding_order(f)))
        headers = ["Location", "Version", "Member", "Line", "Kind", "Brand", "Masked", "Confidence", "Change",
                   "Retention"]
        # Files only: no version to show (as in the table report).
        versions = any(f.version_id is not None for f in kept)
        if not versions:
            del headers[1]
        caption = "Findings" if not self._findings.left_out else (
            f"Findings: {_num(len(kept))} of {_num(self._findings.count)}, "
            "past retention and non-current versions first")
        lines = [f'<table class="findings">\n<caption>{esc(caption)}</caption>\n<thead><tr>'
                 + "".join(f'<th scope="col">{esc(h)}</th>' for h in headers) + "</tr></thead>\n<tbody>\n"]
        group = None
        for f in kept:
            name = location_group(f.location, f.volume_id)
            if name != group:
                group = name
                lines.append(f'<tr class="group"><th colspan="{len(headers)}" scope="rowgroup">{esc(name)}</th></tr>\n')
            version = "-" if f.version_id is None else esc(f.version_id)
            if f.is_latest is False:
                version += _badge("non-current", "warn")
            masked = f'<span class="masked">{esc(f.masked)}</span>'
            if f.test_card:
                masked += _badge("published test card", "test")
            retention = _badge("EXPIRED", "bad") if f.retention == EXPIRED else esc(f.retention or "")
            cells = [f'<span class="loc">{esc(f.location)}</span>', version, esc(f.member or "-"),
                     esc(f.line or "?"), esc(f.kind), esc(f.brand), masked, esc(f.confidence), esc(f.change or ""),
                     retention]
            if not versions:
                del cells[1]
            cls = " ".join(c for c, on in (("expired", f.retention == EXPIRED), ("noncurrent", f.is_latest is False))
                           if on)
            lines.append(f'<tr class="{cls}">' if cls else "<tr>")
            line_column = 3 if versions else 2
            lines.append("".join(f'<td class="num">{c}</td>' if i == line_column else f"<td>{c}</td>"
                                 for i, c in enumerate(cells)) + "</tr>\n")
        lines.append("</tbody>\n</table>\n")
        if self._findings.left_out:
            lines.append(_more(self._findings.left_out))
        return "".join(lines)

    def _section_suppressed(self, s: Summary) -> str:
        out: list[str] = []
        entries = (s.allow or {}).get("entries") or []
        if not entries and not s.suppressed:
            out.append(_empty("No [[allow]] entry in the policy: every finding is reported."))
        else:
            policy = (s.allow or {}).get("policy")
            out.append(f"<p>{esc(_plural(s.suppressed, 'finding'))} suppressed by [[allow]] entries"
                       f"{esc(f' of {policy}') if policy else ''}: listed here with the entry and its reason; "
                       "not counted as card data found, not in the exit status.</p>\n")
        if entries:
            rows, classes = [], []
            for e in entries:
                expires = esc(e.get("expires") or "never")
                if e.get("expired"):
                    expires += _badge("expired: suppresses nothing", "warn")
                rows.append([esc(f"#{e.get('entry')}"), esc(e.get("line") or "-"), _allow_matcher(e),
                             esc(e.get("reason") or ""), expires, _num(int(e.get("suppressed") or 0))])
                classes.append("warn" if e.get("expired") else "")
            out.append(_table(("Entry", "Line", "Matches", "Reason", "Expires", "Suppressed"), rows, numeric={5},
                              classes=classes, caption="[[allow]] entries in force"))
        kept = self._suppressed.kept()
        if kept:
            rows = [[f'<span class="loc">{esc(r.finding.location)}</span>', esc(r.finding.member or "-"),
                     esc(r.finding.line or "?"), esc(r.finding.brand),
                     f'<span class="masked">{esc(r.finding.masked)}</span>', esc(r.finding.confidence),
                     esc(f"#{r.entry} ({r.matched_by})"), esc(r.reason)] for r in kept]
            out.append(_table(("Location", "Member", "Line", "Brand", "Masked", "Confidence", "Entry", "Reason"), rows,
                              numeric={2}, caption="Suppressed findings", more=self._suppressed.left_out))
        if s.below_threshold or s.min_confidence != "low":
            out.append(f"<p>{esc(_plural(s.below_threshold, 'finding'))} below --min-confidence "
                       f"{esc(s.min_confidence)}: counted, not listed, not in the exit status.</p>\n")
        return "".join(out)

    def _section_retention(self, s: Summary) -> str:
        out: list[str] = []
        if s.retention is not None:
            out.append(f"<p>{esc(_retention_text(s.retention))}</p>\n")
        elif self._policy is None:
            out.append("<p>No retention policy was applied (give <code>--policy</code> with retention rules);"
                       " the chart shows the age of all items.</p>\n")
        if self._policy is not None:
            out.append(_policy_table(self._policy))
        ref = _reference_time(s)
        # Only a sweep that judged retention says that the items without a verdict are within
        # their rule; without verdicts, ages are charted as the days give them.
        judged = s.retention is not None
        rules = self._chart_rules()
        charts = [self._age_chart(rule, ref, judged) for rule in rules]
        charts = [c for c in charts if c]
        if charts:
            out.append(f'<p class="note">Ages as of {esc(_iso(ref))}; bars in red are items past their '
                       "rule's maximum age (the dashed line).</p>\n")
            out.extend(charts)
        else:
            out.append(_empty("No item with a known age to chart."))
        if self._policy is None and self._verdict_rules:
            rows = [[esc(rule), _num(days), _num(n)] for (rule, days), n in
                    sorted(self._verdict_rules.items(), key=lambda kv: (-kv[1], kv[0]))]
            out.append(_table(("Rule", "Max age (days)", "Items past retention"), rows, numeric={1, 2},
                              caption="Items past retention by rule"))
        out.append(self._past_table())
        return "".join(out)

    def _chart_rules(self) -> list[str]:
        seen = set(self._ages) | set(self._expired_ages) | set(self._age_unknown)
        order = [ALL_ITEMS]
        if self._policy is not None:
            order = [r.name for r in self._policy.rules] + [DEFAULT_RULE, NO_RULE]
        order += sorted(seen - set(order))
        return [r for r in order if r in seen]

    def _age_chart(self, rule: str, ref: float, judged: bool) -> str:
        max_age = self._rule_max.get(rule) if rule != ALL_ITEMS else None
        edges = sorted(set(AGE_EDGES) | ({max_age} if max_age is not None else set()))
        within = [0] * (len(edges) + 1)
        past = [0] * (len(edges) + 1)
        for day, n in self._ages.get(rule, Counter()).items():
            if n <= 0:
                continue
            # The middle of the item's UTC day; an item the sweep did not judge expired is at
            # most max_age old, whatever the day's rounding says.
            age = max(0.0, (ref - (day + 0.5) * DAY) / DAY)
            if max_age is not None and judged:
                age = min(age, float(max_age))
            within[bisect_left(edges, age)] += n
        for days, n in self._expired_ages.get(rule, Counter()).items():
            # A verdict's age_days is rounded down: the item is between it and a day more.
            past[bisect_left(edges, days + 0.5)] += n
        unknown = max(0, self._age_unknown.get(rule, 0))
        counted = sum(within) + sum(past)
        if not counted and not unknown:
            return ""
        title = "All items" if rule == ALL_ITEMS else f"Rule {rule}"
        if max_age is not None:
            title += f" (max age {_days(max_age)})"
        caption = f"{title}: {_plural(counted + unknown, 'item')}, {_num(sum(past))} past retention"
        if unknown:
            caption += f", {_num(unknown)} of unknown age (not charted)"
        limit_after = edges.index(max_age) if max_age is not None else None
        labels = _age_labels(edges)
        svg = _histogram(caption, labels, within, past, limit_after,
                         f"max age {_days(max_age)}" if max_age is not None else "")
        return f'<figure class="chart age">\n{svg}<figcaption>{esc(caption)}</figcaption>\n</figure>\n'

    def _past_table(self) -> str:
        if not self._past.count:
            return _empty("No item is past its retention rule.")
        kept = self._past.kept()
        rows, classes = [], []
        for v, had_findings in kept:
            version = "-" if v.version_id is None else esc(v.version_id)
            if v.noncurrent_days is not None:
                version += _badge("non-current", "warn")
            rows.append([f'<span class="loc">{esc(v.location)}</span>', version, esc(v.rule), _num(v.age_days),
                         _num(v.max_age_days), esc(v.storage_class or "-"),
                         esc(format_size(v.size)) if v.size is not None else "-",
                         _badge("card data", "bad") if had_findings else ""])
            classes.append("expired" if had_findings else "")
        caption = (f"Items past retention: {_num(self._past.count)} ({format_size(self._past_bytes)}), "
                   f"{_num(self._past_with_card_data)} with card data; oldest first")
        return _table(("Location", "Version", "Rule", "Age (days)", "Max age (days)", "Storage class", "Size",
                       "Card data"), rows, numeric={3, 4, 6}, classes=classes, caption=caption,
                      more=self._past.left_out, drop=_no_versions(v.version_id for v, _ in kept))

    def _section_findings_by_location(self, s: Summary) -> str:
        if not self._groups:
            return _empty("No card data found, so there is nothing to chart.")
        ranked = sorted(self._groups.items(), key=lambda kv: (-kv[1].findings, -kv[1].expired, kv[0]))
        top = ranked[:CHART_BARS]
        caption = (f"Findings per location group, the {len(top)} with most findings"
                   if len(ranked) > len(top) else "Findings per location group")
        svg = _bars(caption, [(name, g.findings, g.expired) for name, g in top])
        return (f'<figure class="chart">\n{svg}<figcaption>{esc(caption)}; red: past retention.</figcaption>\n'
                "</figure>\n")

    def _section_buckets(self, s: Summary) -> str:
        if not self._buckets.count:
            return _empty("No S3 bucket was scanned.")
        with_policy = self._policy is not None
        headers = ["Bucket", "Versioning", "Default encryption", "Access logging", "Lifecycle rules",
                   "Object Lock", "Public access block"]
        if with_policy:
            headers.insert(5, "Lifecycle vs policy")
        rows = []
        for r in self._buckets.kept():
            row = [f'<span class="loc">{esc(r.get("bucket", "?"))}</span>', esc(_fact_text(r.get("versioning"))),
                   _flagged(r.get("encryption")), _flagged(r.get("logging")), _lifecycle_cell(r.get("lifecycle")),
                   _object_lock_cell(r.get("object_lock")), _public_access_cell(r.get("public_access_block"))]
            if with_policy:
                row.insert(5, _gaps_cell(r, self._policy))
            rows.append(row)
        return _table(headers, rows, caption=f"{_plural(self._buckets.count, 'bucket')}",
                      more=self._buckets.left_out)

    def _section_volumes(self, s: Summary) -> str:
        records = self._volumes.kept()
        listed = {str(r.get("volume_id")) for r in records}
        unlisted = sorted(v for v in self._volume_findings if v not in listed)
        if not records and not unlisted:
            return _empty("No EBS volume was scanned.")
        rows, classes = [], []
        ordered = sorted(records, key=lambda r: (not self._volume_findings.get(str(r.get("volume_id")), 0),
                                                 bool(r.get("encrypted")), str(r.get("volume_id"))))
        for r in ordered:
            vid = str(r.get("volume_id"))
            found = self._volume_findings.get(vid, 0)
            encrypted = r.get("encrypted")
            mounts = ", ".join(str(m.get("mount_point")) for m in r.get("mounts") or [] if isinstance(m, dict))
            rows.append([esc(vid), "yes" if encrypted else '<span class="bad-text">NO</span>',
                         esc(r.get("kms_key_id") or "-"), esc(r.get("device") or "not found"),
                         esc(mounts or ("not mounted" if r.get("device") else "-")),
                         _num(found)])
            classes.append("expired" if found and not encrypted else "")
        for vid in unlisted[:ROWS]:
            rows.append([esc(vid), "unknown", "-", "-", "-", _num(self._volume_findings[vid])])
            classes.append("")
        return _table(("Volume", "Encrypted", "KMS key", "Device", "Mounted at", "Findings"), rows, numeric={5},
                      classes=classes, caption=_plural(self._volumes.count, "volume"),
                      more=self._volumes.left_out)

    def _section_coverage(self, s: Summary) -> str:
        out = []
        if s.coverage_complete:
            out.append('<p><span class="good-text">Coverage complete:</span> every item that should have been '
                       "read was read.</p>\n")
        else:
            why = " The scan was interrupted." if s.interrupted else ""
            out.append('<p><span class="warn-text">Coverage INCOMPLETE:</span> some items that should have been '
                       f"read were not read completely (below, with the reason).{why}</p>\n")
        if s.left_out:
            out.append(f"<p>{_plural(s.left_out, 'item was', 'items were')} left out on purpose (excluded, "
                       "symbolic links not followed, FIFOs, devices and sockets, directories on other "
                       "filesystems): listed below with the reason, they are no gap in coverage.</p>\n")
        by_status: dict[str, list[int]] = {str(st): [0, 0, 0] for st in Status}
        gaps: set[str] = set()  # statuses with an item that makes coverage incomplete
        for (status, reason), counts in self._ledger.items():
            totals = by_status.setdefault(status, [0, 0, 0])
            for i in range(3):
                totals[i] += counts[i]
            if status != Status.COMPLETE and not _on_purpose(status, reason):
                gaps.add(status)
        rows, classes = [], []
        for status, (n, size, read) in by_status.items():
            rows.append([esc(status), _num(n), esc(format_size(size)), esc(format_size(read))])
            classes.append("warn" if status in gaps else "")
        grand = [sum(v[i] for v in by_status.values()) for i in range(3)]
        rows.append(["<strong>total</strong>", _num(grand[0]), esc(format_size(grand[1])), esc(format_size(grand[2]))])
        classes.append("")
        out.append(_table(("Status", "Items", "Size", "Bytes read"), rows, numeric={1, 2, 3}, classes=classes,
                          caption="Items by status"))
        unchanged_items, unchanged_size = self._unchanged
        if unchanged_items:
            out.append(f"<p>Of the complete items, {_plural(unchanged_items, 'item was', 'items were')} not read "
                       f"again ({esc(format_size(unchanged_size))}): unchanged since a sweep that read them "
                       "completely with the same pattern set.</p>\n")
        reasons = sorted(((k, v) for k, v in self._ledger.items() if k[0] != Status.COMPLETE),
                         key=lambda kv: (_STATUS_ORDER.get(kv[0][0], 9), -kv[1][0], kv[0][1]))
        if reasons:
            for on_purpose, caption, listed in ((False, "Items not completely read", self._incomplete),
                                                (True, "Items left out on purpose", self._left_out)):
                chosen = [kv for kv in reasons if _on_purpose(*kv[0]) == on_purpose]
                if chosen:
                    out.append(_reason_table(chosen, f"{caption}, by reason"))
                    out.append(_item_table(listed, caption))
        else:
            out.append(_empty("No item was skipped, partly read or in error."))
        return "".join(out)

    def _section_changes(self, s: Summary) -> str:
        c = s.changes
        if c is None:
            return _empty("Change tracking was off for this scan (no state database): nothing to compare with.")
        prev = c.get("previous_sweep")
        out = [f"<p>Compared with sweep {esc(prev)}.</p>\n" if prev is not None
               else "<p>No previous sweep to compare with: every finding is new.</p>\n"]
        counts = [("new", c.get("new", 0)), ("still present", c.get("still_present", 0)),
                  ("resolved", c.get("resolved", 0))]
        if "unverified" in c:
            counts.append(("unverified (item not read completely this time, so not known to be resolved)",
                           c["unverified"]))
        counts.append(("unchanged items not re-read", c.get("unchanged_items", 0)))
        out.append(_table(("Change", "Count"), [[esc(k), esc(v)] for k, v in counts], numeric={1},
                          caption="Findings against the previous sweep"))
        if not self._resolved.count:
            out.append(_empty("No finding of the previous sweep was resolved."))
            return "".join(out)
        kept = self._resolved.kept()
        rows = [[f'<span class="loc">{esc(f.location)}</span>', esc(f.version_id or "-"), esc(f.member or "-"),
                 esc(f.kind), esc(f.brand), f'<span class="masked">{esc(f.masked)}</span>'] for f in kept]
        out.append(_table(("Location", "Version", "Member", "Kind", "Brand", "Masked"), rows,
                          caption=f"Resolved: {_plural(self._resolved.count, 'finding')} no longer found",
                          more=self._resolved.left_out, drop=_no_versions(f.version_id for f in kept)))
        return "".join(out)


# --- building blocks ------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Iterable[int] = (),
           classes: Sequence[str] | None = None, caption: str | None = None, more: int = 0,
           drop: Iterable[int] = ()) -> str:
    """A table; ``rows`` hold HTML already escaped, ``numeric`` the indexes of right-aligned
    columns, ``classes`` a class per row, ``more`` how many rows were left out, ``drop`` the
    indexes of columns left out (all indexes count the columns before any is dropped)."""
    gone = set(drop)
    if gone:
        headers = [h for i, h in enumerate(headers) if i not in gone]
        rows = [[c for i, c in enumerate(row) if i not in gone] for row in rows]
        numeric = [i - sum(1 for g in gone if g < i) for i in numeric if i not in gone]
    right = set(numeric)
    parts = ["<table>\n"]
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>\n")
    parts.append("<thead><tr>" + "".join(
        f'<th scope="col" class="num">{esc(h)}</th>' if i in right else f'<th scope="col">{esc(h)}</th>'
        for i, h in enumerate(headers)) + "</tr></thead>\n<tbody>\n")
    for n, row in enumerate(rows):
        cls = classes[n] if classes is not None and n < len(classes) else ""
        parts.append(f'<tr class="{cls}">' if cls else "<tr>")
        parts.append("".join(f'<td class="num">{c}</td>' if i in right else f"<td>{c}</td>"
                             for i, c in enumerate(row)) + "</tr>\n")
    parts.append("</tbody>\n</table>\n")
    if more > 0:
        parts.append(_more(more))
    return "".join(parts)


def _no_versions(versions: Iterable[str | None]) -> list[int]:
    """``[1]`` (the Version column) when no row has a version: files only."""
    return [] if any(v is not None for v in versions) else [1]


def _more(n: int) -> str:
    return f'<p class="more">{esc(_MORE.format(n=_num(n)))}</p>\n'


def _empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>\n'


def _counts(counts: dict[str, int] | Counter[str]) -> str:
    return ", ".join(f"{k} {_num(v)}" for k, v in _ranked(counts))


def _ranked(counts: dict[str, int] | Counter[str]) -> list[tuple[str, int]]:
    return sorted(((str(k), v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))


def _days(days: int) -> str:
    return f"{days // 365}y" if days >= 365 and days % 365 == 0 else f"{days}d"


def _age_labels(edges: Sequence[int]) -> list[str]:
    bounds = [0, *edges]
    labels = [f"{_days(lo) if lo else '0'}-{_days(hi)}" for lo, hi in zip(bounds, edges, strict=False)]
    return [*labels, f">{_days(edges[-1])}"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reference_time(s: Summary) -> float:
    """The time ages are measured from: the retention verdicts' ``as_of``, else the scan's
    start, else now (a summary that recorded neither)."""
    for text in ((s.retention or {}).get("as_of"), s.extra.get("started")):
        if isinstance(text, str):
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return time.time()


def _retention_text(r: dict[str, Any]) -> str:
    expired = int(r.get("expired_items") or 0)
    if not expired:
        text = "Nothing is past retention"
    else:
        text = (f"{_plural(expired, 'item')} past retention ({format_size(int(r.get('expired_bytes') or 0))}),"
                f" {_num(int(r.get('expired_with_card_data') or 0))} with card data")
        if r.get("by_rule"):
            text += f"; by rule: {_counts(r['by_rule'])}"
    if r.get("as_of"):
        text += f"; as of {r['as_of']}"
    return text + "."


def _on_purpose(status: str, reason: str) -> bool:
    """Whether a ledger entry counts items left out on purpose (``ItemResult.left_out_on_purpose``)."""
    return status == Status.SKIPPED and reason in LEFT_OUT_ON_PURPOSE


def _reason_table(entries: list[tuple[tuple[str, str], list[int]]], caption: str) -> str:
    rows = [[esc(st), esc(reason or "(none given)"), _num(n), esc(format_size(size)), esc(format_size(read))]
            for (st, reason), (n, size, read) in entries]
    return _table(("Status", "Reason", "Items", "Size", "Bytes read"), rows, numeric={2, 3, 4}, caption=caption)


def _item_table(listed: Smallest[ItemResult], caption: str) -> str:
    kept = listed.kept()
    if not kept:
        return ""
    rows = [[esc(r.status), esc(r.reason or "-"), f'<span class="loc">{esc(r.item.location)}</span>',
             esc(r.item.version_id or "-"), esc(r.detail or "")] for r in kept]
    return _table(("Status", "Reason", "Location", "Version", "Detail"), rows,
                  caption=f"{caption}: {_num(listed.count)}", more=listed.left_out,
                  drop=[3] if _no_versions(r.item.version_id for r in kept) else [])


def _changes_text(c: dict[str, Any]) -> str:
    prev = c.get("previous_sweep")
    since = f"since sweep {prev}" if prev is not None else "no previous sweep"
    return (f"{since}: {c.get('new', 0)} new, {c.get('still_present', 0)} still present, "
            f"{c.get('resolved', 0)} resolved, {c.get('unchanged_items', 0)} unchanged items not re-read")


def _verdict(s: Summary) -> str:
    expired = int((s.retention or {}).get("expired_items") or 0)
    # With findings suppressed or below the threshold, "found" would not be true.
    nothing = "No card data reported" if s.suppressed or s.below_threshold else "No card data found"
    if s.findings or expired:
        kind, text = "bad", exit_meaning(s).capitalize()
    elif not s.coverage_complete:
        kind, text = "warn", f"{nothing}, but coverage is incomplete"
    else:
        kind, text = "good", f"{nothing}; coverage complete"
    return f'<p class="status {kind}"><strong>{esc(text)}.</strong></p>\n'


def _not_reported_text(s: Summary) -> str:
    entries = (s.allow or {}).get("entries") or []
    expired = sum(1 for e in entries if e.get("expired"))
    by = _plural(len(entries), "[[allow]] entry", "[[allow]] entries")
    text = f"{_plural(s.suppressed, 'finding')} suppressed by {by}"
    if expired:
        text += f" ({_num(expired)} expired, suppressing nothing)"
    if s.below_threshold or s.min_confidence != "low":
        text += f"; {_plural(s.below_threshold, 'finding')} below --min-confidence {s.min_confidence}"
    return text + "; neither is in the exit status."


def _allow_matcher(entry: dict[str, Any]) -> str:
    """What an entry matches; a fingerprint shortened, as everywhere in this report."""
    parts = []
    if entry.get("fingerprint"):
        parts.append(f"fingerprint <code>{esc(str(entry['fingerprint'])[:12])}\u2026</code>")
    if entry.get("masked"):
        parts.append(f'masked <span class="masked">{esc(entry["masked"])}</span>')
    if entry.get("location"):
        parts.append(f"location <code>{esc(entry['location'])}</code>")
    return " at ".join(parts) if len(parts) == 2 else "".join(parts)


def _fact_text(value: Any) -> str:
    if value is None:
        return "-"
    return str(value)


def _flagged(value: Any) -> str:
    """A bucket fact: its set fields, or its non-value string (not configured, not
    permitted, error) in the warning style."""
    if isinstance(value, dict):
        shown = [f"{k}={v}" for k, v in value.items() if v not in (None, False, "", [], {})]
        return esc(", ".join(shown) or "on")
    if value is None:
        return "-"
    return f'<span class="warn-text">{esc(value)}</span>'


def _lifecycle_cell(value: Any) -> str:
    if isinstance(value, list):
        enabled = sum(1 for r in value if isinstance(r, dict) and r.get("enabled"))
        return esc(f"{len(value)} ({enabled} enabled)") if value else '<span class="warn-text">none</span>'
    return _flagged(value)


def _object_lock_cell(value: Any) -> str:
    if isinstance(value, dict):
        if not value.get("enabled"):
            return "off"
        period = [f"{value[k]} {k}" for k in ("days", "years") if value.get(k)]
        return esc(" ".join(["on", *([value["mode"]] if value.get("mode") else []), *period]))
    return esc(_fact_text(value))


def _public_access_cell(value: Any) -> str:
    if isinstance(value, dict):
        off = [k for k, v in value.items() if not v]
        if not off:
            return "all four settings on"
        return f'<span class="warn-text">{esc("off: " + ", ".join(off))}</span>'
    return _flagged(value)


def _gaps_cell(record: dict[str, Any], policy: Policy | None) -> str:
    """Where the bucket's lifecycle lets data outlive the policy (retention.lifecycle_gaps)."""
    if policy is None:
        return "-"
    from panscan.retention import lifecycle_gaps

    lifecycle = _lifecycle_rules(record.get("lifecycle"))
    if lifecycle is None:
        return "-"
    gaps = lifecycle_gaps(str(record.get("bucket", "")), str(record.get("versioning", "")), lifecycle, policy)
    if not gaps:
        return '<span class="good-text">enforces the policy</span>'
    items = "".join(f"<li>{esc(_gap_text(g.rule, g.prefix, g.detail))}</li>" for g in gaps[:10])
    if len(gaps) > 10:
        items += f"<li>{esc(f'and {len(gaps) - 10} more')}</li>"
    return f'<ul class="gaps">{items}</ul>'


def _policy_table(policy: Policy) -> str:
    rows = [[esc(r.name), "<br>".join(f"<code>{esc(g)}</code>" for g in r.match), esc(_days(r.max_age_days)),
             esc(r.justification or "-")] for r in policy.rules]
    if policy.default_max_age_days is not None:
        rows.append([esc(DEFAULT_RULE), "everything else", esc(_days(policy.default_max_age_days)), "-"])
    return _table(("Rule", "Matches", "Max age", "Justification"), rows[:ROWS],
                  caption="Retention policy (first matching rule applies)", more=len(rows) - ROWS)


def _gap_text(rule: str, prefix: str, detail: str) -> str:
    return f"{rule} ({prefix or 'whole bucket'}): {detail}"


def _lifecycle_rules(value: Any) -> Any:
    """The bucket record's lifecycle back as s3_facts values (a tuple of rules, or the
    non-value string); None when the record is not in that shape."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    from panscan.sources.s3_facts import LifecycleRule, Transition

    try:
        return tuple(LifecycleRule(**{
            **r,
            "transitions": tuple(Transition(**t) for t in r.get("transitions") or ()),
            "noncurrent_transitions": tuple(Transition(**t) for t in r.get("noncurrent_transitions") or ()),
        }) for r in value)
    except (TypeError, AttributeError):
        return None


# --- charts (inline SVG, no script: hover titles are native <title> elements) ---------------


def _histogram(title: str, labels: Sequence[str], within: Sequence[int], past: Sequence[int],
               limit_after: int | None, limit_label: str) -> str:
    """A bar per age bucket, items past retention stacked in red on those within it, and a
    dashed line after bucket ``limit_after`` (the rule's maximum age)."""
    width, height = 560, 240
    left, right, top, bottom = 48, 16, 34, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    base = top + plot_h
    slot = plot_w / len(labels)
    bar = slot * 0.7
    peak = max([a + b for a, b in zip(within, past, strict=True)] + [1])
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{esc(title)}">\n<title>{esc(title)}</title>\n',
             f'<line class="axis" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"/>\n',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{base}"/>\n',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_num(peak)}</text>\n',
             f'<text x="{left - 6}" y="{base + 4}" text-anchor="end">0</text>\n']
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar) / 2
        h_in = within[i] / peak * plot_h
        h_past = past[i] / peak * plot_h
        if within[i]:
            parts.append(f'<rect class="bar-ok" x="{x:.1f}" y="{base - h_in:.1f}" width="{bar:.1f}" '
                         f'height="{h_in:.1f}"><title>{esc(f"{label}: {_num(within[i])} within policy")}'
                         "</title></rect>\n")
        if past[i]:
            parts.append(f'<rect class="bar-over" x="{x:.1f}" y="{base - h_in - h_past:.1f}" width="{bar:.1f}" '
                         f'height="{h_past:.1f}"><title>{esc(f"{label}: {_num(past[i])} past retention")}'
                         "</title></rect>\n")
        total = within[i] + past[i]
        if total:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{base - h_in - h_past - 4:.1f}" '
                         f'text-anchor="middle">{_num(total)}</text>\n')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{base + 16}" text-anchor="middle">{esc(label)}</text>\n')
    if limit_after is not None:
        x = left + (limit_after + 1) * slot
        anchor = "end" if x > width - 120 else "start"
        dx = -4 if anchor == "end" else 4
        parts.append(f'<line class="limit" x1="{x:.1f}" y1="{top - 14}" x2="{x:.1f}" y2="{base}"/>\n'
                     f'<text class="limit-label" x="{x + dx:.1f}" y="{top - 18}" text-anchor="{anchor}">'
                     f"{esc(limit_label)}</text>\n")
    legend = height - 12
    parts.append(f'<rect class="bar-ok" x="{left}" y="{legend - 9}" width="10" height="10"/>'
                 f'<text x="{left + 14}" y="{legend}">within policy</text>'
                 f'<rect class="bar-over" x="{left + 110}" y="{legend - 9}" width="10" height="10"/>'
                 f'<text x="{left + 124}" y="{legend}">past retention</text>\n</svg>\n')
    return "".join(parts)


def _bars(title: str, rows: Sequence[tuple[str, int, int]]) -> str:
    """Horizontal bars, one per (label, count, of which past retention)."""
    bar_h, gap, top = 18, 6, 8
    label_w, width = 340, 960
    plot_w = width - label_w - 80
    height = top * 2 + len(rows) * (bar_h + gap)
    peak = max([n for _, n, _ in rows] + [1])
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{esc(title)}">\n<title>{esc(title)}</title>\n']
    for i, (label, n, expired) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w_all = n / peak * plot_w
        w_past = expired / peak * plot_w
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end">{esc(_clip(label, 48))}'
                     f"<title>{esc(label)}</title></text>\n")
        parts.append(f'<rect class="bar-ok" x="{label_w}" y="{y}" width="{max(w_all - w_past, 0):.1f}" '
                     f'height="{bar_h}"><title>{esc(f"{label}: {_num(n)} findings")}</title></rect>\n')
        if expired:
            parts.append(f'<rect class="bar-over" x="{label_w + w_all - w_past:.1f}" y="{y}" width="{w_past:.1f}" '
                         f'height="{bar_h}"><title>{esc(f"{label}: {_num(expired)} past retention")}'
                         "</title></rect>\n")
        parts.append(f'<text x="{label_w + w_all + 6:.1f}" y="{y + bar_h - 5}">{_num(n)}</text>\n')
    parts.append("</svg>\n")
    return "".join(parts)


# --- page ------------------------------------------------------------------------------------

# System fonts only, light colours only (readable printed); nothing here names a resource.
_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, sans-serif; color: #1b1f24; background: #fff; margin: 0 auto;
  max-width: 1200px; padding: 1rem 1.5rem 3rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: .4rem 0; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin: 2.2rem 0 .6rem; }
nav ul { list-style: none; padding: 0; margin: .4rem 0 1rem; display: flex; flex-wrap: wrap; gap: .2rem 1.2rem; }
nav a { color: #0b4f9c; }
table { border-collapse: collapse; margin: .4rem 0 1.1rem; font-size: .88rem; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
th, td { border: 1px solid #d0d7de; padding: .22rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f2f4f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.loc { overflow-wrap: anywhere; }
code, .masked { font-family: monospace; }
tr.group th { background: #eef2f7; font-weight: 600; overflow-wrap: anywhere; }
tr.noncurrent td { background: #fff8e1; }
tr.expired td { background: #fdecec; }
tr.warn td { background: #fff8e1; }
.badge { display: inline-block; margin-left: .3rem; padding: 0 .35rem; border: 1px solid; border-radius: .25rem;
  font-size: .72rem; font-weight: 600; white-space: nowrap; }
.badge.bad { color: #a1111f; border-color: #a1111f; background: #fff0f0; }
.badge.warn { color: #7a4b00; border-color: #b7791f; background: #fff8e6; }
.badge.test { color: #444; border-color: #888; background: #f5f5f5; }
.bad-text { color: #a1111f; font-weight: 700; }
.warn-text { color: #7a4b00; font-weight: 600; }
.good-text { color: #1a7f37; font-weight: 600; }
.status { border-left: 6px solid; padding: .55rem .9rem; margin: .6rem 0 1rem; }
.status.bad { border-color: #a1111f; background: #fff0f0; }
.status.warn { border-color: #b7791f; background: #fff8e6; }
.status.good { border-color: #1a7f37; background: #eefaf1; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1.2rem; margin: 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
ul.plain { list-style: none; padding: 0; margin: 0; }
ul.gaps { margin: 0; padding-left: 1rem; color: #7a4b00; }
.empty { color: #555; font-style: italic; }
.more, .note { color: #555; }
figure.chart { margin: .6rem 0 1.2rem; }
figure.age { display: inline-block; vertical-align: top; margin-right: 1.5rem; }
figcaption { font-size: .88rem; color: #333; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg text { font-size: 12px; fill: #1b1f24; }
svg .axis { stroke: #555; stroke-width: 1; }
svg .bar-ok { fill: #4f7fb8; }
svg .bar-over { fill: #c0392b; }
svg .limit { stroke: #a1111f; stroke-width: 2; stroke-dasharray: 6 4; }
svg .limit-label { fill: #a1111f; font-weight: 600; }
footer { margin-top: 2.5rem; font-size: .8rem; color: #555; }
@media print {
  body { max-width: none; padding: 0; color: #000; background: #fff; font-size: 10pt; }
  nav { display: none; }
  section { page-break-inside: avoid; break-inside: avoid; }
  h2 { page-break-after: avoid; break-after: avoid; }
  thead { display: table-header-group; }
  tr, figure { page-break-inside: avoid; break-inside: avoid; }
  .status, thead th, tr.group th { background: #fff; }
}
"""

# The browser may fetch nothing at all: inline styles are the only thing this page needs.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _head(s: Summary) -> str:
    title = "panscan report" + (f", sweep {s.sweep_id}" if s.sweep_id is not None else "")
    started = s.extra.get("started")
    nav = "".join(f'<li><a href="#{sid}">{esc(name)}</a></li>' for sid, name in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<header>\n"
            f"<h1>Card data discovery report</h1>\n"
            f"<p>{esc(title)}{esc(f', started {started}') if started else ''}</p>\n"
            f'<nav aria-label="Sections"><ul>{nav}</ul></nav>\n</header>\n<main>\n')


def _foot(s: Summary) -> str:
    version = s.extra.get("panscan_version")
    by = f"panscan {version}" if version else "panscan"
    return (f"</main>\n<footer><p>{esc(by)}. Card numbers are shown masked (first six and last four digits);"
            " full numbers never leave the scanner. The JSON Lines report holds every record.</p></footer>\n"
            "</body>\n</html>\n")
