"""A moto server on loopback for tests that talk to S3 over real HTTP, and a botocore hook
that makes one operation answer as S3 does to credentials without the permission.

``moto_server()`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 and a free port;
``reset(endpoint)`` empties its state between tests; ``s3_client(endpoint)`` is a plain
boto3 client for setting up fixtures; ``deny(client, "GetObject")`` makes that client's
GetObject calls fail with a real ``403 AccessDenied`` response, parsed by botocore like one
from AWS (moto does not check permissions).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from moto.server import ThreadedMotoServer

_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"
    b"<RequestId>TESTDENIED</RequestId><HostId>test</HostId></Error>"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A running moto server; yields its endpoint URL (``http://127.0.0.1:PORT``)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no log line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset(endpoint: str) -> None:
    """Forget every bucket, object and configuration the server holds."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        response.read()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the server at ``endpoint`` (no retries: fixtures fail fast)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"mode": "standard", "max_attempts": 1}))


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def deny(client: Any, operation: str) -> None:
    """From now on ``client``'s ``operation`` (e.g. ``"GetBucketLogging"``) gets S3's 403
    AccessDenied instead of reaching the server."""

    def answer(request: Any, **_: Any) -> AWSResponse:
        headers = {"content-type": "application/xml", "x-amz-request-id": "TESTDENIED"}
        return AWSResponse(request.url, 403, headers, _Body(_ACCESS_DENIED))

    client.meta.events.register(f"before-send.s3.{operation}", answer)
