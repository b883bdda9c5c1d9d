"""False alarms and recall: findings by confidence on a system directory and on the generated corpora.

    python benchmarks/false_alarms.py                    # /usr/share, and 16 MB corpora
    python benchmarks/false_alarms.py --dir /etc --size 64M
    python benchmarks/false_alarms.py --skip-dir          # corpora only
    python benchmarks/false_alarms.py --json figures.json

A system directory of a stock install holds no card numbers, so every finding there is a false
alarm unless it is a published test number. The directory is scanned by the real CLI at default
settings (`panscan scan DIR --no-state --format jsonl`), and the findings are counted by
confidence, brand and *structure*: the digit-group widths of the match ("4-4-4-4", "16") and the
byte classes glued to it, read back from the file at the finding's offset (plain and gzip files;
members of other containers show as "?"). No digit of a match is ever printed.

The generated corpora (corpus.py: log, dense, prose) each plant a known number of Luhn-valid
numbers in real IIN ranges, and their background holds no Luhn-valid window at all, so every
finding is a planted number: recall is found / planted, and it must be 100%. The published test
numbers (patterns/test_pans.txt) are also scanned, plain and grouped as printed on cards: each
must be found and marked a test number.

Exit status 1 when recall on a corpus or on the test numbers is below 100%.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import KINDS, generate, parse_size
from run import panscan_command

_GROUP = re.compile(rb"[0-9]+")
_RUN = re.compile(rb"[0-9]+(?:[ \-][0-9]+)*")


def _byte_class(b: int | None) -> str:
    if b is None:
        return "^"
    ch = chr(b)
    if ch.isdigit():
        return "9"
    if ch.isalpha():
        return "a"
    return {" ": "sp", "\n": "nl", "\t": "tab", "\r": "cr", "\x00": "nul"}.get(ch, ch if ch.isprintable() else "bin")


def structure(data: bytes, offset: int) -> str:
    """Group widths of the run starting at ``offset`` and the classes of the bytes around it."""
    m = _RUN.match(data, offset)
    if not m:
        return "?"
    widths = "-".join(str(len(g)) for g in _GROUP.findall(m.group()))
    before = data[offset - 1] if offset > 0 else None
    after = data[m.end()] if m.end() < len(data) else None
    return f"{_byte_class(before)} [{widths}] {_byte_class(after)}"


def _content(location: str, cache: dict[str, bytes | None]) -> bytes | None:
    if location not in cache:
        try:
            raw = Path(location).read_bytes()
            cache[location] = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        except (OSError, EOFError, gzip.BadGzipFile, ValueError):
            cache[location] = None
    return cache[location]


def scan_dir(directory: str, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="panscan-fa-") as tmp:
        out = Path(tmp) / "findings.jsonl"
        t0 = time.perf_counter()
        proc = subprocess.run([*panscan_command(), "scan", directory, "--no-state", "--format", "jsonl",
                               "-o", str(out), "--workers", str(workers)], capture_output=True, check=False)
        elapsed = time.perf_counter() - t0
        records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    findings = [r for r in records if r.get("type") == "finding"]
    cache: dict[str, bytes | None] = {}
    shapes: collections.Counter[str] = collections.Counter()
    for f in findings:
        data = _content(f["location"], cache) if f.get("member") is None else None
        shape = structure(data, f["offset"]) if data is not None else "?"
        shapes[f"{f['confidence']:6} {shape}"] += 1
        if len(cache) > 64:  # keep memory flat on big trees
            cache.clear()
    return {
        "dir": directory, "exit_status": proc.returncode, "seconds": round(elapsed, 1),
        "findings": len(findings),
        "by_confidence": dict(collections.Counter(f["confidence"] for f in findings)),
        "by_brand": dict(collections.Counter(f["brand"] for f in findings).most_common()),
        "test_cards": sum(1 for f in findings if f.get("test_card")),
        "top_structures": shapes.most_common(15),
    }


def scan_corpora(size: int, seed: int, kinds: list[str]) -> dict[str, Any]:
    from panscan.match.matcher import CHUNK_SIZE, scan_chunks

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="panscan-fa-corpus-") as tmp:
        for kind in kinds:
            path = Path(tmp) / f"{kind}.dat"
            planted = generate(kind, size, path, seed)
            data = path.read_bytes()
            hits = list(scan_chunks(data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)))
            pans = [h for h in hits if h.kind == "pan"]
            out[kind] = {"bytes": len(data), "planted": planted, "found": len(pans),
                         "recall": len(pans) / planted if planted else 1.0,
                         "by_confidence": dict(collections.Counter(str(h.confidence) for h in pans))}
    return out


def test_numbers() -> dict[str, Any]:
    """Every published test number, plain and grouped, one a line after a neutral word."""
    from panscan.match.matcher import scan_bytes
    from panscan.match.patterns import load_patterns

    numbers = sorted(load_patterns().test_pans)
    lines = []
    for n in numbers:
        grouped = (" ".join((n[:4], n[4:10], n[10:])) if len(n) in (14, 15)
                   else " ".join(n[i:i + 4] for i in range(0, len(n), 4)))
        lines += [f"value {n} end", f"value {grouped} end"]
    hits = scan_bytes("\n".join(lines).encode())
    found = {(h.line, h.digits) for h in hits if h.test_card}
    return {"numbers": len(numbers), "forms": len(lines), "found": len(found),
            "recall": len(found) / len(lines)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--dir", default="/usr/share", help="system directory to scan (default /usr/share)")
    ap.add_argument("--skip-dir", action="store_true", help="corpora and test numbers only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=parse_size, default=parse_size("16M"), help="size of each corpus (default 16M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    report: dict[str, Any] = {}
    if not args.skip_dir:
        d = report["system_dir"] = scan_dir(args.dir, args.workers)
        print(f"{d['dir']}: {d['findings']} findings ({d['test_cards']} test numbers), exit {d['exit_status']}, "
              f"{d['seconds']} s")
        print("  by confidence: " + ", ".join(f"{k} {v}" for k, v in sorted(d["by_confidence"].items())))
        print("  by brand:      " + ", ".join(f"{k} {v}" for k, v in d["by_brand"].items()))
        print("  top structures (confidence, byte before, [group widths], byte after):")
        for shape, n in d["top_structures"]:
            print(f"    {n:6}  {shape}")
    corpora = report["corpora"] = scan_corpora(args.size, args.seed, [k for k in args.kinds.split(",") if k])
    problems = []
    for kind, c in corpora.items():
        conf = ", ".join(f"{k} {v}" for k, v in sorted(c["by_confidence"].items()))
        print(f"corpus {kind:5}: {c['found']}/{c['planted']} planted found (recall {c['recall']:.1%}); {conf}")
        if c["found"] != c["planted"]:
            problems.append(f"corpus {kind}: found {c['found']}, planted {c['planted']}")
    t = report["test_numbers"] = test_numbers()
    print(f"published test numbers: {t['found']}/{t['forms']} forms found (recall {t['recall']:.1%})")
    if t["found"] != t["forms"]:
        problems.append("published test numbers: not all found")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    for p in problems:
        print("!!! " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
