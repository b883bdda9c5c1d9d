"""The HTML report of a real scan opens in a real browser: headless Chromium renders it to a
screenshot of the expected size that is not blank, and the DOM it loaded is ours.

Chromium comes from the Debian package ``chromium``; where it is missing the test is skipped
with the reason (.ci/run installs it). The report names no URL and its Content-Security-Policy
forbids every fetch, and Chromium runs with background networking off, a resolver that
resolves nothing and a proxy on a dead loopback port, so the browser reaches no network.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from panscan.config import Policy, RetentionRule
from panscan.engine.runner import ScanOptions, run_scan
from panscan.match.luhn import check_digit

WIDTH, HEIGHT = 1280, 2000
AS_OF = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
DAY = 86400
SECTIONS = ("summary", "card-data", "retention", "findings-by-location", "buckets", "volumes", "coverage", "changes")


def luhn(body: str) -> str:
    return body + check_digit(body)


# Generated numbers in real brands' ranges (random bodies, not real cards), and a published test card.
VISA = luhn("453201511283036")
MASTERCARD = luhn("545454545454545")
TEST_VISA = "4111111111111111"


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium not installed; .ci/run installs it (Debian package 'chromium')")
    return path


def dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--proxy-server=127.0.0.1:{dead_port()}", *args]
    env = {**os.environ, "HOME": str(tmp_path)}  # no profile or cache in the real home
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)


def png_pixels(path: Path) -> tuple[int, int, bytes, int]:
    """Width, height, the decompressed (filtered) scanlines and the length of one scanline,
    read with struct and zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = depth = colour = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    stride = 1 + (width * channels * depth + 7) // 8
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == height * stride
    return width, height, raw, stride


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """The HTML report of a scan of a small tree: card data in old logs and in exports, a
    published test card, a file named like markup, and a FIFO that cannot be read."""
    tree = tmp_path / "tree"
    (tree / "logs").mkdir(parents=True)
    (tree / "exports").mkdir()
    old = tree / "logs" / "2023-app.log"
    old.write_text(f"charge ok card={VISA}\nrefund card={MASTERCARD}\n")
    os.utime(old, (AS_OF - 400 * DAY, AS_OF - 400 * DAY))
    (tree / "logs" / "2024-app.log").write_text(f"charge ok card={VISA}\n")
    (tree / "exports" / "cards.csv").write_text(f"name,card\nA,{TEST_VISA}\nB,{MASTERCARD}\n")
    (tree / "exports" / "<script>alert(1)<").write_text(f"pan {VISA}\n")
    (tree / "exports" / "notes.txt").write_text("nothing here\n")
    os.mkfifo(tree / "pipe")
    policy = Policy(default_max_age_days=365,
                    rules=(RetentionRule("logs", (f"{tree}/logs/*",), 90, "chargeback window"),))
    out = tmp_path / "report.html"
    status = run_scan(ScanOptions(targets=(str(tree),), fmt="html", output=out, workers=2, no_state=True,
                                  policy=policy, as_of=AS_OF))
    assert status == 1
    return out


def test_report_of_a_real_scan_holds_only_masked_numbers_and_no_url(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    for pan in (VISA, MASTERCARD, TEST_VISA):
        assert pan not in text
    assert f"{VISA[:6]}******{VISA[-4:]}" in text
    assert not re.search(r"\d{13,19}", text)
    for needle in ("http://", "https://", "<script", "url(", "@import"):
        assert needle not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;" in text  # the hostile file name, escaped


def test_chromium_renders_the_report_to_a_non_blank_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = browser(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", report.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 0, result.stderr[-2000:]
    width, height, raw, stride = png_pixels(shot)
    assert (width, height) == (WIDTH, HEIGHT)
    # A blank page compresses to a few byte values and identical scanlines; text, tables and
    # charts give many of both.
    assert len(set(raw)) > 32
    rows = {raw[i:i + stride] for i in range(0, len(raw), stride)}
    assert len(rows) > 100


def test_chromium_loads_our_page_not_an_error_page(report: Path, tmp_path: Path) -> None:
    result = browser(tmp_path, "--dump-dom", report.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom
    assert "Card data discovery report" in dom
    assert "<script" not in dom  # the hostile name stayed text in the DOM as well
