"""The Luhn (mod 10) check used by every card brand."""

from __future__ import annotations

# Digit value after doubling, with the two digits of the product summed.
DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += DOUBLED[d] if i & 1 else d
    return total % 10 == 0


def check_digit(payload: str) -> str:
    """The digit that, appended to ``payload``, makes it Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = ord(ch) - 48
        total += d if i & 1 else DOUBLED[d]
    return str((10 - total % 10) % 10)
