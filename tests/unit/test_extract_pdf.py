"""PDF documents: page text from deflated content streams, metadata, forms, attachments,
encryption, malformed files and the byte budget. Every PDF is built byte by byte here."""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from collections.abc import Callable, Iterator

import pytest
from cards import make_pan
from pypdf import PdfReader, PdfWriter

from panscan.extract.budget import ExtractError, Limits
from panscan.extract.parts import Part
from panscan.extract.pdf import pdf_parts
from panscan.match.matcher import scan_chunks
from panscan.model import Reason

PAN = make_pan("453201", 16)  # generated, Luhn-valid, Visa range
TEST_PAN = "4111111111111111"  # published test number


def make_pdf(
    pages: list[str],
    *,
    contents: dict[int, bytes] | None = None,
    catalog_extra: bytes = b"",
    page_extra: dict[int, bytes] | None = None,
    objects: dict[int, bytes] | None = None,
) -> bytes:
    """A minimal, valid PDF: one Helvetica text line per page in a FlateDecode stream,
    with a classic xref table at exact offsets. ``contents`` replaces a page's compressed
    stream bytes; ``catalog_extra``, ``page_extra`` (by page index) and ``objects``
    (numbers 4 to 9) add structure."""
    objs = {
        1: b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    for i, text in enumerate(pages):
        page, content = 10 + 2 * i, 11 + 2 * i
        kids.append(b"%d 0 R" % page)
        objs[page] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R " % content
            + (page_extra or {}).get(i, b"")
            + b">>"
        )
        data = (contents or {}).get(i)
        if data is None:
            data = zlib.compress(b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET")
        objs[content] = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    objs[2] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % len(pages)
    objs.update(objects or {})

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    size = max(objs) + 1
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % size
    for num in range(size):  # each entry exactly 20 bytes
        out += b"%010d 00000 n \n" % offsets[num] if num in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def rewrite(pdf: bytes, change: Callable[[PdfWriter], object]) -> bytes:
    """``pdf`` passed through pypdf's writer after ``change(writer)``."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def read(pdf: bytes, limits: Limits | None = None) -> tuple[list[tuple[str, bool, bytes]], ExtractError | None]:
    """Every part (name, embedded, bytes), consumed in order as the framework does, and the
    error that ended the parts, if any."""
    parts: list[tuple[str, bool, bytes]] = []
    it: Iterator[Part] = pdf_parts(io.BytesIO(pdf), limits or Limits())
    try:
        for part in it:
            data = bytearray()
            try:
                for chunk in part.chunks:
                    assert chunk, "chunks are non-empty"
                    data += chunk
            finally:
                parts.append((part.name, part.embedded, bytes(data)))
    except ExtractError as e:
        return parts, e
    return parts, None


def pans(data: bytes) -> list[str]:
    return [h.digits for h in scan_chunks([data])]


def found_in(parts: list[tuple[str, bool, bytes]], pan: str) -> list[str]:
    """Names of the parts whose text holds ``pan`` (compared, never printed)."""
    return [name for name, _, data in parts for digits in pans(data) if digits == pan]


def test_pan_in_a_deflated_stream_on_page_two_is_found_on_page_2() -> None:
    pdf = make_pdf(["Statement for March", f"Card {PAN} charged"])
    assert PAN.encode() not in pdf  # only a reader that inflates the stream can see it

    parts, error = read(pdf)

    assert error is None
    assert [name for name, _, _ in parts] == ["page 1", "page 2"]
    assert not any(embedded for _, embedded, _ in parts)
    assert found_in(parts, PAN) == ["page 2"]


def test_grouped_pan_in_page_text_is_found() -> None:
    grouped = " ".join(PAN[i : i + 4] for i in range(0, 16, 4))
    parts, error = read(make_pdf([f"card {grouped} exp 12/29"]))
    assert error is None
    assert found_in(parts, PAN) == ["page 1"]


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_pdf_with_a_user_password_is_invalid_encryption_before_any_part(algorithm: str) -> None:
    pdf = rewrite(
        make_pdf([f"Card {PAN}"]),
        lambda w: w.encrypt(user_password="secret", owner_password="owner", algorithm=algorithm),
    )

    parts, error = read(pdf)

    assert parts == []
    assert error is not None and error.reason is Reason.INVALID_ENCRYPTION


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_pdf_encrypted_with_an_empty_user_password_is_read(algorithm: str) -> None:
    # Owner-password-only PDFs (print/copy restrictions) open in every viewer without a
    # prompt, so they hold readable card data like any other PDF.
    pdf = rewrite(
        make_pdf(["cover", f"Card {PAN}"]),
        lambda w: w.encrypt(user_password="", owner_password="owner", algorithm=algorithm),
    )

    parts, error = read(pdf)

    assert error is None
    assert found_in(parts, PAN) == ["page 2"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"%PDF-1.4\n" + b"\x00garbage" * 100, id="garbage"),
        pytest.param(make_pdf(["one", f"Card {PAN}"])[:200], id="truncated"),
        pytest.param(b"", id="empty"),
    ],
)
def test_unparseable_pdf_is_malformed_file_before_any_part(data: bytes) -> None:
    parts, error = read(data)
    assert parts == []
    assert error is not None and error.reason is Reason.MALFORMED_FILE
    assert PAN not in error.detail and PAN not in str(error)


def test_embedded_file_is_an_embedded_part_with_its_exact_bytes() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cards.csv", f"name,card\nA,{PAN}\n")
    archive = buf.getvalue()
    pdf = rewrite(make_pdf(["see attachment"]), lambda w: w.add_attachment("cards.zip", archive))

    parts, error = read(pdf)

    assert error is None
    attachments = [(name, data) for name, embedded, data in parts if embedded]
    assert attachments == [("attachment: cards.zip", archive)]
    assert found_in(parts, PAN) == []  # the framework expands the zip; the handler does not


def test_pan_in_document_information_is_found_in_metadata() -> None:
    pdf = rewrite(make_pdf(["nothing here"]), lambda w: w.add_metadata({"/Title": f"Refund {TEST_PAN}"}))
    parts, error = read(pdf)
    assert error is None
    assert found_in(parts, TEST_PAN) == ["metadata"]
    assert parts[0][0] == "metadata"  # cheap parts come first


def test_pan_in_a_form_field_value_is_found_in_form_fields() -> None:
    pdf = make_pdf(
        ["Application form"],
        catalog_extra=b"/AcroForm << /Fields [5 0 R] >> ",
        objects={5: b"<< /FT /Tx /T (card_number) /V (" + PAN.encode() + b") >>"},
    )
    parts, error = read(pdf)
    assert error is None
    assert found_in(parts, PAN) == ["form fields"]


def test_pan_in_an_annotation_comment_is_found_on_its_page() -> None:
    note = b"<< /Type /Annot /Subtype /Text /Rect [0 0 10 10] /Contents (call back re " + PAN.encode() + b") >>"
    pdf = make_pdf(["first", "second"], page_extra={1: b"/Annots [5 0 R] "}, objects={5: note})
    parts, error = read(pdf)
    assert error is None
    assert found_in(parts, PAN) == ["page 2"]


def test_file_attached_to_a_page_is_an_embedded_part_named_for_the_page() -> None:
    payload = f"card {PAN}\n".encode()
    pdf = make_pdf(
        ["first"],
        page_extra={0: b"/Annots [5 0 R] "},
        objects={
            5: b"<< /Type /Annot /Subtype /FileAttachment /Rect [0 0 10 10] /FS 6 0 R >>",
            6: b"<< /Type /Filespec /F (notes.txt) /EF << /F 7 0 R >> >>",
            7: b"<< /Type /EmbeddedFile /Length %d >>\nstream\n" % len(payload) + payload + b"\nendstream",
        },
    )
    parts, error = read(pdf)
    assert error is None
    assert [(name, data) for name, embedded, data in parts if embedded] == [("attachment: notes.txt (page 1)", payload)]


def test_a_page_that_fails_is_skipped_the_rest_read_then_malformed_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    real = PageObject.extract_text
    calls = {"n": 0}

    def flaky(self: PageObject, *args: object, **kwargs: object) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError(f"bad operator near {PAN}")  # pypdf messages may quote content
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PageObject, "extract_text", flaky)
    parts, error = read(make_pdf([f"lost {TEST_PAN}", f"Card {PAN}"]))

    assert found_in(parts, PAN) == ["page 2"]
    assert error is not None and error.reason is Reason.MALFORMED_FILE
    assert "page 1" in error.detail
    assert PAN not in str(error) and error.__cause__ is None


def test_output_past_max_expanded_bytes_is_cut_at_the_budget_and_reported() -> None:
    pdf = make_pdf([f"Card {PAN} first", "x" * 200, "never read"])
    limit = 40
    parts, error = read(pdf, Limits(max_expanded_bytes=limit))

    assert error is not None and error.reason is Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT
    assert sum(len(data) for _, _, data in parts) == limit
    assert [name for name, _, _ in parts] == ["page 1", "page 2"]
    assert found_in(parts, PAN) == ["page 1"]  # found before the limit, kept


def test_pypdf_warnings_quoting_document_content_never_reach_logs(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # pypdf logs "AcroForm is not a dictionary: %(acro_form)s" with the value itself.
    pdf = make_pdf([f"Card {PAN}"], catalog_extra=b"/AcroForm (" + TEST_PAN.encode() + b") ")
    caplog.set_level(logging.DEBUG)

    parts, error = read(pdf)

    assert error is None
    assert found_in(parts, PAN) == ["page 1"]
    assert all(TEST_PAN not in r.getMessage() and PAN not in r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    assert TEST_PAN not in out + err and PAN not in out + err
