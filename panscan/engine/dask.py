"""The Dask engine: the local engine's worker code, run in batches on a Dask cluster.

The coordinator (this process) pulls items lazily from the source, splits large rangeable
items into byte ranges exactly as the local engine does (``ranges``), groups the tasks into
batches of at most ``batch_items`` tasks and about ``batch_bytes`` bytes, and submits one
:func:`scan_batch` call per batch. It keeps at most ``max_in_flight`` batches outstanding
(default: two per worker thread: one running, one waiting at the scheduler) and pulls no item
while at that bound, so a listing of millions of objects never sits in memory: at any time
at most ``max_in_flight`` batches, plus the one item that did not fit in the last batch,
have been pulled and not yet reported. Results are consumed in completion order
(``distributed.as_completed``) and range results are merged into one ``ItemResult`` per
item (``ranges.merge_parts``); ``ItemResult`` values in the input pass straight through.

What crosses the network: to a worker, the batch's ``Task`` values (item metadata: a
location, a version id, sizes; no content; packed as tuples, which pickle several times
faster than the dataclasses), the AWS endpoint and region this coordinator uses
(``aws.Endpoint``: ``--endpoint-url`` / ``--region``, else ``AWS_ENDPOINT_URL`` and the
chain's region; the worker's clients use them for the batch, so a worker reads from the
server the coordinator listed whatever its own environment says) and the
:class:`WorkerContext`, sent with every batch rather than scattered once (it is a few
hundred bytes, and a scattered copy dies with the workers that hold it, which would fail
every later batch). The context carries the fingerprint HMAC key, not AWS credentials: a
worker reads S3 and Glacier with the credentials of its own environment (its instance
role), and a ``LocalCluster`` worker inherits this process's environment; a credentials
failure on a worker says so in its detail (``aws.on_dask_worker``). From a worker:
``TaskResult`` values, which ``worker.scan_task`` has already masked. Use TLS between the
coordinator, scheduler and workers (docs/distributed.md): locations and the key travel in
those messages.

A scan whose workers cannot read what the coordinator listed (another endpoint, region or
account: every GetObject answers NoSuchBucket) stops early: when the first
``SAME_FAILURE_STOP`` remote items the workers return all failed (``error``) with the same
reason and detail, a reason that says the source cannot be reached or read (``NOT_FOUND``,
``PERMISSION_DENIED``, ``READ_ERROR``; not an object deleted since it was listed, archived or
encrypted with another key), the engine logs one error naming that failure and the endpoint it sent,
and interrupts itself; the items not read are ``skipped``/``INTERRUPTED`` ("the scan stopped
early"), as after Ctrl-C.

Failures: a batch is submitted with ``retries`` (task retries for exceptions) and, on a
``LocalCluster`` this engine starts, the scheduler gives up on a task after ``retries``
worker deaths (``distributed.scheduler.allowed-failures``; an external scheduler uses its
own setting). A batch that still fails is resubmitted one task per batch, so one item that
kills its worker (a native crash, the OOM killer) costs only itself: a single-task batch
that fails becomes ``error``/``WORKER_CRASHED`` with the failure's type name only, never its
text, which may quote content. ``scan_batch`` wraps any exception of its own in
:class:`BatchFailed` for the same reason, and :class:`TaskBatch` has a repr that names no
location, because Dask logs the arguments of a failed task.

``interrupt()`` stops pulling items, cancels the batches that have not started, reports
their items (and items pulled but not yet submitted) as ``skipped``/``INTERRUPTED``, and
yields the results of the batches already running as they complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import Any

try:
    import dask
    from distributed import Client, Future, LocalCluster, as_completed
except ImportError as exc:  # the runner turns this into a usage error
    raise ImportError("the Dask engine needs Dask: pip install 'panscan[dask]'") from exc

from panscan.engine import worker as worker_module
from panscan.engine.local import EngineError
from panscan.engine.ranges import RANGE_SIZE, SPLIT_THRESHOLD, check_sizes, merge_parts, split_item, task_bytes
from panscan.engine.worker import TaskResult, WorkerContext, prepare_process, scan_tasks
from panscan.model import Finding, Item, ItemResult, Reason, Status, Task
from panscan.sources import aws
from panscan.sources.aws import Endpoint

logger = logging.getLogger(__name__)

#: Test-only hook: :func:`scan_batch` raises (outside any task) for a batch holding an item
#: whose location contains this variable's value, so tests can pin permanent batch failures.
TEST_FAIL_ENV = "PANSCAN_TEST_FAIL_BATCH_ON"

# How often the coordinator looks at its interrupt flag while waiting for the cluster.
_POLL_SECONDS = 0.2
# How often the worker-thread count of an external cluster (which may scale, or lose its
# workers) is re-read to size the in-flight bound.
_RECOUNT_SECONDS = 10.0
# How long an external scheduler may be without workers (at the start, or later) before the
# scan gives up: its batches would wait there for ever.
_NO_WORKER_SECONDS = 60.0
# Batches failing one after another with no success between them, beyond the first
# round of every in-flight batch and its tasks one by one, mean the cluster cannot run
# panscan at all (not installed on the workers, a broken environment): stop.
_CONSECUTIVE_FAILURES = 32
#: The first remote items (S3, Glacier) returned by the workers that, all failed the same way,
#: stop the scan: the workers do not see what the coordinator listed (see the module docstring).
SAME_FAILURE_STOP = 8
#: Failures that say the workers cannot reach the source or may not read it (NoSuchBucket, an
#: unreachable endpoint, AccessDenied), as opposed to a fact about one object (deleted since it
#: was listed, archived, encrypted with another key): only those stop a scan.
_REACH_REASONS = frozenset({Reason.NOT_FOUND, Reason.PERMISSION_DENIED, Reason.READ_ERROR})


class BatchFailed(Exception):
    """:func:`scan_batch` failed outside any task. Carries the original exception's type
    name only: its text may quote content, and Dask logs and ships exceptions."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class TaskBatch:
    """The tasks of one :func:`scan_batch` call, the log level its worker uses, and the AWS
    endpoint and region its worker's clients use (the coordinator's)."""

    tasks: tuple[Task, ...]
    log_level: int = logging.WARNING
    endpoint: Endpoint = field(default_factory=Endpoint)

    def __repr__(self) -> str:
        # Dask logs the repr of a failed task's arguments: locations may hold card numbers.
        return f"TaskBatch({len(self.tasks)} tasks)"

    def __reduce__(self) -> tuple[Any, ...]:
        return _unpack_batch, (tuple(_pack_task(t) for t in self.tasks), self.log_level,
                               self.endpoint.url, self.endpoint.region)


class TaskResults(list[TaskResult]):
    """What :func:`scan_batch` returns: a list of ``TaskResult`` that pickles compactly.

    Its tasks do not travel back: the coordinator puts its own in again (:meth:`DaskEngine._finish`),
    so a result carries the very Item the coordinator handed out.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _unpack_results, ([_pack_result(r) for r in self],)


# Tasks and results cross the network as tuples, as they cross the local engine's pipes:
# pickling a frozen slotted dataclass goes through dataclasses' generic __getstate__, tens of
# microseconds each, which for small objects would be most of the coordinator's work.
_ITEM_FIELDS = tuple(f.name for f in fields(Item))
_Packed = tuple[Any, ...]


def _pack_task(task: Task) -> _Packed:
    return tuple(getattr(task.item, name) for name in _ITEM_FIELDS), task.start, task.end


def _unpack_task(packed: _Packed) -> Task:
    values, start, end = packed
    return Task(Item(*values), start, end)


def _unpack_batch(packed: tuple[_Packed, ...], log_level: int, url: str | None = None,
                  region: str | None = None) -> TaskBatch:
    return TaskBatch(tuple(_unpack_task(p) for p in packed), log_level, Endpoint(url, region))


# The placeholder task of a result unpickled on the coordinator, until _finish puts the
# coordinator's own task in.
_NO_TASK = Task(Item("", ""))


def _pack_result(r: TaskResult) -> _Packed:
    res = r.result
    return (res.status.value, res.reason.value if res.reason else None, res.detail,
            res.bytes_scanned, res.findings, r.newlines_owned, r.whole_item)


def _unpack_results(packed: list[_Packed]) -> TaskResults:
    out = TaskResults()
    for status, reason, detail, bytes_scanned, findings, newlines, whole in packed:
        result = ItemResult(_NO_TASK.item, Status(status), Reason(reason) if reason else None, detail,
                            bytes_scanned, findings)
        out.append(TaskResult(_NO_TASK, result, newlines, whole))
    return out


def _with_task(task: Task, r: TaskResult) -> TaskResult:
    return TaskResult(task, replace(r.result, item=task.item), r.newlines_owned, r.whole_item)


# ------------------------------------------------------------------------------------------
# The worker side: runs in Dask worker processes.

_prepared = False
_prepare_lock = threading.Lock()


def scan_batch(batch: TaskBatch, ctx: WorkerContext) -> list[TaskResult]:
    """Scan the tasks of ``batch`` with ``worker.scan_tasks``; masked results, in task order.

    The first call in a worker process runs ``worker.prepare_process`` (no core dumps, the
    pattern set loaded). AWS clients use the batch's endpoint and region (``aws.using``);
    a credentials failure's detail says it was this worker's credentials. A failure outside
    the tasks raises :class:`BatchFailed`.
    """
    try:
        _prepare(batch.log_level)
        _test_fail_hook(batch)
    except Exception as exc:
        raise BatchFailed(type(exc).__name__) from None
    # A worker process outlives scans: a refusal of its credentials in an earlier batch (the
    # worker module then skips remote reads for the rest of the process) must not turn every
    # later scan's items into "not read" once the credentials are renewed.
    worker_module._refused.clear()
    results = TaskResults()
    with aws.using(batch.endpoint):
        results.extend(_worker_credentials(r) for r in scan_tasks(batch.tasks, ctx))
    return results


def _worker_credentials(r: TaskResult) -> TaskResult:
    """``r`` with a credentials failure's detail saying the credentials were this worker's."""
    detail = r.result.detail
    if r.result.reason is not Reason.PERMISSION_DENIED or not detail:
        return r
    worded = aws.on_dask_worker(detail)
    return r if worded == detail else replace(r, result=replace(r.result, detail=worded))


def _prepare(log_level: int) -> None:
    global _prepared
    with _prepare_lock:  # a worker may run several threads
        if not _prepared:
            prepare_process()
            _prepared = True
    # The coordinator's level: records below it would be forwarded only to be dropped.
    logging.getLogger("panscan").setLevel(log_level)


def _test_fail_hook(batch: TaskBatch) -> None:
    needle = os.environ.get(TEST_FAIL_ENV)
    for task in batch.tasks:
        if needle and needle in task.item.location:
            # The text quotes the location on purpose: tests check that it goes nowhere.
            raise RuntimeError(f"injected batch failure at {task.item.location}")


def dask_setup(worker: Any) -> None:
    """Preload hook of the workers of the engine's own ``LocalCluster`` (``--preload
    panscan.engine.dask`` on other clusters): Ctrl-C in the terminal reaches the whole
    process group, and the coordinator, not each worker, decides what it means (as the
    local engine's workers ignore it). The per-process preparation, and the import of the
    S3 reader (boto3: a few tenths of a second), are done here too, while the cluster starts,
    rather than in the first batch."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: the signal stays as it was
        pass
    _prepare(logging.getLogger("panscan").getEffectiveLevel())
    import panscan.sources.s3  # noqa: F401


# ------------------------------------------------------------------------------------------
# The coordinator side.


@dataclass
class _Pending:
    item: Item
    parts: int
    done: dict[int, TaskResult] = field(default_factory=dict)  # part index -> result


class DaskEngine:
    """Runs ``worker.scan_task`` over items, in batches, on a Dask cluster.

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``, ``tls://...``;
    TLS settings come from Dask's configuration, ``distributed.comm.tls``); ``None`` starts
    a ``LocalCluster`` of ``workers`` processes (default: one per CPU) of one thread each on
    loopback, closed with the engine. ``endpoint``: the AWS endpoint and region sent to the
    workers with each batch (default: this process's, ``aws.Endpoint.of_this_process``, read
    when the engine is made). Use as a context manager (or :meth:`start` and :meth:`close`);
    :meth:`run` has the contract of ``LocalEngine.run``.
    """

    def __init__(self, ctx: WorkerContext, scheduler: str | None = None, *, workers: int | None = None,
                 split_threshold: int = SPLIT_THRESHOLD, range_size: int = RANGE_SIZE,
                 batch_bytes: int = 64 * 2**20, batch_items: int = 256, max_in_flight: int | None = None,
                 retries: int = 2, endpoint: Endpoint | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        check_sizes(split_threshold, range_size)
        if batch_bytes < 1 or batch_items < 1 or (max_in_flight is not None and max_in_flight < 1):
            raise ValueError("batch_bytes, batch_items and max_in_flight must be at least 1")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self._ctx = ctx
        # Read now, inside the runner's --endpoint-url/--region block: what this process lists
        # from is where the workers must read.
        self._endpoint = endpoint if endpoint is not None else Endpoint.of_this_process()
        self._scheduler = scheduler
        self._n = workers or os.cpu_count() or 1
        self._split_threshold = split_threshold
        self._range_size = range_size
        self._batch_bytes = batch_bytes
        self._batch_items = batch_items
        self._max_in_flight = max_in_flight
        self._retries = retries
        self._cluster: Any = None
        self._client: Client | None = None
        self._counted_at = 0.0
        self._workerless_since: float | None = None
        self._log_level = logging.WARNING
        self._interrupted = False
        # Task bookkeeping (see run()).
        self._tasks: dict[int, tuple[int, int, Task]] = {}  # task id -> (item id, part, task)
        self._pending: dict[int, _Pending] = {}
        self._todo: deque[int] = deque()  # tasks of pulled items not yet in a batch
        self._ready: deque[list[int]] = deque()  # batches formed but not yet submitted
        self._in_flight: dict[Future[list[TaskResult]], list[int]] = {}
        self._next_id = 0
        self._exhausted = False
        self._stopped = False
        self._failures = 0
        self._first = _SameFailure()
        self._stop_detail = "the scan was interrupted"

    @property
    def workers(self) -> int:
        """Worker processes of the own ``LocalCluster``; worker threads of an external
        cluster (as last counted)."""
        return self._n

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        """Stop soon (see the module docstring). Only sets a flag: safe to call from a
        signal handler."""
        self._interrupted = True

    # ----------------------------------------------------------------------------------------
    # Cluster lifetime.

    def __enter__(self) -> DaskEngine:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start the ``LocalCluster``, or connect to the scheduler; raises
        :class:`EngineError` when the scheduler cannot be reached or has no worker."""
        if self._client is not None:
            return
        self._log_level = logging.getLogger("panscan").getEffectiveLevel()
        if self._scheduler is None:
            self._client = self._start_local_cluster()
        else:
            self._client = self._connect(self._scheduler)
        # Worker log records (masked like every panscan log line) reach this process's
        # handlers, as the local engine's do through multiprocessing-logging.
        self._client.forward_logging("panscan", level=self._log_level)

    def _start_local_cluster(self) -> Client:
        config = {
            # A batch that kills its worker this many times more is given up (KilledWorker):
            # a worker death counts as a retry. Read by the scheduler, which runs here.
            "distributed.scheduler.allowed-failures": self._retries,
            # One batch per worker thread, none queued behind it: a worker's death then
            # counts against the batch it was running only, not against innocent ones
            # waiting there (batches take long enough that the missing prefetch is noise).
            "distributed.scheduler.worker-saturation": 1.0,
            # Results are masked, but nothing of a scan belongs in a worker's scratch space.
            "distributed.worker.memory.target": False,
            "distributed.worker.memory.spill": False,
        }
        with dask.config.set(config):
            self._cluster = LocalCluster(n_workers=self._n, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address=None, preload=[__name__])
        return Client(self._cluster, set_as_default=False)

    def _connect(self, address: str) -> Client:
        try:
            client = Client(address, set_as_default=False)
        except (OSError, TimeoutError, TypeError, ValueError) as exc:
            # TypeError: distributed's complaint about a tls:// address without TLS settings.
            hint = " (for tls:// set distributed.comm.tls: ca-file, client.cert, client.key)" \
                if address.startswith("tls://") else ""
            raise EngineError(f"cannot connect to the Dask scheduler at {address} "
                              f"({type(exc).__name__}){hint}") from None
        try:
            if not self._count_workers(client):
                logger.info("waiting up to %.0f s for a Dask worker to join %s", _NO_WORKER_SECONDS, address)
                client.wait_for_workers(1, timeout=_NO_WORKER_SECONDS)
                self._count_workers(client)
        except (OSError, TimeoutError) as exc:
            client.close()
            raise EngineError(f"no Dask worker joined the scheduler at {address} ({type(exc).__name__})") from None
        return client

    def _count_workers(self, client: Client) -> int:
        threads = int(sum(client.nthreads().values()))
        now = time.monotonic()
        self._n = max(1, threads)
        self._counted_at = now
        if threads:
            self._workerless_since = None
        elif self._workerless_since is None:
            self._workerless_since = now
        return threads

    def close(self) -> None:
        """Disconnect, and stop the ``LocalCluster`` if this engine started one."""
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        # Best effort throughout: close() also runs while an error (a lost scheduler, say)
        # propagates, and must not replace it with its own.
        if client is not None:
            if self._scheduler is not None:
                with contextlib.suppress(Exception):  # a shared cluster keeps plugins: take ours back
                    client.unforward_logging("panscan")
            with contextlib.suppress(Exception):
                client.close()
        if cluster is not None:
            cluster.close()

    # ----------------------------------------------------------------------------------------
    # Scanning.

    def run(self, items: Iterable[Item | ItemResult | None],
            on_findings: Callable[[Item, tuple[Finding, ...]], None] | None = None) -> Iterator[ItemResult]:
        """Scan ``items``; yield one result per item as it completes.

        ``on_findings`` is accepted for the engines' common interface and not called: a
        batch's results come back whole, each with all of its item's findings.

        After :meth:`interrupt`, no more items are pulled from ``items``; items in batches
        that had not started are reported as ``skipped``/``INTERRUPTED`` (with whatever
        parts of them had finished), and running batches are waited for.
        """
        client = self._client
        if client is None:
            raise RuntimeError("DaskEngine.run() before start()")
        source = iter(items)
        self._exhausted = self._stopped = False
        completed = as_completed(loop=client.loop, with_results=True, raise_errors=False)
        try:
            while True:
                self._watch_workers(client)
                if not self._interrupted:
                    yield from self._fill(source, client, completed)
                elif not self._stopped:
                    yield from self._stop(client)
                if not self._in_flight:
                    if self._interrupted or (self._exhausted and not self._todo and not self._ready):
                        return
                    continue
                for future, outcome in self._next_done(completed):
                    yield from self._finish(future, outcome)
        finally:
            # Left early (the consumer stopped, a second Ctrl-C, an error): the cluster drops
            # the rest. Best effort: the connection may be what failed.
            if self._in_flight and self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.cancel(list(self._in_flight))
            for pending in (self._in_flight, self._ready, self._todo, self._tasks, self._pending):
                pending.clear()  # empty already unless run() was left early

    def _bound(self) -> int:
        return self._max_in_flight if self._max_in_flight is not None else 2 * self._n

    def _watch_workers(self, client: Client) -> None:
        """Re-count an external cluster's worker threads now and then (it may have scaled);
        raise :class:`EngineError` when it has had none for ``_NO_WORKER_SECONDS``. The
        nannies of the own ``LocalCluster`` replace its workers themselves."""
        if self._scheduler is None or time.monotonic() - self._counted_at < _RECOUNT_SECONDS:
            return
        try:
            self._count_workers(client)
        except (OSError, TimeoutError):
            return  # the scheduler is unreachable: the batches' fate will tell
        since = self._workerless_since
        if since is not None and time.monotonic() - since > _NO_WORKER_SECONDS:
            raise EngineError(f"the Dask scheduler has had no worker for {_NO_WORKER_SECONDS:.0f} s")

    def _fill(self, source: Iterator[Item | ItemResult | None], client: Client,
              completed: as_completed) -> Iterator[ItemResult]:
        """Submit batches up to the in-flight bound, pulling items only as they are needed."""
        while len(self._in_flight) < self._bound():
            if self._ready:
                ids = self._ready.popleft()
            else:
                ids = yield from self._take(source)
                if not ids:
                    return
            if self._interrupted:  # set while a pass-through result was being consumed
                self._ready.appendleft(ids)
                return
            batch = TaskBatch(tuple(self._tasks[i][2] for i in ids), self._log_level, self._endpoint)
            future = client.submit(scan_batch, batch, self._ctx, retries=self._retries, pure=False)
            self._in_flight[future] = ids
            completed.add(future)

    def _take(self, source: Iterator[Item | ItemResult | None]) -> Generator[ItemResult, None, list[int]]:
        """The task ids of the next batch, pulling items (and yielding pass-through results)
        only while the batch has room; empty when the source is done."""
        ids: list[int] = []
        nbytes = 0
        while True:
            if not self._todo:
                if self._exhausted or self._interrupted:
                    break
                try:
                    nxt = next(source)
                except StopIteration:
                    self._exhausted = True
                    break
                if nxt is None:
                    break  # the source is waiting for an answer: send what there is
                if isinstance(nxt, ItemResult):
                    yield nxt
                    continue
                self._add_item(nxt)
            size = task_bytes(self._tasks[self._todo[0]][2])
            if ids and nbytes + size > self._batch_bytes:
                break  # the task waits for the next batch: the "+1" of the bound
            ids.append(self._todo.popleft())
            nbytes += size
            if len(ids) >= self._batch_items or nbytes >= self._batch_bytes:
                break
        if self._exhausted and not self._todo and len(ids) > 1:
            # The last tasks of the scan: spread over the free slots rather than one worker
            # (a short scan would otherwise run as a single batch on a single worker).
            parts = min(len(ids), max(1, self._bound() - len(self._in_flight)))
            chunks = [ids[i::parts] for i in range(parts)]
            ids = chunks[0]
            self._ready.extend(chunks[1:])
        return ids

    def _add_item(self, item: Item) -> None:
        item_id = self._new_id()
        tasks = split_item(item, self._split_threshold, self._range_size)
        self._pending[item_id] = _Pending(item, len(tasks))
        for part, task in enumerate(tasks):
            task_id = self._new_id()
            self._tasks[task_id] = (item_id, part, task)
            self._todo.append(task_id)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _next_done(self, completed: as_completed) -> list[tuple[Future[list[TaskResult]], Any]]:
        """The batches finished by now, waiting up to ``_POLL_SECONDS`` for one."""
        # Checked under the condition as_completed notifies after queueing a result, so a
        # completion between the check and the wait is not missed.
        with completed.thread_condition:
            if not completed.has_ready():
                completed.thread_condition.wait(_POLL_SECONDS)
        if not completed.has_ready():
            return []
        done: list[tuple[Future[list[TaskResult]], Any]] = completed.next_batch(block=False)
        return done

    def _finish(self, future: Future[list[TaskResult]], outcome: Any) -> Iterator[ItemResult]:
        ids = self._in_flight.pop(future, None)
        if ids is None:
            return  # cancelled by _stop; its items are reported already
        if future.status == "finished":
            self._failures = 0
            for task_id, result in zip(ids, outcome, strict=True):
                for merged in self._record(task_id, _with_task(self._tasks[task_id][2], result)):
                    self._watch_first(merged)
                    yield merged
            return
        kind = _failure_kind(outcome)
        if self._interrupted:
            # After Ctrl-C a failure is no item's fault (a worker may have been stopped).
            for task_id in ids:
                yield from self._record(task_id, _interrupted(self._tasks[task_id][2], self._stop_detail))
            return
        if future.status == "cancelled":
            # Nothing but this engine cancels its batches, and it forgets those first: the
            # scheduler lost them (the connection dropped, the scheduler restarted).
            raise EngineError("the Dask scheduler dropped this scan's batches (connection lost?)")
        self._failures += 1
        if self._failures > _CONSECUTIVE_FAILURES + 2 * self._bound():
            raise EngineError(f"batches keep failing on the cluster ({kind}); is panscan installed on every worker?")
        if len(ids) > 1:
            logger.warning("a batch of %d tasks failed on the cluster (%s); retrying its tasks one at a time",
                           len(ids), kind)
            self._ready.extend([task_id] for task_id in ids)
            return
        logger.error("a task failed on the cluster (%s); its item is reported as %s", kind, Reason.WORKER_CRASHED)
        task = self._tasks[ids[0]][2]
        result = ItemResult(task.item, Status.ERROR, Reason.WORKER_CRASHED, f"the batch failed on the cluster ({kind})")
        yield from self._record(ids[0], TaskResult(task, result))

    def _stop(self, client: Client) -> Iterator[ItemResult]:
        """After an interrupt: cancel the batches not yet running and report their items."""
        self._stopped = True
        try:
            running = {key for keys in client.processing().values() for key in keys}
        except (OSError, TimeoutError):
            running = set()
        waiting = [f for f in self._in_flight if f.key not in running]
        if waiting:
            client.cancel(waiting)
        unsent = [self._in_flight.pop(f) for f in waiting] + list(self._ready) + [list(self._todo)]
        self._ready.clear()
        self._todo.clear()
        for ids in unsent:
            for task_id in ids:
                yield from self._record(task_id, _interrupted(self._tasks[task_id][2], self._stop_detail))

    def _watch_first(self, result: ItemResult) -> None:
        """Stop early when the first remote items the workers returned all failed alike."""
        if self._interrupted or not self._first.add(result):
            return
        failure = f"{result.reason}: {result.detail}" if result.detail else str(result.reason)
        sent = ", ".join(f"{name} {value}" for name, value in (("endpoint", self._endpoint.url),
                                                              ("region", self._endpoint.region)) if value)
        where = (f"the workers were sent {sent}" if sent
                 else "the workers use the endpoint and region of their own environment")
        logger.error("the first %d items read on the Dask workers all failed the same way (%s): the scan stopped "
                     "early; the workers do not reach what this coordinator listed (%s): check the endpoint, "
                     "region and account they use, then run the scan again", self._first.seen, failure, where)
        self._stop_detail = f"not read: the scan stopped early (the first items failed with {result.reason})"
        self.interrupt()

    def _record(self, task_id: int, result: TaskResult) -> Iterator[ItemResult]:
        item_id, part, _ = self._tasks.pop(task_id)
        pending = self._pending[item_id]
        pending.done[part] = result
        if len(pending.done) == pending.parts:
            del self._pending[item_id]
            yield merge_parts([pending.done[i] for i in range(pending.parts)])


@dataclass
class _SameFailure:
    """The first remote results of a scan, while they all failed the same way."""

    seen: int = 0
    failure: tuple[Reason | None, str | None] | None = None
    over: bool = False  # a result that differs was seen, or the scan was stopped: no more watching

    def add(self, result: ItemResult) -> bool:
        """Count ``result``; True once, when the first :data:`SAME_FAILURE_STOP` were alike."""
        if self.over or result.item.source == "file":
            return False  # a local file failing says nothing about the workers' AWS settings
        key = (result.reason, result.detail)
        if (result.status is not Status.ERROR or result.reason not in _REACH_REASONS
                or (self.failure is not None and key != self.failure)):
            self.over = True
            return False
        self.failure = key
        self.seen += 1
        self.over = self.seen >= SAME_FAILURE_STOP
        return self.over


def _interrupted(task: Task, detail: str = "the scan was interrupted") -> TaskResult:
    return TaskResult(task, ItemResult(task.item, Status.SKIPPED, Reason.INTERRUPTED, detail))


def _failure_kind(outcome: Any) -> str:
    """The type name of a failed batch's exception (as_completed gives ``(type, exc, tb)``
    for an error, the exception itself for a cancellation)."""
    exc = outcome[1] if isinstance(outcome, tuple) and len(outcome) == 3 else outcome
    if isinstance(exc, BatchFailed):
        return exc.kind
    return type(exc).__name__
