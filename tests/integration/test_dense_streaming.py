"""Findings of a PAN-dense item travel in batches while it is scanned (engine, state,
sinks), and add up to exactly what one result holding them all would say."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from panscan.engine import local
from panscan.engine.local import LocalEngine
from panscan.engine.worker import STREAM_BATCH, WorkerContext
from panscan.match.luhn import check_digit
from panscan.model import Finding, Item, ItemResult, Status
from panscan.sources.files import WalkOptions, enumerate_files

KEY = b"s" * 32


def make_pan(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    return body + check_digit(body)


def dense_file(path: Path, lines: int, rng: random.Random, distinct: int | None = None) -> list[str]:
    """``lines`` lines of 17 bytes, each a card number (``distinct`` different ones, repeated)."""
    pool = [make_pan(rng) for _ in range(distinct or lines)]
    pans = pool if distinct is None else [rng.choice(pool) for _ in range(lines)]
    path.write_text("".join(f"{p}\n" for p in pans))
    return pans


def where(findings: list[Finding] | tuple[Finding, ...]) -> list[tuple[int, int, str]]:
    return sorted((f.offset, f.line, f.fingerprint) for f in findings)


def test_a_dense_item_split_into_ranges_streams_every_finding_once_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dense.txt"
    lines = 40_000  # 680 kB: ten 64 KiB ranges of ~3,800 findings each
    dense_file(path, lines, random.Random(7))
    item_list = list(enumerate_files([str(path)], WalkOptions()))
    with LocalEngine(WorkerContext(KEY), 1) as engine:
        [whole] = list(engine.run(item_list))
    assert (whole.status, len(whole.findings)) == (Status.COMPLETE, lines)
    assert [(f.offset, f.line) for f in whole.findings] == [(17 * n, n + 1) for n in range(lines)]

    batches: list[tuple[Item, tuple[Finding, ...]]] = []
    results: list[ItemResult] = []
    with LocalEngine(WorkerContext(KEY), 3, split_threshold=64 * 1024, range_size=64 * 1024) as engine:
        for result in engine.run(item_list, lambda item, batch: batches.append((item, batch))):
            results.append(result)
    [result] = results
    streamed = [f for _, batch in batches for f in batch]
    assert {item.location for item, _ in batches} == {str(path)}
    assert all(len(batch) <= STREAM_BATCH for _, batch in batches)
    assert result.status is Status.COMPLETE
    assert result.earlier_findings == len(streamed) > lines // 2
    assert result.findings_total == lines and result.to_record()["findings"] == lines
    assert where(streamed + list(result.findings)) == where(whole.findings)


def test_batches_of_a_range_that_waits_for_the_ranges_before_it_are_held_on_disk_in_order(
        tmp_path: Path, monkeypatch: Any) -> None:
    # One batch in memory, the rest in the spool file: a range that finishes before the one
    # before it still hands its findings over in order, with their lines.
    monkeypatch.setattr(local, "_HELD_IN_MEMORY", 1)
    spooled: list[int] = []
    real_add = local._Spool.add

    def add(self: local._Spool, batch: tuple[Finding, ...]) -> None:
        spooled.append(len(batch))
        real_add(self, batch)

    monkeypatch.setattr(local._Spool, "add", add)
    path = tmp_path / "dense.txt"
    lines = 30_000
    dense_file(path, lines, random.Random(8))
    item_list = list(enumerate_files([str(path)], WalkOptions()))
    handed: list[Finding] = []
    with LocalEngine(WorkerContext(KEY), 2, split_threshold=128 * 1024, range_size=128 * 1024) as engine:
        [result] = list(engine.run(item_list, lambda item, batch: handed.extend(batch)))
    everything = handed + list(result.findings)
    assert sorted((f.offset, f.line) for f in everything) == [(17 * n, n + 1) for n in range(lines)]
    # Every range's own batches come in offset order, whatever waited.
    by_range: dict[int, list[int]] = {}
    for f in handed:
        by_range.setdefault(f.offset // (128 * 1024), []).append(f.offset)
    assert all(offsets == sorted(offsets) for offsets in by_range.values())
    if not spooled:  # the ranges happened to finish in order; the spool is still exercised below
        spool = local._Spool()
        batches = [tuple(everything[i:i + 100]) for i in range(0, 1000, 100)]
        for batch in batches:
            spool.add(batch)
        assert list(spool.drain()) == batches
        assert list(spool.drain()) == []


def test_a_dense_item_interrupted_after_its_first_batches_is_partial_with_what_it_read(tmp_path: Path) -> None:
    path = tmp_path / "dense.txt"
    dense_file(path, 200_000, random.Random(12))  # 3.4 MB: four 1 MiB chunks
    handed: list[Finding] = []
    with LocalEngine(WorkerContext(KEY), 1) as engine:

        def stop_after_one(item: Item, batch: tuple[Finding, ...]) -> None:
            handed.extend(batch)
            engine.interrupt()

        [result] = list(engine.run(enumerate_files([str(path)], WalkOptions()), stop_after_one))
    assert (result.status, str(result.reason)) == (Status.PARTIAL, "INTERRUPTED")
    assert result.earlier_findings == len(handed) >= STREAM_BATCH
    assert 0 < result.bytes_scanned < path.stat().st_size
    assert result.to_record()["findings"] == len(handed)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_dense_item_across_sweeps_keeps_its_findings_still_present_and_resolves_the_removed_ones(
        tmp_path: Path) -> None:
    lines = 5 * STREAM_BATCH + 321
    data = tmp_path / "data"
    data.mkdir()
    path = data / "dump.txt"
    # Numbers repeat, so each one's occurrences are numbered across the batches (its fkey).
    pans = dense_file(path, lines, random.Random(9), distinct=700)
    state = tmp_path / "state.db"

    first = run_cli("scan", str(data), "--format", "jsonl", "--state", str(state), "--workers", "1")
    assert first.returncode == 1, first.stderr[-2000:]
    out = records(first.stdout)
    found = [r for r in out if r["type"] == "finding"]
    assert [(r["offset"], r["line"], r["change"]) for r in found] == [(17 * n, n + 1, "new") for n in range(lines)]
    assert [r["findings"] for r in out if r["type"] == "item"] == [lines]
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*), count(DISTINCT fkey) FROM sweep_findings").fetchone() == (lines, lines)
        assert db.execute("SELECT findings FROM results").fetchall() == [(lines,)]
        stored = "\n".join(str(row) for row in db.execute("SELECT * FROM sweep_findings"))
    assert not any(p in stored for p in pans)

    # Unchanged: not read again; its stored findings come back in batches, all still present.
    again = run_cli("scan", str(data), "--format", "jsonl", "--state", str(state), "--workers", "1")
    out = records(again.stdout)
    assert [(r["offset"], r["line"], r["change"]) for r in out if r["type"] == "finding"] == [
        (17 * n, n + 1, "still present") for n in range(lines)]
    [item] = [r for r in out if r["type"] == "item"]
    assert (item["findings"], item["unchanged_since_sweep"]) == (lines, 1)
    assert out[-1]["changes"]["unchanged_items"] == 1 and out[-1]["findings"]["total"] == lines
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(DISTINCT fkey) FROM sweep_findings WHERE sweep_id = 2").fetchone() == (lines,)
        assert db.execute("SELECT count(*) FROM results").fetchone() == (1,)  # the item is stored once
    replayed = run_cli("report", "--state", str(state), "--sweep", "2", "--format", "jsonl")
    assert replayed.stdout == again.stdout

    # Read again (its mtime moved): the same numbers are still present, none new.
    os.utime(path, (1_700_000_000, 1_700_000_000))
    second = run_cli("scan", str(data), "--format", "jsonl", "--state", str(state), "--workers", "1")
    changes = [r["change"] for r in records(second.stdout) if r["type"] == "finding"]
    assert changes == ["still present"] * lines

    # The last 1,500 lines removed: those are resolved, the rest still present.
    path.write_text("".join(f"{p}\n" for p in pans[:-1500]))
    third = run_cli("scan", str(data), "--format", "jsonl", "--state", str(state), "--workers", "1")
    out = records(third.stdout)
    assert [r["change"] for r in out if r["type"] == "finding"] == ["still present"] * (lines - 1500)
    assert sum(r["type"] == "resolved" for r in out) == 1500
    assert out[-1]["changes"]["resolved"] == 1500

    # The stored sweep replays (its findings read back in batches) as the scan reported it.
    replay = records(run_cli("report", "--state", str(state), "--format", "jsonl").stdout)
    assert sum(r["type"] == "finding" for r in replay) == lines - 1500
    assert [r["findings"] for r in replay if r["type"] == "item"] == [lines - 1500]
    assert [r for r in replay if r["type"] in ("finding", "item")] == [
        r for r in out if r["type"] in ("finding", "item")]
    assert replay[-1]["findings"] == out[-1]["findings"]


def test_every_report_format_counts_the_streamed_findings_of_a_dense_item(tmp_path: Path) -> None:
    lines = 3 * STREAM_BATCH + 5
    path = tmp_path / "dump.txt"
    dense_file(path, lines, random.Random(10))
    (tmp_path / "one.txt").write_text(f"card {make_pan(random.Random(11))}\n")
    html = run_cli("scan", str(tmp_path), "--format", "html", "--no-state", "--workers", "2")
    assert html.returncode == 1, html.stderr[-2000:]
    assert f"{lines + 1:,} findings in 2 items" in html.stdout
    csv = run_cli("scan", str(tmp_path), "--format", "csv", "--no-state", "--workers", "2")
    assert len(csv.stdout.splitlines()) == 1 + lines + 1  # header and one row per finding
    table = run_cli("scan", str(tmp_path), "--format", "table", "--no-state", "--workers", "2")
    assert f"Findings ({lines + 1})" in table.stdout
