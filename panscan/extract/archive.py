"""Zip and tar members as :class:`~panscan.extract.parts.Part`\\ s (the handler contract).

Both yield every regular member as an *embedded* part (its raw bytes), so the framework
sniffs each member and expands it in turn: a zip in a tar, a gzip in a zip.

``zip_parts`` needs a seekable file (the framework spools a zip that arrives as a stream).
It reads the central directory with :mod:`zipfile` but never trusts a declared size: the
framework counts the bytes a member actually produces, zipfile stops a member at its
declared size and a member whose data does not match its CRC is reported
``MALFORMED_FILE`` after what it produced. An encrypted member raises
``INVALID_ENCRYPTION`` from its chunks and the other members are still read. A zip whose
central directory cannot be read (a truncated upload) is read from its local headers as
far as they go, then reported ``MALFORMED_FILE``. Members whose bytes overlap are refused
before any is read. :func:`zip_unread` gives the ranges that are not member data
(headers, directory, comments, appended data) for the framework to scan raw.

``tar_parts`` reads forward only (tar is a stream format), so a tar inside a gzip is never
spooled. Regular files (and entries of unknown types) are members; symlinks, hard links,
devices, FIFOs and directories are neither followed nor read. Header blocks, pax records and
padding are yielded as raw ``(tar headers)`` parts, and data after the end marker as an
embedded part. A header with a bad checksum or a cut-off archive raises ``MALFORMED_FILE``
(the framework then scans what follows as raw bytes).
"""

from __future__ import annotations

import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from panscan.extract.budget import ExtractError, Limits
from panscan.extract.compressed import check_ratio
from panscan.extract.parts import Part
from panscan.extract.sniff import tar_checksum_ok
from panscan.model import Reason

_READ = 1 << 18  # bytes per member read: the framework re-chunks to the scan's chunk size

# ---------------------------------------------------------------------------------- zip

_EOCD = b"PK\x05\x06"
_EOCD_LEN = 22
_LOCAL = b"PK\x03\x04"
_LOCAL_LEN = 30
_LOCAL_FMT = "<4sHHHHHIIIHH"
#: A central directory entry is at least 46 bytes; zipfile builds one object per entry, so
#: the directory's size bounds the memory it takes. Past this, the entry count is checked
#: against max_members before zipfile sees it.
_CD_ENTRY_MIN = 46
_MAX_VERSION = 100  # "version needed to extract": 6.3 is the latest APPNOTE
# stored, deflate, deflate64, bzip2, lzma, zstd, xz, ppmd, AES: methods a header may name
_KNOWN_METHODS = frozenset({0, 8, 9, 12, 14, 93, 95, 98, 99})
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError,
               OSError, struct.error, ValueError, UnicodeDecodeError)


def open_zip(f: BinaryIO, limits: Limits) -> zipfile.ZipFile:
    """``f`` (seekable, at the zip's first byte) opened with zipfile, after checking from
    the end-of-central-directory record that its entry count is within ``max_members``
    (zipfile would otherwise hold one object per entry, however many a header declares).

    Raises ``ARCHIVE_TOTAL_FILES_OVER_LIMIT`` or ``MALFORMED_FILE``."""
    try:
        f.seek(0, 2)
        size = f.tell()
        tail_len = min(size, _EOCD_LEN + 0xFFFF)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        f.seek(0)
    except OSError as e:
        raise ExtractError(Reason.MALFORMED_FILE, f"zip cannot be read: {e.strerror or e}") from None
    at = tail.rfind(_EOCD)
    if at >= 0 and len(tail) - at >= _EOCD_LEN:
        entries, cd_size = struct.unpack_from("<HI", tail, at + 10)
        if entries != 0xFFFF and entries > limits.max_members:
            raise ExtractError(Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT,
                               f"zip declares {entries} members (limit {limits.max_members})")
        if cd_size != 0xFFFFFFFF and cd_size // _CD_ENTRY_MIN > limits.max_members * 4:
            raise ExtractError(Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT,
                               f"zip central directory of {cd_size} bytes exceeds the member limit")
    try:
        zf = zipfile.ZipFile(f)
    except (*_ZIP_ERRORS, NotImplementedError) as e:  # NotImplementedError: "zip file version 12.7"
        raise ExtractError(Reason.MALFORMED_FILE, f"unreadable zip: {_why(e)}") from None
    try:
        _member_extents(zf, f)  # refuses members that share bytes before any is read
    except ExtractError:
        zf.close()
        raise
    return zf


_OVERLAP = "zip members overlap"


@dataclass(frozen=True)
class ZipUnread:
    """The bytes of a zip outside its members' data: ``structure`` (headers, the central
    directory, comments, gaps: scanned raw) and ``after`` (where data appended after the
    end record starts, or ``None``)."""

    structure: list[tuple[int, int | None]]
    after: int | None


def _member_extents(zf: zipfile.ZipFile, f: BinaryIO) -> list[tuple[int, int, int]]:
    """``(header start, data start, data end)`` of every member, in file order.

    Members whose bytes overlap are refused (``MALFORMED_FILE``): that is how a zip of a
    few kilobytes declares gigabytes ("overlapping" and "quoted overlap" bombs), and no
    zip tool writes one. A member without a readable local header is left to the reader,
    which reports it."""
    extents: list[tuple[int, int, int]] = []
    for info in zf.infolist():
        header = _local_header(f, info.header_offset)
        if header is None:
            continue
        start = header[1]
        extents.append((info.header_offset, start, start + info.compress_size))
    extents.sort()
    end = -1
    for header_at, _, data_end in extents:
        if header_at < end:
            raise ExtractError(Reason.MALFORMED_FILE, f"{_OVERLAP}: one member's bytes lie inside another's "
                                                      f"(a zip bomb technique); not expanded")
        end = data_end
    return extents


def zip_unread(f: BinaryIO) -> ZipUnread:
    """What of the zip in ``f`` (seekable, at its first byte) is not a member's data."""
    try:
        zf = zipfile.ZipFile(f)
    except (*_ZIP_ERRORS, NotImplementedError) as e:
        raise ExtractError(Reason.MALFORMED_FILE, f"unreadable zip: {_why(e)}") from None
    with zf:
        extents = _member_extents(zf, f)
    f.seek(0, 2)
    size = f.tell()
    after = _end_of_zip(f, size)
    limit = size if after is None else after
    structure: list[tuple[int, int | None]] = []
    pos = 0
    for _, data_start, data_end in extents:
        if data_start > pos:
            structure.append((pos, data_start))
        pos = max(pos, data_end)
    if pos < limit:
        structure.append((pos, limit))
    return ZipUnread(structure, after)


def _end_of_zip(f: BinaryIO, size: int) -> int | None:
    """Where the bytes after the zip's end record (and its comment) start, or ``None``
    when the record ends the file."""
    tail_len = min(size, _EOCD_LEN + 0xFFFF)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_EOCD)
    while at >= 0:
        if len(tail) - at >= _EOCD_LEN:
            (comment_len,) = struct.unpack_from("<H", tail, at + 20)
            end = size - tail_len + at + _EOCD_LEN + comment_len
            if end <= size:
                return end if end < size else None
        at = tail.rfind(_EOCD, 0, at)
    return None


def zip_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """The zip's members (directories skipped) as embedded parts, in central directory
    order; from the local headers when the central directory is unreadable."""
    try:
        zf = open_zip(f, limits)
    except ExtractError as e:
        if e.reason is not Reason.MALFORMED_FILE or e.detail.startswith(_OVERLAP):
            raise
        f.seek(0)
        yield from _local_parts(f, e.detail)
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            yield Part(_member_name(info.filename), _zip_member_chunks(zf, info, f, limits), embedded=True)


def zip_member_part(zf: zipfile.ZipFile, info: zipfile.ZipInfo, f: BinaryIO, limits: Limits) -> Part:
    """One member of ``zf`` (opened on ``f``) as :func:`zip_parts` yields it, for handlers of
    zip-based formats (office documents) that read some members themselves."""
    return Part(_member_name(info.filename), _zip_member_chunks(zf, info, f, limits), embedded=True)


def _zip_member_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, f: BinaryIO,
                       limits: Limits) -> Iterator[bytes]:
    header = _local_header(f, info.header_offset)
    if info.flag_bits & 0x1 or (header is not None and header[0] & 0x1):
        raise ExtractError(Reason.INVALID_ENCRYPTION, "zip member is encrypted")
    if header is not None and info.compress_type in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        # Decoded here rather than by zipfile, which stops at the declared size and raises
        # its CRC error in the same read that would return the last bytes: deflate data
        # ends itself, so every byte it holds is produced (and counted), then checked.
        start = header[1]
        progress = _Progress()
        if info.compress_type == zipfile.ZIP_DEFLATED:
            chunks = _local_deflated(f, start, progress)
        else:
            chunks = _local_stored(f, start, info.compress_size, progress)
        crc = size = 0
        for data in chunks:
            crc = zlib.crc32(data, crc)
            size += len(data)
            yield data
            # Bombs are judged here, on the compressed bytes the decoder really took for
            # this member (the container's read-ahead would hide them).
            check_ratio(size, progress.consumed, limits, _member_name(info.filename))
        used = (progress.end or start) - start
        if crc != info.CRC or size != info.file_size or used != info.compress_size:
            raise ExtractError(Reason.MALFORMED_FILE,
                               f"zip member holds {size} bytes from {used} that do not match its header "
                               f"(sizes or CRC)")
        return
    try:
        with zf.open(info) as member:
            while data := member.read(_READ):
                yield data
    except NotImplementedError as e:  # compression methods zipfile lacks (deflate64, ...)
        raise ExtractError(Reason.UNSUPPORTED_FILE_TYPE, f"zip member: {_why(e)}") from None
    except RuntimeError as e:  # zipfile's "password required"
        raise ExtractError(Reason.INVALID_ENCRYPTION, f"zip member: {_why(e)}") from None
    except _ZIP_ERRORS as e:
        raise ExtractError(Reason.MALFORMED_FILE, f"zip member: {_why(e)}") from None


def _local_header(f: BinaryIO, offset: int) -> tuple[int, int] | None:
    """The flags of the local header at ``offset`` and where its data starts; ``None``
    when no local header is there (zipfile then reports the member malformed)."""
    # The local header's flags may say "encrypted" where the central directory does not;
    # either is enough to refuse the member rather than feed ciphertext to a decoder.
    try:
        f.seek(offset)
        header = f.read(_LOCAL_LEN)
    except (OSError, ValueError):  # ValueError: a negative offset (an end record that lies about the directory)
        return None
    if len(header) < _LOCAL_LEN or not header.startswith(_LOCAL):
        return None
    _, _, flags, _, _, _, _, _, _, name_len, extra_len = struct.unpack(_LOCAL_FMT, header)
    return flags, offset + _LOCAL_LEN + name_len + extra_len


class _Progress:
    __slots__ = ("consumed", "end")

    def __init__(self) -> None:
        self.end: int | None = None  # offset after the member's data, once known
        self.consumed = 0  # compressed bytes the decoder has taken so far


def _local_parts(f: BinaryIO, why: str) -> Iterator[Part]:
    """Members found by walking local headers from the start, for a zip whose central
    directory is gone. Ends with ``MALFORMED_FILE`` (the directory was unreadable) once no
    further member can be located."""
    pos = 0
    while True:
        f.seek(pos)
        header = f.read(_LOCAL_LEN)
        if len(header) < _LOCAL_LEN or not header.startswith(_LOCAL):
            break
        _, version, flags, method, _, _, _, csize, _, name_len, extra_len = struct.unpack(_LOCAL_FMT, header)
        if version > _MAX_VERSION or method not in _KNOWN_METHODS:
            break  # not a header a zip tool wrote: do not read meaning into garbage
        raw_name = f.read(name_len)
        start = pos + _LOCAL_LEN + name_len + extra_len
        name = _member_name(raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace"))
        known_size = not flags & 0x8  # bit 3: sizes follow the data instead
        if flags & 0x1:
            yield Part(name, _refuse(Reason.INVALID_ENCRYPTION, "zip member is encrypted"), embedded=True)
            if not known_size:
                break
            pos = start + csize
            continue
        progress = _Progress()
        if method == zipfile.ZIP_DEFLATED:
            chunks = _local_deflated(f, start, progress)
        elif method == zipfile.ZIP_STORED and known_size:
            chunks = _local_stored(f, start, csize, progress)
        else:
            break
        if not name.endswith("/"):
            yield Part(name, chunks, embedded=True)
        else:
            for _ in chunks:
                pass
        if progress.end is None:
            break  # the member was not read to its end: where the next one starts is unknown
        pos = progress.end
        if flags & 0x8:
            f.seek(pos)
            sig = f.read(4)
            pos += 16 if sig == b"PK\x07\x08" else 12  # the data descriptor, signature optional
    raise ExtractError(Reason.MALFORMED_FILE, f"{why}; members read from local headers")


def _local_deflated(f: BinaryIO, start: int, progress: _Progress) -> Iterator[bytes]:
    # Raw deflate ends itself: the compressed size in the header is not needed (or trusted).
    d = zlib.decompressobj(-15)
    pos = start
    try:
        while not d.eof:
            f.seek(pos)
            data = f.read(1 << 16)
            if not data:
                raise ExtractError(Reason.MALFORMED_FILE, "zip member data ends early (truncated)")
            pos += len(data)
            out = d.decompress(data, _READ)
            while True:
                progress.consumed = pos - start - len(d.unconsumed_tail)
                if out:
                    yield out
                if not d.unconsumed_tail or d.eof:
                    break
                out = d.decompress(d.unconsumed_tail, _READ)
        progress.end = pos - len(d.unused_data)
    except zlib.error as e:
        raise ExtractError(Reason.MALFORMED_FILE, f"zip member: {_why(e)}") from None


def _local_stored(f: BinaryIO, start: int, size: int, progress: _Progress) -> Iterator[bytes]:
    pos, left = start, size
    while left > 0:
        f.seek(pos)
        data = f.read(min(left, _READ))
        if not data:
            raise ExtractError(Reason.MALFORMED_FILE, "zip member data ends early (truncated)")
        pos += len(data)
        left -= len(data)
        progress.consumed = pos - start
        yield data
    progress.end = pos


def _refuse(reason: Reason, detail: str) -> Iterator[bytes]:
    raise ExtractError(reason, detail)
    yield b""  # pragma: no cover - makes this a generator: raised when first iterated


def _member_name(name: str) -> str:
    # Names are labels only (nothing is written to disk), but a leading "/" would make
    # "a.zip//etc/x" out of the joined member path.
    return name.lstrip("/") or "(unnamed)"


def _why(e: BaseException) -> str:
    # Library messages name the fault and at most a member name, never member content.
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# ---------------------------------------------------------------------------------- tar

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_NO_DATA = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})  # links, devices, dir, FIFO
_META = frozenset({b"x", b"g", b"L", b"K"})  # pax, pax global, GNU long name/link
#: pax and GNU long-name headers are read into memory whole: bound them.
_MAX_META = 1 << 20


_TAR_HEADERS = "(tar headers)"


def tar_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """The tar's regular members as embedded parts, reading ``f`` forward only. A member
    not read to its end is skipped over when the next part is asked for.

    Nothing else goes unseen: header blocks (names, link targets, owners), pax and GNU
    long-name records and the padding after each member are yielded as raw
    ``(tar headers)`` backstop parts, the data of entries that are not regular files
    (unknown types) as members, and whatever follows the end-of-archive marker as an
    embedded ``(after the tar data)`` part."""
    headers = _Gathered()
    try:
        yield from _tar_members(f, headers)
    except ExtractError:
        if headers.size:
            yield headers.part()  # the headers read before the failure are still scanned
        raise
    if headers.size:
        yield headers.part()
    rest = _rest(f)
    if rest is not None:
        yield Part("(after the tar data)", rest, embedded=True)


class _Gathered:
    """Header bytes gathered for a backstop scan, handed over a megabyte at a time."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        if data.strip(b"\0"):
            self.pieces.append(data)
            self.size += len(data)

    def full(self) -> Part | None:
        return self.part() if self.size >= _MAX_META else None

    def part(self) -> Part:
        data, self.pieces, self.size = b"".join(self.pieces), [], 0
        return Part(_TAR_HEADERS, iter((data,)), backstop=True)


def _tar_members(f: BinaryIO, headers: _Gathered) -> Iterator[Part]:
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        block = _read_exact(f, _BLOCK)
        if not block or block == _ZERO_BLOCK:
            return  # end of archive: what follows is read by tar_parts
        if len(block) < _BLOCK:
            raise ExtractError(Reason.MALFORMED_FILE, "tar data ends early (truncated)")
        if not tar_checksum_ok(block):
            raise ExtractError(Reason.MALFORMED_FILE, "tar header checksum mismatch")
        headers.add(block)
        typeflag = block[156:157]
        size = _tar_number(block[124:136])
        if typeflag in _META:
            if size > _MAX_META:
                raise ExtractError(Reason.MALFORMED_FILE, f"tar extended header of {size} bytes")
            data = _read_exact(f, _padded(size))
            if len(data) < _padded(size):
                raise ExtractError(Reason.MALFORMED_FILE, "tar data ends early (truncated)")
            headers.add(data)
            if typeflag == b"x":
                pax = _parse_pax(data[:size])
            elif typeflag == b"L":
                long_name = data[:size].split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if (full := headers.full()) is not None:
            yield full
        name = pax.get("path") or long_name or _header_name(block)
        if "size" in pax:
            size = _pax_int(pax["size"])
        pax, long_name = {}, None
        if typeflag == b"S" and block[482]:
            _skip_sparse_extensions(f, headers)
        if typeflag in _NO_DATA:
            continue  # never followed: a link's target or a device is not this archive's data
        left = [size]
        # Regular files, and entries of types this reader does not know: their data is
        # scanned all the same rather than skipped unseen.
        yield Part(_member_name(name), _tar_member_chunks(f, left), embedded=True)
        _skip(f, left[0])
        headers.add(_read_exact(f, _padded(size) - size))
        if (full := headers.full()) is not None:
            yield full


def _rest(f: BinaryIO) -> Iterator[bytes] | None:
    """The bytes after a tar's end-of-archive marker, when any of them is not zero (the
    marker's second block and the record padding are zeros)."""
    while True:
        data = f.read(_READ)
        if not data:
            return None
        if data.strip(b"\0"):
            return _then(data, f)


def _then(first: bytes, f: BinaryIO) -> Iterator[bytes]:
    yield first
    while data := f.read(_READ):
        yield data


def _tar_member_chunks(f: BinaryIO, left: list[int]) -> Iterator[bytes]:
    while left[0] > 0:
        data = f.read(min(left[0], _READ))
        if not data:
            raise ExtractError(Reason.MALFORMED_FILE, "tar data ends early (truncated)")
        left[0] -= len(data)
        yield data


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = f.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _skip(f: BinaryIO, n: int) -> None:
    while n > 0:
        data = f.read(min(n, _READ))
        if not data:
            raise ExtractError(Reason.MALFORMED_FILE, "tar data ends early (truncated)")
        n -= len(data)


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _tar_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        if field[0] == 0xFF:
            raise ExtractError(Reason.MALFORMED_FILE, "tar header with a negative size")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ExtractError(Reason.MALFORMED_FILE, "tar header with an unreadable size") from None


def _header_name(block: bytes) -> str:
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX: a prefix field (GNU uses those bytes otherwise)
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ExtractError(Reason.MALFORMED_FILE, "unreadable tar pax header") from None
        if length <= 0 or pos + length > len(data):
            raise ExtractError(Reason.MALFORMED_FILE, "unreadable tar pax header")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records


def _pax_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ExtractError(Reason.MALFORMED_FILE, "tar pax size is not a number") from None
    if n < 0:
        raise ExtractError(Reason.MALFORMED_FILE, "tar pax size is negative")
    return n


def _skip_sparse_extensions(f: BinaryIO, headers: _Gathered) -> None:
    # Old GNU sparse headers continue in extension blocks until one says it is the last.
    while True:
        block = _read_exact(f, _BLOCK)
        if len(block) < _BLOCK:
            raise ExtractError(Reason.MALFORMED_FILE, "tar data ends early (truncated)")
        headers.add(block)
        if not block[504]:
            return
