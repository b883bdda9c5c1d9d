"""Canary on the AWS side: card numbers planted in S3 and Glacier never reach any output.

Generated Luhn-valid Visa numbers (random bodies, a fresh set each run) are planted in a
versioned S3 bucket: object content (plain, spaced, dashed), object keys, user metadata,
Content-Disposition, tags, an old version behind a delete marker, a gzip stream and its
header's file name, a zip member's name and content, a GLACIER-class object restored on
request, a lifecycle rule's id and prefix; in the name of a second bucket; and in a Glacier
vault: its name, an archive description, and a tar.gz archive's content and member name.
Keys, user metadata, Content-Disposition and (with ``--tags``) tags are findings of their own,
reported masked under their member (``(name)``, ``(metadata x-amz-meta-card)``, ``(tag alt)``).
Every report format runs with debug logging, to stdout and to ``-o``, with an evidence
bundle, a worker killed mid-scan, stored reports, jobs and the retention sweep; no stdout,
stderr, report, bundle file, state file (also as UTF-16) or file left in the runs' TMPDIR
may hold a planted number in any form, and the numbers the scan reads are reported masked.
"""

from __future__ import annotations

# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)
import gzip
import io
import json
import os
import random
import resource
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from archives import tar_gz
from s3_server import MotoS3, moto_server, s3, versioned_bucket  # noqa: F401

from panscan.engine.worker import TEST_CRASH_ENV
from panscan.match.luhn import check_digit

RNG = random.Random()  # a fresh set of numbers each run: nothing can be special-cased


def make_pan() -> str:
    body = "4" + "".join(RNG.choice("0123456789") for _ in range(14))
    return body + check_digit(body)


_PLACES = (
    "plain", "spaced", "dashed", "in_key", "under_key", "metadata", "metadata_spaced", "disposition", "tag",
    "tag_dashed", "old_version", "gzip", "gzip_header", "zip_member_name", "zip_member", "cold_key", "cold",
    "rule_id", "rule_prefix", "crash_key", "crash_content", "bucket_name", "in_named_bucket", "vault_name",
    "description", "archive", "tar_member_name", "spare")
PAN = {place: make_pan() for place in _PLACES}  # where each number is planted
PANS = list(PAN.values())
BUCKET = "canary-data"
NAMED_BUCKET = f"export-{PAN['bucket_name']}"
VAULT = f"backups-{PAN['vault_name']}"


def forms(pan: str) -> list[str]:
    groups = [pan[i:i + 4] for i in range(0, 16, 4)]
    return [pan, " ".join(groups), "-".join(groups)]


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


def assert_clean(where: str, data: bytes, pans: Iterable[str] = PANS) -> None:
    text = data.decode("latin-1")
    for pan in pans:
        for n, form in enumerate(forms(pan)):
            assert form not in text, f"a planted card number (form {n}) leaked into {where}"
            for codec in ("utf-16-le", "utf-16-be"):
                assert form.encode(codec) not in data, f"a planted card number ({codec}) leaked into {where}"


def assert_tree_clean(what: str, root: Path, pans: Iterable[str] = PANS) -> int:
    """Every file under ``root`` is clean; returns how many there are."""
    files = [f for f in root.rglob("*") if f.is_file()]
    for f in files:
        assert_clean(f"{what} file {f.relative_to(root)}", f.read_bytes(), pans)
    return len(files)


class Runs:
    """``python -m panscan -v ...`` runs with TMPDIR set to a directory of their own; their
    stdout and stderr are kept to be checked, and what they show (stdout and report files)
    to find the masked numbers in."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.outputs: list[tuple[str, bytes, list[str]]] = []
        self.shown = ""

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 pans: list[str] = PANS) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([sys.executable, "-m", "panscan", "-v", *args], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=120,
                              env={**os.environ, "TMPDIR": str(self.tmpdir), **(env or {})})
        run = f"panscan {' '.join(args)} (run {len(self.outputs) // 2 + 1})"
        self.outputs += [(f"stdout of {run}", proc.stdout, pans), (f"stderr of {run}", proc.stderr, pans)]
        self.shown += proc.stdout.decode("utf-8", "replace")
        if args[0] == "scan":  # the other commands have little to log
            assert b"DEBUG" in proc.stderr, f"{run}: no debug log\n{err(proc)}"
        return proc

    def read(self, report: Path) -> None:
        data = report.read_bytes()
        self.outputs.append((f"report file {report.name}", data, PANS))
        self.shown += data.decode("utf-8", "replace")

    def assert_clean(self) -> None:
        for where, data, pans in self.outputs:
            assert_clean(where, data, pans)
        assert_tree_clean("TMPDIR", self.tmpdir)


def jsonl(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]


def err(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode("utf-8", "replace")[-3000:]


# --- what is planted --------------------------------------------------------------------------


def gzip_named(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def plant_named_bucket(s3: MotoS3) -> None:
    """A bucket whose very name holds a number (no command line names it: ``s3://`` lists it)."""
    c = s3.client
    c.create_bucket(Bucket=NAMED_BUCKET)
    c.put_object(Bucket=NAMED_BUCKET, Key="data.txt", Body=f"card {PAN['in_named_bucket']}\n".encode())


def plant_bucket(s3: MotoS3) -> None:
    c = versioned_bucket(s3, BUCKET)

    def put(key: str, body: bytes, **extra: Any) -> None:
        c.put_object(Bucket=BUCKET, Key=key, Body=body, **extra)

    put("orders/plain.txt", f"order 17 card {PAN['plain']} exp 12/27\n".encode())
    put("orders/spaced.log", f"line one\ncc: {forms(PAN['spaced'])[1]}\n".encode())
    put("orders/dashed.csv", f"id,card\n3,{forms(PAN['dashed'])[2]}\n".encode())
    put(f"exports/cust-{PAN['in_key']}.csv", f"id,card\n1,{PAN['under_key']}\n".encode())
    put("meta/notes.txt", b"nothing to see here\n",
        Metadata={"card": PAN["metadata"], "note": f"spaced form {forms(PAN['metadata_spaced'])[1]}"},
        ContentDisposition=f'attachment; filename="{PAN["disposition"]}.csv"',
        Tagging=f"card={PAN['tag']}&alt={forms(PAN['tag_dashed'])[2]}")
    put("history/ledger.txt", f"settled {PAN['old_version']}\n".encode())
    c.delete_object(Bucket=BUCKET, Key="history/ledger.txt")  # that version is now behind a delete marker
    put("dumps/cards.txt.gz", gzip_named(f"cards-{PAN['gzip_header']}.txt", f"visa {PAN['gzip']}\n".encode()))
    put("dumps/bundle.zip", zip_of({f"cards-{PAN['zip_member_name']}.txt": f"card {PAN['zip_member']}\n".encode()}))
    put(f"cold/card-{PAN['cold_key']}.txt", f"card {PAN['cold']}\n".encode(), StorageClass="GLACIER")
    put(f"crash-here/boom-{PAN['crash_key']}.txt", f"card {PAN['crash_content']}\n".encode())
    c.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [{
        "ID": f"expire-{PAN['rule_id']}", "Status": "Enabled", "Filter": {"Prefix": f"tmp/{PAN['rule_prefix']}/"},
        "Expiration": {"Days": 3650}}]})
    # The places that are not content really hold the numbers.
    head = c.head_object(Bucket=BUCKET, Key="meta/notes.txt")
    assert head["Metadata"]["card"] == PAN["metadata"] and PAN["disposition"] in head["ContentDisposition"]
    assert c.get_object_tagging(Bucket=BUCKET, Key="meta/notes.txt")["TagSet"][0]["Value"] == PAN["tag"]
    assert len(c.list_object_versions(Bucket=BUCKET, Prefix="history/")["DeleteMarkers"]) == 1


def plant_vault(s3: MotoS3) -> None:
    g = boto3.client("glacier", endpoint_url=s3.endpoint, region_name="us-east-1")
    g.create_vault(vaultName=VAULT)
    g.upload_archive(vaultName=VAULT, archiveDescription=f"customer export {PAN['description']}",
                     body=tar_gz({f"exports/cust-{PAN['tar_member_name']}.csv":
                                  f"id,card\n7,{PAN['archive']}\n".encode()}))


# --- the canaries -----------------------------------------------------------------------------


def test_no_number_planted_in_s3_content_keys_metadata_tags_or_bucket_names_reaches_any_output(
        s3: MotoS3, tmp_path: Path) -> None:
    plant_bucket(s3)
    plant_named_bucket(s3)
    run = Runs(tmp_path)
    state = tmp_path / "state" / "state.db"
    reports, evidence = tmp_path / "reports", tmp_path / "evidence"
    reports.mkdir()
    # `s3://`: every bucket, the one named with a number included; tags read too.
    common = ["s3://", "--state", str(state), "--workers", "2", "--tags"]

    proc = run("scan", *common, "--format", "jsonl", "--restore", "expedited")  # the GLACIER object: restore
    assert proc.returncode == 1, err(proc)
    assert {(r["location"], r["reason"]) for r in jsonl(proc) if r["type"] == "item" and r["reason"]} == {
        (f"s3://{BUCKET}/cold/card-{masked(PAN['cold_key'])}.txt", "RESTORE_REQUESTED")}
    proc = run("jobs", "--state", str(state))
    assert proc.returncode == 2, err(proc)  # the restore is pending
    for fmt in ("table", "jsonl", "csv", "html"):
        proc = run("scan", *common, "--format", fmt)
        assert proc.returncode == 1, err(proc)
        out = reports / f"scan.{fmt}"
        extra = ["--evidence", str(evidence)] if fmt == "jsonl" else []
        proc = run("scan", *common, "--format", fmt, "-o", str(out), *extra)
        assert proc.returncode == 1, err(proc)
        run.read(out)
    proc = run("verify", str(evidence), "--state", str(state))
    assert proc.returncode == 0, err(proc)
    for fmt in ("table", "jsonl", "html"):  # the latest sweep, from the state
        proc = run("report", "--state", str(state), "--format", fmt)
        assert proc.returncode == 1, err(proc)
    policy = tmp_path / "policy.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    proc = run("retention", "s3://", "--policy", str(policy), "--format", "jsonl", "--as-of", "2100-01-01")
    assert proc.returncode == 1, err(proc)
    retention_locations = {r.get("location") for r in jsonl(proc)}

    run.assert_clean()
    assert assert_tree_clean("evidence bundle", evidence) >= 4
    assert assert_tree_clean("state directory", state.parent) >= 2  # the database and the key

    # Scanning nothing would pass the checks above: every number in content was reported,
    # masked, and the keys, zip member and bucket holding numbers are named masked.
    shown = run.shown
    for place in ("plain", "spaced", "dashed", "under_key", "old_version", "gzip", "zip_member", "cold",
                  "crash_content", "in_named_bucket"):
        assert masked(PAN[place]) in shown, place
    assert f"s3://{BUCKET}/exports/cust-{masked(PAN['in_key'])}.csv" in shown
    assert f"cards-{masked(PAN['zip_member_name'])}.txt" in shown
    # Names, metadata and tags are findings, each under the member that says where.
    found = {(r["member"], r["masked"]) for r in map(json.loads, (reports / "scan.jsonl").read_text().splitlines())
             if r["type"] == "finding"}
    assert {("(name)", masked(PAN["in_key"])), ("(metadata x-amz-meta-card)", masked(PAN["metadata"])),
            ("(metadata x-amz-meta-note)", masked(PAN["metadata_spaced"])),
            ("(metadata Content-Disposition)", masked(PAN["disposition"])), ("(tag card)", masked(PAN["tag"])),
            ("(tag alt)", masked(PAN["tag_dashed"]))} <= found, found
    assert f"s3://{NAMED_BUCKET.replace(PAN['bucket_name'], masked(PAN['bucket_name']))}/data.txt" in shown
    assert f"expire-{masked(PAN['rule_id'])}" in shown  # the bucket's lifecycle rule, in the bucket record
    assert f"s3://{BUCKET}/exports/cust-{masked(PAN['in_key'])}.csv" in retention_locations
    assert f"s3://{BUCKET}/history/ledger.txt" in retention_locations


def test_a_worker_killed_on_an_s3_object_named_with_a_number_leaks_no_number(s3: MotoS3, tmp_path: Path) -> None:
    plant_bucket(s3)
    run = Runs(tmp_path)
    state = tmp_path / "state" / "state.db"
    proc = run("scan", f"s3://{BUCKET}", "--state", str(state), "--workers", "2", "--format", "jsonl",
               env={TEST_CRASH_ENV: "crash-here/boom-"})
    assert proc.returncode == 1, err(proc)
    crashed = [r["location"] for r in jsonl(proc) if r["type"] == "item" and r["reason"] == "WORKER_CRASHED"]
    assert crashed == [f"s3://{BUCKET}/crash-here/boom-{masked(PAN['crash_key'])}.txt"]
    assert masked(PAN["crash_content"]) not in run.shown  # the killed worker read nothing of it
    assert masked(PAN["plain"]) in run.shown  # the other objects were read
    run.assert_clean()
    assert_tree_clean("state directory", state.parent)


def test_no_number_planted_in_a_glacier_vault_reaches_any_output(s3: MotoS3, tmp_path: Path) -> None:
    plant_vault(s3)
    run = Runs(tmp_path)
    state = tmp_path / "state" / "state.db"
    common = ["scan", "glacier://", "--state", str(state), "--workers", "2", "--format", "jsonl"]
    proc = run(*common)  # the inventory job is started
    assert proc.returncode == 2, err(proc)
    assert {r["reason"] for r in jsonl(proc) if r["type"] == "item"} == {"JOB_PENDING"}
    proc = run(*common, "--wait", "60s")  # the inventory: the description is scanned
    assert proc.returncode == 1, err(proc)
    proc = run(*common, "--retrieve", "--yes", "--restore", "expedited")
    assert proc.returncode == 1, err(proc)
    proc = run("jobs", "--state", str(state))
    assert proc.returncode == 2, err(proc)  # the archive retrieval is pending
    proc = run(*common, "--wait", "60s")  # the archive is read
    assert proc.returncode == 1, err(proc)
    found = {(f["masked"], f["member"]) for f in jsonl(proc) if f["type"] == "finding"}
    for fmt in ("table", "jsonl", "html"):  # the latest sweep, from the state
        proc = run("report", "--state", str(state), "--format", fmt)
        assert proc.returncode == 1, err(proc)
    policy = tmp_path / "policy.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    proc = run("retention", "glacier://", "--state", str(state), "--policy", str(policy), "--format", "jsonl",
               "--as-of", "2100-01-01")
    assert proc.returncode == 1, err(proc)

    run.assert_clean()
    assert_tree_clean("state directory", state.parent)
    assert (masked(PAN["description"]), "(archive description)") in found
    member = f"exports/cust-{masked(PAN['tar_member_name'])}.csv"
    assert any(m == masked(PAN["archive"]) and (at or "").endswith(member) for m, at in found), found
    assert f"glacier://backups-{masked(PAN['vault_name'])}/" in run.shown


# --- names holding a number, in summaries, job lists and the state ---------------------------


def test_the_retention_summary_masks_a_bucket_named_with_a_number(s3: MotoS3, tmp_path: Path) -> None:
    plant_named_bucket(s3)
    run = Runs(tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text('[retention]\ndefault_max_age = "1d"\n')
    for fmt in ("jsonl", "table"):
        proc = run("retention", "s3://", "--policy", str(policy), "--format", fmt, "--as-of", "2100-01-01")
        assert proc.returncode == 1, err(proc)
    run.assert_clean()


def start_inventory_job(s3: MotoS3, tmp_path: Path) -> tuple[Runs, Path]:
    plant_vault(s3)
    run = Runs(tmp_path)
    state = tmp_path / "state" / "state.db"
    proc = run("scan", "glacier://", "--state", str(state), "--workers", "2", "--format", "jsonl")
    assert proc.returncode == 2, err(proc)
    return run, state


def test_jobs_masks_a_vault_named_with_a_number(s3: MotoS3, tmp_path: Path) -> None:
    run, state = start_inventory_job(s3, tmp_path)
    for fmt in ("table", "jsonl"):
        proc = run("jobs", "--state", str(state), "--format", fmt)
        assert proc.returncode == 2, err(proc)
    run.assert_clean()


def test_the_state_keeps_no_vault_name_holding_a_number(s3: MotoS3, tmp_path: Path) -> None:
    run, state = start_inventory_job(s3, tmp_path)
    assert_tree_clean("state directory", state.parent)
    # Collecting from the state alone cannot name the vault to Glacier: it says so, and a scan
    # of the vault (which lists its real name) finds its pending job and collects it.
    proc = run("jobs", "--state", str(state), "--collect")
    assert proc.returncode == 2 and b"scan the vault by name" in proc.stderr, err(proc)
    proc = run("scan", "glacier://", "--state", str(state), "--workers", "2", "--format", "jsonl", "--wait", "60s")
    assert proc.returncode == 1, err(proc)
    assert {r["reason"] for r in jsonl(proc) if r["type"] == "item"} == {"INVALID_OBJECT_STATE"}
    run.assert_clean()
    assert_tree_clean("state directory", state.parent)


# --- core dumps -------------------------------------------------------------------------------

CORE_LIMIT_SPY = """
import os, resource, sys
from panscan.cli import main
from panscan.engine import local

out, target = sys.argv[1], sys.argv[2]
real = local.scan_tasks
with open(out, "w") as f:
    f.write(f"parent {resource.getrlimit(resource.RLIMIT_CORE)}\\n")

def spy(tasks, ctx, emit=None, on_start=None):
    with open(out, "a") as f:
        for _ in tasks:  # one line per task, as the worker is about to scan it
            f.write(f"{os.getpid()} {resource.getrlimit(resource.RLIMIT_CORE)}\\n")
    return real(tasks, ctx, emit, on_start)

local.scan_tasks = spy  # workers fork from this process and call it
sys.exit(main(["scan", target, "--no-state", "--workers", "2"]))
"""


def test_worker_processes_allow_no_core_dumps(tmp_path: Path) -> None:
    """A worker's core dump would hold the full numbers it was matching. The scan starts with
    the hard limit as its soft limit, so the workers' 0 is their own doing."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps are already off for every process here")
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(4):
        (tree / f"f{i}.txt").write_text(f"card {PAN['spare']}\n")
    log = tmp_path / "limits.log"
    proc = subprocess.run([sys.executable, "-c", CORE_LIMIT_SPY, str(log), str(tree)], capture_output=True, text=True,
                          timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (hard, hard)))
    assert proc.returncode == 1 and masked(PAN["spare"]) in proc.stdout, proc.stderr[-3000:]
    assert_clean("scan output", (proc.stdout + proc.stderr).encode())
    parent, *workers = log.read_text().splitlines()
    assert parent == f"parent {(hard, hard)}"
    assert len(workers) == 4 and {line.split(" ", 1)[1] for line in workers} == {"(0, 0)"}, workers
