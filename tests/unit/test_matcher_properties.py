"""Property tests: Luhn, chunking invariance, agreement with the reference, masking."""

from __future__ import annotations

import random

import pytest
from cards import PATHS, forced_path, make_pan, printed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pan_reference import reference_hits

from panscan.findings.mask import mask_digits
from panscan.match.luhn import check_digit, luhn_valid
from panscan.match.matcher import scan_bytes, scan_chunks
from panscan.match.patterns import load_patterns

PATTERNS = load_patterns()
digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=30)


@given(digit_strings)
def test_luhn_check_digit_round_trip(payload: str) -> None:
    assert luhn_valid(payload + check_digit(payload))


@given(digit_strings, st.data())
def test_every_single_digit_change_is_caught(payload: str, data: st.DataObject) -> None:
    number = payload + check_digit(payload)
    pos = data.draw(st.integers(0, len(number) - 1))
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != number[pos]]))
    assert not luhn_valid(number[:pos] + new + number[pos + 1:])


# Text built from pieces that exercise every rule: numbers, separators, letters, NULs, track marks.
def _pans(seed: int) -> list[str]:
    rng = random.Random(seed)
    prefixes = ["4", "51", "2221", "37", "6011", "3530", "36", "62", "2200", "6759"]
    out = []
    for p in prefixes:
        pan = make_pan(p, 16 if p not in ("37", "36") else (15 if p == "37" else 14), rng)
        out += [pan, printed(pan), printed(pan, "-")]  # as printed on cards: found without a keyword
    return out


PIECES = st.one_of(
    st.sampled_from(_pans(1)),
    st.sampled_from([" ", "-", "\n", "  ", "x", "card ", "%B", "^AB CD^2512", ";", "=2512", "\x00", "é"]),
    st.text(alphabet="0123456789 -", max_size=25),
    st.integers(0, 10**22).map(str),
)
corpus = st.lists(PIECES, max_size=60).map(lambda parts: "".join(parts).encode("utf-8"))


def as_tuples(hits):  # type: ignore[no-untyped-def]
    return [(h.offset, h.length, h.digits, str(h.kind), h.brand, str(h.confidence), h.test_card, h.line)
            for h in hits]


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corpus, sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_chunked_scan_equals_whole_buffer_scan(path: str, data: bytes, sizes: list[int]) -> None:
    chunks, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        chunks.append(data[i:i + n])
        i, k = i + n, k + 1
    with forced_path(path):
        assert as_tuples(scan_chunks(chunks, PATTERNS)) == as_tuples(scan_bytes(data, PATTERNS))


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corpus)
def test_whole_buffer_scan_agrees_with_reference_rules(path: str, data: bytes) -> None:
    if b"\x00" in data:
        data = data.replace(b"\x00", b".")  # the reference models raw text only
    with forced_path(path):
        got = [(h.offset, h.digits, str(h.kind), h.brand) for h in scan_bytes(data, PATTERNS)]
    assert got == reference_hits(data, PATTERNS)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_pans(2)), st.integers(0, 5000), st.integers(1, 9000),
       st.sampled_from(["utf-8", "utf-16-le", "utf-16-be"]))
def test_pan_anywhere_in_any_chunking_is_found_once_at_its_offset(pan: str, pos: int, chunk: int,
                                                                   codec: str) -> None:
    filler = ("lorem ipsum dolor " * 400)[:pos] + " "
    text = filler + pan + " tail\n"
    data = text.encode(codec)
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    hits = [h for h in scan_chunks(chunks, PATTERNS)]
    digits = pan.replace(" ", "").replace("-", "")
    expected = len(filler.encode(codec)) + (1 if codec == "utf-16-be" else 0)
    assert [(h.offset, h.digits) for h in hits] == [(expected, digits)]


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_masked_form_never_holds_more_than_the_allowed_digits(digits: str) -> None:
    masked = mask_digits(digits)
    shown = sum(c.isdigit() for c in masked)
    assert len(masked) == len(digits)
    assert shown <= (10 if len(digits) >= 15 else 4)
    assert masked.endswith(digits[-4:])
    if len(digits) >= 15:
        assert masked.startswith(digits[:6])
