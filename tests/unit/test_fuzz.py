"""The fuzz targets in fuzz/ still run (each one-input function on its seeds), the plain driver
reports a failing input as a hex file, and the bugs the fuzzers found stay fixed.

Fuzzing itself is not part of the test run: ``python benchmarks/fuzz.py --seconds 60``.
"""

from __future__ import annotations

import importlib
import io
import struct
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from panscan.extract.budget import ExtractError, Limits
from panscan.extract.expand import Problem, Stream, open_streams
from panscan.match.matcher import MAX_CARRY, StreamScanner, scan_bytes
from panscan.model import Reason
from panscan.selftest import zip_bytes

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"


def target(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


@pytest.mark.parametrize("name", ["fuzz_matcher", "fuzz_extract"])
def test_each_fuzz_target_accepts_its_seeds_without_a_failure(name: str) -> None:
    module = target(name)
    seeds = module.seeds()
    assert len(seeds) >= 8
    started = time.monotonic()
    for data in seeds:
        module.one_input(data)
    module.one_input(b"")
    assert time.monotonic() - started < 30


def test_the_matcher_target_fails_when_chunked_and_whole_scans_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    module = target("fuzz_matcher")
    real = module.chunked
    monkeypatch.setattr(module, "chunked", lambda payload, style: real(payload, style)[1:])  # one hit lost
    with pytest.raises(AssertionError, match="differs from the whole scan"):
        module.one_input(module.seeds()[0])


def test_the_plain_driver_saves_a_failing_input_as_hex_and_fails(tmp_path: Path) -> None:
    driver = target("driver")

    def fragile(data: bytes) -> None:
        if b"boom" in data:
            raise ValueError("found it")

    prefix = str(tmp_path / "art" / "t-")
    code = driver.fuzz_plain("t", fragile, [b"fine", b"xx boom xx"], seconds=5, seed=1, timeout=5, runs=None,
                             prefix=prefix, max_len=1024)
    assert code == 1
    [hexed] = (tmp_path / "art").glob("t-crash-*.hex")
    assert driver.read_input(hexed) == b"xx boom xx"

    def hangs(data: bytes) -> None:
        time.sleep(5)

    assert driver.fuzz_plain("h", hangs, [b"x"], seconds=5, seed=1, timeout=0.2, runs=None, prefix=prefix,
                             max_len=1024) == 1
    assert list((tmp_path / "art").glob("t-timeout-*.hex"))
    assert driver.fuzz_plain("ok", lambda data: None, [b"a", b"b"], seconds=1, seed=1, timeout=1, runs=50,
                             prefix=prefix, max_len=64) == 0


# --- regressions found by fuzzing ------------------------------------------------------------


def test_a_spaced_numeric_dump_longer_than_the_carry_bound_reports_each_number_once() -> None:
    copies = 10_000
    payload = b"4111 1111 1111 1111 " * copies  # 200 kB, no line break: one run of 40,000 groups
    assert len(payload) > 3 * MAX_CARRY
    expected = [20 * i for i in range(copies)]
    assert [h.offset for h in scan_bytes(payload)] == expected
    for size in (70_000, 4096, 65_537):
        scanner = StreamScanner()
        hits = [h for i in range(0, len(payload), size) for h in scanner.feed(payload[i:i + size])]
        assert [h.offset for h in hits + scanner.finish()] == expected, size


def _outcomes(data: bytes) -> tuple[list[tuple[str | None, bytes]], list[Problem]]:
    streams, problems = [], []
    try:
        for out in open_streams(io.BytesIO(data), Limits(), 4096):
            if isinstance(out, Stream):
                streams.append((out.member, b"".join(out.chunks)))
            else:
                problems.append(out)
    except ExtractError as exc:
        problems.append(Problem(None, exc.reason, exc.detail))
    return streams, problems


def test_a_zip_whose_end_record_points_past_its_directory_is_malformed_not_an_internal_error() -> None:
    data = bytearray(zip_bytes([("cards.txt", b"card 4111 1111 1111 1111\n")]))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<I", data, end + 16, struct.unpack_from("<I", data, end + 16)[0] + 100)

    _, problems = _outcomes(bytes(data))

    assert [p.reason for p in problems] == [Reason.MALFORMED_FILE]


def test_a_zip_needing_an_unknown_version_is_read_from_its_local_headers() -> None:
    data = bytearray(zip_bytes([("cards.txt", b"card 4111 1111 1111 1111\n")]))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, central + 6, 127)  # "version 12.7"

    streams, problems = _outcomes(bytes(data))

    # the member from its local header, then the whole zip raw: its parser failed, so what
    # it did not read is still scanned
    assert streams == [("cards.txt", b"card 4111 1111 1111 1111\n"), (None, bytes(data))]
    assert [p.reason for p in problems] == [Reason.MALFORMED_FILE]
