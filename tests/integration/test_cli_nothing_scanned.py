"""Issue 16, class 12: "no card data found" must never stand for "nothing was read".

A target that does not exist, ``-`` (standard input, read as grep and ripgrep read it) and an
AWS target with no credentials at all each get a clear one-line answer and a status that is not
"clean". Everything runs ``panscan`` as a command: stdin is a real pipe or a real redirected
file, and the AWS configuration is the process environment.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan, spaced

PAN = make_pan("453201", 16)
MASKED = PAN[:6] + "******" + PAN[-4:]


def run_cli(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "panscan", *args], text=True, timeout=120,
                          env=env if env is not None else dict(os.environ), **kwargs)


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --- a target that does not exist ----------------------------------------------------------------


def test_a_target_that_does_not_exist_is_one_line_and_exit_3_even_beside_a_good_one(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("nothing here\n")
    missing = tmp_path / "typo"
    for args in (["scan", str(missing), "--no-state"], ["scan", str(good), str(missing), "--no-state"],
                 ["scan", str(missing / "below"), "--no-state"]):
        proc = run_cli(*args)
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == ""  # no "No card data found."
        line = one_line(proc.stderr)
        assert line.startswith("panscan: error: target ") and "No such file or directory" in line


def test_a_dangling_symbolic_link_target_says_what_is_missing(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    proc = run_cli("scan", str(link), "--no-state")
    assert proc.returncode == 3
    assert "a symbolic link to a path that does not exist" in one_line(proc.stderr)


def test_retention_of_a_target_that_does_not_exist_is_exit_3(tmp_path: Path) -> None:
    policy = tmp_path / "panscan.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    proc = run_cli("retention", str(tmp_path / "typo"), "--policy", str(policy))
    assert proc.returncode == 3 and "No such file or directory" in one_line(proc.stderr)


# --- stdin ---------------------------------------------------------------------------------------


def test_dash_scans_stdin_from_a_pipe(tmp_path: Path) -> None:
    text = f"order 1\ncard {spaced(PAN)} exp 12/29\n"
    proc = run_cli("scan", "-", "--no-state", "--format", "jsonl", input=text)
    assert proc.returncode == 1, proc.stderr
    assert PAN not in proc.stdout + proc.stderr and spaced(PAN) not in proc.stdout + proc.stderr
    got = records(proc.stdout)
    (finding,) = [r for r in got if r["type"] == "finding"]
    assert (finding["location"], finding["masked"], finding["line"], finding["member"]) == ("-", MASKED, 2, None)
    (item,) = [r for r in got if r["type"] == "item"]
    assert (item["location"], item["status"], item["bytes_scanned"]) == ("-", "complete", len(text))
    assert got[-1]["coverage"]["complete"] is True and got[-1]["exit_status"] == 1


def test_dash_with_clean_stdin_is_clean_and_other_targets_are_scanned_too(tmp_path: Path) -> None:
    other = tmp_path / "export.csv"
    other.write_text(f"id,card\n1,{PAN}\n")
    proc = run_cli("scan", "-", str(other), "--no-state", "--format", "jsonl", input="nothing here\n")
    assert proc.returncode == 1, proc.stderr
    items = {r["location"]: r for r in records(proc.stdout) if r["type"] == "item"}
    assert set(items) == {"-", str(other)}
    assert (items["-"]["status"], items["-"]["findings"]) == ("complete", 0)
    assert items[str(other)]["findings"] == 1
    clean = run_cli("scan", "-", "--no-state", input="nothing here\n")
    assert clean.returncode == 0, clean.stderr


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "quarterly export\n")
        z.writestr(name, text)
    return buf.getvalue()


def test_dash_expands_a_container_from_a_non_seekable_pipe(tmp_path: Path) -> None:
    data = zipped("export/cards.csv", f"id,card\n1,{PAN}\n")
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", "-", "--no-state", "--format", "jsonl"],
                          input=data, capture_output=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    got = records(proc.stdout.decode())
    (finding,) = [r for r in got if r["type"] == "finding"]
    assert (finding["location"], finding["member"], finding["masked"]) == ("-", "export/cards.csv", MASKED)
    (item,) = [r for r in got if r["type"] == "item"]
    assert item["status"] == "complete" and item["size"] is None


def test_dash_reads_a_redirected_file_in_place(tmp_path: Path) -> None:
    archive = tmp_path / "backup.zip"
    archive.write_bytes(zipped("export/cards.csv", f"id,card\n1,{PAN}\n"))
    with archive.open("rb") as stdin:
        proc = run_cli("scan", "-", "--no-state", "--format", "jsonl", stdin=stdin)
    assert proc.returncode == 1, proc.stderr
    got = records(proc.stdout)
    (finding,) = [r for r in got if r["type"] == "finding"]
    assert (finding["location"], finding["member"]) == ("-", "export/cards.csv")
    (item,) = [r for r in got if r["type"] == "item"]
    assert (item["status"], item["size"]) == ("complete", archive.stat().st_size)


def test_dash_with_more_findings_than_a_batch_reports_every_one(tmp_path: Path) -> None:
    lines = 2500  # more than a worker's batch of findings (engine.worker.STREAM_BATCH)
    proc = run_cli("scan", "-", "--format", "jsonl", "--state", str(tmp_path / "state.db"),
                   input=f"card {PAN}\n" * lines)
    assert proc.returncode == 1, proc.stderr
    got = records(proc.stdout)
    assert sum(r["type"] == "finding" for r in got) == lines
    (item,) = [r for r in got if r["type"] == "item"]
    assert (item["status"], item["findings"]) == ("complete", lines)
    assert got[-1]["findings"]["total"] == lines
    # Stdin has no identity a later sweep could compare: read again, every time.
    again = run_cli("scan", "-", "--format", "jsonl", "--state", str(tmp_path / "state.db"), input=f"card {PAN}\n")
    (item,) = [r for r in records(again.stdout) if r["type"] == "item"]
    assert (item["status"], item["findings"], item["unchanged_since_sweep"]) == ("complete", 1, None)


def pipe_pending(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def test_dash_waiting_for_a_silent_writer_stops_on_sigterm_keeping_what_was_read(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "panscan", "scan", "-", "--no-state", "--format", "jsonl"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(f"card {PAN}\n".encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while pipe_pending(proc.stdin.fileno()) and time.monotonic() < deadline:  # until panscan read it
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # the writer is still there: only the signal can end the read
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    got = records(out.decode())
    assert [r["masked"] for r in got if r["type"] == "finding"] == [MASKED]
    (item,) = [r for r in got if r["type"] == "item"]
    assert (item["location"], item["status"], item["reason"]) == ("-", "partial", "INTERRUPTED")
    assert got[-1]["interrupted"] is True


def test_dash_given_twice_or_to_retention_is_a_usage_error(tmp_path: Path) -> None:
    twice = run_cli("scan", "-", "-", "--no-state", input="x\n")
    assert twice.returncode == 3 and "only once" in one_line(twice.stderr)
    policy = tmp_path / "panscan.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    retention = run_cli("retention", "-", "--policy", str(policy), input="x\n")
    assert retention.returncode == 3 and "panscan scan -" in one_line(retention.stderr)


# --- no AWS credentials at all -------------------------------------------------------------------


@pytest.fixture
def no_aws_credentials(tmp_path: Path) -> dict[str, str]:
    """An environment with no credentials anywhere in the chain: no variables, empty config
    and credentials files, and the instance metadata service (and any AWS endpoint) on a dead
    loopback port (the conftest's)."""
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        "AWS_CREDENTIAL_PROCESS")}
    assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"].startswith("http://127.0.0.1:")  # set by the conftest
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty), HOME=str(tmp_path))
    return env


@pytest.mark.parametrize("target", ["s3://payments", "s3://", "glacier://legacy", "s3-inventory://inv/m.json"])
def test_an_aws_target_without_any_credentials_is_one_line_exit_3_and_quick(
        no_aws_credentials: dict[str, str], target: str) -> None:
    started = time.monotonic()
    proc = run_cli("scan", target, "--no-state", env=no_aws_credentials)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("panscan: error: no AWS credentials found: ")
    assert "AWS_PROFILE" in line and "renew" not in line  # nothing to renew: they never existed
    assert proc.stdout == ""
    assert elapsed < 20  # no request is retried against a dead endpoint: the chain is asked once


def test_retention_of_an_aws_target_without_credentials_is_exit_3(
        no_aws_credentials: dict[str, str], tmp_path: Path) -> None:
    policy = tmp_path / "panscan.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    proc = run_cli("retention", "s3://payments", "--policy", str(policy), env=no_aws_credentials)
    assert proc.returncode == 3
    assert one_line(proc.stderr).startswith("panscan: error: no AWS credentials found: ")


def test_a_profile_that_does_not_exist_is_named_not_taken_for_missing_credentials(
        no_aws_credentials: dict[str, str]) -> None:
    proc = run_cli("scan", "s3://payments", "--no-state", env={**no_aws_credentials, "AWS_PROFILE": "audit"})
    assert proc.returncode == 3
    line = one_line(proc.stderr)
    assert "ProfileNotFound" in line and "audit" in line and "internal error" not in line
