"""Streams from raw bytes: sniffing, gzip/bzip2/xz/zstd decoding, limits. Real files on disk."""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import os
import random
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from panscan.extract.budget import Limits, Meter
from panscan.extract.expand import Problem, Stream, open_streams
from panscan.extract.sniff import Format, sniff
from panscan.model import Reason

MiB = 2**20
TEST_PAN = b"4111111111111111"  # published test number

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    # preset 1: the tests are about decoding; xz's default preset is slow to compress.
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, preset=1),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@functools.cache
def sample_text(size: int, seed: int = 1) -> bytes:
    """Log-like text (compressible, not trivially) with a test card number in it."""
    rng = random.Random(seed)
    words = [b"order", b"id", b"amount", b"card", b"ok", b"declined", b"ref", b"user"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(6))
        out += b" %d " % rng.randrange(10**9)
        if rng.random() < 0.01:
            out += TEST_PAN
        out += b"\n"
    return bytes(out[:size])


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def scan(path: Path, limits: Limits | None = None, chunk_size: int = MiB,
         keep: bool = True) -> tuple[bytes, list[int], Problem | None, Meter, int]:
    """Everything yielded (if keep), chunk sizes, the one problem reported, the meter, total bytes."""
    meter = Meter()
    out = bytearray()
    sizes: list[int] = []
    problems: list[Problem] = []
    streams = 0
    with open(path, "rb", buffering=0) as raw:
        for stream in open_streams(raw, limits or Limits(), chunk_size, meter=meter):
            if isinstance(stream, Problem):
                problems.append(stream)
                continue
            if stream.backstop:  # an unchecked zstd frame's raw bytes: not decoded output
                for _ in stream.chunks:
                    pass
                continue
            streams += 1
            assert stream.member is None
            for chunk in stream.chunks:
                assert isinstance(chunk, bytes) and chunk
                sizes.append(len(chunk))
                if keep:
                    out += chunk
    assert streams <= 1
    assert len(problems) <= 1, problems
    error = problems[0] if problems else None
    return bytes(out), sizes, error, meter, sum(sizes)


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, MiB])
def test_plain_data_passes_through_in_exact_chunks(tmp_path: Path, chunk_size: int) -> None:
    data = sample_text(50_000 if chunk_size == 1 else 300_000)
    out, sizes, error, meter, _ = scan(write(tmp_path, "plain.log", data), chunk_size=chunk_size)
    assert error is None
    assert out == data
    assert all(s == chunk_size for s in sizes[:-1]) and 0 < sizes[-1] <= chunk_size
    assert meter.bytes_in == len(data)
    assert meter.bytes_expanded == 0  # plain bytes are not "expanded"


def test_empty_file_yields_one_stream_with_no_chunks(tmp_path: Path) -> None:
    out, sizes, error, meter, _ = scan(write(tmp_path, "empty", b""))
    assert (out, sizes, error, meter.bytes_in) == (b"", [], None, 0)


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
@pytest.mark.parametrize("chunk_size", [3, 4096, 65_536, MiB])
def test_compressed_round_trip_with_several_chunk_sizes(tmp_path: Path, fmt: str, chunk_size: int) -> None:
    data = sample_text(40_000 if chunk_size == 3 else MiB + MiB // 2 + 123)
    compressed = COMPRESSORS[fmt](data)
    out, sizes, error, meter, _ = scan(write(tmp_path, "data.bin", compressed), chunk_size=chunk_size)
    assert error is None
    assert out == data
    assert max(sizes) <= chunk_size
    assert meter.bytes_in == len(compressed)
    assert meter.bytes_expanded == len(data)


def test_format_is_sniffed_from_content_never_from_the_name(tmp_path: Path) -> None:
    data = sample_text(10_000)
    out, _, error, _, _ = scan(write(tmp_path, "notes.txt", gzip.compress(data)))
    assert (out, error) == (data, None)
    out, _, error, _, _ = scan(write(tmp_path, "archive.gz", data))
    assert (out, error) == (data, None)


def test_text_that_starts_with_bzip2_letters_is_scanned_as_text(tmp_path: Path) -> None:
    data = b"BZh9 is not always bzip2: card " + TEST_PAN + b"\n"
    assert sniff(data) is Format.RAW
    out, _, error, _, _ = scan(write(tmp_path, "t.txt", data))
    assert (out, error) == (data, None)


def test_sniff_recognises_each_magic() -> None:
    assert sniff(gzip.compress(b"x")) is Format.GZIP
    assert sniff(bz2.compress(b"x")) is Format.BZIP2
    assert sniff(bz2.compress(b"")) is Format.BZIP2
    assert sniff(lzma.compress(b"x")) is Format.XZ
    assert sniff(zstandard.ZstdCompressor().compress(b"x")) is Format.ZSTD
    assert sniff(b"\x1f\x8b") is Format.RAW  # too short to be gzip: scanned as bytes


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_concatenated_members_are_all_decoded_and_nul_padding_ignored(tmp_path: Path, fmt: str) -> None:
    parts = [sample_text(200_000, seed=s) for s in range(3)]
    # zstd defines no padding (its own tool rejects trailing NULs): concatenation only.
    padding = b"" if fmt == "zstd" else b"\0" * 4096
    blob = b"".join(COMPRESSORS[fmt](p) for p in parts) + padding
    out, _, error, _, _ = scan(write(tmp_path, "multi", blob), chunk_size=65_536)
    assert error is None
    assert out == b"".join(parts)


def test_multi_member_gzip_split_across_read_boundaries_is_decoded_fully(tmp_path: Path) -> None:
    # Small members so that member boundaries fall inside and across every read.
    parts = [sample_text(900 + s, seed=s) for s in range(200)]
    blob = b"".join(gzip.compress(p) for p in parts)
    for chunk_size in (5, 11, 4096):
        out, _, error, _, _ = scan(write(tmp_path, "multi.gz", blob), chunk_size=chunk_size)
        assert error is None
        assert out == b"".join(parts)


@pytest.mark.parametrize("fmt", sorted(set(COMPRESSORS) - {"zstd"}))  # zstd: see compressed.py
def test_truncated_stream_yields_decoded_prefix_then_malformed(tmp_path: Path, fmt: str) -> None:
    data = sample_text(2 * MiB)
    compressed = COMPRESSORS[fmt](data)
    out, _, error, _, _ = scan(write(tmp_path, "cut", compressed[: len(compressed) * 3 // 4]),
                               chunk_size=65_536)
    assert error is not None and error.reason is Reason.MALFORMED_FILE
    assert "truncated" in error.detail
    assert len(out) > len(data) // 4  # the decodable part was still produced...
    assert data.startswith(out)  # ...and is exactly the start of the original


def test_corrupt_gzip_is_malformed(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(sample_text(500_000)))
    for i in range(len(compressed) // 2, len(compressed) // 2 + 64):
        compressed[i] ^= 0xFF
    _, _, error, _, _ = scan(write(tmp_path, "bad.gz", bytes(compressed)))
    assert error is not None and error.reason is Reason.MALFORMED_FILE


def test_data_after_a_gzip_stream_is_scanned_raw_as_a_stream_of_its_own(tmp_path: Path) -> None:
    data = sample_text(100_000)
    path = write(tmp_path, "tail.gz", gzip.compress(data) + b"hidden " + TEST_PAN)
    streams = {}
    with open(path, "rb", buffering=0) as raw:
        for out in open_streams(raw, Limits(), MiB):
            assert not isinstance(out, Problem), out
            streams[out.member] = b"".join(out.chunks)
    assert streams == {None: data, "(after the gzip data)": b"hidden " + TEST_PAN}


def write_zero_bomb(path: Path, size: int) -> None:
    """``size`` zero bytes, gzip-compressed, written without ever holding them in memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(comp.compress(zeros))
        f.write(comp.flush())


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "zeros.gz"
    write_zero_bomb(path, 200 * MiB)
    assert path.stat().st_size < 300_000  # 200 MiB of zeros in a few hundred KB
    return path


def test_gzip_bomb_stops_at_expanded_byte_limit_in_bounded_memory(gzip_bomb: Path) -> None:
    limits = Limits(max_expanded_bytes=40 * MiB, max_ratio=1e9)
    tracemalloc.start()
    try:
        _, _, error, meter, total = scan(gzip_bomb, limits, chunk_size=MiB, keep=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error is not None and error.reason is Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT
    assert total == 40 * MiB  # exactly up to the limit was yielded, then the error
    assert meter.bytes_expanded == 40 * MiB
    assert meter.bytes_in == gzip_bomb.stat().st_size
    assert peak < 8 * MiB, f"peak {peak} bytes while decoding a bomb with 1 MiB chunks"


def test_gzip_bomb_stops_on_compression_ratio_soon_after_the_grace_bytes(gzip_bomb: Path) -> None:
    _, _, error, _, total = scan(gzip_bomb, Limits(max_ratio=100.0), keep=False)
    assert error is not None and error.reason is Reason.ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT
    assert 16 * MiB < total <= 32 * MiB


def test_highly_compressible_small_file_is_not_judged_by_ratio(tmp_path: Path) -> None:
    path = tmp_path / "zeros.gz"
    write_zero_bomb(path, 8 * MiB)  # ~1000:1, but under the 16 MiB grace
    out, _, error, _, _ = scan(path, Limits(max_ratio=10.0))
    assert error is None and out == bytes(8 * MiB)


def test_xz_demanding_more_decoder_memory_than_allowed_is_refused(tmp_path: Path) -> None:
    blob = lzma.compress(sample_text(100_000), preset=9)  # 64 MiB dictionary
    out, _, error, _, _ = scan(write(tmp_path, "big.xz", blob), Limits(max_decoder_memory=8 * MiB))
    assert error is not None and error.reason is Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT
    assert out == b""
    out, _, error, _, _ = scan(write(tmp_path, "big.xz", blob))
    assert error is None and out == sample_text(100_000)


@pytest.mark.parametrize("compress", [False, True])
def test_item_time_limit_cuts_off_a_slow_scan(tmp_path: Path, compress: bool) -> None:
    data = sample_text(MiB)
    path = write(tmp_path, "slow", gzip.compress(data) if compress else data)
    got = 0
    problems = []
    with open(path, "rb", buffering=0) as raw:
        for stream in open_streams(raw, Limits(max_item_seconds=0.2), chunk_size=65_536):
            if isinstance(stream, Problem):
                problems.append(stream)
                continue
            for chunk in stream.chunks:
                got += len(chunk)
                time.sleep(0.05)
    assert [p.reason for p in problems] == [Reason.TIME_CUT_OFF_REACHED]
    assert 0 < got < len(data)


def test_read_failure_becomes_read_error(tmp_path: Path) -> None:
    path = write(tmp_path, "f", sample_text(1000))
    fd = os.open(path, os.O_WRONLY)  # read() on a write-only descriptor fails with EBADF
    with os.fdopen(fd, "rb", buffering=0) as raw:
        out = list(open_streams(raw, Limits()))
    assert [(type(o), o.reason) for o in out if isinstance(o, Problem)] == [(Problem, Reason.READ_ERROR)]
    assert not [o for o in out if isinstance(o, Stream)]
