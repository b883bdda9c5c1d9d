"""Canary: card numbers planted in file contents and file names never reach any output.

Generated Luhn-valid Visa numbers (random bodies, never real cards) are written into files,
gzip data, file names, a directory's name, a FIFO's name, a symbolic link's name, a missing
target, a policy file and a command-line value; numbers in names are findings of their own
(member ``(name)``), masked like any other. Then every report format runs, to stdout and to
``-o`` files, with debug logging, a worker killed mid-scan, runs that fail on purpose and an
internal error with a traceback; no output channel, report file or key file may hold any
planted number in plain, spaced or dashed form.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from panscan.cli import main
from panscan.engine import runner, worker
from panscan.engine.worker import TEST_CRASH_ENV
from panscan.findings.mask import mask_text
from panscan.match.luhn import check_digit

RNG = random.Random()  # a fresh set of numbers each run: nothing can be special-cased


def make_pan() -> str:
    body = "4" + "".join(RNG.choice("0123456789") for _ in range(14))
    return body + check_digit(body)


PANS = [make_pan() for _ in range(15)]


def forms(pan: str) -> list[str]:
    groups = [pan[i:i + 4] for i in range(0, 16, 4)]
    return [pan, " ".join(groups), "-".join(groups)]


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


def assert_clean(where: str, text: str) -> None:
    for pan in PANS:
        for form in forms(pan):
            assert form not in text, f"a planted card number ({forms(pan).index(form)}) leaked into {where}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    p = PANS
    (root / "plain.txt").write_text(f"order 17 card {p[0]} exp 12/27\n")
    (root / "spaced.log").write_text(f"line one\ncc: {forms(p[1])[1]}\n")
    (root / "dashed.csv").write_text(f"id,card\n3,{forms(p[2])[2]}\n")
    (root / "archive.gz").write_bytes(gzip.compress(f"visa {p[3]}\n".encode()))
    (root / f"cust-{p[4]}.txt").write_text(f"card {p[5]}\n")
    (root / f"{forms(p[6])[1]}.log").write_text("nothing\n")
    (root / f"cc{p[7]}.csv").write_text("nothing\n")
    os.mkfifo(root / f"fifo-{forms(p[8])[2]}")
    os.symlink(root / "plain.txt", root / f"link-{p[9]}")
    (root / f"crash-{p[10]}.txt").write_text(f"card {p[10]}\n")
    (root / f"export-{p[14]}").mkdir()  # a directory named with a number, files inside
    for i in range(3):
        (root / f"export-{p[14]}" / f"part-{i}.txt").write_text("nothing\n")
    return root


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_no_planted_number_reaches_any_output_of_any_format(tree: Path, tmp_path: Path) -> None:
    state = tmp_path / "state" / "panscan.db"
    reports = tmp_path / "reports"
    reports.mkdir()
    seen_masked = ""
    for fmt in ("table", "jsonl", "csv"):
        for to_file in (False, True):
            out = reports / f"{fmt}-{to_file}.out"
            args = ["-v", "scan", str(tree), "--format", fmt, "--state", str(state), "--workers", "2"]
            proc = run_cli(*args, *(["-o", str(out)] if to_file else []), env={TEST_CRASH_ENV: "crash-"})
            assert proc.returncode == 1, proc.stderr[-2000:]
            assert_clean(f"stdout of {fmt}", proc.stdout)
            assert_clean(f"stderr of {fmt}", proc.stderr)
            assert "DEBUG" in proc.stderr and "WORKER_CRASHED" in proc.stderr + proc.stdout + (
                out.read_text() if to_file else "")
            seen_masked += proc.stdout + proc.stderr
            if fmt == "jsonl" and not to_file:
                records = [json.loads(line) for line in proc.stdout.splitlines()]
                in_names = Counter(r["location"] for r in records if r["type"] == "finding" and r["member"] == "(name)")
    # The stored sweeps, rendered again; the metadata-only retention sweep; pending jobs.
    policy = tmp_path / "policy.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    for fmt in ("table", "jsonl", "csv"):
        proc = run_cli("-v", "report", "--state", str(state), "--format", fmt, "-o", str(reports / f"report-{fmt}"))
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert_clean(f"stderr of report {fmt}", proc.stdout + proc.stderr)
    for fmt in ("table", "jsonl"):
        proc = run_cli("-v", "retention", str(tree), "--policy", str(policy), "--format", fmt,
                       "--as-of", "2100-01-01")
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert_clean(f"output of retention {fmt}", proc.stdout + proc.stderr)
        seen_masked += proc.stdout
    proc = run_cli("-v", "jobs", "--state", str(state))
    assert_clean("output of jobs", proc.stdout + proc.stderr)
    for report in reports.iterdir():
        assert_clean(f"report file {report.name}", report.read_text(errors="replace"))
        seen_masked += report.read_text()
    for f in state.parent.iterdir():  # the state database (and its WAL) and the key
        data = f.read_bytes()
        assert_clean(f"state directory file {f.name}", data.decode("latin-1"))
        for pan in PANS:
            assert pan.encode("utf-16-le") not in data and pan.encode("utf-16-be") not in data, f.name
    # The numbers were found and shown masked, in content and in names.
    for i in (0, 1, 2, 3, 4, 5, 7):
        assert masked(PANS[i]) in seen_masked, i
    assert f"cust-{masked(PANS[4])}.txt" in seen_masked
    # Names holding numbers are findings, once each: files, the directory (not once per file
    # under it), the link not followed and the FIFO.
    assert in_names == Counter({str(tree / name): 1 for name in (
        f"cust-{masked(PANS[4])}.txt", f"{PANS[6][:4]} {PANS[6][4:6]}** **** {PANS[6][12:]}.log",
        f"export-{masked(PANS[14])}", f"link-{masked(PANS[9])}",
        f"fifo-{PANS[8][:4]}-{PANS[8][4:6]}**-****-{PANS[8][12:]}")})
    assert f"{PANS[6][:4]} {PANS[6][4:6]}** **** {PANS[6][12:]}.log" in seen_masked


def test_runs_that_fail_on_purpose_do_not_echo_numbers(tree: Path, tmp_path: Path) -> None:
    bad_policy = tmp_path / "panscan.toml"
    bad_policy.write_text(f'[retention]\ndefault_max_age = "{PANS[12]}"\n')
    good_policy = tmp_path / "good.toml"
    good_policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    gone = str(tmp_path / f"gone-{PANS[11]}")
    runs = [
        run_cli("-v", "scan", str(tree), "--policy", str(tmp_path / f"{PANS[13]}.toml")),
        run_cli("-v", "scan", str(tree), "--policy", str(bad_policy), "--no-state"),
        run_cli("-v", "scan", str(tree), "--workers", PANS[0]),
        run_cli("-v", "scan", f"glacier://{PANS[1]}/x"),
        run_cli("-v", "scan", str(tree), "-o", str(tmp_path / "no-such-dir" / f"{PANS[2]}.out")),
        # A target that does not exist is a usage error that names it (issue 16): masked.
        run_cli("-v", "scan", str(tree), gone, "--no-state"),
        run_cli("-v", "retention", gone, "--policy", str(good_policy)),
    ]
    for proc in runs:
        assert proc.returncode == 3, proc.stderr
        assert "error" in proc.stderr
        assert_clean("stdout of a failing run", proc.stdout)
        assert_clean("stderr of a failing run", proc.stderr)
    assert masked(PANS[13]) in runs[0].stderr
    assert f"gone-{masked(PANS[11])}" in runs[-2].stderr and f"gone-{masked(PANS[11])}" in runs[-1].stderr
    # A bucket named like a card number that cannot be listed (the conftest's dead endpoint):
    # an error item, reported masked.
    unreachable = run_cli("-v", "scan", f"s3://{PANS[1]}/x", "--format", "jsonl", "--no-state")
    assert unreachable.returncode == 2, unreachable.stderr
    assert_clean("stdout of a failing s3 run", unreachable.stdout)
    assert_clean("stderr of a failing s3 run", unreachable.stderr)
    assert masked(PANS[1]) in unreachable.stdout


def test_internal_errors_and_their_tracebacks_hold_no_numbers(tree: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    def feed_that_quotes_its_input(self: object, chunk: bytes) -> list[object]:
        raise ValueError(f"cannot parse {chunk.decode(errors='replace')}")

    # Workers fork from this process, so they get the broken scanner too.
    monkeypatch.setattr(worker.StreamScanner, "feed", feed_that_quotes_its_input)
    code = main(["-v", "scan", str(tree), "--no-state", "--format", "jsonl", "--workers", "2"])
    captured = capfd.readouterr()
    assert code == 2
    assert "internal error (ValueError)" in captured.out
    assert "where:" in captured.err  # the debug traceback (frames only) was logged
    assert_clean("stdout after worker exceptions", captured.out)
    assert_clean("stderr after worker exceptions", captured.err)

    def sink_that_quotes_a_number(*args: object, **kwargs: object) -> object:
        raise RuntimeError(f"bad {PANS[0]}")

    monkeypatch.setattr(runner, "open_sink", sink_that_quotes_a_number)
    code = main(["-v", "scan", str(tree), "--no-state"])
    captured = capfd.readouterr()
    assert code == 2
    assert "internal error (RuntimeError)" in captured.err
    assert_clean("stdout after a coordinator exception", captured.out)
    assert_clean("stderr after a coordinator exception", captured.err)


def test_mask_text_masks_numbers_in_names_but_keeps_other_digits() -> None:
    pan = PANS[0]
    assert mask_text(f"/data/{pan}.csv") == f"/data/{masked(pan)}.csv"
    assert mask_text(f"/data/x{pan}y") == f"/data/x{masked(pan)}y"
    assert mask_text(f"/logs/{forms(pan)[2]}") == f"/logs/{pan[:4]}-{pan[4:6]}**-****-{pan[12:]}"
    assert mask_text("/logs/2024-06-11/order-1234567890123.log") == "/logs/2024-06-11/order-1234567890123.log"
    assert mask_text("\udcff" + pan) == "\udcff" + masked(pan)


def test_suppressed_records_and_allow_entries_never_hold_a_full_number(tree: Path, tmp_path: Path) -> None:
    """[[allow]] entries whose glob and reason name card numbers (a person may write anything
    in a policy), and one appended by ``panscan allow`` with a number in its reason: every
    report, the stored sweep and the appended text hold them masked, and they still match."""
    state = tmp_path / "state" / "panscan.db"
    first = run_cli("scan", str(tree), "--state", str(state), "--format", "jsonl", "--workers", "2")
    fp = next(r["fingerprint"] for r in map(json.loads, first.stdout.splitlines())
              if r["type"] == "finding" and r["masked"] == masked(PANS[0]))
    policy = tmp_path / "allow.toml"
    written = (f'[[allow]]\nlocation = "*/cust-{PANS[4]}.txt"\nreason = "customer {PANS[5]} agreed"\n'
               f'[[allow]]\nmasked = "{masked(PANS[2])}"\nreason = "fixture"\nexpires = 2001-01-01\n')
    policy.write_text(written)
    added = run_cli("-v", "allow", fp, "--reason", f"ticket about {forms(PANS[1])[1]}", "--location",
                    f"*/plain.txt*{PANS[3]}*", "--policy", str(policy))
    assert added.returncode == 0, added.stderr
    assert_clean("output of panscan allow", added.stdout + added.stderr)
    assert_clean("the entry panscan allow appended", policy.read_text()[len(written):])
    reports = tmp_path / "reports"
    reports.mkdir()
    held = []
    for fmt in ("table", "jsonl", "csv", "html"):
        out = reports / f"scan.{fmt}"
        proc = run_cli("-v", "scan", str(tree), "--state", str(state), "--policy", str(policy), "--format", fmt,
                       "-o", str(out), "--workers", "2")
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert_clean(f"output of a scan with [[allow]] entries ({fmt})", proc.stdout + proc.stderr)
        assert_clean(f"report with suppressed findings ({fmt})", out.read_text())
        if fmt == "jsonl":
            held = [r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "suppressed"]
        report = run_cli("-v", "report", "--state", str(state), "--format", fmt)
        assert_clean(f"stored sweep with suppressed findings ({fmt})", report.stdout + report.stderr)
    # The content and the name of the file named with a number matched the masked glob.
    assert sorted(r["masked"] for r in held if r["allow_entry"] == 1) == sorted([masked(PANS[4]), masked(PANS[5])])
    assert {r["reason"] for r in held if r["allow_entry"] == 1} == {f"customer {masked(PANS[5])} agreed"}
    checked = run_cli("-v", "check-config", str(policy))
    assert checked.returncode == 0
    assert_clean("output of check-config with [[allow]] entries", checked.stdout + checked.stderr)
    for f in state.parent.iterdir():
        assert_clean(f"state directory file {f.name}", f.read_bytes().decode("latin-1"))
