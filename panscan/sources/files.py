"""Local files: walk directories into ``Item``s, and open one ``Item`` safely.

What callers may rely on:

* :func:`enumerate_files` is a lazy generator: a directory is listed only when the walk
  reaches it. It remembers only directories still to visit (and, to detect loops, the
  identity of every directory visited), never the files it has listed, and holds at most
  65 directory descriptors, so a million files or a 10,000-deep tree (paths far beyond
  ``PATH_MAX``) cost little memory, no recursion and time linear in the tree's size.
* Every path it meets becomes exactly one record: an ``Item`` for each regular file, or an
  ``ItemResult`` saying why a path is not read (reasons below). Nothing is skipped silently.
  Directories that are descended produce no record of their own, except one whose own name
  holds a card number (with ``WalkOptions.name_findings``; the target directory included):
  it is one ``complete`` ``ItemResult`` of 0 bytes carrying those findings (member
  ``(name)``), whatever number of files lies under it, and no size or time (a directory's
  name is not data with an age). A directory that cannot be listed keeps its error record,
  which then carries the name's findings, and so does the record of every other path not
  read (a link not followed, a FIFO...), excluded paths apart. A name whose scan fails (a bug
  in the matcher) makes its path's record ``error``/``READ_ERROR``; the walk goes on. Regular
  files' names are scanned by the worker that reads them.
* Locations are ``str``; names that are not valid UTF-8 are carried with
  ``surrogateescape`` (``os.fsencode(location)`` gives the original bytes back), and names
  with newlines are passed through unchanged. ``detail`` strings hold at most a path and an
  error description, never file content.
* Symbolic links inside a tree are not followed unless ``follow_symlinks`` is set;
  command-line targets that are links are followed (like ``find -H``). With
  ``one_filesystem`` (the default) a directory on another filesystem than its target is
  reported once (``CROSSES_FILESYSTEM``) and not descended.
* :func:`open_file` reads exactly the file that was listed: it never follows a symbolic
  link the walk did not follow, never blocks on a FIFO or device swapped in, and refuses a
  file whose inode or device differ from the item's. It raises only :class:`SourceError`.
  It reads no further than the file's size when it was opened, so a file that grows while
  it is read (a busy log, or a writer faster than the scan) cannot keep a worker reading.
* :func:`changed_since` tells, after the read, whether the file grew, shrank or was
  rewritten, or whether its location now holds another file or none (replaced with
  ``os.replace``, renamed over, removed) since it was listed.

Reasons: FIFO, socket, device -> SKIPPED ``NOT_REGULAR_FILE``; link not followed -> SKIPPED
``SYMLINK_NOT_FOLLOWED``; link loop or directory reached twice -> SKIPPED ``SYMLINK_LOOP``;
mount point of another filesystem -> SKIPPED ``CROSSES_FILESYSTEM``; ``--exclude`` match ->
SKIPPED ``EXCLUDED``; directory unreadable or stat refused -> ERROR ``PERMISSION_DENIED``;
target (or a followed link's destination, or an entry removed mid-walk) missing -> ERROR
``NOT_FOUND``; directory replaced mid-walk -> ERROR ``CHANGED_DURING_SCAN``; any other OS
error -> ERROR ``READ_ERROR``.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import io
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, BinaryIO, cast

from panscan.model import Finding, Item, ItemResult, Reason, Status

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

SOURCE = "file"

# Paths longer than PATH_MAX (4096 on Linux) are opened hop by hop relative to a directory
# descriptor, in pieces comfortably under that limit.
_PATH_PIECE_BYTES = 3072
# Directories held open while their subdirectories wait to be visited: one per level of
# the current branch that still has siblings pending. Beyond this, subdirectories are opened
# by full path (correct, only slower in trees both very deep and branching at every level).
_MAX_OPEN_PARENTS = 64

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
# Reading should not even touch access times (evidence of who read what, when); the kernel
# allows O_NOATIME only to the owner or CAP_FOWNER, so it is dropped on EPERM.
_O_NOATIME = getattr(os, "O_NOATIME", 0)
# O_PATH walks intermediate directories with search permission only, like the kernel's own
# path lookup, and opens nothing (no side effects) when it lands on a device or FIFO.
_O_PATH = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC | _O_NOCTTY


#: Findings in the own name of the directory at a location: (location, name) -> findings.
NameFindings = Callable[[str, str], tuple[Finding, ...]]


@dataclass(frozen=True)
class WalkOptions:
    """How to walk: ``excludes`` are fnmatch globs tested against the full path and against
    the base name (``*`` also matches ``/``); an excluded directory is not descended.

    ``name_findings`` (the engine's ``worker.name_findings`` with the scan's key) is asked
    about each directory descended; it must be cheap for the common name without a number.
    Without it directory names are not scanned (a metadata-only sweep)."""

    excludes: tuple[str, ...] = ()
    follow_symlinks: bool = False
    one_filesystem: bool = True
    name_findings: NameFindings | None = field(default=None, repr=False, compare=False)


class SourceError(Exception):
    """An item could not be opened; ``reason`` is its reason code, ``detail`` names the
    path and the cause (never content)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- enumeration -----------------------------------------------------------------------


def enumerate_files(targets: Sequence[str], options: WalkOptions) -> Iterator[Item | ItemResult]:
    """An ``Item`` for every regular file under ``targets``, an ``ItemResult`` for every
    path not read (see the module docstring), targets in the order given."""
    excluded_by = _exclude_matcher(options.excludes)
    for target in targets:
        yield from _walk_target(target, options, excluded_by)


def _walk_target(
    target: str, options: WalkOptions, excluded_by: Callable[[str, str], str | None] | None
) -> Iterator[Item | ItemResult]:
    pattern = None if excluded_by is None else excluded_by(target, os.path.basename(target.rstrip("/")) or target)
    if pattern is not None:
        yield _excluded(target, pattern)
        return
    try:
        st = os.stat(target)  # follows a link: command-line targets are followed (find -H)
    except OSError as e:
        yield _stat_failed(target, e)
        return
    if stat.S_ISREG(st.st_mode):
        yield _file_item(target, st)
    elif stat.S_ISDIR(st.st_mode):
        yield from _walk_tree(target, st, options, excluded_by)
    else:
        yield _entry_named(_not_regular(target, st), options.name_findings)


@dataclass(slots=True)
class _OpenParent:
    """A listed directory kept open so its subdirectories are opened relative to it."""

    fd: int
    waiting: int  # subdirectories not yet opened


def _walk_tree(
    root: str,
    root_st: os.stat_result,
    options: WalkOptions,
    excluded_by: Callable[[str, str], str | None] | None,
) -> Iterator[Item | ItemResult]:
    root_dev = root_st.st_dev
    # Identity of every directory queued, as one int per directory (smaller than a tuple):
    # a followed link (or a bind mount) that leads back into the tree is reported, not walked.
    visited: set[int] = {_dir_key(root_st)}
    # Directories still to visit, with the identity they had when listed and the open parent
    # to reach them from; depth-first and iterative, so depth never meets the recursion limit.
    pending: list[tuple[str, str, int, int, _OpenParent | None]] = [
        (root, root, root_st.st_dev, root_st.st_ino, None)
    ]
    held: list[_OpenParent] = []
    try:
        while pending:
            dirpath, name, dev, ino, parent = pending.pop()
            # Findings in the directory's own name go on its one record: its error record if
            # it has one, else a record of its own once it is listed.
            named = _name_record(dirpath, options.name_findings)
            try:
                fd = _open_dir(dirpath, name, parent)
            except OSError as e:
                yield _merged(_dir_failed(dirpath, e), named)
                continue
            finally:
                if parent is not None:
                    _release(parent, held)
            subdirs: list[tuple[str, str, int, int]] = []
            keep_open = False
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (dev, ino):
                    # Someone swapped the directory (perhaps for a link) since it was listed.
                    yield _merged(ItemResult(
                        _meta_item(dirpath, st), Status.ERROR, Reason.CHANGED_DURING_SCAN,
                        f"directory replaced while the tree was walked: {dirpath}",
                    ), named)
                    continue
                try:
                    # Listing through the descriptor: entries are stat'ed relative to it, so
                    # neither path length nor a rename of an ancestor changes what is listed.
                    prefix = dirpath if dirpath.endswith("/") else dirpath + "/"
                    with os.scandir(fd) as entries:
                        for entry in entries:
                            record = _classify(entry, prefix, root_dev, visited, subdirs, options,
                                               excluded_by)
                            if record is None:
                                continue
                            if record.__class__ is ItemResult:  # not read: its name is still scanned
                                record = _entry_named(record, options.name_findings)
                            yield record
                except OSError as e:
                    yield _merged(_dir_failed(dirpath, e), named)
                    named = None
                if named is not None:
                    yield named
                handle = None
                if subdirs and len(held) < _MAX_OPEN_PARENTS:
                    handle = _OpenParent(fd, len(subdirs))
                    held.append(handle)
                    keep_open = True
                # Subdirectories are visited in listing order.
                pending.extend((*sub, handle) for sub in reversed(subdirs))
            finally:
                if not keep_open:
                    os.close(fd)
    finally:
        for handle in held:
            os.close(handle.fd)


def _name_record(path: str, scan: NameFindings | None) -> ItemResult | None:
    """What the own name of ``path`` (a directory's: a target given as ``dir/`` too) needs
    reported: None for the common name without a card number; a ``complete`` record of 0
    bytes with the findings in it; an ``error`` record when scanning it failed."""
    if scan is None:
        return None
    item = Item(path, SOURCE)
    try:
        findings = scan(path, path.rstrip("/").rpartition("/")[2])
    except Exception as exc:  # a bug in the matcher costs this path's record, not the walk
        return ItemResult(item, Status.ERROR, Reason.READ_ERROR,
                          f"internal error ({type(exc).__name__}) while its name was scanned: {path}")
    return ItemResult(item, Status.COMPLETE, findings=findings) if findings else None


def _merged(record: ItemResult, named: ItemResult | None) -> ItemResult:
    """``record`` (of a path not read) with what its name needs reported (see
    :func:`_name_record`): its findings, or the failure to scan it."""
    if named is None:
        return record
    if named.status is Status.ERROR and record.status is not Status.ERROR:
        return replace(record, status=named.status, reason=named.reason, detail=named.detail)
    return replace(record, findings=named.findings)


def _entry_named(record: ItemResult, scan: NameFindings | None) -> ItemResult:
    """The record of an entry that is not read (a link not followed, a FIFO, a directory not
    descended...) with the findings in its name: the name is in the tree whether or not the
    entry is read. An excluded entry is left out on purpose, its name too."""
    if scan is None or record.reason is Reason.EXCLUDED:
        return record
    return _merged(record, _name_record(record.item.location, scan))


def _open_dir(path: str, name: str, parent: _OpenParent | None) -> int:
    # Opening by name relative to the parent keeps the walk linear in depth: resolving the
    # full path of every directory again costs O(depth) each, O(depth^2) for a deep tree.
    if parent is None:
        return _open_path(path, _DIR_FLAGS)
    return _open_path(name, _DIR_FLAGS, dir_fd=parent.fd)


def _release(parent: _OpenParent, held: list[_OpenParent]) -> None:
    parent.waiting -= 1
    if parent.waiting == 0:
        held.remove(parent)
        os.close(parent.fd)


def _classify(
    entry: os.DirEntry[str],
    prefix: str,
    root_dev: int,
    visited: set[int],
    subdirs: list[tuple[str, str, int, int]],
    options: WalkOptions,
    excluded_by: Callable[[str, str], str | None] | None,
) -> Item | ItemResult | None:
    """The record for one directory entry (its directory's path and a slash are ``prefix``),
    or None when it is a directory queued in ``subdirs``."""
    name = entry.name
    path = prefix + name  # os.path.join, without its checks: a third of the walk's cost per file
    if excluded_by is not None:
        pattern = excluded_by(path, name)
        if pattern is not None:
            return _excluded(path, pattern)
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as e:
        return _stat_failed(path, e)
    if stat.S_ISLNK(st.st_mode):
        if not options.follow_symlinks:
            return ItemResult(
                _meta_item(path, st), Status.SKIPPED, Reason.SYMLINK_NOT_FOLLOWED,
                f"symbolic link not followed: {path}",
            )
        try:
            st = entry.stat(follow_symlinks=True)
        except OSError as e:
            return _stat_failed(path, e)
    if stat.S_ISREG(st.st_mode):
        return _file_item(path, st)
    if not stat.S_ISDIR(st.st_mode):
        return _not_regular(path, st)
    if options.one_filesystem and st.st_dev != root_dev:
        return ItemResult(
            _meta_item(path, st), Status.SKIPPED, Reason.CROSSES_FILESYSTEM,
            f"directory on another filesystem not descended: {path}",
        )
    key = _dir_key(st)
    if key in visited:
        return ItemResult(
            _meta_item(path, st), Status.SKIPPED, Reason.SYMLINK_LOOP,
            f"directory already visited through another path: {path}",
        )
    visited.add(key)
    subdirs.append((path, name, st.st_dev, st.st_ino))
    return None


def _dir_key(st: os.stat_result) -> int:
    return (st.st_dev << 64) | st.st_ino


def _exclude_matcher(patterns: tuple[str, ...]) -> Callable[[str, str], str | None] | None:
    """A function (path, name) -> the first pattern matching either, or None; None when
    there is no pattern."""
    if not patterns:
        return None
    compiled = [(p, re.compile(fnmatch.translate(p))) for p in patterns]
    # One combined regex for the common case (no match); the per-pattern list only names
    # the pattern in the rare excluded case.
    anyone = re.compile("|".join(f"(?:{rx.pattern})" for _, rx in compiled))

    def excluded_by(path: str, name: str) -> str | None:
        if anyone.match(path) is None and anyone.match(name) is None:
            return None
        for pattern, rx in compiled:
            if rx.match(path) is not None or rx.match(name) is not None:
                return pattern
        return None

    return excluded_by


def _file_item(path: str, st: os.stat_result) -> Item:
    return Item(path, SOURCE, st.st_size, st.st_mtime, inode=st.st_ino, device=st.st_dev,
                mtime_ns=st.st_mtime_ns)


def _meta_item(path: str, st: os.stat_result | None = None) -> Item:
    """An item for a path that will not be read: identity and time, but no size (the size
    of a link, directory or device says nothing about data to scan)."""
    if st is None:
        return Item(location=path, source=SOURCE)
    return Item(
        location=path, source=SOURCE, last_modified=st.st_mtime,
        inode=st.st_ino, device=st.st_dev, mtime_ns=st.st_mtime_ns,
    )


def _excluded(path: str, pattern: str) -> ItemResult:
    return ItemResult(_meta_item(path), Status.SKIPPED, Reason.EXCLUDED, f"excluded by {pattern!r}: {path}")


def _not_regular(path: str, st: os.stat_result) -> ItemResult:
    return ItemResult(
        _meta_item(path, st), Status.SKIPPED, Reason.NOT_REGULAR_FILE,
        f"not a regular file ({_kind(st.st_mode)}): {path}",
    )


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return kind
    return "special file"


def _stat_failed(path: str, e: OSError) -> ItemResult:
    item = _meta_item(path)
    why = e.strerror or str(e)
    if e.errno == errno.ELOOP:
        return ItemResult(item, Status.SKIPPED, Reason.SYMLINK_LOOP, f"symbolic link loop: {path}")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return ItemResult(item, Status.ERROR, Reason.NOT_FOUND, f"{why}: {path}")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ItemResult(item, Status.ERROR, Reason.PERMISSION_DENIED, f"{why}: {path}")
    return ItemResult(item, Status.ERROR, Reason.READ_ERROR, f"{why}: {path}")


def _dir_failed(path: str, e: OSError) -> ItemResult:
    result = _stat_failed(path, e)
    if result.reason is Reason.PERMISSION_DENIED:
        return ItemResult(result.item, Status.ERROR, Reason.PERMISSION_DENIED,
                          f"cannot list directory ({e.strerror}): {path}")
    return result


# --- opening -------------------------------------------------------------------------


def open_file(item: Item) -> BinaryIO:
    """``item``'s file, open for unbuffered binary reading, checked to be the file listed.

    Raises :class:`SourceError`: ``NOT_REGULAR_FILE`` (a FIFO, device or socket is found;
    never blocks), ``SYMLINK_NOT_FOLLOWED`` (a link stands at the path and does not lead to
    the item's file), ``CHANGED_DURING_SCAN`` (inode or device differ from the item),
    ``PERMISSION_DENIED``, ``NOT_FOUND``, ``READ_ERROR``. The caller closes the file.
    """
    path = item.location
    try:
        fd = _open_path(path, _FILE_FLAGS)
    except OSError as e:
        if e.errno != errno.ELOOP or item.inode is None:
            raise _open_failed(path, e) from None
        fd = _open_listed_link(item)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(Reason.NOT_REGULAR_FILE, f"not a regular file ({_kind(st.st_mode)}): {path}")
        if not _same_file(item, st):
            raise SourceError(Reason.CHANGED_DURING_SCAN, f"file replaced since it was listed: {path}")
        # O_NONBLOCK only guarded the open; reads of a regular file should simply block.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass  # advice only; some filesystems do not take it
        return cast(BinaryIO, _UpToSize(os.fdopen(fd, "rb", buffering=0), st.st_size))
    except SourceError:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        raise _open_failed(path, e) from None


def changed_since(item: Item, f: BinaryIO) -> bool:
    """Whether the open file's size or modification time now differ from ``item``, or its
    location no longer leads to it (call after reading: True means what was read may be
    inconsistent, or is no longer what the location holds)."""
    st = os.fstat(f.fileno())
    if (item.size is not None and st.st_size != item.size) or (
            item.mtime_ns is not None and st.st_mtime_ns != item.mtime_ns):
        return True
    # The descriptor keeps the file it opened, whatever happens to the name: a file
    # replaced (os.replace, a log rotation renaming over it) or removed while it was read
    # shows only at its location.
    return not _still_at(item.location, st)


def _still_at(path: str, st: os.stat_result) -> bool:
    try:
        # O_PATH: no open side effects, no blocking on a FIFO swapped in; links followed as
        # open_file follows the ones the walk followed.
        fd = _open_path(path, _O_PATH | _O_CLOEXEC, noatime=False)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


class _UpToSize(io.RawIOBase):
    """An open regular file that ends at ``size`` bytes (its size when opened) even if it
    grows: reads stop there and ``SEEK_END`` is relative to it. A file that shrinks ends
    early, as files do; :func:`changed_since` reports both."""

    def __init__(self, f: io.FileIO, size: int) -> None:
        super().__init__()
        self._f = f
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._f.fileno()

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self._size - self._pos)
        want = left if n is None or n < 0 else min(n, left)
        if want == 0:
            return b""
        # FileIO.read(n) reads straight into the bytes object it returns: no extra copy.
        data = self._f.read(want) or b""
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self._size - self._pos))
        if want == 0:
            return 0
        n = self._f.readinto(view[:want]) or 0
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            offset, whence = self._size + offset, os.SEEK_SET
        self._pos = self._f.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def _open_listed_link(item: Item) -> int:
    """Open the file behind a link at ``item.location``, but only if it is the file listed.

    The walk lists a link's destination when it follows it (command-line targets, or
    ``follow_symlinks``) and records that file's inode, so a link leading to that same
    regular file is the file the walk chose to read. Any other link is one the walk did
    not follow (or that was swapped in since) and is refused.
    """
    path = item.location
    refused = SourceError(Reason.SYMLINK_NOT_FOLLOWED, f"symbolic link not followed: {path}")
    try:
        probe = _open_path(path, _O_PATH | _O_CLOEXEC, noatime=False)
    except OSError:
        raise refused from None
    try:
        st = os.fstat(probe)
    except OSError:
        raise refused from None
    finally:
        os.close(probe)
    if not stat.S_ISREG(st.st_mode) or not _same_file(item, st):
        raise refused
    try:
        # The link could still be swapped between the check and this open; open_file's
        # fstat check after the open catches that, and O_NONBLOCK keeps it from hanging.
        return _open_path(path, _FILE_FLAGS & ~os.O_NOFOLLOW)
    except OSError as e:
        raise _open_failed(path, e) from None


def _same_file(item: Item, st: os.stat_result) -> bool:
    return (item.inode is None or st.st_ino == item.inode) and (
        item.device is None or st.st_dev == item.device
    )


def _open_failed(path: str, e: OSError) -> SourceError:
    why = e.strerror or str(e)
    if e.errno == errno.ELOOP:
        return SourceError(Reason.SYMLINK_NOT_FOLLOWED, f"symbolic link not followed: {path}")
    if e.errno in (errno.EACCES, errno.EPERM):
        return SourceError(Reason.PERMISSION_DENIED, f"{why}: {path}")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return SourceError(Reason.NOT_FOUND, f"{why}: {path}")
    if e.errno == errno.ENXIO:  # open() of a socket, or of a device with no driver
        return SourceError(Reason.NOT_REGULAR_FILE, f"not a regular file: {path}")
    return SourceError(Reason.READ_ERROR, f"{why}: {path}")


def _open_path(path: str, flags: int, noatime: bool = True, dir_fd: int | None = None) -> int:
    """``os.open`` that also reaches paths longer than ``PATH_MAX``, and avoids touching
    the access time where the kernel allows it."""
    if noatime and _O_NOATIME:
        try:
            return _open_any_length(path, flags | _O_NOATIME, dir_fd)
        except PermissionError as e:
            if e.errno != errno.EPERM:  # EACCES is a real refusal; EPERM may be O_NOATIME's
                raise
    return _open_any_length(path, flags, dir_fd)


def _open_any_length(path: str, flags: int, dir_fd: int | None = None) -> int:
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG or dir_fd is not None:
            raise
        too_long = e
    raw = os.fsencode(path)
    components = [c for c in raw.split(b"/") if c]
    pieces: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for component in components:
        if current and size + len(component) + 1 > _PATH_PIECE_BYTES:
            pieces.append(b"/".join(current))
            current, size = [], 0
        current.append(component)
        size += len(component) + 1
    pieces.append(b"/".join(current))
    if len(pieces) < 2:  # one name over NAME_MAX: no split can help
        raise too_long
    if raw.startswith(b"/"):
        pieces[0] = b"/" + pieces[0]
    # Intermediate pieces are resolved exactly as the kernel would resolve the whole path
    # (links in them followed); only the last piece gets the caller's flags.
    fd = os.open(pieces[0], _O_PATH | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        for piece in pieces[1:-1]:
            next_fd = os.open(piece, _O_PATH | os.O_DIRECTORY | _O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return os.open(pieces[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)
