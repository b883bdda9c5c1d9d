"""Coordinator memory at millions of items: peak RSS of a whole ``panscan scan`` driven by a
generated S3 Inventory report, served by a moto server on loopback.

    python benchmarks/inventory_rss.py                    # 1,000,000 rows, with and without a state
    python benchmarks/inventory_rss.py --rows 200000      # a quicker look

Every row is a GLACIER version (from retention.inventory), so no object is read: each row
becomes an ``INVALID_OBJECT_STATE`` item record and the run measures what the coordinator
keeps per item (listing, engine, sinks, state), not moto's GetObject. It prints the wall
time, items/s and the peak RSS of the largest process of the command (from wait4), for
``--no-state`` and with a new state database. Goal (issue 15): <= 300 MB at 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retention import inventory
from s3 import aws_env, panscan_command


def scan(target: str, extra: list[str], env: dict[str, str], out: Path) -> tuple[float, int, int]:
    """(seconds, items reported, peak RSS KiB) of one whole command."""
    cmd = [*panscan_command(), "scan", target, "--workers", "2", "--format", "jsonl", "-o", str(out), *extra]
    err = out.with_suffix(".err")
    t0 = time.perf_counter()
    # posix_spawn: the command's ru_maxrss starts from this (small) process's, not more.
    pid = os.posix_spawn(cmd[0], cmd, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(err), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)])
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1, 2):
        raise SystemExit(f"panscan exited {code}: {err.read_text(errors='replace')[-1000:]}")
    summary = json.loads(last_line(out))
    return elapsed, int(summary["items"]["total"]), usage.ru_maxrss


def last_line(path: Path) -> str:
    """The summary record, without reading the whole report into this process (whose peak
    RSS the next command would inherit)."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 65536))
        return f.read().decode().rstrip("\n").rsplit("\n", 1)[-1]


def upload(endpoint: str, rows: int) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="inventory")
    client.create_bucket(Bucket="source")
    return inventory(client, rows, glacier_every=1)


def moto_process(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the moto server did not start")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--upload", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.upload:
        print(upload(args.upload, args.rows))
        return 0
    work = Path(tempfile.mkdtemp(prefix="panscan-inventory-rss-"))
    # moto runs in a process of its own: a command started from this process would inherit
    # this process's peak RSS (the kernel keeps ru_maxrss across fork and exec), and moto
    # holds the whole inventory in memory.
    server, endpoint = moto_process(work)
    try:
        t0 = time.perf_counter()
        # Generated and uploaded by a child: this process stays small, so the commands it
        # starts do not inherit a large peak RSS (the kernel keeps ru_maxrss across exec).
        target = subprocess.run([sys.executable, __file__, "--upload", endpoint, "--rows", str(args.rows)],
                                check=True, capture_output=True, text=True).stdout.strip()
        print(f"inventory of {args.rows} rows uploaded in {time.perf_counter() - t0:.1f} s")
        env = aws_env(endpoint, work)
        print(f"{'run':<10} {'items':>9} {'seconds':>8} {'items/s':>9} {'peak RSS':>9}")
        for name, extra in (("no-state", ["--no-state"]), ("state", ["--state", str(work / "state.db")])):
            elapsed, items, rss = scan(target, extra, env, work / "out.jsonl")
            if items != args.rows:
                print(f"PROBLEM: {items} items reported for {args.rows} rows")
            print(f"{name:<10} {items:>9} {elapsed:>8.1f} {items / elapsed:>9.0f} {rss / 1024:>7.0f} MiB")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
