"""The Glacier source against a moto server over HTTP: inventory jobs, archive retrievals,
reading job output, and errors as records.

moto completes a job 2 s (Expedited), 5 s (Standard) or 10 s (Bulk) after it started; the
server runs in this process, so :func:`finish_jobs` moves the completion time of every job
into the past instead of sleeping (one test waits for real, to pin the polling). moto
answers an unknown job id with a 500 (a bug in moto) where Glacier answers 404
ResourceNotFoundException, and refuses nothing; a botocore hook on panscan's own client
answers as Glacier does for those cases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import IncompleteReadError
from s3_server import MotoS3, moto_server, s3  # noqa: F401

from panscan.model import Item, ItemResult, Reason, Status
from panscan.sources import aws, glacier
from panscan.sources.files import SourceError
from panscan.sources.glacier import (
    GlacierOptions,
    collect_jobs,
    enumerate_glacier,
    open_glacier,
    parse_glacier_url,
    retrieval_estimate,
    tree_hash,
)
from panscan.state import GlacierJob, State

PAN = "4111111111111111"  # a published test number
LOGGER = "panscan.sources.glacier"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def vaults(s3: MotoS3) -> Any:  # noqa: F811
    """A plain boto3 Glacier client for creating fixtures on the (reset) moto server."""
    return boto3.client("glacier", endpoint_url=s3.endpoint, region_name="us-east-1")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    with State.open(tmp_path / "state" / "panscan.db") as st:
        yield st


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


Answer = Callable[..., AWSResponse | None]


@pytest.fixture
def answer_as_glacier(s3: MotoS3) -> Iterator[Callable[[str, int, str, Callable[[str], bool]], None]]:  # noqa: F811
    """``answer_as_glacier(operation, status, code, when)``: from now on panscan's Glacier
    clients (the default region's and us-east-1's, which ``collect_jobs`` uses) get Glacier's
    JSON error for ``operation`` ("*" for all) whenever ``when(url)``."""
    clients = [aws.client("glacier"), aws.client("glacier", region="us-east-1")]
    registered: list[tuple[Any, str, Answer]] = []

    def install(operation: str, status: int, code: str, when: Callable[[str], bool]) -> None:
        body = json.dumps({"code": code, "message": "refused by the test", "type": "Client"}).encode()

        def answer(request: Any, **_: Any) -> AWSResponse | None:
            if not when(request.url):
                return None
            return AWSResponse(request.url, status, {"content-type": "application/json",
                                                     "x-amzn-requestid": "TEST"}, _Body(body))

        event = "before-send.glacier" if operation == "*" else f"before-send.glacier.{operation}"
        for client in clients:
            client.meta.events.register(event, answer)
            registered.append((client, event, answer))

    yield install
    # Clients are cached per process: leave them as they were for the next test.
    for client, event, handler in registered:
        client.meta.events.unregister(event, handler)


def finish_jobs() -> None:
    """Make every job on the moto server complete now (the server runs in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.glacier.models import glacier_backends

    for vault in glacier_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].vaults.values():
        for job in vault.jobs.values():
            job.et = datetime.now() - timedelta(seconds=1)


def upload(vaults: Any, vault: str, body: bytes, description: str = "") -> str:
    archive_id: str = vaults.upload_archive(vaultName=vault, body=body, archiveDescription=description)["archiveId"]
    return archive_id


def job_count(vaults: Any, vault: str, action: str) -> int:
    return sum(1 for j in vaults.list_jobs(vaultName=vault)["JobList"] if j["Action"] == action)


def run(targets: list[str], state: State | None, **options: Any) -> list[Item | ItemResult]:
    return list(enumerate_glacier(targets, GlacierOptions(**options), state))


def items(records: list[Item | ItemResult]) -> list[Item]:
    return [r for r in records if isinstance(r, Item)]


def results(records: list[Item | ItemResult]) -> list[ItemResult]:
    return [r for r in records if isinstance(r, ItemResult)]


def vault_with_inventory(vaults: Any, state: State, name: str, bodies: dict[bytes, str]) -> dict[bytes, str]:
    """A vault holding ``bodies`` (body → description) whose inventory is in the state;
    returns body → archive id."""
    vaults.create_vault(vaultName=name)
    ids = {body: upload(vaults, name, body, description) for body, description in bodies.items()}
    run([f"glacier://{name}"], state)
    finish_jobs()
    assert items(run([f"glacier://{name}"], state))
    return ids


# --- targets -------------------------------------------------------------------------------


def test_glacier_urls_name_one_vault_or_every_vault() -> None:
    assert parse_glacier_url("glacier://") is None
    assert parse_glacier_url("glacier://backups") == "backups"
    assert parse_glacier_url("glacier://backups/") == "backups"
    with pytest.raises(ValueError, match="names a whole vault") as exc:
        parse_glacier_url(f"glacier://backups/{PAN}")
    assert PAN not in str(exc.value)
    with pytest.raises(ValueError, match="invalid Glacier vault name"):
        parse_glacier_url("glacier://bad vault")


# --- inventories ---------------------------------------------------------------------------


def test_first_scan_starts_an_inventory_job_and_a_later_one_lists_every_archive(
        vaults: Any, state: State, caplog: pytest.LogCaptureFixture) -> None:
    vaults.create_vault(vaultName="backups")
    bodies = {b"first archive": f"card {PAN} export", b"second archive, longer": ""}
    ids = {body: upload(vaults, "backups", body, description) for body, description in bodies.items()}

    first = run(["glacier://backups"], state)
    assert len(first) == 1 and isinstance(first[0], ItemResult)
    assert (first[0].item.location, first[0].status, first[0].reason) == \
        ("glacier://backups", Status.SKIPPED, Reason.JOB_PENDING)
    assert first[0].detail is not None and "still running; run again later or use --wait" in first[0].detail
    [job] = state.jobs()
    assert (job.vault, job.action, job.region, job.status) == ("backups", "InventoryRetrieval", "us-east-1", "pending")
    assert job_count(vaults, "backups", "InventoryRetrieval") == 1

    assert results(run(["glacier://backups"], state))[0].reason is Reason.JOB_PENDING  # no second job
    assert job_count(vaults, "backups", "InventoryRetrieval") == 1

    finish_jobs()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        listed = run(["glacier://backups"], state)
    assert all(isinstance(r, Item) for r in listed)
    by_id = {i.location: i for i in listed}
    assert set(by_id) == {f"glacier://backups/{aid}" for aid in ids.values()}
    for body, description in bodies.items():
        item = by_id[f"glacier://backups/{ids[body]}"]
        assert (item.source, item.size, item.etag, item.description, item.job_id) == \
            ("glacier", len(body), hashlib.sha256(body).hexdigest(), description or None, None)
        assert item.last_modified is not None and abs(item.last_modified - time.time()) < 120
    assert state.jobs() == [] and state.jobs(pending_only=False)[0].status == "collected"
    stored = state.inventory("backups", "us-east-1")
    assert stored is not None and len(stored.archives) == 2
    assert PAN not in json.dumps(stored.archives) and "411111******1111" in json.dumps(stored.archives)
    assert PAN not in caplog.text and not any(aid in caplog.text for aid in ids.values())

    again = run(["glacier://backups"], state)  # the stored inventory, no new job
    assert [i.location for i in items(again)] == [i.location for i in listed]
    assert {i.description for i in items(again)} == {"card 411111******1111 export", None}
    assert job_count(vaults, "backups", "InventoryRetrieval") == 1


def test_an_old_inventory_is_refreshed_and_still_used_while_the_refresh_runs(
        vaults: Any, state: State, caplog: pytest.LogCaptureFixture) -> None:
    vaults.create_vault(vaultName="old")
    now = time.time()
    archive = {"archive_id": "A1", "description": "tape 7", "creation_date": now - 400 * 86400, "size": 3,
               "tree_hash": hashlib.sha256(b"abc").hexdigest()}
    state.store_inventory("old", "us-east-1", now - 40 * 86400, now - 8 * 86400, [archive])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = run(["glacier://old"], state, now=now)
    assert [type(r) for r in records] == [ItemResult, Item]
    pending = results(records)[0]
    assert pending.reason is Reason.JOB_PENDING
    assert pending.detail is not None and "archives listed from the inventory collected" in pending.detail
    assert items(records)[0] == Item("glacier://old/A1", "glacier", size=3, last_modified=now - 400 * 86400,
                                     etag=archive["tree_hash"], description="tape 7")
    assert job_count(vaults, "old", "InventoryRetrieval") == 1
    assert "Glacier vault old: the inventory is 40 days old" in caplog.text
    assert "tape 7" not in caplog.text and "A1" not in caplog.text


def test_without_a_state_the_pending_inventory_says_a_state_is_needed(vaults: Any) -> None:
    vaults.create_vault(vaultName="loose")
    [pending] = run(["glacier://loose"], None)
    assert isinstance(pending, ItemResult) and pending.reason is Reason.JOB_PENDING
    assert pending.detail is not None and "without a state database a later run cannot collect it" in pending.detail


def test_an_inventory_job_glacier_no_longer_knows_is_started_again_once_then_reported(
        vaults: Any, state: State, answer_as_glacier: Any) -> None:
    vaults.create_vault(vaultName="lost")
    state.add_job(GlacierJob("BOGUS", "lost", "us-east-1", "InventoryRetrieval", None, None, time.time() - 3600,
                             "pending"))
    answer_as_glacier("DescribeJob", 404, "ResourceNotFoundException", lambda url: True)

    [pending] = run(["glacier://lost"], state)
    assert isinstance(pending, ItemResult) and pending.reason is Reason.JOB_PENDING
    [retry] = state.jobs()
    assert retry.job_id != "BOGUS" and retry.attempts == 2
    assert {j.job_id: j.status for j in state.jobs(pending_only=False)}["BOGUS"] == "expired"
    assert job_count(vaults, "lost", "InventoryRetrieval") == 1

    [error] = run(["glacier://lost"], state)
    assert isinstance(error, ItemResult)
    assert (error.item.location, error.status, error.reason) == ("glacier://lost", Status.ERROR, Reason.READ_ERROR)
    assert error.detail is not None and "no longer known to Glacier" in error.detail
    assert state.jobs() == [] and job_count(vaults, "lost", "InventoryRetrieval") == 1


def test_every_vault_is_listed_and_a_refused_or_missing_one_does_not_stop_the_others(
        vaults: Any, state: State, answer_as_glacier: Any) -> None:
    for name in ("alpha", "denied", "omega"):
        vaults.create_vault(vaultName=name)
        upload(vaults, name, f"data of {name}".encode())
    answer_as_glacier("*", 403, "AccessDeniedException", lambda url: "/vaults/denied" in url)

    run(["glacier://", "glacier://missing"], state)
    finish_jobs()
    records = run(["glacier://", "glacier://missing"], state)
    errors = {r.item.location: (r.status, r.reason) for r in results(records)}
    assert errors == {"glacier://denied": (Status.ERROR, Reason.PERMISSION_DENIED),
                      "glacier://missing": (Status.ERROR, Reason.NOT_FOUND)}
    assert sorted(i.location.split("/")[2] for i in items(records)) == ["alpha", "omega"]
    assert {j.vault for j in state.jobs(pending_only=False)} == {"alpha", "omega"}


# --- retrieval -----------------------------------------------------------------------------


def test_retrieval_asks_first_and_a_refusal_initiates_nothing(
        vaults: Any, state: State, caplog: pytest.LogCaptureFixture) -> None:
    vault_with_inventory(vaults, state, "cold", {b"a" * 1000: "one", b"b" * 2000: "two"})
    asked: list[str] = []

    def refuse(text: str) -> bool:
        asked.append(text)
        return False

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = run(["glacier://cold"], state, retrieve=True, tier="bulk", confirm=refuse)
    assert [i.job_id for i in items(records)] == [None, None]
    assert len(asked) == 1 and "retrieval of 2 archives in 1 vault (" in asked[0] and "Bulk tier" in asked[0]
    assert "not initiated" in caplog.text
    assert job_count(vaults, "cold", "ArchiveRetrieval") == 0 and state.jobs() == []

    asked.clear()
    run(["glacier://cold"], state, retrieve=True, older_than_days=1, confirm=refuse)
    assert asked == []  # both archives are younger than a day: nothing to ask about


def test_retrieved_archives_are_read_exactly_and_their_tree_hash_checked(vaults: Any, state: State) -> None:
    bodies = {f"record {PAN}\n".encode() * 40: "first", b"second archive body": "second", b"x" * 5000: "third"}
    ids = vault_with_inventory(vaults, state, "cold", bodies)
    asked: list[str] = []

    records = run(["glacier://cold"], state, retrieve=True, max_bytes=len(next(iter(bodies))) + 19,
                  confirm=lambda text: asked.append(text) or True)
    assert [i.job_id for i in items(records)] == [None, None, None]
    assert len(asked) == 1 and "of 2 archives" in asked[0]  # the third would exceed --max-bytes
    assert job_count(vaults, "cold", "ArchiveRetrieval") == 2
    jobs = state.jobs()
    assert [(j.action, j.tier, j.description) for j in jobs] == [("ArchiveRetrieval", "Standard", None)] * 2
    assert {j.archive_id for j in jobs} == {ids[b] for b in list(bodies)[:2]}

    finish_jobs()
    listed = items(run(["glacier://cold"], state, retrieve=True, confirm=lambda text: asked.append(text) or True))
    assert len(asked) == 2  # only the third archive is left to retrieve
    assert job_count(vaults, "cold", "ArchiveRetrieval") == 3
    readable = {i.location: i for i in listed if i.job_id is not None}
    assert set(readable) == {f"glacier://cold/{ids[b]}" for b in list(bodies)[:2]}
    for body in list(bodies)[:2]:
        item = readable[f"glacier://cold/{ids[body]}"]
        with open_glacier(item) as f:
            assert f.read() == body
        with open_glacier(replace(item, etag="0" * 64)) as f, pytest.raises(OSError, match="tree hash mismatch"):
            f.read()
    assert {j.status for j in state.jobs(pending_only=False) if j.action == "ArchiveRetrieval"} == \
        {"succeeded", "pending"}


def test_waiting_polls_until_the_retrieval_completes(vaults: Any, state: State) -> None:
    vault_with_inventory(vaults, state, "quick", {b"needed now": "", b"needed too": ""})
    started = time.monotonic()
    listed = items(run(["glacier://quick"], state, retrieve=True, tier="Expedited", wait_seconds=8))
    assert 2 <= time.monotonic() - started < 7
    assert all(i.job_id is not None for i in listed)
    for item in listed:
        with open_glacier(item) as f:
            assert f.read() in (b"needed now", b"needed too")


def test_an_archive_whose_job_output_is_gone_cannot_be_opened(vaults: Any, answer_as_glacier: Any) -> None:
    answer_as_glacier("GetJobOutput", 404, "ResourceNotFoundException", lambda url: True)
    item = Item("glacier://cold/A1", "glacier", size=3, etag=hashlib.sha256(b"abc").hexdigest(), job_id="GONE")
    with pytest.raises(SourceError) as exc:
        open_glacier(item)
    assert exc.value.reason is Reason.SOURCE_OBJECT_NO_LONGER_AVAILABLE
    with pytest.raises(SourceError) as exc:
        open_glacier(replace(item, job_id=None))
    assert exc.value.reason is Reason.INVALID_OBJECT_STATE


def test_large_archives_are_read_in_mib_ranges(vaults: Any, state: State, s3: MotoS3,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glacier, "RANGED_ABOVE", glacier.MIB)
    monkeypatch.setattr(glacier, "RANGE_BYTES", glacier.MIB)
    body = bytes(range(256)) * (10 * 1024 + 7)  # 2.5 MiB and a bit
    vaults.create_vault(vaultName="big")
    archive_id = upload(vaults, "big", body)
    job_id = vaults.initiate_job(vaultName="big", jobParameters={"Type": "archive-retrieval",
                                                                 "ArchiveId": archive_id})["jobId"]
    finish_jobs()
    # moto's SHA256TreeHash is the plain SHA-256 of the body, which Glacier's is only up to 1 MiB.
    item = Item(f"glacier://big/{archive_id}", "glacier", size=len(body), etag=tree_hash([body]), job_id=job_id)
    s3.requests.clear()
    with open_glacier(item) as f:
        assert f.read() == body
    assert [r.range for r in s3.requests if r.path.endswith("/output")] == [
        "bytes=0-1048575", "bytes=1048576-2097151", f"bytes=2097152-{len(body) - 1}"]
    with open_glacier(replace(item, etag=hashlib.sha256(body).hexdigest())) as f, \
            pytest.raises(OSError, match="tree hash mismatch"):
        f.read()


class _CutGlacier:
    """GetJobOutput from memory whose bodies break after ``cut`` bytes, ``cuts`` times."""

    def __init__(self, data: bytes, cut: int, cuts: int) -> None:
        self.data, self.cut, self.cuts = data, cut, cuts
        self.ranges: list[str | None] = []

    def get_job_output(self, vaultName: str, jobId: str, range: str | None = None) -> dict[str, Any]:
        self.ranges.append(range)
        start, end = 0, len(self.data)
        if range is not None:
            first, last = range.removeprefix("bytes=").split("-")
            start, end = int(first), int(last) + 1
        owner = self

        class Body:
            def __init__(self) -> None:
                self.left = owner.data[start:end]
                self.sent = 0

            def read(self, n: int) -> bytes:
                if owner.cuts and self.sent >= owner.cut:
                    owner.cuts -= 1
                    raise IncompleteReadError(actual_bytes=self.sent, expected_bytes=end - start)
                chunk = self.left[:min(n, owner.cut - self.sent) if owner.cuts else n]  # up to the cut
                self.left = self.left[len(chunk):]
                self.sent += len(chunk)
                return chunk

            def close(self) -> None:
                pass

        return {"body": Body(), "status": 206 if range else 200}


def test_a_cut_job_output_is_resumed_from_where_it_broke() -> None:
    data = bytes(range(256)) * 100
    fake = _CutGlacier(data, cut=1000, cuts=2)
    item = Item("glacier://v/A", "glacier", size=len(data), etag=tree_hash([data]), job_id="J")
    f = glacier.GlacierArchive(fake, "v", item)
    assert f.read() == data
    assert fake.ranges == [None, f"bytes=1000-{len(data) - 1}", f"bytes=2000-{len(data) - 1}"]

    slow = _CutGlacier(data, cut=10, cuts=100)  # progress on every try: never given up
    assert glacier.GlacierArchive(slow, "v", item).read() == data

    stuck = _CutGlacier(data, cut=0, cuts=100)
    f = glacier.GlacierArchive(stuck, "v", item)
    with pytest.raises(OSError, match="cut mid-stream 5 times in a row"):
        f.read()


# --- collecting ----------------------------------------------------------------------------


def test_collect_jobs_stores_inventories_and_marks_every_outcome(
        vaults: Any, state: State, answer_as_glacier: Any) -> None:
    vaults.create_vault(vaultName="cold")
    archive_id = upload(vaults, "cold", b"payload", f"holds {PAN}")
    run(["glacier://cold"], state)
    job_id = vaults.initiate_job(vaultName="cold", jobParameters={"Type": "archive-retrieval",
                                                                  "ArchiveId": archive_id})["jobId"]
    state.add_job(GlacierJob(job_id, "cold", "us-east-1", "ArchiveRetrieval", archive_id, "Standard",
                             time.time(), "pending"))
    state.add_job(GlacierJob("GONE", "cold", "us-east-1", "ArchiveRetrieval", "A2", "Bulk", time.time(), "pending"))
    answer_as_glacier("DescribeJob", 404, "ResourceNotFoundException", lambda url: "/jobs/GONE" in url)

    lines = collect_jobs(state, time.time())
    assert len(lines) == 3 and all("still running" in line or "expired" in line for line in lines)
    finish_jobs()
    lines = collect_jobs(state, time.time())
    assert len(lines) == 2
    assert any("inventory collected (1 archives)" in line for line in lines)
    assert any("succeeded; the next scan reads the archive" in line for line in lines)
    assert not any(PAN in line or archive_id in line or "holds" in line for line in lines)
    assert state.jobs() == []
    statuses = {j.job_id: j.status for j in state.jobs(pending_only=False)}
    assert statuses[job_id] == "succeeded" and statuses["GONE"] == "expired"
    stored = state.inventory("cold", "us-east-1")
    assert stored is not None and stored.archives[0]["description"] == "holds 411111******1111"

    [item] = run(["glacier://cold"], state)  # the inventory and the retrieval collected above
    assert isinstance(item, Item) and item.job_id == job_id
    with open_glacier(item) as f:
        assert f.read() == b"payload"


def test_the_estimate_names_count_size_tier_and_time() -> None:
    archives = [Item("glacier://a/1", "glacier", size=2**30), Item("glacier://b/2", "glacier", size=2**30)]
    text = retrieval_estimate(archives, "expedited")
    assert text.startswith("Glacier archive retrieval of 2 archives in 2 vaults (2.00 GiB, Expedited tier): about $")
    assert "1-5 minutes" in text
    with pytest.raises(ValueError, match="unknown Glacier retrieval tier"):
        retrieval_estimate(archives, "instant")


# --- state ---------------------------------------------------------------------------------


def test_the_state_finds_the_newest_job_of_an_archive_and_the_pending_inventory_job(state: State) -> None:
    state.add_job(GlacierJob("I1", "v", "us-east-1", "InventoryRetrieval", None, None, 1.0, "pending"))
    state.add_job(GlacierJob("I2", "v", "eu-west-1", "InventoryRetrieval", None, None, 2.0, "pending"))
    state.add_job(GlacierJob("A1", "v", "us-east-1", "ArchiveRetrieval", "X", "Bulk", 1.0, "expired"))
    state.add_job(GlacierJob("A2", "v", "us-east-1", "ArchiveRetrieval", "X", "Bulk", 5.0, "pending", attempts=2))
    state.add_job(GlacierJob("A3", "v", "us-east-1", "ArchiveRetrieval", "Y", "Bulk", 3.0, "succeeded"))
    assert state.pending_inventory_job("v", "us-east-1") == state.jobs()[0]
    assert state.pending_inventory_job("v", None) is None
    state.update_job("I1", status="collected")
    assert state.pending_inventory_job("v", "us-east-1") is None
    newest = state.job_for_archive("v", "X")
    assert newest is not None and (newest.job_id, newest.attempts) == ("A2", 2)
    assert state.job_for_archive("v", "Z") is None and state.job_for_archive("w", "X") is None
    assert {a: j.job_id for a, j in state.archive_jobs("v").items()} == {"X": "A2", "Y": "A3"}


def test_a_state_file_from_before_glacier_inventories_gains_the_table(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old" / "panscan.db"
    State.open(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE glacier_inventories")
    with State.open(db) as st:
        assert st.inventory("v", None) is None
        st.store_inventory("v", None, 1.0, 2.0, [{"archive_id": "X", "description": None, "creation_date": 0.5,
                                                  "size": 1, "tree_hash": "00"}])
    with State.open(db) as st:
        stored = st.inventory("v", None)
        assert stored is not None and (stored.region, stored.inventory_date, stored.collected_at) == (None, 1.0, 2.0)
        assert stored.archives[0]["archive_id"] == "X"
