"""Fuzz target: the streaming matcher finds the same hits whatever the chunk boundaries.

For each input, the payload is scanned whole (``scan_bytes``) and fed to a ``StreamScanner``
in chunks whose sizes are drawn from the input itself (single bytes, sizes around the carried
context, random sizes); both must give the same hits (offset, length, number, kind, brand,
confidence, test flag, line), and no exception may escape. The whole scan is also repeated on
another of the matcher's code paths (hyperscan's sparse spans, the vectorised dense path, the
numpy-only prefilter), which must agree too.

Input layout: byte 0 picks the payload mode (odd: the rest is a token program, below; even:
raw bytes), byte 1 the code paths, byte 2 the chunking; the rest is the payload. The token
program turns each byte into a piece of card-like text (digits, separators, letters, NULs,
track-data markers, keywords, a whole Luhn-valid number in a brand's range, or a repetition
of what came before, to reach past the carry bound), so that random inputs hit the matcher's
interesting cases far more often than random bytes would.

    python fuzz/fuzz_matcher.py -max_total_time=60     # see fuzz/driver.py
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from driver import instrumented, main

with instrumented(__name__ == "__main__"):
    from panscan.match import matcher
    from panscan.match.luhn import check_digit
    from panscan.match.matcher import MAX_CARRY, RIGHT, RawHit, StreamScanner, scan_bytes
    from panscan.match.patterns import load_patterns

PATTERNS = load_patterns()
PATHS = ("default", "sparse", "dense", "numpy")
MAX_PAYLOAD = 3 * MAX_CARRY  # room for a run past the carry bound, small enough for many inputs a second


def _numbers() -> list[str]:
    """Luhn-valid numbers in brands' ranges and lengths (never issued cards: fixed bodies)."""
    out = []
    for prefix, length in (("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2221", 16), ("37", 15), ("6011", 16),
                           ("3530", 16), ("62", 19), ("36", 14), ("6759", 18)):
        body = (prefix + "7264019385" * 2)[:length - 1]
        out.append(body + check_digit(body))
    out += ["4111111111111111", "5555555555554444", "378282246310005"]  # published test numbers
    return out


NUMBERS = _numbers()
_SEPARATED = [sep.join(n[i:i + 4] for i in range(0, len(n), 4)) for n in NUMBERS for sep in (" ", "-")]
_PIECES: tuple[bytes, ...] = (
    *(str(d).encode() for d in range(10)), b" ", b"-", b"\n", b"\x00", b"a", b"T", b"%B", b"^", b"=", b";", b"?",
    b"SMITH/ALICE", b"card ", b"visa", b"cvv ", b"\r\n", b"  ", b"--", b"\t", b"x", b"2712", b"=2712",
)
# Token program opcodes past the pieces (each takes the next byte as its argument but UTF16).
OP_NUMBER = len(_PIECES)  # a whole number, contiguous
OP_GROUPED = OP_NUMBER + 1  # a whole number in groups of four, spaces or dashes
OP_UTF16 = OP_NUMBER + 2  # switch UTF-16LE output on or off
OP_REPEAT = OP_NUMBER + 3  # the last 1-22 bytes again, 1 + 64 * arg times
OPS = OP_NUMBER + 4


def program(code: bytes) -> bytes:
    """The text a token program (see the module docstring) writes."""
    out = bytearray()
    utf16 = False
    i = 0
    while i < len(code) and len(out) < MAX_PAYLOAD:
        op = code[i]
        arg = code[i + 1] if i + 1 < len(code) else 0
        i += 1
        kind = op % OPS
        if kind < OP_NUMBER:
            piece = _PIECES[kind]
        elif kind in (OP_NUMBER, OP_GROUPED):
            numbers = NUMBERS if kind == OP_NUMBER else _SEPARATED
            piece, i = numbers[arg % len(numbers)].encode(), i + 1
        elif kind == OP_UTF16:
            utf16 = not utf16  # what follows is written as UTF-16LE: the matcher's other view
            continue
        else:
            # A long numeric stretch (a dump with no line breaks), past MAX_CARRY when arg is large.
            tail = bytes(out[-(1 + (op // OPS) * 3):]) or b"7"
            piece, i = tail * (1 + arg * 64), i + 1
        out += piece.decode("latin-1").encode("utf-16-le") if utf16 else piece
    return bytes(out[:MAX_PAYLOAD])


def _chunk_sizes(n: int, style: int) -> Iterator[int]:
    rng = random.Random(style * 7919 + n)  # noqa: S311 (test input)
    kind = style % 4
    # A feed costs up to the carried stretch (MAX_CARRY) whatever its size: at most ~1024 feeds
    # per input keeps a long stretch in tiny chunks from taking seconds. (Workers feed chunks of
    # CHUNK_SIZE; extracted text arrives coalesced, see extract.parts.text_chunks.)
    least = max(1, n // 1024)
    while True:
        if kind == 0:
            size = rng.randint(1, 3)
        elif kind == 1:
            size = rng.randint(RIGHT - 8, RIGHT + 8)
        elif kind == 2:
            size = rng.randint(1, max(1, n))
        else:
            size = rng.choice((1, 2, RIGHT, RIGHT + 1, 4096, MAX_CARRY - 1, MAX_CARRY + 1, rng.randint(1, 1 << 17)))
        yield max(size, least)


@contextmanager
def code_path(path: str) -> Iterator[None]:
    """The matcher forced onto one of its code paths for every buffer (as tests/unit/cards.py does)."""
    saved = (matcher.SPARSE_LIMIT, matcher._locator)
    if path != "default":
        locator = matcher._Locator()
        if path == "sparse":
            matcher.SPARSE_LIMIT = 10**9
        elif path == "dense":
            matcher.SPARSE_LIMIT = -1
        else:
            locator._db = None
        matcher._locator = locator
    try:
        yield
    finally:
        matcher.SPARSE_LIMIT, matcher._locator = saved


_Key = tuple[int, int, str, str, str, str, bool, int]


def _keys(hits: list[RawHit]) -> list[_Key]:
    return [(h.offset, h.length, h.digits, str(h.kind), h.brand, str(h.confidence), h.test_card, h.line) for h in hits]


def _differ(a: list[_Key], b: list[_Key]) -> str:
    """Where two hit lists first differ, by offset only (the numbers stay out of the message)."""
    for x, y in zip(a, b, strict=False):
        if x != y:
            fields = [name for name, u, v in zip(("offset", "length", "number", "kind", "brand", "confidence",
                                                  "test_card", "line"), x, y, strict=True) if u != v]
            return f"first difference at offsets {x[0]} / {y[0]} ({', '.join(fields)})"
    return f"{len(a)} hits against {len(b)}"


def chunked(payload: bytes, style: int) -> list[RawHit]:
    scanner = StreamScanner(PATTERNS)
    hits: list[RawHit] = []
    pos = 0
    sizes = _chunk_sizes(len(payload), style)
    while pos < len(payload):
        size = next(sizes)
        hits += scanner.feed(payload[pos:pos + size])
        pos += size
    return hits + scanner.finish()


def one_input(data: bytes) -> None:
    """One fuzz input (see the module docstring); raises AssertionError on a disagreement."""
    if len(data) < 3:
        return
    mode, paths, style = data[0], data[1], data[2]
    payload = program(data[3:]) if mode & 1 else data[3:MAX_PAYLOAD + 3]
    first, other = PATHS[paths % 4], PATHS[(paths // 4) % 4]
    with code_path(first):
        whole = _keys(scan_bytes(payload, PATTERNS))
        pieces = _keys(chunked(payload, style))
    assert pieces == whole, f"chunked scan ({first} path, chunk style {style % 4}) differs from the whole " \
                            f"scan: {_differ(pieces, whole)}"
    if other != first:
        with code_path(other):
            again = _keys(scan_bytes(payload, PATTERNS))
        assert again == whole, f"{other} path differs from {first} path: {_differ(again, whole)}"


def seeds() -> list[bytes]:
    """Small inputs covering both modes, every code path pair and chunk style."""
    texts = [
        f"order 1 card {_SEPARATED[0]} exp 12/27 cvv 123\n".encode(),
        f"%B{NUMBERS[0]}^SMITH/ALICE^2712101?\n;{NUMBERS[1]}={2712}1010?\n".encode(),
        f"id={NUMBERS[2]}\x00\x00{NUMBERS[3]} 123 {NUMBERS[4]}T10:00 deadbeef{NUMBERS[5]}".encode(),
        f"card {NUMBERS[6]}\n".encode("utf-16-le"),
        ("1234 " * 20 + NUMBERS[7]).encode(),
        b"\x00" * 400 + NUMBERS[8].encode() + b"-" * 3,
    ]
    out = []
    for i, text in enumerate(texts):
        out.append(bytes([2 * i, i * 5 % 16, i]) + text)
    # Token programs: numbers among separators and keywords, UTF-16 switches, stretches past the
    # carry bound (the repeat opcode's high bits choose how much is repeated).
    card, space, dash, newline = _PIECES.index(b"card "), _PIECES.index(b" "), _PIECES.index(b"-"), 12
    out.append(bytes([1, 0, 1, card, OP_NUMBER, 0, space, OP_GROUPED, 3, newline, 4, 5, 6, OP_NUMBER, 7]))
    out.append(bytes([3, 6, 2, OP_UTF16, card, OP_GROUPED, 1, OP_UTF16, dash, OP_NUMBER, 9, newline]))
    out.append(bytes([5, 9, 3, 1, 2, 3, 4, space, OP_REPEAT + 2 * OPS, 255, OP_NUMBER, 2, space, 7]))
    out.append(bytes([7, 14, 0, OP_GROUPED, 5, space, OP_REPEAT + 6 * OPS, 200, OP_GROUPED, 6]))
    return out


if __name__ == "__main__":
    sys.exit(main("matcher", one_input, seeds, max_len=MAX_PAYLOAD + 3))
