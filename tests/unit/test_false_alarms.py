"""Structures that are not card numbers are not reported (issue 17, item 1); numbers that are, are.

Each rejected shape sits beside a twin that differs only in what the rule looks at, so a test
fails for the stated reason alone. Files are real files on disk, scanned in small chunks, on
every code path of the matcher.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from cards import PATHS, forced_path, make_pan, printed, spaced

from panscan.match.luhn import check_digit, luhn_valid
from panscan.match.matcher import RawHit, StreamScanner
from panscan.match.patterns import load_patterns
from panscan.model import Confidence

PATTERNS = load_patterns()


def scan_text(tmp_path: Path, text: str, path: str = "dense") -> list[RawHit]:
    file = tmp_path / "sample.txt"
    file.write_text(text)
    with forced_path(path):
        scanner = StreamScanner(PATTERNS)
        hits: list[RawHit] = []
        with file.open("rb") as f:
            while chunk := f.read(97):
                hits.extend(scanner.feed(chunk))
        hits.extend(scanner.finish())
    return hits


def found(tmp_path: Path, text: str, pan: str) -> list[Confidence]:
    """Confidences of the hits of ``pan``, on every code path (which must agree)."""
    per_path = [[h.confidence for h in scan_text(tmp_path, text, p) if h.digits == pan] for p in PATHS]
    assert all(r == per_path[0] for r in per_path), per_path
    return per_path[0]


PAN = make_pan("4", 16, random.Random(17))


def arithmetic_pan() -> str:
    """A Luhn-valid Visa number whose four groups step by a constant (4201 4217 4233 4249)."""
    for a, step in itertools.product(range(4100, 4999), range(1, 40)):
        digits = "".join(str(a + k * step) for k in range(4))
        if len(digits) == 16 and luhn_valid(digits):
            return digits
    raise AssertionError("no arithmetic sample")


def stroke_pan() -> str:
    """A Luhn-valid Visa number made of the digits 1-5 only, as CJK stroke-order data is."""
    rng = random.Random(5)
    while True:
        body = "4" + "".join(rng.choice("12345") for _ in range(14))
        pan = body + check_digit(body)
        if set(pan) <= set("12345"):
            return pan


def test_a_number_assembled_from_groups_of_one_to_three_digits_is_not_reported_even_with_a_keyword(
        tmp_path: Path) -> None:
    short = " ".join(PAN[i:i + 3] for i in range(0, 16, 3))  # 3-3-3-3-3-1
    assert found(tmp_path, f"card {short}\n", PAN) == []
    assert found(tmp_path, f"card {spaced(PAN)}\n", PAN) == [Confidence.HIGH]


def test_an_arithmetic_sequence_of_groups_is_not_reported_even_with_a_keyword(tmp_path: Path) -> None:
    seq = arithmetic_pan()
    assert found(tmp_path, f"card {spaced(seq)}\n", seq) == []
    # The same shape with groups that do not step by a constant is a card number.
    assert found(tmp_path, f"card {spaced(PAN)}\n", PAN) == [Confidence.HIGH]


def test_a_mime_boundary_is_not_reported_even_beside_a_keyword(tmp_path: Path) -> None:
    header = 'Subject: payment\nContent-Type: multipart/mixed; boundary="----=_Part_7_{}.1700000000000"\n'
    assert found(tmp_path, header.format(PAN), PAN) == []
    # Digits glued by "_" without the boundary's "=_" are only doubtful: kept beside the keyword.
    assert found(tmp_path, header.replace("=_", "-_").format(PAN), PAN) == [Confidence.LOW]


@pytest.mark.parametrize("row", [
    "4584 4615 4646 4677 {} 4708 4740 4771 4803",  # PostScript coordinate table
    "10751 4077 1083 {} 3 s 1108 3580 0",  # database catalogue row
    "52AB 52A9 52AA 52AC {} 541D 542D",  # hex code point table
])
def test_a_row_of_a_numeric_table_needs_a_keyword_and_then_is_low(tmp_path: Path, row: str) -> None:
    line = row.format(spaced(PAN))
    assert found(tmp_path, f"{line}\n", PAN) == []
    assert found(tmp_path, f"card\n{line}\n", PAN) == [Confidence.LOW]
    # A number followed by CVV and expiry groups is no table row.
    assert found(tmp_path, f"swipe {spaced(PAN)} 123 12 27 ok\n", PAN) == [Confidence.MEDIUM]


@pytest.mark.parametrize(("text", "twin"), [
    ("v1.{}.0 released", "export-{}.csv"),  # a dotted version; a file name is no decimal
    ("ratio 0.{} of", "raw={} 123 08/27"),  # a decimal fraction
    ("x=1.5e3 y={}.25 s", "statement_{}.pdf"),  # the integer part of a decimal
    ("epoch {}.25 s", "charge ok card={} amount=12.00"),  # the integer part of a decimal
    ("see https://issues.example.org/testcase-detail/{}.",  # a URL path segment
     "GET https://shop.example.com/api/cards/{}?page=1"),
    ("http://lists.example.org/?l=linux-kernel&m={}&w=2",  # a URL query value
     "POST https://pay.example.com/charge?pan={}&exp=1227"),
])
def test_digits_of_a_decimal_number_or_a_url_id_need_a_keyword(tmp_path: Path, text: str, twin: str) -> None:
    assert found(tmp_path, text.format(PAN) + "\n", PAN) == []
    assert found(tmp_path, "credit card\n" + text.format(PAN) + "\n", PAN) == [Confidence.LOW]
    # Where logs and URLs put real card numbers, they are still reported.
    assert len(found(tmp_path, twin.format(PAN) + "\n", PAN)) == 1


def test_a_stroke_order_string_among_others_needs_a_keyword_and_alone_is_a_number(tmp_path: Path) -> None:
    stroke = stroke_pan()
    table = (f"<U7487> <U7487>;IGNORE;IGNORE;IGNORE # 1112111245443\n"
             f"<U7488> <U7488>;IGNORE;IGNORE;IGNORE # {stroke}\n")
    assert found(tmp_path, table, stroke) == []
    assert found(tmp_path, "card number # 1112111245443\n" + f"card number # {stroke}\n", stroke) == [Confidence.LOW]
    # a card number that happens to hold only these digits (one in 30,000 random ones) is reported
    assert found(tmp_path, f"{stroke}\n", stroke) == [Confidence.MEDIUM]


def test_a_grouping_cards_are_not_printed_in_needs_a_keyword(tmp_path: Path) -> None:
    amex = make_pan("37", 15, random.Random(3))
    assert found(tmp_path, f"ref {spaced(amex)} ok\n", amex) == []  # 4-4-4-3
    assert found(tmp_path, f"ref {printed(amex)} ok\n", amex) == [Confidence.MEDIUM]  # 4-6-5
    assert found(tmp_path, f"amex {spaced(amex)} ok\n", amex) == [Confidence.LOW]


@pytest.mark.parametrize("shape", ["table", "short groups", "glued", "arithmetic"])
def test_a_published_test_number_is_reported_whatever_its_shape(tmp_path: Path, shape: str) -> None:
    number = "4111111111111111"
    text = {
        "table": f"1 2 3 4 {spaced(number)} 5 6 7 8",
        "short groups": " ".join(number[i:i + 2] for i in range(0, 16, 2)),
        "glued": f"ratio 0.{number}",
        "arithmetic": spaced("4242424242424242"),  # groups step by 0
    }[shape]
    hits = [h for p in PATHS for h in scan_text(tmp_path, text + "\n", p)]
    assert len(hits) == len(PATHS) and all(h.test_card for h in hits)
    # The same shape with a number that is not a published test number is not reported.
    other = {"arithmetic": arithmetic_pan()}.get(shape, PAN)
    twin = text.replace(number, other).replace(spaced(number), spaced(other)).replace(
        " ".join(number[i:i + 2] for i in range(0, 16, 2)), " ".join(other[i:i + 2] for i in range(0, 16, 2)))
    if shape == "arithmetic":
        twin = spaced(other)
    assert [h for p in PATHS for h in scan_text(tmp_path, twin + "\n", p)] == []


def test_a_file_extension_is_not_a_card_keyword(tmp_path: Path) -> None:
    # "src/hb-subset.cc" once made a fuzzer id beside it a high-confidence card number.
    assert found(tmp_path, f"Fixes: id {PAN}\n src/hb-subset.cc | 3 ++\n", PAN) == [Confidence.MEDIUM]
    assert found(tmp_path, f"Fixes: id {PAN}\n cc | 3 ++\n", PAN) == [Confidence.HIGH]


def nineteen_with_valid_prefix() -> str:
    """A 19-digit Visa number whose first 16 digits are a valid number too."""
    rng = random.Random(19)
    while True:
        head = make_pan("4", 16, rng)
        body = head + f"{rng.randrange(100):02d}"
        if luhn_valid(head):
            return body + check_digit(body)


@pytest.mark.parametrize("sep", [" ", "-"])
def test_a_19_digit_number_grouped_like_a_card_is_not_reported_again_as_its_16_digit_prefix(
        tmp_path: Path, sep: str) -> None:
    long = nineteen_with_valid_prefix()
    for path in PATHS:
        hits = scan_text(tmp_path, f"card {spaced(long, sep)} end\n", path)
        assert [h.digits for h in hits] == [long]
    # When the 19 digits are no valid number, the 16-digit one followed by a group is reported.
    broken = long[:-1] + str((int(long[-1]) + 1) % 10)
    hits = scan_text(tmp_path, f"card {spaced(broken, sep)} end\n")
    assert [h.digits for h in hits] == [long[:16]]


@pytest.mark.parametrize("text", [
    "s3://{}/x", "https://host.example/case/{}.", "ratio 0.{}", "1 2 3 4 {} 5 6 7 8", "----=_Part_7_{}.1",
])
def test_masking_hides_a_number_whatever_structure_the_matcher_would_not_report(text: str) -> None:
    # Names and messages are masked by the matcher: a shape judged no card is still hidden there.
    from panscan.findings.mask import mask_text

    assert PAN not in mask_text(text.format(PAN))
    assert PAN not in mask_text(text.format(spaced(PAN))).replace(" ", "")
