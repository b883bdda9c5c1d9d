"""Scan one task (an item, or a byte range of one) inside a worker process.

This is the only engine code that sees content. Full card numbers exist here as
``match.matcher.RawHit`` values and are turned into masked ``Finding`` records by
``findings.mask.to_finding`` as soon as the matcher returns them; nothing that leaves
:func:`scan_task` (its :class:`TaskResult`, its log records, its exceptions) holds raw
content or a full number.

Byte ranges: the engine splits only large items whose size is known. The worker of each
range sniffs the item's first bytes: when the item is plain (no decompression or
extraction applies) it scans ``[start, end)`` of the raw bytes, reading ``RANGE_OVERLAP``
bytes on either side so runs straddling the range edges are judged whole by the range
that owns their first digit. When the item needs extraction (a gzip file, an archive, a
document), ranges make no sense: the worker of the range starting at 0 scans the whole item
and the other ranges return an empty result; both say so with ``whole_item=True`` and the
engine keeps only the former. Doing the sniff in the worker keeps the coordinator free of
content I/O.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from panscan.extract.budget import ITEM_WIDE_REASONS, ExtractError, Limits, Meter
from panscan.extract.expand import Problem, open_streams
from panscan.extract.sniff import MAGIC_LEN, sniff
from panscan.findings.mask import mask_text, to_finding
from panscan.match.matcher import CHUNK_SIZE, RANGE_OVERLAP, RawHit, StreamScanner, tune_allocator
from panscan.match.patterns import PatternSet, load_patterns
from panscan.model import Finding, Item, ItemResult, Reason, Status, Task
from panscan.sources.files import SourceError, changed_since, open_file

logger = logging.getLogger(__name__)

#: Test-only hook: a worker whose task location contains this variable's value kills itself
#: with SIGKILL before reading anything, so tests can pin the engine's crash handling.
TEST_CRASH_ENV = "PANSCAN_TEST_CRASH_ON"

# Reasons that mean "deliberately not read" rather than "tried and failed".
_SKIP_REASONS = frozenset({
    Reason.NOT_REGULAR_FILE, Reason.SYMLINK_NOT_FOLLOWED, Reason.SYMLINK_LOOP,
    Reason.CROSSES_FILESYSTEM, Reason.EXCLUDED, Reason.UNSUPPORTED_FILE_TYPE,
    Reason.FILE_EXCEEDS_SIZE_LIMIT, Reason.INVALID_OBJECT_STATE, Reason.RESTORE_REQUESTED,
    Reason.JOB_PENDING, Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT,
    Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT, Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT,
    Reason.ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT, Reason.TIME_CUT_OFF_REACHED,
})

def _open_s3(item: Item, start: int = 0) -> BinaryIO:
    # Imported on first use: boto3 and botocore cost ~0.15 s of start-up to local scans.
    from panscan.sources.s3 import open_s3

    return open_s3(item, start)


def _s3_changed(item: Item, f: BinaryIO) -> tuple[Reason, str] | None:
    from panscan.sources.s3 import version_changed

    return version_changed(item, f)


# How each source's items are opened; Glacier adds its own here.
def _open_glacier(item: Item) -> BinaryIO:
    from panscan.sources.glacier import open_glacier

    return open_glacier(item)


_OPENERS: dict[str, Callable[[Item], BinaryIO]] = {"file": open_file, "s3": _open_s3, "glacier": _open_glacier}

#: The member name of findings in a Glacier archive's description (not in its content).
DESCRIPTION_MEMBER = "(archive description)"

# Sources that open an item at an offset, their first request reading from there: an S3
# byte-range task then sends the Range GET of its own range instead of a GetObject of the
# whole object that it would drop at once. Other sources are opened whole and seek.
_RANGE_OPENERS: dict[str, Callable[[Item, int], BinaryIO]] = {"s3": _open_s3}


def _s3_read_failure(f: BinaryIO) -> tuple[Reason, str] | None:
    from panscan.sources.s3 import read_failure

    return read_failure(f)


# Why reading an item failed, as its source saw it. The extractors see an OSError and say
# READ_ERROR; an S3 read knows that the version was deleted, access revoked or the object
# overwritten mid-read. A source without an entry has nothing to add.
_READ_FAILURES: dict[str, Callable[[BinaryIO], tuple[Reason, str] | None]] = {"s3": _s3_read_failure}


def _read_failed(item: Item, f: BinaryIO, reason: Reason, detail: str | None) -> tuple[Reason, str | None]:
    """The source's own account of a failed read of ``f`` when it has one, else ``reason``
    and ``detail`` as the extractors reported them."""
    check = _READ_FAILURES.get(item.source)
    known = check(f) if check is not None else None
    return known if known is not None else (reason, detail)


def _file_changed(item: Item, f: BinaryIO) -> tuple[Reason, str] | None:
    if changed_since(item, f):
        return Reason.CHANGED_DURING_SCAN, "the file changed while it was read"
    return None


# After an item was read: did it change underneath the reader? Each source knows what
# "changed" means for it (a local file's size, mtime or inode; an unversioned S3 object's
# ETag); a source without an entry cannot change (S3 versions, Glacier archives).
_CHANGE_CHECKS: dict[str, Callable[[Item, BinaryIO], tuple[Reason, str] | None]] = {
    "file": _file_changed, "s3": _s3_changed,
}


def _changed(item: Item, f: BinaryIO) -> tuple[Reason, str] | None:
    check = _CHANGE_CHECKS.get(item.source)
    return check(item, f) if check is not None else None


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Everything a worker needs besides the task: plain, picklable data.

    The engine builds it once and hands it to each worker process, which rebuilds its
    per-process state (patterns, resource limits) from it in :func:`prepare_process`.
    """

    key: bytes = field(repr=False)  # the fingerprint key: never printed
    limits: Limits = field(default_factory=Limits)
    chunk_size: int = CHUNK_SIZE


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What one task produced; picklable, masked.

    ``newlines_owned`` is the number of newlines in the task's byte range (0 for a whole
    item) so the engine can turn range-relative line numbers into item line numbers.
    ``whole_item`` is set on range tasks whose item needed extraction: the range starting
    at 0 then carries the result of the whole item and the other ranges carry nothing.
    """

    task: Task
    result: ItemResult
    newlines_owned: int = 0
    whole_item: bool = False


def prepare_process() -> PatternSet:
    """Per-process set-up of a worker: no core dumps (they would hold full numbers), and
    the pattern set loaded before the first task."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    tune_allocator()
    return load_patterns()


#: Findings a task keeps before it hands them to ``emit`` (when it has one): a PAN-dense
#: item is then scanned in memory that does not grow with its findings.
STREAM_BATCH = 1000

#: Where a task hands batches of its findings before its result, with the bytes it had read
#: by then (see :func:`scan_task`).
Emit = Callable[[tuple[Finding, ...], int], None]


@dataclass
class _Progress:
    """What a task found and read so far; survives an error so that findings made before
    it are still reported."""

    findings: list[Finding] = field(default_factory=list)
    bytes_read: int = 0
    emit: Emit | None = None

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        if self.emit is not None and len(self.findings) >= STREAM_BATCH:
            batch = tuple(self.findings)
            self.findings.clear()
            self.emit(batch, self.bytes_read)


def scan_task(task: Task, ctx: WorkerContext, emit: Emit | None = None, *,
              opener: Callable[[Item], BinaryIO] | None = None) -> TaskResult:
    """Scan ``task`` and return its masked result; never raises for bad input.

    With ``emit``, findings are handed to it in batches of :data:`STREAM_BATCH` as they are
    made, in the order they would have in the result, which then holds only the rest; each
    with the bytes read so far (at least), so a task that never finishes is still known to
    have read some.

    Source and extraction failures become the result's status and reason (``partial``
    when some bytes were read, keeping the findings made so far); any other exception is
    a bug and becomes ``error``/``READ_ERROR`` with only the exception's type recorded,
    because exception text may quote content.

    ``opener`` replaces the source's reader for a whole-item task (:func:`scan_tasks` hands
    it the body it fetched ahead).
    """
    _test_crash_hook(task)
    item = task.item
    progress = _Progress(emit=emit)
    try:
        opener = opener or _OPENERS.get(item.source)
        if opener is None:
            return TaskResult(task, ItemResult(item, Status.SKIPPED, Reason.UNSUPPORTED_FILE_TYPE,
                                               f"no reader for source {item.source!r}"))
        if task.is_range:
            return _scan_range(task, ctx, opener, progress)
        if item.description:
            _scan_description(item, ctx, progress)
        if item.source == "glacier" and item.job_id is None:
            return TaskResult(task, _failed(item, Reason.INVALID_OBJECT_STATE,
                                            "archive content not retrieved (use --retrieve); its description "
                                            "was scanned", progress))
        return TaskResult(task, _scan_whole(item, ctx, opener, progress))
    except Exception as exc:  # a bug: keep what was found, drop the exception's text
        logger.error("internal error (%s) while scanning %s", type(exc).__name__, mask_text(item.location))
        logger.debug("where:\n%s", "".join(traceback.format_tb(exc.__traceback__)))
        return TaskResult(task, ItemResult(item, Status.ERROR, Reason.READ_ERROR,
                                           f"internal error ({type(exc).__name__})",
                                           progress.bytes_read, tuple(progress.findings)))


#: Where :func:`scan_tasks` hands a batch of findings of the task at ``index`` (its place in
#: the batch) before that task's result, with the bytes it had read by then.
EmitAt = Callable[[int, tuple[Finding, ...], int], None]


# Set once AWS refused this worker process's credentials: its later remote tasks are not read.
_refused: list[str] = []

# Sources whose small items sources.fetch reads ahead of the matcher.
_FETCHED_SOURCES = frozenset({"s3"})


def scan_tasks(tasks: Sequence[Task], ctx: WorkerContext, emit: EmitAt | None = None,
               on_start: Callable[[int], None] | None = None) -> Iterator[TaskResult]:
    """Scan a batch of tasks; yield one result per task, in task order, as each finishes.

    This is what both engines run in a worker: one message carries many small tasks, and the
    batch is the unit over which remote reads can be overlapped with matching. Like
    :func:`scan_task` it never raises for bad input; a bug inside one task becomes that
    task's ``error``/``READ_ERROR`` and the batch goes on. ``on_start(index)`` is called as
    the task at ``index`` starts (the local engine records it, so that a worker that dies is
    known to have died on that task).

    Small S3 objects of the batch are fetched ahead of the matcher by a pool of threads
    (``sources.fetch``), many requests in flight, bounded by bytes held and by an adaptive
    per-bucket concurrency; each task's result is what reading it in turn would have given.
    """
    ahead = None
    if not _refused and any(t.item.source in _FETCHED_SOURCES for t in tasks):
        # Imported only for remote sources: a scan of local files never loads boto3.
        from panscan.sources.fetch import Prefetch, eligible

        ahead = Prefetch(tasks) if any(eligible(t) for t in tasks) else None
    try:
        for index, task in enumerate(tasks):
            if _refused and task.item.source != "file":
                yield TaskResult(task, ItemResult(task.item, Status.SKIPPED, Reason.INTERRUPTED,
                                                  f"not read: {_refused[0]}"))
                continue
            if on_start is not None:
                on_start(index)
            task_emit: Emit | None = None
            if emit is not None:
                def task_emit(batch: tuple[Finding, ...], bytes_read: int, index: int = index) -> None:
                    emit(index, batch, bytes_read)
            opener = ahead.opener(index) if ahead is not None else None
            result = _guarded(task, ctx, task_emit, opener)
            if ahead is not None:
                ahead.done(index)
            if task.item.source != "file" and result.result.reason is Reason.PERMISSION_DENIED:
                from panscan.sources.aws import credentials_problem

                if credentials_problem(result.result) is not None:
                    # Every later request of this process would be refused the same way (the
                    # coordinator stops the scan when this result reaches it): none is sent.
                    _refused[:] = ["AWS refused the scan's credentials"]
                    if ahead is not None:
                        ahead.close()
            yield result
    finally:
        if ahead is not None:
            ahead.close()


def _guarded(task: Task, ctx: WorkerContext, emit: Emit | None,
             opener: Callable[[Item], BinaryIO] | None = None) -> TaskResult:
    try:
        return scan_task(task, ctx, emit, opener=opener)
    except Exception as exc:  # scan_task does not raise by contract; a bug if it does
        return TaskResult(task, ItemResult(task.item, Status.ERROR, Reason.READ_ERROR,
                                           f"internal error ({type(exc).__name__})"))


def _scan_description(item: Item, ctx: WorkerContext, progress: _Progress) -> None:
    """A Glacier ArchiveDescription is often a file name or a note someone typed: scanned as
    text of its own, its findings under :data:`DESCRIPTION_MEMBER`."""
    scanner = StreamScanner(load_patterns())
    data = (item.description or "").encode("utf-8", "surrogateescape")
    _add(progress, scanner.feed(data), item, DESCRIPTION_MEMBER, ctx.key)
    _add(progress, scanner.finish(), item, DESCRIPTION_MEMBER, ctx.key)


def _scan_whole(item: Item, ctx: WorkerContext, opener: Callable[[Item], BinaryIO],
                progress: _Progress, raw: BinaryIO | None = None) -> ItemResult:
    try:
        f = raw if raw is not None else opener(item)
    except SourceError as exc:
        return _failed(item, exc.reason, exc.detail, progress)
    with f:
        meter = Meter()
        patterns = load_patterns()
        problems: list[Problem] = []
        try:
            for out in open_streams(f, ctx.limits, ctx.chunk_size, meter):
                if isinstance(out, Problem):
                    # A branch stopped; the others are still scanned (the framework
                    # decides which problems end the whole item).
                    problems.append(out)
                    continue
                scanner = StreamScanner(patterns)
                try:
                    for chunk in out.chunks:
                        progress.bytes_read = meter.bytes_in  # before: batches of this chunk say so
                        _add(progress, scanner.feed(chunk), item, out.member, ctx.key, out.where)
                finally:
                    # Whatever was fed before a failure is still judged: findings in the
                    # part that was read are real.
                    _add(progress, scanner.finish(), item, out.member, ctx.key, out.where)
        except (ExtractError, SourceError) as exc:
            progress.bytes_read = meter.bytes_in
            return _failed(item, *_read_failed(item, f, exc.reason, exc.detail), progress)
        progress.bytes_read = meter.bytes_in
        changed = _changed(item, f)
        if changed is not None:
            return _failed(item, *changed, progress)
    if problems:
        first = _first_problem(problems)
        return _failed(item, *_read_failed(item, f, first.reason, _describe(first, len(problems))), progress)
    return ItemResult(item, Status.COMPLETE, None, None, progress.bytes_read, tuple(progress.findings))


def _first_problem(problems: list[Problem]) -> Problem:
    """The problem an item is reported with: the first one that ended the whole item's
    extraction (an item-wide budget) if any, else the first met. The others are counted
    in the detail; the reason should name what cost the most coverage."""
    return next((p for p in problems if p.reason in ITEM_WIDE_REASONS), problems[0])


def _describe(problem: Problem, count: int) -> str:
    where = f"{problem.member}: " if problem.member else ""
    more = f" (+{count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{where}{problem.detail}{more}"


def _scan_range(task: Task, ctx: WorkerContext, opener: Callable[[Item], BinaryIO],
                progress: _Progress) -> TaskResult:
    item = task.item
    read_from = max(0, task.start - RANGE_OVERLAP)
    open_at = _RANGE_OPENERS.get(item.source)
    try:
        f = open_at(item, read_from) if open_at is not None else opener(item)
    except SourceError as exc:
        return TaskResult(task, _failed(item, exc.reason, exc.detail, progress))
    with f:
        try:
            f.seek(0)  # a file opened at read_from stands there
            head = f.read(MAGIC_LEN)
        except OSError as exc:
            why = f"read failed: {exc.strerror or 'I/O error'}"
            return TaskResult(task, _failed(item, *_read_failed(item, f, Reason.READ_ERROR, why), progress))
        if sniff(head).is_container:
            if task.start != 0:
                f.close()
                return TaskResult(task, ItemResult(item, Status.COMPLETE), 0, whole_item=True)
            f.seek(0)
            return TaskResult(task, _scan_whole(item, ctx, opener, progress, raw=f), 0, whole_item=True)
        size = item.size if item.size is not None else os.fstat(f.fileno()).st_size
        start, end = task.start, task.end if task.end is not None else size
        read_to = min(size, end + RANGE_OVERLAP)
        scanner = StreamScanner(load_patterns(), base_offset=read_from, own_from=start, own_to=end)
        f.seek(read_from)
        pos = read_from
        try:
            while pos < read_to:
                chunk = f.read(min(ctx.chunk_size, read_to - pos))
                if not chunk:
                    break  # the file shrank: reported as changed below
                pos += len(chunk)
                progress.bytes_read = max(0, min(pos, end) - start)
                _add(progress, scanner.feed(chunk), item, None, ctx.key)
        except OSError as exc:
            _add(progress, scanner.finish(), item, None, ctx.key)
            why = f"read failed: {exc.strerror or 'I/O error'}"
            return TaskResult(task, _failed(item, *_read_failed(item, f, Reason.READ_ERROR, why), progress))
        _add(progress, scanner.finish(), item, None, ctx.key)
        newlines = scanner.newlines_owned
        changed = _changed(item, f)
        if changed is None and pos < read_to:
            changed = Reason.CHANGED_DURING_SCAN, "the file changed while it was read"
        if changed is not None:
            return TaskResult(task, _failed(item, *changed, progress), newlines)
    return TaskResult(task, ItemResult(item, Status.COMPLETE, None, None, progress.bytes_read,
                                       tuple(progress.findings)), newlines)


def _add(progress: _Progress, hits: list[RawHit], item: Item, member: str | None, key: bytes,
         where: Callable[[int], str | None] | None = None) -> None:
    # The raw hits die here: only masked findings are kept.
    for hit in hits:
        suffix = where(hit.offset) if where is not None else None
        at = member if suffix is None else f"{member or ''}{suffix}"
        progress.add(to_finding(hit, item, at, key))


def _failed(item: Item, reason: Reason, detail: str | None, progress: _Progress) -> ItemResult:
    if progress.bytes_read > 0:
        status = Status.PARTIAL
    else:
        status = Status.SKIPPED if reason in _SKIP_REASONS else Status.ERROR
    return ItemResult(item, status, reason, mask_text(detail) if detail else None,
                      progress.bytes_read, tuple(progress.findings))


def _test_crash_hook(task: Task) -> None:
    needle = os.environ.get(TEST_CRASH_ENV)
    if needle and needle in task.item.location:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Masking of free text: locations, member names, details and log messages.
