"""A moto S3 server on loopback for tests, with a log of the requests it served.

Import the fixtures into a test module (``from s3_server import moto_server, s3  # noqa: F401``):

- ``moto_server`` (session): one ``ThreadedMotoServer`` on 127.0.0.1, on a port the kernel
  picks (port 0: free by construction, no race), started once and stopped at the end.
- ``s3`` (per test): the server emptied (moto's reset) with its request log cleared,
  ``AWS_ENDPOINT_URL`` pointed at it (so ``panscan`` run as a subprocess, and its forked
  workers, reach it over HTTP) and instance metadata disabled; returns the :class:`MotoS3`
  handle, whose ``client`` creates fixtures.

The server runs in the test process, so the request log sees every request any process
sent it: tests count GetObject requests with :meth:`MotoS3.get_object_requests`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3
import pytest
from botocore.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # URL-decoded: /bucket/key
    query: dict[str, list[str]]
    range: str | None  # the Range header


# Sub-resources whose GET is not GetObject (ACL, tags, attributes, listings...).
_NOT_GET_OBJECT = frozenset({"acl", "tagging", "attributes", "legal-hold", "retention", "torrent",
                             "uploadId", "list-type", "versions", "location", "uploads"})


@dataclass
class MotoS3:
    endpoint: str
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            config=Config(retries={"mode": "standard", "max_attempts": 2}))

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def get_object_requests(self, bucket: str, key: str | None = None) -> list[Request]:
        """GetObject requests (whole or ranged) for ``bucket`` (and ``key``, if given)."""
        with self.lock:
            seen = list(self.requests)
        out = []
        for r in seen:
            b, _, k = r.path.lstrip("/").partition("/")
            if r.method != "GET" or b != bucket or not k or _NOT_GET_OBJECT & r.query.keys():
                continue
            if key is None or k == key:
                out.append(r)
        return out

    def put_directly(self, bucket: str, key: str, body: bytes) -> str:
        """Store a new version of ``key`` through moto's backend in this process, without an
        HTTP request (~100x faster: for fixtures of thousands of versions); returns its
        version id. The bucket must exist; what is stored is what PutObject would store."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return str(s3_backends[DEFAULT_ACCOUNT_ID]["aws"].put_object(bucket, key, body).version_id)

    def set_last_modified(self, bucket: str, key: str, version_id: str | None, when: datetime) -> None:
        """Give a stored version another LastModified (UTC) through moto's backend, as if it
        had been written then; listings report it and order versions by it."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        versions = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket).keys.getlist(key)
        matching = [v for v in versions if version_id is None or str(v.version_id) == version_id]
        assert matching, f"no version {version_id} of {key}"
        for v in matching:
            v.last_modified = when.astimezone(UTC).replace(tzinfo=None)  # moto keeps naive UTC

    def reset(self) -> None:
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10) as response:
            response.read()
        with self.lock:
            self.requests.clear()


class _LoggedMotoServer(ThreadedMotoServer):
    """moto's threaded server with a WSGI wrapper recording each request in ``log``."""

    def __init__(self, log: list[MotoS3]) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._log = log

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        log = self._log

        def logged(environ: dict[str, Any], start_response: Any) -> Any:
            if log:
                log[0].record(Request(environ["REQUEST_METHOD"], unquote(environ.get("PATH_INFO", "")),
                                      parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
                                      environ.get("HTTP_RANGE")))
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, logged, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


@contextlib.contextmanager
def serving_moto() -> Iterator[MotoS3]:
    """A moto server on a loopback port for as long as the block runs."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    holder: list[MotoS3] = []
    server = _LoggedMotoServer(holder)
    server.start()
    host, port = server.get_host_and_port()
    handle = MotoS3(f"http://{host}:{port}")
    holder.append(handle)
    try:
        yield handle
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    with serving_moto() as handle:
        yield handle


@pytest.fixture
def s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    moto_server.reset()
    return moto_server


def scan(*args: str, timeout: float = 300, state: str | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """``panscan scan ARGS --format jsonl --workers 2`` as a subprocess, with ``--state
    STATE`` or else ``--no-state``; the endpoint comes from AWS_ENDPOINT_URL (set by the
    ``s3`` fixture)."""
    keeping = ["--state", state] if state else ["--no-state"]
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", *args, "--format", "jsonl",
                           *keeping, "--workers", "2"],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, records, proc.stderr


def of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == kind]


def versioned_bucket(s3: MotoS3, name: str) -> Any:
    c = s3.client
    c.create_bucket(Bucket=name)
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return c
