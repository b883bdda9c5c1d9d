"""The Dask engine on a cluster of its own processes (a ``dask scheduler`` and a ``dask worker``
with two worker processes, started by the test) whose environment is not the coordinator's, as
on remote hosts (issue 21): the workers have no AWS endpoint of their own, or no credentials.

- The coordinator's ``--endpoint-url`` reaches the workers with each batch: they read the moto
  server it was given.
- Workers that cannot read what the coordinator listed stop the scan after the first batches,
  with one message, instead of failing every item.
- A credentials failure on a worker says that it was a worker's credentials.

The workers' environment has no ``AWS_ENDPOINT_URL``; ``HTTPS_PROXY``/``HTTP_PROXY`` point at a
dead loopback port (``NO_PROXY`` exempts loopback), so a worker that falls back to the real
AWS endpoint fails on loopback instead of reaching the internet.
"""
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DEAD_ENDPOINT
from s3_server import MotoS3, moto_server, of_type, s3  # noqa: F401

from panscan.match.luhn import check_digit

pytest.importorskip("distributed", reason="the dask extra is not installed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def make_pan(n: int) -> str:
    body = f"4929{n:011d}"
    return body + check_digit(body)


def remote_environment(tmp_path: Path, *, credentials: bool = True) -> dict[str, str]:
    """An environment like a remote worker host's: no endpoint (and, if asked, no credentials)."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env.update(HTTPS_PROXY=DEAD_ENDPOINT, HTTP_PROXY=DEAD_ENDPOINT, NO_PROXY="127.0.0.1,localhost",
               AWS_EC2_METADATA_DISABLED="true")
    if not credentials:
        for name in _CREDENTIAL_VARIABLES:
            env.pop(name, None)
        empty = tmp_path / "no-credentials"
        empty.write_text("")
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_CONFIG_FILE=str(empty))
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # Each was started in its own session: its group is it and its children (the worker
    # processes of the nanny).
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start_cluster(tmp_path: Path, env: dict[str, str]) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A scheduler and a worker of two processes on loopback, with ``env``; its address."""
    scheduler_file = tmp_path / "scheduler.json"
    log = (tmp_path / "cluster.log").open("ab")
    common: dict[str, Any] = {"env": env, "stdout": log, "stderr": log, "start_new_session": True, "cwd": tmp_path}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)], **common)]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() or not scheduler_file.read_text().strip():
        assert time.monotonic() < deadline, "the scheduler did not start"
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                                   "--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--memory-limit", "0",
                                   "--preload", "panscan.engine.dask"], **common))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return address, procs


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    """A cluster whose workers have credentials but no AWS endpoint of their own."""
    address, procs = start_cluster(tmp_path, remote_environment(tmp_path))
    try:
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def scan_on(address: str, endpoint: str, env: dict[str, str], *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", "scan", *targets, "--engine", "dask",
                           "--scheduler", address, "--endpoint-url", endpoint, "--no-state", "--format", "jsonl"],
                          capture_output=True, text=True, timeout=240, env=env)


def test_workers_without_an_endpoint_read_from_the_endpoint_the_coordinator_was_given(
        s3: MotoS3, cluster: str, tmp_path: Path) -> None:
    c = s3.client
    c.create_bucket(Bucket="remote")
    for i in range(12):
        c.put_object(Bucket="remote", Key=f"k{i:02d}.txt", Body=f"card {make_pan(i)}\n".encode())
    # The coordinator, like the workers, has no AWS_ENDPOINT_URL: only --endpoint-url.
    proc = scan_on(cluster, s3.endpoint, remote_environment(tmp_path), "s3://remote")

    assert proc.returncode == 1, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {(r["status"], r["reason"]) for r in of_type(records, "item")} == {("complete", None)}
    assert len(of_type(records, "item")) == len(of_type(records, "finding")) == 12
    # The workers read the objects (the coordinator never reads content), from this server.
    assert len(s3.get_object_requests("remote")) == 12


@contextlib.contextmanager
def empty_s3() -> Iterator[tuple[str, list[str]]]:
    """An S3 endpoint on loopback that has no bucket at all (another account's, say): every
    request is answered 404 NoSuchBucket, as S3 answers it. Yields its URL and the request
    paths it saw. (A second moto server would not do: moto's backends are per process.)"""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _no_such_bucket(self) -> None:
            seen.append(self.path)
            body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code>'
                    b"<Message>The specified bucket does not exist</Message></Error>")
            self.send_response(404)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _no_such_bucket

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_workers_that_cannot_read_what_was_listed_stop_the_scan_after_the_first_batches(
        s3: MotoS3, cluster: str, caplog: pytest.LogCaptureFixture) -> None:
    from panscan.engine.dask import SAME_FAILURE_STOP, DaskEngine
    from panscan.engine.worker import WorkerContext
    from panscan.model import Reason, Status
    from panscan.sources.aws import Endpoint
    from panscan.sources.s3 import S3Options, enumerate_s3

    c = s3.client
    c.create_bucket(Bucket="listed")
    for i in range(200):
        s3.put_directly("listed", f"k{i:03d}.txt", b"nothing here\n")
    listed = list(enumerate_s3(["s3://listed"], S3Options()))
    assert len(listed) == 200

    # The workers are sent another server's endpoint (another account, say): the bucket the
    # coordinator listed does not exist there.
    with empty_s3() as (elsewhere, requests), caplog.at_level(logging.ERROR, logger="panscan"):
        with DaskEngine(WorkerContext(b"k" * 32), cluster, batch_items=4, max_in_flight=2,
                        endpoint=Endpoint(elsewhere, "us-east-1")) as engine:
            results = list(engine.run(listed))
        sent = len(requests)

    # Stopped as Ctrl-C stops a scan: nothing more is listed, every item taken is reported once.
    assert engine.interrupted
    assert len({r.item.location for r in results}) == len(results) < 50
    failed = [r for r in results if r.status is Status.ERROR]
    assert len(failed) >= SAME_FAILURE_STOP
    assert {(r.reason, r.detail) for r in failed} == {(Reason.NOT_FOUND, "NoSuchBucket: the bucket does not exist")}
    not_read = [r for r in results if r not in failed]
    assert all(r.reason is Reason.INTERRUPTED and r.detail and r.detail.startswith("not read: the scan stopped early")
               for r in not_read)
    assert sent == len(failed)  # no doomed request for the items not read
    [said] = [r.getMessage() for r in caplog.records if "stopped early" in r.getMessage()]
    assert f"the first {SAME_FAILURE_STOP} items read on the Dask workers all failed the same way" in said
    assert "NoSuchBucket" in said and f"endpoint {elsewhere}" in said


def test_a_workers_missing_credentials_stop_the_scan_saying_they_were_a_workers(
        s3: MotoS3, tmp_path: Path) -> None:
    c = s3.client
    c.create_bucket(Bucket="creds")
    for i in range(20):
        c.put_object(Bucket="creds", Key=f"k{i:02d}.txt", Body=b"nothing here\n")
    address, procs = start_cluster(tmp_path, remote_environment(tmp_path, credentials=False))
    try:
        # The coordinator has credentials: the listing works, the reads on the workers do not.
        proc = scan_on(address, s3.endpoint, remote_environment(tmp_path), "s3://creds")
    finally:
        for p in reversed(procs):
            _stop(p)

    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "the scan stopped early" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("panscan: error: no AWS credentials found on a Dask worker (NoCredentialsError)")
    assert "credentials of their own environment" in lines[0]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert s3.get_object_requests("creds") == []
    assert {r["reason"] for r in of_type(records, "item")} <= {"PERMISSION_DENIED", "INTERRUPTED"}
