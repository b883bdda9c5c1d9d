"""Chunk boundaries and bounded memory: the searcher side of the matcher."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cards import make_pan, spaced

from panscan.match.matcher import MAX_CARRY, StreamScanner
from panscan.match.patterns import load_patterns

PATTERNS = load_patterns()


def scan_file(path: Path, chunk_size: int) -> list[tuple[int, str]]:
    scanner = StreamScanner(PATTERNS)
    hits = []
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            hits.extend(scanner.feed(chunk))
    hits.extend(scanner.finish())
    return [(h.offset, h.digits) for h in hits]


@pytest.fixture(scope="module")
def boundary_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str]]]:
    """16 MiB + 1 KiB of log-like text with a PAN straddling every power of two from 4 KiB up."""
    size = (16 << 20) + 1024
    line = b"2024-01-01T00:00:00Z id=1234567890 ts=1700000000000 msg=ok\n"
    data = bytearray((line * (size // len(line) + 1))[:size])
    planted = []
    for k in range(12, 25):
        boundary = 1 << k
        pan = make_pan("4", 16) if k % 2 else spaced(make_pan("5", 16))
        start = boundary - len(pan) // 2
        data[start - 1:start + len(pan) + 1] = b" " + pan.encode() + b" "
        planted.append((start, pan.replace(" ", "")))
    path = tmp_path_factory.mktemp("boundaries") / "log.txt"
    path.write_bytes(bytes(data))
    return path, planted


@pytest.mark.parametrize("chunk_size", [4096, 4096 + 1, 65536, 1 << 20, (3 << 20) + 7, 16 << 20])
def test_pan_across_every_power_of_two_boundary_is_found_once(
        boundary_file: tuple[Path, list[tuple[int, str]]], chunk_size: int) -> None:
    path, planted = boundary_file
    assert scan_file(path, chunk_size) == planted


def test_long_digit_runs_beyond_the_carry_bound_do_not_grow_the_carry(tmp_path: Path) -> None:
    pan = make_pan("4", 16)
    # A newline-free numeric dump: space-separated 3-digit groups far longer than MAX_CARRY,
    # then a PAN set off by a comma.
    dump = b" ".join(b"0%02d" % (i % 100) for i in range(3 * MAX_CARRY))  # no IIN starts with 0
    path = tmp_path / "dump.txt"
    path.write_bytes(dump + b"," + pan.encode() + b",")
    scanner = StreamScanner(PATTERNS)
    found = []
    with path.open("rb") as f:
        while chunk := f.read(8192):
            found += scanner.feed(chunk)
            assert len(scanner._buf) <= MAX_CARRY + 8192 + 1024
    found += scanner.finish()
    assert [h.digits for h in found] == [pan]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "digits"])
def test_newline_free_gibibyte_stream_is_scanned_in_bounded_memory(kind: str) -> None:
    # Run in a child so its peak RSS is its own; the stream is generated on the fly.
    pan = make_pan("4", 16)
    code = textwrap.dedent(f"""
        import sys
        from panscan.match.matcher import StreamScanner
        block = {'b"lorem ipsum dolor sit amet " * 40000' if kind == 'text' else 'b"7" * (1 << 20)'}
        block = block[: 1 << 20]
        scanner = StreamScanner()
        hits = []
        for i in range(1024):
            chunk = block
            if i == 700:
                chunk = block[:500000] + b" {pan} " + block[500018:]
            hits += scanner.feed(chunk)
        hits += scanner.finish()
        # VmHWM belongs to this program's own address space (ru_maxrss would include the
        # forked parent's pages on Linux).
        status = open("/proc/self/status").read()
        peak = int(status.split("VmHWM:")[1].split()[0])
        print(len(hits), [h.offset for h in hits], peak)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=600).stdout.split()
    count, peak_kib = int(out[0]), int(out[-1])
    # In the digit stream the PAN is its own group between single spaces: still found.
    assert count == 1 and f"[{700 * (1 << 20) + 500001}]" in " ".join(out)
    # The interpreter with numpy and hyperscan is ~40 MiB; a 1 GiB stream must not add to it
    # more than a few chunks.
    assert peak_kib < 120 * 1024, f"peak RSS {peak_kib} KiB"
