"""Archives and nested containers through open_streams and the real StreamScanner.

Every container is built here, in memory or in tmp_path, with generated Luhn-valid numbers;
each test asserts the exact member path of each number and that it is found once.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import struct
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard
from cards import make_pan

from panscan.extract.budget import Limits, Meter
from panscan.extract.expand import Problem, Stream, open_streams
from panscan.extract.sniff import MAGIC_LEN, Format, sniff, zip_flavour
from panscan.match.matcher import StreamScanner
from panscan.match.patterns import load_patterns
from panscan.model import Reason

RNG = random.Random(3)
PANS = [make_pan("4", 16, random.Random(i)) for i in range(12)]


@dataclass
class Scan:
    found: list[tuple[str | None, str]]  # (member, digits) per hit, in order
    problems: list[Problem]
    streams: list[str | None]
    meter: Meter

    @property
    def reasons(self) -> list[Reason]:
        return [p.reason for p in self.problems]


class Unseekable(io.RawIOBase):
    """A pipe-like reader: what an S3 body or a Glacier download looks like."""

    def __init__(self, data: bytes, step: int = 7_777) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step  # short reads, as sockets give

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def scan(data: bytes | BinaryIO, limits: Limits | None = None, chunk_size: int = 1 << 16,
         seekable: bool = True) -> Scan:
    """Expand ``data`` and scan each stream with a fresh StreamScanner, as the worker does."""
    if isinstance(data, bytes):
        raw: BinaryIO = io.BytesIO(data) if seekable else Unseekable(data)  # type: ignore[assignment]
    else:
        raw = data
    patterns = load_patterns()
    meter = Meter()
    found: list[tuple[str | None, str]] = []
    problems: list[Problem] = []
    streams: list[str | None] = []
    for out in open_streams(raw, limits or Limits(), chunk_size, meter):
        if isinstance(out, Problem):
            problems.append(out)
            continue
        assert isinstance(out, Stream)
        streams.append(out.member)
        scanner = StreamScanner(patterns)
        for chunk in out.chunks:
            assert isinstance(chunk, bytes) and 0 < len(chunk) <= chunk_size
            found += [(out.member, h.digits) for h in scanner.feed(chunk)]
        found += [(out.member, h.digits) for h in scanner.finish()]
    return Scan(found, problems, streams, meter)


def text(*pans: str, size: int = 2_000) -> bytes:
    """CSV-ish text holding ``pans`` (with filler so members are not trivially small)."""
    rows = [f"row,{i},amount,{RNG.randrange(10**6)}" for i in range(size // 24)]
    for k, pan in enumerate(pans):
        rows.insert((k + 1) * len(rows) // (len(pans) + 1), f"card,{pan},ok")
    return ("\n".join(rows) + "\n").encode()


def make_zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], mode: str = "w", extras: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if extras:
            for name, kind, target in [("link-to-secret", tarfile.SYMTYPE, "/etc/shadow"),
                                       ("hard", tarfile.LNKTYPE, next(iter(members))),
                                       ("fifo", tarfile.FIFOTYPE, ""), ("dev", tarfile.CHRTYPE, ""),
                                       ("dir", tarfile.DIRTYPE, "")]:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = target
                tf.addfile(info)
    return buf.getvalue()


# ------------------------------------------------------------------------------ sniffing

def test_sniff_recognises_container_and_document_magic() -> None:
    assert sniff(make_zip({"a.txt": b"x"})) is Format.ZIP
    assert sniff(make_zip({})) is Format.ZIP  # an empty zip starts with its end record
    assert sniff(make_tar({"a.txt": b"x"})) is Format.TAR
    assert sniff(make_tar({"a.txt": b"x"}, "w:gz")) is Format.GZIP
    assert sniff(zstandard.ZstdCompressor().compress(b"x")) is Format.ZSTD
    assert sniff(b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(24)) is Format.SEVEN_ZIP
    assert sniff(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)) is Format.OLE2
    assert sniff(b"junk before the header\n%PDF-1.7\n") is Format.PDF
    assert sniff(b"{\\rtf1\\ansi hello}") is Format.RTF
    assert sniff(b"From: a@example.com\nTo: b@example.com\nSubject: hi\n\nbody\n") is Format.EMAIL
    assert sniff(b"From alice@example.com Thu Jan  1 00:00:00 2024\nFrom: a@x\nDate: today\n\nb\n") is Format.EMAIL


def test_text_that_merely_looks_like_a_container_is_scanned_as_text() -> None:
    assert sniff(b"PK is a pair of letters\n") is Format.RAW
    assert sniff(b"Subject: this note is not an email\nit has one header-like line only\n") is Format.RAW
    assert sniff(b"Status: ok\nSubject: x\n\n") is Format.RAW  # needs two mail headers...
    assert sniff(b"Subject: x\nDate: today\n\n") is Format.EMAIL  # ...such as these
    # ustar at offset 257 without a valid header checksum is not a tar
    fake = bytearray(1024)
    fake[257:262] = b"ustar"
    assert sniff(bytes(fake)) is Format.RAW
    assert sniff(b"x" * 2000 + b"%PDF-") is Format.RAW  # past the 1024-byte window
    assert MAGIC_LEN >= 1024


def test_zip_flavour_tells_office_and_opendocument_from_plain_zip() -> None:
    def flavour(data: bytes) -> Format:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zip_flavour(zf)

    assert flavour(make_zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"})) is Format.OOXML
    odt = make_zip({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
                   zipfile.ZIP_STORED)
    assert flavour(odt) is Format.ODF
    assert flavour(make_zip({"mimetype": b"text/plain", "a": b"b"})) is Format.ZIP
    assert flavour(make_zip({"a.csv": b"1,2"})) is Format.ZIP


# ------------------------------------------------------------------------------ archives

@pytest.mark.parametrize("seekable", [True, False])
def test_zip_members_are_scanned_with_their_paths(seekable: bool) -> None:
    data = make_zip({"cards.csv": text(PANS[0]), "sub/dir/more.txt": text(PANS[1], PANS[2]),
                     "empty/": b"", "clean.txt": text()})
    result = scan(data, seekable=seekable)
    assert result.problems == []
    assert result.found == [("cards.csv", PANS[0]), ("sub/dir/more.txt", PANS[1]), ("sub/dir/more.txt", PANS[2])]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:xz", "w:bz2"])
@pytest.mark.parametrize("seekable", [True, False])
def test_tar_and_compressed_tar_members_are_scanned_and_links_and_devices_are_not_read(
        mode: str, seekable: bool) -> None:
    data = make_tar({"exports/cards.csv": text(PANS[0]), "notes.txt": text(PANS[1])}, mode, extras=True)
    result = scan(data, seekable=seekable)
    assert result.problems == []
    assert result.found == [("exports/cards.csv", PANS[0]), ("notes.txt", PANS[1])]
    # no stream for links, FIFO, device, dir; the headers (names, owners) are scanned raw
    assert result.streams == ["exports/cards.csv", "notes.txt", "(tar headers)"]


def test_tar_with_long_names_and_pax_headers_keeps_the_full_member_path() -> None:
    long_dir = "/".join(["very-long-directory-name"] * 8)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = text(PANS[3])
        info = tarfile.TarInfo(f"{long_dir}/café.csv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    gnu = io.BytesIO()
    with tarfile.open(fileobj=gnu, mode="w", format=tarfile.GNU_FORMAT) as tf:
        data = text(PANS[4])
        info = tarfile.TarInfo(f"{long_dir}/gnu.csv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert scan(buf.getvalue()).found == [(f"{long_dir}/café.csv", PANS[3])]
    assert scan(gnu.getvalue()).found == [(f"{long_dir}/gnu.csv", PANS[4])]


def test_zstd_item_and_zstd_tar_are_decoded() -> None:
    z = zstandard.ZstdCompressor()
    single = scan(z.compress(text(PANS[0], size=300_000)))
    assert (single.found, single.problems) == ([(None, PANS[0])], [])
    tar = scan(z.compress(make_tar({"a/b.csv": text(PANS[1])})), seekable=False)
    assert (tar.found, tar.problems) == ([("a/b.csv", PANS[1])], [])


def nested_backup() -> bytes:
    inner = make_zip({"cards.csv": text(PANS[0]), "clean.csv": text()})
    q1 = make_zip({"inner.zip": inner, "summary.txt": text(PANS[1])})
    logs = gzip.compress(text(PANS[2]))
    return make_tar({"exports/q1.zip": q1, "logs/app.log.gz": logs, "readme.txt": text(PANS[3])}, "w:gz")


@pytest.mark.parametrize("seekable", [True, False])
def test_zip_in_zip_in_tar_gz_is_found_three_deep_with_the_exact_member_path(seekable: bool) -> None:
    result = scan(nested_backup(), seekable=seekable)
    assert result.problems == []
    assert sorted(result.found) == sorted([
        ("exports/q1.zip/inner.zip/cards.csv", PANS[0]),
        ("exports/q1.zip/summary.txt", PANS[1]),
        ("logs/app.log.gz", PANS[2]),  # a decompression layer adds no segment
        ("readme.txt", PANS[3]),
    ])


def test_a_gzip_of_a_zip_is_unpacked_from_memory() -> None:
    result = scan(gzip.compress(make_zip({"x/cards.csv": text(PANS[5])})), seekable=False)
    assert (result.found, result.problems) == ([("x/cards.csv", PANS[5])], [])


def set_encrypted(data: bytes, name: str, local: bool = True, central: bool = True) -> bytes:
    """Set the 'encrypted' flag bit of member ``name`` (zipfile cannot write encrypted zips)."""
    out = bytearray(data)
    raw_name = name.encode()
    if local:
        at = out.find(b"PK\x03\x04" + b"\x00" * 0)
        while at >= 0:
            name_len = struct.unpack_from("<H", out, at + 26)[0]
            if bytes(out[at + 30:at + 30 + name_len]) == raw_name:
                out[at + 6] |= 0x01
            at = out.find(b"PK\x03\x04", at + 4)
    if central:
        at = out.find(b"PK\x01\x02")
        while at >= 0:
            name_len = struct.unpack_from("<H", out, at + 28)[0]
            if bytes(out[at + 46:at + 46 + name_len]) == raw_name:
                out[at + 8] |= 0x01
            at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


@pytest.mark.parametrize(("local", "central"), [(True, True), (True, False), (False, True)])
def test_encrypted_zip_member_is_invalid_encryption_and_the_other_members_are_scanned(
        local: bool, central: bool) -> None:
    data = set_encrypted(make_zip({"plain.csv": text(PANS[0]), "secret.csv": text(PANS[1]),
                                   "after.csv": text(PANS[2])}), "secret.csv", local, central)
    result = scan(data)
    assert [(p.member, p.reason) for p in result.problems] == [("secret.csv", Reason.INVALID_ENCRYPTION)]
    assert result.found == [("plain.csv", PANS[0]), ("after.csv", PANS[2])]


def test_seven_zip_is_unsupported_and_its_raw_bytes_are_still_scanned() -> None:
    data = b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(24) + b"stored header text " + PANS[4].encode() + b"\n"
    result = scan(data)
    assert result.reasons == [Reason.UNSUPPORTED_FILE_TYPE]
    assert result.found == [(None, PANS[4])]
    nested = scan(make_zip({"old/backup.7z": data}))
    assert [(p.member, p.reason) for p in nested.problems] == [("old/backup.7z", Reason.UNSUPPORTED_FILE_TYPE)]
    assert nested.found == [("old/backup.7z", PANS[4])]


def test_legacy_office_ole2_is_scanned_raw_and_its_utf16_text_is_found() -> None:
    # A .doc keeps its text as UTF-16LE inside an OLE2 compound file: no parser is needed,
    # the matcher's UTF-16 views find it in the raw bytes.
    body = ("Customer card " + PANS[5] + " on file").encode("utf-16-le")
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + body + bytes(512)
    assert sniff(data) is Format.OLE2 and not Format.OLE2.is_container
    result = scan(data)
    assert (result.found, result.problems) == ([(None, PANS[5])], [])


def truncate(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


@pytest.mark.parametrize("seekable", [True, False])
def test_truncated_zip_is_malformed_and_members_before_the_cut_are_still_found(seekable: bool) -> None:
    data = make_zip({"first.csv": text(PANS[0]), "second.csv": text(PANS[1]),
                     "big.bin": os.urandom(200_000)})
    result = scan(truncate(data, 0.6), seekable=seekable)
    assert Reason.MALFORMED_FILE in result.reasons
    assert result.found == [("first.csv", PANS[0]), ("second.csv", PANS[1])]  # read from local headers


def test_truncated_tar_gz_is_malformed_and_members_before_the_cut_are_kept() -> None:
    data = make_tar({"first.csv": text(PANS[0]), "noise.bin": os.urandom(300_000),
                     "last.csv": text(PANS[1])}, "w:gz")
    result = scan(truncate(data, 0.5))
    assert result.reasons == [Reason.MALFORMED_FILE]  # reported once, though the tar is cut too
    assert result.found == [("first.csv", PANS[0])]


def test_unreadable_zip_is_malformed_and_its_raw_bytes_are_scanned() -> None:
    # A zip signature with garbage after it: no member can be read, so the bytes are scanned as they are.
    data = b"PK\x03\x04" + b"\xff" * 26 + b" stored text " + PANS[6].encode() + b"\n"
    result = scan(data)
    assert result.reasons == [Reason.MALFORMED_FILE]
    assert result.found == [(None, PANS[6])]


def test_bad_tar_header_is_malformed_and_what_follows_is_scanned_raw() -> None:
    data = bytearray(make_tar({"a.csv": text(PANS[0]), "b.csv": text(PANS[1])}))
    second = data.find(b"b.csv")
    data[second + 148:second + 156] = b"0000000\0"  # wrong checksum on the second header
    result = scan(bytes(data))
    assert [(p.member, p.reason) for p in result.problems] == [(None, Reason.MALFORMED_FILE)]
    assert result.found == [("a.csv", PANS[0]), (None, PANS[1])]


def test_single_compressed_item_keeps_member_none_and_each_format_decodes() -> None:
    payload = text(PANS[7])
    for blob in (gzip.compress(payload), bz2.compress(payload), lzma.compress(payload),
                 zstandard.ZstdCompressor().compress(payload)):
        result = scan(blob)
        assert (result.found, result.problems) == ([(None, PANS[7])], [])


# ------------------------------------------------------------------------------ end to end

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ})


def test_cli_reports_members_three_deep_and_partial_items_with_their_reason(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "backup.tar.gz").write_bytes(nested_backup())
    (root / "locked.zip").write_bytes(set_encrypted(make_zip({"open.csv": text(PANS[8]),
                                                              "secret.csv": text(PANS[9])}), "secret.csv"))
    proc = run_cli("scan", str(root), "--format", "jsonl", "--no-state", "--workers", "1")
    assert proc.returncode == 1, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    findings = {(Path(r["location"]).name, r["member"], r["masked"]) for r in records if r["type"] == "finding"}
    masked = [p[:6] + "******" + p[-4:] for p in PANS]
    assert findings == {
        ("backup.tar.gz", "exports/q1.zip/inner.zip/cards.csv", masked[0]),
        ("backup.tar.gz", "exports/q1.zip/summary.txt", masked[1]),
        ("backup.tar.gz", "logs/app.log.gz", masked[2]),
        ("backup.tar.gz", "readme.txt", masked[3]),
        ("locked.zip", "open.csv", masked[8]),
    }
    items = {Path(r["location"]).name: r for r in records if r["type"] == "item"}
    assert (items["backup.tar.gz"]["status"], items["backup.tar.gz"]["reason"]) == ("complete", None)
    assert (items["locked.zip"]["status"], items["locked.zip"]["reason"]) == ("partial", "INVALID_ENCRYPTION")
    assert "secret.csv" in items["locked.zip"]["detail"]
    assert items["backup.tar.gz"]["bytes_scanned"] == (root / "backup.tar.gz").stat().st_size
    for pan in PANS:
        assert pan not in proc.stdout and pan not in proc.stderr
