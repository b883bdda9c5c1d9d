"""Fuzz target: extraction of hostile bytes ends only in declared outcomes, in bounded time.

Each input is one item's content, expanded with ``extract.expand.open_streams`` under tight
:data:`LIMITS` exactly as a worker does (every stream fed to a ``StreamScanner``, every hit's
``where`` called). Allowed: streams, :class:`~panscan.extract.expand.Problem` records with a
``Reason`` and a text detail, and ``ExtractError`` (the worker's declared failure). Anything
else is a failure: any other exception, an empty chunk or one longer than the chunk size, more
bytes expanded than ``max_expanded_bytes``, or an input that takes longer than
:data:`TIME_BOUND` seconds (the item budget plus slack for one slow decoder call).

Seeds are the self-test's samples (``panscan.selftest``: one small valid file per supported
format, archives, documents and mail included) plus a few hand-made hostile ones, so mutations
start from inside every parser rather than at its magic-number check.

    python fuzz/fuzz_extract.py -max_total_time=60     # see fuzz/driver.py
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from driver import instrumented, main

with instrumented(__name__ == "__main__"):
    from panscan.extract.budget import ExtractError, Limits, Meter
    from panscan.extract.expand import Problem, Stream, open_streams
    from panscan.match.matcher import StreamScanner
    from panscan.match.patterns import load_patterns
    from panscan.model import Reason
    from panscan.selftest import samples, zip_bytes

LIMITS = Limits(max_archive_depth=4, max_expanded_bytes=2**20, max_members=64, max_ratio=200.0,
                max_item_seconds=1.0, max_decoder_memory=32 * 2**20, max_spool_bytes=2 * 2**20)
#: Seconds one input may take: the item budget, plus slack for a decoder call or parser step
#: that runs between two time checks (and for atheris' instrumentation).
TIME_BOUND = float(os.environ.get("PANSCAN_FUZZ_EXTRACT_SECONDS", "10"))
CHUNK_SIZES = (4096, 512, 65536, 61)
MAX_INPUT = 1 << 20
PATTERNS = load_patterns()


def one_input(data: bytes) -> None:
    """One item's content through the extractors (see the module docstring)."""
    # The chunk size follows the input's length, so that mutations try every size without
    # taking a byte away from the format sniffing (61-byte chunks only for small inputs).
    chunk_size = CHUNK_SIZES[len(data) % (4 if len(data) < 2048 else 3)]
    meter = Meter()
    started = time.monotonic()
    try:
        for out in open_streams(io.BytesIO(data), LIMITS, chunk_size, meter):
            if isinstance(out, Problem):
                assert isinstance(out.reason, Reason), f"Problem with reason {out.reason!r}"
                assert isinstance(out.detail, str) and (out.member is None or isinstance(out.member, str))
                continue
            assert isinstance(out, Stream), f"open_streams yielded a {type(out).__name__}"
            scanner = StreamScanner(PATTERNS)
            for piece in out.chunks:
                assert type(piece) is bytes and 0 < len(piece) <= chunk_size, \
                    f"a chunk of {len(piece)} bytes ({type(piece).__name__}), chunk size {chunk_size}"
                _where(out, scanner.feed(piece))
            _where(out, scanner.finish())
    except ExtractError as exc:
        assert isinstance(exc.reason, Reason) and isinstance(exc.detail, str)
    elapsed = time.monotonic() - started
    assert elapsed < TIME_BOUND, f"took {elapsed:.1f} s (item budget {LIMITS.max_item_seconds} s)"
    assert meter.bytes_expanded <= LIMITS.max_expanded_bytes, f"expanded {meter.bytes_expanded} bytes"


def _where(out: Stream, hits: list) -> None:  # type: ignore[type-arg]
    if out.where is not None:
        for hit in hits:
            suffix = out.where(hit.offset)
            assert suffix is None or isinstance(suffix, str)


def seeds() -> list[bytes]:
    """The self-test's sample of every format, and a few hostile classics."""
    out = [s.data for s in samples()]
    zeros = b"\x00" * (2 * 2**20)
    out += [
        b"",
        gzip.compress(zeros),  # a ratio bomb, small enough to mutate
        bz2.compress(zeros),
        lzma.compress(zeros, lzma.FORMAT_XZ),
        _nested_zip(6),  # deeper than max_archive_depth
        zip_bytes([(f"m{i}.txt", b"4111 1111 1111 1111\n") for i in range(80)]),  # more members than allowed
        zip_bytes([("a.txt", b"x")])[:-10],  # truncated central directory
        b"%PDF-1.4\n1 0 obj << /Length 99999 >> stream\nBT (4111111111111111) Tj ET\nendstream endobj\n",
        b"{\\rtf1 {\\b 4111 1111} 1111 1111 {{{{{{{{{{",
        b"From a@b Mon Jan 1 00:00:00 2024\nContent-Type: multipart/mixed; boundary=X\n\n--X\n\n4111\n--X--\n",
    ]
    return out


def _nested_zip(depth: int) -> bytes:
    data = b"card 4111 1111 1111 1111\n"
    for level in range(depth):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"level{level}.zip" if level else "cards.txt", data)
        data = buf.getvalue()
    return data


if __name__ == "__main__":
    sys.exit(main("extract", one_input, seeds, max_len=MAX_INPUT))
