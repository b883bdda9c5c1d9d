"""What an item's bytes are, judged by their content only.

Names and extensions are never consulted: a ``.txt`` that is really gzip is decompressed,
and a ``.gz`` that is really text is scanned as text. The tests here are deliberately
stricter than the bare magic numbers (bzip2 must be followed by its block-size digit and a
block or end-of-stream marker; a tar header must carry a valid checksum; an email needs a
run of ``Name: value`` header lines from the first byte (after an mbox ``From `` line) with
at least two common mail headers, one of them From/To/Subject/Date/Received/MIME-Version/
Message-ID) so that a text file that merely starts like a
container is still scanned as text rather than reported as a malformed container.

Two stages: :func:`sniff` looks at the first :data:`MAGIC_LEN` bytes and says ``ZIP`` for
every zip; :func:`zip_flavour` then looks inside an opened zip to tell OOXML (docx, xlsx,
pptx) and OpenDocument (odt, ods) from a plain zip.
"""

from __future__ import annotations

import re
import zipfile
from enum import StrEnum


class Format(StrEnum):
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"
    ZIP = "zip"
    OOXML = "ooxml"  # a zip with [Content_Types].xml (docx, xlsx, pptx)
    ODF = "odf"  # a zip whose first member is an OpenDocument mimetype (odt, ods, odp)
    TAR = "tar"
    SEVEN_ZIP = "7z"
    PDF = "pdf"
    RTF = "rtf"
    EMAIL = "email"  # one RFC 5322 message (.eml) or an mbox
    OLE2 = "ole2"  # legacy Office: scanned as raw bytes (the matcher reads its UTF-16 text)
    RAW = "raw"  # anything else: scanned as the bytes it is

    @property
    def is_container(self) -> bool:
        """True when the bytes are decoded or unpacked before scanning (False for RAW and
        OLE2, which are scanned as they are and may therefore be split into byte ranges)."""
        return self not in (Format.RAW, Format.OLE2)


#: How many leading bytes :func:`sniff` needs to decide (fewer is fine at end of file):
#: PDF allows its header anywhere in the first 1024 bytes and an email's header block
#: may take a few KB before the headers that identify it.
MAGIC_LEN = 4096

#: The bytes every member/stream of a format starts with; a decoder that reaches the end
#: of one member looks for this to decide whether another member follows.
MEMBER_MAGIC: dict[Format, bytes] = {
    Format.GZIP: b"\x1f\x8b",
    Format.BZIP2: b"BZh",
    Format.XZ: b"\xfd7zXZ\x00",
    Format.ZSTD: b"\x28\xb5\x2f\xfd",
}

_GZIP_DEFLATE = b"\x1f\x8b\x08"  # method 8 (deflate) is the only one gzip defines
_BZIP2_BLOCK = b"\x31\x41\x59\x26\x53\x59"  # pi: start of a compressed block
_BZIP2_END = b"\x17\x72\x45\x38\x50\x90"  # sqrt(pi): end of stream (empty input)
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_EMPTY = b"PK\x05\x06"  # end of central directory first: a zip with no members
_SEVEN_ZIP = b"7z\xbc\xaf\x27\x1c"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PDF = b"%PDF-"
_PDF_WINDOW = 1024
_RTF = b"{\\rtf"

# Email: a header line is "Name: value" (RFC 5322 field names are printable ASCII without
# colon or space) or a folded continuation starting with white space.
_HEADER_LINE = re.compile(rb"[!-9;-~]+:[ \t]?[^\r\n]*")
_MAIL_HEADERS = frozenset({
    b"from", b"to", b"subject", b"date", b"received", b"mime-version", b"message-id",
    b"return-path", b"delivered-to", b"cc", b"reply-to", b"sender",
})
_IDENTIFYING = frozenset({b"from", b"to", b"subject", b"date", b"received", b"mime-version", b"message-id"})
_MIN_HEADER_LINES = 2


def sniff(head: bytes) -> Format:
    """The format of data starting with ``head`` (pass at least :data:`MAGIC_LEN` bytes
    unless the data is shorter). Zips are ``ZIP`` here; see :func:`zip_flavour`."""
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
    if head.startswith(MEMBER_MAGIC[Format.ZSTD]):
        return Format.ZSTD
    if head.startswith((_ZIP_LOCAL, _ZIP_EMPTY)):
        return Format.ZIP
    if head.startswith(_SEVEN_ZIP):
        return Format.SEVEN_ZIP
    if head.startswith(_OLE2):
        return Format.OLE2
    if _is_tar_header(head):
        return Format.TAR
    if head.startswith(_RTF):
        return Format.RTF
    if _PDF in head[:_PDF_WINDOW]:
        return Format.PDF
    if _is_email(head):
        return Format.EMAIL
    return Format.RAW


def zip_flavour(zf: zipfile.ZipFile) -> Format:
    """``OOXML``, ``ODF`` or ``ZIP`` for an opened zip (reads at most a few bytes of one
    member: the OpenDocument ``mimetype``)."""
    infos = zf.infolist()
    if any(info.filename == "[Content_Types].xml" for info in infos):
        return Format.OOXML
    if infos and infos[0].filename == "mimetype" and not infos[0].flag_bits & 0x1:
        try:
            with zf.open(infos[0]) as member:
                mimetype = member.read(100)
        except Exception:  # any failure just means "not OpenDocument"
            return Format.ZIP
        if mimetype.startswith(b"application/vnd.oasis.opendocument."):
            return Format.ODF
    return Format.ZIP


def tar_checksum_ok(block: bytes) -> bool:
    """Whether a 512-byte tar header block carries a valid checksum (unsigned or, as some
    old tars wrote it, signed)."""
    if len(block) < 512:
        return False
    field = block[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    header = block[:148] + b" " * 8 + block[156:512]
    unsigned = sum(header)
    signed = sum(b - 256 if b > 127 else b for b in header)
    return stored in (unsigned, signed)


def _is_tar_header(head: bytes) -> bool:
    # ustar (POSIX "ustar\0" and GNU "ustar ") at offset 257; pre-POSIX tars without the
    # magic are scanned raw, which still finds stored text.
    return head[257:262] == b"ustar" and tar_checksum_ok(head[:512])


# What an identifying header looks like at the start of a line, lower-cased: a cheap
# necessary condition checked before the header block is parsed line by line.
_IDENTIFYING_STARTS = tuple(n + b":" for n in sorted(_IDENTIFYING))
_IDENTIFYING_LINES = tuple(b"\n" + n for n in _IDENTIFYING_STARTS)


def _is_email(head: bytes) -> bool:
    lower = head.lower()
    if not lower.startswith(_IDENTIFYING_STARTS) and not any(n in lower for n in _IDENTIFYING_LINES):
        return False  # most files: no line starts with From:, To:, Subject:, ...
    lines = head.split(b"\n")
    if head.endswith(b"\n") or len(head) < MAGIC_LEN:
        complete = lines
    else:
        complete = lines[:-1]  # the last line may be cut by the sniff window
    start = 0
    if complete and complete[0].startswith(b"From "):
        start = 1  # mbox separator line
    names: list[bytes] = []
    for line in complete[start:]:
        line = line.rstrip(b"\r")
        if not line:
            break  # end of the header block
        if line[:1] in (b" ", b"\t") and names:
            continue  # folded header
        if not _HEADER_LINE.fullmatch(line):
            return False
        names.append(line.split(b":", 1)[0].lower())
    if len(names) < _MIN_HEADER_LINES:
        return False
    return any(n in _IDENTIFYING for n in names) and sum(n in _MAIL_HEADERS for n in names) >= 2
