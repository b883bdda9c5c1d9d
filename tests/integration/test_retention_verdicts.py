"""Retention verdicts end to end: real files with set mtimes and S3 versions with set
LastModified in the moto server, judged by ``panscan scan --policy`` and the metadata-only
``panscan retention``, at the exact one-second boundary, rules in order, default last."""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from s3_server import MotoS3, moto_server, of_type, s3, scan, versioned_bucket  # noqa: F401

from panscan.match.luhn import check_digit

AS_OF = datetime(2026, 9, 30, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def pan(n: int) -> str:
    body = f"4111{n:011d}"
    return body + check_digit(body)


def panscan(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def touch(path: Path, when: datetime, content: str = "nothing here\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def flagged(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["location"].rsplit("/", 1)[-1]: r for r in of_type(records, "retention")}


def test_a_file_one_second_younger_than_max_age_passes_and_one_second_older_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "data"
    touch(root / "younger.txt", AS_OF - 90 * DAY + SECOND)
    touch(root / "exact.txt", AS_OF - 90 * DAY)
    touch(root / "older.txt", AS_OF - 90 * DAY - SECOND, f"card {pan(1)}\n")
    policy = write_policy(tmp_path / "p.toml", '[retention]\ndefault_max_age = "90d"\n')

    code, records, err = panscan("scan", str(root), "--policy", str(policy), "--as-of", AS_OF.isoformat(),
                                 "--format", "jsonl", "--no-state")
    assert code == 1, err
    verdicts = flagged(records)
    assert set(verdicts) == {"older.txt"}
    assert verdicts["older.txt"] | {"location": None} == {
        "type": "retention", "location": None, "version_id": None, "rule": "default", "age_days": 90,
        "max_age_days": 90, "storage_class": None, "size": verdicts["older.txt"]["size"],
        "last_modified": "2026-07-02T11:59:59Z", "noncurrent_days": None}
    [finding] = of_type(records, "finding")
    assert finding["retention"] == "expired" and finding["location"].endswith("older.txt")
    summary = of_type(records, "summary")[0]
    assert summary["retention"]["expired_items"] == 1
    assert summary["retention"]["expired_with_card_data"] == 1

    code, records, err = panscan("retention", str(root), "--policy", str(policy), "--as-of", AS_OF.isoformat(),
                                 "--format", "jsonl")
    assert code == 1, err
    assert set(flagged(records)) == {"older.txt"}


def test_rules_are_matched_in_order_with_the_default_last(tmp_path: Path) -> None:
    root = tmp_path / "data"
    touch(root / "logs" / "app.log", AS_OF - 60 * DAY)      # "logs" (90d) comes first: passes
    touch(root / "orders.csv", AS_OF - 60 * DAY)            # "data" (30d): flagged
    touch(tmp_path / "other" / "old.txt", AS_OF - 400 * DAY)  # default (365d): flagged
    touch(tmp_path / "other" / "new.txt", AS_OF - 300 * DAY)  # default: passes
    policy = write_policy(tmp_path / "p.toml", f"""
[retention]
default_max_age = "365d"
[[retention.rule]]
name = "logs"
match = ["*/logs/*"]
max_age = "90d"
justification = "chargebacks"
[[retention.rule]]
name = "data"
match = ["{root}/*"]
max_age = "30d"
""")
    code, records, err = panscan("retention", str(root), str(tmp_path / "other"), "--policy", str(policy),
                                 "--as-of", AS_OF.isoformat(), "--format", "jsonl")
    assert code == 1, err
    verdicts = flagged(records)
    assert {name: v["rule"] for name, v in verdicts.items()} == {"orders.csv": "data", "old.txt": "default"}
    summary = of_type(records, "retention_summary")[0]
    assert summary["items"] == 4 and summary["expired_items"] == 2
    assert summary["oldest"]["rule"] == "default"


def test_s3_versions_are_judged_at_the_boundary_and_non_current_ones_say_since_when(s3: MotoS3,
                                                                                  tmp_path: Path) -> None:
    c = versioned_bucket(s3, "ret-versions")
    old = c.put_object(Bucket="ret-versions", Key="orders.csv", Body=f"card {pan(2)}\n".encode())["VersionId"]
    new = c.put_object(Bucket="ret-versions", Key="orders.csv", Body=b"no card\n")["VersionId"]
    young = c.put_object(Bucket="ret-versions", Key="young.csv", Body=b"no card\n")["VersionId"]
    s3.set_last_modified("ret-versions", "orders.csv", old, AS_OF - 90 * DAY - SECOND)
    s3.set_last_modified("ret-versions", "orders.csv", new, AS_OF - 10 * DAY)
    s3.set_last_modified("ret-versions", "young.csv", young, AS_OF - 90 * DAY + SECOND)
    policy = write_policy(tmp_path / "p.toml", '[retention]\ndefault_max_age = "90d"\n')

    code, records, err = scan("s3://ret-versions", "--policy", str(policy), "--as-of", AS_OF.isoformat())
    assert code == 1, err
    [verdict] = of_type(records, "retention")
    assert (verdict["location"], verdict["version_id"]) == ("s3://ret-versions/orders.csv", old)
    assert verdict["age_days"] == 90 and verdict["noncurrent_days"] == 10
    assert verdict["storage_class"] == "STANDARD"
    [finding] = of_type(records, "finding")
    assert finding["version_id"] == old and finding["retention"] == "expired" and finding["is_latest"] is False


def test_retention_compares_each_buckets_lifecycle_with_the_policy(s3: MotoS3, tmp_path: Path) -> None:
    c = s3.client

    def lifecycle(bucket: str, **rule: Any) -> None:
        c.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "expire", "Status": "Enabled", "Filter": {"Prefix": ""}, **rule}]})

    for name in ("life-365", "life-30"):
        c.create_bucket(Bucket=name)
    versioned_bucket(s3, "life-versioned")
    lifecycle("life-365", Expiration={"Days": 365})
    lifecycle("life-30", Expiration={"Days": 30})
    lifecycle("life-versioned", Expiration={"Days": 30})
    for name in ("life-365", "life-30", "life-versioned"):
        c.put_object(Bucket=name, Key="x.txt", Body=b"x")
    policy = write_policy(tmp_path / "p.toml", '[retention]\ndefault_max_age = "90d"\n')

    code, records, err = panscan("retention", "s3://life-365", "s3://life-30", "s3://life-versioned",
                                 "--policy", str(policy), "--format", "jsonl")
    assert code == 1, err
    gaps = {(g["bucket"], g["kind"]) for g in of_type(records, "lifecycle_gap")}
    assert gaps == {("life-365", "longer_expiration"), ("life-versioned", "no_noncurrent_expiration")}
    assert not of_type(records, "retention")  # every object is new

    table = subprocess.run([sys.executable, "-m", "panscan", "retention", "s3://life-365", "s3://life-30",
                            "--policy", str(policy)], capture_output=True, text=True, timeout=120)
    assert table.returncode == 1, table.stderr
    section = table.stdout.split("Buckets whose lifecycle cannot enforce the policy (1)\n", 1)[1]
    assert "life-365" in section and "life-30 " not in section
    assert "365 days" in section


def test_retention_over_100000_inventory_versions_reports_every_one(s3: MotoS3, tmp_path: Path) -> None:
    """A generated S3 Inventory report of 100,000 versions (the way to sweep big buckets):
    every version is counted and the expired ones are exactly those older than the rule."""
    import csv
    import gzip
    import hashlib
    import io

    c = s3.client
    c.create_bucket(Bucket="inventory-dest")
    rows, expected_old = [], 0
    for i in range(100_000):
        age = (i * 7919) % 400  # days; spread over 0..399
        expected_old += age >= 180  # 180 days and a second is past a 180-day rule
        modified = (AS_OF - age * DAY - SECOND).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        rows.append(["big-bucket", f"orders/{i // 1000:03d}/o{i}.csv", f"v{i}", "true", "false", "100",
                     modified, "0" * 32, "STANDARD" if i % 3 else "GLACIER", "false"])
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    data = gzip.compress(text.getvalue().encode())
    c.put_object(Bucket="inventory-dest", Key="inv/data/part-0.csv.gz", Body=data)
    manifest = {"sourceBucket": "big-bucket", "destinationBucket": "arn:aws:s3:::inventory-dest",
                "version": "2016-11-30", "creationTimestamp": "1700000000000", "fileFormat": "CSV",
                "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, "
                              "StorageClass, IsMultipartUploaded",
                "files": [{"key": "inv/data/part-0.csv.gz", "size": len(data),
                           "MD5checksum": hashlib.md5(data).hexdigest()}]}
    c.put_object(Bucket="inventory-dest", Key="inv/manifest.json", Body=json.dumps(manifest).encode())
    policy = write_policy(tmp_path / "p.toml", '[retention]\ndefault_max_age = "180d"\n')

    started = time.monotonic()
    code, _, err = panscan("retention", "s3-inventory://inventory-dest/inv/manifest.json",
                                 "--policy", str(policy), "--as-of", AS_OF.isoformat(), "--format", "jsonl",
                                 "-o", str(tmp_path / "r.jsonl"))
    elapsed = time.monotonic() - started
    assert code == 1, err
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    summary = of_type(lines, "retention_summary")[0]
    assert summary["items"] == 100_000 and summary["expired_items"] == expected_old
    assert len(of_type(lines, "retention")) == expected_old
    assert summary["by_storage_class"]["GLACIER"]["items"] == 33_334
    assert elapsed < 120, f"{elapsed:.0f} s for 100,000 versions"
