"""Decompressing one compressed stream: gzip, bzip2, xz and zstd, within the item's limits.

:func:`decoded_chunks` turns a compressed byte source into its decompressed chunks; the
expansion framework (:mod:`panscan.extract.expand`, whose :func:`open_streams` this module
re-exports for older callers) sniffs the result again, so a ``.tar.gz`` or a gzip of a zip
is unpacked in turn.

What callers may rely on:

* Every chunk is non-empty ``bytes`` of at most ``chunk_size`` bytes. Memory is bounded by
  a few ``chunk_size`` buffers plus the decoder's own state (capped by
  ``Limits.max_decoder_memory`` for xz and zstd), whatever the input: every decompressor
  call is limited to ``chunk_size`` bytes of output.
* Concatenated gzip members, bzip2 streams, xz streams and zstd frames are decoded one
  after another into the same stream; NUL padding between or after gzip/bzip2/xz members
  is ignored (as gzip and xz do).
* The chunk iterators raise only :class:`ExtractError`, and only after yielding everything
  decoded before the problem: truncated, corrupt, or trailing non-padding data after a
  compressed stream -> ``MALFORMED_FILE`` (zstd frames and blocks are followed here, so a
  cut frame is told from a whole one); more than ``max_expanded_bytes`` produced
  for the item -> ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT`` (exactly up to the limit is
  yielded first); ratio over ``max_ratio`` -> ``ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT``; an
  xz or zstd stream demanding more than ``max_decoder_memory`` ->
  ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT``; ``max_item_seconds`` passed ->
  ``TIME_CUT_OFF_REACHED``; whatever ``read`` raises is passed on.
* ``meter.bytes_expanded`` counts decompressed bytes yielded. The compression ratio
  compares what one stream produced with what it read through ``read`` (which may read
  ahead), so read-ahead can only make it look lower, never trip it early.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

import zstandard

from panscan.extract.budget import RATIO_GRACE_BYTES, ExtractError, Limits, Meter
from panscan.extract.parts import gathered
from panscan.extract.sniff import MEMBER_MAGIC, Format
from panscan.model import Reason

if TYPE_CHECKING:  # re-exported lazily (expand imports this module)
    from panscan.extract.expand import Problem, Stream, open_streams

__all__ = ["DECODED_FORMATS", "ExtractError", "Leftovers", "Limits", "Meter", "Problem", "Stream",
           "decoded_chunks", "open_streams", "read_full"]

DEFAULT_CHUNK_SIZE = 1 << 20

#: The formats :func:`decoded_chunks` decodes.
DECODED_FORMATS = frozenset({Format.GZIP, Format.BZIP2, Format.XZ, Format.ZSTD})

#: ``read(n)``: up to ``n`` bytes (at least one unless at the end, where it returns b"").
Read = Callable[[int], bytes]


def __getattr__(name: str) -> object:
    # open_streams, Stream and Problem lived here before archives existed; they are
    # re-exported lazily because the framework that defines them imports this module.
    if name in ("open_streams", "Stream", "Problem"):
        from panscan.extract import expand

        return getattr(expand, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_full(raw: BinaryIO, n: int, meter: Meter) -> bytes:
    """Up to ``n`` bytes, fewer only at end of file (pipes and sockets return short reads);
    counted in ``meter.bytes_in``. A failing read raises ``READ_ERROR``."""
    if n <= 0:
        return b""
    parts: list[bytes] = []
    got = 0
    try:
        while got < n:
            # read() rather than readinto() a reusable buffer: chunks leave as bytes anyway,
            # and FileIO.read(n) reads straight into the bytes object it returns (no copy).
            data = raw.read(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
    except OSError as e:
        raise ExtractError(Reason.READ_ERROR, f"read failed: {e.strerror or e}") from None
    meter.bytes_in += got
    return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass
class Leftovers:
    """What a compressed stream holds besides its decoded data, for the caller to scan.

    ``fields``: header fields a person or a tool may have written (gzip's original file
    name, comment and extra field), as ``(label, bytes)``. ``trailing``: the first bytes
    found after the last member that do not start another one (the rest is still unread in
    the source); ``None`` when the data ended cleanly.
    """

    fields: list[tuple[str, bytes]] = field(default_factory=list)
    trailing: bytes | None = None
    #: The compressed bytes of a stream whose frames carry no checksum (zstd may omit it), so
    #: that nothing shows whether they decode to what was written: scanned raw as well. Kept
    #: only up to :data:`UNVERIFIED_MAX` bytes.
    unverified: bytes | None = None


UNVERIFIED_MAX = 8 << 20


class _Decoder(Protocol):
    """The shape of ``bz2.BZ2Decompressor`` / ``lzma.LZMADecompressor``."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


#: A gzip header longer than this (an original file name or comment without its end) is
#: refused rather than held in memory.
_MAX_GZIP_HEADER = 1 << 20
_GZIP_FEXTRA, _GZIP_FNAME, _GZIP_FCOMMENT, _GZIP_FHCRC = 0x04, 0x08, 0x10, 0x02
_SALVAGE_STEP = 512


class _GzipDecoder:
    """One gzip member behind the bz2/lzma interface: the header parsed here (its name,
    comment and extra field kept in ``fields``), the deflate data inflated raw, and the
    CRC and length checked here *after* the output they cover has been returned.

    zlib's own gzip mode raises in the very call that would return a member's last output
    (a bad CRC loses the end of the text), and its corrupt-data error drops what that call
    had inflated; here a failure is kept in ``failure`` for the caller to raise once the
    output before it has been handed on.
    """

    def __init__(self, fields: list[tuple[str, bytes]]) -> None:
        self._fields = fields
        self._header: bytes | None = b""  # None once the header is parsed
        self._d = zlib.decompressobj(-15)
        self._tail = b""
        self._maybe_more_output = False
        self._trailer = b""
        self._crc = 0
        self._size = 0
        self._eof = False
        self._unused = b""
        self.failure: str | None = None

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def needs_input(self) -> bool:
        return not self._tail and not self._maybe_more_output and not self._eof

    @property
    def unused_data(self) -> bytes:
        return self._unused

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        if self._header is not None:
            data = self._parse_header(data)
            if self._header is not None:
                return b""
        if self._d.eof:
            self._end(data)
            return b""
        data = self._tail + data if self._tail else data
        saved = self._d.copy()
        try:
            out = self._d.decompress(data, max_length)
        except zlib.error as e:
            out = _salvage(saved, data, max_length)
            self._account(out)
            self.failure, self._eof = f"corrupt gzip data: {e}", True
            return out
        self._tail = self._d.unconsumed_tail
        # A full output buffer may leave output pending inside zlib even with no input
        # left: ask again (with no new input) before reading more.
        self._maybe_more_output = max_length > 0 and len(out) >= max_length
        self._account(out)
        if self._d.eof:
            self._tail, self._maybe_more_output = b"", False
            self._end(self._d.unused_data)
        return out

    def _account(self, out: bytes) -> None:
        self._crc = zlib.crc32(out, self._crc)
        self._size += len(out)

    def _parse_header(self, data: bytes) -> bytes:
        """Add ``data`` to the header; once it is whole, record its fields and return the
        bytes after it (``b""`` while it is still incomplete)."""
        buf = cast(bytes, self._header) + data
        parsed = _gzip_header(buf)
        if parsed is None:
            if len(buf) > _MAX_GZIP_HEADER:
                raise ExtractError(Reason.MALFORMED_FILE, f"gzip header longer than {_MAX_GZIP_HEADER} bytes")
            self._header = buf
            return b""
        length, fields = parsed
        self._fields.extend(fields)
        self._header = None
        return buf[length:]

    def _end(self, data: bytes) -> None:
        self._trailer += data
        if len(self._trailer) < 8:
            return
        crc, size = struct.unpack_from("<II", self._trailer)
        if crc != self._crc or size != self._size & 0xFFFFFFFF:
            self.failure = "gzip data fails its CRC or length check"
        self._unused = self._trailer[8:]
        self._eof = True


def _gzip_header(buf: bytes) -> tuple[int, list[tuple[str, bytes]]] | None:
    """The length of the gzip header at the start of ``buf`` and its free-form fields, or
    ``None`` when ``buf`` does not hold all of it yet."""
    if len(buf) < 10:
        return None
    if buf[:3] != b"\x1f\x8b\x08" or buf[3] & 0xE0:
        raise ExtractError(Reason.MALFORMED_FILE, "corrupt gzip data: invalid header")
    flags = buf[3]
    pos = 10
    fields: list[tuple[str, bytes]] = []
    if flags & _GZIP_FEXTRA:
        if len(buf) < pos + 2:
            return None
        (xlen,) = struct.unpack_from("<H", buf, pos)
        pos += 2
        if len(buf) < pos + xlen:
            return None
        fields.append(("gzip extra field", buf[pos:pos + xlen]))
        pos += xlen
    for flag, label in ((_GZIP_FNAME, "gzip file name"), (_GZIP_FCOMMENT, "gzip comment")):
        if flags & flag:
            end = buf.find(b"\0", pos)
            if end < 0:
                return None
            fields.append((label, buf[pos:end]))
            pos = end + 1
    if flags & _GZIP_FHCRC:
        pos += 2
        if len(buf) < pos:
            return None
    return pos, [(label, value) for label, value in fields if value]


def _salvage(d: zlib._Decompress, data: bytes, max_length: int) -> bytes:
    """What ``d`` (a copy taken before the failing call) inflates from ``data`` before the
    corruption: fed in small steps, so only the step that fails loses its output."""
    out: list[bytes] = []
    got = 0
    for at in range(0, len(data), _SALVAGE_STEP):
        room = max_length - got if max_length > 0 else -1
        if room == 0:
            break
        try:
            piece = d.decompress(data[at:at + _SALVAGE_STEP], room) if room > 0 else d.decompress(
                data[at:at + _SALVAGE_STEP])
        except zlib.error:
            break
        out.append(piece)
        got += len(piece)
        if d.unconsumed_tail or d.eof:
            break
    return b"".join(out)


def _decoder_factory(fmt: Format, limits: Limits, leftovers: Leftovers) -> Callable[[], _Decoder]:
    if fmt is Format.GZIP:
        return lambda: _GzipDecoder(leftovers.fields)
    if fmt is Format.BZIP2:
        return bz2.BZ2Decompressor
    if fmt is Format.XZ:
        return lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=limits.max_decoder_memory)
    raise AssertionError(f"no decoder for {fmt}")


def decoded_chunks(read: Read, fmt: Format, limits: Limits, meter: Meter, chunk_size: int,
                   head: bytes = b"", leftovers: Leftovers | None = None) -> Iterator[bytes]:
    """The decompressed bytes of the ``fmt`` stream whose first bytes are ``head`` and
    whose remaining bytes come from ``read``.

    With ``leftovers``, header fields are recorded there and data after the last member
    that does not start another one ends the stream cleanly, kept in
    ``leftovers.trailing`` for the caller to scan; without it, such data is
    ``MALFORMED_FILE``."""
    if fmt is Format.ZSTD:
        return _zstd_chunks(read, limits, meter, chunk_size, head, leftovers)
    return gathered(_decoded_chunks(read, head, fmt, limits, meter, chunk_size, leftovers), chunk_size)


#: Output asked of a bz2/xz decoder per call. A decoder that fails drops what the
#: failing call had decoded; small steps keep that loss small (the text decoded before is
#: handed on first), and :func:`~panscan.extract.parts.gathered` joins the steps back into full chunks.
_DECODE_STEP = 1 << 16


def _decoded_chunks(
    read: Read, head: bytes, fmt: Format, limits: Limits, meter: Meter, chunk_size: int,
    leftovers: Leftovers | None,
) -> Iterator[bytes]:
    # gzip keeps a copy of its state and replays a failing call in small steps instead
    step = chunk_size if fmt is Format.GZIP else min(chunk_size, _DECODE_STEP)
    new_decoder = _decoder_factory(fmt, limits, leftovers if leftovers is not None else Leftovers())
    magic = MEMBER_MAGIC[fmt]
    decoder = new_decoder()
    data = head
    consumed = len(head)  # compressed bytes read for this stream (ratio denominator)
    produced = 0
    while True:
        meter.check_time()
        if decoder.eof:
            rest, more = _next_member(read, decoder.unused_data, len(magic), chunk_size)
            consumed += more
            if not rest:
                return
            if not rest.startswith(magic):
                if leftovers is not None:
                    leftovers.trailing = rest
                    return
                raise ExtractError(Reason.MALFORMED_FILE, f"unreadable data after the end of the {fmt} data")
            decoder = new_decoder()
            data = rest
        elif decoder.needs_input and not data:
            data = read(chunk_size)
            consumed += len(data)
            if not data:
                raise ExtractError(Reason.MALFORMED_FILE, f"{fmt} data ends early (truncated)")
        try:
            out = decoder.decompress(data, step)
        except lzma.LZMAError as e:
            if "memory" in str(e).lower():
                raise ExtractError(
                    Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
                    f"xz data needs more than {limits.max_decoder_memory} bytes of decoder memory",
                ) from None
            raise ExtractError(Reason.MALFORMED_FILE, f"corrupt {fmt} data: {e}") from None
        except (zlib.error, OSError) as e:  # bz2 reports corrupt data as OSError
            # The library messages name the fault ("invalid block type"), never the data.
            raise ExtractError(Reason.MALFORMED_FILE, f"corrupt {fmt} data: {e}") from None
        data = b""
        if out:
            produced += yield from _emit(out, meter, limits)
            check_ratio(produced, consumed, limits, fmt)
        failure = getattr(decoder, "failure", None)
        if failure:
            raise ExtractError(Reason.MALFORMED_FILE, failure)


def _emit(out: bytes, meter: Meter, limits: Limits) -> Generator[bytes, None, int]:
    """Yield what of decoded ``out`` fits the item's expansion budget (returning how much),
    then raise the budget's error if some did not fit."""
    fit = meter.fit(out, limits)
    if fit:
        yield fit
    if len(fit) < len(out):
        raise meter.over_expanded(limits)
    return len(fit)


def check_ratio(produced: int, consumed: int, limits: Limits, what: str) -> None:
    """Raise ``ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT`` when ``produced`` bytes made from
    ``consumed`` exceed ``max_ratio`` (judged only past :data:`RATIO_GRACE_BYTES`)."""
    if produced > RATIO_GRACE_BYTES and produced > limits.max_ratio * consumed:
        raise ExtractError(
            Reason.ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT,
            f"{what} data expanded {produced // max(consumed, 1)}:1 "
            f"(limit {limits.max_ratio:g}:1) after {produced} bytes",
        )


def _next_member(read: Read, rest: bytes, magic_len: int, chunk_size: int) -> tuple[bytes, int]:
    """What follows a finished member, and how many bytes were read for it: empty at a
    clean end (NUL padding skipped), else at least ``magic_len`` bytes (or all that is
    left) for the caller to test."""
    rest = rest.lstrip(b"\0")
    got = 0
    while len(rest) < magic_len:
        more = read(chunk_size)
        if not more:
            break
        got += len(more)
        rest = (rest + more).lstrip(b"\0")
    return rest, got


class _ZstdFrames:
    """zstd's frame layout followed over the compressed bytes before the decoder sees them.

    The decoder takes a stream cut inside a frame for a clean end, and fails (dropping the
    output of the failing call) on bytes after the last frame; walking the frames and block
    headers here tells a cut frame from a whole one, and keeps bytes that do not start a
    frame away from the decoder (``trailing``) so the caller can scan them raw.
    """

    _ZSTD_MAGIC = 0xFD2FB528
    _SKIPPABLE = range(0x184D2A50, 0x184D2A60)

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4  # bytes still wanted for the current field or payload
        self._field = b""  # a field's bytes, held back until it is whole
        self._payload = False  # counting through data the walker need not read
        self._then = "magic"  # the state after the payload
        self._checksum = False
        self._last = False
        self.trailing: bytes | None = None
        self.unchecked = False  # a frame without a content checksum was seen

    @property
    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._payload and not self._field

    def end(self) -> None:
        """The input ended: a few bytes where a frame would start are trailing data too."""
        if self._state == "magic" and not self._payload and self._field and self.trailing is None:
            self.trailing, self._field = self._field, b""

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` to hand to the decoder (a field that is not whole yet is
        held back until it is)."""
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            take = min(self._need - len(self._field) if not self._payload else self._need, len(data) - pos)
            if self._payload:
                out.append(data[pos:pos + take])
                pos += take
                self._need -= take
                if not self._need:
                    self._enter(self._then)
                continue
            self._field += data[pos:pos + take]
            pos += take
            if len(self._field) < self._need:
                break
            field, self._field = self._field, b""
            if self._state == "magic" and not self._is_magic(field):
                self.trailing = field + data[pos:]
                break
            out.append(field)
            self._parsed(field)
        return b"".join(out)

    def _is_magic(self, field: bytes) -> bool:
        magic = int.from_bytes(field, "little")
        return magic == self._ZSTD_MAGIC or magic in self._SKIPPABLE

    def _enter(self, state: str) -> None:
        self._payload = False
        self._state = state
        if state == "checksum":  # a frame's content checksum: 4 bytes the decoder checks
            self._count(4, "magic")
            return
        self._need = {"magic": 4, "skip size": 4, "descriptor": 1, "block header": 3}[state]

    def _count(self, n: int, then: str) -> None:
        if n == 0:
            self._enter(then)
            return
        self._payload, self._need, self._then = True, n, then

    def _parsed(self, field: bytes) -> None:
        value = int.from_bytes(field, "little")
        if self._state == "magic":
            self._enter("descriptor" if value == self._ZSTD_MAGIC else "skip size")
        elif self._state == "skip size":
            self._count(value, "magic")
        elif self._state == "descriptor":
            single = value >> 5 & 1
            self._checksum = bool(value >> 2 & 1)
            self.unchecked |= not self._checksum
            size_bytes = (1 if single else 0, 2, 4, 8)[value >> 6]
            self._count((0 if single else 1) + (0, 1, 2, 4)[value & 3] + size_bytes, "block header")
        elif self._state == "block header":
            self._last = bool(value & 1)
            kind = value >> 1 & 3
            after = ("checksum" if self._checksum else "magic") if self._last else "block header"
            self._count(1 if kind == 1 else value >> 3, after)


class _CountingSource:
    """``read`` behind the file interface zstandard's stream reader wants: counts the
    bytes, and hands over only whole frames' bytes as :class:`_ZstdFrames` finds them."""

    def __init__(self, read: Read, head: bytes) -> None:
        self._read = read
        self._head = head
        self.consumed = len(head)
        self.frames = _ZstdFrames()
        self._done = False
        self.copy: bytearray | None = bytearray()  # what was handed over, up to UNVERIFIED_MAX

    def read(self, n: int = -1) -> bytes:
        while not self._done:
            if self._head:
                data, self._head = self._head, b""
            else:
                data = self._read(n if n > 0 else 1 << 16)
                self.consumed += len(data)
            if not data:
                self._done = True
                break
            passed = self.frames.feed(data)
            if self.frames.trailing is not None:
                self._done = True
            if self.copy is not None:
                if len(self.copy) + len(passed) <= UNVERIFIED_MAX:
                    self.copy += passed
                else:
                    self.copy = None
            if passed:
                return passed
        return b""


def _zstd_chunks(read: Read, limits: Limits, meter: Meter, chunk_size: int, head: bytes,
                 leftovers: Leftovers | None) -> Iterator[bytes]:
    source = _CountingSource(read, head)
    # max_window_size bounds the decoder's memory the way memlimit does for xz; the stream
    # reader's read(n) returns at most n bytes, so one call never produces a bomb's worth.
    reader = zstandard.ZstdDecompressor(max_window_size=_zstd_window(limits)).stream_reader(
        cast(BinaryIO, source), read_size=min(chunk_size, 1 << 17), read_across_frames=True, closefd=False)
    produced = 0
    while True:
        meter.check_time()
        try:
            out = reader.read(chunk_size)
        except zstandard.ZstdError as e:
            if "memory" in str(e).lower() or "window" in str(e).lower():
                raise ExtractError(
                    Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
                    f"zstd data needs more than {limits.max_decoder_memory} bytes of decoder memory",
                ) from None
            raise ExtractError(Reason.MALFORMED_FILE, f"corrupt zstd data: {e}") from None
        if not out:
            break
        produced += yield from _emit(out, meter, limits)
        check_ratio(produced, source.consumed, limits, "zstd")
    frames = source.frames
    frames.end()
    if leftovers is not None and frames.unchecked and source.copy:
        leftovers.unverified = bytes(source.copy)
    if frames.trailing is not None:
        if leftovers is None:
            raise ExtractError(Reason.MALFORMED_FILE, "unreadable data after the end of the zstd data")
        leftovers.trailing = frames.trailing
    elif not frames.at_boundary:
        raise ExtractError(Reason.MALFORMED_FILE, "zstd data ends early (truncated)")


def _zstd_window(limits: Limits) -> int:
    # zstandard accepts only powers of two from 1 KiB (ZSTD_WINDOWLOG_MIN 10) upwards.
    return 1 << max(10, limits.max_decoder_memory.bit_length() - 1)
