"""``panscan scan s3://...`` through a fault-injecting proxy in front of the moto server: S3
throttling and server errors retried, a body cut mid-stream resumed by Range on the same
version, and a bucket that refuses everything reported while the others are scanned.

Each test runs the real CLI as a subprocess (two forked workers); ``AWS_ENDPOINT_URL`` points at
the proxy, so every request from every process crosses it. Fixtures are written straight to moto.
"""
# ruff: noqa: F811

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from proxy import FaultProxy
from s3_server import MotoS3, moto_server, of_type, s3, scan, versioned_bucket  # noqa: F401

from panscan.match.luhn import check_digit

RNG = random.Random(20241130)


def make_pan(prefix: str = "4916") -> str:
    body = prefix + "".join(RNG.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + check_digit(body)


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


@pytest.fixture(scope="module")
def _proxy_server(moto_server: MotoS3) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxy(_proxy_server: FaultProxy, s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> FaultProxy:
    """The proxy, rules and log cleared, with AWS_ENDPOINT_URL pointing at it (``s3`` has
    reset moto and disabled instance metadata)."""
    _proxy_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", _proxy_server.endpoint)
    return _proxy_server








@pytest.mark.parametrize(("status", "code", "times"), [(503, "SlowDown", 2), (500, "InternalError", 1)])
def test_throttling_and_server_errors_are_retried_then_the_object_is_scanned(
        proxy: FaultProxy, s3: MotoS3, status: int, code: str, times: int) -> None:
    pan = make_pan()
    c = versioned_bucket(s3, "flaky")
    data = b"header line\n" * 100 + f"paid {pan} ok\n".encode()
    version = c.put_object(Bucket="flaky", Key="pay.log", Body=data)["VersionId"]
    proxy.fail_get("flaky", "pay.log", status=status, code=code, times=times)

    code_, records, stderr = scan("s3://flaky")

    assert code_ == 1, stderr[-2000:]
    [item] = of_type(records, "item")
    assert (item["status"], item["version_id"], item["bytes_scanned"]) == ("complete", version, len(data))
    [finding] = of_type(records, "finding")
    assert (finding["masked"], finding["version_id"]) == (masked(pan), version)
    gets = proxy.requests("flaky", "pay.log")
    assert [g.action for g in gets] == ["failed"] * times + ["forwarded"]
    assert [g.status for g in gets] == [status] * times + [200]
    assert all(g.query.get("versionId") == [version] for g in gets)
    assert pan not in json.dumps(records) + stderr


def test_a_body_cut_mid_stream_is_resumed_by_range_and_the_pan_past_the_cut_is_found_once(
        proxy: FaultProxy, s3: MotoS3) -> None:
    pan = make_pan()
    cut = 4096
    line = b"2024-11-30T10:00:00Z GET /api/orders status=200 bytes=512\n"
    head = line * (100_000 // len(line))
    data = head + f"card {pan} end\n".encode() + line * (100_000 // len(line))
    assert len(head) > cut and 190_000 < len(data) < 210_000
    c = versioned_bucket(s3, "cutbkt")
    version = c.put_object(Bucket="cutbkt", Key="access.log", Body=data)["VersionId"]
    c.put_object(Bucket="cutbkt", Key="access.log", Body=b"newer and clean\n")
    proxy.truncate_get("cutbkt", "access.log", after=cut, times=1, version=version)

    code, records, stderr = scan("s3://cutbkt")

    assert code == 1, stderr[-2000:]
    items = {i["version_id"]: i for i in of_type(records, "item")}
    assert len(items) == 2 and all(i["status"] == "complete" for i in items.values())
    assert items[version]["bytes_scanned"] == len(data)
    [finding] = of_type(records, "finding")
    assert (finding["version_id"], finding["offset"], finding["masked"]) == (
        version, len(head) + len("card "), masked(pan))
    gets = [g for g in proxy.requests("cutbkt", "access.log") if g.query.get("versionId") == [version]]
    assert [(g.action, g.range) for g in gets] == [("truncated", None), ("forwarded", f"bytes={cut}-")]
    assert proxy.count()[("GET", "cutbkt", "access.log", f"bytes={cut}-")] == 1


def test_a_bucket_denying_everything_is_one_error_item_and_the_other_bucket_is_scanned(
        proxy: FaultProxy, s3: MotoS3) -> None:
    pan = make_pan()
    c = s3.client
    for bucket in ("locked", "open"):
        c.create_bucket(Bucket=bucket)
        c.put_object(Bucket=bucket, Key="cards.txt", Body=f"card {pan}\n".encode())
    proxy.deny_bucket("locked")

    code, records, stderr = scan("s3://locked", "s3://open")

    assert code == 1, stderr[-2000:]
    items = of_type(records, "item")
    locked = [i for i in items if i["location"].startswith("s3://locked")]
    assert [(i["location"], i["status"], i["reason"]) for i in locked] == [
        ("s3://locked", "error", "PERMISSION_DENIED")]
    assert [(i["location"], i["status"]) for i in items if i not in locked] == [("s3://open/cards.txt", "complete")]
    assert [f["location"] for f in of_type(records, "finding")] == ["s3://open/cards.txt"]
    assert proxy.requests("locked", get_object=False)  # the listing was attempted and refused
    assert all(s.status == 403 for s in proxy.requests("locked", get_object=False))
    assert not proxy.requests("locked")  # no GetObject for a bucket that could not be listed


def test_intelligent_tiering_archive_tier_is_skipped_without_a_get_object_and_its_neighbours_are_read(
        proxy: FaultProxy, s3: MotoS3) -> None:
    # moto has no archive tiers: the proxy adds the HeadObject headers S3 would send.
    pan = make_pan()
    c = versioned_bucket(s3, "tiered")
    body = f"card {pan}\n".encode()
    versions = {key: c.put_object(Bucket="tiered", Key=key, Body=body, StorageClass="INTELLIGENT_TIERING")["VersionId"]
                for key in ("archived.csv", "restoring.csv", "restored.csv", "warm.csv")}
    proxy.add_head_headers("tiered", "archived.csv", {"x-amz-archive-status": "DEEP_ARCHIVE_ACCESS"})
    proxy.add_head_headers("tiered", "restoring.csv", {"x-amz-archive-status": "ARCHIVE_ACCESS",
                                                       "x-amz-restore": 'ongoing-request="true"'})
    proxy.add_head_headers("tiered", "restored.csv", {
        "x-amz-archive-status": "ARCHIVE_ACCESS",
        "x-amz-restore": 'ongoing-request="false", expiry-date="Fri, 21 Dec 2035 00:00:00 GMT"'})

    code, records, stderr = scan("s3://tiered")

    assert code == 1, stderr[-2000:]
    items = {i["location"].rsplit("/", 1)[1]: i for i in of_type(records, "item")}
    for key, tier in (("archived.csv", "DEEP_ARCHIVE_ACCESS"), ("restoring.csv", "ARCHIVE_ACCESS")):
        assert (items[key]["status"], items[key]["reason"], items[key]["size"]) == (
            "skipped", "INVALID_OBJECT_STATE", len(body))
        assert items[key]["detail"] == f"Intelligent-Tiering archive tier {tier}: not readable without a restore"
        assert s3.get_object_requests("tiered", key) == []  # nothing reached moto but the HEAD
        heads = [r for r in proxy.requests("tiered", key, get_object=False) if r.method == "HEAD"]
        assert [(h.query.get("versionId"), h.action) for h in heads] == [([versions[key]], "annotated")]
    for key in ("restored.csv", "warm.csv"):
        assert (items[key]["status"], items[key]["bytes_scanned"]) == ("complete", len(body))
        assert len(s3.get_object_requests("tiered", key)) == 1
    assert sorted((f["location"], f["masked"]) for f in of_type(records, "finding")) == [
        ("s3://tiered/restored.csv", masked(pan)), ("s3://tiered/warm.csv", masked(pan))]


def test_a_standard_object_is_read_without_a_head_object(proxy: FaultProxy, s3: MotoS3) -> None:
    # The HeadObject that finds archive tiers costs a request: only INTELLIGENT_TIERING pays it.
    c = s3.client
    c.create_bucket(Bucket="plainclass")
    c.put_object(Bucket="plainclass", Key="a.txt", Body=b"nothing\n")

    code, records, stderr = scan("s3://plainclass")

    assert code == 0, stderr[-2000:]
    assert [i["status"] for i in of_type(records, "item")] == ["complete"]
    assert [s.method for s in proxy.requests("plainclass", "a.txt", get_object=False)] == ["GET"]


@pytest.mark.parametrize(("status", "code", "reason"), [
    (404, "NoSuchVersion", "SOURCE_OBJECT_NO_LONGER_AVAILABLE"),
    (403, "AccessDenied", "PERMISSION_DENIED"),
])
def test_a_resume_refused_after_a_cut_is_partial_with_the_s3_reason_and_keeps_the_findings_before_the_cut(
        proxy: FaultProxy, s3: MotoS3, status: int, code: str, reason: str) -> None:
    # The version is deleted (or access revoked) while it is read: the body is cut past the
    # first PAN, and the Range GET that would resume it is refused.
    before, after = make_pan(), make_pan("5412")
    line = b"2024-11-30T10:00:00Z POST /api/pay status=201 bytes=128\n"
    filler = line * (1_200_000 // len(line))
    data = f"first {before} here\n".encode() + filler + filler + f"late {after} here\n".encode() + filler
    cut = len(data) // 2
    c = versioned_bucket(s3, "gone")
    version = c.put_object(Bucket="gone", Key="pay.log", Body=data)["VersionId"]
    proxy.truncate_get("gone", "pay.log", after=cut, times=1)
    proxy.fail_get("gone", "pay.log", status=status, code=code, times=1)

    code_, records, stderr = scan("s3://gone")

    assert code_ == 1, stderr[-2000:]
    [item] = of_type(records, "item")
    assert (item["status"], item["reason"], item["version_id"]) == ("partial", reason, version)
    assert 0 < item["bytes_scanned"] <= cut
    assert code in item["detail"]
    assert [(f["masked"], f["offset"]) for f in of_type(records, "finding")] == [(masked(before), len("first "))]
    gets = proxy.requests("gone", "pay.log")
    assert [(g.action, g.range, g.status) for g in gets] == [
        ("truncated", None, 200), ("failed", f"bytes={cut}-", status)]
    assert before not in json.dumps(records) + stderr
