"""What an item's bytes are, judged by their first bytes only.

Names and extensions are never consulted: a ``.txt`` that is really gzip is decompressed,
and a ``.gz`` that is really text is scanned as text. The tests here are deliberately
stricter than the bare magic numbers (bzip2 must be followed by its block-size digit and a
block or end-of-stream marker) so that a text file that merely starts with ``BZh`` is
still scanned as text rather than reported as a malformed bzip2 file.
"""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    RAW = "raw"  # anything else: scanned as the bytes it is


#: How many leading bytes :func:`sniff` needs to decide (fewer is fine at end of file).
MAGIC_LEN = 10

#: The bytes every member/stream of a format starts with; a decoder that reaches the end
#: of one member looks for this to decide whether another member follows.
MEMBER_MAGIC: dict[Format, bytes] = {
    Format.GZIP: b"\x1f\x8b",
    Format.BZIP2: b"BZh",
    Format.XZ: b"\xfd7zXZ\x00",
}

_GZIP_DEFLATE = b"\x1f\x8b\x08"  # method 8 (deflate) is the only one gzip defines
_BZIP2_BLOCK = b"\x31\x41\x59\x26\x53\x59"  # pi: start of a compressed block
_BZIP2_END = b"\x17\x72\x45\x38\x50\x90"  # sqrt(pi): end of stream (empty input)


def sniff(head: bytes) -> Format:
    """The format of data starting with ``head`` (pass at least :data:`MAGIC_LEN` bytes
    unless the data is shorter)."""
    if head.startswith(_GZIP_DEFLATE):
        return Format.GZIP
    if head.startswith(MEMBER_MAGIC[Format.XZ]):
        return Format.XZ
    if (
        head.startswith(b"BZh")
        and len(head) >= 10
        and 0x31 <= head[3] <= 0x39
        and head[4:10] in (_BZIP2_BLOCK, _BZIP2_END)
    ):
        return Format.BZIP2
    return Format.RAW
