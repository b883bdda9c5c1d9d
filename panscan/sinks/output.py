"""Where a report goes: a file opened without touching what is already there, behind a stream
that turns a failed write into a recorded failure.

What callers may rely on:

* :func:`open_report_file` creates a missing file with mode 0600 (even a masked report is
  sensitive; the umask can only narrow it). An existing path (a file, a FIFO, a device such
  as ``/dev/null``) is opened as it is: its mode and owner are never changed, so running as
  root with ``-o /dev/null`` cannot lock other users out of it. A regular file is truncated.
  The last component is never followed when it is a symbolic link (a link planted where a
  report is written must not redirect it).
* :class:`ReportStream` never raises from ``write``/``flush``/``close``: the first failure
  (a full disk, ``/dev/full``, a closed pipe, an I/O error reported at close) is kept in
  :attr:`ReportStream.failure` as one line naming the report and the OS reason, and every
  later write is dropped (what follows a lost write could only be a report with a hole).
  The caller decides what a failure means for the run.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import TextIO

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)  # -o /dev/ttyN must not become our controlling terminal
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC | _O_NOCTTY
_EXISTING = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | _O_CLOEXEC | _O_NOCTTY


class ReportStream(io.TextIOBase, TextIO):
    """A text stream for a report that records its first failure instead of raising.

    ``name`` is where the report goes (a path, or ``standard output``); ``label`` what the
    failure calls it (default ``the report to NAME``); ``owned`` streams are closed by
    :meth:`close`, others (stdout, a file someone else closes) are only flushed.
    """

    def __init__(self, inner: TextIO, name: str, *, owned: bool = False, label: str | None = None) -> None:
        super().__init__()
        self._inner = inner
        self.report_name = name
        self._label = label or f"the report to {name}"
        self._owned = owned
        self.failure: str | None = None
        self._taken = False
        # The exit status the report states, set by its writer once known: what a failure to
        # write it turns into is the caller's rule, and a 1 (card data found) must survive it.
        self.exit_status: int | None = None

    def _fail(self, exc: OSError) -> None:
        if self.failure is None:
            reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
            self.failure = f"cannot write {self._label}: {reason}"

    def write(self, s: str) -> int:
        if self.failure is None:
            try:
                self._inner.write(s)
            except OSError as exc:
                self._fail(exc)
        return len(s)

    def flush(self) -> None:
        if self.failure is None and not self._inner.closed:
            try:
                self._inner.flush()
            except OSError as exc:
                self._fail(exc)

    def isatty(self) -> bool:
        try:
            return self._inner.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """Flush (and close when owned); idempotent. A failure is recorded, never raised."""
        if self.closed:
            return
        self.flush()
        if self._owned:
            try:
                self._inner.close()  # closes even when its last flush fails (then raises)
            except OSError as exc:
                self._fail(exc)
        super().close()

    def take_failure(self) -> str | None:
        """The failure, if any, marked as handled by the caller (see :meth:`unhandled`)."""
        self._taken = True
        return self.failure

    @property
    def unhandled(self) -> str | None:
        """The failure when no caller has taken it with :meth:`take_failure`."""
        return None if self._taken else self.failure


def open_report_file(path: Path) -> ReportStream:
    """``path`` opened for a report (see the module docstring); raises ``OSError`` when it
    cannot be opened (a missing directory, no permission, a read-only filesystem, a
    directory, a symbolic link)."""
    for _ in range(3):  # a path that appears or vanishes between the two opens: try again
        try:
            fd = os.open(path, _NEW, 0o600)
            break
        except FileExistsError:
            pass
        try:
            fd = os.open(path, _EXISTING)  # O_TRUNC empties a file; a FIFO or device ignores it
            break
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP and os.path.islink(path):
                raise OSError(errno.ELOOP, "it is a symbolic link (not followed: give the path it points to)") from None
            raise
    else:
        raise OSError(errno.EAGAIN, "the path kept changing while it was opened")
    try:
        out = open(fd, "w", encoding="utf-8", errors="backslashreplace", newline="")
    except BaseException:
        os.close(fd)
        raise
    return ReportStream(out, str(path), owned=True)
