"""Byte ranges: how an engine cuts a large item into range tasks, and how the results of
those tasks become one ``ItemResult`` again.

Both engines (``local`` and ``dask``) use these functions, so an item reads the same,
finding for finding and line for line, whichever engine scanned it. The worker side of a
range (overlap reads, the owning range of a run that straddles an edge, items that need
extraction) is in ``worker``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from panscan.engine.worker import TaskResult
from panscan.model import Finding, Item, ItemResult, Status, Task

#: Items larger than this are split into byte ranges (when their source supports ranges).
SPLIT_THRESHOLD = 64 * 2**20
#: Size of one byte-range task.
RANGE_SIZE = 32 * 2**20
# Sources whose items can be read from an offset (S3: Range GETs on the same version).
_RANGED_SOURCES = frozenset({"file", "s3"})

_SEVERITY = {Status.COMPLETE: 0, Status.PARTIAL: 1, Status.SKIPPED: 2, Status.ERROR: 3}


def check_sizes(split_threshold: int, range_size: int) -> None:
    """Raise ``ValueError`` unless ``range_size`` is positive and at most ``split_threshold``."""
    if range_size < 1 or split_threshold < range_size:
        raise ValueError("range_size must be positive and at most split_threshold")


def split_item(item: Item, split_threshold: int, range_size: int) -> list[Task]:
    """The tasks of ``item``: ``[Task(item)]``, or, for an item of a rangeable source whose
    known size exceeds ``split_threshold``, consecutive ranges of ``range_size`` bytes (the
    last one shorter) covering it, in order."""
    size = item.size
    if item.source not in _RANGED_SOURCES or size is None or size <= split_threshold:
        return [Task(item)]
    return [Task(item, start, min(start + range_size, size)) for start in range(0, size, range_size)]


def task_bytes(task: Task) -> int:
    """The bytes ``task`` is expected to read (its range, else the item's size; 0 unknown)."""
    if task.end is not None:
        return task.end - task.start
    return task.item.size or 0


def merge_parts(parts: list[TaskResult]) -> ItemResult:
    """One item's result from the results of its tasks, in range order.

    Findings are sorted by offset; a range's line numbers are continued from the newlines
    of the ranges before it (0, "unknown", after a range that did not finish, since its
    newlines were not counted); ``bytes_scanned`` is the sum; status, reason and detail
    are those of the worst part (error, then skipped, then partial).
    """
    if len(parts) == 1:
        return parts[0].result
    worst = max(parts, key=lambda p: _SEVERITY[p.result.status]).result
    whole = [p for p in parts if p.whole_item and p.task.start == 0]
    if whole:
        # The item needed extraction; the first range scanned all of it.
        base = whole[0].result
        return replace(base, status=worst.status, reason=worst.reason or base.reason,
                       detail=worst.detail or base.detail)
    findings: list[Finding] = []
    for i, p in enumerate(parts):
        findings += shift_lines(p.result.findings, lines_before(parts[:i]))
    findings.sort(key=lambda f: (f.member or "", f.offset, f.kind))
    return ItemResult(parts[0].task.item, worst.status, worst.reason, worst.detail,
                      sum(p.result.bytes_scanned for p in parts), tuple(findings))


def lines_before(parts: Sequence[TaskResult]) -> int | None:
    """The newlines before the range that follows ``parts`` (the item's first ranges, in
    order); None when one of them did not finish, so its newlines were not all counted."""
    total = 0
    for p in parts:
        if p.result.status is not Status.COMPLETE:
            return None
        total += p.newlines_owned
    return total


def shift_lines(findings: Iterable[Finding], before: int | None) -> list[Finding]:
    """A range's findings with line numbers counted from the item's start (0, unknown, when
    ``before`` is None)."""
    if before == 0:
        return list(findings)
    return [replace(f, line=f.line + before if before is not None else 0) for f in findings]
