"""The matcher's detection rules, pinned on real files and exact offsets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cards import PATHS, forced_path, make_pan, printed, spaced
from pan_reference import reference_hits

from panscan.match.matcher import RawHit, StreamScanner, scan_bytes
from panscan.match.patterns import load_patterns
from panscan.model import Confidence, Kind

PATTERNS = load_patterns()


def scan_file(path: Path, chunk_size: int = 1 << 20) -> list[RawHit]:
    scanner = StreamScanner(PATTERNS)
    hits: list[RawHit] = []
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            hits.extend(scanner.feed(chunk))
    hits.extend(scanner.finish())
    return hits


def unambiguous_pan(prefix: str, length: int) -> tuple[str, bool]:
    """A number whose printed form has no shorter group window that is valid too, and whether
    one was found (else the last number tried, to be used ungrouped only).

    Every window of whole groups is a candidate, so "2200 0000 4092 5319 6" may rightly hold a
    second valid 16-digit number; such samples would make the expected list ambiguous. Some
    prefixes make that certain whatever the body: in "6375 6799 xxxx xxxx x" the Luhn weights of
    the first group sum to 0 mod 10, so the 13 digits after it are valid whenever all 17 are.
    """
    rng = random.Random(f"{prefix}:{length}")
    for _ in range(100):
        pan = make_pan(prefix, length, rng)
        if len(reference_hits(f"card: {printed(pan)} ;".encode(), PATTERNS)) == 1:
            return pan, True
    return pan, False


def brand_samples() -> list[tuple[str, int, str, bool]]:
    """(brand, length, pan, may be printed grouped) for every range edge and every length the
    table issues."""
    out = []
    for r in PATTERNS.table.ranges:
        for edge in (r.low, r.high):
            prefix = f"{edge:08d}"
            for length in sorted(r.lengths):
                if length < 13:
                    continue  # 12-digit Maestro exists but a PAN candidate has 13-19 digits
                out.append((r.brand, length, *unambiguous_pan(prefix, length)))
    return out


SAMPLES = brand_samples()


@pytest.mark.parametrize("form", ["plain", "spaced", "dashed"])
def test_every_brand_range_edge_and_length_is_found_at_its_exact_offset(tmp_path: Path, form: str) -> None:
    lines, expected = [], []
    offset = 0
    samples = [s for s in SAMPLES if form == "plain" or s[3]]
    for brand, _length, pan, _ in samples:
        # Printed as the networks print them; 13, 17 and 18 digits have no such grouping (fours
        # are doubtful, hence the keyword: structure.py).
        text = {"plain": pan, "spaced": printed(pan), "dashed": printed(pan, "-")}[form]
        line = f"card: {text} ;\n"
        expected.append((offset + 6, pan, brand))
        lines.append(line)
        offset += len(line)
    path = tmp_path / "brands.txt"
    path.write_text("".join(lines))
    hits = scan_file(path, chunk_size=4096)
    assert [(h.offset, h.digits, h.brand) for h in hits] == expected
    assert all(h.kind is Kind.PAN for h in hits)
    assert [h.line for h in hits] == list(range(1, len(samples) + 1))


def test_the_table_covers_every_brand_the_issue_names() -> None:
    names = set(PATTERNS.table.brands)
    assert {"Visa", "Mastercard", "American Express", "Discover", "JCB", "Diners Club", "UnionPay",
            "Maestro", "Mir", "RuPay", "Elo", "Troy", "Verve", "UATP",
            "Dankort", "Hipercard", "Hiper", "Naranja"} <= names
    assert {b for b, *_ in SAMPLES} == names
    assert sum(not grouped for *_, grouped in SAMPLES) < len(SAMPLES) // 100


def test_pan_followed_by_cvv_or_amount_group_is_found(tmp_path: Path) -> None:
    path = tmp_path / "cvv.txt"
    path.write_bytes(b"pay 4111 1111 1111 1111 123 now\nx 5555555555554444 1299 y\n")
    hits = scan_file(path)
    assert [(h.offset, h.digits[-4:]) for h in hits] == [(4, "1111"), (34, "4444")]


NEAR_MISSES = {
    "luhn failure": "4111111111111112",
    "wrong IIN": make_pan("0000", 16),
    "wrong length for the brand": make_pan("51", 15),
    "too short": make_pan("4", 12),
    "inside a longer digit run": "9" + make_pan("4", 16) + "9",
    "twenty digit id": make_pan("4", 16) + "1234",
    "inside a hex digest": "e3b0c442" + make_pan("4", 16) + "fc1c149a",
    "alphanumeric token": "tok_" + make_pan("4", 16) + "x",
    "letter right after": make_pan("4", 16) + "Z",
    "group touching a letter inside a run": "ab" + make_pan("4", 16) + " 12",
    "double space is no separator": "4111  1111  1111  1111",
    "too many digits in the only window": "41111 11111 11111 11111",
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_miss_is_not_reported(tmp_path: Path, case: str) -> None:
    path = tmp_path / "miss.txt"
    path.write_text(f"value: {NEAR_MISSES[case]} end\n")
    assert scan_file(path) == []


def test_each_near_miss_has_a_positive_twin(tmp_path: Path) -> None:
    # The negatives above fail for the stated reason only: the same shapes with a valid number pass.
    pan = make_pan("4", 16)
    path = tmp_path / "twin.txt"
    path.write_text(f"a {pan} b\nid {pan}-99 c\ne3b0c442 {pan} fc1c\n")
    assert len(scan_file(path)) == 3


def test_pan_next_to_a_group_that_touches_a_letter_is_still_found(tmp_path: Path) -> None:
    pan = make_pan("4", 16)
    path = tmp_path / "log.txt"
    path.write_text(f"card {pan} 2024-01-01T10:00:00Z\nref A12 {spaced(pan)}\n")
    assert [h.digits for h in scan_file(path)] == [pan, pan]


def test_utf16_little_and_big_endian_files_are_found(tmp_path: Path) -> None:
    pan = make_pan("4", 16)
    for codec, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")):
        path = tmp_path / f"{codec}.txt"
        text = f"name,card\nA. Person,{spaced(pan)}\n"
        path.write_bytes(bom + text.encode(codec))
        hits = scan_file(path, chunk_size=7)
        assert [h.digits for h in hits] == [pan]
        first_digit = bom + text[: text.index(pan[0])].encode(codec)
        expected = len(first_digit) + (1 if codec == "utf-16-be" else 0)
        assert hits[0].offset == expected
        assert hits[0].line == 2


def test_pan_in_binary_file_after_nul_bytes_is_found(tmp_path: Path) -> None:
    pan = make_pan("5", 16)
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 40 + b"\x00" * 5000 + pan.encode() + b"\x00\x01\x02" + b"\x00" * 100
    path.write_bytes(data)
    hits = scan_file(path, chunk_size=1000)
    assert [(h.offset, h.digits) for h in hits] == [(256 * 40 + 5000, pan)]


def test_utf16_text_inside_binary_like_legacy_office_is_found(tmp_path: Path) -> None:
    pan = make_pan("37", 15)
    path = tmp_path / "legacy.doc"
    data = b"\xd0\xcf\x11\xe0" + bytes(range(200)) + f"Card: {pan}".encode("utf-16-le") + bytes(300)
    path.write_bytes(data)
    assert [h.digits for h in scan_file(path)] == [pan]


def test_track1_and_track2_are_reported_as_their_own_kinds(tmp_path: Path) -> None:
    pan1, pan2 = make_pan("4", 16), make_pan("5", 16)
    path = tmp_path / "tracks.txt"
    text = f"%B{pan1}^PERSON/ALEX^2712101000000000?\n;{pan2}=27121010000000000000?\n"
    path.write_text(text)
    hits = scan_file(path)
    assert [(h.offset, h.kind, h.digits) for h in hits] == [
        (2, Kind.TRACK1, pan1), (text.index(";") + 1, Kind.TRACK2, pan2)]
    assert all(h.confidence is Confidence.HIGH for h in hits)


def test_letter_before_without_track1_shape_is_still_rejected(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_text(f"%B{make_pan('4', 16)}-x\n")
    assert scan_file(path) == []


def test_published_test_numbers_are_reported_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("4111111111111111 " + make_pan("4", 16) + "\n")
    hits = scan_file(path)
    assert [h.test_card for h in hits] == [True, False]


def test_keyword_and_card_grouping_set_confidence() -> None:
    # An odd grouping is reported only with a keyword nearby, and then at low confidence.
    pan = make_pan("4", 16)
    odd = f"{pan[:3]}-{pan[3:9]}-{pan[9:]}"
    gap = "." * 80
    text = f"card number {spaced(pan)}\n{gap}\n{spaced(pan)}\n{gap}\n{odd}\n{gap}\ncard {odd}\n"
    hits = scan_bytes(text.encode(), PATTERNS)
    assert [(h.line, h.confidence) for h in hits] == [
        (1, Confidence.HIGH), (3, Confidence.MEDIUM), (7, Confidence.LOW)]


def test_raw_hit_repr_never_shows_the_number() -> None:
    pan = make_pan("4", 16)
    hit = scan_bytes(pan.encode(), PATTERNS)[0]
    assert pan not in repr(hit) and pan not in str(hit) and pan[6:12] not in repr(hit)


def test_offsets_are_absolute_with_a_base_offset() -> None:
    pan = make_pan("4", 16)
    scanner = StreamScanner(PATTERNS, base_offset=1000)
    hits = scanner.feed(b"xx " + pan.encode() + b"\n") + scanner.finish()
    assert [h.offset for h in hits] == [1003]


def test_only_the_owned_range_is_reported_with_its_newlines() -> None:
    pan = make_pan("4", 16).encode()
    data = b"a\n" + pan + b"\nb\n" + pan + b"\n"
    second = data.index(pan, 5)
    scanner = StreamScanner(PATTERNS, own_from=5, own_to=len(data))
    hits = scanner.feed(data) + scanner.finish()
    assert [(h.offset, h.line) for h in hits] == [(second, 3)]
    assert scanner.newlines_owned == data.count(b"\n", 5)


@pytest.mark.parametrize("path", PATHS)
def test_matcher_agrees_with_reference_on_a_mixed_corpus(path: str) -> None:
    rng = random.Random(7)
    parts = []
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.1:
            parts.append(make_pan(rng.choice(["4", "51", "37", "6011", "35", "62", "2221"]), 16, rng))
        elif kind < 0.15:
            parts.append(spaced(make_pan("4", 16, rng), rng.choice([" ", "-"])) + " " + str(rng.randint(0, 999)))
        elif kind < 0.5:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 24))))
        elif kind < 0.6:
            parts.append(rng.choice(["card", "id", "ts", "x", "%B", ";", "=2512", "^A B^2512"]))
        else:
            parts.append(rng.choice([" ", "-", "\n", ",", "  ", " - "]))
    data = "".join(parts).encode()
    with forced_path(path):
        got = [(h.offset, h.digits, str(h.kind), h.brand) for h in scan_bytes(data, PATTERNS)]
    assert got == reference_hits(data, PATTERNS)
    assert len(got) > 100
