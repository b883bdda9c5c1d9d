"""Run panscan's fuzz targets (fuzz/) for a fixed time each; exit non-zero if one fails.

    python benchmarks/fuzz.py                          # every target, 60 s each
    python benchmarks/fuzz.py --seconds 600 --target extract
    python benchmarks/fuzz.py --engine plain --seed 7  # the plain-Python driver even if atheris is installed

Targets: ``matcher`` (fuzz/fuzz_matcher.py: chunked scan equals whole scan, every code path
agrees, no exception) and ``extract`` (fuzz/fuzz_extract.py: hostile bytes through every
extractor under tight limits end only in streams, Problem records or ExtractError, in bounded
time). Each runs in its own process, coverage-guided under atheris when it is installed
(``pip install atheris``), else under the plain driver (seeded random mutations of the seeds:
reproducible with --seed, but blind to coverage). Not part of the test suite: the quick test
``tests/unit/test_fuzz.py`` only checks that the targets still run on their seeds.

Everything lives under --workdir (default /tmp/panscan-fuzz): ``<target>-corpus`` (what
libFuzzer learnt; reused by the next run), ``<target>-seeds``, and for a failure the input as
``<target>-crash-<sha1>`` (raw; ``timeout-``/``oom-`` under libFuzzer) and ``.hex`` beside it,
whose path is printed. Replay one with ``python fuzz/fuzz_<target>.py FILE.hex``.
"""

from __future__ import annotations

import argparse
import binascii
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"matcher": ROOT / "fuzz" / "fuzz_matcher.py", "extract": ROOT / "fuzz" / "fuzz_extract.py"}
ARTIFACT_KINDS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


def engine_available() -> str:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "plain"
    return "atheris"


def run_target(name: str, seconds: int, workdir: Path, engine: str, seed: int | None, per_input: int,
               rss_limit_mb: int = 4096) -> list[Path]:
    """Fuzz ``name`` for ``seconds``; the hex files of the failing inputs it left (empty: none)."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = workdir / f"{name}-"
    before = set(workdir.iterdir())
    cmd = [sys.executable, str(TARGETS[name]), f"-max_total_time={seconds}", f"-artifact_prefix={prefix}",
           f"-timeout={per_input}", f"-rss_limit_mb={rss_limit_mb}", str(workdir / f"{name}-corpus")]
    if seed is not None:
        cmd.insert(2, f"-seed={seed}")
    env = dict(os.environ, PANSCAN_FUZZ_ENGINE=engine)
    print(f"=== {name}: {seconds} s with the {engine} driver", flush=True)
    started = time.monotonic()
    code = subprocess.run(cmd, env=env, check=False).returncode
    print(f"=== {name}: exit status {code} after {time.monotonic() - started:.0f} s", flush=True)
    found = [p for p in set(workdir.iterdir()) - before
             if p.name.startswith(tuple(f"{name}-{k}" for k in ARTIFACT_KINDS)) and p.suffix != ".hex"]
    hexed = []
    for raw in sorted(found):
        out = raw.with_name(raw.name + ".hex")
        if not out.exists():
            text = binascii.hexlify(raw.read_bytes()).decode()
            out.write_text("\n".join(text[i:i + 128] for i in range(0, len(text), 128)) + "\n")
        hexed.append(out)
    if code != 0 and not hexed:
        # The target failed without leaving an input (a crash of the driver itself): still a failure.
        hexed.append(Path(f"(no input saved; {name} exited with status {code})"))
    return hexed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--engine", choices=["auto", "atheris", "plain"], default="auto",
                        help="auto: atheris when installed, else the plain driver")
    parser.add_argument("--seed", type=int, default=None, help="random seed (plain driver: default 1)")
    parser.add_argument("--timeout", type=int, default=30, help="seconds one input may take (default 30)")
    parser.add_argument("--rss-limit-mb", type=int, default=4096,
                        help="atheris: libFuzzer's memory limit (default 4096). libFuzzer's own bookkeeping "
                             "grows by ~2 GB in 10 minutes on the extract target (replaying its corpus in a "
                             "plain process stays at 65 MB), so its 2048 default reports a false out-of-memory")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/panscan-fuzz"))
    args = parser.parse_args(argv)
    engine = engine_available() if args.engine == "auto" else args.engine
    if engine == "atheris" and engine_available() != "atheris":
        parser.error("atheris is not installed (pip install atheris), or use --engine plain")
    failures: dict[str, list[Path]] = {}
    for name in TARGETS if args.target == "all" else [args.target]:
        found = run_target(name, args.seconds, args.workdir, engine, args.seed, args.timeout, args.rss_limit_mb)
        if found:
            failures[name] = found
    for name, files in failures.items():
        for f in files:
            print(f"FAILED {name}: {f}")
            if f.exists():
                print(f"  first bytes: {f.read_text()[:256].strip()}")
                print(f"  replay: {sys.executable} {TARGETS[name]} {f}")
    if not failures:
        print("fuzzing found nothing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
