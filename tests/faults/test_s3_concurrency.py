"""Many GetObject requests in flight per worker, and backing off when S3 says SlowDown.

The real CLI runs as a subprocess with one worker process; ``AWS_ENDPOINT_URL`` points at the
fault proxy in front of the moto server, so every request crosses it and the proxy sees how
many are in flight at once.
"""
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from proxy import FaultProxy
from s3_server import MotoS3, moto_server, of_type, s3  # noqa: F401
from test_s3_faults import _proxy_server, make_pan, masked, proxy  # noqa: F401 (fixtures)

OBJECTS = 64




def small_objects(s3: MotoS3, bucket: str) -> dict[str, str]:
    """``OBJECTS`` objects of ~4 KB, every 8th with a card number: key -> the number."""
    s3.client.create_bucket(Bucket=bucket)
    planted = {}
    for n in range(OBJECTS):
        key = f"logs/{n:03d}.log"
        body = b"2024-11-30T10:00:00Z GET /api/orders status=200 bytes=512\n" * 70
        if n % 8 == 0:
            planted[key] = pan = make_pan()
            body += f"paid {pan} ok\n".encode()
        s3.put_directly(bucket, key, body)
    return planted


def scan_one_worker(*args: str, timeout: float = 120) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "panscan", "-v", "scan", *args, "--format", "jsonl",
                           "--no-state", "--workers", "1"],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def assert_every_object_complete_and_every_number_found(records: list[dict[str, Any]], bucket: str,
                                                        planted: dict[str, str]) -> None:
    items = of_type(records, "item")
    assert len(items) == OBJECTS
    assert {i["status"] for i in items} == {"complete"}
    assert sorted((f["location"], f["masked"]) for f in of_type(records, "finding")) == sorted(
        (f"s3://{bucket}/{key}", masked(pan)) for key, pan in planted.items())


def test_one_worker_keeps_eight_get_objects_in_flight_when_the_server_answers_only_eight_at_once(
        proxy: FaultProxy, s3: MotoS3) -> None:
    planted = small_objects(s3, "many")
    # A reader with fewer than 8 requests in flight gets no answer until each one's 3 s run
    # out: one after another, 64 objects would take over 3 minutes and none would be gathered.
    proxy.gather_gets(8, requests=OBJECTS, timeout=3.0)

    code, records, stderr = scan_one_worker("s3://many")

    assert code == 1, stderr[-2000:]
    assert_every_object_complete_and_every_number_found(records, "many", planted)
    gets = proxy.requests("many")
    assert len(gets) == OBJECTS
    assert proxy.peak_in_flight >= 8
    # The first object goes alone (the engine's first message holds one task, sent as soon as
    # the listing produced it) and the last few of the batch may be fewer than 8: every other
    # request was answered because 8 were waiting at once.
    gathered = [g for g in gets if g.action == "gathered"]
    assert len(gathered) >= OBJECTS - 16, [g.action for g in gets]
    assert all(pan not in json.dumps(records) + stderr for pan in planted.values())


def test_slow_down_answers_halve_the_requests_in_flight_and_every_object_is_still_scanned(
        proxy: FaultProxy, s3: MotoS3) -> None:
    planted = small_objects(s3, "busy")
    proxy.delay_get(0.3)  # requests pile up, so the proxy sees how many are in flight
    proxy.slow_down_every(4, times=6)

    code, records, stderr = scan_one_worker("s3://busy")

    assert code == 1, stderr[-2000:]
    assert_every_object_complete_and_every_number_found(records, "busy", planted)
    gets = sorted(proxy.requests("busy"), key=lambda g: g.arrival)
    slowed = [g for g in gets if g.action == "failed"]
    assert len(slowed) == 6 and {g.status for g in slowed} == {503}
    assert len(gets) == OBJECTS + 6  # each refused request sent once more
    # The worker says what it did (bucket names masked like locations) ...
    assert "S3 bucket busy asked to slow down: reads in flight at most 8 (was 16)" in stderr
    # ... and the proxy saw it: the first burst reached the starting limit of 16 in flight;
    # once the SlowDowns were answered the worker never came close again (halved to 8, then
    # to 4, grown back by one per window of clean answers).
    in_flight = [g.in_flight for g in gets]
    why = " ".join(map(str, in_flight))
    assert max(in_flight[:17]) >= 12, why
    assert max(in_flight[24:]) <= 10, why
    assert all(pan not in json.dumps(records) + stderr for pan in planted.values())
