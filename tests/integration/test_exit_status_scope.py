"""Issue 17, items 4 and 5: an exit status that means what it says, and one sweep scope
however a target is spelled.

Items left out on purpose (``--exclude`` and policy excludes, symbolic links not followed,
FIFOs, directories on other filesystems) are listed with their reason but leave coverage
complete: a clean tree holding them exits 0. Something that should have been read and was
not (a file that cannot be opened) still exits 2. ``examples``, ``examples/`` and the absolute
path are one scope: the second and third sweeps find the same findings "still present".
Everything runs ``panscan`` as a command on real files (and a moto server on loopback).
"""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_server import MotoS3, moto_server, s3  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan

PAN = make_pan("453201", 16)
NOBODY = 65534
LEFT_OUT = {"skip.tmp": "EXCLUDED", "old.bak": "EXCLUDED", "link": "SYMLINK_NOT_FOLLOWED", "pipe": "NOT_REGULAR_FILE"}


def panscan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ), cwd=cwd)


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """``panscan ARGS`` as an unprivileged user: root reads a mode-000 file, nobody cannot.
    Everything a scan imports is imported first, as the caller (see test_cli_hostile_tree)."""
    if os.geteuid() != 0:
        return panscan(*args)
    code = textwrap.dedent(f"""
        import contextlib, encodings.utf_8_sig, io, os, sys, tempfile  # the policy is read as utf-8-sig
        from panscan.cli import main
        with tempfile.TemporaryDirectory() as empty, contextlib.redirect_stdout(io.StringIO()):
            main(["scan", empty, "--format", "jsonl", "--no-state", "--workers", "2"])
        os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
        os.environ["HOME"] = "/nonexistent"
        sys.exit(main({list(args)!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": "/tmp"})


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def of_type(got: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in got if r["type"] == kind]


@pytest.fixture()
def open_tmp() -> Iterator[Path]:
    """A directory an unprivileged user can enter (pytest's own sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="panscan-exit-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def tree(open_tmp: Path) -> tuple[Path, Path]:
    """A clean tree holding one file to read and one of each thing left out on purpose: a file
    excluded by ``--exclude``, one excluded by the policy, a link and a FIFO; and the policy."""
    root = open_tmp / "tree"
    root.mkdir()
    (root / "clean.txt").write_text("nothing here\n")
    (root / "skip.tmp").write_text(f"card {PAN}\n")  # excluded: its number is never read
    (root / "old.bak").write_text(f"card {PAN}\n")
    (root / "link").symlink_to(root / "clean.txt")
    os.mkfifo(root / "pipe")
    for p in (root, *root.iterdir()):
        if not p.is_symlink() and (p.is_dir() or p.is_file()):
            p.chmod(0o755 if p.is_dir() else 0o644)
    policy = open_tmp / "panscan.toml"
    policy.write_text('[scan]\nexclude = ["*.bak"]\n')
    policy.chmod(0o644)
    return root, policy


def test_a_clean_tree_with_excluded_files_a_link_and_a_fifo_exits_0_and_lists_each_with_its_reason(
        tree: tuple[Path, Path]) -> None:
    root, policy = tree
    proc = panscan("scan", str(root), "--exclude", "*.tmp", "--policy", str(policy), "--format", "jsonl",
                   "--no-state")
    assert proc.returncode == 0, proc.stderr
    got = records(proc.stdout)
    items = {Path(r["location"]).name: r for r in of_type(got, "item")}
    for name, reason in LEFT_OUT.items():
        assert (items[name]["status"], items[name]["reason"]) == ("skipped", reason), name
    assert items["clean.txt"]["status"] == "complete"
    assert not of_type(got, "finding")
    summary = of_type(got, "summary")[0]
    assert summary["coverage"] == {"complete": True, "items_complete_ratio": 1.0, "left_out_on_purpose": 4}
    assert summary["exit_status"] == 0

    table = panscan("scan", str(root), "--exclude", "*.tmp", "--policy", str(policy), "--no-state")
    assert table.returncode == 0, table.stderr
    assert "Items left out on purpose (4): no gap in coverage" in table.stdout
    assert "Items not completely scanned" not in table.stdout
    assert "coverage:      complete; 4 items left out on purpose" in table.stdout
    assert "exit status:   0 (nothing found, coverage complete)" in table.stdout

    page = panscan("scan", str(root), "--exclude", "*.tmp", "--policy", str(policy), "--no-state",
                   "--format", "html")
    assert page.returncode == 0, page.stderr
    coverage = page.stdout.split('<section id="coverage">', 1)[1].split("</section>", 1)[0]
    assert "Coverage complete:</span> every item that should have been read was read." in coverage
    assert "4 items were left out on purpose" in coverage and "INCOMPLETE" not in coverage
    assert "Items left out on purpose: 4" in coverage and "Items not completely read" not in coverage

    notes = panscan("scan", str(root), "--exclude", "*.tmp", "--policy", str(policy), "--no-state",
                    "--format", "csv")
    assert notes.returncode == 0 and "coverage:      complete; 4 items left out on purpose" in notes.stderr


def test_a_stored_sweep_renders_its_items_left_out_on_purpose_as_the_scan_did(tree: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    root, policy = tree
    state = str(tmp_path / "state.db")
    scanned = panscan("scan", str(root), "--exclude", "*.tmp", "--policy", str(policy), "--state", state)
    assert scanned.returncode == 0, scanned.stderr
    stored = panscan("report", "--state", state)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout == scanned.stdout
    assert "coverage:      complete; 4 items left out on purpose" in stored.stdout


def test_the_same_tree_with_a_file_that_cannot_be_read_exits_2(tree: tuple[Path, Path]) -> None:
    root, policy = tree
    locked = root / "locked.txt"
    locked.write_text("nothing here either\n")
    locked.chmod(0o000)
    proc = as_nobody("scan", str(root), "--exclude", "*.tmp", "--policy", str(policy), "--format", "jsonl",
                     "--no-state", "--workers", "2")
    assert proc.returncode == 2, proc.stderr
    got = records(proc.stdout)
    items = {Path(r["location"]).name: r for r in of_type(got, "item")}
    assert (items["locked.txt"]["status"], items["locked.txt"]["reason"]) == ("error", "PERMISSION_DENIED")
    for name, reason in LEFT_OUT.items():
        assert items[name]["reason"] == reason, name
    summary = of_type(got, "summary")[0]
    # Of the two items that should have been read, one was.
    assert summary["coverage"] == {"complete": False, "items_complete_ratio": 0.5, "left_out_on_purpose": 4}
    assert summary["exit_status"] == 2


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) not installed")
def test_a_directory_on_another_filesystem_is_listed_but_leaves_coverage_complete(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "mnt").mkdir(parents=True)
    (root / "clean.txt").write_text("nothing here\n")
    script = (f"mount -t tmpfs -o size=1m tmpfs {root / 'mnt'} || exit 77; "
              f"exec {sys.executable} -m panscan scan {root} --format jsonl --no-state")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 77 or "Operation not permitted" in proc.stderr:
        pytest.skip(f"cannot mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    got = records(proc.stdout)
    [mount] = [r for r in of_type(got, "item") if r["location"] == str(root / "mnt")]
    assert (mount["status"], mount["reason"]) == ("skipped", "CROSSES_FILESYSTEM")
    assert of_type(got, "summary")[0]["coverage"]["complete"] is True


# --- one scope, however it is spelled ---------------------------------------------------------------


def test_three_spellings_of_a_target_are_one_sweep_scope_and_findings_stay_still_present(tmp_path: Path) -> None:
    root = tmp_path / "examples"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "app.log").write_text(f"charge ok card={PAN}\n")
    (root / "orders.csv").write_text(f"id,card\n1,{PAN}\n")
    state = str(tmp_path / "state" / "state.db")

    sweeps = []
    for spelling in ("examples", "examples/", str(root)):
        proc = panscan("scan", spelling, "--state", state, "--format", "jsonl", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        sweeps.append(records(proc.stdout))

    first, *later = sweeps
    assert {f["change"] for f in of_type(first, "finding")} == {"new"}
    where = sorted((f["location"], f["offset"]) for f in of_type(first, "finding"))
    assert where == [(str(root / "logs" / "app.log"), 15), (str(root / "orders.csv"), 10)]
    for number, got in enumerate(later, start=2):
        findings = of_type(got, "finding")
        assert {f["change"] for f in findings} == {"still present"}, number
        assert sorted((f["location"], f["offset"]) for f in findings) == where, number
        changes = of_type(got, "summary")[0]["changes"]
        assert (changes["previous_sweep"], changes["new"], changes["still_present"], changes["resolved"]) == \
            (number - 1, 0, 2, 0)
        assert of_type(got, "summary")[0]["targets"] == [str(root)]


def test_a_relative_exclude_glob_applies_whatever_the_spelling_of_the_target(tmp_path: Path) -> None:
    root = tmp_path / "examples"
    (root / "skip").mkdir(parents=True)
    (root / "skip" / "cards.txt").write_text(f"card {PAN}\n")
    (root / "kept.txt").write_text("nothing here\n")
    for spelling in ("examples", str(root)):
        proc = panscan("scan", spelling, "--exclude", "examples/skip/*", "--no-state", "--format", "jsonl",
                       cwd=tmp_path)
        assert proc.returncode == 0, (spelling, proc.stderr)
        [excluded] = [r for r in of_type(records(proc.stdout), "item") if r["reason"] == "EXCLUDED"]
        assert excluded["location"] == str(root / "skip" / "cards.txt")


def test_a_bucket_with_and_without_a_trailing_slash_is_one_sweep_scope(s3: MotoS3, tmp_path: Path) -> None:
    s3.client.create_bucket(Bucket="one-scope")
    s3.client.put_object(Bucket="one-scope", Key="orders.csv", Body=f"id,card\n1,{PAN}\n".encode())
    state = str(tmp_path / "state.db")
    changes = []
    for spelling in ("s3://one-scope", "s3://one-scope/"):
        proc = panscan("scan", spelling, "--state", state, "--format", "jsonl")
        assert proc.returncode == 1, proc.stderr
        got = records(proc.stdout)
        changes.append([f["change"] for f in of_type(got, "finding")])
        assert of_type(got, "summary")[0]["targets"] == ["s3://one-scope"]
    assert changes == [["new"], ["still present"]]
