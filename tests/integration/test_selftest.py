"""``panscan patterns test``: the self-test finds a generated number in every supported format.

Formats whose extractor module does not exist yet are expected failures, decided at import
time with ``importlib.util.find_spec``: as soon as the module lands the same test becomes a
strict one, with no edit here.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from panscan import selftest
from panscan.cli import main
from panscan.findings.mask import mask_digits, mask_text
from panscan.match.luhn import luhn_valid
from panscan.match.matcher import scan_bytes

SAMPLES = selftest.samples()


def _missing(module: str | None) -> bool:
    if module is None:
        return False
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a parent package missing
        return True


MISSING_MODULES = sorted({s.needs for s in SAMPLES if s.needs is not None and _missing(s.needs)})


def _format_param(sample: selftest.Sample) -> object:
    marks = []
    if sample.needs is not None and sample.needs in MISSING_MODULES:
        marks.append(pytest.mark.xfail(strict=False, reason=f"{sample.needs} is not written yet"))
    return pytest.param(sample.name, marks=marks, id=sample.name)


WHOLE_RUN_XFAIL = pytest.mark.xfail(
    bool(MISSING_MODULES), strict=False,
    reason=f"extractors not written yet: {', '.join(MISSING_MODULES)}")


@functools.cache
def results_by_format() -> dict[str, selftest.Result]:
    return {r.name: r for r in selftest.run_selftest()}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def test_the_samples_are_deterministic_with_one_distinct_number_each() -> None:
    again = selftest.samples()
    assert [s.data for s in again] == [s.data for s in SAMPLES]
    assert len({s.masked for s in SAMPLES}) == len(SAMPLES)
    assert [s.name for s in SAMPLES] == selftest.formats()


def test_a_sample_never_shows_its_number_in_its_repr() -> None:
    for sample in SAMPLES:
        assert mask_text(repr(sample)) == repr(sample)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_only_the_raw_visible_samples_show_their_number_to_a_raw_scan(sample: selftest.Sample) -> None:
    # Finding a hidden sample's number therefore proves its container was opened.
    raw = [h for h in scan_bytes(sample.data) if mask_digits(h.digits) == sample.masked]
    assert bool(raw) == sample.raw_visible


def test_legacy_office_text_is_found_by_the_raw_utf16_scan_without_an_extractor() -> None:
    ole2 = selftest.make_sample("ole2")
    assert ole2.data.startswith(bytes.fromhex("d0cf11e0a1b11ae1"))
    findings, reason, _ = selftest.scan_sample(ole2.data)
    assert reason is None
    assert [(f.masked, f.member) for f in findings] == [(ole2.masked, None)]


@pytest.mark.parametrize("name", [_format_param(s) for s in SAMPLES])
def test_every_format_is_found_once_at_its_member_path(name: str) -> None:
    result = results_by_format()[name]
    assert result.found, f"{name}: MISSED"
    assert result.member == result.expected_member
    assert result.count == 1
    assert result.reason is None, f"{name}: {result.reason} {result.detail}"


@WHOLE_RUN_XFAIL
def test_patterns_test_command_finds_every_format_and_exits_0() -> None:
    proc = run_cli("patterns", "test")
    assert mask_text(proc.stdout) == proc.stdout  # no full number in the report
    rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
    for sample in SAMPLES:
        assert sample.name in rows, proc.stdout
        assert "MISSED" not in rows[sample.name], rows[sample.name]
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_patterns_test_command_exit_status_says_whether_any_format_was_missed() -> None:
    # Independent of which extractors exist: the status agrees with the table.
    proc = run_cli("patterns", "test")
    assert proc.returncode in (0, 1), proc.stderr
    assert ("MISSED" in proc.stdout) == (proc.returncode == 1)
    from panscan.match.patterns import load_patterns

    assert load_patterns().version[:12] in proc.stdout


@WHOLE_RUN_XFAIL
def test_patterns_test_in_process_jsonl_reports_every_format_found(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["patterns", "test", "--format", "jsonl"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    per_format = {r["format"]: r for r in records if r["type"] == "selftest"}
    assert set(per_format) == {s.name for s in SAMPLES}
    assert [name for name, r in per_format.items() if not r["found"]] == []
    assert records[-1]["type"] == "summary" and records[-1]["missed"] == []
    assert status == 0


def test_a_luhn_failing_number_is_missed_and_the_exit_status_is_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    good = selftest.make_sample("gzip")
    assert results_by_format()["gzip"].found  # the format itself works
    digits = "4532015112830366"
    assert luhn_valid(digits)
    bad_digits = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    bad = selftest.make_sample("gzip", bad_digits)
    assert bad.masked == mask_digits(bad_digits) and bad.data != good.data
    monkeypatch.setattr(selftest, "samples", lambda: [bad, selftest.make_sample("text")])

    status = main(["patterns", "test", "--format", "jsonl"])

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    per_format = {r["format"]: r for r in records if r["type"] == "selftest"}
    assert per_format["gzip"]["found"] is False
    assert per_format["text"]["found"] is True
    assert records[-1]["missed"] == ["gzip"]
    assert status == 1


def test_a_missed_format_is_shown_as_missed_in_the_table(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = selftest.make_sample("text", "4532015112830367")  # Luhn fails
    monkeypatch.setattr(selftest, "samples", lambda: [bad])
    assert main(["patterns", "test"]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("text "))
    assert "MISSED" in row and bad.masked in row
    assert "0 of 1 formats found; MISSED: text" in out
