"""The IIN table: which brand issues a number, from its prefix and length.

Loaded from ``patterns/brands.toml`` and validated on load. Ranges are normalised to 8-digit
prefixes, sorted, and looked up by bisection (Python) or ``searchsorted`` (numpy).

A brand's ``ranges`` are specific allocations; its ``broad_ranges`` are wide published blocks
(Maestro's 50 and 56-69, UATP's 1) that yield to every specific range of any brand inside them, so a
Discover 65... or a Dankort 5019... number keeps its own brand without a hand-kept exclude
list. What remains of a broad range is marked ``broad``: a number there is judged with lower
confidence without a card keyword nearby (``structure.judge``).
"""

from __future__ import annotations

import bisect
import itertools
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # numpy.typing costs ~60 ms of start-up; annotations only need it here
    import numpy.typing as npt

PREFIX_DIGITS = 8
MIN_LENGTH, MAX_LENGTH = 12, 19


class BrandTableError(ValueError):
    """The brand table is malformed; the message names the brand and range."""


@dataclass(frozen=True, slots=True)
class IinRange:
    low: int  # inclusive, 8-digit prefix
    high: int  # inclusive, 8-digit prefix
    brand: str
    lengths: frozenset[int]
    broad: bool = False  # what is left of a broad range once the specific ranges are carved out


@dataclass(frozen=True)
class BrandTable:
    ranges: tuple[IinRange, ...]  # sorted by low, non-overlapping
    brands: tuple[str, ...]
    lows: npt.NDArray[np.int64]
    highs: npt.NDArray[np.int64]
    length_masks: npt.NDArray[np.int64]  # bit L set when length L is issued
    brand_index: npt.NDArray[np.int64]  # index into ``brands``
    low_list: tuple[int, ...]  # ``lows`` as Python ints, for bisect

    def range_of(self, digits: str) -> IinRange | None:
        """The range issuing ``digits`` (13-19 digits: prefix and length), or None."""
        prefix = int(digits[:PREFIX_DIGITS])
        i = bisect.bisect_right(self.low_list, prefix) - 1
        if i < 0:
            return None
        r = self.ranges[i]
        if prefix <= r.high and len(digits) in r.lengths:
            return r
        return None

    def lookup(self, digits: str) -> str | None:
        """The brand issuing ``digits`` (13-19 digits), or None."""
        r = self.range_of(digits)
        return None if r is None else r.brand

    def is_broad(self, digits: str) -> bool:
        """Whether ``digits`` is issued only by a broad range (see the module docstring)."""
        r = self.range_of(digits)
        return r is not None and r.broad

    def lookup_many(self, prefixes: npt.NDArray[np.int64],
                    lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Brand index per candidate (-1 where none), vectorised."""
        i = np.searchsorted(self.lows, prefixes, side="right") - 1
        safe = np.maximum(i, 0)
        ok = (i >= 0) & (prefixes <= self.highs[safe]) & (((self.length_masks[safe] >> lengths) & 1) == 1)
        return np.where(ok, self.brand_index[safe], -1)


def _parse_range(text: str, brand: str) -> tuple[int, int]:
    lo_s, _, hi_s = text.partition("-")
    hi_s = hi_s or lo_s
    if not (lo_s.isdigit() and hi_s.isdigit()) or not lo_s.isascii() or not hi_s.isascii():
        raise BrandTableError(f"{brand}: range {text!r} is not digits")
    if len(lo_s) != len(hi_s) or len(lo_s) > PREFIX_DIGITS:
        raise BrandTableError(f"{brand}: range {text!r} ends differ in length or exceed {PREFIX_DIGITS} digits")
    if lo_s[0] != hi_s[0]:
        raise BrandTableError(f"{brand}: range {text!r} spans more than one leading digit (a catch-all)")
    pad = PREFIX_DIGITS - len(lo_s)
    low, high = int(lo_s) * 10**pad, (int(hi_s) + 1) * 10**pad - 1
    if low > high:
        raise BrandTableError(f"{brand}: range {text!r} is empty")
    return low, high


def _subtract(spans: list[tuple[int, int]], cut: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in spans:
        if cut[1] < lo or cut[0] > hi:
            out.append((lo, hi))
            continue
        if lo < cut[0]:
            out.append((lo, cut[0] - 1))
        if cut[1] < hi:
            out.append((cut[1] + 1, hi))
    return out


_KEYS = frozenset({"name", "ranges", "broad_ranges", "exclude", "lengths"})


def _lengths(entry: dict[str, Any], name: str) -> frozenset[int]:
    lengths = entry.get("lengths")
    if (not isinstance(lengths, list) or not lengths
            or any(not isinstance(n, int) or not MIN_LENGTH <= n <= MAX_LENGTH for n in lengths)):
        raise BrandTableError(f"{name}: lengths must be a non-empty list of {MIN_LENGTH}-{MAX_LENGTH}")
    return frozenset(lengths)


def _range_list(entry: dict[str, Any], key: str, name: str) -> list[tuple[int, int]]:
    raw = entry.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise BrandTableError(f"{name}: {key} must be a list of strings")
    return [_parse_range(r, name) for r in raw]


def _brand_spans(entry: dict[str, Any], name: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(specific spans, broad spans) of one brand, its excludes carved out of both."""
    spans = _range_list(entry, "ranges", name)
    broad = _range_list(entry, "broad_ranges", name)
    if not spans and not broad:
        raise BrandTableError(f"{name}: no ranges")
    for ex in entry.get("exclude", []):
        cut = _parse_range(ex, name)
        if not any(lo <= cut[0] and cut[1] <= hi for lo, hi in spans + broad):
            raise BrandTableError(f"{name}: exclude {ex!r} lies outside the brand's ranges")
        spans, broad = _subtract(spans, cut), _subtract(broad, cut)
    return spans, broad


def _check_disjoint(ranges: list[IinRange]) -> None:
    for a, b in itertools.pairwise(sorted(ranges, key=lambda r: r.low)):
        if b.low <= a.high:
            raise BrandTableError(
                f"{a.brand} and {b.brand} overlap at prefix {b.low:0{PREFIX_DIGITS}d}")


def build_table(doc: dict[str, Any]) -> BrandTable:
    """Validate a parsed brands document and build the lookup table."""
    entries = doc.get("brand")
    if not isinstance(entries, list) or not entries:
        raise BrandTableError("no [[brand]] entries")
    specific: list[IinRange] = []
    wide: list[tuple[str, frozenset[int], list[tuple[int, int]]]] = []
    names: list[str] = []
    for entry in entries:
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise BrandTableError("a brand has no name")
        unknown = set(entry) - _KEYS
        if unknown:
            raise BrandTableError(f"{name}: unknown keys {sorted(unknown)}")
        if name in names:
            raise BrandTableError(f"{name}: listed twice")
        names.append(name)
        lengths = _lengths(entry, name)
        spans, broad = _brand_spans(entry, name)
        specific.extend(IinRange(lo, hi, name, lengths) for lo, hi in spans)
        if broad:
            wide.append((name, lengths, broad))
    # Specific ranges must not overlap: two brands claiming one prefix is a data error.
    _check_disjoint(specific)
    ranges = list(specific)
    for name, lengths, broad in wide:
        for span in broad:
            rest = [span]
            for r in specific:  # a broad block yields to every specific range inside it
                rest = _subtract(rest, (r.low, r.high))
            if not rest:
                raise BrandTableError(f"{name}: broad range {span[0]:0{PREFIX_DIGITS}d} is wholly "
                                      "covered by specific ranges")
            ranges.extend(IinRange(lo, hi, name, lengths, broad=True) for lo, hi in rest)
    # Broad blocks of two brands (or one brand's twice) must not overlap either.
    _check_disjoint(ranges)
    ranges.sort(key=lambda r: r.low)
    brands = tuple(names)
    return BrandTable(
        ranges=tuple(ranges),
        brands=brands,
        lows=np.array([r.low for r in ranges], dtype=np.int64),
        highs=np.array([r.high for r in ranges], dtype=np.int64),
        length_masks=np.array([sum(1 << n for n in r.lengths) for r in ranges], dtype=np.int64),
        brand_index=np.array([brands.index(r.brand) for r in ranges], dtype=np.int64),
        low_list=tuple(r.low for r in ranges),
    )


def parse_table(text: str) -> BrandTable:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BrandTableError(f"brands.toml: {exc}") from None
    return build_table(doc)
