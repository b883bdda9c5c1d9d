"""Every byte seen, or the item says why: containers whose bytes no parser accounts for.

Each test builds the hostile or odd file itself, scans it through the worker as a scan
does (so a backstop pass and its de-duplication are part of what is tested), and checks
that the number in it is reported or that the item is not ``complete``. The last test
places a number at random positions in valid containers of every format panscan reads.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from cards import make_pan

from panscan.engine.worker import WorkerContext, scan_task
from panscan.extract.budget import Limits
from panscan.findings.mask import mask_digits
from panscan.model import Item, Reason, Status, Task
from panscan.selftest import samples

PANS = [make_pan("4", 16, random.Random(100 + i)) for i in range(8)]


@dataclass
class Outcome:
    status: Status
    reason: Reason | None
    found: list[tuple[str | None, str]]  # (member, masked)

    def has(self, pan: str, member: str | None = ...) -> bool:  # type: ignore[assignment]
        return any(m == mask_digits(pan) and (member is ... or at == member) for at, m in self.found)


def scan_bytes(tmp_path: Path, data: bytes, name: str = "item.bin", limits: Limits | None = None) -> Outcome:
    path = tmp_path / name
    path.write_bytes(data)
    st = path.stat()
    item = Item(str(path), "file", size=st.st_size, inode=st.st_ino, device=st.st_dev)
    result = scan_task(Task(item), WorkerContext(key=b"k" * 32, limits=limits or Limits())).result
    return Outcome(result.status, result.reason, [(f.member, f.masked) for f in result.findings])


def line(pan: str) -> bytes:
    return f"payment card {pan} approved\n".encode()


def filler(n: int = 200) -> bytes:
    rng = random.Random(n)
    return "".join(f"row {i} amount {rng.randrange(10**6)}\n" for i in range(n)).encode()


# -- decoded text kept when a decoder fails ------------------------------------------------


def test_gzip_with_a_bad_crc_reports_the_number_in_its_text_and_is_partial(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(filler(20) + line(PANS[0])))
    data[-8] ^= 0xFF  # the CRC-32 in the trailer
    out = scan_bytes(tmp_path, bytes(data))
    assert out.has(PANS[0], None)
    assert (out.status, out.reason) == (Status.PARTIAL, Reason.MALFORMED_FILE)


def test_gzip_cut_at_its_end_reports_the_decoded_number(tmp_path: Path) -> None:
    out = scan_bytes(tmp_path, gzip.compress(filler(20) + line(PANS[0]))[:-6])
    assert out.has(PANS[0], None)
    assert (out.status, out.reason) == (Status.PARTIAL, Reason.MALFORMED_FILE)


def test_gzip_corrupt_midway_reports_the_text_inflated_before_the_corruption(tmp_path: Path) -> None:
    text = line(PANS[0]) + random.Random(1).randbytes(300_000)
    data = bytearray(gzip.compress(text, compresslevel=1))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    out = scan_bytes(tmp_path, bytes(data))
    assert out.has(PANS[0], None)
    assert out.status is Status.PARTIAL


def test_bzip2_cut_short_reports_the_decoded_number(tmp_path: Path) -> None:
    out = scan_bytes(tmp_path, bz2.compress(filler(20) + line(PANS[1]))[:-4])
    assert out.has(PANS[1], None)
    assert (out.status, out.reason) == (Status.PARTIAL, Reason.MALFORMED_FILE)


def test_zstd_with_trailing_garbage_reports_the_number_before_and_after_it(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor().compress(filler(20) + line(PANS[2])) + b"\x00junk " + line(PANS[3])
    out = scan_bytes(tmp_path, data)
    assert out.has(PANS[2], None)
    assert out.has(PANS[3], "(after the zstd data)")
    assert out.status is Status.COMPLETE


def test_truncated_zstd_is_partial_not_complete(tmp_path: Path) -> None:
    text = line(PANS[2]) + random.Random(2).randbytes(400_000)
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    data = compressor.compress(text) + compressor.flush()
    out = scan_bytes(tmp_path, data[:-3000])
    assert (out.status, out.reason) == (Status.PARTIAL, Reason.MALFORMED_FILE)
    assert out.has(PANS[2], None)  # the blocks before the cut were decoded and scanned
    one_frame = zstandard.ZstdCompressor().compress(filler(20) + line(PANS[2]))
    assert scan_bytes(tmp_path, one_frame[:-5]).status is Status.PARTIAL


def test_small_zip_member_with_a_bad_crc_reports_its_number(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cards.csv", line(PANS[4]))
    data = buf.getvalue()
    crc = struct.pack("<I", zlib.crc32(line(PANS[4])))
    data = data.replace(crc, struct.pack("<I", zlib.crc32(line(PANS[4])) ^ 1))
    out = scan_bytes(tmp_path, data)
    assert out.has(PANS[4], "cards.csv")
    assert (out.status, out.reason) == (Status.PARTIAL, Reason.MALFORMED_FILE)


# -- bytes outside members -------------------------------------------------------------------


def test_text_appended_to_a_gzip_is_scanned_raw(tmp_path: Path) -> None:
    out = scan_bytes(tmp_path, gzip.compress(filler()) + line(PANS[0]))
    assert out.found == [("(after the gzip data)", mask_digits(PANS[0]))]
    assert out.status is Status.COMPLETE


def test_zip_appended_to_a_gzip_is_expanded(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner.csv", filler() + line(PANS[1]))
    out = scan_bytes(tmp_path, gzip.compress(filler()) + buf.getvalue())
    assert out.has(PANS[1], "(after the gzip data)/inner.csv")


def gzip_with_header(name: bytes, comment: bytes, extra: bytes, body: bytes) -> bytes:
    flags = 0x04 | 0x08 | 0x10
    header = b"\x1f\x8b\x08" + bytes([flags]) + bytes(6)
    header += struct.pack("<H", len(extra)) + extra + name + b"\0" + comment + b"\0"
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = deflate.compress(body) + deflate.flush()
    return header + raw + struct.pack("<II", zlib.crc32(body), len(body))


def test_gzip_header_name_comment_and_extra_field_are_scanned(tmp_path: Path) -> None:
    data = gzip_with_header(f"export-{PANS[0]}.csv".encode(), line(PANS[1]), b"XX" + line(PANS[2]), filler())
    assert gzip.decompress(data) == filler()  # a valid gzip
    out = scan_bytes(tmp_path, data)
    assert out.has(PANS[0], "(gzip file name)")
    assert out.has(PANS[1], "(gzip comment)")
    assert out.has(PANS[2], "(gzip extra field)")
    assert out.status is Status.COMPLETE


def test_zip_comments_and_appended_data_are_scanned(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("notes.txt")
        info.comment = line(PANS[1])
        zf.writestr(info, filler())
        zf.comment = line(PANS[0])
    out = scan_bytes(tmp_path, buf.getvalue() + line(PANS[3]))
    assert out.has(PANS[0], "(zip structure)")  # the archive comment
    assert out.has(PANS[1], "(zip structure)")  # a member comment
    assert out.has(PANS[3], "(after the zip data)")
    assert out.status is Status.COMPLETE


def test_zip_member_names_are_scanned_once(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"receipts/{PANS[0]}.txt", filler())
    out = scan_bytes(tmp_path, buf.getvalue())
    # the name sits in the local header and again in the central directory: one finding
    assert out.found == [("(zip structure)", mask_digits(PANS[0]))]


def test_tar_pax_headers_names_and_appended_data_are_scanned(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        body = filler()
        info = tarfile.TarInfo(f"receipts/{PANS[0]}.txt")
        info.size = len(body)
        info.pax_headers = {"comment": line(PANS[1]).decode()}
        tf.addfile(info, io.BytesIO(body))
    out = scan_bytes(tmp_path, buf.getvalue() + line(PANS[2]))
    assert out.has(PANS[0], "(tar headers)")
    assert out.has(PANS[1], "(tar headers)")
    assert out.has(PANS[2], "(after the tar data)")
    assert out.status is Status.COMPLETE


def test_tar_entry_of_an_unknown_type_has_its_data_scanned(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        body = filler(5) + line(PANS[4])
        info = tarfile.TarInfo("volume")
        info.type = b"Q"  # no tar defines it: its data is not skipped unseen
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    out = scan_bytes(tmp_path, buf.getvalue())
    assert out.has(PANS[4], "volume")


# -- parsers that return nothing ----------------------------------------------------------


def pdf_with_unreadable_content(text: bytes) -> bytes:
    """A PDF whose page content stream has a /Length that refers to its own object."""
    content = b"BT /F1 12 Tf 72 700 Td (" + text + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
        b"<< /Length 4 0 R >>\nstream\n" + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % at for at in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_whose_content_stream_cannot_be_read_still_has_its_bytes_scanned(tmp_path: Path) -> None:
    out = scan_bytes(tmp_path, pdf_with_unreadable_content(f"card {PANS[5]}".encode()))
    assert out.has(PANS[5])


def test_rtf_bin_past_the_end_does_not_swallow_the_rest(tmp_path: Path) -> None:
    data = b"{\\rtf1\\ansi hello \\bin999999 " + line(PANS[6]) + b"}"
    assert scan_bytes(tmp_path, data).has(PANS[6])


def test_a_number_in_parsed_pdf_text_and_in_its_raw_bytes_is_reported_once(tmp_path: Path) -> None:
    pdf = pdf_with_unreadable_content(b"x").replace(b"/Length 4 0 R", b"/Length 52")
    content = b"BT /F1 12 Tf 72 700 Td (" + f"card {PANS[7]}".encode() + b") Tj ET"
    pdf = pdf.replace(b"BT /F1 12 Tf 72 700 Td (x) Tj ET", content).replace(b"/Length 52",
                                                                             b"/Length %d" % len(content))
    out = scan_bytes(tmp_path, pdf)
    assert [m for _, m in out.found] == [mask_digits(PANS[7])]


# -- overlapping zip entries --------------------------------------------------------------


def overlapping_zip(entries: int, kernel_size: int) -> bytes:
    """``entries`` central directory entries that all point at one member's data: the
    overlapping-files zip bomb in small."""
    body = bytes(kernel_size)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = deflate.compress(body) + deflate.flush()
    crc = zlib.crc32(body)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(packed), len(body), 1, 0)
    out = bytearray(local + b"k" + packed)
    central = bytearray()
    for i in range(entries):
        name = b"f%05d" % i
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(packed),
                               len(body), len(name), 0, 0, 0, 0, 0, 0) + name
    cd_at = len(out)
    out += central
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries, len(central), cd_at, 0)
    return bytes(out)


def quoted_overlap_zip(kernel: bytes) -> bytes:
    """Two members where the first one's declared data runs over the second one's header."""
    second_body = kernel
    local2 = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(second_body),
                         len(second_body), len(second_body), 1, 0) + b"b" + second_body
    first_body = local2  # stored: member 1's data *is* member 2's header and data
    local1 = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(first_body),
                         len(first_body), len(first_body), 1, 0) + b"a"
    out = bytearray(local1 + first_body)
    offsets = [(b"a", 0, first_body), (b"b", len(local1), second_body)]
    central = bytearray()
    for name, at, body in offsets:
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(body),
                               len(body), len(body), len(name), 0, 0, 0, 0, 0, at) + name
    cd_at = len(out)
    out += central
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 2, 2, len(central), cd_at, 0)
    return bytes(out)


@pytest.mark.parametrize("kind", ["overlap", "quoted"])
def test_overlapping_zip_entries_are_refused_fast_in_bounded_memory(tmp_path: Path, kind: str) -> None:
    if kind == "overlap":
        data = overlapping_zip(entries=2_000, kernel_size=20 * 2**20)  # ~40 GB declared
    else:
        data = quoted_overlap_zip(filler() + line(PANS[0]))
    assert len(data) < 200_000
    started = time.monotonic()
    tracemalloc.start()
    try:
        out = scan_bytes(tmp_path, data, "bomb.zip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 10
    assert peak < 64 * 2**20, f"peak {peak} bytes"
    assert (out.status, out.reason) == (Status.PARTIAL, Reason.MALFORMED_FILE)
    if kind == "quoted":
        assert out.has(PANS[0])  # the container's raw bytes are still scanned


# -- a number anywhere in a valid container -------------------------------------------------


def _containers() -> dict[str, bytes]:
    body = filler(60)
    zips = {}
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            zf.writestr("a.csv", body)
            zf.writestr("b/c.txt", body[:900])
        zips[f"zip-{method}"] = buf.getvalue()
    tars = {}
    for mode in ("w", "w:gz"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
            for name, data in (("a.csv", body), ("b/c.txt", body[:900])):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        tars[f"tar-{mode}"] = buf.getvalue()
    return {
        "gzip": gzip.compress(body),
        "bzip2": bz2.compress(body),
        "xz": lzma.compress(body),
        # as the zstd tool writes it: with a content checksum (a frame without one cannot
        # show that its bytes were altered, and decodes them to other text)
        "zstd": zstandard.ZstdCompressor(write_checksum=True).compress(body),
        **zips,
        **tars,
        "pdf": pdf_with_unreadable_content(b"hello").replace(b"/Length 4 0 R", b"/Length 46"),
        "rtf": b"{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}\\f0 " + body[:2000].replace(b"\n", b"\\par ") + b"}",
        "email": b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 + __import__("base64").encodebytes(body[:3000]),
    }


CONTAINERS = _containers()


@pytest.mark.parametrize("fmt", sorted(CONTAINERS))
def test_a_number_placed_anywhere_in_a_container_is_reported_or_the_item_is_not_complete(
        tmp_path: Path, fmt: str) -> None:
    data = CONTAINERS[fmt]
    rng = random.Random(fmt)
    pan = PANS[7]
    planted = f" {pan} ".encode()
    positions = sorted({rng.randrange(len(data) + 1) for _ in range(24)} | {0, len(data)})
    misses = []
    for at in positions:
        for how in ("insert", "overwrite"):
            if how == "insert":
                hostile = data[:at] + planted + data[at:]
            else:
                hostile = data[:at] + planted + data[at + len(planted):]
            out = scan_bytes(tmp_path, hostile, f"{fmt}.bin")
            if out.status is Status.COMPLETE and not out.has(pan):
                misses.append((how, at))
    assert misses == [], f"{fmt}: complete without the number at {misses} (of {len(data)} bytes)"


SELFTEST = {sample.name: sample.data for sample in samples()}


@pytest.mark.parametrize("fmt", sorted(SELFTEST))
def test_a_number_placed_anywhere_in_each_self_test_format_is_reported_or_the_item_is_not_complete(
        tmp_path: Path, fmt: str) -> None:
    # Every format panscan reads has a self-test sample: the same property over each of them.
    data = SELFTEST[fmt]
    rng = random.Random(f"selftest {fmt}")
    planted = f" {PANS[6]} ".encode()
    misses = []
    for at in sorted({rng.randrange(len(data) + 1) for _ in range(12)} | {0, len(data)}):
        for hostile in (data[:at] + planted + data[at:], data[:at] + planted + data[at + len(planted):]):
            out = scan_bytes(tmp_path, hostile, "sample.bin")
            if out.status is Status.COMPLETE and not out.has(PANS[6]):
                misses.append(at)
    assert misses == [], f"{fmt}: complete without the number at {misses} (of {len(data)} bytes)"


def test_zstd_frames_without_a_checksum_have_their_raw_bytes_scanned_as_well(tmp_path: Path) -> None:
    # Without a content checksum an altered byte decodes to other text and nothing says so:
    # a number written into the compressed bytes is still found (once).
    text = filler(40)
    plain = zstandard.ZstdCompressor(write_checksum=False).compress(text)
    at = len(plain) // 2
    hostile = plain[:at] + f" {PANS[5]} ".encode() + plain[at + 18:]
    out = scan_bytes(tmp_path, hostile)
    assert out.status is not Status.COMPLETE or out.has(PANS[5])
    clean = scan_bytes(tmp_path, zstandard.ZstdCompressor().compress(text + line(PANS[4])))
    assert clean.found == [(None, mask_digits(PANS[4]))]
