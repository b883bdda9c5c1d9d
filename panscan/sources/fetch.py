"""Remote items fetched ahead of the matcher: many requests in flight per worker process.

A worker's batch holds many small remote items. Read one after another, each costs a request
round trip during which the worker does nothing; on S3 from EC2 that is tens of milliseconds
for a few kilobytes. :class:`Prefetch` fetches the bodies of the batch's small S3 objects in
a pool of threads, in task order, ahead of the matcher, so that while one object is matched
the next ones are already arriving.

What callers may rely on:

* Only whole-object tasks of S3 items whose listed size is at most :data:`PREFETCH_MAX` are
  fetched ahead (``eligible``); a byte-range task, a large object or an item of another
  source is opened by its reader when its turn comes, as before.
* What a prefetched task gets is what ``sources.s3.open_s3`` would have given it, opened and
  read in the fetching thread (:meth:`sources.s3.S3Object.load`): the same ``SourceError``
  on open, the same :class:`~sources.s3.S3Object` whose reads then send no request, and the
  same read failure (raised at the same offset), ETag mismatch and ``read_failure`` account
  afterwards, and the same metadata of the GetObject response (``sources.s3.object_metadata``),
  kept with the body. With ``tags``, the version's tags are asked for in the fetching thread
  too (one GetObjectTagging each), so that request overlaps the matcher as well. Bodies stay
  in this process's memory, never on disk.
* Memory is bounded: the bodies fetched and not yet matched total at most
  :data:`BYTES_IN_FLIGHT` (one object is always allowed), and at most :data:`MAX_AHEAD` of
  them are held.
* Requests in flight are bounded per bucket by an :class:`AdaptiveLimit` shared by every
  batch of the process: it starts at :data:`START_CONCURRENCY`, halves when S3 answers a
  throttling error (503 SlowDown) and grows by one after each window of requests that
  completed without one, up to :data:`MAX_CONCURRENCY`. botocore's own retries still retry
  the throttled request itself.
* Log records name the bucket masked and never hold content.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from panscan.findings.mask import mask_text
from panscan.model import Item, Reason, Task
from panscan.sources.files import SourceError

logger = logging.getLogger(__name__)

#: Objects up to this size are fetched whole ahead of the matcher; larger ones are streamed
#: when their turn comes (and above the engine's split threshold, read in ranges).
PREFETCH_MAX = 8 * 2**20
#: Bytes of fetched, not yet matched bodies one batch may hold.
BYTES_IN_FLIGHT = 48 * 2**20
#: Fetched, not yet matched bodies one batch may hold, whatever their size.
MAX_AHEAD = 256
#: Requests in flight per bucket and process, at most, and at first. ``sources.aws``'s
#: connection pool covers the maximum.
MAX_CONCURRENCY = 32
START_CONCURRENCY = 16
#: Error codes with which AWS asks a client to slow down (botocore's own list for S3's).
THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
                            "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
                            "RequestLimitExceeded", "BandwidthLimitExceeded"})


class AdaptiveLimit:
    """How many requests to one bucket may be in flight at once: additive increase,
    multiplicative decrease, as TCP does with its window.

    :meth:`acquire` blocks until a slot is free and serves waiters first come, first served
    (so objects arrive near task order). A throttled request halves the limit, once per
    generation: requests started before the last decrease were sent under the old limit and
    their throttling says nothing new. A window of ``limit`` requests sent under the current
    limit and completed without one raises the limit by one.
    """

    def __init__(self, name: str, start: int = START_CONCURRENCY, ceiling: int = MAX_CONCURRENCY) -> None:
        self.name = name
        self.limit = start
        self.ceiling = ceiling
        self.in_flight = 0
        self.generation = 0
        self.throttles = 0
        self.decreases = 0
        self.lowest = start
        self.highest_in_flight = 0
        self._clean = 0
        self._tickets = 0
        self._serving = 0
        self._cond = threading.Condition()

    def acquire(self) -> int:
        """Wait for a slot; returns the generation the request starts in."""
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            self._cond.wait_for(lambda: ticket == self._serving and self.in_flight < self.limit)
            self._serving += 1
            self.in_flight += 1
            self.highest_in_flight = max(self.highest_in_flight, self.in_flight)
            self._cond.notify_all()
            return self.generation

    def release(self, generation: int, throttled: bool) -> None:
        """A request started in ``generation`` is finished; ``throttled``: it was answered
        with a throttling error at least once."""
        with self._cond:
            self.in_flight -= 1
            # Only requests sent under the current limit say whether it is safe to raise.
            if not throttled and generation == self.generation:
                self._clean += 1
                if self._clean >= self.limit and self.limit < self.ceiling:
                    self.limit += 1
                    self._clean = 0
            self._cond.notify_all()

    def throttled(self, generation: int) -> None:
        """A request started in ``generation`` was answered with a throttling error."""
        with self._cond:
            self.throttles += 1
            if generation != self.generation:
                return
            before = self.limit
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self.generation += 1
            self.decreases += 1
            self._clean = 0
        logger.debug("S3 bucket %s asked to slow down: reads in flight at most %d (was %d)",
                     mask_text(self.name), self.limit, before)


class _Slot(threading.local):
    """The request a fetching thread is making: where botocore's retry hook reports a
    throttling answer."""

    limit: AdaptiveLimit | None = None
    generation = 0
    throttled = False


_slot = _Slot()


def _on_attempt(response: Any = None, **_: Any) -> None:
    """botocore ``needs-retry`` hook, called after every attempt of every request of the
    client; it only watches (returns None), botocore's retry handler decides."""
    limit = _slot.limit
    if limit is None or response is None:
        return
    http, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code")
    if code in THROTTLE_CODES or getattr(http, "status_code", None) == 503:
        _slot.throttled = True
        limit.throttled(_slot.generation)


class _Process:
    """Per-process state: built in the process that uses it, never inherited through fork
    (a pool's threads do not survive it)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.pool = ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix="panscan-fetch")
        self.limits: dict[str, AdaptiveLimit] = {}
        self.hooked: set[int] = set()
        self.refused = False  # AWS refused this process's credentials: no more requests


_process: _Process | None = None
_process_lock = threading.Lock()


def _here() -> _Process:
    global _process
    with _process_lock:
        if _process is None or _process.pid != os.getpid():
            _process = _Process()
        return _process


def bucket_limit(bucket: str) -> AdaptiveLimit:
    """This process's limit for ``bucket`` (made on first use)."""
    here = _here()
    with _process_lock:
        found = here.limits.get(bucket)
        if found is None:
            found = here.limits[bucket] = AdaptiveLimit(bucket)
        return found


def eligible(task: Task) -> bool:
    """Whether ``task`` is fetched ahead (see the module docstring)."""
    item = task.item
    return (item.source == "s3" and not task.is_range and item.size is not None
            and item.size <= PREFETCH_MAX)


def _fetch(item: Item, tags: bool = False) -> BinaryIO:
    """``item`` opened and read whole (with ``tags``, its tags asked for too), in a fetching
    thread, within its bucket's limit."""
    from panscan.sources import aws
    from panscan.sources.s3 import S3Object, open_s3, split_location

    here = _here()
    s3 = aws.client("s3")
    if id(s3) not in here.hooked:
        # register_first: botocore stops at the first handler that answers, and its retry
        # handler answers whenever it retries.
        s3.meta.events.register_first("needs-retry.s3", _on_attempt, unique_id="panscan-fetch-throttle")
        here.hooked.add(id(s3))
    limit = bucket_limit(split_location(item.location)[0])
    generation = limit.acquire()
    _slot.limit, _slot.generation, _slot.throttled = limit, generation, False
    try:
        if here.refused:
            # A refused request fails at once, so a pool would otherwise send the whole batch
            # in the time the matcher takes to reach the first refusal.
            raise SourceError(Reason.INTERRUPTED, "not read: AWS refused the scan's credentials")
        try:
            f = open_s3(item)
        except SourceError as exc:
            if exc.reason is Reason.PERMISSION_DENIED and aws.is_credentials_detail(exc.detail):
                here.refused = True
            raise
        if isinstance(f, S3Object):
            f.load()
            if tags:
                f.load_tags()
        return f
    finally:
        throttled = _slot.throttled
        _slot.limit = None
        limit.release(generation, throttled)


def _discard(future: Future[BinaryIO]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class Prefetch:
    """The eligible tasks of a batch fetched ahead, in task order (see the module docstring).

    For each task in turn, :meth:`opener` gives the reader to open it with (None: open it
    as usual), then :meth:`done` frees what it held and lets later tasks be fetched. Use as
    a context manager: leaving it drops whatever was fetched and not taken. With ``tags``,
    each object's tags are fetched with it.
    """

    def __init__(self, tasks: Sequence[Task], budget: int = BYTES_IN_FLIGHT, ahead: int = MAX_AHEAD, *,
                 tags: bool = False) -> None:
        self._tasks = tasks
        self._tags = tags
        self._budget = budget
        self._ahead = ahead
        self._futures: dict[int, Future[BinaryIO]] = {}
        self._cost: dict[int, int] = {}
        self._held = 0
        self._next = 0
        self._top_up()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _top_up(self) -> None:
        while self._next < len(self._tasks) and len(self._futures) < self._ahead:
            task = self._tasks[self._next]
            if eligible(task):
                cost = task.item.size or 0
                if self._futures and self._held + cost > self._budget:
                    return
                self._futures[self._next] = _here().pool.submit(_fetch, task.item, self._tags)
                self._cost[self._next] = cost
                self._held += cost
            self._next += 1

    def opener(self, index: int) -> Callable[[Item], BinaryIO] | None:
        """How to open the task at ``index``: its fetched body (or the failure met fetching
        it, raised as the reader would have raised it), or None when it was not fetched."""
        future = self._futures.get(index)
        if future is None:
            return None

        def opened(item: Item) -> BinaryIO:
            return future.result()

        return opened

    def done(self, index: int) -> None:
        """The task at ``index`` is finished: its body (closed by its reader) no longer
        counts, and later tasks may be fetched."""
        future = self._futures.pop(index, None)
        if future is not None:
            self._held -= self._cost.pop(index)
            # Closed by its reader when it was opened; a task that never opened it (a bug
            # cut it short) must not keep its connection.
            future.add_done_callback(_discard)
        self._top_up()

    def close(self) -> None:
        for future in self._futures.values():
            if not future.cancel():
                future.add_done_callback(_discard)
        self._futures.clear()
        self._cost.clear()
        self._held = 0
        self._next = len(self._tasks)
