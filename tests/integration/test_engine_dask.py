"""The Dask engine on a 2-process LocalCluster against the moto server: the same results as
the local engine, worker crashes, permanent batch failures, backpressure, interrupts.

Each test starts the engine's own LocalCluster (about a second): its worker processes are
spawned from this one and inherit its environment as it is then, which is how they get the
moto endpoint (``AWS_ENDPOINT_URL``, set by the ``s3`` fixture) and the test-only markers.
"""
# ruff: noqa: F811

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The fixtures are imported by name (pytest finds them in the module's namespace), so the
# tests' ``s3`` parameters shadow the import on purpose.
from s3_server import MotoS3, moto_server, s3, versioned_bucket  # noqa: F401

from panscan.engine.dask import TEST_FAIL_ENV, DaskEngine
from panscan.engine.local import LocalEngine
from panscan.engine.runner import EXIT_INCOMPLETE, Tally
from panscan.engine.worker import TEST_CRASH_ENV, WorkerContext
from panscan.match.luhn import check_digit
from panscan.model import Item, ItemResult, Reason, Status
from panscan.sources.s3 import S3Options, enumerate_s3

# Several clusters start and workers are killed and restarted: seconds, not minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KEY = b"d" * 32
RNG = random.Random(20261201)
# Small ranges so a modest object is split; the PAN planted across a range edge is the point.
SPLIT_THRESHOLD = 128 * 1024
RANGE_SIZE = 64 * 1024


def make_pan(prefix: str = "4") -> str:
    body = prefix + "".join(RNG.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + check_digit(body)


def s3_items(bucket: str) -> list[Item | ItemResult]:
    return list(enumerate_s3([f"s3://{bucket}"], S3Options()))


def records(results: list[ItemResult]) -> tuple[list[str], list[str]]:
    """Item and finding records, each as canonical JSON, sorted: order is not part of the contract."""
    items = sorted(json.dumps(r.to_record(), sort_keys=True) for r in results)
    findings = sorted(json.dumps(f.to_record(), sort_keys=True) for r in results for f in r.findings)
    return items, findings


def by_location(results: list[ItemResult]) -> dict[str, ItemResult]:
    """Results of an unversioned bucket (one version per key) by location."""
    out = {r.item.location: r for r in results}
    assert len(out) == len(results), "an item was reported twice"
    return out


def test_local_and_dask_engines_give_the_same_items_and_findings_on_a_versioned_bucket(s3: MotoS3) -> None:
    c = versioned_bucket(s3, "same")
    for i in range(30):
        body = f"order {i}\ncard {make_pan()} paid\n" if i % 3 == 0 else f"order {i}\nnothing here\n"
        c.put_object(Bucket="same", Key=f"orders/{i:02d}.txt", Body=body.encode())
        if i % 5 == 0:  # an older version that still holds a number
            c.put_object(Bucket="same", Key=f"orders/{i:02d}.txt", Body=f"redacted {i}\n".encode())
    edge_pan = make_pan()
    at = 2 * RANGE_SIZE - 7  # straddles the second range edge
    body = bytearray(b"log line without numbers\n" * (5 * RANGE_SIZE // 25))
    body[at - 1:at + len(edge_pan) + 1] = f" {edge_pan} ".encode()
    c.put_object(Bucket="same", Key="big.log", Body=bytes(body))
    assert len(body) > SPLIT_THRESHOLD
    listed = s3_items("same")
    ctx = WorkerContext(KEY)

    with LocalEngine(ctx, 2, split_threshold=SPLIT_THRESHOLD, range_size=RANGE_SIZE) as local:
        local_results = list(local.run(listed))
    with s3.lock:
        s3.requests.clear()
    # 4 tasks a batch: the big object's 5 ranges span two batches, merged back into one item.
    with DaskEngine(ctx, workers=2, split_threshold=SPLIT_THRESHOLD, range_size=RANGE_SIZE,
                    batch_items=4) as engine:
        dask_results = list(engine.run(listed))

    assert len(dask_results) == len(listed) == 37
    assert len({(r.item.location, r.item.version_id) for r in dask_results}) == 37  # each once
    assert records(dask_results) == records(local_results)
    [big] = [r for r in dask_results if r.item.location == "s3://same/big.log"]
    assert big.status is Status.COMPLETE and big.bytes_scanned == len(body)
    assert [(f.offset, f.masked) for f in big.findings] == [(at, edge_pan[:6] + "******" + edge_pan[-4:])]
    # Every number planted is found once: 10 keys (one version each) and the big object.
    assert sum(len(r.findings) for r in dask_results) == 11
    # The Dask workers read the ranges themselves, over HTTP, with Range GETs.
    assert len([r for r in s3.get_object_requests("same", "big.log") if r.range]) >= 4


def test_a_worker_killed_by_an_item_loses_no_other_item_and_that_item_is_worker_crashed(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    c = s3.client
    c.create_bucket(Bucket="crashy")
    pan = make_pan()
    for i in range(12):
        c.put_object(Bucket="crashy", Key=f"ok-{i:02d}.txt", Body=f"card {pan}\n".encode())
    c.put_object(Bucket="crashy", Key="crash-me.txt", Body=f"card {pan}\n".encode())
    listed = s3_items("crashy")
    monkeypatch.setenv(TEST_CRASH_ENV, "crash-me")  # before the workers are spawned

    # retries=1: a batch is given up after two worker deaths, then its tasks run one by one.
    with DaskEngine(WorkerContext(KEY), workers=2, batch_items=4, retries=1) as engine:
        results = by_location(list(engine.run(listed)))

    assert len(results) == 13
    crashed = results["s3://crashy/crash-me.txt"]
    assert (crashed.status, crashed.reason) == (Status.ERROR, Reason.WORKER_CRASHED)
    assert crashed.detail == "the batch failed on the cluster (KilledWorker)"
    others = [r for loc, r in results.items() if "crash-me" not in loc]
    assert all(r.status is Status.COMPLETE and len(r.findings) == 1 for r in others)


def test_a_permanently_failing_batch_yields_error_items_by_exception_type_only_and_exit_2(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    pan = make_pan()  # in the failing key only: its digits must appear nowhere
    c = s3.client
    c.create_bucket(Bucket="failing")
    for i in range(8):
        c.put_object(Bucket="failing", Key=f"plain-{i}.txt", Body=b"nothing to see\n")
    c.put_object(Bucket="failing", Key=f"fail-me-{pan}.txt", Body=b"nothing to see either\n")
    listed = s3_items("failing")
    monkeypatch.setenv(TEST_FAIL_ENV, "fail-me")

    with DaskEngine(WorkerContext(KEY), workers=2, batch_items=3, retries=1) as engine:
        results = by_location(list(engine.run(listed)))

    assert len(results) == 9
    failed = results[f"s3://failing/fail-me-{pan}.txt"]
    assert (failed.status, failed.reason) == (Status.ERROR, Reason.WORKER_CRASHED)
    assert failed.detail == "the batch failed on the cluster (RuntimeError)"
    assert all(r.status is Status.COMPLETE for loc, r in results.items() if "fail-me" not in loc)
    tally = Tally()
    for r in results.values():
        tally.add(r)
    assert tally.exit_status(interrupted=False) == EXIT_INCOMPLETE
    # The injected exception quotes the location; Dask logs failed tasks with their
    # arguments (the workers' stderr is this process's, captured here: the first check
    # shows the capture saw their log). Neither the text nor the number got out.
    out, err = capfd.readouterr()
    assert "BatchFailed" in err
    assert "injected" not in out + err
    assert pan not in out + err


def _tiny_items(path: Path, n: int, counter: list[int]) -> Iterator[Item]:
    st = path.stat()
    for _ in range(n):
        counter[0] += 1
        yield Item(str(path), "file", size=st.st_size, inode=st.st_ino, device=st.st_dev,
                   mtime_ns=st.st_mtime_ns)


def test_at_most_two_batches_and_one_item_are_pulled_ahead_of_the_results_consumed(tmp_path: Path) -> None:
    target = tmp_path / "one.txt"
    target.write_text("nothing here\n")
    pulled = [0]
    batch_items = 5
    bound = 2 * batch_items + 1
    with DaskEngine(WorkerContext(KEY), workers=2, batch_items=batch_items, max_in_flight=2) as engine:
        results = engine.run(_tiny_items(target, 100, pulled))
        consumed = 0
        ahead = []
        for r in results:
            consumed += 1
            ahead.append(pulled[0] - consumed)
            assert r.status is Status.COMPLETE
    assert consumed == 100
    assert max(ahead) <= bound - 1  # the item just consumed is no longer ahead
    assert max(ahead) >= batch_items  # and the bound is used: batches really were in flight


def test_interrupt_stops_pulling_and_reports_every_pulled_item_once(tmp_path: Path) -> None:
    target = tmp_path / "one.txt"
    target.write_text("nothing here\n")
    pulled = [0]
    out: list[Any] = []
    pulled_at_interrupt = -1
    with DaskEngine(WorkerContext(KEY), workers=2, batch_items=3, max_in_flight=4) as engine:
        for r in engine.run(_tiny_items(target, 10_000, pulled)):
            out.append(r)
            if len(out) == 5:
                engine.interrupt()
                pulled_at_interrupt = pulled[0]
        assert engine.interrupted
    assert pulled[0] == pulled_at_interrupt  # nothing pulled after the interrupt
    assert len(out) == pulled[0] <= 5 + 4 * 3 + 1
    assert {(r.status, r.reason) for r in out} <= {(Status.COMPLETE, None), (Status.SKIPPED, Reason.INTERRUPTED)}


def test_an_external_scheduler_is_used_by_address_counted_by_threads_and_left_running(tmp_path: Path) -> None:
    from distributed import LocalCluster

    target = tmp_path / "one.txt"
    target.write_text(f"card {make_pan()}\n")
    pulled = [0]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        with DaskEngine(WorkerContext(KEY), cluster.scheduler_address, batch_items=2) as engine:
            assert engine.workers == 2  # worker threads, as the scheduler counts them
            results = list(engine.run(_tiny_items(target, 20, pulled)))
        assert len(results) == 20 and all(len(r.findings) == 1 for r in results)
        # Disconnected without stopping anyone else's cluster, and without leaving our plugin.
        assert len(cluster.scheduler.workers) == 1
        assert "forward-logging-panscan" not in cluster.scheduler.worker_plugins
