"""Generated Luhn-valid card numbers for tests (never real cards: random bodies)."""

from __future__ import annotations

import random

from panscan.match.luhn import check_digit


def make_pan(prefix: str, length: int, rng: random.Random | None = None) -> str:
    """A Luhn-valid number of ``length`` digits starting with ``prefix``."""
    rng = rng or random.Random(len(prefix) * 1000 + length)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + check_digit(body)


def spaced(pan: str, sep: str = " ") -> str:
    return sep.join(pan[i:i + 4] for i in range(0, len(pan), 4))


def printed(pan: str, sep: str = " ") -> str:
    """The number grouped as card networks print it: 4-6-5 (15 digits), 4-6-4 (14), else fours."""
    if len(pan) in (14, 15):
        return sep.join((pan[:4], pan[4:10], pan[10:]))
    return spaced(pan, sep)


PATHS = ("sparse", "dense", "no-hyperscan")


class forced_path:
    """Make the matcher take one of its three code paths for every buffer.

    sparse: hyperscan locates spans and each is checked run by run; dense: the whole buffer
    goes through the vectorised pipeline; no-hyperscan: the numpy-only prefilter, as on
    platforms without hyperscan wheels.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        from panscan.match import matcher

        self._saved = (matcher.SPARSE_LIMIT, matcher._locator)
        locator = matcher._Locator()
        if self.path == "sparse":
            matcher.SPARSE_LIMIT = 10**9
        elif self.path == "dense":
            matcher.SPARSE_LIMIT = -1
        else:
            locator._db = None
        matcher._locator = locator

    def __exit__(self, *exc: object) -> None:
        from panscan.match import matcher

        matcher.SPARSE_LIMIT, matcher._locator = self._saved
