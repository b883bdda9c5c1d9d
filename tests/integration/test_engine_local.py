"""The local engine on real files: pool, crash handling, byte ranges, backpressure, logs."""

from __future__ import annotations

import gzip
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from panscan.engine import worker
from panscan.engine.local import PREFETCH, LocalEngine, merge_parts
from panscan.engine.worker import TEST_CRASH_ENV, TaskResult, WorkerContext
from panscan.match.luhn import check_digit
from panscan.model import Finding, Item, ItemResult, Reason, Status, Task
from panscan.sources.files import WalkOptions, enumerate_files

KEY = b"k" * 32


def make_pan(rng: random.Random, prefix: str = "4", length: int = 16) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + check_digit(body)


def scan(paths: list[Path], workers: int = 2, **kwargs: int) -> dict[str, ItemResult]:
    with LocalEngine(WorkerContext(KEY), workers, **kwargs) as engine:
        results = list(engine.run(enumerate_files([str(p) for p in paths], WalkOptions())))
    return {r.item.location: r for r in results}


def positions(result: ItemResult) -> list[tuple[int, int, str, str]]:
    return [(f.offset, f.line, f.masked, f.fingerprint) for f in result.findings]


def test_every_item_gets_exactly_one_result_and_source_decisions_pass_through(tmp_path: Path) -> None:
    rng = random.Random(1)
    for i in range(25):
        (tmp_path / f"f{i}.txt").write_text(f"line\norder {make_pan(rng)} paid\n" if i % 5 == 0 else "plain\n")
    os.mkfifo(tmp_path / "pipe")
    results = scan([tmp_path], workers=3)
    assert len(results) == 26
    assert results[str(tmp_path / "pipe")].reason is Reason.NOT_REGULAR_FILE
    with_findings = [r for r in results.values() if r.findings]
    assert len(with_findings) == 5
    assert all(r.status is Status.COMPLETE and r.findings[0].offset == 11 and r.findings[0].line == 2
               for r in with_findings)


def test_sigkilled_worker_turns_only_its_item_into_worker_crashed_and_the_scan_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2)
    pan = make_pan(rng)
    for i in range(12):
        (tmp_path / f"ok{i}.txt").write_text(f"card {pan}\n")
    (tmp_path / "crash-me.txt").write_text(f"card {pan}\n")
    monkeypatch.setenv(TEST_CRASH_ENV, "crash-me")
    results = scan([tmp_path], workers=2)
    crashed = results[str(tmp_path / "crash-me.txt")]
    assert (crashed.status, crashed.reason) == (Status.ERROR, Reason.WORKER_CRASHED)
    assert "SIGKILL" in (crashed.detail or "")
    others = [r for loc, r in results.items() if "crash-me" not in loc]
    assert len(others) == 12
    assert all(r.status is Status.COMPLETE and len(r.findings) == 1 for r in others)


def _big_text_file(path: Path, rng: random.Random, size: int, boundaries: list[int]) -> list[int]:
    """A text file of about ``size`` bytes with PANs planted on and near ``boundaries`` and at
    random places; returns the planted offsets."""
    data = bytearray()
    while len(data) < size:
        data += (f"{rng.randrange(10**6)} log line id={rng.randrange(10**12)}\n").encode()
    planted = []
    spots = sorted({b + d for b in boundaries for d in (-20, -9, -1, 0, 3)} | {rng.randrange(size) for _ in range(40)})
    for spot in spots:
        if 0 < spot < size - 40:
            pan = make_pan(rng).encode()
            text = b" " + pan[:4] + b" " + pan[4:8] + b" " + pan[8:12] + b" " + pan[12:] + b" "
            if rng.random() < 0.5:
                text = b" " + pan + b"\n"
            data[spot:spot + len(text)] = text
            planted.append(spot)
    path.write_bytes(bytes(data[:size]))
    return planted


def test_large_file_split_into_ranges_gives_the_same_findings_offsets_and_lines_as_one_task(
        tmp_path: Path) -> None:
    rng = random.Random(3)
    range_size = 256 * 1024
    path = tmp_path / "big.log"
    _big_text_file(path, rng, 3 * 1024 * 1024 + 777, [k * range_size for k in range(1, 13)])
    whole = scan([path], workers=1)[str(path)]
    split = scan([path], workers=3, split_threshold=512 * 1024, range_size=range_size)[str(path)]
    assert whole.status is Status.COMPLETE and split.status is Status.COMPLETE
    assert len(whole.findings) > 40
    assert positions(split) == positions(whole)
    assert split.bytes_scanned == whole.bytes_scanned == path.stat().st_size
    # And the lines are real line numbers.
    text = path.read_bytes()
    assert all(f.line == text.count(b"\n", 0, f.offset) + 1 for f in split.findings)


def test_compressed_file_over_the_split_threshold_is_scanned_whole_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(4)
    pan = make_pan(rng)
    noise = rng.randbytes(2 * 1024 * 1024)  # incompressible: the .gz stays over the threshold
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(noise + f"\ncard {pan}\n".encode() + noise))
    result = scan([path], workers=3, split_threshold=1024 * 1024, range_size=256 * 1024)[str(path)]
    assert result.status is Status.COMPLETE
    assert [f.masked for f in result.findings if f.offset == len(noise) + 6] == [pan[:6] + "******" + pan[-4:]]
    assert result.bytes_scanned == path.stat().st_size


def test_small_items_travel_to_workers_and_back_many_per_message(tmp_path: Path) -> None:
    rng = random.Random(7)
    planted = set()
    for d in range(50):
        sub = tmp_path / f"d{d:02d}"
        sub.mkdir()
        for i in range(100):
            pan = make_pan(rng) if i == 42 else None
            (sub / f"f{i:03d}.log").write_text(f"2026-11-02 INFO order={d * 100 + i} paid\n"
                                               + (f"card {pan}\n" if pan else ""))
            if pan:
                planted.add(str(sub / f"f{i:03d}.log"))
    with LocalEngine(WorkerContext(KEY), 2) as engine:
        results = list(engine.run(enumerate_files([str(tmp_path)], WalkOptions())))
        sent, received = engine.messages_sent, engine.messages_received
    assert len(results) == 5000 and len({r.item.location for r in results}) == 5000
    assert all(r.status is Status.COMPLETE for r in results)
    assert {r.item.location for r in results if r.findings} == planted
    # One message per item each way would be 5,000: batches carry many.
    assert sent <= 5000 // 20, f"{sent} messages to workers for 5,000 items"
    assert received <= 5000 // 20, f"{received} messages from workers for 5,000 items"


def test_worker_killed_mid_batch_reports_only_its_item_crashed_and_every_other_item_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Results travel in batches, so the oldest unanswered task is not the one a worker died
    # on: items finished but not yet sent, and those queued behind, are scanned again.
    rng = random.Random(8)
    pan = make_pan(rng)
    for i in range(600):
        (tmp_path / f"f{i:03d}.txt").write_text(f"card {pan}\n" if i % 3 == 0 else "plain\n")
    (tmp_path / "f300-crash-me.txt").write_text(f"card {pan}\n")
    monkeypatch.setenv(TEST_CRASH_ENV, "crash-me")
    with LocalEngine(WorkerContext(KEY), 1) as engine:
        results = list(engine.run(enumerate_files([str(tmp_path)], WalkOptions())))
    locations = [r.item.location for r in results]
    assert len(locations) == 601 and len(set(locations)) == 601
    [crashed] = [r for r in results if "crash-me" in r.item.location]
    assert (crashed.status, crashed.reason) == (Status.ERROR, Reason.WORKER_CRASHED)
    others = [r for r in results if "crash-me" not in r.item.location]
    assert all(r.status is Status.COMPLETE for r in others)
    assert sum(len(r.findings) for r in others) == 200


def test_items_are_pulled_lazily_from_the_source(tmp_path: Path) -> None:
    target = tmp_path / "one.txt"
    target.write_text("nothing here\n")
    pulled = 0

    def source() -> Iterator[Item]:
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield Item(str(target), "file", size=target.stat().st_size, inode=target.stat().st_ino)

    with LocalEngine(WorkerContext(KEY), 2) as engine:
        results = engine.run(source())
        next(results)
        assert pulled <= 2 * PREFETCH + 2
        assert sum(1 for _ in results) == 9_999


def _boom_opener(item: Item) -> object:
    raise RuntimeError(f"secret content {item.location}")


def test_unexpected_worker_exception_is_reported_by_type_only_and_its_log_reaches_the_coordinator(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(worker._OPENERS, "boom", _boom_opener)  # type: ignore[arg-type]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.processName} {record.getMessage()}")

    log = logging.getLogger("panscan")
    handler = Collect()
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        with LocalEngine(WorkerContext(KEY), 2) as engine:
            (result,) = engine.run([Item("/nowhere/x", "boom")])
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert (result.status, result.reason) == (Status.ERROR, Reason.READ_ERROR)
    assert result.detail == "internal error (RuntimeError)"
    assert any("panscan-worker" in r and "RuntimeError" in r for r in records)
    assert not any("secret content" in r for r in records)


def _slow_opener(item: Item) -> object:
    time.sleep(60)
    raise AssertionError("not reached")


def test_interrupt_reports_unfinished_items_as_interrupted_and_stops_quickly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(worker._OPENERS, "slow", _slow_opener)  # type: ignore[arg-type]
    done = tmp_path / "done.txt"
    done.write_text("x\n")
    items = [Item(str(done), "file", size=2, inode=done.stat().st_ino)] + [
        Item(f"/slow/{i}", "slow") for i in range(6)]
    t0 = time.monotonic()
    with LocalEngine(WorkerContext(KEY), 2) as engine:
        out = []
        for r in engine.run(items):
            out.append(r)
            if r.item.location == str(done):
                engine.interrupt()
    assert time.monotonic() - t0 < 20
    slow = [r for r in out if r.item.source == "slow"]
    assert slow and all(r.reason is Reason.INTERRUPTED for r in slow)
    assert len(out) <= 7


def _finding(offset: int, line: int) -> Finding:
    from panscan.model import Confidence, Kind
    return Finding("/f", None, None, None, offset, line, Kind.PAN, "Visa", "411111******1111", "ab",
                   Confidence.HIGH, True)


def test_merge_continues_line_numbers_across_ranges_and_keeps_the_worst_status() -> None:
    item = Item("/f", "file", size=300)
    parts = [
        TaskResult(Task(item, 0, 100), ItemResult(item, Status.COMPLETE, None, None, 100, (_finding(5, 2),)), 7),
        TaskResult(Task(item, 100, 200), ItemResult(item, Status.COMPLETE, None, None, 100, (_finding(150, 3),)), 4),
        TaskResult(Task(item, 200, 300), ItemResult(item, Status.ERROR, Reason.WORKER_CRASHED, "died")),
    ]
    merged = merge_parts(parts)
    assert [(f.offset, f.line) for f in merged.findings] == [(5, 2), (150, 10)]
    assert (merged.status, merged.reason, merged.bytes_scanned) == (Status.ERROR, Reason.WORKER_CRASHED, 200)
