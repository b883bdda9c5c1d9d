"""What a Glacier sweep says, against the moto server, with the CLI (issue 21): the reason an
archive was not retrieved when --retrieve was given, the cost estimate said once and in
correct English, what 'jobs --collect' says about archives retrieved and not read yet, ages
judged as of --as-of while an inventory's staleness is judged by the clock, and the creation
date and tree hash every archive item carries."""

from __future__ import annotations

# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from s3_server import MotoS3, moto_server, of_type, s3  # noqa: F401

ESTIMATE = "Glacier archive retrieval of "


def backdate(vault: str, archive_id: str, when: str) -> None:
    """Give an archive another CreationDate in moto's backend (the server runs in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.glacier.models import glacier_backends

    glacier_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].vaults[vault].archives[archive_id]["creation_date"] = when


def panscan(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=180, env=dict(os.environ))
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


@dataclass
class Vault:
    """A vault of three archives created in 2019 (100, 200 and 300 bytes, in that order) whose
    inventory is already in the state."""

    glacier: Any
    state: Path
    archives: list[str]  # archive ids, in upload (and inventory) order
    checksums: list[str]  # their SHA-256 tree hashes, as UploadArchive returned them

    def scan(self, *args: str) -> tuple[int, list[dict[str, Any]], str]:
        return panscan("scan", "glacier://vault", "--state", str(self.state), "--format", "jsonl", *args)

    def archive_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.glacier.list_jobs(vaultName="vault")["JobList"] if j["Action"] == "ArchiveRetrieval"]

    def inventory_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.glacier.list_jobs(vaultName="vault")["JobList"] if j["Action"] == "InventoryRetrieval"]


@pytest.fixture
def vault(s3: MotoS3, tmp_path: Path) -> Vault:
    g = boto3.client("glacier", endpoint_url=s3.endpoint, region_name="us-east-1")
    g.create_vault(vaultName="vault")
    archives, checksums = [], []
    for n, size in enumerate((100, 200, 300)):
        made = g.upload_archive(vaultName="vault", body=b"x" * size, archiveDescription=f"backup {n}")
        archives.append(made["archiveId"])
        checksums.append(made["checksum"])
        backdate("vault", made["archiveId"], "2019-05-01T00:00:00.000Z")
    v = Vault(g, tmp_path / "state.db", archives, checksums)
    code, _, err = v.scan("--wait", "60s")  # the inventory job, waited for: the inventory is stored
    assert code == 2, err
    assert len(v.inventory_jobs()) == 1
    return v


def archive_items(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["location"].rsplit("/", 1)[1]: r for r in of_type(records, "item") if r["location"].count("/") == 3}


def test_archives_left_out_by_max_bytes_say_so_and_not_use_retrieve(vault: Vault) -> None:
    code, records, err = vault.scan("--retrieve", "--yes", "--max-bytes", "150")
    assert code == 2, err
    assert len(vault.archive_jobs()) == 1  # the first archive only: the next would pass 150 bytes
    items = archive_items(records)
    first, second, third = (items[a] for a in vault.archives)
    assert first["reason"] == "JOB_PENDING"
    for left_out in (second, third):
        assert (left_out["status"], left_out["reason"]) == ("skipped", "INVALID_OBJECT_STATE")
        assert "left out by --max-bytes" in left_out["detail"]
        assert "use --retrieve" not in left_out["detail"]


def test_the_estimate_is_said_once_in_the_singular_when_retrievals_are_started(vault: Vault) -> None:
    _, _, err = vault.scan("--retrieve", "--yes", "--max-bytes", "150")
    assert err.count(ESTIMATE) == 1, err
    assert f"{ESTIMATE}1 archive in 1 vault (" in err


def test_without_yes_the_estimate_is_said_once_and_archives_say_retrieval_was_not_confirmed(vault: Vault) -> None:
    code, records, err = vault.scan("--retrieve")
    assert code == 2, err
    assert vault.archive_jobs() == []  # nothing initiated
    assert err.count(ESTIMATE) == 1, err
    assert f"{ESTIMATE}3 archives in 1 vault (" in err
    for item in archive_items(records).values():
        assert item["reason"] == "INVALID_OBJECT_STATE"
        assert "retrieval not confirmed" in item["detail"] and "--yes" in item["detail"]
        assert "use --retrieve" not in item["detail"]
    # Without --retrieve, the advice is to use it.
    _, records, _ = vault.scan()
    assert all("(use --retrieve)" in item["detail"] for item in archive_items(records).values())


def wait_for_succeeded_retrieval(vault: Vault) -> None:
    deadline = time.monotonic() + 60
    while not all(j["StatusCode"] == "Succeeded" for j in vault.archive_jobs()):
        assert time.monotonic() < deadline, "moto did not complete the retrieval job"
        time.sleep(1)


def test_jobs_collect_says_what_the_next_scan_reads_until_it_has_read_it(vault: Vault) -> None:
    vault.scan("--retrieve", "--yes", "--max-bytes", "150")
    wait_for_succeeded_retrieval(vault)

    collect = subprocess.run([sys.executable, "-m", "panscan", "jobs", "--collect", "--state", str(vault.state)],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert collect.returncode == 2, collect.stderr
    assert "succeeded; the next scan reads the archive" in collect.stderr
    assert "No pending" not in collect.stdout
    assert "Retrieved Glacier archives not read yet (1): the next scan of glacier://vault reads them" in collect.stdout
    assert vault.archives[0] in collect.stdout
    code, records, _ = panscan("jobs", "--state", str(vault.state), "--format", "jsonl")
    assert code == 2
    assert [(j["archive_id"], j["status"]) for j in records] == [(vault.archives[0], "succeeded")]

    # The next scan reads it; then nothing is left to read, and nothing pending.
    code, records, err = vault.scan()
    assert archive_items(records)[vault.archives[0]]["status"] == "complete", err
    after = subprocess.run([sys.executable, "-m", "panscan", "jobs", "--state", str(vault.state)],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert (after.returncode, after.stdout) == (0, "No pending restores or Glacier jobs.\n")


def test_as_of_in_the_future_judges_ages_but_not_the_staleness_of_a_fresh_inventory(vault: Vault,
                                                                                     tmp_path: Path) -> None:
    policy = tmp_path / "panscan.toml"
    policy.write_text('[retention]\ndefault_max_age = "365d"\n')
    code, records, err = vault.scan("--policy", str(policy), "--as-of", "2030-05-01")
    assert code == 1, err
    assert "days old" not in err  # the inventory was collected minutes ago
    assert len(vault.inventory_jobs()) == 1  # and it is fresh: no new inventory job
    ages = {r["location"].rsplit("/", 1)[1]: r["age_days"] for r in of_type(records, "retention")}
    assert ages == {a: 4018 for a in vault.archives}  # 2019-05-01 to 2030-05-01


def test_archive_items_carry_their_creation_date_and_tree_hash(vault: Vault) -> None:
    _, records, _ = vault.scan()
    items = archive_items(records)
    for archive, checksum in zip(vault.archives, vault.checksums, strict=True):
        assert items[archive]["creation_date"] == "2019-05-01T00:00:00Z"
        assert items[archive]["tree_hash"] == checksum
