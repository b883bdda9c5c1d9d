"""boto3 clients for panscan: one session and client per process, never shared across fork.

What callers may rely on:

* :func:`client` returns a client built in the calling process. A client built before a
  fork is never handed to the child (boto3 clients hold connection pools whose sockets must
  not be shared between processes): the cache is keyed by process id, so each worker builds
  its own on first use and reuses it for every later task.
* Every client has retry mode ``standard`` with 8 attempts (throttling and 5xx are retried
  with backoff), explicit connect (10 s) and read (60 s) timeouts, and a connection pool
  of ``max_pool`` connections.
* The endpoint is ``endpoint_url`` when given, else what botocore finds itself
  (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, the config file). ``--endpoint-url`` reaches
  forked workers through ``AWS_ENDPOINT_URL`` (see ``engine.runner``). Credentials and region
  come from the standard chain.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

#: Attempts per request (the first one included) in botocore's ``standard`` retry mode.
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
#: Default connection pool: a worker process reads one object at a time (plus the odd
#: ranged request while a body is still open); the coordinator lists one bucket at a time.
DEFAULT_POOL = 4

_Key = tuple[int, str, str | None, str | None, int]
_clients: dict[_Key, Any] = {}
_lock = threading.Lock()


def client(service: str, *, endpoint_url: str | None = None, region: str | None = None,
           max_pool: int = DEFAULT_POOL) -> Any:
    """A boto3 client for ``service`` built in this process (cached per process id and
    arguments). ``region`` None means the chain's default region."""
    # The environment's endpoint is part of the key: botocore reads it when the client is
    # built, and an in-process caller (a test) may change it between scans.
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    key: _Key = (os.getpid(), service, endpoint, region, max_pool)
    with _lock:
        found = _clients.get(key)
        if found is not None:
            return found
        if any(k[0] != key[0] for k in _clients):
            # Inherited from the parent through fork: drop without closing (the parent
            # still owns those sockets).
            for stale in [k for k in _clients if k[0] != key[0]]:
                del _clients[stale]
        config = Config(
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=max_pool,
        )
        session = boto3.session.Session()
        made = session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
        _clients[key] = made
        return made
