"""Hostile containers: bombs, lying headers, deep nesting, too many members, slow items.

Each must finish quickly in bounded memory, end with the right reason, and keep the
numbers found before the limit. Built in the test with generated Luhn-valid numbers.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

from test_extract_archives import PANS, make_tar, make_zip, scan, text

from panscan.config import parse_policy
from panscan.engine.worker import WorkerContext, scan_task
from panscan.extract.budget import RATIO_GRACE_BYTES, Limits
from panscan.model import Item, Reason, Status, Task

MiB = 2**20


def zeros_zip(name: str, size: int) -> bytes:
    """A zip holding ``size`` zero bytes as ``name``, written without holding them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w", force_zip64=True) as out:
        block = bytes(MiB)
        for _ in range(size // MiB):
            out.write(block)
    return buf.getvalue()


def recursive_bomb(layers: int, copies: int, leaf_size: int) -> bytes:
    """42.zip in small: ``copies`` copies of the layer below, ``layers`` deep, over a leaf
    of ``leaf_size`` zeros; ``cards.csv`` (PANS[0]) sits beside the first layer."""
    layer = zeros_zip("zeros.bin", leaf_size)
    for depth in range(layers):
        layer = make_zip({f"l{depth}-{i}.zip": layer for i in range(copies)})
    return make_zip({"cards.csv": text(PANS[0]), "bomb.zip": layer})


def test_recursive_zip_bomb_finishes_fast_in_bounded_memory_and_keeps_earlier_findings() -> None:
    bomb = recursive_bomb(layers=3, copies=16, leaf_size=64 * MiB)  # 256 TiB nominal
    assert len(bomb) < 2 * MiB
    limits = Limits(max_expanded_bytes=96 * MiB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = scan(bomb, limits, chunk_size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 30
    assert peak < 24 * MiB, f"peak {peak} bytes"
    assert result.found == [("cards.csv", PANS[0])]
    # Each leaf trips the ratio limit past the grace bytes (its own branch), until the
    # item's expansion budget is spent and everything stops.
    assert result.reasons[-1] is Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT
    assert set(result.reasons) <= {Reason.ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT,
                                   Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT}
    assert result.meter.bytes_expanded == limits.max_expanded_bytes


def test_ratio_limit_stops_one_member_and_the_next_members_are_still_scanned() -> None:
    data = make_zip({"zeros.bin": bytes(RATIO_GRACE_BYTES + 8 * MiB), "after.csv": text(PANS[1])})
    result = scan(data, Limits(max_ratio=100.0), chunk_size=MiB)
    assert [(p.member, p.reason) for p in result.problems] == [
        ("zeros.bin", Reason.ARCHIVE_COMPRESSION_RATIO_OVER_LIMIT)]
    assert result.found == [("after.csv", PANS[1])]


def test_ten_megabyte_gzip_expanding_past_the_limit_stops_exactly_there() -> None:
    payload = text(PANS[2]) + os.urandom(10 * MiB)  # incompressible: a 10 MB gzip
    blob = gzip.compress(payload, compresslevel=1)
    assert len(blob) > 10 * 10**6
    limits = Limits(max_expanded_bytes=4 * MiB)
    result = scan(blob, limits, chunk_size=MiB)
    assert result.reasons == [Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT]
    assert result.found == [(None, PANS[2])]
    assert result.meter.bytes_expanded == 4 * MiB
    assert result.meter.bytes_in < len(blob)  # stopped reading soon after the limit


def patch_sizes(data: bytes, name: str, *, usize: int | None = None, csize: int | None = None) -> bytes:
    """Rewrite member ``name``'s declared sizes in its local and central headers."""
    out = bytearray(data)
    raw = name.encode()
    for sig, name_at, csize_at in ((b"PK\x03\x04", 30, 18), (b"PK\x01\x02", 46, 20)):
        at = out.find(sig)
        while at >= 0:
            length = struct.unpack_from("<H", out, at + name_at - 4 if sig == b"PK\x03\x04" else at + 28)[0]
            if bytes(out[at + name_at:at + name_at + length]) == raw:
                if csize is not None:
                    struct.pack_into("<I", out, at + csize_at, csize)
                if usize is not None:
                    struct.pack_into("<I", out, at + csize_at + 4, usize)
            at = out.find(sig, at + 4)
    return bytes(out)


def test_zip_headers_understating_sizes_do_not_hide_data_and_limits_count_what_is_produced() -> None:
    member = text(PANS[3]) + text(size=2 * MiB) + text(PANS[4])
    after = text(PANS[5])
    data = make_zip({"big.csv": member, "after.csv": after})
    for lying in (patch_sizes(data, "big.csv", usize=4096), patch_sizes(data, "big.csv", csize=200)):
        result = scan(lying)
        # Deflate data ends itself: all of it is produced, counted, scanned, then reported.
        assert result.found == [("big.csv", PANS[3]), ("big.csv", PANS[4]), ("after.csv", PANS[5])]
        assert [(p.member, p.reason) for p in result.problems] == [("big.csv", Reason.MALFORMED_FILE)]
        assert result.meter.bytes_expanded == len(member) + len(after)
        # ...and the expansion limit holds on those produced bytes, whatever the header says.
        capped = scan(lying, Limits(max_expanded_bytes=MiB))
        assert capped.reasons == [Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT]
        assert capped.found == [("big.csv", PANS[3])]
        assert capped.meter.bytes_expanded == MiB


def test_zip_header_overstating_size_still_stops_at_the_bytes_actually_produced() -> None:
    # The header claims 2 GB; the data is a zero bomb: the limit holds on produced bytes.
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb_data = comp.compress(text(PANS[6])) + b"".join(comp.compress(bytes(MiB)) for _ in range(64)) + comp.flush()
    data = make_zip({"bomb.bin": b"placeholder", "after.csv": text(PANS[7])}, zipfile.ZIP_STORED)
    # Swap the stored placeholder for the deflated bomb, then claim sizes to match.
    at = data.index(b"placeholder")
    data = data[:at] + bomb_data + data[at + len(b"placeholder"):]
    shift = len(bomb_data) - len(b"placeholder")
    out = bytearray(data)
    struct.pack_into("<H", out, 8, zipfile.ZIP_DEFLATED)  # local header: method
    cd = out.index(b"PK\x01\x02")
    struct.pack_into("<H", out, cd + 10, zipfile.ZIP_DEFLATED)
    second_cd = out.index(b"PK\x01\x02", cd + 4)
    struct.pack_into("<I", out, second_cd + 42, struct.unpack_from("<I", out, second_cd + 42)[0] + shift)
    eocd = out.rindex(b"PK\x05\x06")
    struct.pack_into("<I", out, eocd + 16, struct.unpack_from("<I", out, eocd + 16)[0] + shift)
    data = patch_sizes(bytes(out), "bomb.bin", usize=2_000_000_000, csize=len(bomb_data))
    limits = Limits(max_expanded_bytes=8 * MiB)
    result = scan(data, limits, chunk_size=MiB)
    assert result.found == [("bomb.bin", PANS[6])]  # found before the limit
    assert result.reasons == [Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT]
    assert result.meter.bytes_expanded == 8 * MiB


def nested_levels(levels: int) -> bytes:
    data = make_zip({f"level{levels - 1}.csv": text(PANS[levels - 1])})
    for level in reversed(range(levels - 1)):
        data = make_zip({f"level{level}.csv": text(PANS[level]), "next.zip": data,
                         "after.csv": text() if level else text(PANS[11])})
    return data


def test_archive_nested_deeper_than_the_limit_stops_that_branch_and_keeps_the_rest() -> None:
    result = scan(nested_levels(6), Limits(max_archive_depth=3))
    assert [(p.member, p.reason) for p in result.problems] == [
        ("next.zip/next.zip/next.zip", Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT)]
    assert result.found == [("level0.csv", PANS[0]), ("next.zip/level1.csv", PANS[1]),
                            ("next.zip/next.zip/level2.csv", PANS[2]), ("after.csv", PANS[11])]
    assert scan(nested_levels(6)).problems == []  # the default depth reaches them all


def test_compressed_layers_count_towards_the_depth() -> None:
    # A gzip quine-like chain: each gzip layer is a container level of its own.
    data = text(PANS[8])
    for _ in range(5):
        data = gzip.compress(data)
    result = scan(data, Limits(max_archive_depth=3))
    assert result.reasons == [Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT]
    assert result.found == []
    assert scan(data).found == [(None, PANS[8])]


def test_member_limit_stops_the_item_after_the_members_allowed() -> None:
    members = {f"m{i:02}.csv": text(PANS[i % 10]) for i in range(30)}
    result = scan(make_tar(members), Limits(max_members=10))
    assert result.reasons == [Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT]
    assert [m for m, _ in result.found] == [f"m{i:02}.csv" for i in range(10)]
    # A zip declaring more members than allowed is refused before its directory is parsed.
    result = scan(make_zip(members), Limits(max_members=10))
    assert result.reasons == [Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT]


def test_container_too_large_to_spool_is_scanned_raw() -> None:
    inner = make_zip({"cards.csv": text(PANS[9]) + os.urandom(2 * MiB)}, zipfile.ZIP_STORED)
    result = scan(gzip.compress(inner, compresslevel=1), Limits(max_spool_bytes=MiB), seekable=False)
    assert result.reasons == [Reason.FILE_EXCEEDS_SIZE_LIMIT]
    assert result.found == [(None, PANS[9])]  # stored member text found in the raw bytes


def test_time_limit_ends_the_item_and_keeps_what_was_found() -> None:
    members = {f"m{i:03}.csv": text(PANS[i % 10]) for i in range(200)}
    from panscan.extract.expand import Problem, open_streams

    seen: list[str | None] = []
    problems: list[Problem] = []
    for out in open_streams(io.BytesIO(make_tar(members, "w:gz")), Limits(max_item_seconds=0.3), 4096):
        if isinstance(out, Problem):
            problems.append(out)
            continue
        seen.append(out.member)
        for _ in out.chunks:
            time.sleep(0.01)
    assert [p.reason for p in problems] == [Reason.TIME_CUT_OFF_REACHED]
    assert 0 < len(seen) < 200


def test_worker_marks_a_bomb_partial_with_its_reason_and_keeps_findings(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(recursive_bomb(layers=2, copies=8, leaf_size=32 * MiB))
    item = Item(str(path), "file", size=path.stat().st_size, inode=path.stat().st_ino)
    ctx = WorkerContext(key=b"k" * 32, limits=Limits(max_expanded_bytes=48 * MiB))
    result = scan_task(Task(item), ctx).result
    assert (result.status, result.reason) == (Status.PARTIAL, Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT)
    assert [(f.member, f.masked) for f in result.findings] == [("cards.csv", PANS[0][:6] + "******" + PANS[0][-4:])]
    assert result.bytes_scanned > 0
    assert result.detail is not None and "more problem" in result.detail


def test_limits_including_the_spool_bound_are_read_from_the_policy() -> None:
    policy = parse_policy('[limits]\nmax_spool_bytes = "64MiB"\nmax_members = 50\nmax_archive_depth = 4\n')
    assert policy.limits.max_spool_bytes == 64 * MiB
    assert (policy.limits.max_members, policy.limits.max_archive_depth) == (50, 4)


def test_large_mail_attachment_is_not_mistaken_for_a_compression_bomb() -> None:
    # The mail handler parses the whole message before its first part: the ratio must be
    # judged per container, not per part (which would see 20 MiB made from nothing).
    import io
    import os
    from email.message import EmailMessage

    from panscan.extract.budget import Limits, Meter
    from panscan.extract.expand import Problem, open_streams

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "export"
    msg.set_content("see attachment")
    msg.add_attachment(os.urandom(20 << 20), maintype="application", subtype="octet-stream",
                       filename="big.bin")
    seen = []
    for s in open_streams(io.BytesIO(msg.as_bytes()), Limits(), 1 << 20, Meter()):
        seen.append(s.reason if isinstance(s, Problem) else (s.member, sum(len(c) for c in s.chunks)))
    assert ("attachment: big.bin", 20 << 20) in seen
    assert not any(isinstance(x, str) and x.startswith("ARCHIVE") for x in seen)
