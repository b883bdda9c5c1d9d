"""The state database: private files, round trips, unchanged-item lookup, new/still present/resolved
findings, sweep bookkeeping, crash consistency and clear errors. Real SQLite files, no mocks."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from panscan.model import Confidence, Finding, Item, ItemResult, Kind, Reason, RetentionVerdict, Status
from panscan.state import (
    FLUSH_ROWS,
    GlacierJob,
    PendingRestore,
    State,
    StateError,
    item_from_json,
    item_to_json,
)

FP_A = "a1" * 32
FP_B = "b2" * 32


def finding(location: str, offset: int, *, fp: str = FP_A, member: str | None = None, version_id: str | None = None,
            is_latest: bool | None = None, kind: Kind = Kind.PAN) -> Finding:
    return Finding(location, version_id, is_latest, member, offset, 1 + offset // 80, kind, "Visa",
                   "453201******0366", fp, Confidence.HIGH, False)


def file_item(path: str, *, size: int = 100, mtime_ns: int = 1_700_000_000_123_456_789, inode: int = 42) -> Item:
    return Item(path, "file", size=size, last_modified=mtime_ns / 1e9, inode=inode, device=2049, mtime_ns=mtime_ns)


def s3_item(key: str, version: str, *, is_latest: bool = True) -> Item:
    return Item(f"s3://bucket/{key}", "s3", size=10, last_modified=1_700_000_000.0, version_id=version,
                is_latest=is_latest, storage_class="STANDARD", etag='"abc"')


def complete(item: Item, *findings: Finding) -> ItemResult:
    return ItemResult(item, Status.COMPLETE, None, None, item.size or 0, tuple(findings))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def state(db: Path) -> Iterator[State]:
    st = State.open(db)
    yield st
    st.close()


def new_sweep(state: State, targets: tuple[str, ...] = ("/data",), pattern_version: str = "v1") -> int:
    return state.begin_sweep(targets, pattern_version, {"latest_only": False}, 1_700_000_000.0).id


def finish(state: State, sweep_id: int, status: str = "complete") -> None:
    state.finish_sweep(sweep_id, status, {"findings": 0}, 0, 1_700_000_100.0)


# --- files ---------------------------------------------------------------------------------


def test_database_directory_is_created_0700_and_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    umask = os.umask(0o022)
    try:
        with State.open(path) as st:
            sid = new_sweep(st)
            st.record(sid, complete(file_item("/data/x")))
            st.flush()
            assert os.umask(0o022) == 0o022  # open restored the caller's umask
            for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    finally:
        os.umask(umask)


def test_an_existing_database_with_loose_permissions_is_tightened(db: Path) -> None:
    State.open(db).close()
    db.chmod(0o644)
    State.open(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_an_existing_parent_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    State.open(tmp_path / "state.db").close()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_database_is_in_wal_mode_with_foreign_keys_on(db: Path, state: State) -> None:
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):  # a bug (unknown sweep) is not turned into a StateError
        state.add_restore("s3://b/k", None, "bulk", "GLACIER", 1, 1.0, 999)
    with pytest.raises(KeyError):  # caught when recorded, not when the buffer is committed
        state.record(999, complete(file_item("/data/x")))


# --- errors --------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_with_a_message_naming_it(db: Path) -> None:
    db.parent.mkdir()
    db.write_bytes(b"this is not a database, just some text that is long enough to have a header" * 20)
    with pytest.raises(StateError, match="not a panscan state database") as exc:
        State.open(db)
    assert str(db) in str(exc.value) and "\n" not in str(exc.value)


def test_a_foreign_sqlite_database_is_refused_and_left_alone(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as other:
        other.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(StateError, match="not a panscan state database"):
        State.open(db)
    with sqlite3.connect(db) as other:
        assert [r[0] for r in other.execute("SELECT name FROM sqlite_master")] == ["notes"]


def test_a_sqlite_database_with_a_version_but_no_tables_is_refused(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as other:
        other.execute("PRAGMA user_version = 1")
    with pytest.raises(StateError, match="not a panscan state database"):
        State.open(db)


def test_a_database_from_a_newer_panscan_is_refused(db: Path) -> None:
    State.open(db).close()
    with sqlite3.connect(db) as other:
        other.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match="was written by a newer panscan") as exc:
        State.open(db)
    assert str(db) in str(exc.value)


def test_a_database_of_the_previous_schema_is_refused_with_what_to_do_and_left_alone(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as other:  # schema version 1 kept a full copy of every item per sweep
        other.execute("CREATE TABLE sweep_items (sweep_id INTEGER)")
        other.execute("PRAGMA application_id = 1348562515")
        other.execute("PRAGMA user_version = 1")
    with pytest.raises(StateError) as exc:
        State.open(db)
    assert str(exc.value) == (
        f"the state database {db} was written by an older panscan (schema version 1, this panscan needs 2): "
        f"move it aside (e.g. mv {db} {db}.v1) and scan again; the next sweep reads every item once and "
        "starts a new history")
    with sqlite3.connect(db) as other:
        assert [r[0] for r in other.execute("SELECT name FROM sqlite_master")] == ["sweep_items"]


def test_a_directory_where_the_database_should_be_is_a_clear_error(db: Path) -> None:
    db.mkdir(parents=True)
    with pytest.raises(StateError, match="cannot open the state database"):
        State.open(db)


def test_a_full_disk_is_a_state_error_and_a_later_flush_keeps_everything(db: Path, state: State) -> None:
    sid = new_sweep(state)
    state.record(sid, complete(file_item("/data/first")))
    state.flush()
    pages = state._conn.execute("PRAGMA page_count").fetchone()[0]
    state._conn.execute(f"PRAGMA max_page_count = {pages}")  # the file cannot grow: SQLITE_FULL
    recorded = 0
    with pytest.raises(StateError, match=r"cannot write the state database .*state\.db: database or disk is full"):
        for i in range(200):  # more than the free space in the last page, fewer than an automatic commit
            state.record(sid, complete(file_item(f"/data/{i:04d}/" + "x" * 200, inode=i), finding("/x", i)))
            recorded += 1
        state.flush()
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert other.execute("SELECT count(*) FROM results").fetchone()[0] == 1
    state._conn.execute("PRAGMA max_page_count = 1073741823")
    state.flush()  # the buffer was kept: nothing recorded is lost once the disk has room
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT count(*) FROM results").fetchone()[0] == 1 + recorded


def test_a_database_locked_by_another_writer_is_a_state_error_once_the_wait_runs_out(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import panscan.state

    monkeypatch.setattr(panscan.state, "BUSY_TIMEOUT_SECONDS", 0.2)
    with State.open(db) as st:
        sid = new_sweep(st)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        st.record(sid, complete(file_item("/data/x")))
        with pytest.raises(StateError, match=r"cannot write the state database .*: database is locked"):
            st.flush()
        other.execute("ROLLBACK")
        other.close()
        st.flush()
        assert st.lookup(file_item("/data/x"), "v1") == sid


# --- round trips ---------------------------------------------------------------------------


def every_field_item() -> Item:
    values: dict[str, object] = {}
    for f in fields(Item):
        values[f.name] = {"str": f"v-{f.name}", "int": 7, "float": 1.5, "bool": True}[
            next(t for t in ("bool", "float", "int", "str") if t in str(f.type))]
    return Item(**values)  # type: ignore[arg-type]


def test_item_json_keeps_every_item_field() -> None:
    item = every_field_item()
    assert all(getattr(item, f.name) is not None for f in fields(Item))
    assert item_from_json(item_to_json(item)) == item


def test_recorded_results_replay_in_record_order_with_findings_and_verdicts(state: State) -> None:
    sid = new_sweep(state)
    verdict = RetentionVerdict("s3://bucket/old.csv", "v1", "payment-logs", 400, 90, "GLACIER", 10, 1_600_000_000.0,
                               noncurrent_days=12)
    old = replace(s3_item("old.csv", "v1", is_latest=False), storage_class="GLACIER")
    results = [
        (complete(file_item("/data/b.txt"),
                  replace(finding("/data/b.txt", 5, member="inner/a.txt"), change="new", retention="expired"),
                  replace(finding("/data/b.txt", 90, fp=FP_B, kind=Kind.TRACK2), change="still present")), None),
        (ItemResult(every_field_item(), Status.SKIPPED, Reason.NOT_REGULAR_FILE, "not a regular file"), None),
        (ItemResult(old, Status.ERROR, Reason.INVALID_OBJECT_STATE, "archived", 0), verdict),
        (ItemResult(file_item("/data/a.txt"), Status.PARTIAL, Reason.TIME_CUT_OFF_REACHED, "cut off", 50,
                    (finding("/data/a.txt", 3),), unchanged_since_sweep=None), None),
    ]
    for result, v in results:
        state.record(sid, result, v)
    assert list(state.replay(sid)) == results


def test_bucket_records_replay_in_order(state: State) -> None:
    sid = new_sweep(state)
    records: list[dict[str, Any]] = [{"bucket": "b1", "versioning": "Enabled", "objects": 3},
                                     {"bucket": "b2", "error": "AccessDenied"}]
    for r in records:
        state.record_bucket(sid, r)
    assert state.replay_buckets(sid) == records
    assert state.replay_buckets(sid + 1) == []


def test_recording_an_item_twice_in_a_sweep_keeps_only_the_last(db: Path, state: State) -> None:
    sid = new_sweep(state)
    item = file_item("/data/x")
    state.record(sid, complete(item, finding("/data/x", 1), finding("/data/x", 2)))
    state.flush()
    state.record(sid, complete(item, finding("/data/x", 3)))  # a retried item, once committed
    state.record(sid, complete(file_item("/data/y")))
    state.record(sid, ItemResult(item, Status.ERROR, Reason.WORKER_CRASHED, "crashed"))  # and within the buffer
    state.record(sid, complete(item, finding("/data/x", 4)))
    replayed = [r for r, _ in state.replay(sid)]
    assert [(r.item.location, [f.offset for f in r.findings]) for r in replayed] == [("/data/y", []), ("/data/x", [4])]
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT count(*) FROM sweep_findings").fetchone()[0] == 1


def test_record_stores_the_masked_number_and_fingerprint_and_nothing_else_about_the_card(db: Path,
                                                                                         state: State) -> None:
    # Finding has no field that could hold a full number; if one is ever added, this test makes
    # whoever adds it decide how (and whether) the state stores it.
    assert {f.name for f in fields(Finding)} == {
        "location", "version_id", "is_latest", "member", "offset", "line", "kind", "brand", "masked", "fingerprint",
        "confidence", "test_card", "retention", "change", "volume_id"}
    sid = new_sweep(state)
    state.record(sid, complete(file_item("/data/x"), finding("/data/x", 1)))
    state.flush()
    with sqlite3.connect(db) as other:
        other.row_factory = sqlite3.Row
        row = other.execute("SELECT * FROM sweep_findings").fetchone()
    assert row["masked"] == "453201******0366" and row["fingerprint"] == FP_A
    assert set(row.keys()) == {"sweep_id", "location", "version_id", "is_latest", "member", "offset", "line", "kind",
                               "brand", "masked", "fingerprint", "confidence", "test_card", "retention", "change",
                               "fkey"}


def test_records_are_committed_by_themselves_after_enough_rows(db: Path, state: State) -> None:
    sid = new_sweep(state)
    for i in range(FLUSH_ROWS):
        state.record(sid, complete(file_item(f"/data/{i}", inode=i)))
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT count(*) FROM results").fetchone()[0] == FLUSH_ROWS


def test_a_large_sweep_replays_every_item_once_in_record_order(state: State) -> None:
    sid = new_sweep(state)
    names = [f"/data/{(i * 7919) % 2500:05d}" for i in range(2500)]  # record order is not name order
    for i, name in enumerate(names):
        state.record(sid, complete(file_item(name, inode=i), *[finding(name, k) for k in range(i % 3)]))
    replayed = [r for r, _ in state.replay(sid)]
    assert [r.item.location for r in replayed] == names
    assert [len(r.findings) for r in replayed] == [i % 3 for i in range(2500)]


def test_close_commits_what_is_buffered(db: Path) -> None:
    with State.open(db) as st:
        sid = new_sweep(st)
        st.record(sid, complete(file_item("/data/x")))
    with State.open(db) as st:
        assert len(list(st.replay(sid))) == 1


# --- unchanged items -----------------------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"size": 101}, {"mtime_ns": 1_700_000_000_123_456_790}, {"inode": 43}, {"device": 2050},
    {"last_modified": 1_700_000_001.0}, {"etag": '"def"'}, {"version_id": "other"}, {"location": "/data/other"},
])
def test_lookup_misses_when_any_identifying_metadata_changed(state: State, change: dict[str, object]) -> None:
    item = replace(file_item("/data/x"), etag='"abc"')
    sid = new_sweep(state)
    state.record(sid, complete(item))
    state.flush()
    assert state.lookup(item, "v1") == sid
    assert state.lookup(replace(item, **change), "v1") is None  # type: ignore[arg-type]


def test_lookup_hits_regardless_of_metadata_that_does_not_identify_content(state: State) -> None:
    item = s3_item("a.csv", "v1", is_latest=True)
    sid = new_sweep(state, ("s3://bucket",))
    state.record(sid, complete(item))
    assert state.lookup(replace(item, is_latest=False, noncurrent_since=1_700_000_500.0), "v1") == sid


def test_lookup_misses_with_a_new_pattern_version(state: State) -> None:
    item = file_item("/data/x")
    sid = new_sweep(state)
    state.record(sid, complete(item))
    assert state.lookup(item, "v1") == sid
    assert state.lookup(item, "v2") is None


def test_lookup_misses_items_that_were_not_read_completely(state: State) -> None:
    sid = new_sweep(state)
    for status, reason in [(Status.PARTIAL, Reason.TIME_CUT_OFF_REACHED), (Status.ERROR, Reason.READ_ERROR),
                           (Status.SKIPPED, Reason.FILE_EXCEEDS_SIZE_LIMIT)]:
        item = file_item(f"/data/{status}")
        state.record(sid, ItemResult(item, status, reason))
        assert state.lookup(item, "v1") is None


def test_lookup_misses_an_item_whose_retry_in_the_same_sweep_failed(state: State) -> None:
    item = file_item("/data/x")
    sid = new_sweep(state)
    state.record(sid, complete(item))
    state.flush()
    state.record(sid, ItemResult(item, Status.ERROR, Reason.READ_ERROR))
    assert state.lookup(item, "v1") is None
    state.flush()
    assert state.lookup(item, "v1") is None


def test_names_that_are_not_utf8_round_trip_everywhere(state: State) -> None:
    # A file source hands over undecodable names surrogate-escaped (os.fsdecode); sqlite3 itself
    # refuses such strings.
    name = os.fsdecode(b"/data/caf\xe9-\xff.csv")
    other = "/data/café.csv"  # valid UTF-8: stored as text
    member = os.fsdecode(b"in\xfe.zip/x.txt")
    first = new_sweep(state)
    results = [complete(file_item(name), finding(name, 1, member=member), finding(name, 5)),
               complete(file_item(other), finding(other, 1)),
               ItemResult(file_item(name + "2"), Status.ERROR, Reason.READ_ERROR, f"cannot read {name}2")]
    for r in results:
        state.record(first, state.annotate(None, r))
    finish(state, first)
    assert [r for r, _ in state.replay(first)] == [state.annotate(None, r) for r in results]
    assert state.lookup(file_item(name), "v1") == first
    assert state.lookup(file_item(other), "v1") == first
    second = new_sweep(state)
    carried = state.annotate(first, state.carried(first, file_item(name)))
    assert [(f.member, f.change) for f in carried.findings] == [(member, "still present"), (None, "still present")]
    state.record(second, state.annotate(first, complete(file_item(name), finding(name, 5))))
    resolved, _ = state.resolved(second, first, enumeration_complete=True)
    assert [(f.location, f.member) for f in resolved] == [(name, member), (other, None)]
    assert state.replay_resolved(second) == resolved
    state.add_restore(name, None, "bulk", "GLACIER", 1, 1.0, second)
    assert [r.location for r in state.pending_restores()] == [name]
    assert state.clear_restore(name, None)


def test_lookup_handles_none_metadata_and_inode_numbers_beyond_64_bits(state: State) -> None:
    bare = Item("glacier://vault/archive-1", "glacier")
    huge = file_item("/mnt/nfs/x", inode=2**64 - 5)
    sid = new_sweep(state)
    state.record(sid, complete(bare))
    state.record(sid, complete(huge))
    state.flush()
    assert state.lookup(bare, "v1") == sid
    assert state.lookup(replace(bare, size=1), "v1") is None
    assert state.lookup(huge, "v1") == sid
    assert state.lookup(replace(huge, inode=2**64 - 4), "v1") is None
    assert [r.item for r, _ in state.replay(sid)] == [bare, huge]


def test_carried_result_takes_the_fresh_listing_and_the_stored_findings(state: State) -> None:
    old = s3_item("a.csv", "v1", is_latest=True)
    first = new_sweep(state, ("s3://bucket",))
    stored = complete(old, replace(finding(old.location, 7, version_id="v1", is_latest=True), change="new",
                                   retention="expired"),
                      finding(old.location, 70, version_id="v1", is_latest=True, member="z/m.txt"))
    state.record(first, replace(stored, bytes_scanned=1234))
    finish(state, first)

    fresh = replace(old, is_latest=False, noncurrent_since=1_700_000_900.0)  # a newer version was written since
    assert state.lookup(fresh, "v1") == first
    carried = state.carried(first, fresh)
    assert carried.item == fresh
    assert (carried.status, carried.reason, carried.bytes_scanned, carried.unchanged_since_sweep) == (
        Status.COMPLETE, None, 1234, first)
    assert carried.findings == tuple(replace(f, is_latest=False, change=None, retention=None) for f in stored.findings)


def test_a_carried_item_with_many_findings_has_them_read_back_in_batches_not_at_once(state: State) -> None:
    item = file_item("/data/dump")
    first = new_sweep(state)
    state.record(first, complete(item, *(finding("/data/dump", 17 * n) for n in range(5))))
    finish(state, first)
    whole = state.carried(first, item)
    deferred = state.carried(first, item, max_findings=4)
    assert (deferred.findings, deferred.earlier_findings) == ((), 5)
    assert replace(deferred, earlier_findings=0) == replace(whole, findings=())
    batches = list(state.carried_findings(first, item, 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert tuple(f for b in batches for f in b) == whole.findings
    assert state.carried(first, item, max_findings=5) == whole


def test_replay_hands_a_dense_items_findings_over_in_batches_before_its_result(state: State) -> None:
    dense, sparse = file_item("/data/dump"), file_item("/data/one", inode=43)
    sid = new_sweep(state)
    state.record(sid, complete(dense, *(replace(finding("/data/dump", 17 * n), change="new") for n in range(5))))
    state.record(sid, complete(sparse, finding("/data/one", 3)))
    finish(state, sid)
    whole = [r for r, _ in state.replay(sid)]
    handed: list[tuple[Finding, ...]] = []
    streamed = [r for r, _ in state.replay(sid, handed.append, 2)]
    assert [len(b) for b in handed] == [2, 2, 1]
    assert tuple(f for b in handed for f in b) == whole[0].findings
    assert (streamed[0].findings, streamed[0].earlier_findings) == ((), 5)
    assert streamed[1] == whole[1]  # few findings: in its result, as without a callback


def test_a_carried_item_stays_carried_from_where_it_was_read(state: State) -> None:
    item = file_item("/data/x")
    first = new_sweep(state)
    state.record(first, complete(item, finding("/data/x", 5)))
    finish(state, first)
    second = new_sweep(state)
    state.record(second, state.annotate(first, state.carried(first, item)))
    finish(state, second)
    third = new_sweep(state)
    assert state.lookup(item, "v1") == first  # a carried record does not move the item's origin
    carried = state.annotate(second, state.carried(first, item))
    assert [f.change for f in carried.findings] == ["still present"]  # second holds its own copy
    state.record(third, carried)
    assert [r.unchanged_since_sweep for r, _ in state.replay(third)] == [first]


def table_rows(state: State, table: str) -> int:
    state.flush()
    return int(state._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_carried_result_identical_to_the_stored_one_adds_no_result_row(state: State) -> None:
    items = [file_item(f"/data/{i}", inode=i) for i in range(50)]
    first = new_sweep(state)
    for item in items:
        state.record(first, complete(item, finding(item.location, 3)) if item.inode == 7 else complete(item))
    finish(state, first)
    stored = table_rows(state, "results")
    for _ in range(3):
        sid = new_sweep(state)
        for item in reversed(items):  # listed in another order than it was recorded
            scanned_in = state.lookup(item, "v1")
            assert scanned_in == first
            state.record(sid, state.annotate(first, state.carried(scanned_in, item)))
        finish(state, sid)
        assert table_rows(state, "results") == stored == 50
        replayed = [r for r, _ in state.replay(sid)]
        assert [r.item for r in replayed] == list(reversed(items))
        assert {r.unchanged_since_sweep for r in replayed} == {first}
        assert [f.change for r in replayed for f in r.findings] == ["still present"]
    assert [r.unchanged_since_sweep for r, _ in state.replay(first)] == [None] * 50


def test_a_carried_result_whose_listing_moved_is_stored_once_more_then_shared(state: State) -> None:
    old = s3_item("a.csv", "v1", is_latest=True)
    first = new_sweep(state, ("s3://bucket",))
    state.record(first, complete(old))
    finish(state, first)
    moved = replace(old, is_latest=False)  # a newer version was written: not a reason to read it again
    for expected_rows in (2, 2):
        sid = new_sweep(state, ("s3://bucket",))
        state.record(sid, state.carried(state.lookup(moved, "v1") or 0, moved))
        finish(state, sid)
        assert table_rows(state, "results") == expected_rows
        [(replayed, _)] = list(state.replay(sid))
        assert (replayed.item, replayed.unchanged_since_sweep) == (moved, first)
    [(original, _)] = list(state.replay(first))
    assert (original.item, original.unchanged_since_sweep) == (old, None)


def test_a_carried_result_with_a_retention_verdict_keeps_each_sweeps_verdict(state: State) -> None:
    item = file_item("/data/old")
    first = new_sweep(state)
    state.record(first, complete(item))
    finish(state, first)
    verdicts = {}
    for age in (400, 407):
        sid = new_sweep(state)
        verdicts[sid] = RetentionVerdict("/data/old", None, "default", age, 365, None, 100, 1.0)
        state.record(sid, state.carried(first, item), verdicts[sid])
        finish(state, sid)
    for sid, verdict in verdicts.items():
        assert [v for _, v in state.replay(sid)] == [verdict]


def test_prune_keeps_running_sweeps_the_newest_complete_one_and_those_with_pending_restores(db: Path,
                                                                                            state: State) -> None:
    item = file_item("/data/x")
    ids = []
    for n in range(6):
        sid = new_sweep(state)
        state.record(sid, complete(item) if n == 0 else state.carried(ids[0], item))
        ids.append(sid)
        if n != 4:
            finish(state, sid)
    state.add_restore("s3://b/k", None, "Bulk", "GLACIER", 1, 1.0, ids[1])
    result = state.prune(keep=1, now=2_000_000_000.0)
    assert result.sweeps == (ids[0], ids[2], ids[3])
    assert [s.id for s in state.sweeps()] == [ids[5], ids[4], ids[1]]
    assert table_rows(state, "results") == 1  # stored by the first sweep, still carried by the others
    assert state.lookup(item, "v1") == ids[0]
    assert [r.unchanged_since_sweep for r, _ in state.replay(ids[5])] == [ids[0]]
    assert state.prune(keep=1, now=2_000_000_000.0).sweeps == ()
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert other.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_pending_record_is_visible_to_lookup_and_carried_before_it_is_committed(state: State) -> None:
    item = file_item("/data/x")
    sid = new_sweep(state)
    state.record(sid, complete(item, finding("/data/x", 5)))
    assert state.lookup(item, "v1") == sid
    assert len(state.carried(sid, item).findings) == 1


# --- new, still present, resolved ----------------------------------------------------------


def test_without_a_previous_sweep_every_finding_is_new(state: State) -> None:
    result = complete(file_item("/data/x"), finding("/data/x", 1), finding("/data/x", 9))
    assert [f.change for f in state.annotate(None, result).findings] == ["new", "new"]
    assert state.annotate(None, complete(file_item("/data/y"))) == complete(file_item("/data/y"))


def test_moved_findings_are_still_present_and_a_second_copy_is_new(state: State) -> None:
    first = new_sweep(state)
    state.record(first, state.annotate(None, complete(
        file_item("/data/x"), finding("/data/x", 100), finding("/data/x", 300, fp=FP_B))))
    finish(state, first)
    # Text was inserted before both numbers, and a second copy of FP_A appears before the first.
    now = complete(file_item("/data/x", size=300), finding("/data/x", 40), finding("/data/x", 150),
                   finding("/data/x", 350, fp=FP_B), finding("/data/x", 360, fp=FP_B, member="a.zip/in.txt"))
    annotated = state.annotate(first, now)
    assert [(f.offset, f.change) for f in annotated.findings] == [
        (40, "still present"), (150, "new"), (350, "still present"), (360, "new")]
    assert [replace(f, change=None) for f in annotated.findings] == list(now.findings)


def test_findings_of_another_location_or_version_are_new(state: State) -> None:
    first = new_sweep(state, ("s3://bucket",))
    state.record(first, complete(s3_item("k", "v1"), finding("s3://bucket/k", 5, version_id="v1")))
    finish(state, first)
    other_version = complete(s3_item("k", "v2"), finding("s3://bucket/k", 5, version_id="v2"))
    assert [f.change for f in state.annotate(first, other_version).findings] == ["new"]


def record_previous(state: State) -> int:
    first = new_sweep(state)
    for name in ("fixed", "broken", "gone", "kept"):
        state.record(first, complete(file_item(f"/data/{name}"), finding(f"/data/{name}", 10),
                                     finding(f"/data/{name}", 20, fp=FP_B)))
    finish(state, first)
    return first


def test_resolved_findings_are_those_gone_from_items_read_completely_or_gone_items(state: State) -> None:
    first = record_previous(state)
    second = new_sweep(state)
    state.record(second, state.annotate(first, complete(file_item("/data/fixed", size=5), finding("/data/fixed", 3))))
    state.record(second, ItemResult(file_item("/data/broken"), Status.ERROR, Reason.READ_ERROR, "unreadable"))
    state.record(second, state.annotate(first, state.carried(first, file_item("/data/kept"))))
    resolved, unverified = state.resolved(second, first, enumeration_complete=True)
    assert [(f.location, f.fingerprint, f.change) for f in resolved] == [
        ("/data/fixed", FP_B, "resolved"), ("/data/gone", FP_A, "resolved"), ("/data/gone", FP_B, "resolved")]
    assert unverified == 2  # the two findings of the item in error
    assert state.replay_resolved(second) == resolved


def test_an_absent_item_is_unverified_when_enumeration_was_incomplete(state: State) -> None:
    first = record_previous(state)
    second = new_sweep(state)
    for name in ("fixed", "broken", "kept"):
        state.record(second, complete(file_item(f"/data/{name}"), finding(f"/data/{name}", 10),
                                      finding(f"/data/{name}", 20, fp=FP_B)))
    resolved, unverified = state.resolved(second, first, enumeration_complete=False)
    assert (resolved, unverified) == ([], 2)
    assert state.replay_resolved(second) == []


def test_resolved_against_no_previous_sweep_is_empty_and_recomputing_replaces_the_stored_list(state: State) -> None:
    first = record_previous(state)
    second = new_sweep(state)
    assert state.resolved(second, None, True) == ([], 0)
    assert len(state.resolved(second, first, True)[0]) == 8
    assert len(state.replay_resolved(second)) == 8
    back = complete(file_item("/data/gone"), finding("/data/gone", 10), finding("/data/gone", 20, fp=FP_B))
    state.record(second, back)
    assert len(state.resolved(second, first, True)[0]) == 6
    assert len(state.replay_resolved(second)) == 6


# --- sweeps --------------------------------------------------------------------------------


def test_previous_sweep_is_the_latest_complete_one_of_the_same_targets(state: State) -> None:
    a = state.begin_sweep(("/b", "/a"), "v1", {}, 1.0)
    assert a.previous_id is None
    finish(state, a.id)
    b = state.begin_sweep(("/a", "/b", "/a"), "v2", {}, 2.0)  # order and repeats do not matter
    assert b.previous_id == a.id
    finish(state, b.id)
    c = state.begin_sweep(("/a", "/b"), "v2", {}, 3.0)
    assert c.previous_id == b.id
    finish(state, c.id, "interrupted")
    d = state.begin_sweep(("/a", "/b"), "v2", {}, 4.0)  # c was interrupted, d is still running
    assert d.previous_id == b.id
    assert state.begin_sweep(("/b", "/a"), "v2", {}, 5.0).previous_id == b.id
    assert state.begin_sweep(("/a",), "v2", {}, 6.0).previous_id is None


def test_sweeps_are_listed_newest_first_with_their_summary(state: State) -> None:
    a = new_sweep(state, ("/x", "/y"))
    state.finish_sweep(a, "complete", {"findings": 3, "exit_status": 1}, 1, 1_700_000_200.0)
    b = new_sweep(state, ("s3://bucket",), "v2")
    assert [s.id for s in state.sweeps()] == [b, a]
    info = state.sweep(a)
    assert info is not None
    assert (info.status, info.targets, info.finished, info.exit_status, info.summary, info.pattern_version) == (
        "complete", ("/x", "/y"), 1_700_000_200.0, 1, {"findings": 3, "exit_status": 1}, "v1")
    running = state.sweep(b)
    assert running is not None and (running.status, running.finished, running.summary) == ("running", None, None)
    assert state.sweep(b + 1) is None
    assert state.latest_sweep_id() == b


def test_a_running_sweep_whose_process_is_gone_becomes_interrupted(db: Path) -> None:
    child = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from panscan.state import State
        st = State.open(Path(sys.argv[1]))
        print(st.begin_sweep(("/data",), "v1", {}, 1.0).id, flush=True)
        os._exit(0)  # killed mid-sweep: never finished
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(db)], capture_output=True, text=True, check=True)
    dead = int(proc.stdout)
    with State.open(db) as st:
        mine = st.begin_sweep(("/data",), "v1", {}, 2.0)
        assert mine.interrupted == (dead,)
        assert st.sweep(dead).status == "interrupted"  # type: ignore[union-attr]
        elsewhere = new_sweep(st)
        with sqlite3.connect(db) as other:
            other.execute("UPDATE sweeps SET host = 'another-host', pid = 1 WHERE id = ?", (elsewhere,))
        assert socket.gethostname() != "another-host"
        # Neither our own running sweep (this process is alive) nor one of another host (its
        # process cannot be checked from here) is touched.
        last = st.begin_sweep(("/data",), "v1", {}, 3.0)
        assert last.interrupted == ()
        assert {s.id: s.status for s in st.sweeps()} == {
            dead: "interrupted", mine.id: "running", elsewhere: "running", last.id: "running"}


def test_a_killed_writer_leaves_a_consistent_database_with_what_it_flushed(db: Path) -> None:
    child = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from panscan.model import Confidence, Finding, Item, ItemResult, Kind, Status
        from panscan.state import State
        st = State.open(Path(sys.argv[1]))
        sid = st.begin_sweep(("/data",), "v1", {}, 1.0).id
        def result(i):
            loc = f"/data/{i}"
            findings = tuple(Finding(loc, None, None, None, k, 1, Kind.PAN, "Visa", "453201******0366", "ab" * 32,
                                     Confidence.HIGH, False) for k in range(i % 4))
            return ItemResult(Item(loc, "file", size=i, inode=i, mtime_ns=i), Status.COMPLETE, None, None, i, findings)
        for i in range(300):
            st.record(sid, result(i))
        st.flush()
        for i in range(300, 400):
            st.record(sid, result(i))
        print(sid, flush=True)
        os._exit(1)
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(db)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    sid = int(proc.stdout)
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert other.execute("PRAGMA foreign_key_check").fetchall() == []
    with State.open(db) as st:
        replayed = [r for r, _ in st.replay(sid)]
        locations = [r.item.location for r in replayed]
        assert locations[:300] == [f"/data/{i}" for i in range(300)]
        assert len(locations) <= 400
        for r in replayed:  # every item came with all of its findings, or not at all
            assert len(r.findings) == r.item.size % 4  # type: ignore[operator]
        assert st.lookup(Item("/data/299", "file", size=299, inode=299, mtime_ns=299), "v1") == sid
        assert st.sweep(sid).status == "running"  # type: ignore[union-attr]
        assert st.begin_sweep(("/data",), "v1", {}, 2.0).interrupted == (sid,)


# --- restores and jobs ---------------------------------------------------------------------


def test_restores_round_trip_upsert_and_clear(state: State) -> None:
    sid = new_sweep(state, ("s3://bucket",))
    state.add_restore("s3://bucket/a", "v1", "bulk", "GLACIER", 10, 100.0, sid)
    state.add_restore("s3://bucket/b", None, "standard", "DEEP_ARCHIVE", None, 50.0, sid)
    state.add_restore("s3://bucket/a", "v1", "expedited", "GLACIER", 10, 200.0, sid)  # asked again
    assert state.pending_restores() == [
        PendingRestore("s3://bucket/b", None, "standard", "DEEP_ARCHIVE", None, 50.0, sid),
        PendingRestore("s3://bucket/a", "v1", "expedited", "GLACIER", 10, 200.0, sid),
    ]
    assert state.clear_restore("s3://bucket/b", None) is True
    assert state.clear_restore("s3://bucket/b", None) is False
    assert state.clear_restore("s3://bucket/a", "v2") is False
    assert [r.location for r in state.pending_restores()] == ["s3://bucket/a"]


def test_glacier_jobs_round_trip_and_update(state: State) -> None:
    inventory = GlacierJob("job-1", "vault", "us-east-1", "InventoryRetrieval", None, None, 10.0, "pending")
    archive = GlacierJob("job-2", "vault", None, "ArchiveRetrieval", "arch-1", "Bulk", 5.0, "pending",
                         detail="waiting", attempts=2, size=1234, description="backup.tar")
    state.add_job(inventory)
    state.add_job(archive)
    assert state.jobs() == [archive, inventory]
    state.update_job("job-2", status="succeeded")
    state.update_job("job-1", status="failed", detail="InternalError", attempts=3)
    assert state.jobs() == []
    assert state.jobs(pending_only=False) == [
        replace(archive, status="succeeded"),  # detail and attempts kept when not given
        replace(inventory, status="failed", detail="InternalError", attempts=3)]
    with pytest.raises(KeyError):
        state.update_job("job-3", status="failed")
    with pytest.raises(ValueError):
        state.update_job("job-1", status="done")


def test_the_state_survives_reopening(db: Path) -> None:
    with State.open(db) as st:
        sid = new_sweep(st)
        st.record(sid, complete(file_item("/data/x"), finding("/data/x", 1)), None)
        st.add_restore("s3://b/k", None, "bulk", "GLACIER", 1, 1.0, sid)
        finish(st, sid)
    with State.open(db) as st:
        assert st.latest_sweep_id() == sid
        assert st.lookup(file_item("/data/x"), "v1") == sid
        assert len(st.pending_restores()) == 1
        assert json.loads(json.dumps(st.sweep(sid).summary)) == {"findings": 0}  # type: ignore[union-attr]
