"""A Glacier vault swept end to end with the CLI against the moto server, across runs, as an
assessor would: the inventory job, the inventory, retention and the description, retrieval
(asked for, refused without a terminal, then confirmed), and the content of a tar.gz archive."""

from __future__ import annotations

# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
from archives import tar_gz
from s3_server import MotoS3, moto_server, of_type, s3  # noqa: F401

from panscan.match.luhn import check_digit


def pan(n: int) -> str:
    body = f"5105{n:011d}"
    return body + check_digit(body)


def masked(number: str) -> str:
    return number[:6] + "******" + number[-4:]


def backdate(vault: str, archive_id: str, when: str) -> None:
    """Give an archive another CreationDate in moto's backend (the server runs in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.glacier.models import glacier_backends

    glacier_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].vaults[vault].archives[archive_id]["creation_date"] = when


def panscan(*args: str, stdin: Any = subprocess.DEVNULL) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True, stdin=stdin,
                          timeout=180, env=dict(os.environ))
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


def test_a_vault_is_swept_across_runs_from_inventory_to_archive_content(s3: MotoS3, tmp_path: Path) -> None:
    g = boto3.client("glacier", endpoint_url=s3.endpoint, region_name="us-east-1")
    g.create_vault(vaultName="backups")
    in_description, in_content = pan(1), pan(2)
    notes = g.upload_archive(vaultName="backups", body=b"backup notes, nothing else\n",
                             archiveDescription=f"customer export {in_description}")["archiveId"]
    dump = g.upload_archive(vaultName="backups", body=tar_gz({"exports/cards.csv": f"id,card\n7,{in_content}\n"
                                                              .encode()}),
                            archiveDescription="db dump 2019")["archiveId"]
    for archive in (notes, dump):
        backdate("backups", archive, "2019-05-01T00:00:00.000Z")
    policy = tmp_path / "panscan.toml"
    policy.write_text('[retention]\ndefault_max_age = "365d"\n')
    common = ["scan", "glacier://backups", "--state", str(tmp_path / "state.db"), "--policy", str(policy),
              "--format", "jsonl", "--workers", "2"]

    # Run 1: no inventory yet; the job is started and the vault is pending.
    code, records, err = panscan(*common)
    assert code == 2, err
    [pending] = of_type(records, "item")
    assert (pending["location"], pending["status"], pending["reason"]) == ("glacier://backups", "skipped",
                                                                          "JOB_PENDING")
    code, jobs, _ = panscan("jobs", "--state", str(tmp_path / "state.db"), "--format", "jsonl")
    assert code == 2 and [j["action"] for j in jobs] == ["InventoryRetrieval"]

    # Run 2: the inventory is collected (waiting for moto's job to finish); both archives are past
    # retention; the number in the description is found; the content is not read yet.
    code, records, err = panscan(*common, "--wait", "60s")
    assert code == 1, err
    assert {r["location"] for r in of_type(records, "retention")} == {f"glacier://backups/{notes}",
                                                                      f"glacier://backups/{dump}"}
    [finding] = of_type(records, "finding")
    assert (finding["masked"], finding["member"], finding["location"], finding["retention"]) == (
        masked(in_description), "(archive description)", f"glacier://backups/{notes}", "expired")
    assert {(r["status"], r["reason"]) for r in of_type(records, "item")} == {("skipped", "INVALID_OBJECT_STATE")}
    assert in_description not in json.dumps(records) + err

    # --retrieve without a terminal and without --yes: the estimate, and nothing initiated.
    code, records, err = panscan(*common, "--retrieve", "--restore", "expedited")
    assert "Expedited" in err and "not initiated" in err
    assert not [j for j in g.list_jobs(vaultName="backups")["JobList"] if j["Action"] == "ArchiveRetrieval"]

    # Run 3: retrieval confirmed with --yes; both archives pending; the description finding stays.
    code, records, err = panscan(*common, "--retrieve", "--restore", "expedited", "--yes")
    assert code == 1, err
    assert len([j for j in g.list_jobs(vaultName="backups")["JobList"] if j["Action"] == "ArchiveRetrieval"]) == 2
    assert {r["reason"] for r in of_type(records, "item")} == {"JOB_PENDING"}
    assert [f["masked"] for f in of_type(records, "finding")] == [masked(in_description)]

    # Run 4: the outputs are read (tree hash checked) and the number inside the tar.gz is found.
    code, records, err = panscan(*common, "--wait", "60s")
    assert code == 1, err
    found = {(f["masked"], f["member"]) for f in of_type(records, "finding")}
    assert (masked(in_description), "(archive description)") in found
    assert any(m == masked(in_content) and member and member.endswith("exports/cards.csv") for m, member in found)
    assert {r["status"] for r in of_type(records, "item")} == {"complete"}
    # The state keeps the inventory and the results: masked descriptions and masked findings only.
    for f in tmp_path.iterdir():
        if f.name.startswith("state.db"):
            data = f.read_bytes()
            assert in_description.encode() not in data and in_content.encode() not in data, f.name
