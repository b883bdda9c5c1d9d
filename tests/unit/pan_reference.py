"""An independent, slow, obviously-correct statement of the detection rules (raw text only).

The fast matcher is tested against it: it must agree on every input, whatever the chunking.
"""

from __future__ import annotations

import re

from panscan.match.luhn import luhn_valid
from panscan.match.patterns import PatternSet
from panscan.match.structure import CARD_GROUPINGS, judge

RUN = re.compile(rb"[0-9]+(?:[ \-][0-9]+)*")
GROUP = re.compile(rb"[0-9]+")
TRACK1_TAIL = re.compile(rb"\^[^^\x00-\x1f]{2,26}\^[0-9]{4}")
TRACK2_TAIL = re.compile(rb"=[0-9]{4}")


def is_letter(b: int) -> bool:
    return 65 <= b <= 90 or 97 <= b <= 122


def reference_hits(data: bytes, patterns: PatternSet) -> list[tuple[int, str, str, str]]:
    """(offset, digits, kind, brand) for every hit in ``data``."""
    out = []
    for run in RUN.finditer(data):
        s, e = run.span()
        before = data[s - 1] if s > 0 else None
        after = data[e] if e < len(data) else None
        track1_lead = s >= 2 and data[s - 2:s] == b"%B"
        groups = [m.span() for m in GROUP.finditer(data, s, e)]
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                digits = b"".join(data[a:b] for a, b in groups[i:j + 1]).decode()
                if any(b - a > 19 for a, b in groups[i:j + 1]) or not 13 <= len(digits) <= 19:
                    continue
                ws, we = groups[i][0], groups[j][1]
                brand = patterns.table.lookup(digits)
                if brand is None or not luhn_valid(digits):
                    continue
                kind = "pan"
                if ws == s and track1_lead and TRACK1_TAIL.match(data, we):
                    kind = "track1"
                elif ws == s and s >= 1 and data[s - 1:s] == b";" and TRACK2_TAIL.match(data, we):
                    kind = "track2"
                # A group touching a letter is part of no candidate (only the run's outer groups can).
                if kind != "track1" and ((i == 0 and before is not None and is_letter(before))
                                         or (j == len(groups) - 1 and after is not None and is_letter(after))):
                    continue
                sizes = tuple(b - a for a, b in groups[i:j + 1])
                if kind == "pan" and digits not in patterns.test_pans:
                    # Structures that are not card numbers (panscan.match.structure, tested on its own).
                    w = patterns.keywords.window
                    keyword = patterns.keywords.near(data[max(0, ws - w):ws] + b" " + data[we:we + w])
                    if judge(sizes, digits, data, ws, we, keyword, patterns.table.is_broad(digits)) is None:
                        continue
                out.append((ws, digits, kind, brand, we - ws, sizes))
    # A shorter number at the start of a longer card-grouped one is the same number: once.
    longest = {}
    for ws, _, _, _, length, sizes in out:
        if sizes in CARD_GROUPINGS:
            longest[ws] = max(longest.get(ws, 0), length)
    return sorted((ws, d, k, b) for ws, d, k, b, length, _ in out if length >= longest.get(ws, 0))
