"""Hostile containers, each scanned by the ``panscan`` command in a process of its own whose
wall time and peak memory are measured: bombs that overlap their members, lie about sizes,
nest, or hide bytes where no parser looks. Each must end in bounded time and memory with
the planted number reported or the item not ``complete``.

Peak RSS is the largest resident set of the scan's processes (see ``run_measured``); the
bound is the documented in-memory limits (spool and decoder memory, 256 MiB each by default)
held far below by the small limits each case sets, plus the interpreter.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import random
import struct
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_extract_archives import make_zip
from test_extract_coverage import overlapping_zip
from test_hostile_input import jsonl_records, make_pan, masked, of_type, run_measured

PAN = make_pan(random.Random(7))
LINE = f"payment card {PAN} approved\n".encode()
MiB = 2**20
PEAK_MIB = 200  # the interpreter, hyperscan and the scan's own buffers, with room to spare
SECONDS = 10  # the overlapping bomb took 14 s before overlaps were refused; 0.3 s now


def quoted_overlap(copies: int) -> bytes:
    """Members chained so that each one's stored data quotes the next one's header."""
    tail = LINE
    locals_: list[tuple[bytes, bytes]] = []
    data = tail
    for i in range(copies):
        name = b"q%03d" % i
        header = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data),
                             len(data), len(name), 0) + name
        locals_.append((name, data))
        data = header + data
    out = bytearray(data)
    central = bytearray()
    offset = 0
    for name, body in reversed(locals_):
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(body),
                               len(body), len(body), len(name), 0, 0, 0, 0, 0, offset) + name
        offset += 30 + len(name)
    cd_at = len(out)
    out += central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, copies, copies, len(central), cd_at, 0)
    return bytes(out)


def nested_gzip(levels: int) -> bytes:
    data = LINE
    for _ in range(levels):
        data = gzip.compress(data)
    return data


def gzip_endless_name() -> bytes:
    return b"\x1f\x8b\x08\x08" + bytes(6) + b"name-" * (3 * MiB // 5) + LINE


def tar_huge_pax() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.txt")
        info.pax_headers = {"comment": "x" * (900 * 1024) + LINE.decode()}
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def zstd_trailing() -> bytes:
    return zstandard.ZstdCompressor().compress(bytes(4 * MiB)) + b"garbage " + LINE


def bzip2_cut() -> bytes:
    return bz2.compress(LINE * 3)[:-4]


def zip_member_bad_crc() -> bytes:
    data = make_zip({"cards.csv": LINE})
    return data.replace(struct.pack("<I", zlib.crc32(LINE)), struct.pack("<I", zlib.crc32(LINE) ^ 1))


def rtf_bin_past_end() -> bytes:
    return b"{\\rtf1\\ansi text \\bin2000000000 " + LINE + b"}"


def pdf_flate_bomb() -> bytes:
    """A page whose content stream inflates to 1 GiB of spaces; the number sits in a comment."""
    deflate = zlib.compressobj(9)
    block = b" " * MiB
    packed = b"".join(deflate.compress(block) for _ in range(1024)) + deflate.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%" + LINE)
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % at for at in offsets)
    out += b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def docx_lookalike() -> bytes:
    return make_zip({"[Content_Types].xml": b"<?xml version='1.0'?><Types/>", "export/cards.csv": LINE})


CASES: dict[str, tuple[Callable[[], bytes], bool]] = {
    # name: (builder, whether the planted number must be reported: False = not required, but
    # then the item must not be complete)
    "overlapping-zip-bomb": (lambda: overlapping_zip(entries=4_000, kernel_size=8 * MiB), False),
    "quoted-overlap-zip-bomb": (lambda: quoted_overlap(300), True),
    "gzip-nested-past-the-depth-limit": (lambda: nested_gzip(20), False),
    "gzip-header-name-without-end": (gzip_endless_name, False),
    "tar-with-a-large-pax-header": (tar_huge_pax, True),
    "zstd-with-trailing-garbage": (zstd_trailing, True),
    "bzip2-cut-short": (bzip2_cut, True),
    "zip-member-with-a-bad-crc": (zip_member_bad_crc, True),
    "rtf-bin-past-the-end": (rtf_bin_past_end, True),
    "zip-that-looks-like-a-document": (docx_lookalike, True),
    "pdf-content-stream-bomb": (pdf_flate_bomb, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_container_ends_fast_in_bounded_memory_and_never_claims_complete_while_missing_the_number(
        tmp_path: Path, case: str) -> None:
    build, must_report = CASES[case]
    target = tmp_path / f"{case}.bin"
    target.write_bytes(build())
    run = run_measured("scan", str(target), "--workers", "1", "--no-state", "--format", "jsonl",
                       timeout=120)
    print(f"\n{case}: {target.stat().st_size} bytes, {run.seconds:.2f} s, peak {run.peak_rss_mib:.0f} MiB")
    assert run.code in (0, 1, 2), run.stderr
    records = jsonl_records(run.stdout)
    (item,) = of_type(records, "item")
    found = [f["masked"] for f in of_type(records, "finding")]
    assert PAN not in run.stdout and PAN not in run.stderr
    assert run.seconds < SECONDS, f"{case} took {run.seconds:.1f} s"
    assert run.peak_rss_mib < PEAK_MIB, f"{case} peaked at {run.peak_rss_mib:.0f} MiB"
    if must_report:
        assert masked(PAN) in found, json.dumps(item)
    else:
        assert masked(PAN) in found or item["status"] != "complete", json.dumps(item)
