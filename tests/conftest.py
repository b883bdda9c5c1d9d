"""Test-wide guards: no test reaches beyond loopback, and nothing can reach AWS by accident.

Every test runs with

- a network guard: ``socket.socket.connect``/``connect_ex``, ``socket.create_connection`` and
  ``socket.getaddrinfo`` refuse any address that is not loopback (127.0.0.0/8, ::1, ``localhost``),
  before any system call is made (no packet, no DNS query). AF_UNIX and other non-IP families
  are allowed. A refused attempt raises ``NetworkBlockedError`` (an ``OSError``, so the code under
  test sees what a firewall would give it) *and* fails the test at teardown, even if the code
  under test swallowed the error (botocore retries, error-to-result conversion).
- fake AWS configuration: static ``testing`` credentials, region us-east-1, and the AWS endpoint
  and instance-metadata endpoint pointed at an unused loopback port, so a client a test forgot to
  point at its moto server fails fast on loopback instead of calling AWS; ``~/.aws`` is not read.

- a fresh ``XDG_STATE_HOME`` (the default state database and key) per test;
- a scratch working directory: each test starts in an empty directory outside the checkout, so
  ``python -m panscan`` and ``python -c`` subprocesses import the *installed* package (as a user's
  would) instead of the checkout's ``panscan/`` shadowing it from the current directory; that
  shadow copy lacks ``panscan.patterns``, which exists only in an install.

Scope: the socket guard is in-process. Forked workers (the local engine's pool) inherit it;
subprocesses started with exec (``panscan`` run as a command) do not, they only inherit the
environment above. Tests that run the CLI therefore rely on the environment and on passing
loopback endpoints explicitly.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_REAL_CONNECT = socket.socket.connect
_REAL_CONNECT_EX = socket.socket.connect_ex
_REAL_CREATE_CONNECTION = socket.create_connection
_REAL_GETADDRINFO = socket.getaddrinfo
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_IP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})


def _unused_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# Chosen once per session; nothing listens on it (it was free when chosen, and it is never bound).
DEAD_PORT = _unused_loopback_port()
DEAD_ENDPOINT = f"http://127.0.0.1:{DEAD_PORT}"


class NetworkBlockedError(ConnectionRefusedError):
    """A test tried to reach a non-loopback address."""


def is_loopback(host: object) -> bool:
    """True for loopback literals and names; any other name is not (resolving it is a DNS query)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class NetworkGuard:
    """The installed guard; ``violations`` lists refused destinations (host, port) in order."""

    error = NetworkBlockedError

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.allowed = 0  # attempts passed through to the real socket call

    def _refuse(self, what: str, address: Any) -> None:
        self.violations.append(f"{what} {address!r}")
        raise NetworkBlockedError(f"test tried {what} to {address!r}: only loopback is allowed in tests")

    def check_socket(self, sock: socket.socket, address: Any, what: str) -> None:
        if sock.family not in _IP_FAMILIES:
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if not is_loopback(host):
            self._refuse(what, address)
        self.allowed += 1

    def install(self, mp: pytest.MonkeyPatch) -> None:
        guard = self

        def connect(sock: socket.socket, address: Any) -> None:
            guard.check_socket(sock, address, "connect")
            return _REAL_CONNECT(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard.check_socket(sock, address, "connect_ex")
            return _REAL_CONNECT_EX(sock, address)

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            if not is_loopback(address[0]):
                guard._refuse("create_connection", address)
            guard.allowed += 1
            return _REAL_CREATE_CONNECTION(address, *args, **kwargs)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            # Numeric hosts and this machine's own name resolve without a query; any other
            # name would be a DNS lookup, which is network traffic too.
            if host not in (None, "", b"") and not is_loopback(host) and host != socket.gethostname():
                try:
                    ipaddress.ip_address(str(host).strip("[]").split("%", 1)[0])
                except ValueError:
                    guard._refuse("getaddrinfo", host)
            return _REAL_GETADDRINFO(host, *args, **kwargs)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "create_connection", create_connection)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session")
def scratch_cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty directory outside the checkout that tests run in."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(autouse=True)
def _run_outside_the_checkout(monkeypatch: pytest.MonkeyPatch, scratch_cwd: Path) -> None:
    monkeypatch.chdir(scratch_cwd)


@pytest.fixture(autouse=True)
def state_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``XDG_STATE_HOME`` per test: the default state database and fingerprint key of
    one test are never seen by another, nor by the user running the tests."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[NetworkGuard]:
    """Loopback-only sockets and fake AWS settings for every test (see the module docstring)."""
    aws_home = tmp_path_factory.getbasetemp() / "aws-home"
    aws_home.mkdir(exist_ok=True)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": DEAD_ENDPOINT,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": DEAD_ENDPOINT + "/",
        "AWS_CONFIG_FILE": str(aws_home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_home / "credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    guard = NetworkGuard()
    guard.install(monkeypatch)
    yield guard
    if guard.violations:
        pytest.fail("test reached for the network beyond loopback: " + "; ".join(guard.violations),
                    pytrace=False)
