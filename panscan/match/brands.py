"""The IIN table: which brand issues a number, from its prefix and length.

Loaded from ``patterns/brands.toml`` and validated on load. Ranges are normalised to 8-digit
prefixes, sorted, and looked up by bisection (Python) or ``searchsorted`` (numpy).
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


@dataclass(frozen=True)
class BrandTable:
    ranges: tuple[IinRange, ...]  # sorted by low, non-overlapping
    brands: tuple[str, ...]
    lows: npt.NDArray[np.int64]
    highs: npt.NDArray[np.int64]
    length_masks: npt.NDArray[np.int64]  # bit L set when length L is issued
    brand_index: npt.NDArray[np.int64]  # index into ``brands``
    low_list: tuple[int, ...]  # ``lows`` as Python ints, for bisect

    def lookup(self, digits: str) -> str | None:
        """The brand issuing ``digits`` (13-19 digits), or None."""
        prefix = int(digits[:PREFIX_DIGITS])
        i = bisect.bisect_right(self.low_list, prefix) - 1
        if i < 0:
            return None
        r = self.ranges[i]
        if prefix <= r.high and len(digits) in r.lengths:
            return r.brand
        return None

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


def build_table(doc: dict[str, Any]) -> BrandTable:
    """Validate a parsed brands document and build the lookup table."""
    entries = doc.get("brand")
    if not isinstance(entries, list) or not entries:
        raise BrandTableError("no [[brand]] entries")
    ranges: list[IinRange] = []
    names: list[str] = []
    for entry in entries:
        unknown = set(entry) - {"name", "ranges", "exclude", "lengths"}
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise BrandTableError("a brand has no name")
        if unknown:
            raise BrandTableError(f"{name}: unknown keys {sorted(unknown)}")
        if name in names:
            raise BrandTableError(f"{name}: listed twice")
        names.append(name)
        lengths = entry.get("lengths")
        if (not isinstance(lengths, list) or not lengths
                or any(not isinstance(n, int) or not MIN_LENGTH <= n <= MAX_LENGTH for n in lengths)):
            raise BrandTableError(f"{name}: lengths must be a non-empty list of {MIN_LENGTH}-{MAX_LENGTH}")
        raw = entry.get("ranges")
        if not isinstance(raw, list) or not raw:
            raise BrandTableError(f"{name}: no ranges")
        spans = [_parse_range(r, name) for r in raw]
        for ex in entry.get("exclude", []):
            cut = _parse_range(ex, name)
            if not any(lo <= cut[0] and cut[1] <= hi for lo, hi in spans):
                raise BrandTableError(f"{name}: exclude {ex!r} lies outside the brand's ranges")
            spans = _subtract(spans, cut)
        ranges.extend(IinRange(lo, hi, name, frozenset(lengths)) for lo, hi in spans)
    ranges.sort(key=lambda r: r.low)
    for a, b in itertools.pairwise(ranges):
        if b.low <= a.high:
            raise BrandTableError(
                f"{a.brand} and {b.brand} overlap at prefix {b.low:0{PREFIX_DIGITS}d}")
    brands = tuple(names)
    table = BrandTable(
        ranges=tuple(ranges),
        brands=brands,
        lows=np.array([r.low for r in ranges], dtype=np.int64),
        highs=np.array([r.high for r in ranges], dtype=np.int64),
        length_masks=np.array([sum(1 << n for n in r.lengths) for r in ranges], dtype=np.int64),
        brand_index=np.array([brands.index(r.brand) for r in ranges], dtype=np.int64),
        low_list=tuple(r.low for r in ranges),
    )
    return table


def parse_table(text: str) -> BrandTable:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BrandTableError(f"brands.toml: {exc}") from None
    return build_table(doc)
