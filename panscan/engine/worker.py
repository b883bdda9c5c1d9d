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
import re
import resource
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from panscan.extract.budget import ITEM_WIDE_REASONS, ExtractError, Limits, Meter
from panscan.extract.expand import Problem, open_streams
from panscan.extract.sniff import MAGIC_LEN, sniff
from panscan.findings.mask import mask_text, to_finding
from panscan.match.matcher import CHUNK_SIZE, RANGE_OVERLAP, RawHit, StreamScanner, scan_bytes, tune_allocator
from panscan.match.patterns import PatternSet, load_patterns
from panscan.model import DESCRIPTION_MEMBER, Finding, Item, ItemResult, Reason, Status, Task
from panscan.sources.files import SourceError, changed_since, open_file

logger = logging.getLogger(__name__)

#: Test-only hook: a worker whose task location contains this variable's value kills itself
#: with SIGKILL before reading anything, so tests can pin the engine's crash handling.
TEST_CRASH_ENV = "PANSCAN_TEST_CRASH_ON"
#: Test-only hook: likewise, but the worker stops itself with SIGSTOP (stuck where its own
#: time check never runs), so tests can pin the coordinator's deadline.
TEST_STOP_ENV = "PANSCAN_TEST_STOP_ON"

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

#: The member name of findings in an item's own name: a file's or directory's base name, an
#: S3 object's whole key (S3 has no directories). User metadata, Content-Disposition and tags
#: are under ``(metadata x-amz-meta-<name>)``, ``(metadata Content-Disposition)`` and
#: ``(tag <key>)``.
NAME_MEMBER = "(name)"

# The prefilter before a short text (a name, a metadata value) is matched: a card number
# needs 13 digits with at most a space or dash between two (NULs too, as UTF-16 text has),
# so a text without 12 such digits in a row holds none. Most names have far fewer digits:
# they then cost one regex search, not a matcher call.
_MAY_HOLD_NUMBER = re.compile(r"[0-9](?:[ \-\x00]{0,3}[0-9]){11}")


def _base_name(location: str) -> str:
    return location.rpartition("/")[2]


def _s3_key(location: str) -> str:
    return location[len("s3://"):].partition("/")[2]


# An item's own name, by source: what a person named it, scanned under NAME_MEMBER. Glacier
# archives have no name (their description is scanned, under DESCRIPTION_MEMBER).
_NAMES: dict[str, Callable[[str], str]] = {"file": _base_name, "s3": _s3_key}


def _s3_metadata(f: BinaryIO, tags: bool) -> Iterator[tuple[str, str]]:
    from panscan.sources.s3 import object_metadata, object_tags

    for header, texts in object_metadata(f):
        for text in texts:
            yield f"(metadata {header})", text
    if tags:
        for key, value in object_tags(f):  # SourceError when refused
            yield f"(tag {key})", key
            yield f"(tag {key})", value


# Texts that come with an open item besides its content, by source, as (member, text): S3
# user metadata and Content-Disposition (on the GetObject response), and the tags when asked.
_METADATA: dict[str, Callable[[BinaryIO, bool], Iterator[tuple[str, str]]]] = {"s3": _s3_metadata}

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
    tags: bool = False  # S3: scan each version's tags too (one GetObjectTagging each)


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


_SEEN_LIMIT = 100_000


@dataclass
class _Progress:
    """What a task found and read so far; survives an error so that findings made before
    it are still reported."""

    findings: list[Finding] = field(default_factory=list)
    bytes_read: int = 0
    emit: Emit | None = None
    # Something of the item other than its bytes that could not be read (its S3 tags): a
    # result that is otherwise complete is partial with this reason and detail.
    shortfall: tuple[Reason, str] | None = None
    # Fingerprints reported for the item, so that a backstop pass (raw bytes scanned in case
    # a parser missed some) does not report a number the parsed text already gave. Bounded:
    # past the bound a repeat is reported again, which loses nothing.
    seen: set[str] = field(default_factory=set)

    def add(self, finding: Finding, backstop: bool = False) -> None:
        if backstop and finding.fingerprint in self.seen:
            return
        if len(self.seen) < _SEEN_LIMIT:
            self.seen.add(finding.fingerprint)
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
        if task.start == 0:  # one task of a split item scans its name
            _scan_name(item, ctx, progress)
        if task.is_range:
            return _short_of(_scan_range(task, ctx, opener, progress), progress)
        if item.description:
            _scan_text(progress, item.description, item, DESCRIPTION_MEMBER, ctx.key)
        if item.source == "glacier" and item.job_id is None:
            # The source says why when --retrieve was given (left out by --max-bytes, ...).
            why = item.not_retrieved or "use --retrieve"
            return TaskResult(task, _failed(item, Reason.INVALID_OBJECT_STATE,
                                            f"archive content not retrieved ({why}); its description "
                                            "was scanned", progress))
        return _short_of(TaskResult(task, _scan_whole(item, ctx, opener, progress)), progress)
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

        ahead = Prefetch(tasks, tags=ctx.tags) if any(eligible(t) for t in tasks) else None
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


def _scan_text(progress: _Progress, text: str, item: Item, member: str, key: bytes) -> None:
    """Scan a short text that belongs to ``item`` but is not its content (its name, a metadata
    value, a tag, a Glacier description, often a file name or a note someone typed) as a text
    of its own, with the content's matcher; its findings are under ``member``, at offsets
    within the text. A text with too few digits for a card number is not matched at all."""
    if not _MAY_HOLD_NUMBER.search(text):
        return
    for hit in scan_bytes(text.encode("utf-8", "surrogateescape"), load_patterns()):
        # Appended, not add()ed: add() remembers fingerprints so that a backstop pass over the
        # content does not repeat one; a number in a name must not hide it in the content.
        progress.findings.append(to_finding(hit, item, member, key))


def _scan_name(item: Item, ctx: WorkerContext, progress: _Progress) -> None:
    name_of = _NAMES.get(item.source)
    if name_of is not None:
        _scan_text(progress, name_of(item.location), item, NAME_MEMBER, ctx.key)


def name_findings(location: str, name: str, key: bytes) -> tuple[Finding, ...]:
    """The findings in ``name``, the own name of the local path at ``location`` (a directory,
    or a path that is not read), under :data:`NAME_MEMBER`; ``()`` after one regex search for a
    name with too few digits (the common case). The walk calls it in the coordinator (see
    ``sources.files.WalkOptions.name_findings``): the name is in every location there anyway,
    which ``mask_text`` matches, and only masked findings come out."""
    progress = _Progress()
    _scan_text(progress, name, Item(location, "file"), NAME_MEMBER, key)
    return tuple(progress.findings)


def _scan_metadata(item: Item, f: BinaryIO, ctx: WorkerContext, progress: _Progress) -> None:
    """The texts that came with the open item besides its content (see :data:`_METADATA`),
    each scanned on its own. Tags that cannot be read leave the item short of complete."""
    texts = _METADATA.get(item.source)
    if texts is None:
        return
    try:
        for member, text in texts(f, ctx.tags):
            _scan_text(progress, text, item, member, ctx.key)
    except SourceError as exc:
        progress.shortfall = exc.reason, exc.detail


def _short_of(result: TaskResult, progress: _Progress) -> TaskResult:
    """``result``, partial with the reason when something besides the item's bytes (its
    tags) was not read and it is otherwise complete; a failed result keeps its own reason."""
    if progress.shortfall is None or result.result.status is not Status.COMPLETE:
        return result
    reason, detail = progress.shortfall
    return replace(result, result=replace(result.result, status=Status.PARTIAL, reason=reason,
                                          detail=mask_text(detail)))


def scan_streams(f: BinaryIO, item: Item, limits: Limits, chunk_size: int,
                 key: bytes) -> tuple[list[Finding], list[Problem]]:
    """Expand ``f`` and match every stream as a worker does (a stream's locator appended to its
    member, a backstop pass reporting only numbers new to the item): the masked findings, and
    the branches that stopped. For bytes without an item to account for (the self-test)."""
    progress = _Progress()
    problems: list[Problem] = []
    _scan_streams(f, item, limits, chunk_size, key, Meter(), progress, problems)
    return progress.findings, problems


def _scan_streams(f: BinaryIO, item: Item, limits: Limits, chunk_size: int, key: bytes, meter: Meter,
                  progress: _Progress, problems: list[Problem]) -> None:
    patterns = load_patterns()
    for out in open_streams(f, limits, chunk_size, meter):
        if isinstance(out, Problem):
            # A branch stopped; the others are still scanned (the framework decides which
            # problems end the whole item).
            problems.append(out)
            continue
        scanner = StreamScanner(patterns)
        try:
            for chunk in out.chunks:
                progress.bytes_read = meter.bytes_in  # before: batches of this chunk say so
                _add(progress, scanner.feed(chunk), item, out.member, key, out.where, out.backstop)
        finally:
            # Whatever was fed before a failure is still judged: findings in the part that was
            # read are real.
            _add(progress, scanner.finish(), item, out.member, key, out.where, out.backstop)


def _scan_whole(item: Item, ctx: WorkerContext, opener: Callable[[Item], BinaryIO],
                progress: _Progress, raw: BinaryIO | None = None) -> ItemResult:
    try:
        f = raw if raw is not None else opener(item)
    except SourceError as exc:
        return _failed(item, exc.reason, exc.detail, progress)
    with f:
        if raw is None:  # (a range task that passes ``raw`` has scanned the metadata already)
            _scan_metadata(item, f, ctx, progress)
        meter = Meter()
        problems: list[Problem] = []
        try:
            _scan_streams(f, item, ctx.limits, ctx.chunk_size, ctx.key, meter, progress, problems)
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
        if task.start == 0:  # the first range: the item's metadata came with its first bytes
            _scan_metadata(item, f, ctx, progress)
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
         where: Callable[[int], str | None] | None = None, backstop: bool = False) -> None:
    # The raw hits die here: only masked findings are kept.
    for hit in hits:
        suffix = where(hit.offset) if where is not None else None
        at = member if suffix is None else f"{member or ''}{suffix}"
        progress.add(to_finding(hit, item, at, key), backstop)


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
    needle = os.environ.get(TEST_STOP_ENV)
    if needle and needle in task.item.location:
        os.kill(os.getpid(), signal.SIGSTOP)


# --------------------------------------------------------------------------------------------
# Masking of free text: locations, member names, details and log messages.
