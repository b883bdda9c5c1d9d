"""Evidence bundles end to end: ``panscan scan --evidence DIR`` writes the results, the HTML
report, the policy and the pattern-set hash with a signed manifest; ``panscan verify`` accepts the
untouched bundle and rejects one with a single byte changed, a file added or the manifest edited."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from panscan.match.luhn import check_digit

BODY = "49927398716"  # a generated body; the number below is Luhn-completed, never a real card


def pan() -> str:
    body = "4539" + BODY  # 15 digits: a 16-digit Visa number with its check digit
    return body + check_digit(body)


def panscan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text(f"id,card\n1,{pan()}\n")
    policy = tmp_path / "panscan.toml"
    policy.write_text('[retention]\ndefault_max_age = "365d"\n')
    state = tmp_path / "state" / "state.db"
    out = tmp_path / "evidence"
    proc = panscan("scan", str(data), "--policy", str(policy), "--state", str(state), "--evidence", str(out),
                   "--format", "jsonl", "--workers", "1")
    assert proc.returncode == 1, proc.stderr
    assert "panscan verify" in proc.stderr
    return out, state


def test_the_bundle_holds_results_report_policy_and_pattern_hash_under_a_signed_manifest(
        bundle: tuple[Path, Path]) -> None:
    out, state = bundle
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "manifest.sig", "pattern-set.txt", "policy.toml", "report.html",
                     "results.jsonl"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"pattern-set.txt", "policy.toml", "report.html", "results.jsonl"}
    assert manifest["pattern_version"] in (out / "pattern-set.txt").read_text()
    assert manifest["exit_status"] == 1
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["masked"] for r in records if r["type"] == "finding"] == [pan()[:6] + "******" + pan()[-4:]]
    assert "<html" in (out / "report.html").read_text().lower()
    for f in out.iterdir():
        assert pan() not in f.read_text(errors="replace"), f.name
    verified = panscan("verify", str(out), "--state", str(state))
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout


@pytest.mark.parametrize("tamper, problem", [
    ("byte", "report.html: changed since the bundle was signed"),
    ("extra", "notes.txt: not in the manifest"),
    ("manifest", "manifest.json: the signature does not match"),
    ("missing", "policy.toml: missing"),
])
def test_verify_rejects_a_bundle_with_anything_changed(bundle: tuple[Path, Path], tamper: str, problem: str) -> None:
    out, state = bundle
    if tamper == "byte":
        data = bytearray((out / "report.html").read_bytes())
        data[len(data) // 2] ^= 0x01
        (out / "report.html").write_bytes(bytes(data))
    elif tamper == "extra":
        (out / "notes.txt").write_text("added later\n")
    elif tamper == "manifest":
        text = (out / "manifest.json").read_text().replace('"exit_status": 1', '"exit_status": 0')
        (out / "manifest.json").write_text(text)
    else:
        (out / "policy.toml").unlink()
    proc = panscan("verify", str(out), "--state", str(state))
    assert proc.returncode == 1
    assert problem in proc.stderr and "ALTERED" in proc.stdout


def test_a_bundle_needs_the_state_key_and_a_new_directory(bundle: tuple[Path, Path], tmp_path: Path) -> None:
    out, state = bundle
    data = tmp_path / "data"
    no_state = panscan("scan", str(data), "--no-state", "--evidence", str(tmp_path / "other"))
    assert no_state.returncode == 3 and "--no-state" in no_state.stderr
    reused = panscan("scan", str(data), "--state", str(state), "--evidence", str(out))
    assert reused.returncode == 3 and "not empty" in reused.stderr
    other_key = panscan("verify", str(out), "--state", str(tmp_path / "elsewhere" / "state.db"))
    assert other_key.returncode == 3 and "key" in other_key.stderr
    not_a_bundle = panscan("verify", str(data), "--state", str(state))
    assert not_a_bundle.returncode == 3 and "not an evidence bundle" in not_a_bundle.stderr
