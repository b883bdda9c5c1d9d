"""The local engine: a pool of worker processes forked once, at start.

Work travels in batches: one pipe message carries up to ``BATCH_TASKS`` small tasks (or one
big one) to a worker, which answers them in order and sends their results back many per
message (``RESULT_BATCH``, or after ``RESULT_SECONDS``, or when its batch is done); each
worker has about two batches waiting, so it never waits for the coordinator while work is
queued. A worker writes the id of the task it is scanning into a shared slot, so when it
dies (SIGKILL, the OOM killer, a crash in native code) exactly that task becomes
``error``/``WORKER_CRASHED``; the other unanswered tasks (finished but not yet sent, or not
started) go back to the queue; a replacement worker is forked and the scan goes on.
``concurrent.futures`` is not used because one dead worker breaks its whole pool.

A worker that never comes back from a task (blocked in native code or on a hung network
read, or stopped) is stopped by the coordinator: the worker also writes when its task
started, and a task still running ``max_item_seconds`` plus ``DEADLINE_GRACE_SECONDS``
after that has its worker killed (SIGKILL, which also ends a stopped process); the task
becomes ``error``/``TIME_CUT_OFF_REACHED`` (``partial`` if it had streamed findings) and
the rest goes as for a crash. The grace lets the worker's own check between chunks, which
reports what was read, fire first. A worker that sits between tasks with work waiting for
that long is replaced the same way, its tasks requeued.

Backpressure: items are pulled from the (lazy) source only while fewer than
``workers * PREFETCH`` tasks are waiting, so a listing of millions of files is never held
in memory. Regular files larger than ``split_threshold`` become byte-range tasks of
``range_size`` bytes scanned by several workers; their results are merged back into one
``ItemResult`` (findings by offset, line numbers continued across ranges, status the worst
of the parts; see ``ranges``, shared with the Dask engine). See ``worker`` for how a range
of a compressed file is handled.

A task that makes many findings (a PAN-dense file) sends them in batches while it runs
(``worker.STREAM_BATCH``); :meth:`LocalEngine.run` hands them to its ``on_findings``
callback at once, so neither the worker nor the coordinator holds all of them. The
batches of a byte range wait until the ranges before it have finished (their newlines
give its line numbers), on disk past a few batches.

Worker log records reach the coordinator's handlers through multiprocessing-logging: the
handlers of the ``panscan`` logger are wrapped before the fork and restored at close.
"""

from __future__ import annotations

import logging
import multiprocessing
import operator
import os
import pickle
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import IO, Any

from multiprocessing_logging import MultiProcessingHandler

from panscan.engine.ranges import RANGE_SIZE as RANGE_SIZE
from panscan.engine.ranges import SPLIT_THRESHOLD as SPLIT_THRESHOLD
from panscan.engine.ranges import check_sizes, lines_before, shift_lines, split_item, task_bytes
from panscan.engine.ranges import merge_parts as merge_parts
from panscan.engine.worker import TaskResult, WorkerContext, prepare_process, scan_tasks
from panscan.model import Finding, Item, ItemResult, Reason, Status, Task

#: Called with an item and a batch of its findings (not yet masked for display) while the
#: item is still being scanned; its ``ItemResult`` comes later with the rest.
OnFindings = Callable[[Item, tuple[Finding, ...]], None]

logger = logging.getLogger(__name__)

#: Most tasks in one message to a worker. Small items travel many per message and their
#: results come back many per message: one pipe round trip per item cost more than
#: scanning a small file.
BATCH_TASKS = 128
#: Most bytes of tasks in one message: the bytes are read by the worker, not sent (remote
#: objects are fetched many at a time within a batch, so a batch must hold many of them).
BATCH_BYTES = 64 * 2**20
#: Most tasks sent to one worker ahead of its answers: about two batches, so a worker that
#: finishes one finds the next already waiting.
PREFETCH = 2 * BATCH_TASKS
#: Most bytes of tasks waiting at one worker behind the one it is scanning.
PREFETCH_BYTES = 128 * 2**20
#: How long a worker with nothing to do waits for a fuller batch while the source is still
#: listing, rather than being sent the few items listed so far, one small batch at a time.
IDLE_WAIT_SECONDS = 0.02
#: A worker hands its finished results back when it has this many, when it has held the
#: oldest for ``RESULT_SECONDS``, and when its batch is done.
RESULT_BATCH = 64
RESULT_SECONDS = 0.05
# How often the coordinator looks at its interrupt flag while waiting for workers.
_POLL_SECONDS = 0.2
# Workers that die between tasks (not attributable to an item) are replaced; this many
# such deaths per worker slot means something is wrong with the process itself.
_MAX_IDLE_DEATHS_PER_SLOT = 3
#: How long past ``max_item_seconds`` a task may run before the coordinator stops its
#: worker: long enough for the worker's own check (between chunks) to win whenever the
#: worker still runs Python, so the item is reported with the bytes it read.
DEADLINE_GRACE_SECONDS = 5.0
# How long a killed worker is waited for before it is given up (a process in uninterruptible
# sleep ends only when its I/O returns).
_KILL_WAIT_SECONDS = 5.0


_WAKE_UP = logging.makeLogRecord({"msg": "", "panscan_wake_up": True})


class _Relay(logging.Handler):
    """The caller's handler as seen by multiprocessing-logging: passes records through and
    swallows the wake-up record used to stop the receiving thread promptly."""

    def __init__(self, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.setFormatter(inner.formatter)
        self.filters = inner.filters

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "panscan_wake_up", False):
            self.inner.emit(record)


class EngineError(RuntimeError):
    """The pool itself failed (workers cannot be kept alive)."""


@dataclass(frozen=True)
class _Slot:
    """What a worker is doing, in shared memory: the id of the task it is scanning (0
    between tasks) and when it last started or finished one.

    Results come back in batches, so when a worker dies the oldest unanswered task is not
    necessarily the one that killed it: ``task`` says which. ``since`` is a
    ``time.monotonic()`` value: CLOCK_MONOTONIC is system-wide on Linux, so the coordinator
    compares it with its own clock. No lock: one held by a worker that is then killed would
    never be released.
    """

    task: Any  # RawValue("q")
    since: Any  # RawValue("d")

    def enter(self, task_id: int) -> None:
        # The time first: a reader that sees the new id then sees its start (or a later time).
        self.since.value = time.monotonic()
        self.task.value = task_id

    def leave(self) -> None:
        self.since.value = time.monotonic()
        self.task.value = 0

    def read(self) -> tuple[int, float] | None:
        """``(task id, since)``, or None when the worker changed task while it was read."""
        task = self.task.value
        since = self.since.value
        return (task, since) if self.task.value == task else None


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    slot: _Slot
    sent: deque[int] = field(default_factory=deque)  # task ids not yet answered, oldest first
    queued_bytes: int = 0  # task bytes of ``sent``
    fed: float = 0.0  # when ``sent`` last became non-empty (the worker may have idled long before)
    stopped: str | None = None  # why the coordinator killed it, if it did


# The first field of a worker's message: a batch of findings of the task in progress, or
# the results of finished tasks.
_FINDINGS = "findings"
_RESULTS = "results"
# Batches of one range kept in memory while it waits for the ranges before it; the rest
# go to an unnamed temporary file (masked findings only: no full number is ever written).
_HELD_IN_MEMORY = 4


class _Spool:
    """Batches of findings set aside, in order."""

    def __init__(self) -> None:
        self._batches: list[tuple[Finding, ...]] = []
        self._file: IO[bytes] | None = None

    def add(self, batch: tuple[Finding, ...]) -> None:
        if self._file is None and len(self._batches) < _HELD_IN_MEMORY:
            self._batches.append(batch)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="panscan-held-")
        pickle.dump(batch, self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def drain(self) -> Iterator[tuple[Finding, ...]]:
        batches, self._batches = self._batches, []
        yield from batches
        f, self._file = self._file, None
        if f is None:
            return
        with f:
            f.seek(0)
            while True:
                try:
                    yield pickle.load(f)  # noqa: S301 - our own unnamed file, written above
                except EOFError:
                    return


@dataclass
class _Pending:
    item: Item
    parts: int
    done: dict[int, TaskResult] = field(default_factory=dict)  # part index -> result
    streamed: int = 0  # findings already handed to on_findings
    ready: int = 0  # parts 0..ready-1 are done: the batches of part ``ready`` and before can go
    held: dict[int, _Spool] = field(default_factory=dict)  # batches of later parts, waiting
    kept: dict[int, list[Finding]] = field(default_factory=dict)  # batches when nobody streams
    read: dict[int, int] = field(default_factory=dict)  # bytes a part had read at its last batch


class LocalEngine:
    """Runs ``worker.scan_task`` over items on a local process pool.

    Use as a context manager (or call :meth:`start` and :meth:`close`). :meth:`run` yields
    one ``ItemResult`` per item it is given, in completion order; ``ItemResult`` values in
    the input (decisions a source already made) are passed through unchanged. Results are
    not yet masked for display: locations are the source's own (see ``findings.mask.mask_result``).
    """

    def __init__(self, ctx: WorkerContext, workers: int | None = None, *,
                 split_threshold: int = SPLIT_THRESHOLD, range_size: int = RANGE_SIZE,
                 log_to: logging.Logger | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        check_sizes(split_threshold, range_size)
        self._ctx = ctx
        self._n = workers or os.cpu_count() or 1
        self._split_threshold = split_threshold
        self._range_size = range_size
        self._log_to = log_to if log_to is not None else logging.getLogger("panscan")
        self._mp = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []
        self._wrapped: list[MultiProcessingHandler] = []
        self._interrupted = False
        self._idle_deaths = 0
        # Task bookkeeping (see run()).
        self._tasks: dict[int, tuple[int, int, Task]] = {}  # task id -> (item id, part, task)
        self._pending: dict[int, _Pending] = {}
        self._todo: deque[int] = deque()
        self._next_id = 0
        self._on_findings: OnFindings | None = None
        #: Pipe messages that carried tasks to workers, and results or findings back.
        self.messages_sent = 0
        self.messages_received = 0
        self._last_dispatch = 0.0

    @property
    def workers(self) -> int:
        return self._n

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        """Stop soon: no new tasks; :meth:`run` reports unfinished items as ``INTERRUPTED``.

        Safe to call from a signal handler.
        """
        self._interrupted = True

    # ----------------------------------------------------------------------------------------
    # Pool lifetime.

    def __enter__(self) -> LocalEngine:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Wrap the log handlers and fork the workers."""
        if self._workers:
            return
        self._wrap_log_handlers()
        for _ in range(self._n):
            self._workers.append(self._spawn())

    def close(self) -> None:
        """Stop the workers (politely, then by force) and restore the log handlers."""
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.process.join(timeout=0 if self._interrupted else 5)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self._workers = []
        self._unwrap_log_handlers()

    def _spawn(self) -> _Worker:
        ours, theirs = self._mp.Pipe(duplex=True)
        slot = _Slot(self._mp.RawValue("q", 0), self._mp.RawValue("d", time.monotonic()))
        # The child must not keep the coordinator's ends of the other workers' pipes open,
        # or a worker would not see EOF when the coordinator goes away.
        others = [w.conn for w in self._workers] + [ours]
        process = self._mp.Process(target=_worker_main, args=(theirs, self._ctx, others, slot),
                                   name="panscan-worker", daemon=True)
        process.start()
        theirs.close()
        return _Worker(process, ours, slot)

    def _wrap_log_handlers(self) -> None:
        for i, handler in enumerate(list(self._log_to.handlers)):
            wrapper = MultiProcessingHandler(f"panscan-log-{i}", sub_handler=_Relay(handler))
            self._log_to.removeHandler(handler)
            self._log_to.addHandler(wrapper)
            self._wrapped.append(wrapper)

    def _unwrap_log_handlers(self) -> None:
        for wrapper in self._wrapped:
            self._log_to.removeHandler(wrapper)
            # Drain what the workers sent, without closing the caller's own handler. The
            # wake-up record ends the receiver's 0.2 s poll at once instead of at its timeout.
            wrapper._is_closed = True
            wrapper.queue.put_nowait(_WAKE_UP)
            wrapper._receive_thread.join(5.0)
            self._log_to.addHandler(wrapper.sub_handler.inner)
        self._wrapped = []

    # ----------------------------------------------------------------------------------------
    # Scanning.

    def run(self, items: Iterable[Item | ItemResult | None],
            on_findings: OnFindings | None = None) -> Iterator[ItemResult]:
        """Scan ``items``; yield one result per item as it completes.

        With ``on_findings``, an item with many findings has them handed over in batches
        while it is scanned, and its result holds the rest (``earlier_findings`` counts the
        others); without it, every result holds all of its item's findings.

        After :meth:`interrupt`, items already handed to workers are reported as
        ``skipped``/``INTERRUPTED`` (with whatever parts of them had finished) and no more
        items are pulled from ``items``. A None from ``items`` means "nothing yet": the
        engine dispatches and collects before it asks again.
        """
        if not self._workers:
            raise RuntimeError("LocalEngine.run() before start()")
        self._on_findings = on_findings
        source = iter(items)
        exhausted = False
        while not self._interrupted:
            room = self._free_slots()
            while not exhausted and not self._interrupted and len(self._todo) < room:
                try:
                    nxt = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if nxt is None:
                    break  # the source is waiting for an answer: see to the workers meanwhile
                if isinstance(nxt, ItemResult):
                    yield nxt
                    continue
                self._add_item(nxt)
                # A full batch, or a worker with nothing to do: send now rather than after
                # the whole look-ahead is listed (a listing may be slow).
                if len(self._todo) >= BATCH_TASKS or (len(self._todo) % 16 == 1 and self._idle_worker()
                                                       and time.monotonic() - self._last_dispatch >= IDLE_WAIT_SECONDS):
                    self._dispatch()
                    room = self._free_slots()
            self._dispatch()
            if exhausted and not self._pending:
                return
            yield from self._collect(_POLL_SECONDS)
        yield from self._abandon()

    def _free_slots(self) -> int:
        return sum(PREFETCH - len(w.sent) for w in self._workers)

    def _idle_worker(self) -> bool:
        return any(not w.sent for w in self._workers)

    def _add_item(self, item: Item) -> None:
        item_id = self._new_id()
        size = item.size
        # Most items are small: one task, without building a list of one.
        tasks = [Task(item)] if size is None or size <= self._split_threshold else self._split(item)
        self._pending[item_id] = _Pending(item, len(tasks))
        for part, task in enumerate(tasks):
            task_id = self._new_id()
            self._tasks[task_id] = (item_id, part, task)
            self._todo.append(task_id)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _split(self, item: Item) -> list[Task]:
        return split_item(item, self._split_threshold, self._range_size)

    def _dispatch(self) -> None:
        """Hand waiting tasks to workers, many per message: a worker gets its next batch
        while it still has about one batch to go, and never more than ``PREFETCH`` tasks or
        ``PREFETCH_BYTES`` waiting behind the one it scans, so big tasks (byte ranges) go one
        at a time and no worker hoards them."""
        for w in self._workers:
            if not self._todo:
                return
            if len(w.sent) > PREFETCH - BATCH_TASKS:
                continue
            # Bytes waiting behind the task it scans now.
            queued = w.queued_bytes - (self._task_bytes(w.sent[0]) if w.sent else 0)
            batch_bytes = 0
            batch: list[int] = []
            while self._todo and len(batch) < BATCH_TASKS and len(w.sent) + len(batch) < PREFETCH:
                size = self._task_bytes(self._todo[0])
                if batch and batch_bytes + size > BATCH_BYTES:
                    break
                if (w.sent or batch) and queued + size > PREFETCH_BYTES:
                    break  # it would wait behind others: leave it to a worker that is free
                batch.append(self._todo.popleft())
                batch_bytes += size
                queued += size
            if not batch:
                continue
            try:
                w.conn.send([(t, _pack_task(self._tasks[t][2])) for t in batch])
            except OSError:
                self._todo.extendleft(reversed(batch))
                continue  # the worker is gone; _collect will notice and replace it
            self._last_dispatch = time.monotonic()
            if not w.sent:
                w.fed = self._last_dispatch
            w.sent.extend(batch)
            w.queued_bytes += batch_bytes
            self.messages_sent += 1

    def _task_bytes(self, task_id: int) -> int:
        return task_bytes(self._tasks[task_id][2])

    def _collect(self, timeout: float) -> Iterator[ItemResult]:
        handles: list[Connection | int] = []
        for w in self._workers:
            handles += [w.conn, w.process.sentinel]
        ready = set(wait(handles, timeout))
        for w in list(self._workers):
            if w.conn not in ready and w.process.sentinel not in ready:
                continue
            alive = yield from self._receive(w)
            if not alive or not w.process.is_alive():
                yield from self._replace(w)
        # After the answers were taken: a worker whose results merely waited in the pipe
        # while the coordinator was busy is not stuck.
        for w, why in self._overdue():
            yield from self._stop(w, why)

    def _receive(self, w: _Worker) -> Generator[ItemResult, None, bool]:
        """Take every message ``w`` has sent; yield the items they finish; return whether
        its pipe is still open."""
        try:
            while w.conn.poll():
                message = w.conn.recv()
                self.messages_received += 1
                if message[0] == _FINDINGS:
                    _, task_id, batch, bytes_read = message
                    if not w.sent or w.sent[0] != task_id:
                        raise EngineError("a worker answered out of order")
                    self._stream(task_id, batch, bytes_read)
                    continue
                for task_id, packed in message[1]:
                    if not w.sent or w.sent[0] != task_id:
                        raise EngineError("a worker answered out of order")
                    w.sent.popleft()
                    task = self._tasks[task_id][2]
                    w.queued_bytes -= task_bytes(task)
                    done = self._record(task_id, _unpack_result(task, packed))
                    if done is not None:
                        yield done
        except (EOFError, OSError):
            return False
        return True

    def _overdue(self) -> list[tuple[_Worker, str]]:
        """The workers that have been on one task, or between tasks with work waiting, for
        longer than ``max_item_seconds`` plus the grace, each with why it is stopped."""
        limit = self._ctx.limits.max_item_seconds
        now = time.monotonic()
        late = []
        for w in self._workers:
            seen = w.slot.read() if w.sent else None
            if seen is None:
                continue
            task_id, since = seen
            waited = now - max(since, w.fed)
            if waited <= limit + DEADLINE_GRACE_SECONDS or w.conn.poll():
                continue
            where = "on one item" if task_id else "between items with work waiting"
            late.append((w, f"the coordinator stopped the worker after {waited:.0f} s {where}: it did not "
                            f"answer within max_item_seconds ({limit:g} s) + {DEADLINE_GRACE_SECONDS:g} s"))
        return late

    def _stop(self, w: _Worker, why: str) -> Iterator[ItemResult]:
        """Kill ``w`` (stuck), take what it had sent, and replace it."""
        w.stopped = why
        w.process.kill()
        w.process.join(_KILL_WAIT_SECONDS)
        if not w.process.is_alive():
            # Results of the tasks it finished before it got stuck may be in the pipe.
            yield from self._receive(w)
        yield from self._replace(w)

    def _replace(self, w: _Worker) -> Iterator[ItemResult]:
        w.process.join(None if w.stopped is None else 0)
        w.conn.close()
        code = w.process.exitcode
        if w.stopped is not None and code is None:
            logger.error("a stuck worker process (pid %s) did not end when killed; it is left behind",
                         w.process.pid)
        if code is not None and code < 0:
            how = f"signal {signal.Signals(-code).name}"
        else:
            how = f"exit status {code}"
        index = self._workers.index(w)
        on = w.slot.task.value
        if on and on in w.sent:
            # The tasks before it had finished but their results had not been sent yet, and
            # those after it had not started: all of them go back to the front of the queue.
            unanswered = list(w.sent)
            self._todo.extendleft(reversed([t for t in unanswered if t != on]))
            task = self._tasks[on][2]
            if w.stopped is not None:
                logger.error("a worker process was stuck on an item; it was stopped and the item is "
                             "reported as %s", Reason.TIME_CUT_OFF_REACHED)
                result = ItemResult(task.item, Status.ERROR, Reason.TIME_CUT_OFF_REACHED, w.stopped)
            else:
                logger.error("a worker process died (%s) while scanning an item; it is reported as %s",
                             how, Reason.WORKER_CRASHED)
                result = ItemResult(task.item, Status.ERROR, Reason.WORKER_CRASHED,
                                    f"the worker process died ({how})")
            done = self._record(on, TaskResult(task, result))
            if done is not None:
                yield done
        else:
            self._todo.extendleft(reversed(w.sent))
            self._idle_deaths += 1
            if w.stopped is not None:
                logger.warning("a worker process was stuck between tasks; it was stopped and another started")
            else:
                logger.warning("a worker process died between tasks (%s); starting another", how)
            if self._idle_deaths > _MAX_IDLE_DEATHS_PER_SLOT * self._n:
                raise EngineError("worker processes keep dying")
        self._workers[index] = self._spawn()

    def _stream(self, task_id: int, batch: tuple[Finding, ...], bytes_read: int) -> None:
        """A batch of findings of a task still running (which had read ``bytes_read``)."""
        item_id, part, _ = self._tasks[task_id]
        pending = self._pending[item_id]
        pending.read[part] = bytes_read
        if self._on_findings is None:
            pending.kept.setdefault(part, []).extend(batch)
        elif part <= pending.ready:
            self._hand_over(pending, part, batch)
        else:
            pending.held.setdefault(part, _Spool()).add(batch)

    def _hand_over(self, pending: _Pending, part: int, batch: tuple[Finding, ...]) -> None:
        assert self._on_findings is not None
        if pending.parts > 1:
            parts = [pending.done[i] for i in range(part)]
            batch = tuple(shift_lines(batch, lines_before(parts)))
        pending.streamed += len(batch)
        self._on_findings(pending.item, batch)

    def _record(self, task_id: int, result: TaskResult) -> ItemResult | None:
        item_id, part, _ = self._tasks.pop(task_id)
        pending = self._pending[item_id]
        if pending.parts == 1 and not pending.kept and not pending.read:
            del self._pending[item_id]  # the common case: one task, nothing streamed
            return result.result
        kept = pending.kept.pop(part, None)
        if kept:
            result = replace(result, result=replace(result.result, findings=(*kept, *result.result.findings)))
        read = pending.read.pop(part, 0)
        if read and result.result.status is not Status.COMPLETE and not result.result.bytes_scanned:
            # Crashed or interrupted after its batches: it did read (and find) something.
            result = replace(result, result=replace(result.result, status=Status.PARTIAL, bytes_scanned=read))
        pending.done[part] = result
        while pending.ready in pending.done:
            pending.ready += 1
            held = pending.held.pop(pending.ready, None)
            if held is not None:
                for batch in held.drain():
                    self._hand_over(pending, pending.ready, batch)
        if len(pending.done) < pending.parts:
            return None
        del self._pending[item_id]
        merged = merge_parts([pending.done[i] for i in range(pending.parts)])
        return replace(merged, earlier_findings=pending.streamed) if pending.streamed else merged

    def _abandon(self) -> Iterator[ItemResult]:
        """After an interrupt: stop the workers now and account for every unfinished item."""
        for w in self._workers:
            if w.process.is_alive():
                w.process.terminate()
        for task_id in list(self._tasks):
            task = self._tasks[task_id][2]
            result = ItemResult(task.item, Status.SKIPPED, Reason.INTERRUPTED, "the scan was interrupted")
            done = self._record(task_id, TaskResult(task, result))
            if done is not None:
                yield done
        self._todo.clear()
        for w in self._workers:
            w.sent.clear()


def _worker_main(conn: Connection, ctx: WorkerContext, inherited: list[Connection], slot: _Slot) -> None:
    """A worker process: answer tasks from ``conn`` in order until told to stop."""
    for c in inherited:
        c.close()
    # Ctrl-C reaches the whole process group; the coordinator decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        prepare_process()
        _serve(conn, ctx, slot)
    except Exception as exc:
        # multiprocessing would print the traceback, exception text included, to stderr;
        # the type is all that may leave. The coordinator sees the exit and reports the task.
        logger.error("worker process failed (%s)", type(exc).__name__)
        raise SystemExit(70) from None


class _CoordinatorGone(BaseException):
    """The pipe to the coordinator broke while a task streamed its findings: the task stops
    (a BaseException, so scan_task does not report it as the item's error)."""


class _Outbox:
    """A worker's finished results, sent in batches (see ``RESULT_BATCH``).

    A thread sends results held for ``RESULT_SECONDS`` even while the next task runs: the
    coordinator counts an item done only when its result arrives, and the task after it may
    take minutes (or hang until the scan is interrupted)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.results: list[tuple[int, _Packed]] = []
        self.oldest = 0.0
        self.gone = False
        self._lock = threading.Lock()
        threading.Thread(target=self._send_late, name="panscan-outbox", daemon=True).start()

    def add(self, task_id: int, result: TaskResult) -> None:
        packed = _pack_result(result)
        with self._lock:
            if not self.results:
                self.oldest = time.monotonic()
            self.results.append((task_id, packed))
            if len(self.results) >= RESULT_BATCH or time.monotonic() - self.oldest >= RESULT_SECONDS:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def send_after_results(self, message: tuple[Any, ...]) -> None:
        """Send ``message`` after the results held (the coordinator takes answers in order)."""
        with self._lock:
            self._flush()
            self._send(message)

    def _flush(self) -> None:
        if self.results:
            results, self.results = self.results, []
            self._send((_RESULTS, results))

    def _send(self, message: tuple[Any, ...]) -> None:
        if self.gone:
            raise _CoordinatorGone()
        try:
            self.conn.send(message)
        except OSError:
            self.gone = True
            raise _CoordinatorGone() from None

    def _send_late(self) -> None:
        while not self.gone:
            time.sleep(RESULT_SECONDS)
            with self._lock:
                if self.results and time.monotonic() - self.oldest >= RESULT_SECONDS:
                    try:
                        self._flush()
                    except _CoordinatorGone:
                        return


def _serve(conn: Connection, ctx: WorkerContext, slot: _Slot) -> None:
    outbox = _Outbox(conn)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the coordinator is gone
        if message is None:
            return
        try:
            _answer(message, ctx, outbox, slot)
        except _CoordinatorGone:
            return


def _answer(message: list[tuple[int, _Packed]], ctx: WorkerContext, outbox: _Outbox, slot: _Slot) -> None:
    """Scan one batch of tasks, their results into ``outbox`` in order."""
    ids = [task_id for task_id, _ in message]
    tasks = [_unpack_task(packed) for _, packed in message]
    streamed = False

    def emit(index: int, batch: tuple[Finding, ...], bytes_read: int) -> None:
        nonlocal streamed
        streamed = True
        outbox.send_after_results((_FINDINGS, ids[index], batch, bytes_read))

    def started(index: int) -> None:
        slot.enter(ids[index])

    for index, result in enumerate(scan_tasks(tasks, ctx, emit, started)):
        slot.leave()
        outbox.add(ids[index], result)
        if streamed:
            # Its findings are out already: were this worker to die before the result went,
            # the task would run again and report them twice.
            outbox.flush()
            streamed = False
    outbox.flush()


# Tasks and results cross the pipe as tuples: pickling frozen slotted dataclasses costs
# tens of microseconds each, which for small files is most of the coordinator's work. The
# coordinator keeps the Task, so a result travels without it.
_ITEM_FIELDS = tuple(f.name for f in fields(Item))
_Packed = tuple[Any, ...]


_item_values = operator.attrgetter(*_ITEM_FIELDS)


def _pack_task(task: Task) -> _Packed:
    return (_item_values(task.item), task.start, task.end)


def _unpack_task(packed: _Packed) -> Task:
    values, start, end = packed
    return Task(Item(*values), start, end)


def _pack_result(r: TaskResult) -> _Packed:
    res = r.result
    return (res.status.value, res.reason.value if res.reason else None, res.detail, res.bytes_scanned,
            res.findings, r.newlines_owned, r.whole_item)


def _unpack_result(task: Task, packed: _Packed) -> TaskResult:
    status, reason, detail, bytes_scanned, findings, newlines, whole = packed
    result = ItemResult(task.item, Status(status), Reason(reason) if reason else None, detail, bytes_scanned,
                        findings)
    return TaskResult(task, result, newlines, whole)
