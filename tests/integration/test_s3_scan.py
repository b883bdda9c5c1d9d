"""``panscan scan s3://...`` against a moto server on loopback, reached over HTTP by the
worker processes: every version, storage classes, errors as items, byte ranges."""
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ResponseStreamingError

# The fixtures are imported by name (pytest finds them in the module's namespace), so the
# tests' ``s3`` parameters shadow the import on purpose.
from s3_server import MotoS3, moto_server, of_type, s3, scan, versioned_bucket  # noqa: F401

from panscan.engine.local import RANGE_SIZE, SPLIT_THRESHOLD, LocalEngine
from panscan.engine.worker import WorkerContext
from panscan.extract.sniff import MAGIC_LEN
from panscan.match.luhn import check_digit
from panscan.match.matcher import RANGE_OVERLAP
from panscan.model import Item, Reason, Status
from panscan.sources import s3 as s3_source
from panscan.sources.files import SourceError

RNG = random.Random(20240612)


def make_pan(prefix: str = "4539") -> str:
    body = prefix + "".join(RNG.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + check_digit(body)


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]








def test_pan_only_in_a_noncurrent_version_is_found_with_its_version_id(s3: MotoS3) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "history")
    old = c.put_object(Bucket="history", Key="orders.csv", Body=f"id,card\n1,{pan}\n".encode())["VersionId"]
    new = c.put_object(Bucket="history", Key="orders.csv", Body=b"id,card\n1,redacted\n")["VersionId"]

    code, records, _ = scan("s3://history")

    assert code == 1
    items = of_type(records, "item")
    assert sorted(i["version_id"] for i in items) == sorted([old, new])
    assert all(i["status"] == "complete" for i in items)
    [finding] = of_type(records, "finding")
    assert finding["location"] == "s3://history/orders.csv"
    assert (finding["version_id"], finding["is_latest"], finding["masked"]) == (old, False, masked(pan))
    assert finding["offset"] == len("id,card\n1,")
    assert pan not in json.dumps(records)


def test_pan_behind_a_delete_marker_is_found_and_the_marker_is_no_item(s3: MotoS3) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "deleted")
    old = c.put_object(Bucket="deleted", Key="dump.txt", Body=f"card {pan}\n".encode())["VersionId"]
    c.delete_object(Bucket="deleted", Key="dump.txt")

    code, records, _ = scan("s3://deleted")

    assert code == 1
    assert [(i["version_id"], i["status"]) for i in of_type(records, "item")] == [(old, "complete")]
    [finding] = of_type(records, "finding")
    assert (finding["version_id"], finding["is_latest"]) == (old, False)


def test_null_version_from_before_versioning_is_scanned(s3: MotoS3) -> None:
    pan = make_pan()
    c = s3.client
    c.create_bucket(Bucket="legacy")
    c.put_object(Bucket="legacy", Key="old.log", Body=f"paid with {pan}\n".encode())
    c.put_bucket_versioning(Bucket="legacy", VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket="legacy", Key="old.log", Body=b"clean\n")

    code, records, _ = scan("s3://legacy")

    assert code == 1
    assert len(of_type(records, "item")) == 2
    [finding] = of_type(records, "finding")
    assert (finding["version_id"], finding["is_latest"]) == ("null", False)
    # GetObject asked for the null version by name, not for the current one.
    assert any(r.query.get("versionId") == ["null"] for r in s3.get_object_requests("legacy", "old.log"))


def test_prefix_limits_the_scan_to_keys_under_it(s3: MotoS3) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "mixed")
    for key in ("in/a.txt", "in/sub/b.txt", "inside.txt", "out/c.txt"):
        c.put_object(Bucket="mixed", Key=key, Body=f"{key} {pan}\n".encode())

    code, records, _ = scan("s3://mixed/in/")

    assert code == 1
    assert sorted(i["location"] for i in of_type(records, "item")) == ["s3://mixed/in/a.txt", "s3://mixed/in/sub/b.txt"]
    assert len(of_type(records, "finding")) == 2
    assert not s3.get_object_requests("mixed", "out/c.txt") and not s3.get_object_requests("mixed", "inside.txt")


def test_latest_only_scans_current_versions_and_skips_deleted_keys(s3: MotoS3) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "latest")
    c.put_object(Bucket="latest", Key="a.txt", Body=f"{pan}\n".encode())
    current = c.put_object(Bucket="latest", Key="a.txt", Body=b"clean\n")["VersionId"]
    c.put_object(Bucket="latest", Key="gone.txt", Body=f"{pan}\n".encode())
    c.delete_object(Bucket="latest", Key="gone.txt")

    code, records, _ = scan("s3://latest", "--latest-only")

    assert code == 0
    assert [(i["location"], i["version_id"]) for i in of_type(records, "item")] == [("s3://latest/a.txt", current)]
    assert not of_type(records, "finding")


@pytest.mark.slow
def test_every_version_across_listing_pages_is_one_item(s3: MotoS3) -> None:
    # ListObjectVersions returns at most 1,000 versions a page: 2,600 versions need three.
    # Fixtures go straight into moto's backend (2,600 PUTs over HTTP take half a minute);
    # the scan lists and reads every version over HTTP.
    pan = make_pan()
    versioned_bucket(s3, "many")
    planted = {}
    for i in range(2600):
        key = f"k{i % 650:03d}.txt"  # four versions per key
        dirty = i % 500 == 123
        body = f"row {i} {pan}\n".encode() if dirty else f"row {i}\n".encode()
        version = s3.put_directly("many", key, body)
        if dirty:
            planted[version] = key

    code, records, _ = scan("s3://many")

    assert code == 1
    items = of_type(records, "item")
    assert len(items) == 2600
    assert len({(i["location"], i["version_id"]) for i in items}) == 2600
    assert all(i["status"] == "complete" for i in items)
    found = {(f["version_id"], f["location"]) for f in of_type(records, "finding")}
    assert found == {(v, f"s3://many/{k}") for v, k in planted.items()}
    assert of_type(records, "summary")[0]["items"]["complete"] == 2600


def test_archived_storage_classes_are_skipped_without_a_get_object(s3: MotoS3) -> None:
    pan = make_pan()
    c = s3.client
    c.create_bucket(Bucket="cold")
    for key, cls in (("g.txt", "GLACIER"), ("d.txt", "DEEP_ARCHIVE")):
        c.put_object(Bucket="cold", Key=key, Body=f"{pan}\n".encode(), StorageClass=cls)
    c.put_object(Bucket="cold", Key="it.txt", Body=b"clean\n", StorageClass="INTELLIGENT_TIERING")
    c.put_object(Bucket="cold", Key="ia.txt", Body=b"clean\n", StorageClass="STANDARD_IA")

    code, records, _ = scan("s3://cold")

    assert code == 2  # nothing found, coverage incomplete
    by_key = {i["location"].rsplit("/", 1)[1]: i for i in of_type(records, "item")}
    for key in ("g.txt", "d.txt"):
        assert (by_key[key]["status"], by_key[key]["reason"]) == ("skipped", "INVALID_OBJECT_STATE")
        assert by_key[key]["size"] == len(pan) + 1
        assert s3.get_object_requests("cold", key) == []
    for key in ("it.txt", "ia.txt"):
        assert by_key[key]["status"] == "complete"
        assert s3.get_object_requests("cold", key)
    assert of_type(records, "summary")[0]["reasons"] == {"INVALID_OBJECT_STATE": 2}


def test_a_missing_bucket_is_one_error_item_and_other_targets_are_scanned(s3: MotoS3, tmp_path: Path) -> None:
    pan = make_pan()
    c = s3.client
    c.create_bucket(Bucket="present")
    c.put_object(Bucket="present", Key="x.txt", Body=f"{pan}\n".encode())
    local = tmp_path / "local.txt"
    local.write_text(f"local {pan}\n")

    code, records, _ = scan("s3://absent-bucket", str(local), "s3://present")

    assert code == 1
    items = of_type(records, "item")
    missing = [i for i in items if i["location"] == "s3://absent-bucket"]
    assert [(i["status"], i["reason"]) for i in missing] == [("error", "NOT_FOUND")]
    assert {f["location"] for f in of_type(records, "finding")} == {"s3://present/x.txt", str(local)}


def test_every_bucket_is_scanned_for_a_bare_s3_target(s3: MotoS3) -> None:
    pan = make_pan()
    c = s3.client
    for bucket in ("one-bucket", "two-bucket"):
        c.create_bucket(Bucket=bucket)
        c.put_object(Bucket=bucket, Key="f.txt", Body=f"{pan}\n".encode())

    code, records, _ = scan("s3://")

    assert code == 1
    assert {f["location"] for f in of_type(records, "finding")} == {"s3://one-bucket/f.txt", "s3://two-bucket/f.txt"}


def test_endpoint_url_option_reaches_the_workers(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    pan = make_pan()
    c = s3.client
    c.create_bucket(Bucket="endpoint-bkt")
    c.put_object(Bucket="endpoint-bkt", Key="f.txt", Body=f"{pan}\n".encode())
    monkeypatch.delenv("AWS_ENDPOINT_URL")

    code, records, _ = scan("s3://endpoint-bkt", "--endpoint-url", s3.endpoint)

    assert code == 1
    assert [f["location"] for f in of_type(records, "finding")] == ["s3://endpoint-bkt/f.txt"]


@pytest.mark.slow
def test_pan_across_a_range_boundary_of_a_big_object_is_found_once(s3: MotoS3) -> None:
    # 70 MiB > SPLIT_THRESHOLD: three Range tasks of RANGE_SIZE; the PAN straddles the first edge.
    assert SPLIT_THRESHOLD < 70 * 2**20 < 3 * RANGE_SIZE
    pan = make_pan()
    at = RANGE_SIZE - 7
    body = bytearray(b"x" * (70 * 2**20))
    body[at - 1:at + len(pan) + 1] = f" {pan} ".encode()
    c = s3.client
    c.create_bucket(Bucket="big")
    c.put_object(Bucket="big", Key="big.bin", Body=bytes(body))
    del body

    code, records, _ = scan("s3://big")

    assert code == 1
    [finding] = of_type(records, "finding")
    assert (finding["offset"], finding["masked"]) == (at, masked(pan))
    [item] = of_type(records, "item")
    assert (item["status"], item["bytes_scanned"]) == ("complete", 70 * 2**20)
    gets = s3.get_object_requests("big", "big.bin")
    assert len([r for r in gets if r.range]) >= 2  # the ranges after the first were read with Range GETs
    assert len([r for r in gets if r.range is None]) <= 1  # only by the range starting at 0


def test_each_byte_range_task_gets_its_own_range_and_never_the_whole_object(s3: MotoS3) -> None:
    # In process, with small ranges: 3 MiB + 777 bytes in four 1 MiB tasks run by forked
    # workers over HTTP. The PAN straddles the first range edge.
    range_size = 2**20
    size = 3 * range_size + 777
    pan = make_pan()
    at = range_size - 7
    body = bytearray(b"log line without numbers\n" * (size // 25 + 1))[:size]
    body[at - 1:at + len(pan) + 1] = f" {pan} ".encode()
    c = s3.client
    c.create_bucket(Bucket="ranged")
    c.put_object(Bucket="ranged", Key="big.log", Body=bytes(body))
    items = [r for r in s3_source.enumerate_s3(["s3://ranged"], s3_source.S3Options()) if isinstance(r, Item)]
    with s3.lock:
        s3.requests.clear()

    with LocalEngine(WorkerContext(b"k" * 32), 2, split_threshold=2 * range_size, range_size=range_size) as engine:
        [result] = list(engine.run(items))

    assert (result.status, result.bytes_scanned) == (Status.COMPLETE, size)
    assert [(f.offset, f.masked) for f in result.findings] == [(at, masked(pan))]
    gets = s3.get_object_requests("ranged", "big.log")
    assert len([r for r in gets if r.range is None]) <= 1  # only by the range starting at 0
    # Each task past the first: one GET from its start (less the overlap) to the end, and one
    # bounded GET of the first bytes to sniff the type. Nothing else.
    assert Counter(r.range for r in gets) == Counter(
        {None: 1, f"bytes=0-{MAGIC_LEN - 1}": 3,
         **{f"bytes={k * range_size - RANGE_OVERLAP}-": 1 for k in (1, 2, 3)}})
    assert all(r.query.get("versionId") == ["null"] for r in gets)


# --- opening one version, in process ---------------------------------------------------


def listed(bucket: str, key: str) -> list[Item]:
    items = [r for r in s3_source.enumerate_s3([f"s3://{bucket}/{key}"], s3_source.S3Options())
             if isinstance(r, Item)]
    return [i for i in items if i.location == f"s3://{bucket}/{key}"]


class _CutBody:
    """A StreamingBody stand-in that raises ResponseStreamingError after ``cut`` bytes."""

    def __init__(self, inner: Any, cut: int) -> None:
        self._inner, self._left = inner, cut

    def read(self, n: int) -> bytes:
        if self._left <= 0:
            raise ResponseStreamingError(error="connection reset")
        data: bytes = self._inner.read(min(n, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._inner.close()


class _CuttingClient:
    """The real client, with the first ``cuts`` GetObject bodies cut after ``after`` bytes."""

    def __init__(self, inner: Any, cuts: int, after: int) -> None:
        self._inner, self.cuts, self._after = inner, cuts, after

    def get_object(self, **kwargs: Any) -> Any:
        response = self._inner.get_object(**kwargs)
        if self.cuts > 0:
            self.cuts -= 1
            response["Body"] = _CutBody(response["Body"], self._after)
        return response


def test_a_body_cut_mid_stream_resumes_with_a_range_on_the_same_version(s3: MotoS3) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "cut")
    data = b"a" * 5000 + f" {pan} ".encode() + b"b" * 5000
    c.put_object(Bucket="cut", Key="f", Body=data)
    c.put_object(Bucket="cut", Key="f", Body=b"newer")
    item = next(i for i in listed("cut", "f") if not i.is_latest)

    with s3_source.S3Object(_CuttingClient(c, cuts=3, after=4000), "cut", "f", item) as f:
        assert f.read() == data

    gets = s3.get_object_requests("cut", "f")
    assert [r.range for r in gets] == [None, "bytes=4000-", "bytes=8000-"]
    assert all(r.query.get("versionId") == [item.version_id] for r in gets)


def test_a_body_cut_again_and_again_is_a_read_error(s3: MotoS3) -> None:
    c = s3.client
    c.create_bucket(Bucket="cut")
    c.put_object(Bucket="cut", Key="f", Body=b"z" * 100)
    [item] = listed("cut", "f")

    with s3_source.S3Object(_CuttingClient(c, cuts=99, after=0), "cut", "f", item) as f:
        with pytest.raises(s3_source.S3ReadError) as caught:
            f.read(10)
    assert caught.value.reason is Reason.READ_ERROR
    assert len(s3.get_object_requests("cut", "f")) == s3_source.MAX_RESUMES


def test_seek_then_read_sends_a_range_request(s3: MotoS3) -> None:
    c = s3.client
    c.create_bucket(Bucket="seek")
    c.put_object(Bucket="seek", Key="f", Body=bytes(range(256)) * 4)
    [item] = listed("seek", "f")

    with s3_source.open_s3(item) as f:
        assert f.read(4) == bytes([0, 1, 2, 3])
        f.seek(1000)
        assert f.read() == (bytes(range(256)) * 4)[1000:]
        assert f.seek(0, os.SEEK_END) == 1024 and f.read(5) == b""

    assert [r.range for r in s3.get_object_requests("seek", "f")] == [None, "bytes=1000-"]


def test_an_overwritten_unversioned_object_is_a_version_mismatch(s3: MotoS3) -> None:
    c = s3.client
    c.create_bucket(Bucket="plain")
    c.put_object(Bucket="plain", Key="f", Body=b"first")
    [item] = listed("plain", "f")
    assert item.version_id == "null"
    c.put_object(Bucket="plain", Key="f", Body=b"second")

    with pytest.raises(SourceError) as caught:
        s3_source.open_s3(item)
    assert caught.value.reason is Reason.OBJECT_VERSION_MISMATCH


def test_a_version_deleted_since_the_listing_is_no_longer_available(s3: MotoS3) -> None:
    c = versioned_bucket(s3, "vanish")
    version = c.put_object(Bucket="vanish", Key="f", Body=b"data")["VersionId"]
    [item] = listed("vanish", "f")
    c.delete_object(Bucket="vanish", Key="f", VersionId=version)

    with pytest.raises(SourceError) as caught:
        s3_source.open_s3(item)
    assert caught.value.reason is Reason.SOURCE_OBJECT_NO_LONGER_AVAILABLE


def test_an_archived_object_read_anyway_is_an_invalid_object_state(s3: MotoS3) -> None:
    # An Intelligent-Tiering object whose HeadObject cannot tell its tier (moto refuses HEAD
    # with versionId=null in an unversioned bucket) is still refused by its GetObject.
    c = s3.client
    c.create_bucket(Bucket="arch")
    c.put_object(Bucket="arch", Key="f", Body=b"data", StorageClass="GLACIER")
    item = Item("s3://arch/f", "s3", size=4, version_id="null", storage_class="INTELLIGENT_TIERING")

    with pytest.raises(SourceError) as caught:
        s3_source.open_s3(item)
    assert caught.value.reason is Reason.INVALID_OBJECT_STATE


def _client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("error", "reason"), [
    (_client_error("AccessDenied", "Access Denied", 403), Reason.PERMISSION_DENIED),
    (_client_error("AccessDenied", "User is not authorized to perform kms:Decrypt", 403), Reason.INVALID_ENCRYPTION),
    (_client_error("KMS.DisabledException", "key is disabled"), Reason.INVALID_ENCRYPTION),
    (_client_error("KMS.KMSInvalidStateException", "pending deletion"), Reason.INVALID_ENCRYPTION),
    (_client_error("InvalidRequest", "The object was stored using a form of Server Side Encryption. "
                   "The correct parameters must be provided to retrieve the object."), Reason.INVALID_ENCRYPTION),
    (_client_error("400", "Bad Request", 400), Reason.INVALID_ENCRYPTION),  # HeadObject on SSE-C
    (_client_error("InvalidRequest", "Invalid Request"), Reason.READ_ERROR),
    (_client_error("NoSuchVersion", "", 404), Reason.SOURCE_OBJECT_NO_LONGER_AVAILABLE),
    (_client_error("NoSuchKey", "", 404), Reason.SOURCE_OBJECT_NO_LONGER_AVAILABLE),
    (_client_error("NoSuchBucket", "", 404), Reason.NOT_FOUND),
    (_client_error("InvalidObjectState", "", 403), Reason.INVALID_OBJECT_STATE),
    (_client_error("PreconditionFailed", "", 412), Reason.OBJECT_VERSION_MISMATCH),
    (_client_error("SlowDown", "", 503), Reason.READ_ERROR),
])
def test_s3_errors_map_to_reason_codes(error: ClientError, reason: Reason) -> None:
    got, detail = s3_source.reason_for(error)
    assert got is reason
    assert "Message" not in detail and "kms:Decrypt" not in detail  # the code, never the message


def test_each_scanned_bucket_gets_its_facts_in_the_report_masked(s3: MotoS3) -> None:
    pan = make_pan()
    name = f"exports-{pan}"  # a bucket name can hold a card number too
    c = versioned_bucket(s3, name)
    c.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    c.put_object(Bucket=name, Key="a.csv", Body=f"card {pan}\n".encode())
    c.put_object(Bucket=name, Key="b.csv", Body=b"nothing\n")
    status, records, err = scan(f"s3://{name}")
    assert status == 1, err
    buckets = of_type(records, "bucket")
    assert len(buckets) == 1  # once per bucket, however many objects
    facts = buckets[0]
    assert facts["bucket"] == f"exports-{masked(pan)}"
    assert facts["versioning"] == "Enabled"
    assert facts["encryption"]["algorithm"] == "AES256"
    everything = json.dumps(records) + err
    assert pan not in everything

    table = subprocess.run([sys.executable, "-m", "panscan", "scan", f"s3://{name}", "--no-state"],
                           capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert "Buckets (1)" in table.stdout and "Enabled" in table.stdout
    assert pan not in table.stdout + table.stderr


def test_restore_is_requested_once_then_the_restored_copy_is_read(s3: MotoS3) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "cold")
    c.put_object(Bucket="cold", Key="2019/export.csv", Body=f"card {pan}\n".encode(), StorageClass="GLACIER")
    c.put_object(Bucket="cold", Key="2018/export.csv", Body=b"nothing\n", StorageClass="DEEP_ARCHIVE")

    # Without --restore: archived, never read.
    status, records, err = scan("s3://cold")
    assert status == 2, err
    assert {r["reason"] for r in of_type(records, "item")} == {"INVALID_OBJECT_STATE"}

    # First run with --restore: requests sent and reported, an estimate printed, nothing read yet.
    status, records, err = scan("s3://cold", "--restore", "bulk")
    assert status == 2, err
    assert {(r["status"], r["reason"]) for r in of_type(records, "item")} == {("skipped", "RESTORE_REQUESTED")}
    assert "restore requested for 2 archived versions" in err and "Bulk tier" in err
    restores = [r for r in s3.requests if r.method == "POST" and "restore" in r.query]
    assert len(restores) == 2
    assert s3.get_object_requests("cold") == []  # archived data is never asked for before its restore

    # moto completes restores at once: the next run reads the copies and finds the number.
    status, records, err = scan("s3://cold", "--restore", "bulk")
    assert status == 1, err
    assert [(f["location"], f["masked"]) for f in of_type(records, "finding")] == [
        ("s3://cold/2019/export.csv", masked(pan))]
    assert all(r["status"] == "complete" for r in of_type(records, "item"))
    assert len([r for r in s3.requests if r.method == "POST" and "restore" in r.query]) == 2  # none again
