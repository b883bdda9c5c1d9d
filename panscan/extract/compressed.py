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
  compressed stream -> ``MALFORMED_FILE`` (a zstd stream cut at a frame's end cannot be
  told from a complete one and is not reported); more than ``max_expanded_bytes`` produced
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
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

import zstandard

from panscan.extract.budget import RATIO_GRACE_BYTES, ExtractError, Limits, Meter
from panscan.extract.sniff import MEMBER_MAGIC, Format
from panscan.model import Reason

if TYPE_CHECKING:  # re-exported lazily (expand imports this module)
    from panscan.extract.expand import Problem, Stream, open_streams

__all__ = ["DECODED_FORMATS", "ExtractError", "Limits", "Meter", "Problem", "Stream",
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


class _Decoder(Protocol):
    """The shape of ``bz2.BZ2Decompressor`` / ``lzma.LZMADecompressor``."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _GzipDecoder:
    """zlib's gzip decoder behind the bz2/lzma interface (Python 3.11's zlib has no
    ``needs_input``): input it could not take is kept and fed back before any new input."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer, checked
        self._tail = b""
        self._maybe_more_output = False

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._tail and not self._maybe_more_output

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._d.decompress(self._tail + data if self._tail else data, max_length)
        self._tail = self._d.unconsumed_tail
        # A full output buffer may leave output pending inside zlib even with no input
        # left: ask again (with no new input) before reading more.
        self._maybe_more_output = max_length > 0 and len(out) >= max_length
        return out


def _decoder_factory(fmt: Format, limits: Limits) -> Callable[[], _Decoder]:
    if fmt is Format.GZIP:
        return _GzipDecoder
    if fmt is Format.BZIP2:
        return bz2.BZ2Decompressor
    if fmt is Format.XZ:
        return lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=limits.max_decoder_memory)
    raise AssertionError(f"no decoder for {fmt}")


def decoded_chunks(read: Read, fmt: Format, limits: Limits, meter: Meter, chunk_size: int,
                   head: bytes = b"") -> Iterator[bytes]:
    """The decompressed bytes of the ``fmt`` stream whose first bytes are ``head`` and
    whose remaining bytes come from ``read``."""
    if fmt is Format.ZSTD:
        return _zstd_chunks(read, limits, meter, chunk_size, head)
    return _decoded_chunks(read, head, fmt, limits, meter, chunk_size)


def _decoded_chunks(
    read: Read, head: bytes, fmt: Format, limits: Limits, meter: Meter, chunk_size: int
) -> Iterator[bytes]:
    new_decoder = _decoder_factory(fmt, limits)
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
                raise ExtractError(Reason.MALFORMED_FILE, f"unreadable data after the end of the {fmt} data")
            decoder = new_decoder()
            data = rest
        elif decoder.needs_input and not data:
            data = read(chunk_size)
            consumed += len(data)
            if not data:
                raise ExtractError(Reason.MALFORMED_FILE, f"{fmt} data ends early (truncated)")
        try:
            out = decoder.decompress(data, chunk_size)
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
        if not out:
            continue
        produced += yield from _emit(out, meter, limits)
        check_ratio(produced, consumed, limits, fmt)


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


class _CountingSource:
    """``read`` behind the file interface zstandard's stream reader wants, counting bytes."""

    def __init__(self, read: Read, head: bytes) -> None:
        self._read = read
        self._head = head
        self.consumed = len(head)

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        data = self._read(n if n > 0 else 1 << 16)
        self.consumed += len(data)
        return data


def _zstd_chunks(read: Read, limits: Limits, meter: Meter, chunk_size: int, head: bytes) -> Iterator[bytes]:
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
            if produced == 0 and source.consumed <= len(MEMBER_MAGIC[Format.ZSTD]) + 1:
                raise ExtractError(Reason.MALFORMED_FILE, "zstd data ends early (truncated)")
            return
        produced += yield from _emit(out, meter, limits)
        check_ratio(produced, source.consumed, limits, "zstd")


def _zstd_window(limits: Limits) -> int:
    # zstandard accepts only powers of two from 1 KiB (ZSTD_WINDOWLOG_MIN 10) upwards.
    return 1 << max(10, limits.max_decoder_memory.bit_length() - 1)
