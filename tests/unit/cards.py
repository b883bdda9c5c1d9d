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
