"""Masking and keyed fingerprints: the only place a raw match becomes storable.

A finding keeps at most the first six and last four digits (last four only for numbers
shorter than 15 digits, where first six plus last four would reveal too much), the brand,
and an HMAC-SHA256 fingerprint keyed by a per-installation secret, so the same card can be
followed across sweeps without the number being recoverable from reports.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from panscan.match.matcher import RawHit
from panscan.model import Finding, Item

KEY_FILE_NAME = "fingerprint.key"
_KEY_BYTES = 32


def mask_digits(digits: str) -> str:
    """First six and last four digits, the rest as ``*``; last four only below 15 digits."""
    n = len(digits)
    if n >= 15:
        return digits[:6] + "*" * (n - 10) + digits[-4:]
    if n > 4:
        return "*" * (n - 4) + digits[-4:]
    return "*" * n


def fingerprint(digits: str, key: bytes) -> str:
    """Keyed HMAC-SHA256 of the bare digits, hex."""
    return hmac.new(key, digits.encode("ascii"), hashlib.sha256).hexdigest()


def load_or_create_key(directory: Path) -> bytes:
    """Read the installation key from ``directory``, creating it (mode 0600) if missing."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / KEY_FILE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != _KEY_BYTES:
            raise ValueError(f"fingerprint key {path} is damaged (expected {_KEY_BYTES} bytes)") from None
        return key
    key = secrets.token_bytes(_KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def to_finding(hit: RawHit, item: Item, member: str | None, key: bytes,
               retention: str | None = None) -> Finding:
    """Turn a worker-local raw hit into a storable finding."""
    return Finding(
        location=item.location,
        version_id=item.version_id,
        is_latest=item.is_latest,
        member=member,
        offset=hit.offset,
        line=hit.line,
        kind=hit.kind,
        brand=hit.brand,
        masked=mask_digits(hit.digits),
        fingerprint=fingerprint(hit.digits, key),
        confidence=hit.confidence,
        test_card=hit.test_card,
        retention=retention,
    )
