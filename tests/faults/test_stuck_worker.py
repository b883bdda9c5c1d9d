"""A worker that never comes back from an item: the scan still ends, within a bound.

``max_item_seconds`` is checked by the worker between chunks; a worker stopped (SIGSTOP),
blocked in native code or waiting on a network read that never answers never reaches that
check. The coordinator enforces the deadline itself: it kills the worker, reports the item
as ``TIME_CUT_OFF_REACHED``, starts another worker and scans everything else.

Each test runs the real ``panscan`` command as a subprocess with ``max_item_seconds = 2`` in
its policy file and a timeout, so that a scan that hangs fails the test instead of hanging it.
"""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from cards import make_pan
from proxy import FaultProxy
from s3_server import MotoS3, moto_server, of_type, s3, versioned_bucket  # noqa: F401
from test_run_faults import _proxy_server, proxy  # noqa: F401 (fixtures)

from panscan.engine.local import DEADLINE_GRACE_SECONDS, LocalEngine
from panscan.engine.worker import TEST_STOP_ENV, WorkerContext
from panscan.extract.budget import Limits
from panscan.model import Reason, Status
from panscan.sources.files import WalkOptions, enumerate_files

ITEM_SECONDS = 2
# The coordinator stops a stuck worker after ITEM_SECONDS + DEADLINE_GRACE_SECONDS; the rest
# is start-up and the other files. A scan that waits for the stuck item never gets here.
BOUND_SECONDS = 30
# Past the bound: the scan is killed and the test fails.
HANG_SECONDS = 60
FILES = 20


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


def policy(tmp_path: Path) -> Path:
    path = tmp_path / "panscan.toml"
    path.write_text(f"[limits]\nmax_item_seconds = {ITEM_SECONDS}\n")
    return path


def planted_tree(root: Path, stuck_name: str) -> dict[str, str]:
    """FILES files with one number each, and ``stuck_name`` (with a number too) in their
    middle; the location of every planted file -> its number."""
    root.mkdir()
    rng = random.Random(16_9)
    planted = {}
    for i in range(FILES + 1):
        name = stuck_name if i == FILES // 2 else f"pay-{i:02d}.log"
        pan = make_pan("4539", 16, rng)
        (root / name).write_text(f"order {i}\ncard {pan} ok\n" + "filler line\n" * 200)
        planted[str(root / name)] = pan
    return planted


def run_scan(*args: str, env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str, float]:
    """``panscan scan ARGS --format jsonl --no-state`` in its own session; killed with all its
    workers (and the test failed) if it is still running after HANG_SECONDS."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "panscan", "scan", *args, "--format", "jsonl", "--no-state"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stopped worker too
        proc.communicate()
        pytest.fail(f"the scan hung: still running after {HANG_SECONDS} s")
    return proc.returncode, [json.loads(line) for line in out.splitlines()], err, time.monotonic() - started


def by_location(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["location"]: r for r in of_type(records, "item")}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stopped_worker_is_replaced_its_item_reported_and_every_other_item_scanned(
        tmp_path: Path, workers: str) -> None:
    planted = planted_tree(tmp_path / "data", "pay-stuck.log")
    stuck = str(tmp_path / "data" / "pay-stuck.log")

    code, records, stderr, took = run_scan(str(tmp_path / "data"), "--policy", str(policy(tmp_path)),
                                           "--workers", workers, env={TEST_STOP_ENV: "pay-stuck"})

    assert took < BOUND_SECONDS, stderr[-2000:]
    assert code == 1, stderr[-2000:]  # card data found wins over the incomplete item
    items = by_location(records)
    assert set(items) == set(planted) and len(of_type(records, "item")) == len(planted)
    hung = items.pop(stuck)
    assert (hung["status"], hung["reason"]) == ("error", "TIME_CUT_OFF_REACHED")
    assert "coordinator stopped the worker" in hung["detail"]
    assert f"max_item_seconds ({ITEM_SECONDS} s)" in hung["detail"]
    assert all(r["status"] == "complete" and r["findings"] == 1 for r in items.values()), items
    # Each other number exactly once (the items queued behind the stuck one were scanned once).
    found = Counter((f["location"], f["masked"]) for f in of_type(records, "finding"))
    assert found == Counter({(loc, masked(pan)): 1 for loc, pan in planted.items() if loc != stuck})
    summary = of_type(records, "summary")[0]
    assert summary["coverage"]["complete"] is False
    assert "TIME_CUT_OFF_REACHED" in stderr
    assert ITEM_SECONDS + DEADLINE_GRACE_SECONDS - 1 < took


@pytest.mark.timeout(HANG_SECONDS)  # the old engine waits for ever: fail instead
def test_a_large_file_whose_byte_ranges_get_stuck_is_one_item_reported_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(16_90)
    pans = [make_pan("5412", 16, rng) for _ in range(6)]
    for i, pan in enumerate(pans):
        (tmp_path / f"small-{i}.txt").write_text(f"card {pan}\n")
    (tmp_path / "big-stuck.log").write_bytes(b"filler line\n" * 50_000)  # 600 000 bytes: two ranges
    monkeypatch.setenv(TEST_STOP_ENV, "big-stuck")  # before the workers are forked
    ctx = WorkerContext(b"k" * 32, Limits(max_item_seconds=1))

    started = time.monotonic()
    with LocalEngine(ctx, 2, split_threshold=512 * 1024, range_size=300 * 1024) as engine:
        results = list(engine.run(enumerate_files([str(tmp_path)], WalkOptions())))

    assert time.monotonic() - started < BOUND_SECONDS
    by_loc = {r.item.location: r for r in results}
    assert len(results) == len(by_loc) == 7
    big = by_loc.pop(str(tmp_path / "big-stuck.log"))
    assert (big.status, big.reason) == (Status.ERROR, Reason.TIME_CUT_OFF_REACHED)
    assert big.detail is not None and "coordinator stopped the worker" in big.detail
    assert all(r.status is Status.COMPLETE for r in by_loc.values())
    assert sorted(r.findings[0].masked for r in by_loc.values()) == sorted(masked(p) for p in pans)


# --------------------------------------------------------------------------------------------
# A real hang: an S3 GetObject that the server holds for longer than the item may take (but
# shorter than the client's read timeout, so only the deadline can end the wait).

def test_a_worker_waiting_on_a_read_that_never_answers_is_stopped_and_a_clean_scan_exits_2(
        tmp_path: Path, proxy: FaultProxy, s3: MotoS3) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(FILES):
        (clean / f"notes-{i:02d}.txt").write_text(f"nothing to see in file {i}\n" * 50)
    c = versioned_bucket(s3, "hung")
    c.put_object(Bucket="hung", Key="export.csv", Body=b"id,card\n1,4111111111111111\n")
    proxy.delay_get(HANG_SECONDS - 10)

    code, records, stderr, took = run_scan(str(clean), "s3://hung", "--policy", str(policy(tmp_path)),
                                           "--workers", "2", env={})

    assert took < BOUND_SECONDS, stderr[-2000:]
    assert code == 2, stderr[-2000:]  # nothing found, coverage incomplete
    items = by_location(records)
    hung = items.pop("s3://hung/export.csv")
    assert (hung["status"], hung["reason"]) == ("error", "TIME_CUT_OFF_REACHED")
    assert "coordinator stopped the worker" in hung["detail"]
    assert len(items) == FILES and all(r["status"] == "complete" for r in items.values()), items
    assert not of_type(records, "finding")
    assert of_type(records, "summary")[0]["coverage"]["complete"] is False
    assert [s.key for s in proxy.arrived] == ["export.csv"]  # it did reach the server, and hung there
