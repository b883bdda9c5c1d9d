"""The test-wide network guard (tests/conftest.py): loopback only, refused before any syscall."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

TEST_NET = "192.0.2.1"  # RFC 5737 TEST-NET-1: documentation only, never routed


def test_connect_to_a_non_loopback_address_is_refused_before_the_syscall(network_guard):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Non-blocking: had the real connect run, it would return EINPROGRESS/ENETUNREACH, never
        # the guard's own error, so the error type shows the syscall was not made.
        s.setblocking(False)
        with pytest.raises(network_guard.error, match=re.escape(TEST_NET)):
            s.connect((TEST_NET, 443))
    assert network_guard.allowed == 0
    assert network_guard.violations == [f"connect {(TEST_NET, 443)!r}"]
    network_guard.violations.clear()  # refused on purpose: do not fail this test at teardown


def test_connect_ex_create_connection_and_dns_are_refused_too(network_guard):
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        with pytest.raises(network_guard.error):
            s.connect_ex(("2001:db8::1", 443, 0, 0))
    with pytest.raises(network_guard.error):
        socket.create_connection((TEST_NET, 80), timeout=0.1)
    with pytest.raises(network_guard.error):
        socket.create_connection(("s3.amazonaws.com", 443), timeout=0.1)
    with pytest.raises(network_guard.error):
        socket.getaddrinfo("s3.amazonaws.com", 443)
    assert network_guard.allowed == 0
    assert len(network_guard.violations) == 4
    network_guard.violations.clear()


def test_a_swallowed_refusal_still_fails_the_test(tmp_path):
    # A separate pytest run with this conftest, whose only test catches the refusal and passes.
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_swallows.py").write_text(
        "import socket\n\n"
        "def test_swallows():\n"
        "    try:\n"
        "        socket.create_connection(('192.0.2.1', 80), timeout=0.1)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 error" in result.stdout
    assert "reached for the network beyond loopback" in result.stdout


def test_loopback_connections_are_allowed(network_guard):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        accepted = threading.Thread(target=lambda: server.accept()[0].close())
        accepted.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        accepted.join(5)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect(("localhost", server.getsockname()[1]))
    assert network_guard.allowed >= 2
    assert network_guard.violations == []


def test_unix_sockets_are_allowed(network_guard, tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
    assert network_guard.violations == []


def test_aws_settings_point_at_a_dead_loopback_port():
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    for name in ("AWS_ENDPOINT_URL", "AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        assert os.environ[name].startswith("http://127.0.0.1:")
    assert "AWS_PROFILE" not in os.environ
