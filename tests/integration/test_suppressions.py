"""Suppressions end to end (issue 17, item 3): ``[[allow]]`` entries by fingerprint, location glob
and masked number, ``panscan allow``, and ``--min-confidence``, through the real CLI on real files.

A suppressed finding is never dropped silently: it is a ``suppressed`` record with its entry's
reason in every report, counted in the summary, and left out of the exit status; later sweeps
(items carried from the state, not read again) honour the entries, and ``panscan report``
renders a stored sweep with the entries it was scanned with.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from panscan.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan

ORDERS = make_pan("453201", 16)
FIXTURE = make_pan("455600", 16)
NOTES = make_pan("401288", 16)
IN_ZIP = make_pan("471618", 16)


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state-home"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "fixtures").mkdir(parents=True)
    (root / "orders.csv").write_text(f"id,card\n1,card {ORDERS}\n")
    (root / "fixtures" / "vendor.txt").write_text(f"test card {FIXTURE}\n")
    (root / "notes.txt").write_text(f"card on file {NOTES}\n")
    with zipfile.ZipFile(root / "vendor.zip", "w") as z:
        z.writestr("tests/cards.txt", f"card {IN_ZIP}\n")
    return root


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def scan_jsonl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = run(capsys, "scan", *args, "--format", "jsonl", "--workers", "1")
    return code, [json.loads(line) for line in out.splitlines()], err


def of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == kind]


def fingerprints(records: list[dict[str, Any]]) -> dict[str, str]:
    """Masked number -> fingerprint of the findings."""
    return {r["masked"]: r["fingerprint"] for r in of_type(records, "finding")}


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_fingerprint_entry_suppresses_in_the_scan_in_a_later_sweep_and_in_the_stored_report(
        tree: Path, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, records, _ = scan_jsonl(capsys, str(tree), "--state", str(state))
    assert code == 1
    fp = fingerprints(records)[masked(FIXTURE)]
    policy = write_policy(tmp_path / "panscan.toml", f'[[allow]]\nfingerprint = "{fp.upper()}"\n'
                                                     'reason = "vendor test fixture, confirmed by QSA"\n')
    for sweep in ("first with the entry", "later, items carried from the state"):
        code, records, _ = scan_jsonl(capsys, str(tree), "--state", str(state), "--policy", str(policy))
        assert code == 1, sweep  # the other numbers are still card data
        (held,) = of_type(records, "suppressed")
        assert (held["masked"], held["fingerprint"], held["reason"], held["allow_entry"], held["matched_by"]) == (
            masked(FIXTURE), fp, "vendor test fixture, confirmed by QSA", 1, "fingerprint")
        assert held["location"] == str(tree / "fixtures" / "vendor.txt")
        assert masked(FIXTURE) not in {r["masked"] for r in of_type(records, "finding")}
        summary = records[-1]
        assert summary["findings"]["total"] == 3 and summary["findings"]["suppressed"] == 1
        assert summary["allow"]["entries"][0]["suppressed"] == 1
    assert all(r["unchanged_since_sweep"] is not None for r in of_type(records, "item"))  # really from the state
    sweep_id = summary["sweep_id"]

    # The stored sweep is rendered with the entries it was scanned with, not today's file.
    policy.write_text("")
    code, out, _ = run(capsys, "report", "--state", str(state), "--sweep", str(sweep_id), "--format", "jsonl")
    assert code == 1
    stored = [json.loads(line) for line in out.splitlines()]
    assert [(r["masked"], r["reason"]) for r in of_type(stored, "suppressed")] == [
        (masked(FIXTURE), "vendor test fixture, confirmed by QSA")]
    assert sorted(r["masked"] for r in of_type(stored, "finding")) == sorted(
        masked(p) for p in (ORDERS, NOTES, IN_ZIP))


def test_a_location_glob_entry_suppresses_what_lies_under_it_archive_members_included(
        tree: Path, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "panscan.toml", f"""\
[[allow]]
location = "{tmp_path}/data/fixtures/*"   # absolute, while the scan below is given a relative path
reason = "fixtures directory"

[[allow]]
location = "*/vendor.zip/tests/*"
reason = "vendor's own test suite"
""")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the scan, then a later sweep from the state
        code, records, _ = scan_jsonl(capsys, "data", "--state", str(state), "--policy", str(policy))
        assert code == 1
        held = {r["masked"]: (r["allow_entry"], r["matched_by"], r["reason"], r["member"])
                for r in of_type(records, "suppressed")}
        assert held == {masked(FIXTURE): (1, "location", "fixtures directory", None),
                        masked(IN_ZIP): (2, "location", "vendor's own test suite", "tests/cards.txt")}
        assert sorted(r["masked"] for r in of_type(records, "finding")) == sorted(masked(p) for p in (ORDERS, NOTES))
        assert records[-1]["findings"]["suppressed"] == 2


def test_a_masked_entry_suppresses_its_number_and_a_location_narrows_it(
        tree: Path, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "copy.txt").write_text(f"card {ORDERS}\n")  # the same number in a second place
    policy = write_policy(tmp_path / "panscan.toml", f"""\
[[allow]]
masked = "{masked(NOTES)}"
reason = "published test number in the notes"

[[allow]]
masked = "{masked(ORDERS)}"
location = "*/copy.txt"
reason = "only the copy is accepted"
""")
    for _ in range(2):
        code, records, _ = scan_jsonl(capsys, str(tree), "--state", str(state), "--policy", str(policy))
        assert code == 1
        held = sorted((r["masked"], r["location"], r["matched_by"]) for r in of_type(records, "suppressed"))
        assert held == sorted([(masked(NOTES), str(tree / "notes.txt"), "masked"),
                               (masked(ORDERS), str(tree / "copy.txt"), "masked+location")])
        reported = {(r["masked"], r["location"]) for r in of_type(records, "finding")}
        assert (masked(ORDERS), str(tree / "orders.csv")) in reported  # the narrowed entry left it alone


def test_a_scan_whose_only_findings_are_suppressed_exits_0_and_every_report_lists_them_with_the_reason(
        tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "clean"
    data.mkdir()
    (data / "fixture.txt").write_text(f"card {FIXTURE}\n")
    (data / "readme.txt").write_text("nothing here\n")
    policy = write_policy(tmp_path / "panscan.toml", '[[allow]]\nlocation = "*/fixture.txt"\n'
                                                     'reason = "ticket SEC-42 accepted"\nexpires = 2999-12-31\n')
    code, records, _ = scan_jsonl(capsys, str(data), "--state", str(state), "--policy", str(policy))
    assert code == 0
    summary = records[-1]
    assert (summary["exit_status"], summary["findings"]["total"], summary["findings"]["suppressed"]) == (0, 0, 1)
    assert of_type(records, "suppressed")[0]["expires"] == "2999-12-31"

    code, table, _ = run(capsys, "scan", str(data), "--state", str(state), "--policy", str(policy))
    assert code == 0
    section = table[table.index("Suppressed by [[allow]] entries (1)"):table.index("Summary")]
    assert masked(FIXTURE) in section and "ticket SEC-42 accepted" in section
    assert "No card data found" not in table and re.search(r"suppressed: +1 by \[\[allow\]\] entries", table)

    report = tmp_path / "report.html"
    evidence = tmp_path / "evidence"
    code, _, _ = run(capsys, "scan", str(data), "--state", str(state), "--policy", str(policy), "--format", "html",
                     "-o", str(report), "--evidence", str(evidence))
    assert code == 0
    for page in (report.read_text(), (evidence / "report.html").read_text()):
        section = page[page.index('<section id="suppressed">'):]
        section = section[:section.index("</section>")]
        assert masked(FIXTURE) in section and "ticket SEC-42 accepted" in section
    bundled = [json.loads(line) for line in (evidence / "results.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in of_type(bundled, "suppressed")] == ["ticket SEC-42 accepted"]

    code, out, err = run(capsys, "scan", str(data), "--state", str(state), "--policy", str(policy), "--format", "csv")
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert (row["masked"], row["suppressed"], row["allow_entry"], row["allow_reason"]) == (
        masked(FIXTURE), "true", "1", "ticket SEC-42 accepted")
    assert "suppressed:    1" in err


def test_an_expired_entry_no_longer_suppresses_and_scan_and_check_config_say_so(
        tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "panscan.toml", """\
# accepted until the vendor fixed it
[[allow]]
location = "*/fixtures/*"
reason = "vendor fixture"
expires = 2001-01-01
""")
    code, records, err = scan_jsonl(capsys, str(tree), "--no-state", "--policy", str(policy))
    assert code == 1
    assert not of_type(records, "suppressed")
    assert masked(FIXTURE) in {r["masked"] for r in of_type(records, "finding")}
    assert f"{policy}:2: [[allow]] #1 expired on 2001-01-01" in err
    assert records[-1]["allow"]["entries"][0]["expired"] is True

    code, out, err = run(capsys, "check-config", str(policy))
    assert code == 0
    assert "allow #1 (line 2): location */fixtures/*; reason: vendor fixture; EXPIRED 2001-01-01" in out
    assert f"{policy}:2: [[allow]] #1 expired on 2001-01-01" in err


def test_panscan_allow_appends_to_an_existing_policy_keeping_its_content_and_the_next_scan_honours_it(
        tree: Path, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, records, _ = scan_jsonl(capsys, str(tree), "--state", str(state))
    assert code == 1
    fp = fingerprints(records)[masked(NOTES)]
    before = ('# Payments estate policy (owner: security team)\n[retention]\ndefault_max_age = "3650d"  # ten years\n'
              "\n[scan]\nexclude = ['/proc/*']\n")
    policy = write_policy(tmp_path / "panscan.toml", before)

    code, out, _ = run(capsys, "allow", fp, "--reason", "test number in the runbook", "--expires", "2999-01-31",
                       "--policy", str(policy))
    assert code == 0
    text = policy.read_text()
    assert text.startswith(before)  # appended: every byte, comments included, where it was
    assert f"added [[allow]] #1 to {policy} (line 8)" in out and fp in out
    code, described, _ = run(capsys, "check-config", str(policy))
    assert code == 0
    assert f"allow #1 (line 8): fingerprint {fp}; reason: test number in the runbook; expires 2999-01-31" in described

    code, records, _ = scan_jsonl(capsys, str(tree), "--state", str(state), "--policy", str(policy))
    assert code == 1
    assert [(r["masked"], r["reason"], r["expires"]) for r in of_type(records, "suppressed")] == [
        (masked(NOTES), "test number in the runbook", "2999-01-31")]

    # A second entry goes after the first; a new file is created.
    assert run(capsys, "allow", fingerprints(records)[masked(ORDERS)], "--reason", "second",
               "--policy", str(policy))[0] == 0
    assert policy.read_text().startswith(text) and policy.read_text().count("[[allow]]") == 2
    fresh = tmp_path / "new" / "panscan.toml"
    fresh.parent.mkdir()
    assert run(capsys, "allow", fp, "--reason", "r", "--policy", str(fresh))[0] == 0
    assert "[[allow]]" in fresh.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("not-a-fingerprint", "--reason", "r"), "FINGERPRINT: expected the 64 hex digits"),
    (("ab" * 32, "--reason", "  "), "--reason: say why"),
    (("ab" * 32, "--reason", "r", "--expires", "next year"), "expected a date such as 2027-06-30"),
])
def test_panscan_allow_refuses_bad_values_and_writes_nothing(args: tuple[str, ...], message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "panscan.toml", "# keep me\n")
    code, _, err = run(capsys, "allow", *args, "--policy", str(policy))
    assert code == 3
    assert message in err
    assert policy.read_text() == "# keep me\n"


def test_panscan_allow_refuses_to_append_to_an_invalid_policy_and_names_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "panscan.toml", '[retention]\ndefault_max_age = "forever"\n')
    code, _, err = run(capsys, "allow", "ab" * 32, "--reason", "r", "--policy", str(policy))
    assert code == 3
    assert f"{policy}:2: [retention] default_max_age" in err
    assert policy.read_text() == '[retention]\ndefault_max_age = "forever"\n'


@pytest.mark.parametrize(("entry", "line", "message"), [
    ('location = "/srv/*"\n', 3, '[[allow]] #1: missing "reason"'),
    (f'fingerprint = "{"ab" * 32}"\nmasked = "411111******1111"\nreason = "r"\n', 5,
     "[[allow]] #1: two matchers, fingerprint and masked"),
    ('reason = "r"\n', 3, "[[allow]] #1: no matcher"),
    ('location = "/srv/*"\nreason = "r"\nexpires = "June"\n', 6,
     '[[allow]] #1 expires: expected a date such as 2027-06-30, got "June"'),
    ('location = "/srv/*"\nreason = "r"\nexpire = 2027-01-01\n', 6,
     '[[allow]] #1: unknown key "expire", did you mean "expires"?'),
    ('masked = "4111111111111111"\nreason = "r"\n', 4, "[[allow]] #1 masked: expected a masked number"),
])
def test_bad_allow_entries_are_errors_naming_file_and_line(entry: str, line: int, message: str, tree: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path / "panscan.toml", f'[scan]\nexclude = []\n[[allow]]\n{entry}')
    for command in (("check-config", str(policy)), ("scan", str(tree), "--no-state", "--policy", str(policy))):
        code, out, err = run(capsys, *command)
        assert code == 3
        assert f"{policy}:{line}: {message}" in err
        assert out == ""  # nothing scanned


def test_min_confidence_counts_what_is_below_it_and_leaves_it_out_of_the_reports_and_exit_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keyword.txt").write_text(f"card number {ORDERS}\n")
    (data / "bare.txt").write_text(f"ref {NOTES}\n")
    code, records, _ = scan_jsonl(capsys, str(data), "--no-state")
    confidence = {r["masked"]: r["confidence"] for r in of_type(records, "finding")}
    assert confidence == {masked(ORDERS): "high", masked(NOTES): "medium"}  # what the test relies on

    code, records, _ = scan_jsonl(capsys, str(data), "--no-state", "--min-confidence", "high")
    assert code == 1
    assert [r["masked"] for r in of_type(records, "finding")] == [masked(ORDERS)]
    summary = records[-1]
    assert (summary["findings"]["total"], summary["findings"]["below_threshold"], summary["min_confidence"]) == (
        1, 1, "high")
    assert not of_type(records, "suppressed")

    (data / "keyword.txt").unlink()  # only the medium one is left: below the threshold, out of the exit status
    code, out, _ = run(capsys, "scan", str(data), "--no-state", "--min-confidence", "high")
    assert code == 0
    assert re.search(r"threshold: +1 below --min-confidence high", out)
    assert "No card data reported (1 below --min-confidence high)" in out
    code, out, _ = run(capsys, "scan", str(data), "--no-state")
    assert code == 1  # the default reports every finding


def test_a_pan_dense_item_lists_every_suppressed_finding_and_its_item_counts_only_the_reported_ones(
        tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Findings of an item this dense come in batches while it is scanned (and from the state).
    (data / "dump.txt").write_text("".join(f"card {FIXTURE}\ncard {ORDERS}\n" for _ in range(1200)))
    policy = write_policy(tmp_path / "panscan.toml", f'[[allow]]\nmasked = "{masked(FIXTURE)}"\nreason = "r"\n')
    for command in (("scan", str(data), "--policy", str(policy), "--workers", "1"), ("scan", str(data), "--policy",
                    str(policy), "--workers", "1"), ("report",)):
        code, out, _ = run(capsys, *command, "--state", str(state), "--format", "jsonl")
        assert code == 1
        records = [json.loads(line) for line in out.splitlines()]
        assert len(of_type(records, "suppressed")) == 1200 and len(of_type(records, "finding")) == 1200
        (item,) = of_type(records, "item")
        assert item["findings"] == 1200
        assert (records[-1]["findings"]["total"], records[-1]["findings"]["suppressed"]) == (1200, 1200)
