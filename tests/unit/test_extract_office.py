"""Office Open XML and OpenDocument text: real packages built here with zipfile, scanned with
the real matcher. No office library is involved (python-docx, openpyxl are not needed)."""

from __future__ import annotations

import io
import random
import time
import tracemalloc
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cards import make_pan, spaced

from panscan.extract import office
from panscan.extract.budget import ExtractError, Limits
from panscan.extract.office import odf_parts, ooxml_parts
from panscan.extract.parts import Handler, Part
from panscan.match.matcher import scan_chunks
from panscan.model import Reason

RNG = random.Random(20240503)
PANS = [make_pan("4", 16, RNG) for _ in range(8)]
TEST_PAN = "4111111111111111"


def mask(digits: str) -> str:
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


@dataclass(frozen=True)
class Found:
    """One hit: the part it is in, its digits (never shown), the part's ``where``."""

    part: str
    digits: str = field(repr=False)
    where: str | None = None

    def __repr__(self) -> str:
        return f"Found({self.part!r}, {mask(self.digits)}, {self.where!r})"


def found_in(parts: Iterable[Part]) -> list[Found]:
    found, error = consume(iter(parts))
    assert error is None, error
    return found


def same(got: list[Found], want: list[Found]) -> None:
    """Equal as lists, with only masked numbers in the failure message."""
    ok = got == want
    assert ok, f"got {got!r}, want {want!r}"


def text_parts(parts: Iterable[Part]) -> Iterator[Part]:
    """The parts read as document text (not the package's other members, yielded raw)."""
    return (part for part in parts if not part.embedded and not part.backstop)


def texts(parts: Iterable[Part]) -> dict[str, str]:
    return {part.name: b"".join(part.chunks).decode("utf-8") for part in text_parts(parts)}


def consume(parts: Iterator[Part]) -> tuple[list[Found], ExtractError | None]:
    """Hits in the parts, and the error that stopped them, scanned as the framework and the
    worker do: the text yielded before an error is scanned to its end, and a number found
    in a backstop part that was already found is not reported again."""
    out: list[Found] = []
    errors: list[ExtractError] = []

    def until_error(chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from chunks
        except ExtractError as e:
            errors.append(e)

    try:
        for part in parts:
            for hit in scan_chunks(until_error(part.chunks)):
                if part.backstop and any(f.digits == hit.digits for f in out):
                    continue
                out.append(Found(part.name, hit.digits, part.where(hit.offset) if part.where else None))
            if errors:
                break
    except ExtractError as e:
        errors.append(e)
    return out, errors[0] if errors else None


# --------------------------------------------------------------------------------------------
# Package builders

XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
MC = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
A = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
P = 'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
S = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
R = f'xmlns:r="{OFFICE_REL}"'


def rels(*entries: tuple[str, str, str]) -> str:
    """(id, type suffix, target) triples as a .rels member."""
    body = "".join(f'<Relationship Id="{rid}" Type="{OFFICE_REL}/{kind}" Target="{target}"/>'
                   for rid, kind, target in entries)
    return f'{XML}<Relationships xmlns="{PKG_REL}">{body}</Relationships>'


def package(main: str, main_type: str, members: dict[str, str | bytes]) -> bytes:
    """A minimal valid OPC package: content types, package rels, the given members."""
    overrides = f'<Override PartName="/{main}" ContentType="{main_type}"/>'
    types = (f'{XML}<Types xmlns="{CT_NS}">'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             f'<Default Extension="xml" ContentType="application/xml"/>{overrides}</Types>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", types)
        zf.writestr("_rels/.rels", rels(("rId1", "officeDocument", main)))
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def docx(body: str, **extra: str) -> bytes:
    document = f"{XML}<w:document {W} {MC}><w:body>{body}</w:body></w:document>"
    return package("word/document.xml",
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                   {"word/document.xml": document, **extra})


def w_para(*runs: str) -> str:
    # Paragraph properties with a tab-stop definition: w:tab here is no tab character.
    ppr = '<w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>'
    return f"<w:p>{ppr}{''.join(runs)}</w:p>"


def w_run(text: str, bold: bool = False) -> str:
    rpr = "<w:rPr><w:b/></w:rPr>" if bold else ""
    return f'<w:r>{rpr}<w:t xml:space="preserve">{text}</w:t></w:r>'


def parts_of(data: bytes, handler: Handler = ooxml_parts, limits: Limits | None = None) -> Iterator[Part]:
    return handler(io.BytesIO(data), limits or Limits())


# --------------------------------------------------------------------------------------------
# docx


def test_docx_pan_split_across_runs_bold_run_table_cell_and_header_is_found_once_each() -> None:
    three_runs = w_para(w_run("Card "), w_run(PANS[0][:5]), w_run(PANS[0][5:11]), w_run(PANS[0][11:] + " ok"))
    grouped = spaced(PANS[1])
    bold = w_para(w_run(grouped[:7]), w_run(grouped[7:12], bold=True), w_run(grouped[12:]))
    table = f"<w:tbl><w:tr><w:tc>{w_para(w_run('name'))}</w:tc><w:tc>{w_para(w_run(PANS[2]))}</w:tc></w:tr></w:tbl>"
    header = f"{XML}<w:hdr {W}>{w_para(w_run(PANS[3][:8]), w_run(PANS[3][8:], bold=True))}</w:hdr>"
    data = docx(three_runs + bold + table, **{"word/header1.xml": header})
    same(found_in(parts_of(data)), [
        Found("word/document.xml", PANS[0]),
        Found("word/document.xml", PANS[1]),
        Found("word/document.xml", PANS[2]),
        Found("word/header1.xml", PANS[3]),
    ])


def test_docx_text_has_one_line_per_paragraph_with_tabs_and_breaks() -> None:
    body = (w_para(w_run("a"), "<w:r><w:tab/><w:t>b</w:t><w:br/><w:t>c</w:t><w:cr/></w:r>")
            + w_para(w_run("d"), "<w:r><w:noBreakHyphen/></w:r>", w_run("e")))
    assert texts(parts_of(docx(body))) == {"word/document.xml": "a\tb\nc\n\nd-e\n"}


def test_docx_footnotes_endnotes_comments_and_footers_are_parts_of_their_own() -> None:
    def part(root: str, pan: str) -> str:
        return f"{XML}<w:{root} {W}>{w_para(w_run(pan))}</w:{root}>"

    data = docx(w_para(w_run("body")), **{
        "word/footer2.xml": part("ftr", PANS[0]), "word/footnotes.xml": part("footnotes", PANS[1]),
        "word/endnotes.xml": part("endnotes", PANS[2]), "word/comments.xml": part("comments", PANS[3]),
    })
    same(found_in(parts_of(data)), [
        Found("word/footer2.xml", PANS[0]), Found("word/footnotes.xml", PANS[1]),
        Found("word/endnotes.xml", PANS[2]), Found("word/comments.xml", PANS[3]),
    ])


def test_docx_alternate_content_fallback_copy_is_not_found_twice() -> None:
    box = w_para(w_run(PANS[4]))
    alternate = (f"<w:r><mc:AlternateContent><mc:Choice Requires='wps'><w:txbxContent>{box}</w:txbxContent>"
                 f"</mc:Choice><mc:Fallback><w:txbxContent>{box}</w:txbxContent></mc:Fallback>"
                 "</mc:AlternateContent></w:r>")
    same(found_in(parts_of(docx(w_para(alternate)))), [Found("word/document.xml", PANS[4])])


def test_docx_text_deleted_with_track_changes_is_still_found() -> None:
    deleted = f'<w:del w:id="1" w:author="x"><w:r><w:delText>{PANS[5]}</w:delText></w:r></w:del>'
    body = w_para(w_run("card was "), deleted, w_run("removed"))
    same(found_in(parts_of(docx(body))), [Found("word/document.xml", PANS[5])])
    assert texts(parts_of(docx(body)))["word/document.xml"].splitlines()[0] == "card was removed"


# --------------------------------------------------------------------------------------------
# xlsx


def xlsx(sheets: list[tuple[str, str, str]], shared: list[str], order: list[int] | None = None) -> bytes:
    """``sheets``: (name, member, sheetData inner XML); ``order``: rIds given in reverse to
    show the name comes through the workbook's relationships, not the member's number."""
    entries = [(f"rId{i + 10}", "worksheet", member.removeprefix("xl/")) for i, (_, member, _) in enumerate(sheets)]
    sheet_list = "".join(f'<sheet name="{name}" sheetId="{i + 1}" r:id="rId{i + 10}"/>'
                         for i, (name, _, _) in enumerate(sheets))
    members: dict[str, str | bytes] = {
        "xl/workbook.xml": f"{XML}<workbook {S} {R}><sheets>{sheet_list}</sheets></workbook>",
        "xl/_rels/workbook.xml.rels": rels(*entries, ("rId99", "sharedStrings", "sharedStrings.xml")),
        "xl/sharedStrings.xml": (f'{XML}<sst {S} count="{len(shared)}" uniqueCount="{len(shared)}">'
                                 f'{"".join(shared)}</sst>'),
    }
    for _, member, data in sheets:
        members[member] = f"{XML}<worksheet {S}><sheetData>{data}</sheetData></worksheet>"
    return package("xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
                   members)


def test_xlsx_pans_in_shared_rich_text_inline_string_and_number_are_found_with_their_cell() -> None:
    grouped = spaced(PANS[0])
    shared = [
        "<si><t>Card number</t></si>",
        # Rich text: the number is split by a bold run; the phonetic run is not text.
        f'<si><r><t>{grouped[:9]}</t></r><r><rPr><b/></rPr><t xml:space="preserve">{grouped[9:]}</t></r>'
        "<rPh sb='0' eb='1'><t>9</t></rPh></si>",
    ]
    cards = (
        '<row r="1"><c r="A1" t="s"><v>0</v></c></row>'
        '<row r="5"><c r="A5"><v>12</v></c><c r="C5" t="s"><v>1</v></c></row>'
        f'<row r="7"><c r="B7" t="inlineStr"><is><t>{PANS[1]}</t></is></c></row>'
        f'<row r="9"><c r="D9"><v>{PANS[2]}</v></c>'
        f'<c r="E9"><f>D9*1</f><v>{PANS[3][0]}.{PANS[3][1:]}E+15</v></c></row>'
    )
    other = f'<row r="2"><c r="AA2" t="str"><f>"x"</f><v>{PANS[4]}</v></c></row>'
    data = xlsx([("Cards", "xl/worksheets/sheet1.xml", cards), ("Other", "xl/worksheets/sheet2.xml", other)], shared)
    same(found_in(parts_of(data)), [
        Found("Cards", PANS[0], "!C5"), Found("Cards", PANS[1], "!B7"), Found("Cards", PANS[2], "!D9"),
        Found("Cards", PANS[3], "!E9"), Found("Other", PANS[4], "!AA2"),
    ])


def test_xlsx_sheet_is_one_line_per_non_empty_cell_and_refs_are_computed_when_absent() -> None:
    rows = f'<row><c t="inlineStr"><is><t>a</t></is></c><c/><c><v>{PANS[0]}</v></c></row><row><c><v>1.5</v></c></row>'
    data = xlsx([("S", "xl/worksheets/sheet1.xml", rows)], [])
    assert texts(parts_of(data)) == {"S": f"a\n{PANS[0]}\n1.5\n"}
    same(found_in(parts_of(data)), [Found("S", PANS[0], "!C1")])


def test_xlsx_where_is_none_outside_cells_that_can_hold_a_number() -> None:
    data = xlsx([("S", "xl/worksheets/sheet1.xml", f'<row r="3"><c r="B3"><v>{PANS[0]}</v></c></row>')], [])
    part = next(parts_of(data))
    b"".join(part.chunks)
    assert part.where is not None
    assert [part.where(i) for i in (0, 15, 16, 17)] == ["!B3", "!B3", "!B3", None]


def test_xlsx_shared_strings_past_the_memory_cap_are_scanned_as_a_part_of_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(office, "SHARED_STRINGS_MAX_CHARS", 200)
    shared = [f"<si><t>filler {i}</t></si>" for i in range(3)] + [f"<si><t>{PANS[0]}</t></si>"]
    cells = '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>3</v></c></row>'
    data = xlsx([("S", "xl/worksheets/sheet1.xml", cells)], shared)
    same(found_in(parts_of(data)), [Found("xl/sharedStrings.xml", PANS[0])])


def test_xlsx_malformed_shared_strings_still_lets_the_sheets_be_read_then_is_reported() -> None:
    shared = ["<si><t>ok</t></si>", "<si><t>unclosed"]
    cells = f'<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><t>{PANS[0]}</t></is></c></row>'
    found, error = consume(parts_of(xlsx([("S", "xl/worksheets/sheet1.xml", cells)], shared)))
    same(found, [Found("S", PANS[0], "!B1")])
    assert error is not None and error.reason == Reason.MALFORMED_FILE


def test_strict_ooxml_namespaces_are_read_like_transitional_ones() -> None:
    strict = 'xmlns:w="http://purl.oclc.org/ooxml/wordprocessingml/main"'
    body = w_para(w_run(PANS[0][:4]), w_run(PANS[0][4:]))
    document = f"{XML}<w:document {strict}><w:body>{body}</w:body></w:document>"
    data = package("word/document.xml", "application/xml", {"word/document.xml": document})
    same(found_in(parts_of(data)), [Found("word/document.xml", PANS[0])])


# --------------------------------------------------------------------------------------------
# pptx


def test_pptx_pan_in_a_slide_and_in_notes_is_found_per_slide() -> None:
    def slide(root: str, *runs: str) -> str:
        rs = "".join(f"<a:r><a:rPr lang='en-US' b='{i % 2}'/><a:t>{t}</a:t></a:r>" for i, t in enumerate(runs))
        return (f"{XML}<p:{root} {A} {P}><p:cSld><p:spTree><p:sp><p:txBody><a:bodyPr/>"
                f"<a:p>{rs}</a:p><a:p><a:r><a:t>next</a:t></a:r><a:br/><a:r><a:t>line</a:t></a:r></a:p>"
                f"</p:txBody></p:sp></p:spTree></p:cSld></p:{root}>")

    data = package("ppt/presentation.xml",
                   "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml", {
                       "ppt/presentation.xml": f"{XML}<p:presentation {P}/>",
                       "ppt/slides/slide2.xml": slide("sld", "nothing here"),
                       "ppt/slides/slide10.xml": slide("sld", "Card ", PANS[0][:6], PANS[0][6:]),
                       "ppt/notesSlides/notesSlide1.xml": slide("notes", spaced(PANS[1])),
                   })
    same(found_in(parts_of(data)), [Found("ppt/slides/slide10.xml", PANS[0]),
                                    Found("ppt/notesSlides/notesSlide1.xml", PANS[1])])
    assert list(texts(parts_of(data)))[:2] == ["ppt/slides/slide2.xml", "ppt/slides/slide10.xml"]
    assert texts(parts_of(data))["ppt/slides/slide2.xml"] == "nothing here\nnext\nline\n"


# --------------------------------------------------------------------------------------------
# OpenDocument

ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"')
MANIFEST_NS = 'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"'


def odf(kind: str, body: str, styles: str | None = None, encrypted: bool = False) -> bytes:
    media = f"application/vnd.oasis.opendocument.{kind}"
    crypto = ('<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="AAAA">'
              '<manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="AAAA"/>'
              '</manifest:encryption-data>') if encrypted else ""
    manifest = (f'{XML}<manifest:manifest {MANIFEST_NS} manifest:version="1.2">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{media}"/>'
                f'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">{crypto}'
                "</manifest:file-entry></manifest:manifest>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), media)  # first and stored, as ODF requires
        zf.writestr("META-INF/manifest.xml", manifest)
        zf.writestr("content.xml", f"{XML}<office:document-content {ODF_NS}><office:body>{body}"
                                   "</office:body></office:document-content>")
        if styles is not None:
            zf.writestr("styles.xml", f"{XML}<office:document-styles {ODF_NS}><office:master-styles>{styles}"
                                      "</office:master-styles></office:document-styles>")
    return buf.getvalue()


def test_odt_pan_split_across_spans_and_in_a_page_header_is_found() -> None:
    g = spaced(PANS[0])
    body = (f"<office:text><text:h>Title</text:h><text:p>Card <text:span>{g[:4]}</text:span><text:s/>"
            f"<text:span text:style-name='b'>{g[5:9]}</text:span><text:s/>{g[10:14]}\n   {g[15:]}"
            "<text:note><text:note-citation>1</text:note-citation><text:note-body><text:p>see</text:p>"
            f"</text:note-body></text:note></text:p><text:p>{PANS[1][:3]}<text:a>{PANS[1][3:]}</text:a></text:p>"
            "</office:text>")
    header = f"<style:master-page><style:header><text:p>{PANS[2]}</text:p></style:header></style:master-page>"
    data = odf("text", body, header)
    same(found_in(parts_of(data, odf_parts)), [
        Found("content.xml", PANS[0]), Found("content.xml", PANS[1]), Found("styles.xml", PANS[2]),
    ])
    # The footnote is read apart from its paragraph, without its citation mark.
    assert texts(parts_of(data, odf_parts))["content.xml"].startswith(f"Title\nCard {g}\nsee\n")


def test_odt_tabs_line_breaks_and_counted_spaces() -> None:
    body = '<office:text><text:p>a<text:tab/>b<text:line-break/>c<text:s text:c="3"/>d</text:p></office:text>'
    assert texts(parts_of(odf("text", body), odf_parts)) == {"content.xml": "a\tb\nc   d\n"}


def test_ods_pan_cells_have_refs_computed_through_repeated_rows_and_columns() -> None:
    def empty_rows(n: int) -> str:
        return (f'<table:table-row table:number-rows-repeated="{n}">'
                '<table:table-cell table:number-columns-repeated="1024"/></table:table-row>')

    cards = (
        f'<table:table table:name="Cards">{empty_rows(3)}<table:table-row>'
        '<table:table-cell table:number-columns-repeated="2"/>'
        '<table:table-cell office:value-type="string">'
        f"<text:p><text:span>{PANS[0][:8]}</text:span>{PANS[0][8:]}</text:p></table:table-cell>"
        f'<table:table-cell office:value-type="float" office:value="{PANS[1]}">'
        "<text:p>4.1E+15</text:p></table:table-cell>"
        f'<table:table-cell office:value-type="float" office:value="{PANS[2]}">'
        f"<text:p>{PANS[2]}</text:p></table:table-cell>"
        '<table:table-cell table:number-columns-repeated="1000000"/></table:table-row>'
        f"{empty_rows(1048000)}</table:table>"
    )
    second = (f'<table:table table:name="Second"><table:table-row><table:table-cell><text:p>{PANS[3]}</text:p>'
              "</table:table-cell></table:table-row></table:table>")
    data = odf("spreadsheet", f"<office:spreadsheet>{cards}{second}</office:spreadsheet>")
    same(found_in(parts_of(data, odf_parts)), [
        Found("Cards", PANS[0], "!C4"), Found("Cards", PANS[1], "!D4"), Found("Cards", PANS[2], "!E4"),
        Found("Second", PANS[3], "!A1"),
    ])


def test_ods_huge_repeats_of_a_non_empty_cell_are_read_once_and_quickly() -> None:
    row = ('<table:table-row table:number-rows-repeated="999999999">'
           f'<table:table-cell table:number-columns-repeated="999999999"><text:p>{PANS[0]}</text:p>'
           f'</table:table-cell><table:table-cell><text:p>{PANS[1]}</text:p></table:table-cell></table:table-row>')
    data = odf("spreadsheet", f'<office:spreadsheet><table:table table:name="T">{row}</table:table>'
                              "</office:spreadsheet>")
    started = time.monotonic()
    same(found_in(parts_of(data, odf_parts)), [Found("T", PANS[0], "!A1"), Found("T", PANS[1], "!CFDGSXL1")])
    assert time.monotonic() - started < 5


def test_ods_part_asked_for_before_the_previous_is_read_skips_the_rest_of_it() -> None:
    tables = "".join(f'<table:table table:name="T{i}"><table:table-row><table:table-cell><text:p>{PANS[i]}'
                     "</text:p></table:table-cell></table:table-row></table:table>" for i in range(3))
    parts = list(text_parts(parts_of(odf("spreadsheet", f"<office:spreadsheet>{tables}</office:spreadsheet>"),
                                     odf_parts)))
    assert [p.name for p in parts] == ["T0", "T1", "T2"]


def test_encrypted_odf_is_invalid_encryption_and_yields_nothing() -> None:
    data = odf("text", f"<office:text><text:p>{PANS[0]}</text:p></office:text>", encrypted=True)
    found, error = consume(parts_of(data, odf_parts))
    assert found == []
    assert error is not None and error.reason == Reason.INVALID_ENCRYPTION


# --------------------------------------------------------------------------------------------
# Broken and hostile packages


def test_truncated_document_xml_yields_what_was_read_then_malformed_file() -> None:
    document = f"{XML}<w:document {W}><w:body>{w_para(w_run(PANS[0]))}<w:p><w:r><w:t>unfini"
    data = package("word/document.xml", "application/xml", {"word/document.xml": document})
    found, error = consume(parts_of(data))
    same(found, [Found("word/document.xml", PANS[0])])
    assert error is not None and error.reason == Reason.MALFORMED_FILE


def test_entity_expansion_is_refused_as_malformed_file_and_the_raw_text_is_scanned_once() -> None:
    # The entities are never expanded (four copies would be four findings); the number is in
    # the member's bytes once, and those are scanned as they are.
    bomb = (f'{XML}<!DOCTYPE w:document [<!ENTITY a "{PANS[0]}"><!ENTITY b "&a;&a;&a;&a;">]>'
            f"<w:document {W}><w:body>{w_para(w_run('&b;'))}</w:body></w:document>")
    found, error = consume(parts_of(package("word/document.xml", "application/xml", {"word/document.xml": bomb})))
    same(found, [Found("word/document.xml", PANS[0])])
    assert error is not None and error.reason == Reason.MALFORMED_FILE


@pytest.mark.parametrize("handler", [ooxml_parts, odf_parts])
def test_a_broken_zip_is_malformed_file(handler: Handler) -> None:
    data = docx(w_para(w_run(PANS[0])))
    found, error = consume(handler(io.BytesIO(data[: len(data) // 2]), Limits()))
    assert found == []
    assert error is not None and error.reason == Reason.MALFORMED_FILE


def central_header(data: bytes, name: str) -> int:
    """Offset of ``name``'s central directory header (the one zipfile trusts)."""
    return data.index(name.encode(), data.index(b"PK\x01\x02")) - 46


def test_member_with_a_bad_crc_is_malformed_file_after_its_text() -> None:
    data = bytearray(docx(w_para(w_run(PANS[0])) + w_para(w_run("x" * 100_000))))
    data[central_header(bytes(data), "word/document.xml") + 16] ^= 0xFF  # CRC-32
    found, error = consume(parts_of(bytes(data)))
    same(found, [Found("word/document.xml", PANS[0])])
    assert error is not None and error.reason == Reason.MALFORMED_FILE


def test_expansion_past_the_limit_stops_after_the_text_before_it() -> None:
    filler = w_para(w_run("y" * 200_000))
    data = docx(w_para(w_run(PANS[0])) + filler + w_para(w_run(PANS[1])))
    found, error = consume(parts_of(data, limits=Limits(max_expanded_bytes=100_000)))
    same(found, [Found("word/document.xml", PANS[0])])
    assert error is not None and error.reason == Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT


def test_member_size_understated_in_headers_is_malformed_after_the_text_read() -> None:
    # zipfile stops at the declared size and the CRC then fails: the text before it counts.
    data = bytearray(docx(w_para(w_run(PANS[0])) + w_para(w_run("z" * 100_000))))
    central = central_header(bytes(data), "word/document.xml")
    data[central + 24:central + 28] = (50_000).to_bytes(4, "little")  # uncompressed size
    found, error = consume(parts_of(bytes(data)))
    same(found, [Found("word/document.xml", PANS[0])])
    assert error is not None and error.reason == Reason.MALFORMED_FILE


def test_unknown_ooxml_package_yields_the_text_of_its_xml_members() -> None:
    data = package("visio/document.xml", "application/xml", {
        "visio/document.xml": f"{XML}<doc/>", "visio/pages/page1.xml": f"{XML}<p><t>{PANS[0]}</t><t>x</t></p>",
    })
    same(found_in(parts_of(data)), [Found("visio/pages/page1.xml", PANS[0])])


# --------------------------------------------------------------------------------------------
# Size: a big sheet streams in bounded memory


def big_xlsx(path: Path, rows: int, cols: int, pan_cell: tuple[int, int]) -> None:
    """A sheet of rows*cols numeric and shared-string cells, written member by member."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", f'{XML}<Types xmlns="{CT_NS}"/>')
        zf.writestr("_rels/.rels", rels(("rId1", "officeDocument", "xl/workbook.xml")))
        zf.writestr("xl/workbook.xml", f'{XML}<workbook {S} {R}><sheets><sheet name="Big" sheetId="1" r:id="rId1"/>'
                                       "</sheets></workbook>")
        zf.writestr("xl/_rels/workbook.xml.rels", rels(("rId1", "worksheet", "worksheets/sheet1.xml")))
        zf.writestr("xl/sharedStrings.xml", f"{XML}<sst {S}><si><t>ok</t></si><si><t>declined</t></si></sst>")
        with zf.open("xl/worksheets/sheet1.xml", "w") as out:
            out.write(f"{XML}<worksheet {S}><sheetData>".encode())
            for r in range(1, rows + 1):
                cells = []
                for c in range(1, cols + 1):
                    ref = f"{office._column_letters(c)}{r}"
                    if (r, c) == pan_cell:
                        cells.append(f'<c r="{ref}"><v>{PANS[0]}</v></c>')
                    elif c % 2:
                        cells.append(f'<c r="{ref}"><v>{r * 1000 + c}</v></c>')
                    else:
                        cells.append(f'<c r="{ref}" t="s"><v>{c % 4 // 2}</v></c>')
                out.write(f'<row r="{r}">{"".join(cells)}</row>'.encode())
            out.write(b"</sheetData></worksheet>")


def test_200k_cell_sheet_is_read_in_bounded_memory_and_reasonable_time(tmp_path: Path) -> None:
    path = tmp_path / "big.xlsx"
    big_xlsx(path, rows=20_000, cols=10, pan_cell=(19_999, 7))
    sheet_bytes = zipfile.ZipFile(path).getinfo("xl/worksheets/sheet1.xml").file_size
    found: list[Found] = []
    tracemalloc.start()
    started = time.monotonic()
    try:
        with path.open("rb") as f:
            for part in ooxml_parts(f, Limits()):
                hits = scan_chunks(part.chunks)  # a backstop (the sheet's raw XML) read as well
                if not part.backstop:
                    found += [Found(part.name, hit.digits, part.where(hit.offset) if part.where else None)
                              for hit in hits]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    same(found, [Found("Big", PANS[0], "!G19999")])
    assert sheet_bytes > 6_000_000
    assert peak < 8 * 2**20, f"peak {peak} bytes for a {sheet_bytes}-byte sheet"
    assert elapsed < 60


def test_text_chunks_hands_over_gathered_text_before_an_error() -> None:
    from panscan.extract.parts import text_chunks

    def pieces():  # type: ignore[no-untyped-def]
        yield "card 4111 "
        yield "1111 1111 1111"
        raise ValueError("limit")

    got: list[bytes] = []
    with pytest.raises(ValueError):
        for chunk in text_chunks(pieces()):
            got.append(chunk)
    assert got == [b"card 4111 1111 1111 1111"]
