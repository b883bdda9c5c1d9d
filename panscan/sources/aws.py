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
* :func:`credentials_missing` says, before a scan starts, when the standard chain finds no
  credentials at all (no variables, no profile, no instance role): that is a configuration
  error with its own message, never "renew" credentials that never existed.
* Credentials that expire mid-scan (a session token, an SSO or role session) fail every
  later request the same way. :func:`credentials_refused` recognises such a failure,
  ``sources.s3.reason_for`` turns it into ``PERMISSION_DENIED`` with the detail of
  :func:`credentials_detail`, and :func:`credentials_problem` recognises that result (as
  written, or wrapped by the worker as ``read failed: ...``), so the runner can stop the
  scan at the first one instead of failing every remaining item.
"""

from __future__ import annotations

import os
import re
import threading
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
# The whole detail, as credentials_detail() writes it or the worker wraps a failed read: a
# member name or a key that merely contains these words (details may quote member names)
# must not stop a scan.
_CREDENTIALS_DETAIL = re.compile(
    rf"(?:read failed: )?(\w+): ({'|'.join(map(re.escape, _ADVICE))}); "
    rf"(?:{'|'.join(map(re.escape, sorted(set(_ADVICE.values()))))})")

_Key = tuple[int, str, str | None, str | None, int]
_clients: dict[_Key, Any] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A worker forked while a listing thread of the coordinator held the lock would inherit
    # it held, by a thread that does not exist in the child.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
    the scan stopped early; set AWS_PROFILE, ...``. None otherwise."""
    if (result.status is Status.COMPLETE or result.reason is not Reason.PERMISSION_DENIED
            or result.item.source == "file" or not result.detail):
        return None
    found = _CREDENTIALS_DETAIL.fullmatch(result.detail)
    if found is None:
        return None
    code, words = found.groups()
    return f"{words} ({code}): the scan stopped early; {_ADVICE[words]}"
