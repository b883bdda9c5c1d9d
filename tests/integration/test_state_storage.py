"""How the state stores sweeps (issue 15): an unchanged sweep adds no item rows, every kept
sweep replays byte for byte what it printed, ``panscan state prune`` and ``[state]`` remove old
sweeps and only their rows, and a state of the old schema is refused with what to do. Real
files, real SQLite files, the CLI as a subprocess; S3 from the moto server."""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from s3_server import MotoS3, moto_server, of_type, s3, versioned_bucket  # noqa: F401

from panscan.match.luhn import check_digit

TABLES = ("sweeps", "seen", "results", "sweep_records", "sweep_findings", "sweep_resolved", "sweep_buckets")


def pan(n: int) -> str:
    body = f"4556{n:011d}"
    return body + check_digit(body)


def panscan(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def scan_jsonl(target: str, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = panscan("scan", target, "--state", str(state), "--format", "jsonl", "--workers", "2", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc


def report(state: Path, sweep: int) -> subprocess.CompletedProcess[str]:
    return panscan("report", "--state", str(state), "--sweep", str(sweep), "--format", "jsonl")


def rows(state: Path) -> dict[str, int]:
    with sqlite3.connect(state) as db:
        return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}


def records(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def make_tree(root: Path, files: int = 60) -> None:
    for i in range(files):
        d = root / f"d{i % 6}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}.log").write_text(f"line {i} nothing to see\n" * 20)
    (root / "d0" / "card.txt").write_text(f"card {pan(1)} and {pan(2)}\n")


def test_an_unchanged_second_sweep_adds_no_item_rows_and_each_sweep_replays_what_it_printed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root)
    state = tmp_path / "st" / "state.db"
    first = scan_jsonl(str(root), state)
    after_first = rows(state)
    assert after_first["results"] == after_first["seen"] == 61
    second = scan_jsonl(str(root), state)
    after_second = rows(state)

    # Nothing about the items is stored again: only the sweep, its record order (a chunk per
    # commit) and its own copy of its two findings, which carry the sweep's "still present".
    assert {t: after_second[t] - after_first[t] for t in TABLES} == {
        "sweeps": 1, "seen": 0, "results": 0, "sweep_records": after_second["sweep_records"] - after_first[
            "sweep_records"], "sweep_findings": 2, "sweep_resolved": 0, "sweep_buckets": 0}
    assert 1 <= after_second["sweep_records"] - after_first["sweep_records"] <= 3
    items = of_type(records(second), "item")
    assert len(items) == 61 and {r["unchanged_since_sweep"] for r in items} == {1}
    assert {f["change"] for f in of_type(records(second), "finding")} == {"still present"}

    for sweep, printed in ((1, first), (2, second)):
        replayed = report(state, sweep)
        assert replayed.returncode == 1, replayed.stderr
        assert replayed.stdout == printed.stdout


def test_a_changed_file_is_stored_again_and_every_sweep_still_replays_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, files=12)
    state = tmp_path / "state.db"
    printed = [scan_jsonl(str(root), state).stdout]
    (root / "d1" / "f001.log").write_text(f"now a card {pan(3)}\n")
    (root / "d2" / "f002.log").unlink()
    printed.append(scan_jsonl(str(root), state).stdout)
    printed.append(scan_jsonl(str(root), state).stdout)
    assert rows(state)["results"] == 13 + 1  # the changed file once more; the unchanged third sweep adds none
    for sweep, out in enumerate(printed, 1):
        assert report(state, sweep).stdout == out


def test_an_s3_version_that_stops_being_latest_is_stored_once_more_and_then_shared(s3: MotoS3,
                                                                                    tmp_path: Path) -> None:
    c = versioned_bucket(s3, "latest-moves")
    c.put_object(Bucket="latest-moves", Key="a.csv", Body=f"card {pan(4)}\n".encode())
    state = tmp_path / "state.db"
    printed = [scan_jsonl("s3://latest-moves", state).stdout]
    c.put_object(Bucket="latest-moves", Key="a.csv", Body=b"no card now\n")
    printed.append(scan_jsonl("s3://latest-moves", state).stdout)
    after_second = rows(state)
    printed.append(scan_jsonl("s3://latest-moves", state).stdout)
    # Sweep 2 stored the old version again (its is_latest moved) and the new one; sweep 3 none.
    assert after_second["results"] == rows(state)["results"] == 3
    old = [r for r in of_type([json.loads(x) for x in printed[1].splitlines()], "item")
           if r["unchanged_since_sweep"] == 1]
    assert len(old) == 1
    for sweep, out in enumerate(printed, 1):
        assert report(state, sweep).stdout == out


def test_prune_removes_old_sweeps_and_their_rows_and_leaves_the_others_reportable(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, files=12)
    state = tmp_path / "state.db"
    printed = [scan_jsonl(str(root), state).stdout]
    (root / "d1" / "f001.log").write_text("changed, still no card\n")
    (root / "d2" / "f002.log").unlink()
    printed.append(scan_jsonl(str(root), state).stdout)
    printed.append(scan_jsonl(str(root), state).stdout)
    before = rows(state)

    pruned = panscan("state", "prune", "--keep", "2", "--state", str(state))
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("panscan: removed 1 sweep (1), 2 stored item results and 0 finding rows; "
                                    "2 sweeps kept; ")
    after = rows(state)
    # Sweep 1's own rows went: the two results no later sweep carried (the old f001, the deleted
    # f002), its record order. Its findings stay: card.txt is carried from the result it stored.
    assert after["sweeps"] == 2 and after["results"] == before["results"] - 2
    assert after["seen"] == before["seen"] - 1  # the deleted file is forgotten
    assert after["sweep_findings"] == before["sweep_findings"]
    missing = report(state, 1)
    assert missing.returncode == 3 and "no sweep 1" in missing.stderr
    for sweep in (2, 3):
        assert report(state, sweep).stdout == printed[sweep - 1]

    # Incremental scanning still works from what stayed: card.txt is not read again and its
    # findings are still present.
    fourth = records(scan_jsonl(str(root), state))
    card = [r for r in of_type(fourth, "item") if r["location"].endswith("card.txt")]
    assert card[0]["unchanged_since_sweep"] == 1 and card[0]["findings"] == 2
    assert {f["change"] for f in of_type(fourth, "finding")} == {"still present"}


def test_prune_never_removes_the_newest_complete_sweep_of_each_set_of_targets(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, files=3)
    make_tree(b, files=3)
    state = tmp_path / "state.db"
    scan_jsonl(str(a), state)
    scan_jsonl(str(b), state)
    scan_jsonl(str(b), state)
    pruned = panscan("state", "prune", "--keep", "1", "--state", str(state))
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 sweep (2)" in pruned.stdout
    with sqlite3.connect(state) as db:
        assert [r[0] for r in db.execute("SELECT id FROM sweeps ORDER BY id")] == [1, 3]
    again = panscan("state", "prune", "--older-than", "0d", "--state", str(state))
    assert again.returncode == 0 and again.stdout == "panscan: nothing to prune: 2 sweeps kept\n"


def test_prune_removes_sweeps_older_than_an_age(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, files=3)
    state = tmp_path / "state.db"
    scan_jsonl(str(root), state)
    kept = scan_jsonl(str(root), state).stdout
    scan_jsonl(str(root), state)
    with sqlite3.connect(state) as db:  # sweeps 1 and 2 as if run 100 and 40 days ago
        db.execute("UPDATE sweeps SET started = started - 100 * 86400 WHERE id = 1")
        db.execute("UPDATE sweeps SET started = started - 40 * 86400 WHERE id = 2")
    pruned = panscan("state", "prune", "--older-than", "90d", "--state", str(state))
    assert pruned.returncode == 0 and "removed 1 sweep (1)," in pruned.stdout
    assert report(state, 2).stdout == kept


def test_prune_refuses_bad_arguments_with_exit_3_and_a_clear_message(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, files=2)
    state = tmp_path / "state.db"
    scan_jsonl(str(root), state)
    for args, message in (
            ((), "one of the arguments --keep --older-than is required"),
            (("--keep", "0"), "argument --keep: expected a whole number of sweeps from 1 to 1000000"),
            (("--keep", "two"), "argument --keep: expected a whole number of sweeps"),
            (("--older-than", "90"), "argument --older-than: expected an age such as 90d, 13w or 2y"),
            (("--keep", "2", "--older-than", "90d"), "argument --older-than: not allowed with argument --keep")):
        proc = panscan("state", "prune", *args, "--state", str(state))
        assert proc.returncode == 3 and message in proc.stderr, (args, proc.stderr)
    missing = panscan("state", "prune", "--keep", "1", "--state", str(tmp_path / "none.db"))
    assert missing.returncode == 3 and "no state database" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    assert rows(state)["sweeps"] == 1


def test_state_bounds_in_the_policy_prune_after_each_scan_and_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, files=3)
    state = tmp_path / "state.db"
    policy = tmp_path / "panscan.toml"
    policy.write_text("[state]\nkeep = 2\n")
    for _ in range(4):
        scan_jsonl(str(root), state, "--policy", str(policy))
    with sqlite3.connect(state) as db:
        assert [r[0] for r in db.execute("SELECT id FROM sweeps ORDER BY id")] == [3, 4]
    assert report(state, 3).returncode == 1  # card.txt: the stored sweep exits as it did

    checked = panscan("check-config", str(policy))
    assert checked.returncode == 0 and "state: keep the newest 2 sweeps after each scan" in checked.stdout
    policy.write_text('[retention]\ndefault_max_age = "1y"\n\n[state]\nkeep = 2\nprune_older_than = "soon"\n')
    bad = panscan("check-config", str(policy))
    assert bad.returncode == 3
    assert (f'{policy}:6: [state] prune_older_than: expected a duration such as "90d", "13w" or "2y", got "soon"'
            in bad.stderr)
    policy.write_text("[state]\nkeep = 0\n")
    assert f"{policy}:2: [state] keep: expected a whole number of sweeps from 1 to" in panscan(
        "check-config", str(policy)).stderr


def test_a_state_of_the_old_schema_is_refused_with_a_message_to_move_it_aside(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with sqlite3.connect(state) as db:  # what panscan before issue 15 wrote
        db.execute("CREATE TABLE sweeps (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE sweep_items (sweep_id INTEGER)")
        db.execute(f"PRAGMA application_id = {0x50616E53}")
        db.execute("PRAGMA user_version = 1")
    root = tmp_path / "data"
    make_tree(root, files=1)
    for proc in (panscan("scan", str(root), "--state", str(state), "--format", "jsonl"),
                 panscan("report", "--state", str(state)),
                 panscan("state", "prune", "--keep", "1", "--state", str(state))):
        assert proc.returncode == 3, proc.stderr
        assert (f"the state database {state} was written by an older panscan (schema version 1, this panscan "
                f"needs 2): move it aside (e.g. mv {state} {state}.v1)") in proc.stderr
    with sqlite3.connect(state) as db:  # left alone
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master ORDER BY name")] == ["sweep_items", "sweeps"]
