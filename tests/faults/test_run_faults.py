"""A whole scan on a bad day: credentials that expire mid-scan, a full disk under the state
database, Ctrl-C once and twice. Each test runs the real ``panscan`` command as a subprocess
(S3 through the fault proxy in front of the moto server, or real files) and then opens the
state database itself: it must pass ``PRAGMA integrity_check``, hold the sweep as
``interrupted`` (or closed) with the items that were done, and a rerun must read only what
was not done.

A worker killed with SIGKILL and the coordinator killed with SIGKILL are covered elsewhere:
``tests/integration/test_engine_local.py::test_sigkilled_worker_turns_only_its_item_into_worker_crashed_and_the_scan_finishes``,
``tests/integration/test_cli_scan.py::test_sigkilled_worker_via_cli_is_reported_and_the_scan_finishes``,
``tests/integration/test_engine_dask.py`` (WORKER_CRASHED on the cluster) and
``tests/integration/test_sweeps.py::test_a_sweep_killed_half_way_is_resumed_without_reading_or_reporting_anything_twice``.
"""
# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, CredentialRetrievalError, NoCredentialsError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from proxy import FaultProxy
from s3_server import MotoS3, moto_server, of_type, s3, versioned_bucket  # noqa: F401

from panscan.engine.local import PREFETCH
from panscan.match.luhn import check_digit
from panscan.sources.fetch import MAX_CONCURRENCY

CREDENTIALS_LINE = re.compile(r"AWS credentials expired \((\w+)\): .*renew them and run again")
# Requests a worker may have in flight when AWS first refuses its credentials: its batch's
# prefetch (at most the fetcher's concurrency ceiling), after which the rest of the batch is
# not read (see worker.scan_tasks).
IN_FLIGHT = MAX_CONCURRENCY


def pan(n: int) -> str:
    body = f"4556{n:011d}"
    return body + check_digit(body)


@pytest.fixture(scope="module")
def _proxy_server(moto_server: MotoS3) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxy(_proxy_server: FaultProxy, s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The proxy, rules and log cleared, with AWS_ENDPOINT_URL pointing at it; held requests
    are let go when the test ends."""
    _proxy_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", _proxy_server.endpoint)
    yield _proxy_server
    _proxy_server.reset()


def panscan(*args: str, state: Path, workers: int = 2, timeout: float = 120) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", *args, "--format", "jsonl",
                           "--state", str(state), "--workers", str(workers)],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def start_panscan(*args: str, state: Path, workers: int = 1) -> subprocess.Popen[str]:
    """``panscan scan`` in a session of its own, as a terminal would run it: Ctrl-C is sent
    to its whole process group (workers included)."""
    return subprocess.Popen([sys.executable, "-m", "panscan", "scan", *args, "--format", "jsonl",
                             "--state", str(state), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ), start_new_session=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the scan ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


class Stored:
    """What a state database holds, read with plain sqlite3 (not panscan's own code)."""

    def __init__(self, path: Path) -> None:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            self.integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
            self.sweeps = {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, status, exit_status FROM sweeps")}
            self.items: dict[int, dict[str, tuple[str, str | None, str | None]]] = {}
            for sid, location, status, reason, detail in db.execute(
                    "SELECT stored_in, location, status, reason, detail FROM results"):
                self.items.setdefault(sid, {})[location] = (status, reason, detail)
            self.seen = {row[0] for row in db.execute("SELECT location FROM seen")}

    def done(self, sweep: int) -> set[str]:
        return {loc for loc, (status, _, _) in self.items.get(sweep, {}).items() if status == "complete"}


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-3000:]


# --- credentials that expire mid-scan ------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "The provided token has expired. key=s3://b/k"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("exc", "words"), [
    (client_error("ExpiredToken", 400), "AWS credentials expired"),
    (client_error("ExpiredToken", 403), "AWS credentials expired"),
    (client_error("ExpiredTokenException", 400), "AWS credentials expired"),
    (client_error("InvalidToken", 400), "AWS credentials expired"),
    (client_error("RequestExpired", 400), "AWS credentials expired"),
    (client_error("TokenRefreshRequired", 400), "AWS credentials expired"),
    (NoCredentialsError(), "no AWS credentials found"),
    (CredentialRetrievalError(provider="sso", error_msg="token expired"), "AWS credentials unavailable"),
])
@pytest.mark.parametrize("source", ["s3", "glacier"])
def test_refused_credentials_are_permission_denied_naming_the_code_and_stop_the_scan(
        exc: Exception, words: str, source: str) -> None:
    import importlib

    from panscan.model import Item, ItemResult, Status
    from panscan.sources.aws import credentials_problem

    reason, detail = importlib.import_module(f"panscan.sources.{source}").reason_for(exc)
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    # Credentials that never existed cannot be renewed: that case says how to provide them.
    advice = ("set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role "
              "provides them") if isinstance(exc, NoCredentialsError) else "renew them and run again"
    assert (str(reason), detail) == ("PERMISSION_DENIED", f"{code}: {words}; {advice}")
    assert "s3://" not in detail  # never the message: it may quote a key
    item = Item(f"{source}://b/k", source)
    for status, wrapped in ((Status.ERROR, detail), (Status.PARTIAL, f"read failed: {detail}")):
        message = credentials_problem(ItemResult(item, status, reason, wrapped))
        assert message == f"{words} ({code}): the scan stopped early; {advice}"


@pytest.mark.parametrize(("code", "status", "reason"), [
    ("AccessDenied", 403, "PERMISSION_DENIED"), ("SlowDown", 503, "READ_ERROR"), ("NoSuchKey", 404,
                                                                                 "SOURCE_OBJECT_NO_LONGER_AVAILABLE"),
    ("InvalidObjectState", 403, "INVALID_OBJECT_STATE"), ("KMS.DisabledException", 400, "INVALID_ENCRYPTION"),
])
def test_other_refusals_keep_their_reason_and_do_not_stop_the_scan(code: str, status: int, reason: str) -> None:
    from panscan.model import Item, ItemResult, Reason, Status
    from panscan.sources.aws import credentials_problem
    from panscan.sources.s3 import reason_for

    got, detail = reason_for(client_error(code, status))
    assert str(got) == reason
    assert credentials_problem(ItemResult(Item("s3://b/k", "s3"), Status.ERROR, got, detail)) is None
    # Details may quote member names: words that merely appear in one never stop a scan.
    words = "ExpiredToken: AWS credentials expired; renew them and run again"
    assert credentials_problem(ItemResult(Item("/data/f", "file"), Status.ERROR, got, words)) is None
    archive = Item("s3://b/k.zip", "s3")
    assert credentials_problem(ItemResult(archive, Status.PARTIAL, got, f"x/{words}.txt: bad")) is None
    assert credentials_problem(ItemResult(archive, Status.PARTIAL, Reason.MALFORMED_FILE, words)) is None


OBJECTS = 60
EXPIRE_AFTER = 8  # GetObject requests answered before the credentials run out


def expiring_bucket(s3: MotoS3, name: str, *, cards: bool, objects: int = OBJECTS) -> None:
    """``objects`` small objects k000..; each holds a card number when ``cards``."""
    versioned_bucket(s3, name)
    for i in range(objects):
        body = f"card {pan(i)}\n" if cards else f"order {i} shipped\n"
        s3.put_directly(name, f"k{i:03d}.txt", body.encode())


def rerun_reads_only_what_was_not_done(proxy: FaultProxy, bucket: str, state: Path, done: set[str],
                                       objects: int = OBJECTS) -> None:
    """With good credentials again: every object not done is read once, none done is read again."""
    proxy.reset()
    code, records, err = panscan(f"s3://{bucket}", state=state)
    no_traceback(err)
    assert code == (1 if of_type(records, "finding") else 0), err[-2000:]
    items = of_type(records, "item")
    assert len(items) == objects and {i["status"] for i in items} == {"complete"}, err[-2000:]
    reads = Counter(g.key for g in proxy.requests(bucket))
    assert not set(reads) & {loc.rsplit("/", 1)[1] for loc in done}, "an object done before was read again"
    assert set(reads) == {f"k{i:03d}.txt" for i in range(objects)} - {loc.rsplit("/", 1)[1] for loc in done}
    assert set(reads.values()) == {1}
    assert sum(1 for i in items if i["unchanged_since_sweep"] == 1) == len(done)


@pytest.mark.parametrize("status", [400, 403])
def test_expired_token_mid_scan_is_reported_as_such_keeps_the_state_and_a_rerun_reads_only_the_rest(
        proxy: FaultProxy, s3: MotoS3, tmp_path: Path, status: int) -> None:
    expiring_bucket(s3, "expiring", cards=True)
    proxy.expire_after(EXPIRE_AFTER, status=status, code="ExpiredToken")
    state = tmp_path / "state.db"

    code, records, err = panscan("s3://expiring", state=state)

    no_traceback(err)
    assert code == 1, err[-2000:]  # the objects read before the credentials expired hold card numbers
    items = of_type(records, "item")
    failed = [i for i in items if i["status"] != "complete"]
    assert failed, "nothing failed: the proxy did not expire the credentials"
    # Every refused object says why, in words and with the S3 code; none is a bare READ_ERROR.
    refused = [i for i in failed if i["reason"] != "INTERRUPTED"]
    assert refused and all(i["reason"] == "PERMISSION_DENIED" and "ExpiredToken: AWS credentials expired"
                           in i["detail"] for i in refused), refused[:3]
    [summary] = of_type(records, "summary")
    assert summary["exit_status"] == 1 and summary["coverage"]["complete"] is False

    stored = Stored(state)
    assert stored.integrity == ["ok"]
    assert stored.sweeps[1] in (("interrupted", 1), ("complete", 1))
    done = stored.done(1)
    assert done == {i["location"] for i in items if i["status"] == "complete"}
    assert 0 < len(done) <= EXPIRE_AFTER
    assert {f["location"] for f in of_type(records, "finding")} == done
    assert done <= stored.seen
    rerun_reads_only_what_was_not_done(proxy, "expiring", state, done)


def test_expired_credentials_stop_the_scan_with_one_line_naming_them_and_exit_2(
        proxy: FaultProxy, s3: MotoS3, tmp_path: Path) -> None:
    # More objects than two workers' look-ahead, so that "stopped early" can be seen.
    objects = 4 * PREFETCH
    expiring_bucket(s3, "expiring", cards=False, objects=objects)
    proxy.expire_after(EXPIRE_AFTER)  # 400 ExpiredToken
    state = tmp_path / "state.db"

    code, records, err = panscan("s3://expiring", state=state)

    no_traceback(err)
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if CREDENTIALS_LINE.search(line)]
    assert len(lines) == 1 and CREDENTIALS_LINE.search(lines[0]).group(1) == "ExpiredToken", err[-2000:]  # type: ignore[union-attr]
    # Stopped at the first refusal: only the requests already in flight at a worker were
    # refused, not one per remaining object.
    refused = [s for s in proxy.seen if s.action == "expired"]
    assert len(refused) <= 2 * IN_FLIGHT + 4, f"{len(refused)} requests sent with expired credentials"
    items = of_type(records, "item")
    assert 0 < len(items) <= EXPIRE_AFTER + 2 * PREFETCH + 4 < objects  # objects not handed out are not listed
    assert {i["reason"] for i in items if i["status"] != "complete"} <= {"PERMISSION_DENIED", "INTERRUPTED"}
    [summary] = of_type(records, "summary")
    assert summary["interrupted"] is True and summary["exit_status"] == 2

    stored = Stored(state)
    assert stored.integrity == ["ok"]
    assert stored.sweeps[1] == ("interrupted", 2)
    done = stored.done(1)
    assert done == {i["location"] for i in items if i["status"] == "complete"}
    rerun_reads_only_what_was_not_done(proxy, "expiring", state, done, objects)


# --- a full disk under the state database -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root only), unmounted at the end."""
    where = tmp_path / "small-disk"
    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        print("skipped: mounting a tmpfs needs root and mount(8)")
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"skipped: cannot mount a tmpfs: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_under_the_state_is_one_clear_error_exit_2_and_the_database_stays_usable(
        small_disk: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    total = 5000  # ~230 KiB of WAL per 500 items recorded: the 1 MiB disk fills after ~2000
    for i in range(total):
        (tree / f"f{i:04d}.log").write_text(f"request {i} served\n")
    state = small_disk / "state.db"

    code, records, err = panscan(str(tree), state=state)

    no_traceback(err)
    assert code == 2, err[-2000:]
    assert re.search(rf"^panscan: error: cannot write the state database {re.escape(str(state))}: "
                     r"database or disk is full\b", err, re.MULTILINE), err[-2000:]
    assert len(of_type(records, "item")) < total  # it stopped, rather than going on without the state

    # Room again: the database is intact, holds the sweep and what was committed before the disk filled.
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    stored = Stored(state)
    assert stored.integrity == ["ok"]
    assert list(stored.sweeps) == [1]
    committed = stored.done(1)
    assert committed and committed <= stored.seen

    code, records, err = panscan(str(tree), state=state)
    no_traceback(err)
    assert code == 0, err[-2000:]
    assert "sweep 1 was interrupted" in err
    items = of_type(records, "item")
    assert len(items) == total and {i["status"] for i in items} == {"complete"}
    assert {i["location"] for i in items if i["unchanged_since_sweep"] == 1} == committed
    stored = Stored(state)
    assert stored.integrity == ["ok"]
    assert stored.sweeps == {1: ("interrupted", None), 2: ("complete", 0)}


# --- Ctrl-C --------------------------------------------------------------------------------------------


def test_ctrl_c_midway_prints_the_summary_marks_the_sweep_interrupted_and_a_rerun_reads_only_the_rest(
        proxy: FaultProxy, s3: MotoS3, tmp_path: Path) -> None:
    versioned_bucket(s3, "slow")
    # Each worker has many requests in flight: enough objects, each slow enough, that the
    # scan is still midway after the first 20 were answered and their results came back.
    total = 400
    for i in range(total):
        s3.put_directly("slow", f"k{i:03d}.txt", f"order {i} shipped\n".encode())
    proxy.delay_get(0.1)
    state = tmp_path / "state.db"

    proc = start_panscan("s3://slow", state=state)
    try:
        wait_for(lambda: len(proxy.requests("slow")) >= 20, proc, "20 objects were read")
        time.sleep(0.3)  # results travel to the coordinator in batches (at most 50 ms apart)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    no_traceback(err)
    assert proc.returncode == 2, err[-2000:]
    assert "interrupted" in err
    records = [json.loads(line) for line in out.splitlines()]
    summary = records[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True and summary["exit_status"] == 2
    items = of_type(records, "item")
    done = {i["location"] for i in items if i["status"] == "complete"}
    assert 15 <= len(done) < total
    assert summary["items"]["complete"] == len(done) and summary["items"]["total"] == len(items)
    assert {i["reason"] for i in items if i["status"] != "complete"} <= {"INTERRUPTED"}

    stored = Stored(state)
    assert stored.integrity == ["ok"]
    assert stored.sweeps[1] == ("interrupted", 2)
    assert stored.done(1) == done and done <= stored.seen
    assert set(stored.items[1]) == {i["location"] for i in items}  # the state holds what the report says

    proxy.reset()
    code, records, err = panscan("s3://slow", state=state)
    assert code == 0, err[-2000:]
    reads = Counter(f"s3://slow/{g.key}" for g in proxy.requests("slow"))
    assert set(reads) == {f"s3://slow/k{i:03d}.txt" for i in range(total)} - done and set(reads.values()) == {1}


def test_a_second_ctrl_c_stops_at_once_even_in_a_hung_listing_and_every_item_is_still_accounted_for(
        proxy: FaultProxy, s3: MotoS3, tmp_path: Path) -> None:
    versioned_bucket(s3, "first")
    versioned_bucket(s3, "second")
    total = 20
    for i in range(total):
        s3.put_directly("first", f"k{i:03d}.txt", f"card {pan(i)}\n".encode() if i == 0 else b"clean\n")
    s3.put_directly("second", "never.txt", b"clean\n")
    proxy.hold_bucket_requests("second", 300)  # its listing hangs
    proxy.delay_get(0.1)
    state = tmp_path / "state.db"

    proc = start_panscan("s3://first", "s3://second", state=state)
    try:
        # Buckets are listed together: the second one's listing hangs from the start, while
        # the first one's objects are read; interrupt once all of them were answered.
        wait_for(lambda: any(s.bucket == "second" for s in proxy.arrived)
                 and sum(1 for s in proxy.seen if s.bucket == "first" and s.method == "GET" and s.key) >= total,
                 proc, "the first bucket read while the second one's listing hangs")
        time.sleep(0.5)  # the last results reach the coordinator
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.0)  # the first Ctrl-C asks politely: the coordinator is still waiting for the listing
        stopped = time.monotonic()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        stopped = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    no_traceback(err)
    assert stopped < 10, f"the second Ctrl-C took {stopped:.1f} s"
    assert proc.returncode == 1, err[-2000:]  # the card number in first/k000 was found
    records = [json.loads(line) for line in out.splitlines()]
    summary = records[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True and summary["exit_status"] == 1
    stored = Stored(state)
    assert stored.integrity == ["ok"]
    assert stored.sweeps[1] == ("interrupted", 1)
    items = {i["location"]: i for i in of_type(records, "item")}
    assert set(stored.items[1]) == set(items)
    # Every object of the first bucket is accounted for: read, or reported as not reached.
    assert {f"s3://first/k{i:03d}.txt" for i in range(total)} <= set(items), sorted(items)
    assert {i["reason"] for i in items.values() if i["status"] != "complete"} <= {"INTERRUPTED"}
