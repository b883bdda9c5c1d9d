"""The detection self-test (``panscan patterns test``): one sample of every supported format,
and one of every card brand the file-format samples do not already show.

An assessor confirming that the discovery method works on the file types in use asks for
evidence that a card number is found inside each of them. :func:`samples` builds one sample
per format *in memory* (nothing is written to disk), each hiding one generated, Luhn-valid
number where it is hard to find: split across Word runs and a bold run, in a spreadsheet's
shared-string table, in a deflated PDF content stream, in a zip inside a zip inside a
tar.gz, in a base64 e-mail attachment. :func:`run_selftest` scans every sample with the same
extraction and matching code a worker runs on a file and reports, per format, whether the
number was found and at which member path.

What callers may rely on:

* :func:`samples` is deterministic: the same bytes and numbers on every call and machine
  (the numbers are generated from a fixed seed, not taken from real or published cards, and
  are distinct per sample: each has its own masked form). A :class:`Sample` never shows its number: ``data`` is left out
  of its ``repr`` and only the masked form is kept beside it.
* A sample with ``raw_visible=False`` hides its number from a scan of its raw bytes (the
  number is compressed, split by markup, or encoded), so finding it proves its container was
  opened; ``raw_visible=True`` marks the formats a raw scan alone must handle (plain text,
  UTF-16, binary, legacy Office, track data) and the uncompressed tar, whose member bytes
  are stored as they are (its member path shows whether the tar was opened).
* A format counts as *found* when a finding of the sample's kind with the sample's masked
  form (and, for a ``brand …`` sample, the sample's brand) appears anywhere in its scan; the
  member path of that finding is recorded (the one equal to the expected path if several
  were seen) so a wrong path is visible, not hidden.
  A format whose extractor does not exist yet is reported missed: nothing is assumed.
* Nothing here prints or returns a full number: results hold masked forms and member paths.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import secrets
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP

from panscan.extract.budget import ITEM_WIDE_REASONS, Limits
from panscan.findings.mask import mask_digits, mask_text
from panscan.match.luhn import check_digit
from panscan.match.matcher import CHUNK_SIZE
from panscan.model import Finding, Item, Kind, Reason

__all__ = [
    "Result", "Sample", "docx_bytes", "formats", "jsonl_report", "make_sample", "pdf_bytes", "run_selftest",
    "samples", "scan_sample", "table_report", "xlsx_bytes", "zip_bytes",
]


@dataclass(frozen=True)
class Sample:
    """One in-memory file of one format, holding one generated card number.

    ``name`` is the format as shown in the report (``docx``, ``tar.gz``); ``masked`` is the
    number's masked form as a finding shows it; ``member`` is the member path a finding
    should carry (``None`` when the number is in the item's own text); ``kind`` is the
    finding kind expected; ``needs`` names the extractor module the format depends on
    (``None``: the core matcher and decompressors); ``raw_visible`` is described in the
    module docstring; ``brand`` is set on a brand sample, whose finding must name that brand.
    """

    name: str
    data: bytes = field(repr=False)  # holds the full number: never shown
    masked: str
    member: str | None
    kind: Kind = Kind.PAN
    needs: str | None = None
    raw_visible: bool = False
    description: str = ""
    brand: str | None = None  # a brand sample: the finding must name this brand to count


@dataclass(frozen=True)
class Result:
    """What scanning one sample showed: masked data and paths only.

    ``member`` is the member path of the matching finding (``None`` when not found or when
    found in the item's own text); ``count`` how many findings matched (1 is right; more means
    the number was reported twice, e.g. once raw and once extracted); ``reason`` the reason code
    when extraction stopped early, ``None`` when the sample was read completely.
    """

    name: str
    found: bool
    masked: str
    kind: Kind
    expected_member: str | None
    member: str | None
    count: int
    reason: Reason | None
    detail: str | None

    @property
    def member_as_expected(self) -> bool:
        """Found, and at the member path the sample put the number in."""
        return self.found and self.member == self.expected_member


# --------------------------------------------------------------------------------------------
# Numbers. One IIN prefix per sample, cycling through brands the table knows, so the self-test
# also shows that more than one brand is recognised; a per-sample serial in the last digits
# keeps every masked form distinct.

_PREFIXES = (("4", 16), ("51", 16), ("2221", 16), ("37", 15), ("6011", 16), ("3530", 16))


def _pan(index: int, prefix: str | None = None, length: int = 16) -> str:
    """The number of sample ``index``: the format cycle's prefix, or ``prefix`` if given."""
    if prefix is None:
        prefix, length = _PREFIXES[index % len(_PREFIXES)]
    # Digits from a hash of the index: the same numbers on every run and machine.
    seed = hashlib.sha256(f"panscan-selftest-{index}".encode()).digest()
    middle = "".join(str(b % 10) for b in seed[:length - len(prefix) - 4])
    payload = prefix + middle + f"{index:03d}"
    return payload + check_digit(payload)


def _grouped(pan: str, sep: str = " ") -> str:
    """The number as printed on a card: 4-4-4-4, or 4-6-5 for American Express."""
    if len(pan) == 15:
        return sep.join((pan[:4], pan[4:10], pan[10:]))
    return sep.join(pan[i:i + 4] for i in range(0, len(pan), 4))


def _split(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` pieces, none holding 13 digits (no piece is a candidate)."""
    step = -(-len(text) // parts)
    return [text[i:i + step] for i in range(0, len(text), step)]


# --------------------------------------------------------------------------------------------
# Builders. Each takes the text (or pieces of text) that must be found and returns the bytes
# of one file; timestamps are fixed so the bytes are the same on every run. The public ones
# (zip_bytes, docx_bytes, xlsx_bytes, pdf_bytes) also build the benchmark's container corpus.

_EPOCH = (2024, 6, 11, 9, 30, 0)
_FILLER = "".join(f"2024-06-11T09:{i % 60:02d}:00Z INFO order {100000 + i} shipped to depot {i % 7}\n"
                  for i in range(60))


def _log_text(pan_text: str) -> str:
    # Enough surrounding text that compressors code it as a real stream (zstd stores a tiny
    # input as raw literals, which would leave the number readable in the compressed bytes).
    return _FILLER + f"2024-06-11T09:31:00Z INFO payment card {pan_text} authorised\n" + _FILLER


def zip_bytes(members: list[tuple[str, bytes]], stored: tuple[str, ...] = ()) -> bytes:
    """A zip of ``(name, data)`` members in order, deflated except the names in ``stored``
    (deflated data keeps a number out of the raw bytes), with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1718098200
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _zstd(data: bytes) -> bytes:
    import zstandard  # imported here: only this sample needs it

    return zstandard.ZstdCompressor(level=3).compress(data)


def _ole2(text: str) -> bytes:
    """A legacy-Office-like compound file: the OLE2 signature and header, then UTF-16LE text
    in a sector, as Word 97-2003 keeps a document's text (the raw scan reads it as UTF-16)."""
    header = bytearray(512)
    header[:8] = bytes.fromhex("d0cf11e0a1b11ae1")
    header[0x18:0x1C] = b"\x3e\x00\x03\x00"  # minor/major version 3
    header[0x1C:0x20] = b"\xfe\xff\x09\x00"  # little-endian, 512-byte sectors
    body = text.encode("utf-16-le")
    sector = body + b"\x00" * (-len(body) % 512)
    return bytes(header) + b"\xff" * 512 + sector + b"\x00" * 512


def _binary(pan_text: str) -> bytes:
    # Digit-free noise: no accidental candidate next to the planted number.
    alphabet = b"\x00\x01\x02\x7f\x80\xfe\xff.,;:!"
    noise = bytes(alphabet[b % len(alphabet)] for i in range(128)
                  for b in hashlib.sha256(b"panscan-selftest-binary-%d" % i).digest())
    return b"\x7fELF\x02\x01\x01" + b"\x00" * 57 + noise + b"\x00" * 64 + pan_text.encode() + b"\x00" * 64 + noise


_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "http://schemas.openxmlformats.org/package/2006/content-types"
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def _content_types(overrides: dict[str, str]) -> bytes:
    parts = "".join(f'<Override PartName="/{name}" ContentType="{ctype}"/>' for name, ctype in overrides.items())
    return (f'{_XML}<Types xmlns="{_CT}">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            f'<Default Extension="xml" ContentType="application/xml"/>{parts}</Types>').encode()


def _rels(targets: list[tuple[str, str]]) -> bytes:
    rels = "".join(f'<Relationship Id="rId{i}" Type="{_REL}/{rtype}" Target="{target}"/>'
                   for i, (rtype, target) in enumerate(targets, 1))
    return f'{_XML}<Relationships xmlns="{_PKG_REL}">{rels}</Relationships>'.encode()


def docx_bytes(paragraphs: list[list[tuple[str, bool]]]) -> bytes:
    """A minimal Word document; each paragraph is a list of (text, bold) runs."""
    body = []
    for runs in paragraphs:
        xml_runs = "".join(
            f'<w:r>{"<w:rPr><w:b/></w:rPr>" if bold else ""}<w:t xml:space="preserve">{_esc(text)}</w:t></w:r>'
            for text, bold in runs)
        body.append(f"<w:p>{xml_runs}</w:p>")
    document = f'{_XML}<w:document {_W}><w:body>{"".join(body)}</w:body></w:document>'
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    return zip_bytes([
        ("[Content_Types].xml", _content_types({"word/document.xml": main})),
        ("_rels/.rels", _rels([("officeDocument", "word/document.xml")])),
        ("word/document.xml", document.encode()),
    ])


_S = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'


def xlsx_bytes(rows: Iterable[list[tuple[str, str]]], shared: list[str]) -> bytes:
    """A minimal workbook with one sheet, ``Sheet1``. Each row is a list of (ref, cell xml)
    pairs; ``shared`` holds the shared-string table's ``<si>`` bodies. ``rows`` may be a
    generator that appends to ``shared`` as it goes: it is consumed before ``shared`` is read."""
    xml_rows = (f'<row r="{cells[0][0].lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}">{"".join(c for _, c in cells)}</row>'
                for cells in rows)
    sheet = f'{_XML}<worksheet {_S}><sheetData>{"".join(xml_rows)}</sheetData></worksheet>'
    sst = (f'{_XML}<sst {_S} count="{len(shared)}" uniqueCount="{len(shared)}">'
           + "".join(f"<si>{si}</si>" for si in shared) + "</sst>")
    workbook = (f'{_XML}<workbook {_S} xmlns:r="{_REL}"><sheets>'
                '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    return zip_bytes([
        ("[Content_Types].xml", _content_types({
            "xl/workbook.xml": f"{ct}.sheet.main+xml",
            "xl/worksheets/sheet1.xml": f"{ct}.worksheet+xml",
            "xl/sharedStrings.xml": f"{ct}.sharedStrings+xml",
        })),
        ("_rels/.rels", _rels([("officeDocument", "xl/workbook.xml")])),
        ("xl/workbook.xml", workbook.encode()),
        ("xl/_rels/workbook.xml.rels", _rels([("worksheet", "worksheets/sheet1.xml"),
                                              ("sharedStrings", "sharedStrings.xml")])),
        ("xl/worksheets/sheet1.xml", sheet.encode()),
        ("xl/sharedStrings.xml", sst.encode()),
    ])


def _pptx(runs: list[tuple[str, bool]]) -> bytes:
    """A minimal presentation: one slide with one text box of (text, bold) runs."""
    a = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    p = 'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
    bold_props, plain_props = '<a:rPr b="1"/>', "<a:rPr/>"
    xml_runs = "".join(f"<a:r>{bold_props if bold else plain_props}<a:t>{_esc(text)}</a:t></a:r>"
                       for text, bold in runs)
    slide = (f'{_XML}<p:sld {a} {p} xmlns:r="{_REL}"><p:cSld><p:spTree>'
             '<p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr><p:grpSpPr/>'
             '<p:sp><p:nvSpPr><p:cNvPr id="2" name="Text 1"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr>'
             f'<p:spPr/><p:txBody><a:bodyPr/><a:p>{xml_runs}</a:p></p:txBody></p:sp>'
             '</p:spTree></p:cSld></p:sld>')
    presentation = (f'{_XML}<p:presentation {a} {p} xmlns:r="{_REL}">'
                    '<p:sldIdLst><p:sldId id="256" r:id="rId1"/></p:sldIdLst></p:presentation>')
    ct = "application/vnd.openxmlformats-officedocument.presentationml"
    return zip_bytes([
        ("[Content_Types].xml", _content_types({
            "ppt/presentation.xml": f"{ct}.presentation.main+xml",
            "ppt/slides/slide1.xml": f"{ct}.slide+xml",
        })),
        ("_rels/.rels", _rels([("officeDocument", "ppt/presentation.xml")])),
        ("ppt/presentation.xml", presentation.encode()),
        ("ppt/_rels/presentation.xml.rels", _rels([("slide", "slides/slide1.xml")])),
        ("ppt/slides/slide1.xml", slide.encode()),
    ])


_ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
           'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
           'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2"')


def _odf(mimetype: str, body: str) -> bytes:
    """A minimal OpenDocument package; ``mimetype`` comes first and stored, as ODF requires."""
    content = f"{_XML}<office:document-content {_ODF_NS}><office:body>{body}</office:body></office:document-content>"
    manifest = (f'{_XML}<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
                'manifest:version="1.2">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mimetype}"/>'
                '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                "</manifest:manifest>")
    return zip_bytes([("mimetype", mimetype.encode()), ("META-INF/manifest.xml", manifest.encode()),
                 ("content.xml", content.encode())], stored=("mimetype",))


def _odt(pieces: list[str]) -> bytes:
    # Alternate plain text and spans, the way an editor stores a word whose formatting changes.
    inline = "".join(_esc(p) if i % 2 == 0 else f'<text:span text:style-name="T{i}">{_esc(p)}</text:span>'
                     for i, p in enumerate(pieces))
    body = f"<office:text><text:p>Customer letter.</text:p><text:p>{inline}</text:p></office:text>"
    return _odf("application/vnd.oasis.opendocument.text", body)


def _ods(rows: list[list[str]]) -> bytes:
    xml_rows = "".join(
        "<table:table-row>" + "".join(
            f'<table:table-cell office:value-type="string"><text:p>{_esc(v)}</text:p></table:table-cell>'
            for v in row) + "</table:table-row>"
        for row in rows)
    body = f'<office:spreadsheet><table:table table:name="Sheet1">{xml_rows}</table:table></office:spreadsheet>'
    return _odf("application/vnd.oasis.opendocument.spreadsheet", body)


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A minimal PDF: one page per list of text lines, each page's content stream deflated
    (FlateDecode) and showing its lines with ``Tj``; the xref offsets are computed."""
    n_pages = len(pages)
    # Objects: 1 catalog, 2 page tree, 3 font, then per page: its page object and its stream.
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: (f"<< /Type /Pages /Count {n_pages} /Kids [" + " ".join(f"{p} 0 R" for p in page_ids) + "] >>").encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for page_id, lines in zip(page_ids, pages, strict=True):
        ops = ["BT", "/F1 11 Tf", "14 TL", "56 760 Td"]
        for line in lines:
            ops.append(f"({_pdf_esc(line)}) Tj T*")
        ops.append("ET")
        stream = zlib.compress("\n".join(ops).encode("latin-1"), 6)
        objects[page_id] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>").encode()
        objects[page_id + 1] = (f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode()
                                + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for number in range(1, size):
        out += f"{offsets[number]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {size} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _pdf_esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _rtf(pieces: list[str]) -> bytes:
    # Every other piece in a bold group: the number is only whole once the markup is removed.
    inline = "".join(p if i % 2 == 0 else "{\\b " + p + "}" for i, p in enumerate(pieces))
    return ("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Helvetica;}}\\f0\\fs22 "
            f"Dear customer,\\par Your card {inline} was charged.\\par}}\n").encode("ascii")


def _eml(attachment_name: str, attachment: bytes) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "billing@example.com"
    msg["To"] = "audit@example.com"
    msg["Subject"] = "Q1 export"
    msg["Date"] = "Tue, 11 Jun 2024 09:30:00 +0000"
    msg["Message-ID"] = "<selftest-1@example.com>"
    msg.set_content("The export is attached.\n")
    # add_attachment base64-encodes binary content: the number is nowhere in the raw bytes.
    msg.add_attachment(attachment, maintype="application", subtype="zip", filename=attachment_name)
    msg.set_boundary("selftest-boundary-1")
    return msg.as_bytes()


def _mbox(text: str) -> bytes:
    first = EmailMessage(policy=SMTP)
    first["From"] = "ops@example.com"
    first["Subject"] = "weekly report"
    first["Date"] = "Mon, 10 Jun 2024 08:00:00 +0000"
    first.set_content("Nothing to report.\n")
    second = EmailMessage(policy=SMTP)
    second["From"] = "support@example.com"
    second["Subject"] = "card update"
    second["Date"] = "Tue, 11 Jun 2024 09:30:00 +0000"
    # A base64 body: the number is visible only once the MIME part is decoded.
    second.set_content(text, cte="base64")
    out = b""
    for msg in (first, second):
        body = msg.as_bytes().replace(b"\r\n", b"\n")
        out += b"From MAILER-DAEMON Tue Jun 11 09:30:00 2024\n" + body.rstrip(b"\n") + b"\n\n"
    return out


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------------
# The samples.

# The extractor modules the formats depend on (their absence is why a format is missed while
# they are being written; the integration test relaxes its check only while one is missing).
_FRAMEWORK = "panscan.extract.expand"
_ARCHIVE = "panscan.extract.archive"
_OFFICE = "panscan.extract.office"
_RTF = "panscan.extract.rtf"
_PDF = "panscan.extract.pdf"
_MAIL = "panscan.extract.mail"

_Builder = Callable[[str], tuple[bytes, str | None]]


def _specs() -> list[tuple[str, Kind, str | None, bool, str, _Builder]]:
    """(name, kind, needs, raw_visible, description, build(pan) -> (data, member))."""

    def text(enc: str, bom: bytes = b"") -> _Builder:
        return lambda pan: (bom + _log_text(_grouped(pan)).encode(enc), None)

    def compressed(fn: Callable[[bytes], bytes]) -> _Builder:
        return lambda pan: (fn(_log_text(_grouped(pan)).encode()), None)

    def csv(pan: str, sep: str = "-") -> bytes:
        return f"id,name,card,expiry\n1,A. Smith,{_grouped(pan, sep)},12/27\n2,B. Jones,n/a,\n".encode()

    def nested(pan: str) -> tuple[bytes, str]:
        inner = zip_bytes([("cards.csv", csv(pan))])
        middle = zip_bytes([("readme.txt", b"quarterly export\n"), ("regions/emea.zip", inner)])
        tgz = _gzip(_tar([("exports/notes.txt", b"see q1.zip\n"), ("exports/q1.zip", middle)]))
        return tgz, "exports/q1.zip/regions/emea.zip/cards.csv"

    def docx(pan: str) -> tuple[bytes, str]:
        g = _grouped(pan)
        a, b, c = g[:7], g[7:14], g[14:]  # "4111 11" "11 1111" " 1111": the middle run is bold
        return docx_bytes([[("Dear customer,", False)],
                      [("Your card ", False), (a, False), (b, True), (c, False), (" was charged.", False)]]), \
            "word/document.xml"

    def xlsx_shared(pan: str) -> tuple[bytes, str]:
        g = _grouped(pan)
        # A rich-text shared string: the number is split across two runs, the second bold.
        si = f'<r><t xml:space="preserve">{g[:9]}</t></r><r><rPr><b/></rPr><t>{g[9:]}</t></r>'
        rows = [[("A1", '<c r="A1" t="s"><v>1</v></c>')],
                [("C5", '<c r="C5" t="s"><v>0</v></c>'), ("D5", '<c r="D5"><v>42</v></c>')]]
        return xlsx_bytes(rows, [si, "<t>card</t>"]), "Sheet1!C5"

    def xlsx_inline(pan: str) -> tuple[bytes, str]:
        rows = [[("A1", '<c r="A1" t="s"><v>0</v></c>')],
                [("B2", f'<c r="B2" t="inlineStr"><is><t>{_grouped(pan)}</t></is></c>')]]
        return xlsx_bytes(rows, ["<t>card</t>"]), "Sheet1!B2"

    def pptx(pan: str) -> tuple[bytes, str]:
        g = _grouped(pan)
        return _pptx([("Card on file: ", False), (g[:7], False), (g[7:], True)]), "ppt/slides/slide1.xml"

    def odt(pan: str) -> tuple[bytes, str]:
        return _odt(["Your card ", *_split(_grouped(pan), 3), " was charged."]), "content.xml"

    def ods(pan: str) -> tuple[bytes, str]:
        return _ods([["name", "card"], ["A. Smith", _grouped(pan)]]), "Sheet1!B2"

    def pdf(pan: str) -> tuple[bytes, str]:
        pages = [["Statement of account", "Page one has no card data."],
                 ["Payments", f"Card {_grouped(pan)} charged 42.00 EUR"]]
        return pdf_bytes(pages), "page 2"

    def rtf(pan: str) -> tuple[bytes, str]:
        return _rtf(_split(_grouped(pan), 3)), "text"  # the RTF handler's one text part

    def eml(pan: str) -> tuple[bytes, str]:
        return _eml("cards.zip", zip_bytes([("cards.csv", csv(pan))])), "attachment: cards.zip/cards.csv"

    def mbox(pan: str) -> tuple[bytes, str]:
        return _mbox(f"Your new card {_grouped(pan)} is on its way.\n"), "message 2/body"

    def track1(pan: str) -> tuple[bytes, None]:
        return f"swipe log\n%B{pan}^SMITH/ALICE^2712101000000000000000?\n".encode(), None

    def track2(pan: str) -> tuple[bytes, None]:
        return f"swipe log\n;{pan}=27121010000000000000?\n".encode(), None

    return [
        ("text", Kind.PAN, None, True, "UTF-8 log line", text("utf-8")),
        ("utf-16le", Kind.PAN, None, True, "UTF-16LE with BOM", text("utf-16-le", b"\xff\xfe")),
        ("utf-16be", Kind.PAN, None, True, "UTF-16BE without BOM", text("utf-16-be")),
        ("binary", Kind.PAN, None, True, "ASCII digits between NULs in binary data",
         lambda pan: (_binary(_grouped(pan)), None)),
        ("ole2", Kind.PAN, None, True, "legacy Office compound file, UTF-16LE text",
         lambda pan: (_ole2(_log_text(_grouped(pan))), None)),
        ("gzip", Kind.PAN, None, False, "gzip-compressed log", compressed(_gzip)),
        ("bzip2", Kind.PAN, None, False, "bzip2-compressed log", compressed(bz2.compress)),
        ("xz", Kind.PAN, None, False, "xz-compressed log", compressed(lambda d: lzma.compress(d, lzma.FORMAT_XZ))),
        ("zstd", Kind.PAN, _FRAMEWORK, False, "zstd-compressed log", compressed(_zstd)),
        ("tar", Kind.PAN, _ARCHIVE, True, "uncompressed tar",
         lambda pan: (_tar([("exports/cards.txt", _log_text(_grouped(pan)).encode())]), "exports/cards.txt")),
        ("tar.gz", Kind.PAN, _ARCHIVE, False, "gzip-compressed tar",
         lambda pan: (_gzip(_tar([("exports/cards.txt", _log_text(_grouped(pan)).encode())])),
                      "exports/cards.txt")),
        ("zip", Kind.PAN, _ARCHIVE, False, "deflated zip member",
         lambda pan: (zip_bytes([("cards.csv", csv(pan))]), "cards.csv")),
        ("zip in zip in tar.gz", Kind.PAN, _ARCHIVE, False, "zip in a zip in a tar.gz", nested),
        ("docx", Kind.PAN, _OFFICE, False, "Word, number split across runs, one bold", docx),
        ("xlsx shared string", Kind.PAN, _OFFICE, False, "Excel rich shared string", xlsx_shared),
        ("xlsx inline string", Kind.PAN, _OFFICE, False, "Excel inline string", xlsx_inline),
        ("pptx", Kind.PAN, _OFFICE, False, "PowerPoint, number split across runs", pptx),
        ("odt", Kind.PAN, _OFFICE, False, "OpenDocument text, number split across spans", odt),
        ("ods", Kind.PAN, _OFFICE, False, "OpenDocument spreadsheet cell", ods),
        ("pdf", Kind.PAN, _PDF, False, "PDF, deflated content stream, page 2", pdf),
        ("rtf", Kind.PAN, _RTF, False, "RTF, number split by {\\b ...} groups", rtf),
        ("eml", Kind.PAN, _MAIL, False, "e-mail, base64 zip attachment holding a CSV", eml),
        ("mbox", Kind.PAN, _MAIL, False, "mbox, base64 body of the second message", mbox),
        ("track 1", Kind.TRACK1, None, True, "magnetic-stripe track 1 line", track1),
        ("track 2", Kind.TRACK2, None, True, "magnetic-stripe track 2 line", track2),
    ]


# Brands. The format samples above cycle through a few brands; every other brand of the pattern
# set gets a sample of its own (a UTF-8 log line, as "text"), holding a number at the first
# prefix of its first range, and one more at the first prefix of its broad ranges if it has
# any, so the self-test shows that each brand patterns/brands.toml names is recognised. The
# log line has a card keyword beside the number, which a broad-range number needs.

_BRAND_SAMPLE = "brand "


def _brand_specs() -> list[tuple[str, str, str, int]]:
    """(sample name, brand, 8-digit prefix, length) for each brand no format sample carries."""
    from panscan.match.patterns import load_patterns  # the table is read only when asked for

    table = load_patterns().table
    carried = {table.lookup(_pan(index)) for index in range(len(_specs()))}
    out = []
    for brand in table.brands:
        ranges = [r for r in table.ranges if r.brand == brand]
        length = 16 if 16 in ranges[0].lengths else min(n for n in ranges[0].lengths if n >= 13)
        specific = [r for r in ranges if not r.broad]
        broad = [r for r in ranges if r.broad]
        if specific and brand not in carried:
            out.append((f"{_BRAND_SAMPLE}{brand}", brand, f"{specific[0].low:08d}", length))
        if broad:
            out.append((f"{_BRAND_SAMPLE}{brand} (broad range)", brand, f"{broad[0].low:08d}", length))
    return out


def formats() -> list[str]:
    """The names of the formats :func:`samples` covers, in report order: the file formats,
    then one ``brand …`` sample per brand the file formats' numbers do not already show."""
    return [spec[0] for spec in _specs()] + [spec[0] for spec in _brand_specs()]


def make_sample(name: str, number: str | None = None) -> Sample:
    """The sample of format ``name`` (one of :func:`formats`), holding ``number`` if given
    (any digit string; tests pass a Luhn-failing one) or else the format's own generated
    number. ``masked`` is always the given number's masked form. Raises ``KeyError`` for an
    unknown format."""
    specs = _specs()
    for index, (spec_name, kind, needs, raw_visible, description, build) in enumerate(specs):
        if spec_name == name:
            digits = number if number is not None else _pan(index)
            data, member = build(digits)
            return Sample(name, data, mask_digits(digits), member, kind, needs, raw_visible, description)
    for index, (spec_name, brand, prefix, length) in enumerate(_brand_specs(), len(specs)):
        if spec_name == name:
            digits = number if number is not None else _pan(index, prefix, length)
            data = _log_text(_grouped(digits)).encode()
            return Sample(name, data, mask_digits(digits), None, Kind.PAN, None, True,
                          f"{brand} number from IIN {prefix[:6]}, {length} digits, UTF-8 log line", brand)
    raise KeyError(name)


def samples() -> list[Sample]:
    """One sample per supported format, in the order the report lists them."""
    return [make_sample(name) for name in formats()]


# --------------------------------------------------------------------------------------------
# Scanning.

def scan_sample(data: bytes, name: str = "sample", limits: Limits | None = None,
                chunk_size: int = CHUNK_SIZE) -> tuple[list[Finding], Reason | None, str | None]:
    """Scan in-memory bytes as a worker scans an item: the same extraction (from the item's
    first byte, by content) and the same streaming matcher, every hit masked at once, the
    member composed as the worker composes it (``member`` + ``where(offset)``).

    (It is the worker's own loop, ``engine.worker.scan_streams``, without what needs a real
    item: the changed-during-scan check and the byte accounting.)

    Returns the findings, and the reason code and detail when extraction stopped early
    (findings made before that are kept, as a worker keeps them).
    """
    # Imported here so the sample builders (which the benchmark reuses) do not load extraction.
    from panscan.engine.worker import scan_streams

    limits = limits or Limits()
    key = secrets.token_bytes(32)  # fingerprints are not compared here; a throwaway key
    item = Item(location=f"selftest:{name}", source="selftest", size=len(data))
    findings, problems = scan_streams(io.BytesIO(data), item, limits, chunk_size, key)
    if problems:
        # As the worker reports an item: the problem that ended the whole item if any.
        first = next((p for p in problems if p.reason in ITEM_WIDE_REASONS), problems[0])
        return findings, first.reason, mask_text(first.detail)
    return findings, None, None


def run_selftest(sample_list: list[Sample] | None = None) -> list[Result]:
    """Scan every sample (default: :func:`samples`) and say, per format, whether its number
    was found; see the module docstring for what *found* means."""
    results = []
    for sample in samples() if sample_list is None else sample_list:
        findings, reason, detail = scan_sample(sample.data, sample.name)
        matching = [f for f in findings if f.masked == sample.masked and f.kind == sample.kind
                    and sample.brand in (None, f.brand)]
        members = [f.member for f in matching]
        member = sample.member if sample.member in members else (members[0] if members else None)
        results.append(Result(sample.name, bool(matching), sample.masked, sample.kind, sample.member,
                              member, len(matching), reason, detail))
    return results


# --------------------------------------------------------------------------------------------
# Reports. Only masked forms, format names and member paths: nothing here can hold a number.

def _note(r: Result) -> str:
    notes = []
    if r.found and not r.member_as_expected:
        notes.append(f"expected member {r.expected_member or '-'}")
    if not r.found and r.expected_member:
        notes.append(f"expected in {r.expected_member}")
    if r.count > 1:
        notes.append(f"reported {r.count} times")
    if r.reason is not None:
        notes.append(str(r.reason))
    return "; ".join(notes)


def table_report(results: list[Result], patterns_version: str) -> list[str]:
    """The report as lines of a table: format, found/MISSED, masked number, member seen, notes."""
    rows = [("format", "result", "number", "member", "notes")]
    rows += [(r.name, "found" if r.found else "MISSED", r.masked, r.member or "-", _note(r)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"panscan self-test: {len(results)} formats, pattern set {patterns_version[:12]}", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    missed = [r.name for r in results if not r.found]
    found = len(results) - len(missed)
    lines.append("")
    lines.append(f"{found} of {len(results)} formats found" + (f"; MISSED: {', '.join(missed)}" if missed else ""))
    return lines


def jsonl_report(results: list[Result], patterns_version: str) -> list[str]:
    """The report as JSON Lines: one ``selftest`` record per format, then a ``summary``."""
    lines = []
    for r in results:
        lines.append(json.dumps({
            "type": "selftest", "format": r.name, "found": r.found, "kind": str(r.kind), "masked": r.masked,
            "member": r.member, "expected_member": r.expected_member, "count": r.count,
            "reason": None if r.reason is None else str(r.reason), "detail": r.detail,
            "patterns_version": patterns_version,
        }))
    missed = [r.name for r in results if not r.found]
    lines.append(json.dumps({
        "type": "summary", "formats": len(results), "found": len(results) - len(missed), "missed": missed,
        "patterns_version": patterns_version,
    }))
    return lines
