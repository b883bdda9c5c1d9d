"""A fault-injecting HTTP reverse proxy on loopback, in front of a moto S3 server.

``FaultProxy(upstream)`` listens on 127.0.0.1 (a port the kernel picks) in a thread of the test
process and forwards every request (method, path, query, headers, body) with ``http.client`` to
the moto server at ``upstream`` (``http://127.0.0.1:PORT``), streaming the response back. Point
``AWS_ENDPOINT_URL`` at :attr:`FaultProxy.endpoint` and every process, forked workers included,
goes through it.

Rules, set by the test before the scan:

- :meth:`FaultProxy.fail_get` — the first ``times`` GetObject requests for a key answer an S3
  XML error (``503 SlowDown``, ``500 InternalError``...) without reaching moto; no Retry-After.
- :meth:`FaultProxy.truncate_get` — the first ``times`` GetObject requests for a key get moto's
  headers (Content-Length the full length) and only the first ``after`` bytes of the body, then
  the connection is closed: a body cut mid-stream.
- :meth:`FaultProxy.deny_bucket` — every request naming the bucket (ListObjectVersions,
  GetObject, anything) answers ``403 AccessDenied``, for ever.
- :meth:`FaultProxy.add_head_headers` — every HeadObject for a key gets moto's answer plus the
  given response headers (``x-amz-archive-status``, ``x-amz-restore``: what moto does not
  implement), for ever.
- :meth:`FaultProxy.expire_after` — credentials that run out mid-scan: once ``get_objects``
  GetObject requests have been forwarded, every later request of any kind (listings, HEAD,
  bucket settings) answers an S3 XML error (``400 ExpiredToken`` by default), for ever.
- :meth:`FaultProxy.delay_get` — every GetObject is held ``seconds`` before it is forwarded
  (a slow source); :meth:`FaultProxy.hold_bucket_requests` — every request on a bucket that
  names no key (ListObjectVersions, its bucket settings) is held ``seconds`` (a listing that
  hangs). :meth:`FaultProxy.reset` lets held requests go at once, unanswered (connection closed).
- :meth:`FaultProxy.gather_gets` — GetObject requests are held until ``n`` of them are waiting
  at once, then all ``n`` go on together, logged ``gathered``. A reader that keeps fewer in
  flight would wait for ever: so that a failing test ends, a request held ``timeout`` seconds
  goes on alone, logged ``ungathered``.
- :meth:`FaultProxy.slow_down_every` — every ``k``-th GetObject answers ``503 SlowDown``.

GetObject requests in flight (arrived, not yet answered) are counted: :attr:`FaultProxy.peak_in_flight`,
and each :class:`Seen` carries the count when it arrived (itself included) and its place in the
order of arrival (the log is in the order of answers).

GetObject rules (``fail_get``, ``truncate_get``) apply in the order they were set: a request takes
the first rule for its key that has uses left, so a truncation set before a failure cuts the
first body and fails the Range request that resumes it.

Every request is logged (:attr:`FaultProxy.seen`, :class:`Seen`) with what the proxy did with it,
and counted per (method, bucket, key, Range header) (:meth:`FaultProxy.count`). A held request is
also logged when it arrives (:attr:`FaultProxy.arrived`), so a test can wait for the moment a
client is stuck in it.
"""

from __future__ import annotations

import http.client
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Sub-resources whose GET is not GetObject (ACL, tags, listings...).
_NOT_GET_OBJECT = frozenset({"acl", "tagging", "attributes", "legal-hold", "retention", "torrent",
                             "uploadId", "list-type", "versions", "location", "uploads"})
# Hop-by-hop headers: not forwarded in either direction.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                  "upgrade", "proxy-authenticate", "proxy-authorization"})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and what it did: ``forwarded``, ``failed`` (an injected
    error status), ``truncated`` (body cut), ``denied``, ``annotated`` (a HEAD answered with
    headers added), ``expired`` (refused by :meth:`FaultProxy.expire_after`), ``delayed``
    (held, then forwarded) or ``released`` (held, then dropped unanswered by a reset)."""

    method: str
    bucket: str
    key: str
    query: dict[str, list[str]]
    range: str | None
    action: str
    status: int
    in_flight: int = 0  # GetObject requests in flight when this one arrived, itself included
    arrival: int = 0  # GetObject requests that arrived before it, plus one (0: not a GetObject)

    @property
    def is_get_object(self) -> bool:
        return self.method == "GET" and bool(self.bucket) and bool(self.key) and not (
            _NOT_GET_OBJECT & self.query.keys())


@dataclass
class _Expiry:
    after: int  # GetObject requests forwarded before the credentials run out
    status: int
    code: str
    forwarded: int = 0


@dataclass
class _Rule:
    kind: str  # "fail" | "truncate"
    bucket: str
    key: str
    times: int
    status: int = 0
    code: str = ""
    after: int = 0
    version: str | None = None  # None: any version


@dataclass
class _Group:
    event: threading.Event
    gathered: bool = False


@dataclass
class _Gate:
    n: int
    left: int  # GetObject requests still to be gathered
    timeout: float
    group: _Group
    waiting: int = 0


@dataclass
class _Every:
    k: int
    left: int  # answers still to inject
    seen: int = 0


def error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>").encode()


class FaultProxy:
    """See the module docstring. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError("upstream must be http://HOST:PORT")
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._denied: set[str] = set()
        self._head_headers: dict[tuple[str, str], dict[str, str]] = {}
        self._expiry: _Expiry | None = None
        self._get_delay = 0.0
        self._bucket_delays: dict[str, float] = {}
        self._release = threading.Event()
        self._gate: _Gate | None = None
        self._every: _Every | None = None
        self._in_flight = 0
        self._arrivals = 0
        self.peak_in_flight = 0
        self.seen: list[Seen] = []
        self.arrived: list[Seen] = []  # held requests, logged when they arrive
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # rules

    def reset(self) -> None:
        """Forget the rules and the log; requests still held are dropped unanswered."""
        with self._lock:
            self._rules.clear()
            self._denied.clear()
            self._head_headers.clear()
            self._expiry = None
            self._get_delay = 0.0
            self._bucket_delays.clear()
            if self._gate is not None:
                self._gate.group.event.set()
            self._gate = None
            self._every = None
            self.peak_in_flight = 0
            self._arrivals = 0
            self._release.set()
            self._release = threading.Event()
        # Requests of an earlier scan still on their way (a killed scan had many in flight)
        # would be logged after the clear and counted as the next scan's.
        deadline = time.monotonic() + 5.0
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self.seen.clear()
            self.arrived.clear()

    def fail_get(self, bucket: str, key: str, *, status: int, code: str, times: int) -> None:
        """The next ``times`` GetObject requests for ``bucket``/``key`` answer ``status`` with an
        S3 error body carrying ``code`` (no Retry-After header)."""
        with self._lock:
            self._rules.append(_Rule("fail", bucket, key, times, status=status, code=code))

    def truncate_get(self, bucket: str, key: str, *, after: int, times: int = 1, version: str | None = None) -> None:
        """The next ``times`` GetObject requests for ``bucket``/``key`` (and ``versionId=version``,
        if given) get the first ``after`` bytes of moto's body, under its full Content-Length,
        and then a closed connection."""
        with self._lock:
            self._rules.append(_Rule("truncate", bucket, key, times, after=after, version=version))

    def deny_bucket(self, bucket: str) -> None:
        """Every request on ``bucket`` answers 403 AccessDenied from now on."""
        with self._lock:
            self._denied.add(bucket)

    def add_head_headers(self, bucket: str, key: str, headers: dict[str, str]) -> None:
        """Every HeadObject for ``bucket``/``key`` from now on is answered with moto's headers
        plus ``headers`` (for instance ``{"x-amz-archive-status": "DEEP_ARCHIVE_ACCESS"}``)."""
        with self._lock:
            self._head_headers.setdefault((bucket, key), {}).update(headers)

    def expire_after(self, get_objects: int, *, status: int = 400, code: str = "ExpiredToken") -> None:
        """After ``get_objects`` more GetObject requests have been forwarded, every request
        answers ``status`` with an S3 error body carrying ``code``, for ever (until :meth:`reset`)."""
        with self._lock:
            self._expiry = _Expiry(get_objects, status, code)

    def delay_get(self, seconds: float) -> None:
        """Every GetObject from now on is held ``seconds`` before it is forwarded."""
        with self._lock:
            self._get_delay = seconds

    def hold_bucket_requests(self, bucket: str, seconds: float) -> None:
        """Every request on ``bucket`` that names no key (ListObjectVersions, GetBucketVersioning...)
        is held ``seconds`` before it is forwarded."""
        with self._lock:
            self._bucket_delays[bucket] = seconds

    def gather_gets(self, n: int, *, requests: int, timeout: float = 10.0) -> None:
        """The next ``requests`` GetObject requests are held until ``n`` of them are waiting at
        once, then let go together. One that waits ``timeout`` seconds goes on alone, logged
        ``ungathered``."""
        with self._lock:
            self._gate = _Gate(n, requests, timeout, _Group(threading.Event()))

    def slow_down_every(self, k: int, *, times: int) -> None:
        """Every ``k``-th GetObject from now on answers ``503 SlowDown`` (``times`` of them)."""
        with self._lock:
            self._every = _Every(k, times)

    # log

    def requests(self, bucket: str, key: str | None = None, *, get_object: bool = True) -> list[Seen]:
        with self._lock:
            seen = list(self.seen)
        return [s for s in seen if s.bucket == bucket and (key is None or s.key == key)
                and (s.is_get_object or not get_object)]

    def count(self) -> Counter[tuple[str, str, str, str | None]]:
        """Requests per (method, bucket, key, Range header)."""
        with self._lock:
            return Counter((s.method, s.bucket, s.key, s.range) for s in self.seen)

    # used by the handler

    def _extra_headers(self, seen: Seen) -> dict[str, str]:
        with self._lock:
            if seen.method != "HEAD" or not seen.key:
                return {}
            return dict(self._head_headers.get((seen.bucket, seen.key), {}))

    def _hold(self, seen: Seen) -> str:
        """Hold ``seen`` as long as a delay rule says: ``""`` (no rule), ``"delayed"`` (held,
        now to be forwarded) or ``"released"`` (a reset let it go first)."""
        with self._lock:
            if seen.is_get_object:
                seconds = self._get_delay
            elif seen.bucket and not seen.key:
                seconds = self._bucket_delays.get(seen.bucket, 0.0)
            else:
                seconds = 0.0
            if seconds <= 0:
                return ""
            self.arrived.append(seen)
            release = self._release
        return "released" if release.wait(seconds) else "delayed"

    def _gather(self, seen: Seen) -> str:
        """Hold ``seen`` as :meth:`gather_gets` says: ``""`` (no rule), ``"gathered"`` or
        ``"ungathered"``."""
        with self._lock:
            gate = self._gate
            if gate is None or not seen.is_get_object or gate.left <= 0:
                return ""
            gate.left -= 1
            gate.waiting += 1
            group = gate.group
            if gate.waiting >= gate.n:
                group.gathered = True
                group.event.set()
                gate.group = _Group(threading.Event())
                gate.waiting = 0
                return "gathered"
        if group.event.wait(gate.timeout):
            return "gathered"
        with self._lock:
            if group.gathered:  # gathered just as the wait ended
                return "gathered"
            gate.waiting -= 1
            return "ungathered"

    def _arrive(self, seen: Seen) -> tuple[int, int]:
        """(GetObject requests in flight, this one's place in the order of arrival)."""
        with self._lock:
            if not seen.is_get_object:
                return 0, 0
            self._in_flight += 1
            self._arrivals += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return self._in_flight, self._arrivals

    def _leave(self, seen: Seen) -> None:
        if seen.is_get_object:
            with self._lock:
                self._in_flight -= 1

    def _expired(self, seen: Seen) -> _Expiry | None:
        """The expiry rule if it refuses ``seen``; counts the GetObject requests let through."""
        with self._lock:
            expiry = self._expiry
            if expiry is None:
                return None
            if expiry.forwarded >= expiry.after:
                return expiry
            if seen.is_get_object:
                expiry.forwarded += 1
            return None

    def _decide(self, seen: Seen) -> tuple[str, _Rule | None]:
        with self._lock:
            if seen.bucket in self._denied:
                return "denied", None
            every = self._every
            if seen.is_get_object and every is not None and every.left > 0:
                every.seen += 1
                if every.seen % every.k == 0:
                    every.left -= 1
                    return "failed", _Rule("fail", seen.bucket, seen.key, 0, status=503, code="SlowDown")
            if seen.is_get_object:
                for rule in self._rules:
                    if rule.times > 0 and (rule.bucket, rule.key) == (seen.bucket, seen.key) and (
                            rule.version is None or seen.query.get("versionId") == [rule.version]):
                        rule.times -= 1
                        return ("failed" if rule.kind == "fail" else "truncated"), rule
            return "forwarded", None

    def _log(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request (a worker stopped by Ctrl-C, a scan killed) is
        # what the fault tests do on purpose: no traceback on stderr for it.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        query = parse_qs(url.query, keep_blank_values=True)
        rng = self.headers.get("Range")
        probe = Seen(self.command, bucket, key, query, rng, "", 0)
        level = self.owner._arrive(probe)
        try:
            self._answer(body, bucket, key, query, rng, probe, level)
        finally:
            self.owner._leave(probe)

    def _answer(self, body: bytes, bucket: str, key: str, query: dict[str, list[str]], rng: str | None,
                probe: Seen, level: tuple[int, int]) -> None:
        gathered = self.owner._gather(probe)
        held = self.owner._hold(probe) or gathered
        if held == "released":
            self.owner._log(Seen(self.command, bucket, key, query, rng, held, 0, *level))
            self._cut_connection()
            return
        expiry = self.owner._expired(probe)
        if expiry is not None:
            self._error(expiry.status, expiry.code, "The provided token has expired.")
            self.owner._log(Seen(self.command, bucket, key, query, rng, "expired", expiry.status, *level))
            return
        action, rule = self.owner._decide(probe)
        if action == "forwarded" and held:
            action = held
        if action == "denied":
            self._error(403, "AccessDenied", "Access Denied")
            self.owner._log(Seen(self.command, bucket, key, query, rng, action, 403, *level))
            return
        if action == "failed" and rule is not None:
            self._error(rule.status, rule.code, "injected by the fault proxy")
            self.owner._log(Seen(self.command, bucket, key, query, rng, action, rule.status, *level))
            return
        extra = self.owner._extra_headers(probe)
        status = self._forward(body, cut=rule.after if rule is not None else None, extra=extra)
        self.owner._log(Seen(self.command, bucket, key, query, rng, "annotated" if extra else action, status, *level))

    def _error(self, status: int, code: str, message: str) -> None:
        payload = error_body(code, message) if self.command != "HEAD" else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(error_body(code, message))))
        self.send_header("x-amz-request-id", "FAULTPROXY")
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes, cut: int | None, extra: dict[str, str] | None = None) -> int:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
        headers["Host"] = f"{self.owner.upstream_host}:{self.owner.upstream_port}"
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            if length is None and self.command != "HEAD" and response.status not in (204, 304):
                data = response.read()  # chunked or close-delimited upstream: buffer it
                length = str(len(data))
                chunks: Any = [data]
            else:
                chunks = iter(lambda: response.read(_CHUNK), b"")
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return response.status
            sent = 0
            for chunk in chunks:
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[:cut - sent])
                    self.wfile.flush()
                    self._cut_connection()
                    return response.status
                self.wfile.write(chunk)
                sent += len(chunk)
            return response.status
        finally:
            conn.close()

    def _cut_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
