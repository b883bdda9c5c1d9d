"""S3 Inventory reports as the listing, against a moto server on loopback.

moto does not write inventory reports, so each test writes one the way S3 does (manifest
plus gzip-compressed CSV, every field quoted, keys form-URL-encoded, the null version as an
empty VersionId, ETags unquoted) from the source bucket's real ListObjectVersions output.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC
from typing import Any
from urllib.parse import quote_plus

import pytest
from moto_http import deny, moto_server, reset, s3_client

from panscan.model import Item, ItemResult, Reason, Status
from panscan.sources import aws
from panscan.sources.s3 import S3Options, enumerate_s3
from panscan.sources.s3_inventory import MAX_LINE_CHARS, enumerate_inventory, parse_inventory_url

SOURCE = "card-data-source"
DEST = "inventory-destination"
PREFIX = f"reports/{SOURCE}/all-versions"
SCHEMA = ("Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, "
          "StorageClass, IsMultipartUploaded")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture()
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    # panscan's clients are cached per process; a client cached by another test would
    # point at that test's endpoint.
    monkeypatch.setattr(aws, "_clients", {})
    reset(endpoint)
    client = s3_client(endpoint)
    client.create_bucket(Bucket=DEST)
    return client


def factory(endpoint: str) -> Any:
    return lambda service: aws.client(service, endpoint_url=endpoint)


def populate_source(s3: Any) -> None:
    """Versions of every kind a listing meets, with keys that need URL-encoding."""
    s3.create_bucket(Bucket=SOURCE)
    s3.put_object(Bucket=SOURCE, Key="before versioning.txt", Body=b"null version")
    s3.put_bucket_versioning(Bucket=SOURCE, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=SOURCE, Key="before versioning.txt", Body=b"second version, current")
    s3.put_object(Bucket=SOURCE, Key="logs/a b+c%20ü&?=.log", Body=b"old", StorageClass="STANDARD_IA")
    s3.put_object(Bucket=SOURCE, Key="logs/a b+c%20ü&?=.log", Body=b"newer")
    s3.put_object(Bucket=SOURCE, Key="deleted/card.csv", Body=b"survives behind a delete marker")
    s3.delete_object(Bucket=SOURCE, Key="deleted/card.csv")
    s3.put_object(Bucket=SOURCE, Key="archive/old.bin", Body=b"cold", StorageClass="GLACIER")
    s3.put_object(Bucket=SOURCE, Key="deep/old.bin", Body=b"colder", StorageClass="DEEP_ARCHIVE")
    for i in range(5):
        s3.put_object(Bucket=SOURCE, Key=f"many/{i:03d}", Body=b"x" * i)


def inventory_rows(s3: Any) -> list[list[str]]:
    """The CSV rows S3 Inventory would write for SOURCE (all versions)."""
    rows = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=SOURCE):
        for v in page.get("Versions", []):
            rows.append(_row(v, delete_marker=False))
        for m in page.get("DeleteMarkers", []):
            rows.append(_row(m, delete_marker=True))
    return rows


def _row(v: dict[str, Any], delete_marker: bool) -> list[str]:
    modified = v["LastModified"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return [
        SOURCE,
        quote_plus(v["Key"], safe="/"),
        "" if v["VersionId"] == "null" else v["VersionId"],
        "true" if v["IsLatest"] else "false",
        "true" if delete_marker else "false",
        "" if delete_marker else str(v["Size"]),
        modified,
        "" if delete_marker else v["ETag"].strip('"'),
        "" if delete_marker else v.get("StorageClass", "STANDARD"),
        "false",
    ]


def csv_gz(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return gzip.compress(text.getvalue().encode("utf-8"))


def write_inventory(s3: Any, files: list[bytes], *, md5s: list[str] | None = None,
                    file_format: str = "CSV", multipart: bool = False) -> str:
    """Upload data files and their manifest; returns the s3-inventory:// target."""
    entries = []
    for i, data in enumerate(files):
        key = f"{PREFIX}/data/part-{i}.csv.gz"
        if multipart:
            # A multipart upload's ETag is not the file's MD5: the reader must hash the file.
            upload = s3.create_multipart_upload(Bucket=DEST, Key=key)
            part = s3.upload_part(Bucket=DEST, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=data)
            s3.complete_multipart_upload(Bucket=DEST, Key=key, UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
        else:
            s3.put_object(Bucket=DEST, Key=key, Body=data)
        md5 = md5s[i] if md5s is not None else hashlib.md5(data).hexdigest()
        entries.append({"key": key, "size": len(data), "MD5checksum": md5})
    manifest = {
        "sourceBucket": SOURCE,
        "destinationBucket": f"arn:aws:s3:::{DEST}",
        "version": "2016-11-30",
        "creationTimestamp": "1700000000000",
        "fileFormat": file_format,
        "fileSchema": SCHEMA,
        "files": entries,
    }
    key = f"{PREFIX}/2026-01-01T00-00Z/manifest.json"
    s3.put_object(Bucket=DEST, Key=key, Body=json.dumps(manifest).encode())
    return f"s3-inventory://{DEST}/{key}"


def comparable(record: Item | ItemResult) -> tuple[Any, ...]:
    """What must agree between the two scans (last-modified to the second)."""
    item = record.item if isinstance(record, ItemResult) else record
    verdict = (str(record.status), str(record.reason)) if isinstance(record, ItemResult) else ("item", None)
    modified = int(item.last_modified) if item.last_modified is not None else None
    return (*verdict, item.location, item.source, item.version_id, item.is_latest, item.size, item.etag,
            item.storage_class, modified)


def test_inventory_scan_yields_exactly_the_records_of_the_listing_scan(s3: Any, endpoint: str) -> None:
    populate_source(s3)
    rows = inventory_rows(s3)
    target = write_inventory(s3, [csv_gz(rows[:7]), csv_gz(rows[7:])])

    from_inventory = list(enumerate_inventory(target, factory(endpoint)))
    from_listing = list(enumerate_s3([f"s3://{SOURCE}"], S3Options()))

    assert sorted(map(comparable, from_inventory)) == sorted(map(comparable, from_listing))
    # The listing really holds what the comparison is meant to cover.
    locations = {comparable(r)[2] for r in from_inventory}
    assert f"s3://{SOURCE}/logs/a b+c%20ü&?=.log" in locations
    versions = {(comparable(r)[2], comparable(r)[4]) for r in from_inventory}
    assert (f"s3://{SOURCE}/before versioning.txt", "null") in versions
    hidden = [r for r in from_inventory if isinstance(r, Item) and r.location.endswith("deleted/card.csv")]
    assert len(hidden) == 1 and hidden[0].is_latest is False
    archived = [r for r in from_inventory if isinstance(r, ItemResult)]
    assert {(r.item.storage_class, r.reason) for r in archived} == {
        ("GLACIER", Reason.INVALID_OBJECT_STATE), ("DEEP_ARCHIVE", Reason.INVALID_OBJECT_STATE)}
    assert len(from_inventory) == len(rows) - 1  # every version but the delete marker


def test_latest_only_and_excludes_select_what_the_listing_selects(s3: Any, endpoint: str) -> None:
    populate_source(s3)
    target = write_inventory(s3, [csv_gz(inventory_rows(s3))])
    excludes = (f"s3://{SOURCE}/many/*",)

    from_inventory = list(enumerate_inventory(target, factory(endpoint), latest_only=True, excludes=excludes))
    from_listing = list(enumerate_s3([f"s3://{SOURCE}"], S3Options(latest_only=True, excludes=excludes)))

    assert sorted(map(comparable, from_inventory)) == sorted(map(comparable, from_listing))
    assert sum(1 for r in from_inventory if isinstance(r, ItemResult) and r.reason is Reason.EXCLUDED) == 5


def test_a_data_file_whose_md5_differs_is_an_error_and_the_next_file_is_still_read(s3: Any, endpoint: str) -> None:
    populate_source(s3)
    rows = inventory_rows(s3)
    first, second = csv_gz(rows[:3]), csv_gz(rows[3:])
    target = write_inventory(s3, [first, second], md5s=["0" * 32, hashlib.md5(second).hexdigest()])

    records = list(enumerate_inventory(target, factory(endpoint)))

    errors = [r for r in records if isinstance(r, ItemResult) and r.status is Status.ERROR]
    assert [(e.reason, e.item.location) for e in errors] == [
        (Reason.MALFORMED_FILE, f"s3://{DEST}/{PREFIX}/data/part-0.csv.gz")]
    assert "MD5" in (errors[0].detail or "")
    # None of the first file's rows, all of the second's (delete markers aside).
    listed = [r for r in records if r not in errors]
    assert len(listed) == sum(1 for row in rows[3:] if row[4] == "false")


def test_a_multipart_data_file_is_hashed_before_any_row_is_yielded(s3: Any, endpoint: str) -> None:
    populate_source(s3)
    rows = inventory_rows(s3)
    good, bad = csv_gz(rows[:4]), csv_gz(rows[4:])
    target = write_inventory(s3, [good, bad], md5s=[hashlib.md5(good).hexdigest(), "f" * 32], multipart=True)
    assert "-" in s3.head_object(Bucket=DEST, Key=f"{PREFIX}/data/part-0.csv.gz")["ETag"]

    records = list(enumerate_inventory(target, factory(endpoint)))

    assert isinstance(records[-1], ItemResult) and records[-1].reason is Reason.MALFORMED_FILE
    assert records[-1].item.location.endswith("part-1.csv.gz")
    assert len(records) - 1 == sum(1 for row in rows[:4] if row[4] == "false")


def test_a_parquet_report_is_one_unsupported_file_type_error(s3: Any, endpoint: str) -> None:
    target = write_inventory(s3, [b"PAR1 not really parquet PAR1"], file_format="Parquet")

    records = list(enumerate_inventory(target, factory(endpoint)))

    assert len(records) == 1 and isinstance(records[0], ItemResult)
    assert (records[0].status, records[0].reason) == (Status.ERROR, Reason.UNSUPPORTED_FILE_TYPE)
    assert "CSV" in (records[0].detail or "") and "pyarrow" in (records[0].detail or "")


def test_a_missing_manifest_or_bucket_is_not_found(s3: Any, endpoint: str) -> None:
    for target, location in [
        (f"s3-inventory://{DEST}/no/such/manifest.json", f"s3://{DEST}/no/such/manifest.json"),
        ("s3-inventory://no-such-bucket-here/manifest.json", "s3://no-such-bucket-here/manifest.json"),
    ]:
        records = list(enumerate_inventory(target, factory(endpoint)))
        assert [(type(r), r.status, r.reason, r.item.location) for r in records  # type: ignore[union-attr]
                ] == [(ItemResult, Status.ERROR, Reason.NOT_FOUND, location)]


def test_a_refused_manifest_is_permission_denied(s3: Any, endpoint: str) -> None:
    populate_source(s3)
    target = write_inventory(s3, [csv_gz(inventory_rows(s3))])
    client = s3_client(endpoint)
    deny(client, "GetObject")

    records = list(enumerate_inventory(target, lambda service: client))

    assert len(records) == 1 and isinstance(records[0], ItemResult)
    assert (records[0].status, records[0].reason) == (Status.ERROR, Reason.PERMISSION_DENIED)


def test_a_missing_data_file_is_not_found_and_the_others_are_read(s3: Any, endpoint: str) -> None:
    populate_source(s3)
    rows = inventory_rows(s3)
    target = write_inventory(s3, [csv_gz(rows[:2]), csv_gz(rows[2:])])
    s3.delete_object(Bucket=DEST, Key=f"{PREFIX}/data/part-0.csv.gz")

    records = list(enumerate_inventory(target, factory(endpoint)))

    assert isinstance(records[0], ItemResult) and records[0].reason is Reason.NOT_FOUND
    assert records[0].item.location.endswith("part-0.csv.gz")
    assert all(isinstance(r, Item) or r.reason is Reason.INVALID_OBJECT_STATE for r in records[1:])


@pytest.mark.parametrize(("name", "data"), [
    ("not gzip", b"Bucket,Key\n"),
    ("truncated gzip", gzip.compress(b'"a","b"\n' * 1000)[:-20]),
    ("newline-free line", gzip.compress(b"a" * (MAX_LINE_CHARS * 4))),
    ("wrong field count", gzip.compress(b'"card-data-source","k"\n')),
])
def test_a_data_file_that_is_not_the_declared_csv_is_malformed(s3: Any, endpoint: str, name: str,
                                                               data: bytes) -> None:
    target = write_inventory(s3, [data])

    records = list(enumerate_inventory(target, factory(endpoint)))

    assert len(records) == 1 and isinstance(records[0], ItemResult), name
    assert records[0].reason is Reason.MALFORMED_FILE, (name, records[0].detail)


def test_a_manifest_that_is_not_json_is_malformed(s3: Any, endpoint: str) -> None:
    s3.put_object(Bucket=DEST, Key="m.json", Body=b"{not json")

    records = list(enumerate_inventory(f"s3-inventory://{DEST}/m.json", factory(endpoint)))

    assert len(records) == 1 and isinstance(records[0], ItemResult)
    assert records[0].reason is Reason.MALFORMED_FILE


def test_a_target_without_bucket_or_key_is_refused_before_any_request() -> None:
    for bad in ("s3-inventory://", "s3-inventory://bucket", "s3-inventory://bucket/", "s3://bucket/manifest.json"):
        with pytest.raises(ValueError):
            enumerate_inventory(bad, lambda service: pytest.fail("no client may be built"))
    assert parse_inventory_url("s3-inventory://b/x/manifest.json") == ("b", "x/manifest.json")


def test_cli_scan_driven_by_the_inventory_equals_the_listing_scan(s3: Any, endpoint: str,
                                                                  tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from panscan.match.luhn import check_digit

    pan = "4539" + "27361845200" + "1"
    pan = pan[:15] + check_digit(pan[:15])
    populate_source(s3)
    s3.put_object(Bucket=SOURCE, Key="exports/old.csv", Body=f"id,card\n1,{pan}\n".encode())
    s3.put_object(Bucket=SOURCE, Key="exports/old.csv", Body=b"id,card\n1,redacted\n")
    target = write_inventory(s3, [csv_gz(inventory_rows(s3))])

    def scan(what: str) -> list[dict[str, Any]]:
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
        proc = subprocess.run([sys.executable, "-m", "panscan", "scan", what, "--format", "jsonl",
                               "--no-state", "--workers", "2"], capture_output=True, text=True,
                              env=env, timeout=120, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr  # the planted number is found
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        for r in records:
            r.pop("fingerprint", None)  # --no-state: each run has its own key
        return sorted((r for r in records if r["type"] in ("finding", "item")),
                      key=lambda r: (r["type"], r["location"], r.get("version_id") or "", r.get("offset", 0)))

    via_inventory, via_listing = scan(target), scan(f"s3://{SOURCE}")
    assert via_inventory == via_listing
    findings = [r for r in via_inventory if r["type"] == "finding"]
    assert [(f["location"], f["is_latest"], f["masked"]) for f in findings] == [
        (f"s3://{SOURCE}/exports/old.csv", False, pan[:6] + "******" + pan[-4:])]
