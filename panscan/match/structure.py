"""Structures that are not card numbers: the judgement on one validated candidate.

A candidate that passed the IIN, length and Luhn checks is still often something else: a row of
a numeric table, a run of consecutive numbers, a stroke-order string, a decimal fraction, a
URL's ticket id or a MIME boundary. Each rule below was decided on the false alarms of a stock
Debian ``/usr/share`` (PostScript and PDF coordinate tables, CJK collation tables, database
catalogues, SVG paths, fuzzer test-case ids, mail boundaries) against the generated corpora
and the published test numbers (``benchmarks/false_alarms.py``; README "False alarms").

Card networks print a PAN ungrouped or in groups of four (4-6-5 and 4-6-4 for 15 and 14
digits, 4-4-4-4-3 for 19), so those groupings are *card-grouped*. A candidate is then

* **rejected** when no card number takes its shape: assembled only from groups of 1-3 digits,
  an arithmetic sequence of three or more equal-width groups (``4201 4202 4203 4204``), or
  inside a MIME boundary (a token holding ``=_``, as in ``----=_Part_12_3456.789``);
* **doubtful** when a real card number could take the shape but rarely does: another grouping,
  a row of a numeric table (four or more short numbers beside it on its line; one-byte cells
  between them allowed), digits that are part of a decimal number (``0.…``, ``….5``), a URL
  path segment or query value, or a string of the digits 1-5 only beside another such string
  (stroke-order data). A doubtful candidate is reported only with a card keyword nearby, at low confidence;
* otherwise reported: high confidence with a keyword nearby, medium without.

A number issued only by a *broad* range (Maestro's 50 and 56-69, UATP's 1, once every specific
brand inside them is carved out: ``brands.py``) needs a card keyword nearby whatever its shape:
without one it is not reported; with one it is judged as any brand's number (high, or low for a
doubtful shape). Those blocks hold most long numeric ids that start with 1, 5 or 6, and a real
card number there is seldom written without a word saying what it is.

Published test numbers and track data are judged by the caller and never reach these rules:
a test number is always reported.
"""

from __future__ import annotations

import itertools
import re

from panscan.model import Confidence

CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3)})
# A line with this many short numbers beside the candidate is a table row, not a card.
TABLE_NEIGHBOURS = 4
NUMERIC_CELLS = 4
SHORT_NUMBER = 6  # widest token counted as a table cell: wider ones may be card numbers
# Bytes looked at on either side (table cells, a MIME token): no more than the keyword window,
# so the context the stream scanner carries (matcher.LEFT, RIGHT; halved in UTF-16) holds it.
REACH = 64
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_CELL = _HEX | frozenset(b".,+-")
_BLANK = frozenset(b" \t")
_BLANK_OR_EOL = _BLANK | frozenset(b"\r\n")
_STROKES = frozenset("12345")
# Another string of the digits 1-5 nearby: CJK stroke-order tables list one per line.
_STROKE_RUN = re.compile(rb"(?<![0-9])[1-5]{8,}(?![0-9])")
# Bytes that end the token a candidate sits in when looking for a MIME boundary.
_TOKEN_END = frozenset(b" \t\r\n\"'<>;()[]{},\x00\xff")


def judge(groups: tuple[int, ...], digits: str, data: bytes, start: int, end: int,
          keyword: bool, broad: bool = False) -> Confidence | None:
    """The confidence of a validated candidate ``data[start:end]`` with digit-group widths
    ``groups``, or None when it is not reported; ``keyword``: a card keyword is nearby;
    ``broad``: only a broad IIN range issues it (see the module docstring)."""
    if rejected(groups, digits, data, start):
        return None
    if doubtful(groups, digits, data, start, end):
        return Confidence.LOW if keyword else None
    if broad and not keyword:
        return None
    return Confidence.HIGH if keyword else Confidence.MEDIUM


def rejected(groups: tuple[int, ...], digits: str, data: bytes, start: int) -> bool:
    """No card number takes this shape."""
    return (len(groups) > 1 and max(groups) <= 3) or arithmetic(groups, digits) or in_mime_boundary(data, start)


def doubtful(groups: tuple[int, ...], digits: str, data: bytes, start: int, end: int) -> bool:
    """A card number could take this shape, but the data that does is nearly always something else."""
    return (not (len(groups) == 1 or groups in CARD_GROUPINGS)
            or glued(data, start, end)
            or in_url(data, start)
            or table_row(data, start, end)
            or strokes(digits, data, start, end))


def strokes(digits: str, data: bytes, start: int, end: int) -> bool:
    """The digits 1-5 only, with another such string nearby: stroke-order data. Alone (a card
    number of only these digits: P = 2^-15 for a random one), it is judged like any number."""
    if not set(digits) <= _STROKES:
        return False
    return _STROKE_RUN.search(data[max(0, start - REACH):start] + b" " + data[end:end + REACH]) is not None


def arithmetic(groups: tuple[int, ...], digits: str) -> bool:
    """Three or more groups of one width whose values step by a constant (0 included)."""
    if len(groups) < 3 or len(set(groups)) != 1:
        return False
    w = groups[0]
    values = [int(digits[i:i + w]) for i in range(0, len(digits), w)]
    step = values[1] - values[0]
    return all(b - a == step for a, b in itertools.pairwise(values))


def _token_before(data: bytes, start: int) -> bytes:
    """The part of the whitespace- or quote-delimited token that precedes ``start``."""
    lo = start
    floor = max(0, start - REACH)
    while lo > floor and data[lo - 1] not in _TOKEN_END:
        lo -= 1
    return data[lo:start]


def in_mime_boundary(data: bytes, start: int) -> bool:
    """The candidate sits in a token holding ``=_`` (``----=_Part_…``, ``=_NextPart_…``)."""
    return b"=_" in _token_before(data, start)


def in_url(data: bytes, start: int) -> bool:
    """The candidate is a path segment or query value of a URL (``…://…/5390…``, ``?m=1102…``):
    ticket, message and test-case ids. A card number in a URL usually has a keyword beside it
    (``/cards/…``, ``?card=…``, ``&pan=…``), which keeps it reported."""
    return start >= 1 and data[start - 1] in b"/=" and b"://" in _token_before(data, start)


def glued(data: bytes, start: int, end: int) -> bool:
    """Digits that are part of a decimal number rather than standing as a value: ``.`` between
    digits (a decimal fraction ``0.…``, the integer part ``….25``, a dotted version).

    ``_``, ``-``, ``=``, ``/``, ``:`` and ``#`` are not glue: ``invoice-….pdf``,
    ``statement_….csv``, ``card=…`` and ``Card #…`` are how real numbers appear in file names
    and logs (URLs are judged by ``in_url``, MIME boundaries by ``in_mime_boundary``).
    """
    b1 = data[start - 1] if start >= 1 else -1
    b2 = data[start - 2] if start >= 2 else -1
    a1 = data[end] if end < len(data) else -1
    a2 = data[end + 1] if end + 1 < len(data) else -1
    return (b1 == 0x2E and b2 in _DIGITS) or (a1 == 0x2E and a2 in _DIGITS)


def table_row(data: bytes, start: int, end: int) -> bool:
    """At least TABLE_NEIGHBOURS cells stand beside the candidate on its line, separated by
    blanks, NUMERIC_CELLS of them short numbers (decimal or hex): a row of a numeric table or a
    hex dump. One-byte tokens (``f``, ``-``, ``*``) are cells too, as in database catalogues,
    but alone they make no table: a PDF dictionary (``/Root 1 0 R >>``) is none."""
    cells_l, numbers_l = _cells(data, start, -1)
    cells_r, numbers_r = _cells(data, end, 1)
    return cells_l + cells_r >= TABLE_NEIGHBOURS and numbers_l + numbers_r >= NUMERIC_CELLS


def _is_number(token: bytes) -> bool:
    return 0 < len(token) <= SHORT_NUMBER and any(c in _DIGITS for c in token) and all(c in _CELL for c in token)


def _cells(data: bytes, pos: int, step: int) -> tuple[int, int]:
    """(cells, numbers among them) in the chain of blank-separated cells from ``pos`` towards
    ``step`` (-1: left, 1: right), within REACH bytes and the line."""
    cells = numbers = 0
    limit = max(0, pos - REACH) if step < 0 else min(len(data), pos + REACH)
    while cells < 2 * TABLE_NEIGHBOURS:
        gap = pos
        while gap != limit and data[gap if step > 0 else gap - 1] in _BLANK:
            gap += step
        if gap == pos or gap == limit:
            break  # no blank (glued, or the line ends) or out of reach
        far = gap
        while far != limit and data[far if step > 0 else far - 1] not in _BLANK_OR_EOL:
            far += step
        token = data[min(gap, far):max(gap, far)]
        number = _is_number(token)
        if not (number or len(token) == 1):
            break
        cells, numbers, pos = cells + 1, numbers + number, far
    return cells, numbers
