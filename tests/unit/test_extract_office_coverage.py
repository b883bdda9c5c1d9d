"""Every member of an office package is accounted for (issue 16, classes 1 and 5).

A docx/xlsx/pptx/odt/ods is a zip: the members its reader reads as a document give text,
and every other member (properties, custom XML, embedded packages, a csv someone added) is an
ordinary member, sniffed and expanded like a plain zip's. Packages are built here with
zipfile and scanned through ``open_streams`` and the real matcher, as the worker does.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections import Counter
from dataclasses import dataclass, field

import pytest
from cards import make_pan, spaced

from panscan.extract.budget import Limits, Meter
from panscan.extract.expand import Problem, Stream, open_streams
from panscan.match.matcher import StreamScanner
from panscan.match.patterns import load_patterns
from panscan.model import Reason

RNG = random.Random(1616)
PANS = [make_pan(prefix, 16, RNG) for prefix in ("4", "51", "4", "52", "4", "53", "4", "54", "4", "55")]


def mask(digits: str) -> str:
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


@dataclass
class Scan:
    hits: list[tuple[str | None, str]] = field(default_factory=list)  # (member, digits)
    problems: list[Problem] = field(default_factory=list)

    def at(self) -> Counter[tuple[str | None, str]]:
        """(member, masked number) -> how many times reported."""
        return Counter((member, mask(digits)) for member, digits in self.hits)

    def problem_at(self, member: str | None) -> list[Reason]:
        return [p.reason for p in self.problems if p.member == member]


def scan(data: bytes, limits: Limits | None = None) -> Scan:
    """Expand ``data`` and scan every stream as the worker does: a hit's member carries the
    stream's ``where`` suffix, and a backstop stream does not report a number again."""
    patterns = load_patterns()
    result = Scan()
    for out in open_streams(io.BytesIO(data), limits or Limits(), 1 << 16, Meter()):
        if isinstance(out, Problem):
            result.problems.append(out)
            continue
        assert isinstance(out, Stream)
        scanner = StreamScanner(patterns)
        hits = [h for chunk in out.chunks for h in scanner.feed(chunk)] + scanner.finish()
        for hit in hits:
            if out.backstop and any(digits == hit.digits for _, digits in result.hits):
                continue
            suffix = out.where(hit.offset) if out.where is not None else None
            result.hits.append((f"{out.member}{suffix or ''}", hit.digits))
    return result


def expect(got: Scan, want: dict[str, str | list[str]], problems: bool = False) -> None:
    """Each number reported exactly once, at its member; nothing else reported."""
    expected: Counter[tuple[str | None, str]] = Counter()
    for member, pans in want.items():
        for pan in [pans] if isinstance(pans, str) else pans:
            expected[(member, mask(pan))] += 1
    assert got.at() == expected
    if not problems:
        assert got.problems == []


# --------------------------------------------------------------------------------------------
# Packages

XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
A = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
P = 'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
S = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
R = f'xmlns:r="{OFFICE_REL}"'
ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" '
          'xmlns:config="urn:oasis:names:tc:opendocument:xmlns:config:1.0"')
MANIFEST_NS = 'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"'

Members = dict[str, str | bytes]


def zip_of(members: Members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if name == "mimetype":
                zf.writestr(zipfile.ZipInfo(name), data)  # first and stored, as ODF requires
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def rels(*entries: tuple[str, str, str], external: str = "") -> str:
    body = "".join(f'<Relationship Id="{rid}" Type="{OFFICE_REL}/{kind}" Target="{target}"/>'
                   for rid, kind, target in entries)
    return f'{XML}<Relationships xmlns="{PKG_REL}">{body}{external}</Relationships>'


def opc(main: str, members: Members, extra: Members) -> bytes:
    types = (f'{XML}<Types xmlns="{CT_NS}"><Default Extension="xml" ContentType="application/xml"/>'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             "</Types>")
    return zip_of({"[Content_Types].xml": types, "_rels/.rels": rels(("rId1", "officeDocument", main)),
                   **members, **extra})


def para(text: str) -> str:
    return f'<w:p><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def docx(text: str, extra: Members | None = None, prolog: str = "") -> bytes:
    document = f"{XML}{prolog}<w:document {W}><w:body>{para(text)}</w:body></w:document>"
    return opc("word/document.xml", {"word/document.xml": document}, extra or {})


def xlsx(rows: str, shared: list[str] | None = None, extra: Members | None = None, prolog: str = "") -> bytes:
    sst = "".join(f"<si><t>{s}</t></si>" for s in shared or [])
    return opc("xl/workbook.xml", {
        "xl/workbook.xml": f'{XML}<workbook {S} {R}><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/>'
                           "</sheets></workbook>",
        "xl/_rels/workbook.xml.rels": rels(("rId1", "worksheet", "worksheets/sheet1.xml"),
                                           ("rId2", "sharedStrings", "sharedStrings.xml")),
        "xl/sharedStrings.xml": f"{XML}<sst {S}>{sst}</sst>",
        "xl/worksheets/sheet1.xml": f"{XML}{prolog}<worksheet {S}><sheetData>{rows}</sheetData></worksheet>",
    }, extra or {})


def inline(ref: str, text: str) -> str:
    return f'<row r="{ref[1:]}"><c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c></row>'


def pptx(text: str, extra: Members | None = None) -> bytes:
    slide = (f"{XML}<p:sld {A} {P}><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>{text}</a:t></a:r></a:p>"
             "</p:txBody></p:sp></p:spTree></p:cSld></p:sld>")
    return opc("ppt/presentation.xml", {"ppt/presentation.xml": f"{XML}<p:presentation {P}/>",
                                        "ppt/slides/slide1.xml": slide}, extra or {})


def odf(kind: str, body: str, extra: Members | None = None, prolog: str = "",
        encrypted: tuple[str, ...] = ()) -> bytes:
    media = f"application/vnd.oasis.opendocument.{kind}"
    crypto = ('<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="AAAA">'
              '<manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="AAAA"/>'
              "</manifest:encryption-data>")
    entries = "".join(f'<manifest:file-entry manifest:full-path="{path}" manifest:media-type="text/xml">'
                      f"{crypto if path in encrypted else ''}</manifest:file-entry>"
                      for path in ("content.xml", *(extra or {})))
    manifest = (f'{XML}<manifest:manifest {MANIFEST_NS} manifest:version="1.2">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{media}"/>{entries}'
                "</manifest:manifest>")
    content = (f"{XML}{prolog}<office:document-content {ODF_NS}><office:body>{body}</office:body>"
               "</office:document-content>")
    return zip_of({"mimetype": media, "META-INF/manifest.xml": manifest, "content.xml": content, **(extra or {})})


def odt(text: str, extra: Members | None = None, prolog: str = "", encrypted: tuple[str, ...] = ()) -> bytes:
    return odf("text", f"<office:text><text:p>{text}</text:p></office:text>", extra, prolog, encrypted)


def ods(text: str, extra: Members | None = None, prolog: str = "") -> bytes:
    cell = f"<table:table-row><table:table-cell><text:p>{text}</text:p></table:table-cell></table:table-row>"
    return odf("spreadsheet", f'<office:spreadsheet><table:table table:name="Sheet1">{cell}</table:table>'
                              "</office:spreadsheet>", extra, prolog)


# --------------------------------------------------------------------------------------------
# Class 1: a zip that looks like a document


CSV = "export/cards.csv"


def csv(pan: str) -> str:
    return f"id,card,amount\n1,{pan},12.50\n2,none,3.00\n"


# (builder of a package holding PANS[0] in its text and the given extra members, member of that text)
KINDS = {
    "docx": (lambda extra: docx(PANS[0], extra), "word/document.xml"),
    "xlsx": (lambda extra: xlsx(inline("B2", PANS[0]), extra=extra), "Sheet1!B2"),
    "pptx": (lambda extra: pptx(PANS[0], extra), "ppt/slides/slide1.xml"),
    "odt": (lambda extra: odt(PANS[0], extra), "content.xml"),
    "ods": (lambda extra: ods(PANS[0], extra), "Sheet1!A1"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_csv_added_to_a_document_zip_is_scanned_as_an_ordinary_member(kind: str) -> None:
    build, text_member = KINDS[kind]
    expect(scan(build({CSV: csv(PANS[1])})), {text_member: PANS[0], CSV: PANS[1]})


def test_an_unknown_ooxml_package_scans_its_non_xml_members_too() -> None:
    data = opc("visio/document.xml", {"visio/document.xml": f"{XML}<doc><t>{PANS[0]}</t></doc>"},
               {"visio/data/rows.txt": f"row {spaced(PANS[1])}\n"})
    expect(scan(data), {"visio/document.xml": PANS[0], "visio/data/rows.txt": PANS[1]})


# --------------------------------------------------------------------------------------------
# Class 5: document parts never read


def test_docx_core_app_and_custom_properties_and_custom_xml_are_scanned() -> None:
    core = (f'{XML}<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
            f' xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Refund for {spaced(PANS[1])}</dc:title>'
            f"<dc:creator>ops</dc:creator><cp:keywords>card {PANS[2]}</cp:keywords></cp:coreProperties>")
    app = (f'{XML}<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
           f"<Company>Card {spaced(PANS[3], '-')} Ltd</Company></Properties>")
    custom = (f'{XML}<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
              'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
              '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="2" name="CardRef">'
              f"<vt:lpwstr>{PANS[4]}</vt:lpwstr></property></Properties>")
    item = f'{XML}<root xmlns="urn:example:crm"><customer><card>{PANS[5]}</card></customer></root>'
    data = docx(PANS[0], {"docProps/core.xml": core, "docProps/app.xml": app, "docProps/custom.xml": custom,
                          "customXml/item1.xml": item})
    expect(scan(data), {"word/document.xml": PANS[0], "docProps/core.xml": [PANS[1], PANS[2]],
                        "docProps/app.xml": PANS[3], "docProps/custom.xml": PANS[4],
                        "customXml/item1.xml": PANS[5]})


def test_odf_meta_settings_and_embedded_object_parts_are_scanned() -> None:
    meta = (f'{XML}<office:document-meta {ODF_NS}><office:meta><meta:keyword>{PANS[1]}</meta:keyword>'
            "</office:meta></office:document-meta>")
    settings = (f'{XML}<office:document-settings {ODF_NS}><office:settings><config:config-item-set '
                f'config:name="x"><config:config-item config:name="LastCard" config:type="string">'
                f"{spaced(PANS[2])}</config:config-item></config:config-item-set></office:settings>"
                "</office:document-settings>")
    chart = (f"{XML}<office:document-content {ODF_NS}><office:body><text:p>{PANS[3]}</text:p></office:body>"
             "</office:document-content>")
    data = odt(PANS[0], {"meta.xml": meta, "settings.xml": settings, "Object 1/content.xml": chart})
    expect(scan(data), {"content.xml": PANS[0], "meta.xml": PANS[1], "settings.xml": PANS[2],
                        "Object 1/content.xml": PANS[3]})


def test_an_xlsx_embedded_in_a_docx_is_expanded_and_its_cell_reported() -> None:
    inner = xlsx(inline("C7", spaced(PANS[1])))
    package = zip_of({"data/notes.txt": f"ref {PANS[2]}\n"})
    data = docx(PANS[0], {"word/embeddings/Microsoft_Excel_Worksheet.xlsx": inner,
                          "word/embeddings/oleObject1.zip": package})
    expect(scan(data), {"word/document.xml": PANS[0],
                        "word/embeddings/Microsoft_Excel_Worksheet.xlsx/Sheet1!C7": PANS[1],
                        "word/embeddings/oleObject1.zip/data/notes.txt": PANS[2]})


def test_package_structure_members_are_scanned() -> None:
    link = (f'<Relationship Id="rId9" Type="{OFFICE_REL}/hyperlink" TargetMode="External" '
            f'Target="https://pay.example/refund?card={PANS[1]}"/>')
    data = docx(PANS[0], {"word/_rels/document.xml.rels": rels(external=link)})
    expect(scan(data), {"word/document.xml": PANS[0], "word/_rels/document.xml.rels": PANS[1]})


def test_xlsx_shared_strings_no_cell_shows_are_scanned_and_shown_ones_reported_once() -> None:
    rows = '<row r="4"><c r="D4" t="s"><v>1</v></c></row>'
    data = xlsx(rows, shared=["header", PANS[0], f"old value {PANS[1]}"])
    expect(scan(data), {"Sheet1!D4": PANS[0], "xl/sharedStrings.xml": PANS[1]})


@pytest.mark.parametrize(("kind", "member"), [("docx", "word/header1.xml"), ("xlsx", "xl/worksheets/sheet2.xml"),
                                             ("pptx", "ppt/slides/slide2.xml"), ("odt", "styles.xml")])
def test_a_part_named_like_document_text_but_of_another_vocabulary_is_scanned_raw(kind: str, member: str) -> None:
    # Read as a header, sheet or slide it would give no text: it is read as what it is.
    build, text_member = KINDS[kind]
    foreign = f'{XML}<export xmlns="urn:example:crm"><card>{PANS[1]}</card></export>'
    expect(scan(build({member: foreign})), {text_member: PANS[0], member: PANS[1]})


# --------------------------------------------------------------------------------------------
# No double counting


def test_a_number_in_an_attribute_of_a_member_read_as_text_is_found_by_its_raw_pass() -> None:
    # A reader takes text nodes: picture alt text, a field code's argument or a hyperlink
    # tooltip sit in attributes. The member's raw XML is scanned after its text, once.
    body = (f'<w:p><w:r><w:t>{PANS[0]}</w:t></w:r><w:hyperlink w:tooltip="card {PANS[6]}"/>'
            f'<w:r><w:drawing><wp:docPr xmlns:wp="urn:x" id="1" name="x" descr="scan {PANS[7]}"/>'
            "</w:drawing></w:r></w:p>")
    document = f"{XML}<w:document {W}><w:body>{body}</w:body></w:document>"
    data = opc("word/document.xml", {"word/document.xml": document}, {})
    expect(scan(data), {"word/document.xml": [PANS[0], PANS[6], PANS[7]]})


def test_numbers_in_document_text_are_reported_once_beside_the_members_read_raw() -> None:
    # The members read as text are not read raw as well (a cell's number would be reported
    # twice); the members beside them are.
    props = {"customXml/item1.xml": f"{XML}<ref>{PANS[5]}</ref>"}
    expect(scan(docx(f"{PANS[0]} and {spaced(PANS[1])}", props)),
           {"word/document.xml": [PANS[0], PANS[1]], "customXml/item1.xml": PANS[5]})
    shared = '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1"><v>' + PANS[2] + "</v></c></row>"
    expect(scan(xlsx(shared, shared=[PANS[3]], extra=props)),
           {"Sheet1!A1": PANS[3], "Sheet1!B1": PANS[2], "customXml/item1.xml": PANS[5]})
    expect(scan(ods(PANS[4], {"meta.xml": f"{XML}<m>{PANS[5]}</m>"})), {"Sheet1!A1": PANS[4], "meta.xml": PANS[5]})


# --------------------------------------------------------------------------------------------
# Parts the XML parser refuses or cannot finish

DOCTYPE = '<!DOCTYPE root [<!ENTITY corp "Example Corp">]>'

# (package whose text member holds PANS[0] after a DOCTYPE, the member)
REFUSED = {
    "docx": (lambda: docx(PANS[0], prolog=DOCTYPE), "word/document.xml"),
    "xlsx": (lambda: xlsx(inline("A1", PANS[0]), prolog=DOCTYPE), "xl/worksheets/sheet1.xml"),
    "odt": (lambda: odt(PANS[0], prolog=DOCTYPE), "content.xml"),
    "ods": (lambda: ods(PANS[0], prolog=DOCTYPE), "content.xml"),
}


@pytest.mark.parametrize("kind", REFUSED)
def test_a_part_with_a_doctype_is_refused_as_xml_but_its_raw_text_is_scanned(kind: str) -> None:
    build, member = REFUSED[kind]
    got = scan(build())
    expect(got, {member: PANS[0]}, problems=True)
    assert got.problem_at(member) == [Reason.MALFORMED_FILE]


def test_text_before_an_xml_error_is_found_once_and_what_follows_is_scanned_raw() -> None:
    body = (f"{para(PANS[0])}<w:p><w:r><w:t>x</w:t></w:bad></w:r></w:p>{para(PANS[1])}"
            f"<w:p><w:r><w:t>{PANS[2]}</w:t></w:r></w:p>")
    document = f"{XML}<w:document {W}><w:body>{body}</w:body></w:document>"
    got = scan(opc("word/document.xml", {"word/document.xml": document}, {}))
    expect(got, {"word/document.xml": [PANS[0], PANS[1], PANS[2]]}, problems=True)
    assert got.problem_at("word/document.xml") == [Reason.MALFORMED_FILE]


def test_a_cell_being_read_when_the_xml_breaks_is_still_scanned() -> None:
    # The cell's text is gathered until the cell ends, which it never does.
    broken = f"{PANS[0]}</text:p><text:p>&undefined;"
    got = scan(ods(broken))
    expect(got, {"content.xml": PANS[0]}, problems=True)
    assert got.problem_at("content.xml") == [Reason.MALFORMED_FILE]


# --------------------------------------------------------------------------------------------
# Members read as a plain zip reads them


def local_and_central(data: bytes, name: str) -> tuple[int, int]:
    """Offsets of ``name``'s local header and central directory header."""
    encoded = name.encode()
    local = next(i for i in range(len(data)) if data.startswith(b"PK\x03\x04", i)
                 and data[i + 30:i + 30 + len(encoded)] == encoded)
    central = next(i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)
                   and data[i + 46:i + 46 + len(encoded)] == encoded)
    return local, central


def test_an_encrypted_extra_member_is_reported_and_the_rest_still_scanned() -> None:
    data = bytearray(docx(PANS[0], {CSV: csv(PANS[1]), "notes/b.txt": f"b {PANS[2]}\n"}))
    local, central = local_and_central(bytes(data), CSV)
    data[local + 6] |= 0x1  # "encrypted" in both headers
    data[central + 8] |= 0x1
    got = scan(bytes(data))
    expect(got, {"word/document.xml": PANS[0], "notes/b.txt": PANS[2]}, problems=True)
    assert got.problem_at(CSV) == [Reason.INVALID_ENCRYPTION]


def test_an_extra_member_with_a_bad_crc_is_scanned_then_reported_malformed() -> None:
    data = bytearray(docx(PANS[0], {CSV: csv(PANS[1])}))
    _, central = local_and_central(bytes(data), CSV)
    data[central + 16] ^= 0xFF  # CRC-32
    got = scan(bytes(data))
    expect(got, {"word/document.xml": PANS[0], CSV: PANS[1]}, problems=True)
    assert got.problem_at(CSV) == [Reason.MALFORMED_FILE]


def test_extra_members_count_against_the_expansion_limit() -> None:
    filler = "".join(f"row {i},nothing here\n" for i in range(60_000))  # ~1.2 MB, compresses well
    got = scan(docx(PANS[0], {"export/big.csv": filler}), Limits(max_expanded_bytes=500_000))
    assert Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT in [p.reason for p in got.problems]


def test_an_encrypted_odf_scans_the_members_stored_in_the_clear() -> None:
    meta = (f'{XML}<office:document-meta {ODF_NS}><office:meta><meta:keyword>{PANS[1]}</meta:keyword>'
            "</office:meta></office:document-meta>")
    got = scan(odt(PANS[0], {"meta.xml": meta}, encrypted=("content.xml",)))
    assert got.at()[("meta.xml", mask(PANS[1]))] == 1
    assert [p.reason for p in got.problems] == [Reason.INVALID_ENCRYPTION]
