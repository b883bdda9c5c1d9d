"""The pattern set: brand table, keywords and published test numbers, loaded once.

The data lives in ``patterns/`` (installed as the ``panscan.patterns`` package) so a reviewer
can audit it without reading code. ``version`` is a hash of the data: the state uses it to
decide whether an already-scanned object must be read again.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from dataclasses import dataclass
from importlib import resources

from panscan.match.brands import BrandTable, parse_table
from panscan.match.context import KeywordIndex
from panscan.match.luhn import luhn_valid

DATA_FILES = ("brands.toml", "keywords.toml", "test_pans.txt")


class PatternDataError(ValueError):
    """A file in patterns/ is malformed."""


@dataclass(frozen=True)
class PatternSet:
    table: BrandTable
    keywords: KeywordIndex
    test_pans: frozenset[str]
    version: str  # sha256 over the data files, hex


def _read(name: str) -> str:
    return resources.files("panscan.patterns").joinpath(name).read_text(encoding="utf-8")


def parse_test_pans(text: str, table: BrandTable) -> frozenset[str]:
    numbers = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # The line number, never the number itself: even test numbers stay out of messages.
        if not line.isdigit() or not 13 <= len(line) <= 19:
            raise PatternDataError(f"test_pans.txt line {n}: not a 13-19 digit number")
        if not luhn_valid(line) or table.lookup(line) is None:
            raise PatternDataError(f"test_pans.txt line {n}: fails Luhn or matches no brand")
        numbers.add(line)
    return frozenset(numbers)


def parse_keywords(text: str) -> KeywordIndex:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PatternDataError(f"keywords.toml: {exc}") from None
    words, window = doc.get("words"), doc.get("window", 64)
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.isascii() and w
                                                           for w in words):
        raise PatternDataError("keywords.toml: words must be a non-empty list of ASCII strings")
    if not isinstance(window, int) or not 8 <= window <= 128:
        raise PatternDataError("keywords.toml: window must be an integer from 8 to 128")
    return KeywordIndex(words, window)


@functools.cache
def load_patterns() -> PatternSet:
    """The installed pattern set, parsed and validated once per process."""
    texts = {name: _read(name) for name in DATA_FILES}
    digest = hashlib.sha256()
    for name in DATA_FILES:
        digest.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
    table = parse_table(texts["brands.toml"])
    return PatternSet(
        table=table,
        keywords=parse_keywords(texts["keywords.toml"]),
        test_pans=parse_test_pans(texts["test_pans.txt"], table),
        version=digest.hexdigest(),
    )
