"""Issue 16, class 11: writing reports.

``-o FILE`` creates a new file mode 0600 but never changes the mode or owner of a path that
already exists (run as root, ``-o /dev/null`` once made /dev/null unusable for everyone else).
A report or a state database that cannot be written is said in one line, with the path and the
OS reason, and the exit status never hides card data that was found: 1 stays 1, else 2.

Failures are real: ``/dev/full`` (every write fails with ENOSPC), a file size limit
(RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk), a FIFO whose reader is a
thread of the test. /dev/null and other shared devices are never used as a report here.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan

PAN = make_pan("453201", 16)
MASKED = PAN[:6] + "******" + PAN[-4:]
DEV_FULL = Path("/dev/full")


def run_cli(*args: str, stdout: int | None = subprocess.PIPE,
            preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, preexec_fn=preexec)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    root = tmp_path / "dirty"
    root.mkdir()
    (root / "payments.csv").write_text(f"name,card\nalice,{PAN}\n")
    return root


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    root.mkdir()
    (root / "a.log").write_text("order 1234567890 shipped\n")
    return root


@pytest.fixture
def dev_full() -> Iterator[Path]:
    """/dev/full, with its mode checked afterwards (and put back if a regression changed it,
    so that a failing run of this test does not leave the machine's device broken)."""
    if not DEV_FULL.exists() or not stat.S_ISCHR(DEV_FULL.stat().st_mode):
        pytest.skip("no /dev/full on this system")
    before = DEV_FULL.stat()
    yield DEV_FULL
    after = DEV_FULL.stat()
    if stat.S_IMODE(after.st_mode) != stat.S_IMODE(before.st_mode):
        os.chmod(DEV_FULL, stat.S_IMODE(before.st_mode))
        pytest.fail(f"the scan changed the mode of /dev/full from {before.st_mode:o} to {after.st_mode:o}")
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


def file_size_limit(limit: int) -> Callable[[], None]:
    """A child whose writes past ``limit`` bytes of any file fail with EFBIG, like a full disk
    (Python ignores SIGXFSZ, so the write returns the error instead of killing it)."""
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


# --- modes ---------------------------------------------------------------------------------------


def test_a_new_report_is_created_0600_and_an_existing_one_keeps_its_mode_and_owner(
        dirty: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.jsonl"
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", str(dirty), "--no-state", "--format", "jsonl",
                           "-o", str(new)], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.umask(0))  # even a permissive umask: 0600
    assert proc.returncode == 1, proc.stderr
    assert stat.S_IMODE(new.stat().st_mode) == 0o600

    existing = tmp_path / "shared.jsonl"
    existing.write_text("an older report\n")
    os.chmod(existing, 0o644)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:  # root can give it away: the scan must not take it back
        owner = (4242, 4343)
        os.chown(existing, *owner)
    proc = run_cli("scan", str(dirty), "--no-state", "--format", "jsonl", "-o", str(existing))
    assert proc.returncode == 1, proc.stderr
    st = existing.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == owner
    records = [json.loads(line) for line in existing.read_text().splitlines()]
    assert records[0]["masked"] == MASKED and records[-1]["type"] == "summary"  # truncated, then the report


def test_a_report_written_to_a_fifo_leaves_the_fifo_mode_alone(dirty: Path, tmp_path: Path) -> None:
    # A FIFO stands for any existing special file (/dev/null, /dev/stdout's target): opened as
    # it is, never chmod-ed.
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o644)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = run_cli("scan", str(dirty), "--no-state", "--format", "jsonl", "-o", str(fifo))
    reader.join(timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert stat.S_IMODE(fifo.stat().st_mode) == 0o644
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    lines = received[0].decode().splitlines()
    assert json.loads(lines[0])["masked"] == MASKED and json.loads(lines[-1])["type"] == "summary"


# --- reports that cannot be written --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "jsonl", "html"])
def test_a_report_on_a_full_device_is_one_line_with_the_reason_and_card_data_keeps_exit_1(
        dirty: Path, dev_full: Path, fmt: str) -> None:
    proc = run_cli("scan", str(dirty), "--no-state", "--format", fmt, "-o", str(dev_full))
    assert error_lines(proc.stderr) == [f"panscan: error: cannot write the report to {dev_full}: "
                                        "No space left on device"], proc.stderr
    assert proc.returncode == 1
    assert PAN not in proc.stderr


def test_a_report_on_a_full_device_without_card_data_exits_2_not_0(clean: Path, dev_full: Path) -> None:
    proc = run_cli("scan", str(clean), "--no-state", "--format", "jsonl", "-o", str(dev_full))
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc.stderr) == [f"panscan: error: cannot write the report to {dev_full}: "
                                        "No space left on device"]


def test_a_report_that_cannot_be_written_points_to_the_sweep_kept_in_the_state(
        dirty: Path, dev_full: Path, tmp_path: Path) -> None:
    state = tmp_path / "state" / "state.db"
    proc = run_cli("scan", str(dirty), "--state", str(state), "-o", str(dev_full))
    assert proc.returncode == 1, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(f"panscan: error: cannot write the report to {dev_full}: No space left on device")
    assert "panscan report --sweep 1" in line
    # ... and it is there: rendered again, to a writable place, with the same finding.
    again = run_cli("report", "--state", str(state), "--format", "jsonl")
    assert again.returncode == 1 and MASKED in again.stdout
    # Rendering it to a full device again says so, keeping the sweep's status.
    failed = run_cli("report", "--state", str(state), "-o", str(dev_full))
    assert failed.returncode == 1
    assert error_lines(failed.stderr) == [f"panscan: error: cannot write the report to {dev_full}: "
                                          "No space left on device"]


def test_a_report_on_stdout_that_cannot_be_written_is_one_line_and_keeps_exit_1(dirty: Path) -> None:
    with DEV_FULL.open("w") as full:  # opened by the test: nothing can chmod it through -o
        proc = run_cli("scan", str(dirty), "--no-state", "--format", "jsonl", stdout=full.fileno())
    (line,) = error_lines(proc.stderr)
    assert line.startswith("panscan: error: cannot write the report to standard output: No space left on device")
    assert proc.returncode == 1


def test_a_disk_that_fills_up_mid_report_stops_the_scan_with_one_line_and_exit_1(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(200):
        (tree / f"f{i:03d}.csv").write_text(f"card,{PAN}\n" * 50)
    report = tmp_path / "report.jsonl"
    limit = 64 * 1024  # far less than 10,000 finding records
    proc = run_cli("scan", str(tree), "--no-state", "--format", "jsonl", "--workers", "2", "-o", str(report),
                   preexec=file_size_limit(limit))
    (line,) = error_lines(proc.stderr)
    assert line.startswith(f"panscan: error: cannot write the report to {report}: File too large"), line
    assert line.endswith("the scan stopped there")
    assert proc.returncode == 1
    assert report.stat().st_size <= limit and PAN not in report.read_text()


# --- the state database --------------------------------------------------------------------------


def test_a_state_database_that_fills_up_mid_sweep_is_one_line_and_keeps_exit_1(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(300):
        (tree / f"f{i:03d}.txt").write_text(f"card {PAN} order {i}\n" * 20)
    state = tmp_path / "state" / "state.db"
    # Room to create the database and record the first items, not the sweep's 6,000 findings.
    proc = run_cli("scan", str(tree), "--state", str(state), "--format", "jsonl", "--workers", "2",
                   preexec=file_size_limit(256 * 1024))
    (line,) = error_lines(proc.stderr)
    assert line.startswith(f"panscan: error: cannot write the state database {state}: "), line
    assert line.endswith("the sweep did not complete")
    assert "internal error" not in proc.stderr
    assert proc.returncode == 1  # card data was found before the state filled up
    assert MASKED in proc.stdout
