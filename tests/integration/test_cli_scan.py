"""``panscan scan`` end to end on real files: exit codes, formats, output files, policy."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from panscan.cli import main
from panscan.config import ConfigError, parse_duration, parse_policy, parse_size
from panscan.engine import worker
from panscan.findings.mask import KEY_FILE_NAME
from panscan.match.luhn import check_digit
from panscan.model import Item

RNG = random.Random(20240611)


def make_pan(prefix: str = "4", length: int = 16) -> str:
    body = prefix + "".join(RNG.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + check_digit(body)


PAN = make_pan("453201")
MASKED = PAN[:6] + "******" + PAN[-4:]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def clean_tree(tmp_path: Path) -> Path:
    root = tmp_path / "clean"
    root.mkdir()
    (root / "a.log").write_text("2024-06-11 order 1234567890 shipped\n")
    (root / "b.csv").write_text("id,amount\n1,10.00\n")
    return root


@pytest.fixture
def dirty_tree(clean_tree: Path) -> Path:
    (clean_tree / "payments.csv").write_text(f"name,card\nalice,{PAN}\n")
    return clean_tree


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Never touch the real ~/.local/state from a test.
    home = tmp_path / "state-home"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def test_clean_tree_exits_0_with_a_table_summary(clean_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(clean_tree), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "No card data found." in out
    assert "exit status:   0" in out


def test_card_number_exits_1_and_the_table_shows_it_masked(dirty_tree: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(dirty_tree)]) == 1
    out = capsys.readouterr().out
    assert MASKED in out and PAN not in out
    assert f"{dirty_tree / 'payments.csv'}" in out


def test_fifo_in_the_tree_is_listed_but_left_out_on_purpose_exit_0(clean_tree: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 17: a FIFO holds no data to read; it is listed with its reason, no gap in coverage.
    os.mkfifo(clean_tree / "pipe")
    assert main(["scan", str(clean_tree), "--no-state"]) == 0
    out = capsys.readouterr().out
    assert "NOT_REGULAR_FILE" in out and "coverage:      complete; 1 item left out on purpose" in out


def test_findings_win_over_incomplete_coverage(dirty_tree: Path) -> None:
    os.mkfifo(dirty_tree / "pipe")
    assert main(["scan", str(dirty_tree), "--no-state", "--format", "jsonl"]) == 1


def test_missing_target_is_a_usage_error_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 16: "nothing found" must never stand for "nothing was read" (more cases in
    # test_cli_nothing_scanned.py).
    assert main(["scan", str(tmp_path / "nope"), "--no-state", "--format", "jsonl"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and "No such file or directory" in captured.err


@pytest.mark.parametrize("argv", [
    ["scan"],
    ["scan", "x", "--format", "xml"],
    ["scan", "x", "--workers", "0"],
    ["scan", "x", "--workers", "100000"],
    ["scan", "x", "--bogus"],
    ["scan", "x", "--chunk-size", "1"],
    ["frobnicate"],
    ["scan", "s3://bucket", "--restore", "frozen"],
    ["scan", "x", "--evidence", "out", "--no-state"],
    ["scan", "ftp://host/x"],
    ["scan", "glacier://vault/archive/extra"],
    ["scan", "x", "--scheduler", "tcp://127.0.0.1:1"],
    ["scan", "x", "--retrieve"],
    ["scan", "glacier://vault", "--max-bytes", "1GiB"],
    ["scan", "x", "--include-root"],
    ["scan", "x", "--format", "pdf"],
    ["scan", "x", "--state", "s.db", "--no-state"],
])
def test_usage_errors_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "error" in err


def test_not_supported_targets_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "ftp://host/x"]) == 3
    assert "ftp:// targets are not supported" in capsys.readouterr().err


def test_help_exits_0_and_describes_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--format" in out and "exit status" in out and "--no-state" in out


@pytest.mark.parametrize("policy, message", [
    ("[limits]\nmax_archive_depht = 3\n", 'panscan.toml:2: [limits]: unknown key "max_archive_depht"'),
    ("[retention]\ndefault_max_age = \"ninety days\"\n", "expected a duration"),
    ("[limits]\nmax_expanded_bytes = \"4 gigs\"\n", "expected a size"),
    ("[scan]\nexclude = \"*.tmp\"\n", "list of non-empty strings"),
    ("[nonsense]\n", "panscan.toml:1: unknown table [nonsense]"),
    ("this is not toml", "not valid TOML"),
    ("[[retention.rule]]\nname = \"x\"\nmatch = [\"/a/*\"]\n", 'missing "max_age"'),
])
def test_bad_policy_exits_3_with_a_clear_message(clean_tree: Path, tmp_path: Path, policy: str, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "panscan.toml"
    path.write_text(policy)
    assert main(["scan", str(clean_tree), "--policy", str(path)]) == 3
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_missing_policy_file_exits_3(clean_tree: Path, tmp_path: Path) -> None:
    assert main(["scan", str(clean_tree), "--policy", str(tmp_path / "none.toml")]) == 3


def test_policy_limits_and_excludes_apply(dirty_tree: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "panscan.toml"
    path.write_text(
        '[retention]\ndefault_max_age = "2y"\n'
        '[[retention.rule]]\nname = "logs"\nmatch = ["/data/*"]\nmax_age = "13w"\njustification = "x"\n'
        '[limits]\nmax_expanded_bytes = "64MiB"\nmax_ratio = 50\n'
        '[scan]\nexclude = ["*.csv"]\n')
    assert main(["scan", str(dirty_tree), "--policy", str(path), "--format", "jsonl"]) == 0  # excluded on purpose
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    excluded = [r for r in records if r.get("reason") == "EXCLUDED"]
    assert len(excluded) == 2
    assert not [r for r in records if r["type"] == "finding"]


def test_policy_parsing_units() -> None:
    assert [parse_duration(v, "t") for v in ("90d", "13w", "2y")] == [90, 91, 730]
    assert [parse_size(v, "t") for v in (4096, "4GiB", "10MB", "512 KiB")] == [4096, 4 * 2**30, 10**7, 512 * 1024]
    policy = parse_policy('[limits]\nmax_item_seconds = 30\nmax_archive_depth = 2\n')
    assert policy.limits.max_item_seconds == 30.0 and policy.limits.max_archive_depth == 2
    for bad in ("90", "-3d", "1.5y", "3m"):
        with pytest.raises(ConfigError):
            parse_duration(bad, "t")
    with pytest.raises(ConfigError, match="greater than 0"):
        parse_policy("[limits]\nmax_members = 0\n")
    with pytest.raises(ConfigError, match="used twice"):
        parse_policy('[[retention.rule]]\nname="a"\nmatch="/x"\nmax_age="1d"\n'
                     '[[retention.rule]]\nname="a"\nmatch="/y"\nmax_age="1d"\n')


def test_jsonl_as_a_subprocess_has_the_documented_schema(dirty_tree: Path, tmp_path: Path) -> None:
    os.mkfifo(dirty_tree / "pipe")
    proc = run_cli("scan", str(dirty_tree), "--format", "jsonl", "--no-state", "--workers", "2")
    assert proc.returncode == 1, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[-1]["type"] == "summary"
    (finding,) = [r for r in records if r["type"] == "finding"]
    assert set(finding) == {"type", "location", "version_id", "is_latest", "member", "offset", "line", "kind",
                            "brand", "masked", "fingerprint", "confidence", "test_card", "retention", "change",
                            "volume_id"}
    assert finding["location"] == str(dirty_tree / "payments.csv")
    assert (finding["offset"], finding["line"], finding["kind"], finding["brand"]) == (16, 2, "pan", "Visa")
    assert finding["masked"] == MASKED and len(finding["fingerprint"]) == 64
    assert finding["confidence"] in ("high", "medium", "low") and finding["test_card"] is False
    items = [r for r in records if r["type"] == "item"]
    assert {r["location"] for r in items} == {str(dirty_tree / n) for n in ("a.log", "b.csv", "payments.csv", "pipe")}
    for r in items:
        assert {"location", "version_id", "status", "reason", "bytes_scanned", "findings"} <= set(r)
    pipe = next(r for r in items if r["location"].endswith("pipe"))
    assert (pipe["status"], pipe["reason"]) == ("skipped", "NOT_REGULAR_FILE")
    summary = records[-1]
    assert summary["items"] == {"total": 4, "complete": 3, "partial": 0, "skipped": 1, "error": 0}
    assert summary["findings"]["total"] == 1 and summary["findings"]["by_brand"] == {"Visa": 1}
    assert summary["findings"]["by_kind"] == {"pan": 1}
    assert summary["coverage"]["complete"] is True and summary["exit_status"] == 1  # the FIFO: left out on purpose
    assert summary["bytes_scanned"] == sum(r["bytes_scanned"] for r in items)
    assert isinstance(summary["duration_seconds"], float)
    # Each item's findings come before its item record.
    idx = {r["type"] + str(r.get("location")): i for i, r in enumerate(records)}
    assert idx["finding" + finding["location"]] < idx["item" + finding["location"]]


def test_existing_output_file_is_truncated_keeps_its_mode_and_stdout_stays_empty(
        dirty_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.jsonl"
    out.write_text("old content that must go\n")
    os.chmod(out, 0o644)
    proc = run_cli("scan", str(dirty_tree), "--format", "jsonl", "-o", str(out), "--no-state")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # issue 16: never chmod an existing path (new: 0600)
    assert "old content" not in out.read_text()
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "summary"


def test_csv_has_a_header_and_findings_and_sends_the_summary_to_stderr(
        dirty_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(dirty_tree / "pipe")
    assert main(["scan", str(dirty_tree), "--format", "csv", "--no-state"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("location,version_id,member,offset,line,kind,brand,masked,fingerprint")
    assert len(lines) == 2 and MASKED in lines[1]
    assert "NOT_REGULAR_FILE" in captured.err and "exit status:   1" in captured.err


def test_state_path_puts_the_key_beside_it_and_fingerprints_are_stable(dirty_tree: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "st" / "panscan.db"
    fingerprints = []
    for _ in range(2):
        assert main(["scan", str(dirty_tree), "--state", str(state), "--format", "jsonl"]) == 1
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        fingerprints += [r["fingerprint"] for r in records if r["type"] == "finding"]
    key = state.parent / KEY_FILE_NAME
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert fingerprints[0] == fingerprints[1]


def test_default_key_lives_in_xdg_state_home(dirty_tree: Path, state_home: Path) -> None:
    assert main(["scan", str(dirty_tree), "--format", "jsonl"]) == 1
    assert (state_home / "panscan" / KEY_FILE_NAME).is_file()


def test_no_state_uses_a_fresh_key_each_run(dirty_tree: Path, state_home: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    fingerprints = []
    for _ in range(2):
        main(["scan", str(dirty_tree), "--no-state", "--format", "jsonl"])
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        fingerprints += [r["fingerprint"] for r in records if r["type"] == "finding"]
    assert fingerprints[0] != fingerprints[1]
    assert not state_home.exists()


def test_sigkilled_worker_via_cli_is_reported_and_the_scan_finishes(dirty_tree: Path) -> None:
    (dirty_tree / "poison.txt").write_text("x\n")
    proc = run_cli("scan", str(dirty_tree), "--format", "jsonl", "--no-state",
                   env={worker.TEST_CRASH_ENV: "poison"})
    assert proc.returncode == 1, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    poison = next(r for r in records if r["type"] == "item" and r["location"].endswith("poison.txt"))
    assert (poison["status"], poison["reason"]) == ("error", "WORKER_CRASHED")
    assert records[-1]["items"]["complete"] == 3
    assert "WORKER_CRASHED" in proc.stderr


def _slow_opener(item: Item) -> object:
    time.sleep(60)
    raise AssertionError("not reached")


def test_ctrl_c_stops_writes_the_summary_and_exits_2(clean_tree: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Items of a test-only source that never finishes, after the clean files.
    from panscan.engine import runner
    real = runner.enumerate_files

    def files_then_slow(targets, options):  # type: ignore[no-untyped-def]
        yield from real(targets, options)
        for i in range(4):
            yield Item(f"/slow/{i}", "slow")

    monkeypatch.setattr(runner, "enumerate_files", files_then_slow)
    monkeypatch.setitem(worker._OPENERS, "slow", _slow_opener)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        code = main(["scan", str(clean_tree), "--no-state", "--format", "jsonl", "--workers", "2"])
    finally:
        timer.cancel()
    assert code == 2
    assert time.monotonic() - t0 < 30
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = records[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert summary["items"]["complete"] == 2
    assert {r["reason"] for r in records if r["type"] == "item" and r["location"].startswith("/slow/")} \
        == {"INTERRUPTED"}


def test_verbose_and_quiet_control_stderr(dirty_tree: Path) -> None:
    os.mkfifo(dirty_tree / "pipe")
    verbose = run_cli("-v", "scan", str(dirty_tree), "--no-state", "--format", "jsonl")
    quiet = run_cli("-q", "scan", str(dirty_tree), "--no-state", "--format", "jsonl")
    assert "DEBUG" in verbose.stderr
    assert quiet.stderr == ""
    assert verbose.returncode == quiet.returncode == 1
