"""Email and mbox: headers, decoded bodies (quoted-printable, base64, charsets, HTML),
attachments handed on as embedded bytes, nested messages, limits and malformed mail.
Every message is written out byte by byte here, as a mail client would store it."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from collections.abc import Iterator

import pytest
from cards import make_pan

from panscan.extract.budget import ExtractError, Limits
from panscan.extract.mail import _mbox_spans, mail_parts
from panscan.extract.parts import Part
from panscan.match.matcher import scan_chunks
from panscan.model import Reason

PAN = make_pan("453201", 16)  # generated, Luhn-valid, Visa range
PAN2 = make_pan("5412", 16)  # generated, Luhn-valid, Mastercard range

Parts = list[tuple[str, bool, bytes]]


def read(data: bytes, limits: Limits | None = None) -> tuple[Parts, ExtractError | None]:
    """Every part (name, embedded, bytes), consumed in order as the framework does, and the
    error that ended the parts, if any."""
    parts: Parts = []
    it: Iterator[Part] = mail_parts(io.BytesIO(data), limits or Limits())
    try:
        for part in it:
            buf = bytearray()
            try:
                for chunk in part.chunks:
                    assert chunk, "chunks are non-empty"
                    buf += chunk
            finally:
                parts.append((part.name, part.embedded, bytes(buf)))
    except ExtractError as e:
        return parts, e
    return parts, None


def found_in(parts: Parts, pan: str) -> list[str]:
    """Names of the text parts whose text holds ``pan`` (compared, never printed)."""
    return [
        name for name, embedded, data in parts if not embedded for hit in scan_chunks([data]) if hit.digits == pan
    ]


def names(parts: Parts) -> list[str]:
    return [name for name, _, _ in parts]


def eml(*lines: str, eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol).encode("ascii")


def zip_of(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, text)
    return buf.getvalue()


def b64_lines(data: bytes) -> list[str]:
    return base64.encodebytes(data).decode("ascii").splitlines()


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_pan_split_by_a_quoted_printable_soft_line_break_is_found_contiguous(eol: str) -> None:
    data = eml(
        "From: billing@example.com",
        "To: ops@example.com",
        "Subject: refund",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        f"Please refund card {PAN[:7]}=",
        f"{PAN[7:]} today =E2=80=94 thanks",
        eol=eol,
    )
    assert PAN.encode() not in data

    parts, error = read(data)

    assert error is None
    assert names(parts) == ["headers", "body"]
    assert found_in(parts, PAN) == ["body"]


def test_base64_zip_attachment_is_an_embedded_part_with_the_zips_bytes() -> None:
    archive = zip_of("cards.csv", f"name,card\nA,{PAN}\n")
    data = eml(
        "From: a@example.com",
        "Subject: export",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="XYZ"',
        "",
        "--XYZ",
        "Content-Type: text/plain",
        "",
        "See attached.",
        "--XYZ",
        "Content-Type: application/zip",
        'Content-Disposition: attachment; filename="cards.zip"',
        "Content-Transfer-Encoding: base64",
        "",
        *b64_lines(archive),
        "--XYZ--",
    )

    parts, error = read(data)

    assert error is None
    assert names(parts) == ["headers", "body", "attachment: cards.zip"]
    assert [(n, d) for n, embedded, d in parts if embedded] == [("attachment: cards.zip", archive)]


def test_mbox_messages_are_parts_of_their_own_and_escaped_from_lines_stay_in_the_body() -> None:
    data = (
        eml(
            "From alice@example.com Mon Jan  1 00:00:00 2024",
            "From: alice@example.com",
            "Subject: first",
            "",
            "nothing to see",
            ">From the archive: not a new message",
            "",
        )
        + eml(
            "From bob@example.com Tue Jan  2 00:00:00 2024",
            "From: bob@example.com",
            "Subject: second",
            "",
            f"card {PAN}",
        )
    )

    parts, error = read(data)

    assert error is None
    assert names(parts) == ["message 1/headers", "message 1/body", "message 2/headers", "message 2/body"]
    assert found_in(parts, PAN) == ["message 2/body"]
    assert b">From the archive" in dict((n, d) for n, _, d in parts)["message 1/body"]


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 6, 7, 11, 64])
def test_mbox_separators_are_found_across_read_blocks(block_size: int) -> None:
    data = b"From a\nx\nFrom b\ny\n\nFrom c\nFromage\nz"
    spans = list(_mbox_spans(io.BytesIO(data), 0, block_size))
    assert [data[b:e] for b, e in spans] == [b"From a\nx\n", b"From b\ny\n\n", b"From c\nFromage\nz"]


def test_html_body_is_read_as_text_with_inline_tags_joined_and_entities_decoded() -> None:
    groups = [PAN[i : i + 4] for i in range(0, 16, 4)]
    markup = (
        f"<html><head><style>p {{ color: red }}</style></head><body><p>Card:</p><p><b>{groups[0]}</b>"
        f"&nbsp;{groups[1]}\n  {groups[2]}&#32;<span\nclass=x>{groups[3]}</span></p>"
        f'<td>{PAN2[:8]}</td><td>{PAN2[8:]}</td><img alt="{PAN2}"></body></html>'
    )
    data = eml("From: a@example.com", "Content-Type: text/html; charset=us-ascii", "", markup)

    parts, error = read(data)

    assert error is None
    assert names(parts) == ["headers", "body (text/html)"]
    assert found_in(parts, PAN) == ["body (text/html)"]
    # Table cells are separate for a reader: the two halves must not join; the alt text counts.
    assert found_in(parts, PAN2) == ["body (text/html)"]
    text = parts[1][2]
    assert b"<" not in text and b"&nbsp;" not in text


def test_alternative_plain_and_html_bodies_are_both_read() -> None:
    data = eml(
        "From: a@example.com",
        'Content-Type: multipart/alternative; boundary="b1"',
        "",
        "--b1",
        "Content-Type: text/plain",
        "",
        "plain version",
        "--b1",
        "Content-Type: text/html",
        "",
        f"<p>card <i>{PAN}</i></p>",
        "--b1--",
    )
    parts, error = read(data)
    assert error is None
    assert names(parts) == ["headers", "body", "part 2 (text/html)"]
    assert found_in(parts, PAN) == ["part 2 (text/html)"]


def test_pan_in_an_encoded_word_subject_is_found_in_headers() -> None:
    subject = base64.b64encode(f"Zahlung {PAN} \u2013 bestätigt".encode()).decode()
    data = eml("From: a@example.com", f"Subject: =?utf-8?b?{subject}?=", "", "hi")
    parts, error = read(data)
    assert error is None
    assert found_in(parts, PAN) == ["headers"]


def test_utf16_body_is_decoded_by_its_charset() -> None:
    body = base64.b64encode(f"card {PAN}\n".encode("utf-16")).decode()
    data = eml(
        "From: a@example.com",
        "Content-Type: text/plain; charset=utf-16",
        "Content-Transfer-Encoding: base64",
        "",
        body,
    )
    parts, error = read(data)
    assert error is None
    assert found_in(parts, PAN) == ["body"]


def test_text_with_a_file_name_and_unknown_charset_is_an_attachment_and_bodies_fall_back_to_utf8() -> None:
    data = eml(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain; charset=x-no-such-charset",
        "",
        f"card {PAN}",
        "--b",
        'Content-Type: text/csv; name="cards.csv"',
        "",
        f"A,{PAN2}",
        "--b--",
    )
    parts, error = read(data)
    assert error is None
    assert names(parts) == ["headers", "body", "attachment: cards.csv"]
    assert found_in(parts, PAN) == ["body"]
    assert parts[2][1] is True and PAN2.encode() in parts[2][2]  # handed on for sniffing


def test_forwarded_message_is_read_with_its_own_headers_and_attachments() -> None:
    inner = [
        "From: customer@example.com",
        "Subject: my card",
        'Content-Type: multipart/mixed; boundary="in"',
        "",
        "--in",
        "Content-Type: text/plain",
        "",
        f"my card is {PAN}",
        "--in",
        "Content-Type: application/octet-stream",
        'Content-Disposition: attachment; filename="scan.bin"',
        "Content-Transfer-Encoding: base64",
        "",
        *b64_lines(f"card {PAN2}".encode()),
        "--in--",
    ]
    data = eml(
        "From: support@example.com",
        'Content-Type: multipart/mixed; boundary="out"',
        "",
        "--out",
        "Content-Type: text/plain",
        "",
        "forwarding",
        "--out",
        "Content-Type: message/rfc822",
        "",
        *inner,
        "--out--",
    )

    parts, error = read(data)

    assert error is None
    assert names(parts) == [
        "headers",
        "body",
        "part 2 (message/rfc822)/headers",
        "part 2 (message/rfc822)/body",
        "part 2 (message/rfc822)/attachment: scan.bin",
    ]
    assert found_in(parts, PAN) == ["part 2 (message/rfc822)/body"]
    assert parts[-1][2] == f"card {PAN2}".encode()


def test_messages_nested_deeper_than_the_limit_are_not_read_and_reported() -> None:
    innermost = ["From: c@example.com", "", f"card {PAN}"]
    middle = ["From: b@example.com", "Content-Type: message/rfc822", "", *innermost]
    data = eml("From: a@example.com", "Content-Type: message/rfc822", "", *middle)

    parts, error = read(data, Limits(max_archive_depth=1))

    assert names(parts) == ["headers", "part 1 (message/rfc822)/headers"]
    assert error is not None and error.reason is Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT
    # Within the limit, the same message is read through.
    parts, error = read(data, Limits(max_archive_depth=2))
    assert error is None
    assert found_in(parts, PAN) == ["part 1 (message/rfc822)/part 1 (message/rfc822)/body"]


def test_truncated_mail_yields_what_it_holds_then_malformed_file() -> None:
    data = eml(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain",
        "",
        f"card {PAN}",
        "--b",
        "Content-Type: application/zip",
        'Content-Disposition: attachment; filename="cards.zip"',
        "Content-Transfer-Encoding: base64",
        "",
        "UEsDBBQAAAAIA",  # cut mid-attachment: 13 base64 characters, no closing boundary
    )

    parts, error = read(data)

    assert found_in(parts, PAN) == ["body"]
    assert error is not None and error.reason is Reason.MALFORMED_FILE
    assert PAN not in str(error)


def test_output_past_max_expanded_bytes_is_cut_at_the_budget_and_reported() -> None:
    data = eml("From: a@example.com", "", f"card {PAN}", "x" * 500)
    limit = 60
    parts, error = read(data, Limits(max_expanded_bytes=limit))
    assert error is not None and error.reason is Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT
    assert sum(len(d) for _, _, d in parts) == limit


def test_message_larger_than_decoder_memory_is_scanned_raw_and_the_next_is_still_parsed() -> None:
    big = eml("From a Mon Jan  1 00:00:00 2024", "From: a@example.com", "", f"card {PAN2}", *(["y" * 70] * 50))
    small = eml("From b Mon Jan  1 00:00:00 2024", "From: b@example.com", "", f"card {PAN}")

    parts, error = read(big + small, Limits(max_decoder_memory=1000))

    assert names(parts) == ["message 1/raw", "message 2/headers", "message 2/body"]
    assert found_in(parts, PAN2) == ["message 1/raw"]
    assert found_in(parts, PAN) == ["message 2/body"]
    assert error is not None and error.reason is Reason.FILE_EXCEEDS_SIZE_LIMIT


def test_hostile_markup_is_reduced_in_linear_time() -> None:
    markup = "<" * 300_000 + "<a " + "x" * 300_000 + f" <p>card {PAN}</p>"
    data = eml("From: a@example.com", "Content-Type: text/html", "", markup)
    start = time.monotonic()
    parts, error = read(data)
    assert time.monotonic() - start < 5
    assert error is None
    assert found_in(parts, PAN) == ["body (text/html)"]


def test_an_empty_file_is_one_empty_message() -> None:
    parts, error = read(b"")
    assert error is None
    assert all(data == b"" for _, _, data in parts)


def test_a_part_that_fails_to_decode_is_skipped_and_the_rest_read_then_malformed_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from panscan.extract import mail

    real = mail._decode
    calls = {"n": 0}

    def flaky(data: bytes, charset: str | None) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(f"codec choked on {PAN2}")  # messages may quote content
        return real(data, charset)

    monkeypatch.setattr(mail, "_decode", flaky)
    data = eml(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain",
        "",
        f"lost {PAN2}",
        "--b",
        "Content-Type: text/plain",
        "",
        f"card {PAN}",
        "--b--",
    )

    parts, error = read(data)

    assert found_in(parts, PAN) == ["part 2 (text/plain)"]  # names keep their places: "body" failed
    assert error is not None and error.reason is Reason.MALFORMED_FILE
    assert "part 1" in error.detail and PAN2 not in str(error)
