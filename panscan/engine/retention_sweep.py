"""``panscan retention``: a metadata-only sweep — what is past retention, where, and whether
each S3 bucket's lifecycle rules can enforce the policy. No content is read: the sources
list their items (files, S3 versions, S3 Inventory reports) and each is judged from its
metadata, so a sweep over millions of versions costs only the listing. Only items that hold
data are judged and counted: a symbolic link, a FIFO or device, or the mount point of another
filesystem (``model.NOT_DATA_REASONS``) is left out, since its time is the age of no data.

Exit status: 1 when an item is past retention or a bucket's lifecycle cannot enforce the
policy; 2 when nothing was flagged but a target could not be listed completely (or the
sweep was interrupted); 0 otherwise; 3 for usage errors (a policy without ages).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from panscan.config import Policy
from panscan.engine.progress import Progress
from panscan.engine.runner import (
    EXIT_CLEAN,
    EXIT_FOUND,
    EXIT_INCOMPLETE,
    UsageError,
    aws_endpoint,
    check_targets,
    enumerate_targets,
    masked_record,
    normalised_scope,
    open_report,
    open_state,
)
from panscan.engine.sweep import judge_item
from panscan.findings.mask import mask_text
from panscan.model import Item, ItemResult, Reason, RetentionVerdict, Status
from panscan.retention import LifecycleGap, RetentionTally, has_rules, lifecycle_gaps
from panscan.sinks.base import EXIT_MEANINGS, display, format_size
from panscan.sinks.table import format_table
from panscan.sources.files import WalkOptions

logger = logging.getLogger(__name__)

#: Most expired items listed one by one in the table report (jsonl lists all of them).
TABLE_ROWS = 50


@dataclass(frozen=True)
class RetentionOptions:
    targets: tuple[str, ...]
    policy: Policy
    fmt: str = "table"  # table or jsonl
    output: Path | None = None
    excludes: tuple[str, ...] = ()
    latest_only: bool = False
    follow_symlinks: bool = False
    endpoint_url: str | None = None
    as_of: float | None = None
    state: Path | None = None  # for glacier:// targets: where vault inventories and their jobs are kept


@dataclass
class _Outcome:
    tally: RetentionTally
    gaps: list[LifecycleGap]
    errors: list[ItemResult]
    oldest: list[RetentionVerdict]  # the TABLE_ROWS oldest expired items
    interrupted: bool
    duration: float


def run_retention(opts: RetentionOptions, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the sweep, write its report, return the exit status; :class:`UsageError` for exit 3."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    check_targets(opts.targets)
    targets, excludes = normalised_scope(opts.targets, opts.excludes)
    _, policy_excludes = normalised_scope((), opts.policy.excludes)
    opts = replace(opts, targets=targets, excludes=excludes, policy=replace(opts.policy, excludes=policy_excludes))
    if not has_rules(opts.policy):
        raise UsageError(f"the policy {opts.policy.source or ''} sets no retention age: add "
                         "[retention] default_max_age or a [[retention.rule]]".replace("  ", " "))
    now = opts.as_of if opts.as_of is not None else time.time()
    with open_report(opts.output, stdout) as out, aws_endpoint(opts.endpoint_url):
        write = _jsonl_writer(out) if opts.fmt == "jsonl" else None
        outcome = _sweep(opts, now, write, stderr)
        status = out.exit_status = _exit_status(outcome)  # a failure to write the report keeps a 1
        if write is not None:
            for gap in outcome.gaps:
                write(gap.to_record())
            write({**outcome.tally.to_record(), "as_of": _iso(now), "duration_seconds": round(outcome.duration, 3),
                   "errors": len(outcome.errors), "interrupted": outcome.interrupted, "exit_status": status})
        else:
            out.write(_report(outcome, now, status))
        out.flush()
    return status


def _sweep(opts: RetentionOptions, now: float, write: Any, stderr: TextIO) -> _Outcome:
    t0 = time.monotonic()
    tally = RetentionTally()
    errors: list[ItemResult] = []
    oldest: list[RetentionVerdict] = []
    # Buckets named by a target are checked even when empty: a lifecycle is about what will
    # be written, not only what is there.
    buckets: dict[str, None] = dict.fromkeys(
        b for t in opts.targets if t.startswith("s3://") and (b := t[len("s3://"):].split("/", 1)[0]))
    walk = WalkOptions(excludes=opts.excludes + opts.policy.excludes, follow_symlinks=opts.follow_symlinks)
    interrupted = False
    with Progress(stderr) as progress:
        try:
            for record in _listing(opts, walk, now):
                item = record.item if isinstance(record, ItemResult) else record
                if isinstance(record, ItemResult) and item.last_modified is None and (
                        record.status is Status.ERROR or record.reason is Reason.JOB_PENDING):
                    errors.append(_masked_error(record))  # a listing that failed or is pending: items unknown
                    continue
                if isinstance(record, ItemResult) and not record.holds_data:
                    continue  # a link, a FIFO, a mount point: its time is no age of data kept
                bucket = _bucket_of(item)
                if bucket:
                    buckets.setdefault(bucket)
                verdict = judge_item(item, opts.policy, now)
                if verdict is not None:
                    _keep_oldest(oldest, verdict)
                    if write is not None:
                        write(verdict.to_record())
                tally.add(item, verdict)  # its place names are masked when the report is written
                progress.count(item.size or 0)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: the report covers the items listed so far")
    gaps = _lifecycle_gaps(list(buckets), opts.policy) if buckets else []
    return _Outcome(tally, gaps, errors, oldest, interrupted, time.monotonic() - t0)


def _listing(opts: RetentionOptions, walk: WalkOptions, now: float) -> Iterator[Item | ItemResult]:
    """The targets' records; Glacier vaults need the state (their inventories are jobs that
    span runs), which is opened only then."""
    if not any(t.startswith("glacier://") for t in opts.targets):
        yield from _records(enumerate_targets(opts.targets, walk, opts.latest_only))
        return
    from panscan.sources.glacier import GlacierOptions

    with open_state(opts.state) as state:
        yield from _records(enumerate_targets(opts.targets, walk, opts.latest_only, glacier=GlacierOptions(now=now),
                                              state=state))


def _records(listed: Iterator[Item | ItemResult | None]) -> Iterator[Item | ItemResult]:
    # Not waiting: enumerate_targets gives no None (the filter is for the type).
    return (r for r in listed if r is not None)


def _lifecycle_gaps(buckets: list[str], policy: Policy) -> list[LifecycleGap]:
    from panscan.sources.aws import client
    from panscan.sources.s3_facts import bucket_facts

    gaps: list[LifecycleGap] = []
    for bucket in buckets:
        facts = bucket_facts(client("s3"), bucket)
        gaps += [replace(g, bucket=mask_text(g.bucket), detail=mask_text(g.detail))
                 for g in lifecycle_gaps(bucket, facts.versioning, facts.lifecycle, policy)]
    return gaps


def _bucket_of(item: Item) -> str | None:
    if item.source != "s3" or not item.location.startswith("s3://"):
        return None
    return item.location[len("s3://"):].split("/", 1)[0] or None


def _keep_oldest(oldest: list[RetentionVerdict], verdict: RetentionVerdict) -> None:
    """Keep the ``TABLE_ROWS`` oldest verdicts (a bounded list, whatever the item count)."""
    if len(oldest) < TABLE_ROWS:
        oldest.append(verdict)
        return
    youngest = max(range(len(oldest)), key=lambda i: oldest[i].last_modified)
    if verdict.last_modified < oldest[youngest].last_modified:
        oldest[youngest] = verdict


def _masked_error(result: ItemResult) -> ItemResult:
    return replace(result, item=replace(result.item, location=mask_text(result.item.location)),
                   detail=mask_text(result.detail) if result.detail else None)


def _exit_status(outcome: _Outcome) -> int:
    if outcome.tally.expired_items or outcome.gaps:
        return EXIT_FOUND
    if outcome.errors or outcome.interrupted:
        return EXIT_INCOMPLETE
    return EXIT_CLEAN


def _jsonl_writer(out: TextIO) -> Any:
    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(masked_record(record), separators=(",", ":")) + "\n")

    return write


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _section(title: str, header: tuple[str, ...], rows: list[list[str]], *after: str) -> list[str]:
    return [title, *format_table(header, rows).splitlines(), *after, ""]


def _report(outcome: _Outcome, now: float, status: int) -> str:
    """The terminal report: what is past retention, by rule, place and storage class; the
    oldest items; buckets whose lifecycle cannot enforce the policy; what was not listed."""
    rec = masked_record(outcome.tally.to_record())
    lines = [f"Retention as of {_iso(now)}",
             f"  items:          {rec['items']} ({format_size(rec['bytes'])}) listed in {outcome.duration:.1f} s",
             f"  past retention: {rec['expired_items']} ({format_size(rec['expired_bytes'])})", ""]
    counts = ("ITEMS", "PAST RETENTION", "SIZE PAST RETENTION")
    if rec["by_rule"]:
        lines += _section("Past retention by rule", ("RULE", "ITEMS", "SIZE"),
                          [[display(r), str(v["items"]), format_size(v["bytes"])] for r, v in rec["by_rule"].items()])
    places = [(p, v) for p, v in rec["by_place"].items() if v["expired_items"]]
    if places:
        more = [f"... and {rec['places_left_out']} more (see --format jsonl)"] if rec.get("places_left_out") else []
        lines += _section("Past retention by bucket or directory", ("PLACE", *counts),
                          [[display(p), str(v["items"]), str(v["expired_items"]), format_size(v["expired_bytes"])]
                           for p, v in places], *more)
    classes = [(c, v) for c, v in rec["by_storage_class"].items() if v["expired_items"]]
    if classes:
        lines += _section("Past retention by storage class", ("CLASS", *counts),
                          [[display(c), str(v["items"]), str(v["expired_items"]), format_size(v["expired_bytes"])]
                           for c, v in classes])
    if outcome.oldest:
        shown = sorted(outcome.oldest, key=lambda v: v.last_modified)
        lines += _section(f"Oldest items past retention ({len(shown)} of {rec['expired_items']})",
                          ("LOCATION", "VERSION", "RULE", "AGE", "MAX AGE", "CLASS", "SIZE"),
                          [[display(v.location), _version(v), display(v.rule), f"{v.age_days}d",
                            f"{v.max_age_days}d", v.storage_class or "-", format_size(v.size or 0)] for v in shown])
    if outcome.gaps:
        flagged = len({g.bucket for g in outcome.gaps})
        lines += _section(f"Buckets whose lifecycle cannot enforce the policy ({flagged})",
                          ("BUCKET", "RULE", "PREFIX", "MAX AGE", "PROBLEM"),
                          [[display(g.bucket), display(g.rule), display(g.prefix or "(all)"), f"{g.max_age_days}d",
                            display(g.detail)] for g in outcome.gaps])
    if outcome.errors:
        lines += _section(f"Targets not listed completely ({len(outcome.errors)})", ("REASON", "LOCATION", "DETAIL"),
                          [[str(e.reason or "-"), display(e.item.location), display(e.detail or "")]
                           for e in outcome.errors])
    if outcome.interrupted:
        lines += ["Interrupted: the figures cover the items listed so far.", ""]
    lines.append(f"exit status: {status} ({_MEANINGS.get(status, EXIT_MEANINGS.get(status, ''))})")
    return "\n".join(lines) + "\n"


def _version(v: RetentionVerdict) -> str:
    if v.version_id is None:
        return "-"
    return display(v.version_id) + (f" (non-current {v.noncurrent_days}d)" if v.noncurrent_days is not None else "")


_MEANINGS = {
    0: "nothing past retention, every lifecycle enforces the policy",
    1: "items past retention, or a bucket lifecycle that cannot enforce the policy",
    2: "nothing flagged, but a target could not be listed completely (or its inventory is pending)",
}
