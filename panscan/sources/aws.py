"""boto3 clients for panscan: one session and client per process, never shared across fork.

What callers may rely on:

* :func:`client` returns a client built in the calling process. A client built before a
  fork is never handed to the child (boto3 clients hold connection pools whose sockets must
  not be shared between processes): the cache is keyed by process id, so each worker builds
  its own on first use and reuses it for every later task.
* Every client has retry mode ``standard`` with 8 attempts (throttling and 5xx are retried
  with backoff), explicit connect (10 s) and read (60 s) timeouts, and a connection pool
  of ``max_pool`` connections.
* The endpoint is ``endpoint_url`` when given, else the one of the :func:`using` block the
  call is made in (a Dask worker scanning a batch: the coordinator's endpoint, sent with the
  batch), else what botocore finds itself (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, the
  config file); the region likewise. ``--endpoint-url`` reaches forked workers through
  ``AWS_ENDPOINT_URL`` (see ``engine.runner``) and Dask workers through :class:`Endpoint`,
  which :meth:`Endpoint.of_this_process` reads on the coordinator. Credentials come from the
  standard chain of the process that makes the request: they never travel.
* :func:`credentials_missing` says, before a scan starts, when the standard chain finds no
  credentials at all (no variables, no profile, no instance role): that is a configuration
  error with its own message, never "renew" credentials that never existed.
* Credentials that expire mid-scan (a session token, an SSO or role session) fail every
  later request the same way. :func:`credentials_refused` recognises such a failure,
  ``sources.s3.reason_for`` turns it into ``PERMISSION_DENIED`` with the detail of
  :func:`credentials_detail`, and :func:`credentials_problem` recognises that result (as
  written, or wrapped by the worker as ``read failed: ...``), so the runner can stop the
  scan at the first one instead of failing every remaining item. A Dask worker's detail is
  rewritten by :func:`on_dask_worker` to say the credentials were a worker's (its own
  environment's, not the coordinator's), with advice for the workers.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    SSOError,
    TokenRetrievalError,
)

from panscan.model import ItemResult, Reason, Status

#: Attempts per request (the first one included) in botocore's ``standard`` retry mode.
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
#: Default connection pool: a worker process keeps up to ``sources.fetch.MAX_CONCURRENCY``
#: GetObject requests in flight ahead of its matcher, plus the object it streams (and the odd
#: ranged request while that body is still open). Connections are opened only as needed.
DEFAULT_POOL = 40

#: Error codes with which AWS refuses credentials that have run out (S3 and STS spell them
#: differently; RequestExpired is the EC2/Glacier form). Valid when the scan started, they
#: fail every later request: retrying or going on to the next item is pointless.
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "InvalidToken", "RequestExpired",
                           "TokenRefreshRequired"})
#: botocore's own failures to find or refresh credentials (an SSO session or assumed role
#: that can no longer be renewed): the same for every request that follows.
_UNAVAILABLE = (NoCredentialsError, CredentialRetrievalError, TokenRetrievalError, SSOError)
#: The words an item's detail carries when its request was refused for expired credentials
#: (``"ExpiredToken: AWS credentials expired"``) ...
CREDENTIALS_EXPIRED = "AWS credentials expired"
#: ... or because botocore could not refresh the ones it had (an SSO session or assumed
#: role that ended: ``"CredentialRetrievalError: ..."``) ...
CREDENTIALS_UNAVAILABLE = "AWS credentials unavailable"
#: ... or because it found none at all (``"NoCredentialsError: ..."``): nothing to renew.
CREDENTIALS_MISSING = "no AWS credentials found"
_RENEW = "renew them and run again"
_CONFIGURE = ("set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an "
              "instance role provides them")
_ADVICE = {CREDENTIALS_EXPIRED: _RENEW, CREDENTIALS_UNAVAILABLE: _RENEW, CREDENTIALS_MISSING: _CONFIGURE}
#: What a Dask worker's credentials detail adds to the words: the worker read with the chain
#: of its own environment (its instance role), which the coordinator's never reach.
ON_DASK_WORKER = " on a Dask worker"
_WORKER_RENEW = "renew the workers' credentials (their instance role or environment) and run again"
_WORKER_CONFIGURE = ("Dask workers read with the credentials of their own environment, never the "
                     "coordinator's: give every worker an instance role (or AWS_PROFILE in its service)")
_WORKER_ADVICE = {CREDENTIALS_EXPIRED: _WORKER_RENEW, CREDENTIALS_UNAVAILABLE: _WORKER_RENEW,
                  CREDENTIALS_MISSING: _WORKER_CONFIGURE}
# The whole detail, as credentials_detail() writes it or the worker wraps a failed read: a
# member name or a key that merely contains these words (details may quote member names)
# must not stop a scan.
_CREDENTIALS_DETAIL = re.compile(
    rf"(?:read failed: )?(\w+): ({'|'.join(map(re.escape, _ADVICE))})({re.escape(ON_DASK_WORKER)})?; "
    rf"(?:{'|'.join(map(re.escape, sorted(set(_ADVICE.values()) | set(_WORKER_ADVICE.values()))))})")

_Key = tuple[int, str, str | None, str | None, int]
_clients: dict[_Key, Any] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A worker forked while a listing thread of the coordinator held the lock would inherit
    # it held, by a thread that does not exist in the child.
    global _lock, _scope_changed, _scope, _scope_users
    _lock = threading.Lock()
    _scope_changed = threading.Condition()
    _scope, _scope_users = None, 0


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True)
class Endpoint:
    """Where a scan's AWS requests go: the endpoint URL and the region (None: whatever the
    chain of the process making the request finds). Plain data, sent to Dask workers with
    every batch so that they read from the server the coordinator listed."""

    url: str | None = None
    region: str | None = None

    @classmethod
    def of_this_process(cls) -> Endpoint:
        """The endpoint and region this process's clients use: ``--endpoint-url`` and
        ``--region`` (which the runner puts in the environment for the scan), else
        ``AWS_ENDPOINT_URL`` and the region of the standard chain (variables, profile)."""
        url = os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        if region is None:
            try:
                region = boto3.session.Session().region_name
            except BotoCoreError:  # a profile that does not exist: each client says so itself
                region = None
        return cls(url, region)


# The Endpoint of the using() blocks running in this process, and how many run. Blocks for
# another endpoint wait until those end: a Dask worker with several threads may be shared by
# scans of different endpoints, and its clients (the prefetch threads' too) must each use
# their own scan's.
_scope: Endpoint | None = None
_scope_users = 0
_scope_changed = threading.Condition()


@contextlib.contextmanager
def using(endpoint: Endpoint) -> Iterator[None]:
    """Every :func:`client` built or fetched in this process while the block runs, in any
    thread, without an explicit ``endpoint_url`` / ``region``, uses ``endpoint``'s (where
    they are None, the chain's as before). Blocks for different endpoints do not overlap: one
    waits for the others to end."""
    global _scope, _scope_users
    with _scope_changed:
        while _scope_users and _scope != endpoint:
            _scope_changed.wait()
        _scope = endpoint
        _scope_users += 1
    try:
        yield
    finally:
        with _scope_changed:
            _scope_users -= 1
            if not _scope_users:
                _scope = None
            _scope_changed.notify_all()


def client(service: str, *, endpoint_url: str | None = None, region: str | None = None,
           max_pool: int = DEFAULT_POOL) -> Any:
    """A boto3 client for ``service`` built in this process (cached per process id and
    arguments). ``endpoint_url`` / ``region`` None mean those of the :func:`using` block the
    call runs in, else the chain's."""
    scope = _scope
    if scope is not None:
        endpoint_url = endpoint_url or scope.url
        region = region or scope.region
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


def credentials_refused(exc: Exception) -> tuple[str, str] | None:
    """``(code, words)`` when ``exc`` (a failed AWS call) says the scan's credentials are no
    longer usable: an expired or invalidated session token (``words`` is
    :data:`CREDENTIALS_EXPIRED`), botocore unable to refresh credentials
    (:data:`CREDENTIALS_UNAVAILABLE`) or finding none at all (:data:`CREDENTIALS_MISSING`:
    a Dask worker without an instance role, a credentials file removed mid-scan); None for
    any other failure. ``code`` is the AWS error code or the botocore exception's name, never
    a message (messages may quote a key)."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "")
        return (code, CREDENTIALS_EXPIRED) if code in EXPIRED_CODES else None
    if isinstance(exc, NoCredentialsError):
        return type(exc).__name__, CREDENTIALS_MISSING
    if isinstance(exc, _UNAVAILABLE):
        return type(exc).__name__, CREDENTIALS_UNAVAILABLE
    return None


def credentials_missing() -> str | None:
    """One line for the user when the standard chain gives this process no usable
    credentials (checked once, before a scan of AWS targets starts); None when it finds some.

    No credentials at all: ``no AWS credentials found: set AWS_PROFILE, ...``. A profile that
    does not exist or a half-set pair of variables: botocore's own sentence (it names the
    profile or the variable, never data). Credentials found but not refreshable (an SSO
    session that ended): the "renew" message. Looking costs no request to AWS; on EC2 it asks
    the instance metadata service for the role, as every client would.
    """
    try:
        found = boto3.session.Session().get_credentials()
    except _UNAVAILABLE as exc:
        return f"{CREDENTIALS_UNAVAILABLE} ({type(exc).__name__}): {_RENEW}"
    except BotoCoreError as exc:  # ProfileNotFound, PartialCredentialsError, a bad config file
        return f"cannot use the AWS configuration ({type(exc).__name__}): {exc}"
    if found is None:
        return f"{CREDENTIALS_MISSING}: {_CONFIGURE}"
    return None


def credentials_detail(code: str, words: str) -> str:
    """The detail of an item refused for credentials (see :func:`credentials_refused`)."""
    return f"{code}: {words}; {_ADVICE.get(words, _RENEW)}"


def on_dask_worker(detail: str) -> str:
    """``detail`` (an item's) saying that the credentials refused were a Dask worker's, when
    it is a credentials detail (:func:`is_credentials_detail`); else ``detail`` unchanged.
    ``"NoCredentialsError: no AWS credentials found; set AWS_PROFILE, ..."`` becomes
    ``"NoCredentialsError: no AWS credentials found on a Dask worker; Dask workers read with
    the credentials of their own environment, ..."``."""
    found = _CREDENTIALS_DETAIL.fullmatch(detail)
    if found is None or found[3]:
        return detail
    code, words = found[1], found[2]
    prefix = "read failed: " if detail.startswith("read failed: ") else ""
    return f"{prefix}{code}: {words}{ON_DASK_WORKER}; {_WORKER_ADVICE[words]}"


def is_credentials_detail(detail: str) -> bool:
    """Whether an item's ``detail`` says AWS refused the scan's credentials (see
    :func:`credentials_problem`)."""
    return _CREDENTIALS_DETAIL.fullmatch(detail) is not None


def credentials_problem(result: ItemResult) -> str | None:
    """When ``result`` (an AWS item: S3, Glacier) failed ``PERMISSION_DENIED`` because AWS
    refused the scan's credentials (its detail is exactly what :func:`credentials_detail`
    wrote, possibly wrapped by the worker as ``read failed: ...``): the one-line message to
    stop the scan with, e.g. ``AWS credentials expired (ExpiredToken): the scan stopped
    early; renew them and run again``, or ``no AWS credentials found (NoCredentialsError):
    the scan stopped early; set AWS_PROFILE, ...``, or for a Dask worker's ``no AWS credentials
    found on a Dask worker (NoCredentialsError): the scan stopped early; Dask workers read with
    the credentials of their own environment, ...``. None otherwise."""
    if (result.status is Status.COMPLETE or result.reason is not Reason.PERMISSION_DENIED
            or result.item.source == "file" or not result.detail):
        return None
    found = _CREDENTIALS_DETAIL.fullmatch(result.detail)
    if found is None:
        return None
    code, words, where = found.groups()
    advice = (_WORKER_ADVICE if where else _ADVICE)[words]
    return f"{words}{where or ''} ({code}): the scan stopped early; {advice}"
