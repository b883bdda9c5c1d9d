"""Card numbers in Glacier archive descriptions are reported whichever run collects the vault's
inventory: the scan itself, or ``panscan jobs --collect`` before it (issue 16, class 8).

Each test drives the real CLI against the moto server. The two ways are run against the same
vault with two state databases in one directory, so they share the fingerprint key (it lives
beside the state) and their findings can be compared fingerprint for fingerprint.

moto completes a job seconds after it starts; the server runs in this process, so
:func:`finish_jobs` moves every job's completion into the past instead of sleeping.
"""

from __future__ import annotations

# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from s3_server import MotoS3, moto_server, of_type, s3  # noqa: F401

from panscan.findings.mask import fingerprint, load_or_create_key
from panscan.model import Item
from panscan.sources.glacier import GlacierOptions, enumerate_glacier
from panscan.state import State

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan, spaced

VAULT = "ledger"
MEMBER = "(archive description)"
IN_NOTE = make_pan("510510", 16)
IN_SPACED = make_pan("453201", 16)


def masked(number: str) -> str:
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def finish_jobs() -> None:
    """Make every job on the moto server complete now."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.glacier.models import glacier_backends

    for vault in glacier_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].vaults.values():
        for job in vault.jobs.values():
            job.et = datetime.now() - timedelta(seconds=1)


def panscan(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=180, env=dict(os.environ))
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


def scan(state: Path, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    return panscan("scan", f"glacier://{VAULT}", "--state", str(state), "--format", "jsonl", "--workers", "2",
                   *extra)


def make_vault(s3: MotoS3) -> dict[str, str]:
    """Three archives, none of them holding a number in its content: two descriptions hold one
    (one plain, one in groups of four), the third holds none. Archive ids by name."""
    g = boto3.client("glacier", endpoint_url=s3.endpoint, region_name="us-east-1")
    g.create_vault(vaultName=VAULT)
    described = {"note": f"customer export {IN_NOTE}", "spaced": f"card {spaced(IN_SPACED)} refund",
                 "plain": "db dump 2019"}
    return {name: g.upload_archive(vaultName=VAULT, body=f"archive {name}, nothing in it\n".encode(),
                                   archiveDescription=text)["archiveId"]
            for name, text in described.items()}


def collected_by_jobs_command(state: Path) -> None:
    """Start the inventory job with a scan, let it finish, collect it with ``panscan jobs
    --collect``: the state then holds a fresh inventory no scan has read."""
    code, records, err = scan(state)
    assert code == 2, err
    assert [(r["location"], r["reason"]) for r in of_type(records, "item")] == [(f"glacier://{VAULT}", "JOB_PENDING")]
    finish_jobs()
    code, _, err = panscan("jobs", "--collect", "--state", str(state), "--format", "jsonl")
    assert "inventory collected (3 archives)" in err, err


def description_findings(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(f["location"], f["member"], f["masked"], f["fingerprint"], f["offset"], f["line"], f["kind"],
             f["brand"], f["confidence"], f["test_card"]) for f in of_type(records, "finding")}


def expected(archives: dict[str, str]) -> set[tuple[str, str, str]]:
    return {(f"glacier://{VAULT}/{archives['note']}", MEMBER, masked(IN_NOTE)),
            (f"glacier://{VAULT}/{archives['spaced']}", MEMBER, masked(IN_SPACED))}


def assert_no_full_number(tmp_path: Path, *outputs: str) -> None:
    for number in (IN_NOTE, IN_SPACED):
        for text in outputs:
            assert number not in text and spaced(number) not in text
        for f in tmp_path.iterdir():
            if f.name.endswith((".db", ".db-wal", ".db-shm")):
                data = f.read_bytes()
                assert number.encode() not in data and spaced(number).encode() not in data, f.name


def test_description_numbers_are_reported_alike_when_jobs_collect_fetched_the_inventory(
        s3: MotoS3, tmp_path: Path) -> None:
    archives = make_vault(s3)

    # A: the scan collects the inventory itself (waiting for moto's job).
    code_a, records_a, err_a = scan(tmp_path / "a.db", "--wait", "60s")
    # B: `panscan jobs --collect` collects it, a later scan reads the stored inventory.
    collected_by_jobs_command(tmp_path / "b.db")
    code_b, records_b, err_b = scan(tmp_path / "b.db")

    for path, code, records, err in (("A", code_a, records_a, err_a), ("B", code_b, records_b, err_b)):
        found = {(f["location"], f["member"], f["masked"]) for f in of_type(records, "finding")}
        assert found == expected(archives), path
        assert code == 1, (path, err)
        # The content was never retrieved, and the item says so; the description was read anyway.
        assert {(r["location"].rpartition("/")[2], r["status"], r["reason"]) for r in of_type(records, "item")} == {
            (a, "skipped", "INVALID_OBJECT_STATE") for a in archives.values()}
    assert description_findings(records_b) == description_findings(records_a)

    # A later sweep of B still reports them (the state keeps only the masked description).
    code, again, err = scan(tmp_path / "b.db")
    assert code == 1, err
    assert description_findings(again) == description_findings(records_a)
    assert {f["change"] for f in of_type(again, "finding")} == {"still present"}
    assert_no_full_number(tmp_path, json.dumps([records_a, records_b, again]), err_a, err_b, err)


def test_description_numbers_survive_retrieval_in_the_first_scan_after_jobs_collect(
        s3: MotoS3, tmp_path: Path) -> None:
    archives = make_vault(s3)
    collected_by_jobs_command(tmp_path / "b.db")

    # The first scan after collection retrieves and reads every archive's content in one run.
    code, records, err = scan(tmp_path / "b.db", "--retrieve", "--restore", "expedited", "--yes", "--wait", "60s")
    assert code == 1, err
    assert {r["status"] for r in of_type(records, "item")} == {"complete"}, err
    assert {(f["location"], f["member"], f["masked"]) for f in of_type(records, "finding")} == expected(archives)

    # The next sweep carries the complete archives unchanged, description findings included.
    code, again, err2 = scan(tmp_path / "b.db")
    assert code == 1, err2
    assert description_findings(again) == description_findings(records)
    assert_no_full_number(tmp_path, json.dumps([records, again]), err, err2)


def test_jobs_collect_leaves_an_inventory_for_the_scan_when_the_fingerprint_key_is_unusable(
        s3: MotoS3, tmp_path: Path) -> None:
    archives = make_vault(s3)
    state = tmp_path / "b.db"
    code, _, err = scan(state)
    assert code == 2, err
    finish_jobs()
    key = tmp_path / "fingerprint.key"
    good = key.read_bytes()
    key.write_bytes(b"damaged")

    # Stored without its descriptions' findings, the inventory would hide them: not collected.
    code, jobs, err = panscan("jobs", "--collect", "--state", str(state), "--format", "jsonl")
    assert "not collected here: cannot use the fingerprint key" in err, err
    assert code == 2 and [(j["action"], j["status"]) for j in jobs] == [("InventoryRetrieval", "pending")]

    # Once the key is usable again, the next scan collects the inventory itself.
    key.write_bytes(good)
    code, records, err = scan(state)
    assert code == 1, err
    assert {(f["location"], f["member"], f["masked"]) for f in of_type(records, "finding")} == expected(archives)


def test_an_inventory_a_scan_collected_keeps_the_description_findings_for_a_sweep_that_never_read_it(
        s3: MotoS3, tmp_path: Path) -> None:
    """A scan that collects an inventory and stops before its workers reach the archives (killed,
    interrupted) leaves only masked descriptions: the next sweep still gets their findings."""
    archives = make_vault(s3)
    with State.open(tmp_path / "state.db") as state:
        list(enumerate_glacier([f"glacier://{VAULT}"], GlacierOptions(), state))  # starts the job
        finish_jobs()
        listed = [r for r in enumerate_glacier([f"glacier://{VAULT}"], GlacierOptions(), state)
                  if isinstance(r, Item)]
    key = load_or_create_key(tmp_path)
    with State.open(tmp_path / "state.db") as state:  # no sweep ever recorded these archives
        found = {(f.location, f.member, f.masked, f.fingerprint)
                 for item in listed for f in state.last_findings(item, MEMBER)}
    assert found == {(f"glacier://{VAULT}/{archives['note']}", MEMBER, masked(IN_NOTE), fingerprint(IN_NOTE, key)),
                     (f"glacier://{VAULT}/{archives['spaced']}", MEMBER, masked(IN_SPACED),
                      fingerprint(IN_SPACED, key))}
    assert_no_full_number(tmp_path)
