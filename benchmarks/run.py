"""Throughput harness: panscan beside ripgrep and a naive Python scanner, measured in one run.

    python benchmarks/run.py                      # 128 MB corpora, 3 repetitions (~5 min, 2 cores)
    python benchmarks/run.py --size 256M          # the size the goals in issue 2 are stated for
    python benchmarks/run.py --size 32M --reps 1  # quick look
    python benchmarks/run.py --dir /var/tmp/panscan-bench --json figures.json
    python benchmarks/run.py --containers         # container corpus (gz, zip, docx, xlsx, pdf), ~3 min

For each corpus (log, dense, prose; see corpus.py) it measures, after reading the file once so
the page cache is warm:

    rg       ripgrep counting runs of >= 13 digits, one thread (the ceiling)
    naive    re.finditer(rb"[0-9]{13,19}") over the file in memory + a pure-Python Luhn per candidate
    matcher  panscan.match.matcher.scan_chunks over the file in memory, in CHUNK_SIZE chunks
    cli-w1   the whole `panscan scan FILE --workers 1 --no-state --format jsonl` (wall time)
    cli-w2   the same with --workers 2

and prints MB/s (median of the repetitions, with min-max spread) and the ratios the issue sets
goals for. The matcher's and the CLI's finding counts are checked against the planted count.
Corpora are cached in --dir (default: a temp dir removed at the end) and reused when the
parameters match.

--containers measures `panscan scan FILE --workers 1` on the container corpus instead
(containers.py: a gzip of logs, a zip of CSVs, a docx, an xlsx and a PDF, with numbers planted
the hard way), once per container by default (--reps), at the text size of
containers.DEFAULT_SIZES unless --size is given. It prints MB/s of the container file and of
the text inside it, and checks the finding count against the planted count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import FORMAT_VERSION, KINDS, generate, parse_size

RG_PATTERN = r"[0-9](?:[ -]?[0-9]){12,}"
MEASUREMENTS = ("rg", "naive", "matcher", "cli-w1", "cli-w2")
MB = 1 << 20
# Goals from issue 2, per corpus: CLI (1 worker) / rg; and for every corpus CLI / naive >= 5,
# workers2 / workers1 >= 1.8.
GOAL_CLI_RG = {"log": 0.60, "dense": 0.45, "prose": 1.00}
GOAL_CLI_NAIVE = 5.0
GOAL_W2_W1 = 1.8

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_NAIVE = re.compile(rb"[0-9]{13,19}")


class Skip(Exception):
    """A measurement that cannot run here (tool missing); the message says why."""


def naive_scan(data: bytes) -> int:
    """The baseline any design must beat: a plain regex and a Luhn loop in Python per candidate."""
    found = 0
    for m in _NAIVE.finditer(data):
        total = 0
        for i, d in enumerate(reversed(m.group())):
            d -= 48
            total += _DOUBLED[d] if i & 1 else d
        if total % 10 == 0:
            found += 1
    return found


def ensure_corpus(kind: str, size: int, seed: int, directory: Path) -> tuple[Path, int]:
    path = directory / f"{kind}-{size}-s{seed}.dat"
    meta_path = Path(str(path) + ".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if (meta.get("format_version") == FORMAT_VERSION and meta.get("size") == size
                and meta.get("bytes") == path.stat().st_size):
            return path, int(meta["planted"])
    t0 = time.perf_counter()
    planted = generate(kind, size, path, seed)
    print(f"  generated {path.name}: {path.stat().st_size / MB:.0f} MB, {planted} planted PANs, "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path, planted


def warm(path: Path) -> bytes:
    """Read the file (page cache warm for rg and the CLI) and keep it for the in-memory runs."""
    return path.read_bytes()


def panscan_command() -> list[str]:
    script = Path(sys.executable).parent / "panscan"
    if script.exists():
        return [str(script)]
    found = shutil.which("panscan")
    return [found] if found else [sys.executable, "-m", "panscan"]


def measure_rg(path: Path, data: bytes) -> tuple[float, int]:
    rg = shutil.which("rg")
    if rg is None:
        raise Skip("ripgrep (rg) not installed; apt-get install ripgrep or cargo install ripgrep")
    t0 = time.perf_counter()
    out = subprocess.run([rg, "-a", "-j1", "--count-matches", RG_PATTERN, str(path)],
                         capture_output=True, check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise Skip(f"rg failed: {out.stderr.decode(errors='replace').strip()}")
    return elapsed, int(out.stdout.strip() or 0)


def measure_naive(path: Path, data: bytes) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = naive_scan(data)
    return time.perf_counter() - t0, n


def measure_matcher(path: Path, data: bytes) -> tuple[float, int]:
    try:
        from panscan.match.matcher import CHUNK_SIZE, scan_chunks, tune_allocator
        from panscan.match.patterns import load_patterns
    except ImportError as exc:
        raise Skip(f"panscan matcher not importable: {exc}") from None
    # Set up as a worker process is at start: allocator, patterns, prefilter compiled.
    tune_allocator()
    patterns = load_patterns()
    list(scan_chunks([b"warm-up 4111 1111 1111 1111"], patterns))
    view = memoryview(data)

    def chunks() -> Any:
        for i in range(0, len(data), CHUNK_SIZE):
            yield bytes(view[i:i + CHUNK_SIZE])

    t0 = time.perf_counter()
    n = sum(1 for hit in scan_chunks(chunks(), patterns) if hit.kind == "pan")
    return time.perf_counter() - t0, n


def measure_cli(workers: int, out_dir: Path) -> Callable[[Path, bytes], tuple[float, int]]:
    def run(path: Path, data: bytes) -> tuple[float, int]:
        out = out_dir / f"cli-w{workers}.jsonl"
        cmd = [*panscan_command(), "scan", str(path), "--workers", str(workers), "--no-state",
               "--format", "jsonl", "-o", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False, cwd=out_dir)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 1:  # PANs are planted: 1 is the only right answer
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise Skip(f"panscan exited {proc.returncode} (expected 1): {' | '.join(tail)}")
        if not out.exists():
            raise Skip(f"panscan wrote no {out.name}: {proc.stderr.decode(errors='replace')[-300:]!r}")
        findings = 0
        with open(out, "rb") as fh:
            for line in fh:
                record = json.loads(line)
                findings += record.get("type") == "finding" and record.get("kind") == "pan"
        out.unlink()
        return elapsed, findings
    return run


def measure_startup(out_dir: Path, reps: int) -> float | None:
    """Median wall time of the CLI on an empty file: interpreter, imports, fork, teardown."""
    empty = out_dir / "empty.txt"
    empty.write_bytes(b"")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        proc = subprocess.run([*panscan_command(), "scan", str(empty), "--workers", "1", "--no-state",
                               "--format", "jsonl", "-o", str(out_dir / "empty.jsonl")],
                              capture_output=True, check=False, cwd=out_dir)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            return None
    return statistics.median(times)


def net_ratio(results: dict[str, Any], startup: float | None) -> float | None:
    """w2/w1 on the scanning time alone (each CLI time less the start-up)."""
    w1, w2 = results.get("cli-w1"), results.get("cli-w2")
    if startup is None or not w1 or not w2 or "seconds" not in w1 or "seconds" not in w2:
        return None
    t1 = statistics.median(w1["seconds"]) - startup
    t2 = statistics.median(w2["seconds"]) - startup
    return t1 / t2 if t2 > 0 else None


def work_dirs(keep: Path | None) -> tuple[Any, Path, Path]:
    """(temporary directory to clean up or None, where corpora live, where outputs go)."""
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        return None, keep, Path(tempfile.mkdtemp(prefix="panscan-bench-out-"))
    tmp = tempfile.TemporaryDirectory(prefix="panscan-bench-")
    return tmp, Path(tmp.name), Path(tempfile.mkdtemp(prefix="panscan-bench-out-"))


def finish(report: dict[str, Any], problems: list[str], json_to: str | None, warning: str) -> int:
    """Print the problems loudly, write the JSON figures if asked; the exit status."""
    report["problems"] = problems
    if problems:
        print("\n" + "\n".join(problems))
        print(warning)
    if json_to:
        text = json.dumps(report, indent=1)
        if json_to == "-":
            print(text)
        else:
            Path(json_to).write_text(text + "\n")
    return 1 if problems else 0


def fmt_rate(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if "skipped" in r:
        return "skipped"
    return f"{r['mbps']:8.1f} ({r['min_mbps']:.0f}-{r['max_mbps']:.0f})"


def ratio(results: dict[str, Any], a: str, b: str) -> float | None:
    ra, rb = results.get(a), results.get(b)
    if not ra or not rb or "mbps" not in ra or "mbps" not in rb:
        return None
    return float(ra["mbps"] / rb["mbps"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--size", type=parse_size,
                    help="corpus size, e.g. 32M, 128M (default), 256M; with --containers the text size "
                         "of every container (default: per kind, 64M for most)")
    ap.add_argument("--reps", type=int, help="repetitions per measurement (default 3; 1 with --containers)")
    ap.add_argument("--kinds", help="comma-separated corpora (default all; with --containers: "
                                    "gz,zip,docx,xlsx,pdf)")
    ap.add_argument("--containers", action="store_true",
                    help="benchmark the container corpus (archives, documents) instead")
    ap.add_argument("--skip", default="", help=f"comma-separated measurements to skip: {MEASUREMENTS}")
    ap.add_argument("--dir", type=Path, help="keep corpora here and reuse them (default: temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="also write the figures as JSON to FILE (or stdout when no FILE)")
    args = ap.parse_args(argv)
    if args.containers:
        return run_containers(ap, args)
    args.size = args.size or parse_size("128M")
    args.reps = args.reps or 3
    kinds = [k for k in (args.kinds or ",".join(KINDS)).split(",") if k]
    skip = {s for s in args.skip.split(",") if s}
    if bad := [k for k in kinds if k not in KINDS] + [s for s in skip if s not in MEASUREMENTS]:
        ap.error(f"unknown corpus or measurement: {', '.join(bad)}")

    tmp, directory, out_dir = work_dirs(args.dir)
    report: dict[str, Any] = {"size": args.size, "reps": args.reps, "cpus": os.cpu_count(),
                              "python": sys.version.split()[0], "corpora": {}}
    problems: list[str] = []
    try:
        if "cli-w1" not in skip:
            report["startup_seconds"] = measure_startup(out_dir, args.reps)
            print(f"CLI start-up on an empty file: {report['startup_seconds']} s", file=sys.stderr)
        for kind in kinds:
            path, planted = ensure_corpus(kind, args.size, args.seed, directory)
            data = warm(path)
            mb = len(data) / MB
            print(f"{kind}: {mb:.0f} MB, {planted} planted PANs", file=sys.stderr)
            runs: dict[str, Callable[[Path, bytes], tuple[float, int]]] = {
                "rg": measure_rg, "naive": measure_naive, "matcher": measure_matcher,
                "cli-w1": measure_cli(1, out_dir), "cli-w2": measure_cli(2, out_dir),
            }
            results: dict[str, Any] = {}
            for name, fn in runs.items():
                if name in skip:
                    continue
                times, count = [], 0
                try:
                    for _ in range(args.reps):
                        elapsed, count = fn(path, data)
                        times.append(elapsed)
                except Skip as why:
                    results[name] = {"skipped": str(why)}
                    print(f"  {name:8} skipped: {why}", file=sys.stderr)
                    continue
                med = statistics.median(times)
                results[name] = {"seconds": times, "mbps": mb / med, "min_mbps": mb / max(times),
                                 "max_mbps": mb / min(times), "count": count}
                print(f"  {name:8} {mb / med:8.1f} MB/s  (count {count})", file=sys.stderr)
                if name in ("matcher", "cli-w1", "cli-w2") and count != planted:
                    msg = (f"!!! {kind}/{name}: found {count} PANs, planted {planted} "
                           f"({count - planted:+d})")
                    problems.append(msg)
                    print(msg, file=sys.stderr)
            report["corpora"][kind] = {"bytes": len(data), "planted": planted, "results": results}
            del data
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()

    print_table(report)
    return finish(report, problems, args.json,
                  "!!! COUNT MISMATCH: the figures above are for a matcher that is not correct on this corpus")


def print_table(report: dict[str, Any]) -> None:
    print(f"\npanscan benchmark: {report['size'] / MB:.0f} MB per corpus, median of {report['reps']} "
          f"(min-max), {report['cpus']} CPUs, Python {report['python']}\n")
    head = f"{'corpus':7} " + " ".join(f"{m:>20}" for m in MEASUREMENTS)
    print(head + "   MB/s")
    for kind, c in report["corpora"].items():
        print(f"{kind:7} " + " ".join(f"{fmt_rate(c['results'].get(m)):>20}" for m in MEASUREMENTS))
    print(f"\n{'corpus':7} {'matcher/rg':>11} {'CLI/rg':>16} {'CLI/naive':>16} {'w2/w1':>16} {'w2/w1 net':>10}")
    for kind, c in report["corpora"].items():
        r = c["results"]
        cells = []
        c["ratios"] = {}
        for name, value, goal in (("matcher/rg", ratio(r, "matcher", "rg"), None),
                                  ("cli/rg", ratio(r, "cli-w1", "rg"), GOAL_CLI_RG[kind]),
                                  ("cli/naive", ratio(r, "cli-w1", "naive"), GOAL_CLI_NAIVE),
                                  ("w2/w1", ratio(r, "cli-w2", "cli-w1"), GOAL_W2_W1)):
            c["ratios"][name] = value
            if value is None:
                cells.append("-")
            elif goal is None:
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{value:.2f} {'ok' if value >= goal else 'MISS'} {goal:g}")
        net = net_ratio(r, report.get("startup_seconds"))
        c["ratios"]["w2/w1 net"] = net
        print(f"{kind:7} {cells[0]:>11} {cells[1]:>16} {cells[2]:>16} {cells[3]:>16} "
              f"{'-' if net is None else f'{net:.2f}':>10}")
    startup = report.get("startup_seconds")
    if startup is not None:
        print(f"\nCLI start-up (empty file, median): {startup:.2f} s; 'w2/w1 net' compares the CLI times "
              "less that start-up.")
    print("\nGoals (issue 2, at 256 MB): CLI/rg >= 0.60 log, 0.45 dense, 1.00 prose; "
          "CLI/naive >= 5; w2/w1 >= 1.8.")


# --------------------------------------------------------------------------------------------
# Containers.

def measure_container(path: Path, out_dir: Path) -> tuple[float, int, str]:
    """Wall time of `panscan scan FILE --workers 1`, its PAN findings, and the item's status
    (with its reason when not complete: a partial read makes the figure meaningless)."""
    out = out_dir / "containers.jsonl"
    cmd = [*panscan_command(), "scan", str(path), "--workers", "1", "--no-state", "--format", "jsonl",
           "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=False, cwd=out_dir)
    elapsed = time.perf_counter() - t0
    if not out.exists():
        raise Skip(f"panscan exited {proc.returncode} and wrote no report: "
                   f"{proc.stderr.decode(errors='replace')[-300:]!r}")
    findings, status = 0, "?"
    with open(out, "rb") as fh:
        for line in fh:
            record = json.loads(line)
            if record.get("type") == "finding":
                findings += record.get("kind") == "pan"
            elif record.get("type") == "item":
                status = record["status"] + (f" {record['reason']}" if record.get("reason") else "")
    out.unlink()
    return elapsed, findings, status


def run_containers(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from containers import DEFAULT_SIZES
    from containers import KINDS as CONTAINER_KINDS
    from containers import ensure as ensure_container

    kinds = [k for k in (args.kinds or ",".join(CONTAINER_KINDS)).split(",") if k]
    if bad := [k for k in kinds if k not in CONTAINER_KINDS]:
        ap.error(f"unknown container kind: {', '.join(bad)}")
    reps = args.reps or 1
    tmp, directory, out_dir = work_dirs(args.dir)
    report: dict[str, Any] = {"reps": reps, "cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "containers": {}}
    problems: list[str] = []
    try:
        for kind in kinds:
            path, meta = ensure_container(kind, args.size or DEFAULT_SIZES[kind], args.seed, directory)
            warm(path)
            times, count, status = [], 0, "?"
            try:
                for _ in range(reps):
                    elapsed, count, status = measure_container(path, out_dir)
                    times.append(elapsed)
            except Skip as why:
                report["containers"][kind] = {**meta, "skipped": str(why)}
                print(f"  {kind:5} skipped: {why}", file=sys.stderr)
                continue
            med = statistics.median(times)
            entry = {**meta, "seconds": times, "found": count, "status": status,
                     "mbps_container": meta["bytes"] / MB / med, "mbps_text": meta["text_bytes"] / MB / med}
            report["containers"][kind] = entry
            print(f"  {kind:5} {entry['mbps_container']:7.1f} MB/s container, {entry['mbps_text']:7.1f} MB/s "
                  f"text, found {count} of {meta['planted']}, {status}", file=sys.stderr)
            if count != meta["planted"] or status != "complete":
                msg = f"!!! {kind}: found {count} PANs, planted {meta['planted']}; item {status}"
                problems.append(msg)
                print(msg, file=sys.stderr)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()

    print(f"\npanscan container benchmark: `panscan scan FILE --workers 1`, median of {reps}, "
          f"{report['cpus']} CPUs, Python {report['python']}\n")
    print(f"{'type':5} {'container MB':>12} {'text MB':>8} {'planted':>8} {'found':>6} {'seconds':>8} "
          f"{'MB/s container':>15} {'MB/s text':>10}  item")
    for kind, c in report["containers"].items():
        if "skipped" in c:
            print(f"{kind:5} {c['bytes'] / MB:12.1f} {c['text_bytes'] / MB:8.1f} {c['planted']:8} skipped: "
                  f"{c['skipped']}")
            continue
        print(f"{kind:5} {c['bytes'] / MB:12.1f} {c['text_bytes'] / MB:8.1f} {c['planted']:8} {c['found']:6} "
              f"{statistics.median(c['seconds']):8.2f} {c['mbps_container']:15.1f} {c['mbps_text']:10.1f}  "
              f"{c['status']}")
    return finish(report, problems, args.json,
                  "!!! COUNT MISMATCH or incomplete item: those figures are not for a correct scan")


if __name__ == "__main__":
    raise SystemExit(main())
