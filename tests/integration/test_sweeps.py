"""Repeated sweeps with a state database, against the moto server and real files: a sweep
over unchanged data reads nothing again and reports every finding as still present; deleted
and added versions show as resolved and new; a sweep killed with SIGKILL is resumed without
reading twice or reporting twice; ``panscan report`` renders stored sweeps."""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from s3_server import MotoS3, moto_server, of_type, s3, scan, versioned_bucket  # noqa: F401

from panscan.match.luhn import check_digit


def pan(n: int) -> str:
    body = f"4556{n:011d}"
    return body + check_digit(body)


def masked(number: str) -> str:
    return number[:6] + "******" + number[-4:]


def changes(records: list[dict[str, Any]]) -> dict[str, str]:
    return {f["masked"]: f["change"] for f in of_type(records, "finding")}


def test_a_second_sweep_of_an_unchanged_bucket_reads_nothing_and_finds_everything_still_present(
        s3: MotoS3, tmp_path: Path) -> None:
    c = versioned_bucket(s3, "sweeps")
    first = c.put_object(Bucket="sweeps", Key="a.csv", Body=f"card {pan(1)}\n".encode())["VersionId"]
    c.put_object(Bucket="sweeps", Key="a.csv", Body=f"card {pan(2)}\n".encode())
    c.put_object(Bucket="sweeps", Key="b.txt", Body=f"card {pan(3)}\n".encode())
    state = str(tmp_path / "state" / "state.db")

    code, records, err = scan("s3://sweeps", state=state)
    assert code == 1, err
    assert changes(records) == {masked(pan(i)): "new" for i in (1, 2, 3)}
    assert len(s3.get_object_requests("sweeps")) == 3
    assert of_type(records, "summary")[0]["sweep_id"] == 1

    s3.requests.clear()
    code, records, err = scan("s3://sweeps", state=state)
    assert code == 1, err
    assert s3.get_object_requests("sweeps") == []
    assert changes(records) == {masked(pan(i)): "still present" for i in (1, 2, 3)}
    assert {r["unchanged_since_sweep"] for r in of_type(records, "item")} == {1}
    summary = of_type(records, "summary")[0]
    assert summary["changes"] | {"previous_sweep": 1} == {
        "previous_sweep": 1, "new": 0, "still_present": 3, "resolved": 0, "unverified": 0, "unchanged_items": 3}

    # A deleted version: its finding is resolved. A new version: its finding is new.
    c.delete_object(Bucket="sweeps", Key="a.csv", VersionId=first)
    c.put_object(Bucket="sweeps", Key="c.log", Body=f"card {pan(4)}\n".encode())
    s3.requests.clear()
    code, records, err = scan("s3://sweeps", state=state)
    assert code == 1, err
    assert [r.path for r in s3.get_object_requests("sweeps")] == ["/sweeps/c.log"]
    assert changes(records) == {masked(pan(2)): "still present", masked(pan(3)): "still present",
                                masked(pan(4)): "new"}
    [resolved] = of_type(records, "resolved")
    assert (resolved["masked"], resolved["version_id"], resolved["change"]) == (masked(pan(1)), first, "resolved")
    assert of_type(records, "summary")[0]["changes"]["resolved"] == 1


def test_changing_the_pattern_set_rescans_everything(s3: MotoS3, tmp_path: Path) -> None:
    c = versioned_bucket(s3, "repattern")
    c.put_object(Bucket="repattern", Key="a.csv", Body=f"card {pan(5)}\n".encode())
    state = tmp_path / "state.db"
    assert scan("s3://repattern", state=str(state))[0] == 1
    # What a new pattern set looks like to the state: the version the items were scanned with.
    with sqlite3.connect(state) as db:
        db.execute("UPDATE patterns SET version = 'an older pattern set'")
    s3.requests.clear()
    code, records, err = scan("s3://repattern", state=str(state))
    assert code == 1, err
    assert len(s3.get_object_requests("repattern")) == 1
    assert changes(records) == {masked(pan(5)): "still present"}


def test_files_are_read_again_only_when_size_mtime_or_inode_change(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "same.txt").write_text(f"card {pan(6)}\n")
    touched = root / "touched.txt"
    touched.write_text(f"card {pan(7)}\n")
    state = str(tmp_path / "state.db")

    def run() -> list[dict[str, Any]]:
        proc = subprocess.run([sys.executable, "-m", "panscan", "scan", str(root), "--state", state,
                               "--format", "jsonl", "--workers", "1"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]

    run()
    os.utime(touched, (time.time() - 3600, time.time() - 3600))
    items = {Path(r["location"]).name: r for r in of_type(run(), "item")}
    assert items["same.txt"]["unchanged_since_sweep"] == 1
    assert items["touched.txt"]["unchanged_since_sweep"] is None and items["touched.txt"]["bytes_scanned"] > 0


def test_a_sweep_killed_half_way_is_resumed_without_reading_or_reporting_anything_twice(
        s3: MotoS3, tmp_path: Path) -> None:
    versioned_bucket(s3, "killed")
    total = 300
    for i in range(total):
        s3.put_directly("killed", f"k{i:03d}.txt", f"card {pan(100 + i)}\n".encode())
    state = tmp_path / "state.db"
    proc = subprocess.Popen([sys.executable, "-m", "panscan", "scan", "s3://killed", "--state", str(state),
                             "--format", "jsonl", "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while recorded_items(state) < total // 4:
            assert proc.poll() is None, "the scan finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    # GETs the killed scan had in flight may still reach the server's log (many are in flight
    # per worker): they belong to the killed run, not the rerun.
    settled, last = time.monotonic(), len(s3.requests)
    while time.monotonic() - settled < 0.5:
        time.sleep(0.05)
        if len(s3.requests) != last:
            settled, last = time.monotonic(), len(s3.requests)
    with sqlite3.connect(state) as db:
        done = {row[0] for row in db.execute("SELECT location FROM results WHERE stored_in = 1")}
    assert 0 < len(done) < total
    read_before = {r.path for r in s3.get_object_requests("killed")}

    s3.requests.clear()
    code, records, err = scan("s3://killed", state=str(state))
    assert code == 1, err
    read_after = [r.path for r in s3.get_object_requests("killed")]
    # Each remaining item is read exactly once, and nothing recorded by the killed sweep again.
    assert len(read_after) == len(set(read_after)) == total - len(done)
    assert not {f"/killed/{loc.rsplit('/', 1)[1]}" for loc in done} & set(read_after)
    assert read_before | set(read_after) >= {f"/killed/k{i:03d}.txt" for i in range(total)}
    findings = of_type(records, "finding")
    assert sorted(f["masked"] for f in findings) == sorted(masked(pan(100 + i)) for i in range(total))
    assert "interrupted" in err
    assert of_type(records, "summary")[0]["changes"]["previous_sweep"] is None  # the killed one is not complete


def recorded_items(state: Path) -> int:
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet, or busy
        return 0


def test_report_renders_a_stored_sweep_like_the_scan_did_and_jobs_lists_nothing_pending(
        tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text(f"card {pan(9)}\n")
    state = str(tmp_path / "state.db")
    scanned = subprocess.run([sys.executable, "-m", "panscan", "scan", str(root), "--state", state,
                              "--format", "jsonl"], capture_output=True, text=True, timeout=120)
    assert scanned.returncode == 1, scanned.stderr
    report = subprocess.run([sys.executable, "-m", "panscan", "report", "--state", state, "--format", "jsonl"],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 1, report.stderr
    assert report.stdout == scanned.stdout

    missing = subprocess.run([sys.executable, "-m", "panscan", "report", "--state", state, "--sweep", "7"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 3 and "no sweep 7" in missing.stderr
    jobs = subprocess.run([sys.executable, "-m", "panscan", "jobs", "--state", state],
                          capture_output=True, text=True, timeout=60)
    assert (jobs.returncode, jobs.stdout) == (0, "No pending restores or Glacier jobs.\n")
    nothing = subprocess.run([sys.executable, "-m", "panscan", "report", "--state", str(tmp_path / "none.db")],
                             capture_output=True, text=True, timeout=60)
    assert nothing.returncode == 3 and "no state database" in nothing.stderr
    assert not (tmp_path / "none.db").exists()


def test_restores_are_recorded_listed_by_jobs_and_cleared_once_a_later_sweep_reads_the_copies(
        s3: MotoS3, tmp_path: Path) -> None:
    c = versioned_bucket(s3, "cold-state")
    c.put_object(Bucket="cold-state", Key="2019/export.csv", Body=f"card {pan(11)}\n".encode(),
                 StorageClass="GLACIER")
    c.put_object(Bucket="cold-state", Key="2018/export.csv", Body=b"nothing\n", StorageClass="DEEP_ARCHIVE")
    state = str(tmp_path / "state.db")

    def jobs() -> tuple[int, list[dict[str, Any]]]:
        proc = subprocess.run([sys.executable, "-m", "panscan", "jobs", "--state", state, "--format", "jsonl"],
                              capture_output=True, text=True, timeout=60)
        return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]

    code, records, err = scan("s3://cold-state", "--restore", "bulk", state=state)
    assert code == 2, err
    assert {r["reason"] for r in of_type(records, "item")} == {"RESTORE_REQUESTED"}
    code, pending = jobs()
    assert code == 2
    assert sorted((r["location"], r["tier"], r["storage_class"]) for r in pending) == [
        ("s3://cold-state/2018/export.csv", "Bulk", "DEEP_ARCHIVE"),
        ("s3://cold-state/2019/export.csv", "Bulk", "GLACIER")]

    # The next sweep needs no --restore: it reads the copies the state says were requested
    # (moto completes restores at once) and requests nothing again.
    code, records, err = scan("s3://cold-state", state=state)
    assert code == 1, err
    assert [f["masked"] for f in of_type(records, "finding")] == [masked(pan(11))]
    assert {r["status"] for r in of_type(records, "item")} == {"complete"}
    assert len([r for r in s3.requests if r.method == "POST" and "restore" in r.query]) == 2
    assert jobs() == (0, [])
