"""Byte streams from an item's raw bytes: gzip, bzip2 and xz decompressed, anything else as is.

Usage by a worker::

    meter = Meter()
    try:
        for stream in open_streams(raw, limits, chunk_size, meter=meter):
            for chunk in stream.chunks:
                ...                      # scan chunk
    except ExtractError as e:
        ...                              # item is partial: e.reason, e.detail
    bytes_scanned = meter.bytes_in       # raw bytes consumed from the item

What callers may rely on:

* The format is decided by magic bytes only (:mod:`panscan.extract.sniff`). A compressed
  item yields one :class:`Stream` of decompressed chunks; anything else yields one
  :class:`Stream` of its raw bytes. ``member`` is ``None`` for both (archives come later).
* Every chunk is non-empty ``bytes`` of at most ``chunk_size`` bytes; raw chunks are exactly
  ``chunk_size`` except the last. Memory is bounded by a few ``chunk_size`` buffers plus the
  decoder's own state (capped by ``Limits.max_decoder_memory`` for xz), whatever the input:
  every decompressor call is limited to ``chunk_size`` bytes of output.
* Concatenated gzip members, bzip2 streams and xz streams are decoded one after another
  into the same stream; NUL padding between or after them is ignored (as gzip and xz do).
* ``open_streams`` and the chunk iterators raise only :class:`ExtractError`, and only after
  yielding everything decoded before the problem: truncated, corrupt, or trailing non-padding
  data after a compressed stream -> ``MALFORMED_FILE``; more than ``max_expanded_bytes``
  produced -> ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT`` (exactly ``max_expanded_bytes``
  are yielded first); ratio over ``max_ratio`` -> ``ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT``;
  an xz stream demanding more than ``max_decoder_memory`` ->
  ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT``; ``max_item_seconds`` passed ->
  ``TIME_CUT_OFF_REACHED``; the raw file failing to read -> ``READ_ERROR``.
* ``meter.bytes_in`` counts raw bytes read from ``raw`` (read ahead in ``chunk_size``
  blocks, so it may run ahead of what a decoder has consumed); ``meter.bytes_expanded``
  counts decompressed bytes yielded. The compression ratio compares the two for one
  decompressed stream, so read-ahead can only make it look lower, never trip it early.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from panscan.extract.budget import RATIO_GRACE_BYTES, ExtractError, Limits, Meter
from panscan.extract.sniff import MAGIC_LEN, MEMBER_MAGIC, Format, sniff
from panscan.model import Reason

__all__ = ["ExtractError", "Limits", "Meter", "Stream", "open_streams"]

DEFAULT_CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class Stream:
    """One byte stream to scan: ``member`` is its path inside containers (``None`` for the
    item itself); ``chunks`` yields its bytes in order, and may raise ``ExtractError``."""

    member: str | None
    chunks: Iterator[bytes]


def open_streams(
    raw: BinaryIO,
    limits: Limits,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    meter: Meter | None = None,
) -> Iterator[Stream]:
    """The streams inside ``raw`` (read from its current position to its end).

    Pass a :class:`Meter` to learn how many raw bytes were consumed; its clock starts here
    unless already started. Streams must be consumed in order (each reads ``raw`` lazily).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    meter = meter if meter is not None else Meter()
    meter.start(limits)
    head = _read_full(raw, MAGIC_LEN, meter)
    fmt = sniff(head)
    if fmt is Format.RAW:
        yield Stream(None, _raw_chunks(raw, head, meter, chunk_size))
    else:
        yield Stream(None, _decoded_chunks(raw, head, fmt, limits, meter, chunk_size))


def _read_full(raw: BinaryIO, n: int, meter: Meter) -> bytes:
    """Up to ``n`` bytes, fewer only at end of file (pipes and sockets return short reads)."""
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


def _raw_chunks(raw: BinaryIO, head: bytes, meter: Meter, chunk_size: int) -> Iterator[bytes]:
    buf = head
    while len(buf) > chunk_size:  # only when chunk_size is smaller than the sniffed head
        yield buf[:chunk_size]
        buf = buf[chunk_size:]
    while True:
        meter.check_time()
        data = _read_full(raw, chunk_size - len(buf), meter)
        chunk = buf + data if buf else data
        buf = b""
        if chunk:
            yield chunk
        if len(chunk) < chunk_size:
            return


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


def _decoded_chunks(
    raw: BinaryIO, head: bytes, fmt: Format, limits: Limits, meter: Meter, chunk_size: int
) -> Iterator[bytes]:
    new_decoder = _decoder_factory(fmt, limits)
    magic = MEMBER_MAGIC[fmt]
    decoder = new_decoder()
    data = head
    consumed = len(head)  # raw bytes read for this stream (ratio denominator)
    produced = 0
    while True:
        meter.check_time()
        if decoder.eof:
            before = meter.bytes_in
            rest = _next_member(raw, decoder.unused_data, len(magic), meter, chunk_size)
            consumed += meter.bytes_in - before
            if not rest:
                return
            if not rest.startswith(magic):
                raise ExtractError(Reason.MALFORMED_FILE, f"unreadable data after the end of the {fmt} data")
            decoder = new_decoder()
            data = rest
        elif decoder.needs_input and not data:
            data = _read_full(raw, chunk_size, meter)
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
        allowed = limits.max_expanded_bytes - meter.bytes_expanded
        if len(out) > allowed:
            if allowed > 0:
                meter.bytes_expanded += allowed
                yield out[:allowed]
            raise ExtractError(
                Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
                f"decompressed more than {limits.max_expanded_bytes} bytes",
            )
        meter.bytes_expanded += len(out)
        produced += len(out)
        yield out
        if produced > RATIO_GRACE_BYTES and produced > limits.max_ratio * consumed:
            raise ExtractError(
                Reason.ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT,
                f"{fmt} data expanded {produced // max(consumed, 1)}:1 "
                f"(limit {limits.max_ratio:g}:1) after {produced} bytes",
            )


def _next_member(raw: BinaryIO, rest: bytes, magic_len: int, meter: Meter, chunk_size: int) -> bytes:
    """What follows a finished member: empty at a clean end (NUL padding skipped), else at
    least ``magic_len`` bytes (or all that is left) for the caller to test."""
    rest = rest.lstrip(b"\0")
    while len(rest) < magic_len:
        more = _read_full(raw, chunk_size, meter)
        if not more:
            break
        rest = (rest + more).lstrip(b"\0")
    return rest
