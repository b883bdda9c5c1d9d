"""Issue 17, item 6: retention of deleted data, and only of data.

A version behind a delete marker is data kept after it was deleted: ``panscan retention``,
``panscan scan --policy`` and the HTML report say it is non-current and for how long, also
when the delete came in the same second as the write (S3 times have whole seconds). A link,
a FIFO or a mount point holds no data: it is never listed as data kept past retention,
whatever its own time says. S3 versions live in a moto server on loopback; files are real.
"""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from s3_server import MotoS3, moto_server, of_type, s3, versioned_bucket  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cards import make_pan

AS_OF = datetime(2026, 9, 30, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PAN = make_pan("453201", 16)


def panscan(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    return proc.returncode, proc.stdout, proc.stderr


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def delete(s3: MotoS3, bucket: str, key: str, written: datetime, deleted: datetime) -> str:
    """Write ``key`` (card data in it) at ``written``, delete it at ``deleted`` (a delete
    marker on a versioned bucket); the id of the version left behind the marker."""
    c = s3.client
    version = c.put_object(Bucket=bucket, Key=key, Body=f"card {PAN}\n".encode())["VersionId"]
    marker = c.delete_object(Bucket=bucket, Key=key)["VersionId"]
    s3.set_last_modified(bucket, key, version, written)
    s3.set_last_modified(bucket, key, marker, deleted)
    return str(version)


def test_a_version_behind_a_delete_marker_is_non_current_since_the_delete(s3: MotoS3, tmp_path: Path) -> None:
    versioned_bucket(s3, "deleted-data")
    # Deleted half a second after it was written (an upload and its clean-up: the listing's
    # whole seconds tie), and 300 days after.
    same_second = delete(s3, "deleted-data", "tmp/upload.csv", AS_OF - 100 * DAY,
                         AS_OF - 100 * DAY + timedelta(milliseconds=500))
    later = delete(s3, "deleted-data", "orders.csv", AS_OF - 400 * DAY, AS_OF - 100 * DAY)
    policy = tmp_path / "p.toml"
    policy.write_text('[retention]\ndefault_max_age = "30d"\n')

    code, out, err = panscan("retention", "s3://deleted-data", "--policy", str(policy), "--as-of",
                             AS_OF.isoformat(), "--format", "jsonl")
    assert code == 1, err
    verdicts = {r["version_id"]: r for r in of_type(records(out), "retention")}
    assert set(verdicts) == {same_second, later}  # a delete marker holds no data: no record of its own
    assert (verdicts[same_second]["age_days"], verdicts[same_second]["noncurrent_days"]) == (100, 100)
    assert (verdicts[later]["age_days"], verdicts[later]["noncurrent_days"]) == (400, 100)

    code, out, err = panscan("retention", "s3://deleted-data", "--policy", str(policy), "--as-of",
                             AS_OF.isoformat())
    assert code == 1, err
    for version in (same_second, later):
        assert f"{version} (non-current 100d)" in out

    code, out, err = panscan("scan", "s3://deleted-data", "--policy", str(policy), "--as-of", AS_OF.isoformat(),
                             "--format", "jsonl", "--no-state")
    assert code == 1, err
    got = records(out)
    assert {r["version_id"]: r["noncurrent_days"] for r in of_type(got, "retention")} == {same_second: 100,
                                                                                       later: 100}
    assert {(f["version_id"], f["is_latest"], f["retention"]) for f in of_type(got, "finding")} == {
        (same_second, False, "expired"), (later, False, "expired")}

    report = tmp_path / "report.html"
    code, _, err = panscan("scan", "s3://deleted-data", "--policy", str(policy), "--as-of", AS_OF.isoformat(),
                           "--format", "html", "-o", str(report), "--no-state")
    assert code == 1, err
    retention = report.read_text().split('<section id="retention">', 1)[1].split("</section>", 1)[0]
    rows = {version: row for row in re.findall(r"<tr[^>]*>.*?</tr>", retention, re.S)
            for version in (same_second, later) if version in row}
    assert set(rows) == {same_second, later}
    for row in rows.values():
        assert '<span class="badge warn">non-current</span>' in row


def test_links_and_fifos_are_never_data_kept_past_retention(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    old = (AS_OF - 400 * DAY).timestamp()
    (root / "target.txt").write_text("nothing here\n")  # young: within the rule
    (root / "link").symlink_to(root / "target.txt")
    os.mkfifo(root / "pipe")
    for name in ("link", "pipe"):
        os.utime(root / name, (old, old), follow_symlinks=False)  # the link's and the FIFO's own time
    policy = tmp_path / "p.toml"
    policy.write_text('[retention]\ndefault_max_age = "30d"\n')
    as_of = datetime.fromtimestamp((root / "target.txt").stat().st_mtime, UTC) + DAY

    code, out, err = panscan("retention", str(root), "--policy", str(policy), "--as-of", as_of.isoformat(),
                             "--format", "jsonl")
    assert code == 0, err
    got = records(out)
    assert not of_type(got, "retention")
    summary = of_type(got, "retention_summary")[0]
    assert (summary["items"], summary["expired_items"]) == (1, 0)  # the file; the link and the FIFO hold no data

    code, out, err = panscan("scan", str(root), "--policy", str(policy), "--as-of", as_of.isoformat(),
                             "--format", "jsonl", "--no-state")
    assert code == 0, err
    got = records(out)
    assert not of_type(got, "retention")
    items = {Path(r["location"]).name: r["reason"] for r in of_type(got, "item")}
    assert items == {"target.txt": None, "link": "SYMLINK_NOT_FOLLOWED", "pipe": "NOT_REGULAR_FILE"}
    assert of_type(got, "summary")[0]["retention"]["expired_items"] == 0
