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
import re
import secrets
from dataclasses import replace
from pathlib import Path

from panscan.match.matcher import RawHit, scan_bytes
from panscan.model import Finding, Item, ItemResult

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
        volume_id=item.volume_id,
    )


_MAYBE_NUMBER = re.compile(r"[0-9](?:[ -]?[0-9]){11}")
_LONG_RUN = re.compile(r"[0-9](?:[ -]?[0-9]){11,}")
_LETTERS_OUT = bytes(0x5F if (65 <= b <= 90 or 97 <= b <= 122) else b for b in range(256))


def mask_text(text: str) -> str:
    """``text`` with every card number in it masked (first six and last four kept).

    For names and messages, not content: a number glued to letters (``cc4111...``) is
    masked too, because a file name is no hex digest and masking too much costs less here
    than a number in a report. Separators and the text around numbers are kept, so a
    masked location still points a person at the right file.
    """
    if not _MAYBE_NUMBER.search(text):
        return text  # the common case: too few digits for any card number
    data = text.encode("utf-8", "surrogateescape")
    # Letters become "_", which is neither digit, separator nor letter: the letter rule no
    # longer applies, offsets stay the same.
    try:
        # Every valid number, whatever its shape: a URL or a table row in a name is still masked.
        hits = scan_bytes(data.translate(_LETTERS_OUT), judge_structure=False)
    except Exception:
        # Fail closed: this runs on error paths too, where a broken matcher must not turn
        # into an unmasked message. Every long digit run keeps its last four digits only.
        return _LONG_RUN.sub(lambda m: re.sub(r"[0-9]", "*", m[0][:-4]) + m[0][-4:], text)
    spans: list[list[int]] = []
    for hit in hits:
        lo, hi = hit.offset, hit.offset + hit.length
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    if not spans:
        return text
    out = bytearray(data)
    for lo, hi in spans:
        positions = [i for i in range(lo, hi) if 48 <= out[i] <= 57]
        masked = mask_digits("".join(chr(out[i]) for i in positions))
        for i, ch in zip(positions, masked, strict=True):
            out[i] = ord(ch)
    return bytes(out).decode("utf-8", "surrogateescape")


def mask_result(result: ItemResult) -> ItemResult:
    """``result`` with its location, detail and findings' locations and members masked.

    The engine applies this to every result before it reaches a sink or a log: file names
    and archive members can hold card numbers too.
    """
    item = result.item
    location = mask_text(item.location)
    description = mask_text(item.description) if item.description else item.description
    detail = mask_text(result.detail) if result.detail else result.detail
    findings = tuple(_mask_finding(f, location) for f in result.findings)
    if (location == item.location and description == item.description and detail == result.detail
            and findings == result.findings):
        return result
    return replace(result, item=replace(item, location=location, description=description), detail=detail,
                   findings=findings)


def _mask_finding(finding: Finding, location: str) -> Finding:
    member = mask_text(finding.member) if finding.member else finding.member
    if location == finding.location and member == finding.member:
        return finding
    return replace(finding, location=location, member=member)
