"""The recursive expansion of one item into the text streams a person would read.

Usage by a worker::

    meter = Meter()
    for out in open_streams(raw, limits, chunk_size, meter=meter):
        if isinstance(out, Problem):
            ...                          # a branch stopped: out.member, out.reason, out.detail
            continue
        for chunk in out.chunks:         # never raises: a failure becomes a later Problem
            ...                          # scan chunk; a hit's member is out.member (+ out.where(offset))
    bytes_scanned = meter.bytes_in       # raw bytes consumed from the item

What callers may rely on:

* Formats are decided by content only (:mod:`panscan.extract.sniff`), at every level.
  Compressed data (gzip, bzip2, xz, zstd) is decoded and sniffed again (``.tar.gz``, a
  gzip of a zip); zip and tar members, and the parts of documents and emails (through the
  handlers of :mod:`panscan.extract.parts`), are expanded recursively. Plain data, legacy
  binary Office (OLE2: the matcher finds its UTF-16 text) and any format whose handler is
  not installed are streams of their raw bytes. 7z is ``UNSUPPORTED_FILE_TYPE`` and its
  raw bytes are still scanned.
* ``Stream.member`` is the path inside the item: the segments of the containers and parts
  joined with ``/`` (``exports/q1.zip/cards.csv`` inside ``backup.tar.gz``); the item's own
  name is not part of it, and a decompression layer adds no segment (a single ``.gz``
  item's stream has member ``None``; ``logs.gz`` in a zip gives member ``logs.gz``).
  ``Stream.where``, when set, maps an offset in the stream to a suffix for the member
  (``"!C5"``).
* Streams are yielded one at a time and read lazily: consume (or abandon) one before
  asking for the next. Each stream's chunks are non-empty ``bytes`` of at most
  ``chunk_size`` (the item's own raw bytes: exactly ``chunk_size`` except the last) and
  never raise: an error while a stream is read ends that stream, and is yielded as a
  :class:`Problem` before the next stream.
* Every byte is seen, or a :class:`Problem` says why. Bytes a parser does not account
  for are yielded raw: a zip's headers, central directory and comments
  (``(zip structure)``) and data after its end record (``(after the zip data)``,
  expanded); a tar's header blocks, pax records and padding (``(tar headers)``) and what
  follows its end marker; a compressed stream's header fields (``(gzip file name)``,
  ``(gzip comment)``, ``(gzip extra field)``) and the bytes after its last member
  (``(after the gzip data)``, expanded). A container whose parser fails part-way, and
  every PDF, RTF and e-mail (whose parsers cannot say what they read), are scanned raw
  as a whole as well. Such raw passes are ``Stream.backstop``: a number they find that
  the item already reported is the same number, and the worker reports it once.
  Decoded text before a decoder error is always yielded before the error.
* A :class:`Problem` records a branch that stopped; everything yielded before it stays
  valid, and other branches are still expanded: a limit reached (depth, ratio: that
  branch; total expanded bytes, member count, time, a failing read of the item: everything
  after it), a malformed container (zip members whose bytes overlap are refused before
  any is read), an encrypted member, an unsupported format, a container too large to
  spool. Each failure is reported once, where it was first seen. ``open_streams`` itself
  raises nothing but ``ValueError`` for a bad ``chunk_size`` (and whatever a bug raises).
* Memory: a few chunks per open container level, plus the spooled copies of containers
  that need random access but arrive as a stream (a zip inside a tar.gz): at most
  ``max_spool_bytes`` live at once, over which the container is scanned raw
  (``FILE_EXCEEDS_SIZE_LIMIT``). Nothing is written to disk. A seekable item (a local
  file) is read in place.
* ``meter.bytes_in`` counts raw bytes read from ``raw`` (for a random-access container
  read in place: the furthest offset read); ``meter.bytes_expanded`` counts bytes produced
  by decoders and handlers (see :class:`~panscan.extract.budget.Limits`).
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from panscan.extract.archive import open_zip, tar_parts, zip_parts, zip_unread
from panscan.extract.budget import ITEM_WIDE_REASONS, ExtractError, Limits, Meter
from panscan.extract.compressed import (
    DECODED_FORMATS,
    DEFAULT_CHUNK_SIZE,
    Leftovers,
    check_ratio,
    decoded_chunks,
    read_full,
)
from panscan.extract.parts import Handler, Part
from panscan.extract.sniff import MAGIC_LEN, Format, sniff, zip_flavour
from panscan.model import Reason

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["Problem", "Stream", "open_streams"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stream:
    """One byte stream to scan: ``member`` is its path inside containers (``None`` for the
    item itself); ``chunks`` yields its bytes in order and never raises; ``where`` maps
    an offset in the stream to a suffix of the member (``"!C5"``), when the part has one.

    ``backstop``: raw bytes scanned so that nothing a parser left out goes unseen (a
    container's structure, or the whole of a document whose parser cannot say what it
    read): a number found there that the item already reported elsewhere is the same
    number seen twice, and callers report it once."""

    member: str | None
    chunks: Iterator[bytes]
    where: Callable[[int], str | None] | None = None
    backstop: bool = False


@dataclass(frozen=True)
class Problem:
    """A branch of the item that stopped: at ``member`` (``None``: the item itself), for
    ``reason``; ``detail`` explains it and holds no content (it may hold member names)."""

    member: str | None
    reason: Reason
    detail: str


# Formats read by a handler that needs random access: spooled when they arrive as a stream.
_HANDLED = frozenset({Format.ZIP, Format.OOXML, Format.ODF, Format.PDF, Format.RTF, Format.EMAIL})
_FOREIGN_HANDLERS: dict[Format, tuple[str, str]] = {
    Format.OOXML: ("panscan.extract.office", "ooxml_parts"),
    Format.ODF: ("panscan.extract.office", "odf_parts"),
    Format.PDF: ("panscan.extract.pdf", "pdf_parts"),
    Format.RTF: ("panscan.extract.rtf", "rtf_parts"),
    Format.EMAIL: ("panscan.extract.mail", "mail_parts"),
}
_SPOOL_READ = 1 << 20
#: Formats whose parsers cannot say which bytes they read (a PDF's streams, an RTF's groups,
#: an email's MIME parts): their raw bytes are scanned as well, as a backstop.
_UNACCOUNTED = frozenset({Format.PDF, Format.RTF, Format.EMAIL})
_ZIP_FLAVOURS = frozenset({Format.ZIP, Format.OOXML, Format.ODF})


def open_streams(
    raw: BinaryIO,
    limits: Limits,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    meter: Meter | None = None,
) -> Iterator[Stream | Problem]:
    """The streams inside ``raw`` (read from its current position to its end), and the
    problems met on the way; see the module documentation for the guarantees.

    Pass a :class:`Meter` to learn how many raw bytes were consumed; its clock starts here
    unless already started.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    meter = meter if meter is not None else Meter()
    meter.start(limits)
    direct = _in_place(raw)
    if direct is not None and chunk_size >= MAGIC_LEN:
        # Most files of a real tree are small plain text: when the first read holds the
        # whole file and it is plain, it is the one stream, without the machinery below
        # (which would yield exactly this, at several times the cost per file).
        try:
            head = read_full(raw, MAGIC_LEN, meter)
        except ExtractError:
            head = None  # the path below meets the failure again and reports it
        if head is not None and len(head) < MAGIC_LEN and sniff(head) is Format.RAW:
            yield Stream(None, iter((head,) if head else ()))
            return
        raw.seek(0)
        meter.bytes_in = 0  # read again below, counted there
    x = _Expansion(limits, chunk_size, meter)
    inner = x.expand(_Reader(_file_pull(raw, meter)), None, 0, direct, exact=True)
    try:
        while not x.stopped:
            try:
                stream = next(inner)
            except StopIteration:
                break
            yield from x.drain()
            yield stream
        yield from x.drain()
    finally:
        inner.close()


def _in_place(raw: BinaryIO) -> BinaryIO | None:
    """``raw`` when handlers may read it in place (seekable, at offset 0), else ``None``."""
    try:
        return raw if raw.seekable() and raw.tell() == 0 else None
    except (OSError, ValueError):
        return None


def _file_pull(raw: BinaryIO, meter: Meter) -> Callable[[int], bytes]:
    def pull(n: int) -> bytes:
        meter.check_time()
        return read_full(raw, n, meter)

    return pull


class _Reader:
    """A forward-only byte source over a file or a part's chunks.

    ``read(n)`` returns 1..n bytes, or ``b""`` at the end; an :class:`ExtractError` from
    below is raised again on every later read (the source is broken), and kept in
    ``error`` so that the framework reports it once and does not mistake the broken
    source for a malformed container above it.
    """

    def __init__(self, pull: Callable[[int], bytes]) -> None:
        self._pull = pull
        self._buf = b""
        self.error: ExtractError | None = None
        self._eof = False

    @classmethod
    def of_chunks(cls, chunks: Iterator[bytes]) -> _Reader:
        return cls(lambda _n: next(chunks, b""))

    def _more(self, n: int) -> bytes:
        if self.error is not None:
            raise self.error
        if self._eof:
            return b""
        try:
            data = self._pull(n)
        except ExtractError as e:
            self.error = e
            raise
        if not data:
            self._eof = True
        return data

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = _SPOOL_READ
        if not self._buf:
            self._buf = self._more(n)
        if len(self._buf) <= n:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_exact(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end or when the source fails after some arrived
        (what arrived is returned; the failure is raised by the next read)."""
        data = self.read(n)
        if len(data) == n or not data:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            try:
                more = self.read(n - got)
            except ExtractError:
                break  # kept in self.error: raised again by the next read
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        self._buf = data + self._buf

    def chunks(self, size: int, exact: bool) -> Iterator[bytes]:
        """The rest of the bytes, in pieces of at most ``size`` (exactly ``size`` but the
        last when ``exact``)."""
        while True:
            data = self.read_exact(size) if exact else self.read(size)
            if data:
                yield data
            if not data or (exact and len(data) < size):
                if self.error is not None:
                    raise self.error  # a short read that was a failure, not the end
                return


class _CountingRaw(io.RawIOBase):
    """A seekable file seen through a counter of the bytes read from it (the ratio's
    denominator for handler parts) and, for the item itself, of the furthest offset read."""

    def __init__(self, inner: BinaryIO, on_extent: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._inner = inner
        self._on_extent = on_extent
        self.bytes_read = 0
        self.produced = 0  # bytes its handler's parts produced since ``ratio_base``
        self.ratio_base = 0  # bytes_read when the ratio was last reset (after a part tripped it)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            view = memoryview(buffer).cast("B")
            data = self._inner.read(len(view))
        except OSError as e:
            raise ExtractError(Reason.READ_ERROR, f"read failed: {e.strerror or e}") from None
        n = len(data)
        view[:n] = data
        self.bytes_read += n
        if self._on_extent is not None:
            self._on_extent(self._inner.tell())
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()


@dataclass
class _Container:
    """A container made seekable: ``file`` for the handler, ``counter`` beneath it, and
    ``raw_chunks`` to scan its bytes as they are when its parser cannot."""

    file: BinaryIO
    counter: _CountingRaw
    raw_chunks: Callable[[], Iterator[bytes]]
    spooled: int  # bytes held in memory for it (released when done)


class _Expansion:
    """The state of expanding one item: its budgets, and the problems not yet yielded."""

    def __init__(self, limits: Limits, chunk_size: int, meter: Meter) -> None:
        self.limits = limits
        self.chunk_size = chunk_size
        self.meter = meter
        self.members = 0
        self.spooled = 0
        self.stopped = False  # an item-wide budget is spent: nothing more is expanded
        self._pending: list[Problem] = []
        self._seen: list[ExtractError] = []

    # -- problems ---------------------------------------------------------------------

    def record(self, member: str | None, error: ExtractError) -> None:
        if any(error is seen for seen in self._seen):
            return  # already reported where it was first seen
        self._seen.append(error)
        self._pending.append(Problem(member, error.reason, error.detail))
        if error.reason in ITEM_WIDE_REASONS:
            self.stopped = True

    def problem(self, member: str | None, reason: Reason, detail: str) -> None:
        self.record(member, ExtractError(reason, detail))

    def drain(self) -> Iterator[Problem]:
        while self._pending:
            yield self._pending.pop(0)

    # -- the recursion ----------------------------------------------------------------

    def expand(self, src: _Reader, member: str | None, depth: int,
               direct: BinaryIO | None = None, exact: bool = False) -> Generator[Stream, None, None]:
        """The streams in ``src``, which holds the bytes of ``member`` at ``depth`` (the
        number of containers around it). ``direct`` is the same bytes as a seekable file
        at offset 0 (the item itself, when it is one)."""
        try:
            yield from self._expand(src, member, depth, direct, exact)
        except ExtractError as e:
            self.record(member, e)

    def _expand(self, src: _Reader, member: str | None, depth: int,
                direct: BinaryIO | None, exact: bool) -> Iterator[Stream]:
        head = src.read_exact(MAGIC_LEN)
        src.unread(head)
        fmt = sniff(head)
        if fmt.is_container and depth + 1 > self.limits.max_archive_depth:
            self.problem(member, Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT,
                         f"{fmt} nested more than {self.limits.max_archive_depth} levels deep")
            fmt = Format.RAW  # its bytes are still scanned as they are
        if fmt is Format.SEVEN_ZIP:
            self.problem(member, Reason.UNSUPPORTED_FILE_TYPE, "7z archives are not unpacked; raw bytes scanned")
            fmt = Format.RAW
        if fmt in DECODED_FORMATS:
            leftovers = Leftovers()
            decoded = decoded_chunks(src.read, fmt, self.limits, self.meter, self.chunk_size, leftovers=leftovers)
            yield from self.expand(_Reader.of_chunks(decoded), member, depth + 1)
            yield from self._leftovers(leftovers, src, member, depth, fmt)
        elif fmt is Format.TAR:
            yield from self._tar(src, member, depth)
        elif fmt in _HANDLED:
            yield from self._handled(src, member, depth, direct, fmt)
        else:
            yield self._stream(member, src.chunks(self.chunk_size, exact))

    def _leftovers(self, leftovers: Leftovers, src: _Reader, member: str | None, depth: int,
                   fmt: Format) -> Iterator[Stream]:
        """What a compressed stream held besides its data: header fields as short texts of
        their own, and bytes after its end (plain text appended to a .gz, another format)
        expanded like a member of their own."""
        for label, value in leftovers.fields:
            yield self._stream(_segment(member, f"({label})"), iter((value,)))
        if leftovers.unverified:
            # Frames without a checksum: altered bytes would decode to other text unnoticed.
            yield self._stream(member, self._split(iter((leftovers.unverified,))), backstop=True)
        if leftovers.trailing is not None and not self.stopped:
            src.unread(leftovers.trailing)
            yield from self.expand(src, _segment(member, f"(after the {fmt} data)"), depth + 1)

    def _tar(self, src: _Reader, member: str | None, depth: int) -> Iterator[Stream]:
        try:
            # Tar members are slices of the tar's bytes: not "produced", so not counted
            # against the expansion and ratio limits (whatever produced the tar was).
            yield from self._parts(tar_parts(cast(BinaryIO, src), self.limits), member, depth, None)
        except ExtractError as e:
            self.record(member, e)
            if e.reason is Reason.MALFORMED_FILE and src.error is None and not self.stopped:
                # What follows a bad header may hold members: scan it as it is.
                yield self._stream(member, src.chunks(self.chunk_size, exact=False))

    def _handled(self, src: _Reader, member: str | None, depth: int,
                 direct: BinaryIO | None, fmt: Format) -> Iterator[Stream]:
        box: list[_Container] = []
        yield from self._seekable(src, member, direct, box)
        if not box:
            return  # too large to spool: scanned raw
        container = box[0]
        try:
            if fmt is Format.ZIP:
                fmt = self._zip_flavour(container.file, member)
                if self.stopped:
                    return
            handler = _handler(fmt)
            if handler is None:  # the handler's module is not installed: scan as bytes
                yield self._stream(member, container.raw_chunks())
                return
            failed = False
            try:
                parts = handler(container.file, self.limits)
                yield from self._parts(parts, member, depth, container.counter)
            except ExtractError as e:
                self.record(member, e)
                failed = e.reason is Reason.MALFORMED_FILE
            if self.stopped:
                return
            if failed or fmt in _UNACCOUNTED:
                # The parser stopped part-way, or cannot say what it read: every byte of
                # the container is scanned as it is, so nothing it skipped goes unseen.
                yield self._stream(member, container.raw_chunks(), backstop=True)
            elif fmt in _ZIP_FLAVOURS:
                yield from self._zip_unread(container, member, depth)
        finally:
            self.spooled -= container.spooled

    def _zip_unread(self, container: _Container, member: str | None, depth: int) -> Iterator[Stream]:
        """The bytes of a zip outside its members' data: headers, the central directory,
        comments and gaps scanned raw; data after the end record expanded like a member."""
        f = container.file
        try:
            unread = zip_unread(f)
        except ExtractError as e:
            self.record(member, e)
            yield self._stream(member, container.raw_chunks(), backstop=True)
            return
        if unread.structure:
            yield self._stream(_segment(member, "(zip structure)"),
                               self._ranges(f, unread.structure), backstop=True)
        if unread.after is not None and not self.stopped:
            child = _Reader.of_chunks(self._ranges(f, [(unread.after, None)]))
            yield from self.expand(child, _segment(member, "(after the zip data)"), depth + 1)

    def _ranges(self, f: BinaryIO, ranges: list[tuple[int, int | None]]) -> Iterator[bytes]:
        """The bytes of ``f`` in ``ranges`` (an end of ``None``: to the end of the file),
        one range after another."""
        size = self.chunk_size
        for start, end in ranges:
            pos = start
            while end is None or pos < end:
                f.seek(pos)
                data = f.read(size if end is None else min(size, end - pos))
                if not data:
                    break
                pos += len(data)
                yield data

    def _zip_flavour(self, f: BinaryIO, member: str | None) -> Format:
        try:
            with open_zip(f, self.limits) as zf:
                return zip_flavour(zf)
        except ExtractError as e:
            if e.reason in ITEM_WIDE_REASONS:
                self.record(member, e)
            return Format.ZIP  # zip_parts reports what is wrong (or reads the local headers)
        finally:
            f.seek(0)

    def _seekable(self, src: _Reader, member: str | None, direct: BinaryIO | None,
                  box: list[_Container]) -> Iterator[Stream]:
        """Put the container in ``box`` as a seekable file: ``direct`` itself, or a copy in
        memory. Over the spool budget, yields the container's raw stream instead."""
        if direct is not None:
            meter = self.meter

            def extent(offset: int) -> None:
                meter.bytes_in = max(meter.bytes_in, offset)

            def raw_again() -> Iterator[bytes]:
                direct.seek(0)
                counter = _CountingRaw(direct, extent)
                return _Reader(lambda n: _read_counted(counter, n)).chunks(self.chunk_size, exact=True)

            counter = _CountingRaw(direct, extent)
            direct.seek(0)
            box.append(_Container(cast(BinaryIO, io.BufferedReader(counter, 1 << 16)), counter, raw_again, 0))
            return
        budget = self.limits.max_spool_bytes - self.spooled
        spool = io.BytesIO()
        size = 0
        while True:
            try:
                data = src.read(_SPOOL_READ)
            except ExtractError as e:
                self.record(member, e)
                if self.stopped:
                    return
                break  # a cut-off container: its parser reads what arrived
            if not data:
                break
            if size + len(data) > budget:
                self.problem(member, Reason.FILE_EXCEEDS_SIZE_LIMIT,
                             f"container larger than the {self.limits.max_spool_bytes}-byte spool; raw bytes scanned")
                yield self._stream(member, self._overflow(spool, data, src))
                return
            spool.write(data)
            size += len(data)
        self.spooled += size
        spool.seek(0)
        counter = _CountingRaw(cast(BinaryIO, spool))

        def spooled_chunks() -> Iterator[bytes]:
            view = spool.getbuffer()
            try:
                for at in range(0, len(view), self.chunk_size):
                    yield bytes(view[at:at + self.chunk_size])
            finally:
                view.release()

        box.append(_Container(cast(BinaryIO, io.BufferedReader(counter, 1 << 16)), counter, spooled_chunks, size))

    def _overflow(self, spool: io.BytesIO, data: bytes, src: _Reader) -> Iterator[bytes]:
        """The bytes of a container that did not fit the spool: what was spooled, then the
        rest as it arrives (the spool is freed as soon as it has been read)."""
        size = self.chunk_size
        with spool.getbuffer() as view:
            for at in range(0, len(view), size):
                yield bytes(view[at:at + size])
        spool.close()
        yield from self._split(iter((data,)))
        yield from src.chunks(size, exact=False)

    def _parts(self, parts: Iterator[Part], member: str | None, depth: int,
               counter: _CountingRaw | None) -> Iterator[Stream]:
        """The streams of a container's parts (``counter``: bytes read for the container,
        ``None`` when its parts are slices and not counted as produced)."""
        while not self.stopped:
            try:
                part = next(parts)
            except StopIteration:
                return
            except ExtractError:
                raise
            except Exception as e:  # a third-party parser choking on hostile input
                logger.debug("parser failure (%s) in a container", type(e).__name__)
                raise ExtractError(Reason.MALFORMED_FILE, f"parser failed ({type(e).__name__})") from None
            self.members += 1
            if self.members > self.limits.max_members:
                self.problem(member, Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT,
                             f"more than {self.limits.max_members} members")
                return
            path = part.name if member is None else f"{member}/{part.name}"
            chunks = part.chunks if counter is None else self._produced(part.chunks, path, counter)
            if part.embedded:
                child = _Reader.of_chunks(self._timed(chunks))
                yield from self.expand(child, path, depth + 1)
            else:
                yield self._stream(path, self._split(self._timed(chunks)), part.where, part.backstop)

    # -- chunk plumbing ---------------------------------------------------------------

    def _stream(self, member: str | None, chunks: Iterator[bytes],
                where: Callable[[int], str | None] | None = None, backstop: bool = False) -> Stream:
        return Stream(member, self._guard(member, chunks), where, backstop)

    def _guard(self, member: str | None, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                yield chunk
                if self.stopped:
                    return
        except ExtractError as e:
            self.record(member, e)
        except Exception as e:  # a third-party parser failing inside a part's text
            logger.debug("parser failure (%s) in a part", type(e).__name__)
            self.problem(member, Reason.MALFORMED_FILE, f"parser failed ({type(e).__name__})")

    def _timed(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.meter.check_time()
            if chunk:
                yield chunk

    def _split(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        size = self.chunk_size
        for chunk in chunks:
            if len(chunk) <= size:
                yield chunk
            else:
                for at in range(0, len(chunk), size):
                    yield chunk[at:at + size]

    def _produced(self, chunks: Iterator[bytes], path: str, counter: _CountingRaw) -> Iterator[bytes]:
        """A handler part's chunks counted against the expansion budget and the ratio limit.

        The ratio is judged per container (what its parts produced against what was read from
        it): handlers such as the e-mail parser read their whole input before the first part,
        so a per-part measure would see output from no input at all. A part that trips the
        limit is stopped and the measure starts again, so its siblings are judged on their own.
        """
        for chunk in chunks:
            fit = self.meter.fit(chunk, self.limits)
            if fit:
                counter.produced += len(fit)
                yield fit
            if len(fit) < len(chunk):
                raise self.meter.over_expanded(self.limits)
            try:
                check_ratio(counter.produced, counter.bytes_read - counter.ratio_base, self.limits,
                            path.rsplit("/", 1)[-1])
            except ExtractError:
                counter.produced, counter.ratio_base = 0, counter.bytes_read
                raise


def _segment(member: str | None, name: str) -> str:
    return name if member is None else f"{member}/{name}"


def _read_counted(counter: _CountingRaw, n: int) -> bytes:
    buf = bytearray(n)
    got = counter.readinto(buf)
    return bytes(buf[:got])


@functools.cache
def _handler(fmt: Format) -> Handler | None:
    """The handler for ``fmt``; ``None`` when its module is not installed (the format is
    then scanned as raw bytes, or as a plain zip for office documents)."""
    if fmt is Format.ZIP:
        return zip_parts
    module_name, attr = _FOREIGN_HANDLERS[fmt]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        return zip_parts if fmt in (Format.OOXML, Format.ODF) else None
    handler = getattr(module, attr, None)
    if handler is None:
        return zip_parts if fmt in (Format.OOXML, Format.ODF) else None
    return cast(Handler, handler)
