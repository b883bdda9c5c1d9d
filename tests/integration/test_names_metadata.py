"""Names and metadata are content too (issue 16, class 7): a card number in a file or
directory name, an S3 key, S3 user metadata, Content-Disposition or (with ``--tags``) an object
tag is a finding of its own, masked and counted, whose ``member`` says where it sits.

Real files on disk and a moto server on loopback, reached over HTTP by the worker processes.
"""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from s3_server import MotoS3, moto_server, of_type, s3, scan, versioned_bucket  # noqa: F401

from panscan.engine.local import LocalEngine
from panscan.engine.worker import WorkerContext, scan_task
from panscan.model import Item, Reason, Status, Task
from panscan.sources import s3 as s3_source
from panscan.sources.fetch import PREFETCH_MAX

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import cards

RNG = random.Random()  # fresh numbers each run: nothing can be special-cased


def make_pan(prefix: str, length: int) -> str:
    return cards.make_pan(prefix, length, RNG)


def masked(pan: str) -> str:
    """As reports show it: first six and last four, last four only below 15 digits."""
    if len(pan) < 15:
        return "*" * (len(pan) - 4) + pan[-4:]
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def scan_local(*args: str, state: Path | None = None) -> tuple[int, list[dict[str, Any]], str]:
    keeping = ["--state", str(state)] if state else ["--no-state"]
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", *args, "--format", "jsonl", *keeping,
                           "--workers", "2"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def where(findings: list[dict[str, Any]]) -> Counter[tuple[str, str | None, str]]:
    return Counter((f["location"], f["member"], f["masked"]) for f in findings)


# --- local files and directories ---------------------------------------------------------


def test_a_file_named_with_a_card_number_is_one_name_finding_and_stays_complete(tmp_path: Path) -> None:
    pan = make_pan("4539", 16)
    (tmp_path / f"receipt-{pan}.txt").write_text("nothing in here\n")
    (tmp_path / "20240611123456-backup.log").write_text("a timestamp is no card number\n")

    code, records, err = scan_local(str(tmp_path))

    assert code == 1, err
    [finding] = of_type(records, "finding")
    location = str(tmp_path / f"receipt-{masked(pan)}.txt")
    assert (finding["location"], finding["member"], finding["masked"]) == (location, "(name)", masked(pan))
    assert finding["offset"] == len("receipt-") and finding["brand"] == "Visa"
    items = {i["location"]: i for i in of_type(records, "item")}
    assert (items[location]["status"], items[location]["findings"]) == ("complete", 1)
    [summary] = of_type(records, "summary")
    assert summary["findings"]["total"] == 1  # counted like any finding
    assert pan not in json.dumps(records) + err


def test_a_directory_named_with_a_card_number_is_reported_once_not_once_per_file(tmp_path: Path) -> None:
    pan = make_pan("51", 16)
    named = tmp_path / f"cards {pan[:4]} {pan[4:8]} {pan[8:12]} {pan[12:]}"
    named.mkdir()
    for i in range(5):
        (named / f"part-{i}.txt").write_text("no numbers here\n")
    (named / "deeper").mkdir()
    (named / "deeper" / "more.txt").write_text("none here either\n")

    code, records, err = scan_local(str(tmp_path))

    assert code == 1, err
    shown = f"cards {pan[:4]} {pan[4:6]}** **** {pan[12:]}"
    [finding] = of_type(records, "finding")
    assert (finding["location"], finding["member"]) == (str(tmp_path / shown), "(name)")
    assert finding["masked"] == masked(pan)
    items = of_type(records, "item")
    [directory] = [i for i in items if i["location"] == str(tmp_path / shown)]
    assert (directory["status"], directory["bytes_scanned"], directory["findings"]) == ("complete", 0, 1)
    files = [i for i in items if i is not directory]
    assert len(files) == 6 and all(i["status"] == "complete" and i["findings"] == 0 for i in files)
    assert pan not in json.dumps(records) + err


def test_a_directory_named_with_a_number_is_still_reported_in_the_next_sweep(tmp_path: Path) -> None:
    pan, file_pan = make_pan("4539", 16), make_pan("37", 15)
    tree = tmp_path / "tree"
    (tree / f"export-{pan}").mkdir(parents=True)
    (tree / f"export-{pan}" / "a.txt").write_text("nothing\n")
    (tree / f"{file_pan}.csv").write_text("nothing\n")
    state = tmp_path / "state" / "state.db"

    first = scan_local(str(tree), state=state)
    second = scan_local(str(tree), state=state)

    for code, records, err in (first, second):
        assert code == 1, err
        assert {(f["member"], f["masked"]) for f in of_type(records, "finding")} == {
            ("(name)", masked(pan)), ("(name)", masked(file_pan))}
    assert {f["change"] for f in of_type(second[1], "finding")} == {"still present"}


def test_a_link_not_followed_is_skipped_but_its_name_is_reported(tmp_path: Path) -> None:
    pan = make_pan("4539", 16)
    (tmp_path / "target.txt").write_text("nothing\n")
    os.symlink(tmp_path / "target.txt", tmp_path / f"link-{pan}")

    code, records, err = scan_local(str(tmp_path))

    assert code == 1, err
    [finding] = of_type(records, "finding")
    assert (finding["location"], finding["member"]) == (str(tmp_path / f"link-{masked(pan)}"), "(name)")
    [link] = [i for i in of_type(records, "item") if i["reason"] == "SYMLINK_NOT_FOLLOWED"]
    assert link["findings"] == 1 and link["status"] == "skipped"


# --- S3 -------------------------------------------------------------------------------------


def test_an_s3_key_holding_a_number_is_a_name_finding_in_each_version(s3: MotoS3) -> None:
    pan = make_pan("4539", 16)
    c = versioned_bucket(s3, "keys")
    key = f"receipts/2024/{pan}.pdf"
    versions = [c.put_object(Bucket="keys", Key=key, Body=body)["VersionId"] for body in (b"one\n", b"two\n")]

    code, records, err = scan("s3://keys")

    assert code == 1, err
    location = f"s3://keys/receipts/2024/{masked(pan)}.pdf"
    assert Counter((f["location"], f["version_id"], f["member"], f["masked"], f["offset"])
                   for f in of_type(records, "finding")) == Counter(
        {(location, v, "(name)", masked(pan), len("receipts/2024/")): 1 for v in versions})
    assert {i["status"] for i in of_type(records, "item")} == {"complete"}
    assert pan not in json.dumps(records) + err


def test_user_metadata_and_content_disposition_holding_numbers_are_findings(s3: MotoS3) -> None:
    ref, note, disposition = make_pan("4539", 16), make_pan("51", 16), make_pan("6011", 16)
    c = s3.client
    c.create_bucket(Bucket="meta")
    c.put_object(Bucket="meta", Key="notes.txt", Body=b"nothing in the body\n",
                 Metadata={"ref": ref, "note": f"card {note[:4]} {note[4:8]} {note[8:12]} {note[12:]}",
                           "plain": "nothing"},
                 ContentDisposition=f'attachment; filename="{disposition}.csv"')
    c.put_object(Bucket="meta", Key="clean.txt", Body=b"nothing\n", Metadata={"ref": "ticket 4411"})

    code, records, err = scan("s3://meta")

    assert code == 1, err
    assert where(of_type(records, "finding")) == Counter({
        ("s3://meta/notes.txt", "(metadata x-amz-meta-ref)", masked(ref)): 1,
        ("s3://meta/notes.txt", "(metadata x-amz-meta-note)", masked(note)): 1,
        ("s3://meta/notes.txt", "(metadata Content-Disposition)", masked(disposition)): 1})
    assert {(i["location"], i["status"], i["findings"]) for i in of_type(records, "item")} == {
        ("s3://meta/notes.txt", "complete", 3), ("s3://meta/clean.txt", "complete", 0)}
    # Metadata came with the GetObject the scan makes anyway: no other request per object.
    assert len(s3.get_object_requests("meta", "notes.txt")) == 1
    assert not [r for r in s3.requests if "tagging" in r.query]
    assert all(pan not in json.dumps(records) + err for pan in (ref, note, disposition))


def test_tags_holding_numbers_are_reported_only_with_tags(s3: MotoS3) -> None:
    pan, key_pan = make_pan("4539", 16), make_pan("4539", 13)
    c = versioned_bucket(s3, "tagged")
    old = c.put_object(Bucket="tagged", Key="a.txt", Body=b"nothing\n", Tagging=f"ref={pan}")["VersionId"]
    new = c.put_object(Bucket="tagged", Key="a.txt", Body=b"nothing\n", Tagging=f"{key_pan}=x")["VersionId"]

    code, records, err = scan("s3://tagged")
    assert code == 0, err
    assert of_type(records, "finding") == []
    assert not [r for r in s3.requests if "tagging" in r.query]  # no request without --tags

    code, records, err = scan("s3://tagged", "--tags")
    assert code == 1, err
    assert Counter((f["version_id"], f["member"], f["masked"]) for f in of_type(records, "finding")) == Counter({
        (old, "(tag ref)", masked(pan)): 1, (new, f"(tag {masked(key_pan)})", masked(key_pan)): 1})
    tagging = [r for r in s3.requests if "tagging" in r.query]
    assert sorted(r.query["versionId"][0] for r in tagging) == sorted([old, new])  # one per version
    assert {i["status"] for i in of_type(records, "item")} == {"complete"}
    assert pan not in json.dumps(records) + err and key_pan not in json.dumps(records) + err


def test_tags_is_refused_without_an_s3_target(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", str(tmp_path), "--tags", "--no-state"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "--tags goes with s3://" in proc.stderr


def test_an_object_read_without_prefetch_reports_its_key_metadata_and_tags(s3: MotoS3) -> None:
    # Above PREFETCH_MAX the worker opens the object itself when its turn comes.
    key_pan, meta_pan, tag_pan = make_pan("4539", 16), make_pan("4539", 19), make_pan("34", 15)
    c = s3.client
    c.create_bucket(Bucket="large")
    c.put_object(Bucket="large", Key=f"dump-{key_pan}.bin", Body=b"x" * (PREFETCH_MAX + 1),
                 Metadata={"ref": meta_pan}, Tagging=f"t={tag_pan}")
    [item] = [r for r in s3_source.enumerate_s3(["s3://large"], s3_source.S3Options()) if isinstance(r, Item)]

    result = scan_task(Task(item), WorkerContext(b"k" * 32, tags=True)).result

    assert (result.status, result.bytes_scanned) == (Status.COMPLETE, PREFETCH_MAX + 1)
    assert sorted((f.member, f.masked) for f in result.findings) == sorted([
        ("(name)", masked(key_pan)), ("(metadata x-amz-meta-ref)", masked(meta_pan)), ("(tag t)", masked(tag_pan))])


def test_an_object_split_into_byte_ranges_reports_its_name_and_metadata_once(s3: MotoS3) -> None:
    range_size = 2**20
    key_pan, meta_pan, tag_pan, content_pan = (make_pan("4539", 16), make_pan("51", 16), make_pan("4539", 16),
                                               make_pan("65", 16))
    body = bytearray(b"log line without numbers\n" * (3 * range_size // 25))
    at = 2 * range_size + 100
    body[at:at + 18] = f" {content_pan} ".encode()
    c = s3.client
    c.create_bucket(Bucket="ranged")
    c.put_object(Bucket="ranged", Key=f"big-{key_pan}.log", Body=bytes(body), Metadata={"ref": meta_pan},
                 Tagging=f"t={tag_pan}")
    items = [r for r in s3_source.enumerate_s3(["s3://ranged"], s3_source.S3Options()) if isinstance(r, Item)]

    with LocalEngine(WorkerContext(b"k" * 32, tags=True), 2, split_threshold=2 * range_size,
                     range_size=range_size) as engine:
        [result] = list(engine.run(items))

    assert result.status is Status.COMPLETE
    assert Counter((f.member, f.masked) for f in result.findings) == Counter({
        ("(name)", masked(key_pan)): 1, ("(metadata x-amz-meta-ref)", masked(meta_pan)): 1,
        ("(tag t)", masked(tag_pan)): 1, (None, masked(content_pan)): 1})
    assert len([r for r in s3.requests if "tagging" in r.query]) == 1


def test_tags_that_cannot_be_read_leave_the_version_partial_with_the_reason(s3: MotoS3) -> None:
    # S3 refuses GetObjectTagging (no s3:GetObjectVersionTagging): a botocore hook on the
    # worker's own client answers it 403 AccessDenied, the way S3 does.
    from botocore.awsrequest import AWSResponse

    from panscan.sources import aws

    pan = make_pan("4539", 16)
    c = s3.client
    c.create_bucket(Bucket="refused")
    c.put_object(Bucket="refused", Key=f"r-{pan}.txt", Body=b"nothing\n", Tagging="t=1")
    [item] = [r for r in s3_source.enumerate_s3(["s3://refused"], s3_source.S3Options()) if isinstance(r, Item)]

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("", 403, {}, None), {
            "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
            "ResponseMetadata": {"HTTPStatusCode": 403}}

    client = aws.client("s3")
    client.meta.events.register("before-call.s3.GetObjectTagging", refuse, unique_id="test-refuse-tagging")
    try:
        with_tags = scan_task(Task(item), WorkerContext(b"k" * 32, tags=True)).result
        without = scan_task(Task(item), WorkerContext(b"k" * 32)).result
    finally:
        client.meta.events.unregister("before-call.s3.GetObjectTagging", unique_id="test-refuse-tagging")

    assert (with_tags.status, with_tags.reason, with_tags.bytes_scanned) == (
        Status.PARTIAL, Reason.PERMISSION_DENIED, len(b"nothing\n"))
    assert "tags not read" in (with_tags.detail or "") and pan not in (with_tags.detail or "")
    # What could be read is still reported: the key holding a number.
    assert [(f.member, f.masked) for f in with_tags.findings] == [("(name)", masked(pan))]
    assert (without.status, [f.member for f in without.findings]) == (Status.COMPLETE, ["(name)"])
