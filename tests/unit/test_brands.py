"""Brand coverage (issue 17, item 2): the IIN table's new ranges, its broad blocks, and how a
number there is judged.

Every new range is pinned at both edges (its first and last prefix are the brand's, the prefixes
just outside are not) and at both ends of its lengths (shortest and longest in, one beyond each
out), on real files scanned in small chunks through each of the matcher's three code paths.
Numbers are generated (cards.make_pan), never real ones.
"""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest
from cards import PATHS, forced_path, make_pan, printed

from panscan import selftest
from panscan.match.brands import BrandTable, BrandTableError, build_table
from panscan.match.matcher import RawHit, StreamScanner
from panscan.match.patterns import load_patterns
from panscan.model import Confidence

PATTERNS = load_patterns()
TABLE = PATTERNS.table
MAESTRO_BROAD = "Maestro"  # the brand of Maestro's broad blocks (50, 56-69): the same name


def number(prefix: str, length: int) -> str:
    """A Luhn-valid number of ``length`` digits starting with the 8-digit ``prefix``."""
    return make_pan(prefix, length, random.Random(f"{prefix}:{length}"))


def scan_text(tmp_path: Path, text: str, path: str) -> list[RawHit]:
    file = tmp_path / f"brands-{path}.txt"
    file.write_text(text)
    with forced_path(path):
        scanner = StreamScanner(PATTERNS)
        hits: list[RawHit] = []
        with file.open("rb") as f:
            while chunk := f.read(101):
                hits.extend(scanner.feed(chunk))
        hits.extend(scanner.finish())
    return hits


def brands_found(tmp_path: Path, cases: list[tuple[str, str | None]], path: str,
                 form: str = "plain") -> list[str | None]:
    """The brand reported for each number, one per line beside a card keyword (None: not
    reported). Plain numbers are one digit group, so each line holds one candidate only."""
    lines = [f"card number: {printed(d) if form == 'spaced' else d} ;" for d, _ in cases]
    hits = scan_text(tmp_path, "\n".join(lines) + "\n", path)
    by_line = {h.line: h for h in hits}
    assert len(by_line) == len(hits)  # never two hits on one line
    for h in hits:
        assert h.digits == cases[h.line - 1][0]
    return [by_line[i].brand if i in by_line else None for i in range(1, len(cases) + 1)]


# --------------------------------------------------------------------------------------------
# Each new range: (brand, first prefix, last prefix, the brand just below, the brand just above,
# shortest length, longest length, the lengths just beyond). Neighbours are 8-digit prefixes
# one below the first and one above the last.

NEW_RANGES = {
    "Dankort 5019": ("Dankort", "50190000", "50199999", "Maestro", "Maestro", 16, 16),
    "Hipercard 606282": ("Hipercard", "60628200", "60628299", MAESTRO_BROAD, MAESTRO_BROAD, 16, 19),
    "Hipercard 384100": ("Hipercard", "38410000", "38410099", "Diners Club", "Diners Club", 16, 19),
    "Hipercard 384140": ("Hipercard", "38414000", "38414099", "Diners Club", "Diners Club", 16, 19),
    "Hipercard 384160": ("Hipercard", "38416000", "38416099", "Diners Club", "Diners Club", 16, 19),
    "Hiper 637095": ("Hiper", "63709500", "63709599", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Hiper 63737423": ("Hiper", "63737423", "63737423", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Hiper 63743358": ("Hiper", "63743358", "63743358", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Hiper 637568": ("Hiper", "63756800", "63756899", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Hiper 637599": ("Hiper", "63759900", "63759999", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Hiper 637609": ("Hiper", "63760900", "63760999", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Hiper 637612": ("Hiper", "63761200", "63761299", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "Naranja 589562": ("Naranja", "58956200", "58956299", MAESTRO_BROAD, MAESTRO_BROAD, 16, 16),
    "UkrCard 60400100-60420099": ("UkrCard", "60400100", "60420099", MAESTRO_BROAD, MAESTRO_BROAD, 16, 19),
    "UzCard 8600": ("UzCard", "86000000", "86009999", None, None, 16, 16),
    "Humo 9860": ("Humo", "98600000", "98609999", None, None, 16, 16),
    "BORICA 2205": ("BORICA", "22050000", "22059999", "Mir", None, 16, 16),
    "Maestro UK 676770": ("Maestro", "67677000", "67677099", MAESTRO_BROAD, MAESTRO_BROAD, 13, 19),
    "Maestro UK 676774": ("Maestro", "67677400", "67677499", MAESTRO_BROAD, MAESTRO_BROAD, 13, 19),
    # Maestro's broad blocks [W]: 50, and 56-69 (written 56-59 and 60-69 in the file).
    "Maestro broad 50": ("Maestro", "50000000", "50179999", "Visa", "Maestro", 13, 19),
    "Maestro broad 56": ("Maestro", "56000000", "58929999", "Mastercard", "Maestro", 13, 19),
    "Maestro broad 66-69": ("Maestro", "66000000", "69999999", "Discover", None, 13, 19),
}


def _prefix_step(prefix: str, step: int) -> str:
    return f"{int(prefix) + step:08d}"


def _neighbour_length(brand: str | None, preferred: int) -> int:
    """A length the neighbouring brand issues, so that the neighbour is shown to be *its* number."""
    if brand is None:
        return preferred
    lengths = next(r.lengths for r in TABLE.ranges if r.brand == brand)
    return preferred if preferred in lengths else min(n for n in lengths if n >= 13)


def edge_cases(name: str) -> list[tuple[str, str | None]]:
    """(number, brand expected) for one new range: edges in and out, lengths in and out."""
    brand, first, last, below, above, shortest, longest = NEW_RANGES[name]
    cases: list[tuple[str, str | None]] = []
    for prefix in (first, last):
        cases += [(number(prefix, shortest), brand), (number(prefix, longest), brand)]
    cases.append((number(_prefix_step(first, -1), _neighbour_length(below, 16)), below))
    if last != "69999999":
        cases.append((number(_prefix_step(last, 1), _neighbour_length(above, 16)), above))
    else:  # the top of the 6 block: 7 is no brand's
        cases.append((number("70000000", 16), None))
    # One beyond each end of the lengths. A 12-digit Maestro number is issued but is no
    # candidate (13-19 digits) and 20 digits is none either; between 16 and 19, Hipercard does
    # not issue 17 or 18.
    issued = next(r.lengths for r in TABLE.ranges if r.brand == brand and r.low <= int(first) <= r.high)
    for length in {shortest - 1, longest + 1} | set(range(shortest, longest + 1)) - issued:
        cases.append((number(first, length), None))
    return cases


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(NEW_RANGES))
def test_each_new_range_is_its_brand_at_both_edges_and_lengths_and_not_beyond(
        tmp_path: Path, name: str, path: str) -> None:
    cases = edge_cases(name)
    assert brands_found(tmp_path, cases, path) == [expected for _, expected in cases]


@pytest.mark.parametrize("path", PATHS)
def test_new_brands_are_found_printed_in_groups_as_on_the_card(tmp_path: Path, path: str) -> None:
    cases = [(number(first, 16), brand) for brand, first, *_ in NEW_RANGES.values()]
    assert brands_found(tmp_path, cases, path, form="spaced") == [brand for _, brand in cases]


def test_lookup_agrees_with_the_matcher_on_every_edge() -> None:
    for name in NEW_RANGES:
        for digits, expected in edge_cases(name):
            if 13 <= len(digits) <= 19:
                assert TABLE.lookup(digits) == expected, (name, len(digits))


# --------------------------------------------------------------------------------------------
# The broad blocks yield to every specific brand inside them: an existing brand's numbers
# resolve to the same brand as before, and the broad block's numbers around them are Maestro.

INSIDE_BROAD = {
    # prefix: the brand that keeps it, whatever its length
    "65000000": "Discover", "65999999": "Discover", "60110000": "Discover", "64400000": "Discover",
    "64999999": "Discover", "62212600": "Discover", "62000000": "UnionPay", "62999999": "UnionPay",
    "50180000": "Maestro", "67590000": "Maestro", "63040000": "Maestro", "58930000": "Maestro",
    "50417500": "Elo", "50900000": "Elo", "63629700": "Elo", "65003100": "Elo",
    "50609900": "Verve", "65000200": "Verve", "50822700": "RuPay", "60698500": "RuPay",
    "65215000": "RuPay",
}
BROAD_BESIDE = ["64399999", "61999999", "63000000", "59999999", "60000000", "63629600", "60109999"]


@pytest.mark.parametrize("path", PATHS)
def test_broad_blocks_yield_to_every_specific_brand_inside_them(tmp_path: Path, path: str) -> None:
    cases = [(number(p, 16), brand) for p, brand in INSIDE_BROAD.items()]
    cases += [(number(p, 16), MAESTRO_BROAD) for p in BROAD_BESIDE]
    assert brands_found(tmp_path, cases, path) == [brand for _, brand in cases]
    # A length the specific brand does not issue is no number at all, not a Maestro one.
    short = [(number(p, 13), None) for p in ("65000000", "62000000", "60110000", "65215000")]
    short += [(number(p, 13), MAESTRO_BROAD) for p in BROAD_BESIDE]
    assert brands_found(tmp_path, short, path) == [brand for _, brand in short]


def test_mastercard_and_visa_numbers_never_become_maestro() -> None:
    for prefix, brand in (("51000000", "Mastercard"), ("55999999", "Mastercard"), ("49999999", "Visa"),
                          ("45710000", "Visa")):  # 4571: Visa/Dankort co-badged, a Visa card
        assert TABLE.lookup(number(prefix, 16)) == brand
    assert TABLE.lookup(number("50000000", 16)) == MAESTRO_BROAD
    assert TABLE.is_broad(number("50000000", 16)) and not TABLE.is_broad(number("50190000", 16))


# --------------------------------------------------------------------------------------------
# Confidence: a broad-range number needs a card keyword nearby; with one, it is any brand's.

def confidences(tmp_path: Path, text: str, digits: str) -> list[Confidence]:
    per_path = [[h.confidence for h in scan_text(tmp_path, text, p) if h.digits == digits] for p in PATHS]
    assert all(r == per_path[0] for r in per_path), per_path
    return per_path[0]


BROAD_NUMBER = number("56000000", 16)
GAP = "." * 100  # wider than the keyword window (64 bytes) either side


def test_a_broad_range_number_without_a_card_keyword_is_not_reported(tmp_path: Path) -> None:
    for shape in (BROAD_NUMBER, printed(BROAD_NUMBER)):
        assert confidences(tmp_path, f"{GAP}\nref {shape} ok\n{GAP}\n", BROAD_NUMBER) == []
    uatp = number("10000000", 15)
    assert confidences(tmp_path, f"{GAP}\nid {uatp}\n", uatp) == []


def test_a_broad_range_number_beside_a_card_keyword_is_judged_as_any_brand(tmp_path: Path) -> None:
    odd = f"{BROAD_NUMBER[:3]}-{BROAD_NUMBER[3:9]}-{BROAD_NUMBER[9:]}"  # a grouping cards never use
    text = (f"card number {printed(BROAD_NUMBER)}\n{GAP}\nmaestro {BROAD_NUMBER}\n{GAP}\n"
            f"card {odd}\n{GAP}\n")
    assert confidences(tmp_path, text, BROAD_NUMBER) == [Confidence.HIGH, Confidence.HIGH, Confidence.LOW]
    uatp = number("10000000", 15)
    assert confidences(tmp_path, f"UATP {uatp}\n", uatp) == [Confidence.HIGH]


def test_a_specific_range_inside_a_broad_block_needs_no_keyword(tmp_path: Path) -> None:
    # Dankort, Naranja, Hiper and Maestro's own specific prefixes are not broad: medium alone.
    for prefix in ("50190000", "58956200", "63709500", "67590000", "60628200"):
        digits = number(prefix, 16)
        assert confidences(tmp_path, f"{GAP}\nref {printed(digits)} ok\n", digits) == [Confidence.MEDIUM]


# --------------------------------------------------------------------------------------------
# The loader: broad ranges parsed, validated, and carved.

def table(text: str) -> BrandTable:
    return build_table(tomllib.loads(text))


SMALL = """
[[brand]]
name = "Wide"
ranges = ["6011"]
broad_ranges = ["60-69"]
lengths = [13, 16]
[[brand]]
name = "Narrow"
ranges = ["65", "6012"]
lengths = [16]
"""


def test_a_broad_range_yields_to_the_specific_ranges_of_every_brand_inside_it() -> None:
    t = table(SMALL)
    assert t.lookup(make_pan("65", 16)) == "Narrow" and t.lookup(make_pan("6012", 16)) == "Narrow"
    assert t.lookup(make_pan("65", 13)) is None  # Narrow's block, a length Narrow does not issue
    assert t.lookup(make_pan("66", 13)) == "Wide" and t.is_broad(make_pan("66", 13))
    assert t.lookup(make_pan("6013", 16)) == "Wide" and t.is_broad(make_pan("6013", 16))
    # The brand's own specific range is carved out of its broad block too, and is not broad.
    assert t.lookup(make_pan("6011", 16)) == "Wide" and not t.is_broad(make_pan("6011", 16))
    assert [(r.low, r.high, r.brand, r.broad) for r in t.ranges if r.high < 65000000] == [
        (60000000, 60109999, "Wide", True), (60110000, 60119999, "Wide", False),
        (60120000, 60129999, "Narrow", False), (60130000, 64999999, "Wide", True)]


@pytest.mark.parametrize(("text", "message"), [
    (SMALL + '[[brand]]\nname = "Other"\nbroad_ranges = ["69"]\nlengths = [16]\n', "overlap"),
    ('[[brand]]\nname = "A"\nranges = ["65"]\nlengths = [16]\n'
     '[[brand]]\nname = "B"\nbroad_ranges = ["650-659"]\nlengths = [16]\n', "wholly covered"),
    ('[[brand]]\nname = "A"\nbroad_ranges = ["56-69"]\nlengths = [16]\n', "catch-all"),
    ('[[brand]]\nname = "A"\nbroad_ranges = "60"\nlengths = [16]\n', "list of strings"),
    ('[[brand]]\nname = "A"\nbroad_ranges = []\nlengths = [16]\n', "no ranges"),
])
def test_malformed_broad_ranges_are_rejected_with_the_brand_named(text: str, message: str) -> None:
    with pytest.raises(BrandTableError, match=message):
        table(text)


def test_the_shipped_table_marks_only_maestro_and_uatp_blocks_broad() -> None:
    assert {r.brand for r in TABLE.ranges if r.broad} == {"Maestro", "UATP"}
    raw = tomllib.loads((Path(__file__).parents[2] / "patterns" / "brands.toml").read_text())
    assert {b["name"] for b in raw["brand"] if "broad_ranges" in b} == {"Maestro", "UATP"}


# --------------------------------------------------------------------------------------------
# The self-test (``panscan patterns test``) shows every brand of the table.

def test_the_self_test_shows_every_brand_of_the_table_including_broad_blocks() -> None:
    samples = selftest.samples()
    shown: set[str] = set()
    broad_shown: set[str] = set()
    for sample in samples:
        findings, _, _ = selftest.scan_sample(sample.data, sample.name)
        brands = {f.brand for f in findings if f.masked == sample.masked}
        assert sample.brand is None or brands == {sample.brand}, sample.name
        shown |= brands
        if sample.brand is not None and sample.name.endswith("(broad range)"):
            broad_shown.add(sample.brand)
    assert shown == set(TABLE.brands)
    assert broad_shown == {"Maestro", "UATP"}
    new = {"Dankort", "Hipercard", "Hiper", "Naranja", "UkrCard", "UzCard", "Humo", "BORICA"}
    assert new <= {s.brand for s in samples}
