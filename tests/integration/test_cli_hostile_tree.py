"""One tree holding every awkward thing a volume holds, scanned end to end by the CLI.

Each special file is accounted for with its reason, nothing hangs, and card numbers inside
compressed and UTF-16 files are found at their offsets in the decoded stream.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan

NOBODY = 65534


@pytest.fixture()
def open_tmp() -> Iterator[Path]:
    """A temporary directory nobody can reach (pytest's own lives under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="panscan-hostile-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def hostile_tree(open_tmp: Path) -> tuple[Path, dict[str, str]]:
    tmp_path = open_tmp
    root = tmp_path / "vol"
    root.mkdir()
    pans = {name: make_pan("4", 16, random.Random(name)) for name in
            ("plain", "gz", "bz2", "xz", "utf16")}
    (root / "plain.log").write_text(f"order ok card {pans['plain']} end\n")
    line = f"x\ncard {pans['gz']} end\n"
    (root / "old.log.gz").write_bytes(gzip.compress(line.encode(), mtime=0))
    (root / "old.log.bz2").write_bytes(bz2.compress(f"x\ncard {pans['bz2']} end\n".encode()))
    (root / "old.log.xz").write_bytes(lzma.compress(f"x\ncard {pans['xz']} end\n".encode()))
    (root / "notes-utf16.txt").write_bytes(b"\xff\xfe" + f"card {pans['utf16']}\n".encode("utf-16-le"))
    os.mkfifo(root / "pipe")
    os.mknod(root / "null-device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    secret = root / "secret.txt"
    secret.write_text(f"card {make_pan('5', 16)}\n")
    secret.chmod(0o000)
    # Let the unprivileged scanner into the tree (but not into secret.txt).
    for p in (tmp_path, root):
        p.chmod(0o755)
    for p in root.iterdir():
        if p.is_file() and not p.is_symlink() and p != secret and stat.S_ISREG(p.lstat().st_mode):
            p.chmod(0o644)
    return root, pans


def run_as_nobody(root: Path) -> subprocess.CompletedProcess[str]:
    # The interpreter, its standard library and site-packages may sit in directories only root
    # can read: a first scan of an empty directory, as root, imports everything a scan needs;
    # then the process drops to nobody so the unreadable file really is unreadable.
    code = textwrap.dedent(f"""
        import contextlib, io, os, sys, tempfile
        from panscan.cli import main
        with tempfile.TemporaryDirectory() as empty, contextlib.redirect_stdout(io.StringIO()):
            main(["scan", empty, "--format", "jsonl", "--no-state", "--workers", "2"])
        os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
        os.environ["HOME"] = "/nonexistent"
        sys.exit(main(["scan", {str(root)!r}, "--format", "jsonl", "--no-state", "--workers", "2"]))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": "/tmp"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a device node and drop privileges")
def test_every_special_file_is_reported_with_its_reason_and_compressed_text_is_read(
        hostile_tree: tuple[Path, dict[str, str]]) -> None:
    root, pans = hostile_tree
    proc = run_as_nobody(root)
    assert proc.returncode == 1, proc.stderr  # card data found wins over incomplete coverage
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    items = {Path(r["location"]).name: r for r in records if r["type"] == "item"}
    findings = {Path(r["location"]).name: r for r in records if r["type"] == "finding"}

    expected = {
        "pipe": ("skipped", "NOT_REGULAR_FILE"),
        "null-device": ("skipped", "NOT_REGULAR_FILE"),
        "loop-a": ("skipped", "SYMLINK_NOT_FOLLOWED"),
        "loop-b": ("skipped", "SYMLINK_NOT_FOLLOWED"),
        "secret.txt": ("error", "PERMISSION_DENIED"),
    }
    for name, (status, reason) in expected.items():
        assert (items[name]["status"], items[name]["reason"]) == (status, reason), name
    for name in ("plain.log", "old.log.gz", "old.log.bz2", "old.log.xz", "notes-utf16.txt"):
        assert items[name]["status"] == "complete", name
        assert items[name]["findings"] == 1, name

    for name, key in (("old.log.gz", "gz"), ("old.log.bz2", "bz2"), ("old.log.xz", "xz")):
        f = findings[name]
        # Offsets and lines are those of the decompressed stream.
        assert (f["offset"], f["line"]) == (7, 2), name
        assert f["masked"] == pans[key][:6] + "******" + pans[key][-4:]
    assert findings["notes-utf16.txt"]["offset"] == 2 + len("card ".encode("utf-16-le"))
    summary = records[-1]
    assert summary["type"] == "summary"
    assert summary["exit_status"] == 1
    for pan in pans.values():
        assert pan not in proc.stdout and pan not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_unreadable_file_alone_makes_coverage_incomplete_exit_2(open_tmp: Path) -> None:
    tmp_path = open_tmp
    root = tmp_path / "vol"
    root.mkdir()
    (root / "fine.txt").write_text("nothing here\n")
    (root / "locked.txt").write_text("nothing here either\n")
    (root / "locked.txt").chmod(0o000)
    for p in (tmp_path, root):
        p.chmod(0o755)
    (root / "fine.txt").chmod(0o644)
    proc = run_as_nobody(root)
    assert proc.returncode == 2, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["exit_status"] == 2
