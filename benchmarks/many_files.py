"""Items, not bytes: panscan over a tree of many small files, beside ripgrep in the same run.

    python benchmarks/many_files.py                    # 100,000 files, 3 repetitions (~2 min, 2 cores)
    python benchmarks/many_files.py --files 20000 --reps 5
    python benchmarks/many_files.py --dir /var/tmp/panscan-many   # keep the tree between runs

The tree: ``--files`` text files of about 0.7 KB (log lines with timestamps, ids and amounts)
in directories of 100, one file in 50 with a generated Luhn-valid number (never a real card
number). The page cache is warmed first. Then, repetitions interleaved:

    rg         rg -a -j2 --count-matches '[0-9](?:[ -]?[0-9]){12,}' TREE   (files/s: the anchor)
    panscan    panscan scan TREE --workers 2 --no-state --format jsonl -o OUT
    sweep-1    the same with --state S (a new state): the first sweep of a scheduled pair
    sweep-2    the same again, nothing changed: every file costs a stat and a lookup

It prints files/s (median, min-max) and panscan/rg, checks that every file has an item
record and every planted number a finding, and reports the state's size after each sweep and
the peak RSS of the whole panscan command (the largest of its processes, from wait4).
Goals (issue 15): panscan >= 0.25x rg's files/s; an unchanged sweep >= 30,000 items/s and
<= 2 MB of state growth.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RG_PATTERN, panscan_command

PER_DIR = 100
PLANT_EVERY = 50
FORMAT_VERSION = 1


def _check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _pan(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    return body + _check_digit(body)


def generate(root: Path, files: int, seed: int = 1) -> int:
    """Write the tree; the number of planted numbers."""
    rng = random.Random(seed)
    planted = 0
    for i in range(files):
        d = root / f"d{i // (PER_DIR * 10):04d}" / f"s{(i // PER_DIR) % 10}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        lines = [f"2026-11-{1 + j % 28:02d}T10:{j:02d}:00Z INFO req={rng.randrange(10**9)} "
                 f"user=u{rng.randrange(10**4)} path=/api/v1/orders status=200 ms={rng.randrange(1, 999)}"
                 for j in range(6)]
        if i % PLANT_EVERY == 0:
            lines.insert(3, f"2026-11-02T10:03:30Z WARN payment card={_pan(rng)} declined")
            planted += 1
        (d / f"f{i:07d}.log").write_text("\n".join(lines) + "\n")
    return planted


def ensure_tree(directory: Path, files: int) -> tuple[Path, int]:
    root = directory / f"tree-{files}"
    meta = directory / f"tree-{files}.json"
    if root.is_dir() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("format_version") == FORMAT_VERSION:
            return root, int(info["planted"])
        shutil.rmtree(root)
    t0 = time.perf_counter()
    planted = generate(root, files)
    meta.write_text(json.dumps({"format_version": FORMAT_VERSION, "planted": planted}))
    print(f"  generated {files} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return root, planted


def warm(root: Path) -> None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                f.read()


def timed(cmd: list[str], out: Path | None = None) -> tuple[float, int, int]:
    """(seconds, exit status, peak RSS in KiB of the largest process of the command)."""
    t0 = time.perf_counter()
    with open(out or os.devnull, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{cmd[0]} exited {code}: {err[-2000:]}")
    return elapsed, code, usage.ru_maxrss


def check(out: Path, files: int, planted: int) -> list[str]:
    items = findings = 0
    with out.open() as f:
        for line in f:
            kind = json.loads(line)["type"]
            items += kind == "item"
            findings += kind == "finding"
    problems = []
    if items != files:
        problems.append(f"{items} item records for {files} files")
    if findings != planted:
        problems.append(f"{findings} findings for {planted} planted numbers")
    return problems


def state_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("state.db*"))


def summary(values: list[float], files: int) -> dict[str, Any]:
    rates = [files / v for v in values]
    return {"files_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "seconds": statistics.median(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, help="where the tree is kept (default: a temporary directory)")
    ap.add_argument("--json", help="write the figures as JSON to this file ('-' for stdout)")
    args = ap.parse_args(argv)

    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="panscan-many-")
    directory = args.dir or Path(tmp.name)  # type: ignore[union-attr]
    directory.mkdir(parents=True, exist_ok=True)
    root, planted = ensure_tree(directory, args.files)
    warm(root)
    out = directory / "out.jsonl"
    panscan = [*panscan_command(), "scan", str(root), "--workers", str(args.workers), "--format", "jsonl",
               "-o", str(out)]
    rg = shutil.which("rg")
    times: dict[str, list[float]] = {"rg": [], "panscan": [], "sweep-1": [], "sweep-2": []}
    rss: dict[str, int] = {}
    growth: list[int] = []
    first: list[int] = []
    problems: list[str] = []
    for _ in range(args.reps):
        if rg:
            seconds, _, _ = timed([rg, "-a", f"-j{args.workers}", "--count-matches", RG_PATTERN, str(root)])
            times["rg"].append(seconds)
        seconds, _, peak = timed([*panscan, "--no-state"])
        times["panscan"].append(seconds)
        rss["panscan"] = max(rss.get("panscan", 0), peak)
        problems += check(out, args.files, planted)
        state = Path(tempfile.mkdtemp(prefix="panscan-many-state-", dir=directory))
        seconds, _, peak = timed([*panscan, "--state", str(state / "state.db")])
        times["sweep-1"].append(seconds)
        first.append(state_bytes(state))
        problems += check(out, args.files, planted)
        seconds, _, peak = timed([*panscan, "--state", str(state / "state.db")])
        times["sweep-2"].append(seconds)
        rss["sweep-2"] = max(rss.get("sweep-2", 0), peak)
        growth.append(state_bytes(state) - first[-1])
        problems += check(out, args.files, planted)
        shutil.rmtree(state)

    figures = {name: summary(values, args.files) for name, values in times.items() if values}
    print(f"{args.files} files, {planted} planted numbers, {args.reps} repetitions, --workers {args.workers}")
    print(f"{'run':10} {'files/s':>10} {'(min-max)':>18} {'median s':>9}")
    for name, f in figures.items():
        print(f"{name:10} {f['files_per_s']:10.0f} ({f['min']:7.0f}-{f['max']:7.0f}) {f['seconds']:9.2f}")
    if "rg" in figures:
        print(f"panscan / rg files/s: {figures['panscan']['files_per_s'] / figures['rg']['files_per_s']:.3f} "
              "(goal >= 0.25)")
    else:
        print("rg not installed (apt-get install ripgrep): no ratio")
    print(f"unchanged sweep: {figures['sweep-2']['files_per_s']:.0f} items/s (goal >= 30,000); "
          f"state {statistics.median(first) / 2**20:.1f} MB after the first sweep, "
          f"+{statistics.median(growth) / 2**20:.2f} MB after the unchanged one (goal <= 2 MB)")
    print(f"peak RSS: {rss['panscan'] / 1024:.0f} MiB (--no-state), {rss['sweep-2'] / 1024:.0f} MiB (unchanged sweep)")
    for p in sorted(set(problems)):
        print(f"PROBLEM: {p}")
    if args.json:
        text = json.dumps({"figures": figures, "state_first": first, "state_growth": growth, "rss_kib": rss,
                           "problems": problems}, indent=1)
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
