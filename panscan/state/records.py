"""The record order of a sweep, packed into ``sweep_records`` chunks.

An entry names a stored result: ``result_id << 1 | CARRIED``. ``CARRIED`` set means the sweep
recorded that result as not read again, so its ``unchanged_since_sweep`` is the stored one or,
when that is NULL, the sweep that stored it. A chunk is the entries of one commit, delta
encoded and deflated: an unchanged sweep's entries are mostly ascending ids, a byte or less
per item.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from itertools import accumulate

CARRIED = 1


def pack(entries: list[int]) -> bytes:
    deltas = array("q", (b - a for a, b in zip([0, *entries], entries, strict=False)))
    if sys.byteorder == "big":  # stored little-endian: a state file may move between machines
        deltas.byteswap()
    return zlib.compress(deltas.tobytes(), 6)


def unpack(blob: bytes) -> list[int]:
    deltas = array("q")
    deltas.frombytes(zlib.decompress(blob))
    if sys.byteorder == "big":
        deltas.byteswap()
    return list(accumulate(deltas))
