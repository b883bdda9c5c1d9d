"""A fake EC2 instance metadata service (IMDSv2 only) on loopback, for EBS discovery tests.

Import the fixture into a test module (``from fake_imds import FakeIMDS, imds  # noqa: F401``):

- ``imds`` (per test): a :class:`FakeIMDS` on 127.0.0.1 and a port the kernel picks, with
  ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` pointed at it; stopped at the end of the test. It does
  not touch ``AWS_EC2_METADATA_DISABLED`` (the ``s3`` fixture sets it; a test that wants the
  metadata service unsets it after requesting both).

What the fake does, like the real service with IMDSv2 required:

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) gives a
  new token; without that header, or out of range: 400.
- ``GET /latest/dynamic/instance-identity/document`` and ``GET /latest/meta-data/instance-id``
  answer only with an issued token in ``X-aws-ec2-metadata-token``: 401 otherwise.
- ``refuse_token = 403`` makes the token PUT answer that status (IMDS turned off answers 403).
- Any other path: 404. Every request is logged in ``requests`` (method, path, headers with
  lower-case names).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN_PATH = "/latest/api/token"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case (HTTP header names are case-insensitive)


@dataclass
class FakeIMDS:
    endpoint: str = ""  # http://127.0.0.1:PORT/
    instance_id: str = "i-0123456789abcdef0"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    refuse_token: int | None = None
    tokens: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def document(self) -> dict[str, Any]:
        return {"accountId": "123456789012", "architecture": "x86_64", "availabilityZone": self.availability_zone,
                "imageId": "ami-12c6146b", "instanceId": self.instance_id, "instanceType": "t3.micro",
                "pendingTime": "2024-06-01T00:00:00Z", "privateIp": "10.0.0.10", "region": self.region,
                "version": "2017-09-30"}

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (path is None or r.path == path)]


def _handler(fake: FakeIMDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no line per request on stderr
            pass

        def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _log(self) -> None:
            with fake.lock:
                fake.requests.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

        def do_PUT(self) -> None:
            self._log()
            if self.path != TOKEN_PATH:
                self._answer(404)
                return
            if fake.refuse_token is not None:
                self._answer(fake.refuse_token)
                return
            ttl = self.headers.get(TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self._answer(400)
                return
            token = secrets.token_urlsafe(32)
            with fake.lock:
                fake.tokens.add(token)
            self._answer(200, token.encode())

        def do_GET(self) -> None:
            self._log()
            if self.path not in (IDENTITY_PATH, INSTANCE_ID_PATH):
                self._answer(404)
                return
            with fake.lock:
                known = self.headers.get(TOKEN_HEADER) in fake.tokens
            if not known:
                self._answer(401)
                return
            if self.path == IDENTITY_PATH:
                self._answer(200, json.dumps(fake.document(), indent=2).encode(), "text/plain")
            else:
                self._answer(200, fake.instance_id.encode())

    return Handler


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIMDS]:
    fake = FakeIMDS()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, name="fake-imds", daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.endpoint)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
