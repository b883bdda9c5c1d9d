"""A scan's bookkeeping in the state database, and its retention verdicts.

The runner hands every listed record and every masked result through a :class:`Sweep`:

* listed items identical to one scanned completely in an earlier sweep with the same
  pattern set (an S3 version is immutable; a file with the same size, mtime and inode) come
  back as that earlier result and are never sent to a worker;
* each result gets its retention verdict (``findings`` in an expired item are marked
  ``expired``) and, with a state, its findings are marked ``new`` or ``still present``
  against the previous complete sweep of the same targets;
* results, bucket facts and restore requests are recorded, so a sweep killed half way is
  resumed by the next run (what was recorded is not read again and is reported once), and
  ``panscan report`` can render any stored sweep.

Only this coordinator-side code writes the state; it only ever receives masked results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from panscan.config import Policy
from panscan.engine.worker import STREAM_BATCH
from panscan.findings.mask import mask_text
from panscan.model import (
    ARCHIVED_STORAGE_CLASSES,
    DESCRIPTION_MEMBER,
    EXPIRED,
    Finding,
    Item,
    ItemResult,
    Reason,
    RetentionVerdict,
    Status,
)
from panscan.retention import has_rules, judge
from panscan.state import State
from panscan.state.prune import describe

logger = logging.getLogger(__name__)


def sweep_scope(targets: tuple[str, ...], options: dict[str, Any]) -> tuple[str, ...]:
    """What a sweep covers, as the state compares it with earlier sweeps (masked: targets are
    names). The options that change which items are listed belong to it: a version left out
    by ``--latest-only`` or an exclude is not gone, and its findings must not read "resolved"."""
    scope = [mask_text(t) for t in targets]
    if options.get("latest_only"):
        scope.append("--latest-only")
    scope += [f"--exclude={mask_text(g)}" for g in options.get("excludes", ())]
    return tuple(scope)


def judge_item(item: Item, policy: Policy, now: float) -> RetentionVerdict | None:
    """``item``'s retention verdict, its location masked. A file is matched against the rules
    by its absolute path: policy globs name places (``/data/app/logs/*``), whatever directory
    the scan was started from."""
    judged = item
    if item.source == "file" and not os.path.isabs(item.location):
        judged = replace(item, location=os.path.abspath(item.location))
    v = judge(judged, policy, now)
    if v is None:
        return None
    # Built field by field: dataclasses.replace costs more than the verdict itself, and a
    # metadata sweep makes one per expired version.
    return RetentionVerdict(mask_text(item.location), v.version_id, v.rule, v.age_days, v.max_age_days,
                            v.storage_class, v.size, v.last_modified, v.noncurrent_days)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


class Sweep:
    """One scan's view of the state (``state`` None: ``--no-state``, nothing is kept)."""

    def __init__(self, state: State | None, policy: Policy, now: float, *, targets: tuple[str, ...],
                 pattern_version: str, options: dict[str, Any], restore_tier: str | None = None) -> None:
        self.state = state
        self.restore_tier = restore_tier
        self.targets = [mask_text(t) for t in targets]  # for the reports: names may hold a number
        self.policy = policy
        self.now = now
        self.judging = has_rules(policy)
        self.pattern_version = pattern_version
        self.id: int | None = None
        self.previous_id: int | None = None
        self.unchanged = 0
        self._pending: set[tuple[str, str | None]] = set()
        self._streaming: set[Item] = set()  # items whose findings came in batches before their result
        self._deferred: dict[Item, int] = {}  # unchanged items whose stored findings are read later, in batches
        if state is not None:
            start = state.begin_sweep(sweep_scope(targets, options), pattern_version,
                                      {k: _masked(v) for k, v in options.items()}, now)
            self.id, self.previous_id = start.id, start.previous_id
            for old in start.interrupted:
                logger.warning("sweep %d was interrupted; items it finished are not read again", old)
            self._pending = {(r.location, r.version_id) for r in state.pending_restores()}

    # listing side

    def restore_pending(self, item: Item) -> bool:
        """Whether an earlier run requested a restore of this (archived) version."""
        return (mask_text(item.location), item.version_id) in self._pending

    def scanned_before(self, item: Item) -> bool:
        """Whether an identical item was scanned completely with this pattern set (a Glacier
        archive whose retrieval would be paid for again, for nothing)."""
        if self.state is None:
            return False
        return self.state.lookup(replace(item, location=mask_text(item.location)), self.pattern_version) is not None

    def skip_unchanged(self, records: Iterable[Item | ItemResult | None]) -> Iterator[Item | ItemResult | None]:
        """``records`` with each item scanned before, unchanged, replaced by its stored result."""
        state = self.state
        if state is None:
            yield from records
            return
        for record in records:
            if isinstance(record, Item):
                location = mask_text(record.location)
                # replace() costs more than the lookup; most names hold no number to mask.
                masked = record if location is record.location else replace(record, location=location)
                scanned_in = state.lookup(masked, self.pattern_version)
                if scanned_in is not None:
                    self.unchanged += 1
                    carried = state.carried(scanned_in, masked, max_findings=STREAM_BATCH)
                    if carried.earlier_findings:  # a PAN-dense item: see deferred_findings()
                        self._deferred[masked] = scanned_in
                        carried = replace(carried, earlier_findings=0)
                    yield carried
                    continue
            yield record

    def deferred_findings(self, result: ItemResult) -> Iterator[tuple[Finding, ...]]:
        """The stored findings of an unchanged item that :meth:`skip_unchanged` left out of its
        result (too many to hold at once), in batches, for the caller to handle as findings
        streamed before ``result``; nothing for any other result."""
        scanned_in = self._deferred.pop(result.item, None) if self._deferred else None
        if scanned_in is not None and self.state is not None:
            yield from self.state.carried_findings(scanned_in, result.item, STREAM_BATCH)

    # result side

    def judge(self, result: ItemResult) -> tuple[ItemResult, RetentionVerdict | None]:
        """``result`` (masked) with its retention verdict; findings in an expired item are
        marked, and against the previous sweep."""
        if self._streaming and result.item in self._streaming:
            self._streaming.discard(result.item)  # its first batch had the description's findings
        else:
            result = self._description_findings(result)
        return self._judged(self._pending_retrieval(result))

    def judge_findings(self, batch: ItemResult) -> tuple[ItemResult, RetentionVerdict | None]:
        """A batch of findings of an item still being scanned (masked, in ``batch.findings``),
        judged as :meth:`judge` judges a result's; with the item's verdict."""
        if batch.item not in self._streaming:
            self._streaming.add(batch.item)
            batch = self._description_findings(batch)
        return self._judged(batch, streaming=True)

    def _judged(self, result: ItemResult, streaming: bool = False) -> tuple[ItemResult, RetentionVerdict | None]:
        volume = result.item.volume_id
        if volume and any(f.volume_id != volume for f in result.findings):  # results carried from the state
            result = replace(result, findings=tuple(replace(f, volume_id=volume) for f in result.findings))
        # A link, a FIFO or a mount point holds no data: its time is no age of data kept.
        verdict = judge_item(result.item, self.policy, self.now) if self.judging and result.holds_data else None
        if verdict is not None:
            if result.findings:
                result = replace(result, findings=tuple(replace(f, retention=EXPIRED) for f in result.findings))
        if self.state is not None:
            result = self.state.annotate(self.previous_id, result, streaming=streaming)
        return result, verdict

    def _description_findings(self, result: ItemResult) -> ItemResult:
        """A Glacier archive listed from a stored inventory has its description masked (the
        state keeps nothing else): the findings its description gave when the inventory was
        collected are carried over, so they are reported on every sweep, not only the first."""
        if self.state is None or result.item.source != "glacier":
            return result
        if any(f.member == DESCRIPTION_MEMBER for f in result.findings):
            return result
        carried = self.state.last_findings(result.item, DESCRIPTION_MEMBER)
        return replace(result, findings=carried + result.findings) if carried else result

    def _pending_retrieval(self, result: ItemResult) -> ItemResult:
        """A Glacier archive whose content was not read because its retrieval job is still
        running says so (JOB_PENDING) rather than just "not retrieved"."""
        if (self.state is None or result.item.source != "glacier"
                or result.reason is not Reason.INVALID_OBJECT_STATE):
            return result
        vault, _, archive = result.item.location[len("glacier://"):].partition("/")
        job = self.state.job_for_archive(vault, archive) if archive else None
        if job is None or job.status != "pending":
            return result
        started = datetime.fromtimestamp(job.initiated_at, UTC).isoformat(timespec="seconds")
        return replace(result, reason=Reason.JOB_PENDING,
                       detail=f"{job.tier or 'Standard'} retrieval job started {started} is still running; "
                              "run the scan again when it completes (only the description was scanned)")

    def record_findings(self, batch: ItemResult) -> None:
        """Store a batch judged by :meth:`judge_findings`; its item is recorded later."""
        if self.state is not None and self.id is not None:
            self.state.record_findings(self.id, batch)

    def record(self, result: ItemResult, verdict: RetentionVerdict | None) -> None:
        state = self.state
        if state is None or self.id is None:
            return
        state.record(self.id, result, verdict)
        item = result.item
        if result.reason is Reason.RESTORE_REQUESTED:
            state.add_restore(item.location, item.version_id, self.restore_tier or "unknown",
                              item.storage_class, item.size, self.now, self.id)
            self._pending.add((item.location, item.version_id))
        elif (result.status is Status.COMPLETE and item.storage_class in ARCHIVED_STORAGE_CLASSES
              and (item.location, item.version_id) in self._pending):
            state.clear_restore(item.location, item.version_id)  # the restored copy was read
            self._pending.discard((item.location, item.version_id))
        elif result.reason is Reason.INVALID_OBJECT_STATE and (item.location, item.version_id) in self._pending:
            state.clear_restore(item.location, item.version_id)  # the copy expired unread
            self._pending.discard((item.location, item.version_id))

    def record_bucket(self, record: dict[str, Any]) -> None:
        if self.state is not None and self.id is not None:
            self.state.record_bucket(self.id, record)

    def finish(self, enumeration_complete: bool) -> tuple[list[Any], int]:
        """The previous sweep's findings this one no longer found (and how many could not be
        checked); commits what is pending."""
        if self.state is None or self.id is None:
            return [], 0
        self.state.flush()
        return self.state.resolved(self.id, self.previous_id, enumeration_complete)

    def close(self, status: str, summary: dict[str, Any], exit_status: int, finished: float) -> None:
        """Close the sweep, then apply the policy's ``[state]`` bounds (no VACUUM: a scan should
        not rewrite the whole file each time; later sweeps reuse the freed pages)."""
        if self.state is not None and self.id is not None:
            self.state.finish_sweep(self.id, status, summary, exit_status, finished)
            keep, older = self.policy.state_keep, self.policy.state_prune_older_than_days
            if keep is not None or older is not None:
                pruned = self.state.prune(keep=keep, older_than_days=older, now=finished, vacuum=False)
                if pruned.sweeps:
                    logger.info("[state] bounds: %s", describe(pruned))
