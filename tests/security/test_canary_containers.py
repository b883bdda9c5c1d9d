"""Canary for containers: card numbers in member names, in members, and in the problems a
broken container reports never reach any output in full."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from panscan.match.luhn import check_digit

PAN_BODY = "455673758689985"
PAN = PAN_BODY + check_digit(PAN_BODY)


def forms(pan: str) -> list[str]:
    groups = [pan[i:i + 4] for i in range(0, len(pan), 4)]
    return [pan, " ".join(groups), "-".join(groups)]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"export-{PAN}.csv", f"card,{PAN}\n" * 3)
        z.writestr(f"dir {' '.join(forms(PAN)[1].split())}/notes.txt", "nothing here")
    data = buf.getvalue()
    (root / "named.zip").write_bytes(data)
    (root / "truncated.zip").write_bytes(data[:-60])  # the problem detail names the member
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as tf:
        info = tarfile.TarInfo(f"{PAN}.zip")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (root / "nested.tar.gz").write_bytes(tar.getvalue())
    return root


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv"])
def test_numbers_in_member_names_and_problem_details_never_leak(tree: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    proc = subprocess.run([sys.executable, "-m", "panscan", "-v", "scan", str(tree), "--format", fmt,
                           "--no-state", "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    everything = proc.stdout + proc.stderr + out.read_text()
    flat = everything.replace(" ", "").replace("-", "")
    assert PAN not in flat
    assert f"455673******{PAN[-4:]}" in everything  # detection happened: the masked form is there
    if fmt == "jsonl":
        assert f"455673******{PAN[-4:]}.zip/export-455673******{PAN[-4:]}.csv" in everything
        assert "truncated.zip" in everything and "MALFORMED_FILE" in everything
