"""Standard input as a target: ``panscan scan -`` reads it, as grep and ripgrep do.

What callers may rely on:

* The item is :data:`STDIN_TARGET` (``-``) with source ``stdin``: one item, never split into
  ranges, never "unchanged since a sweep" (it has no identity to compare), never judged for
  retention (it has no age). Its ``size`` is known when stdin is a redirected regular file.
* The coordinator scans it itself with the worker's own code (:func:`engine.worker.scan_task`):
  forked workers do not inherit stdin (multiprocessing points theirs at ``/dev/null``) and a
  Dask worker runs on another machine. Every guarantee of a worker holds: findings leave
  masked, the item gets an item record with its status and reason, PAN-dense input is
  reported in batches, and the process gets no core dumps.
* Pipes (read forward, containers spooled in memory within the limits) and redirected files
  (read in place, seeking like any local file) both work. Stdin is read through a duplicate
  of descriptor 0, so the scan never closes the process's own stdin.
* Interruption (Ctrl-C, SIGTERM, the scan stopped for another reason): once ``stop()`` turns
  true, the next read, or the one waiting for a writer (within 0.2 s), ends the input; what
  was read is matched, and the item is ``partial`` (``skipped`` when nothing was read) with
  reason ``INTERRUPTED``. A second Ctrl-C ends it at once.
"""

from __future__ import annotations

import io
import os
import select
import stat
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from panscan.engine.worker import WorkerContext, prepare_process, scan_task
from panscan.model import Finding, Item, ItemResult, Reason, Status, Task

STDIN_TARGET = "-"
SOURCE = "stdin"
_INTERRUPTED = "the scan was interrupted"


#: How often a read waiting for a silent writer looks whether the scan was asked to stop.
_POLL_SECONDS = 0.2


class _Stdin(io.FileIO):
    """A duplicate of descriptor 0 that reads as ended once the scan is asked to stop, also
    while it waits for a writer (SIGTERM or one Ctrl-C must end ``sleep 1d | panscan scan -``).
    Ending rather than failing lets the bytes already read be matched; ``stopped`` says the
    end was not the input's."""

    def __init__(self, fd: int, stop: Callable[[], bool]) -> None:
        super().__init__(fd, "rb", closefd=True)
        self._stop = stop
        self.stopped = False

    def _may_read(self) -> bool:
        while not self._stop():
            try:
                ready, _, _ = select.select([self], [], [], _POLL_SECONDS)
            except (OSError, ValueError):  # not pollable: the read itself will say
                return True
            if ready:
                return True
        self.stopped = True
        return False

    def read(self, size: int | None = -1) -> bytes:
        return (super().read(size) or b"") if self._may_read() else b""

    def readinto(self, buffer: Any) -> int:
        return (super().readinto(buffer) or 0) if self._may_read() else 0


def stdin_item() -> Item:
    """The item standing for standard input."""
    try:
        st = os.fstat(0)
    except OSError:
        return Item(STDIN_TARGET, SOURCE)
    return Item(STDIN_TARGET, SOURCE, size=st.st_size if stat.S_ISREG(st.st_mode) else None)


def scan_stdin(ctx: WorkerContext, stop: Callable[[], bool],
               on_findings: Callable[[Item, tuple[Finding, ...]], None]) -> ItemResult:
    """Scan standard input in this process; findings are handed to ``on_findings`` in
    batches as they are made (masked), the result holds the rest and counts the others."""
    item = stdin_item()
    try:
        fd = os.dup(0)
    except OSError as exc:
        return ItemResult(item, Status.ERROR, Reason.READ_ERROR, f"standard input cannot be read: {exc.strerror}")
    reader = _Stdin(fd, stop)
    prepare_process()  # full numbers are about to exist in this process's memory: no core dumps
    streamed = 0

    def emit(batch: tuple[Finding, ...], bytes_read: int) -> None:
        nonlocal streamed
        streamed += len(batch)
        on_findings(item, batch)

    try:
        result = scan_task(Task(item), ctx, emit, opener=lambda _: reader).result
    except KeyboardInterrupt:  # a second Ctrl-C while a read waited for the writer
        return ItemResult(item, Status.PARTIAL if streamed else Status.SKIPPED, Reason.INTERRUPTED,
                          _INTERRUPTED, earlier_findings=streamed)
    finally:
        reader.close()  # scan_task closes what it opened; this covers an early failure
    if reader.stopped:  # whatever the parsers made of the early end, this is why it ended
        result = replace(result, status=Status.PARTIAL if result.bytes_scanned or streamed else Status.SKIPPED,
                         reason=Reason.INTERRUPTED, detail=_INTERRUPTED)
    return replace(result, earlier_findings=streamed) if streamed else result
