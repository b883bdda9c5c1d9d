"""The ``panscan`` command: argument parsing, logging set-up, exit codes; nothing else.

Every message this module prints, and every log record, passes through
``findings.mask.mask_text``: arguments and file names can hold card numbers.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from panscan import __version__
from panscan.config import ConfigError, Policy, load_policy, parse_size
from panscan.engine.runner import EXIT_INCOMPLETE, EXIT_USAGE, ScanOptions, UsageError, run_scan
from panscan.findings.mask import mask_text
from panscan.sinks.base import FORMATS

PLANNED_FORMATS = ("html",)
_MIN_CHUNK, _MAX_CHUNK = 4096, 64 * 2**20
_MAX_WORKERS = 1024  # a typo must not fork the machine to death

DESCRIPTION = """\
Find payment card numbers (PANs) and magnetic-stripe track data in files and directories.
Every finding is reported masked (first six and last four digits) with a keyed fingerprint;
full card numbers never appear in reports or logs."""

EPILOG = """\
exit status:
  0  nothing found and every item scanned completely
  1  card data found
  2  no card data found, but coverage is incomplete (items skipped, partial, in error,
     or the scan was interrupted)
  3  usage or configuration error"""

SCAN_EPILOG = """\
examples:
  panscan scan /srv/data                       table report on stdout
  panscan scan /var/log --format jsonl -o r.jsonl --exclude '*.journal'
  panscan scan /mnt/vol1 --policy panscan.toml --workers 8

Reports (-o FILE) are created with mode 0600. The fingerprint key is kept beside the state
(--state PATH: in PATH's directory; by default $XDG_STATE_HOME/panscan or
~/.local/state/panscan); with --no-state a temporary key is used and removed at exit, so
fingerprints are not comparable across runs.

""" + EPILOG


SELFTEST_EPILOG = """\
exit status:
  0  the number was found in every format
  1  at least one format was MISSED
  2  the self-test could not run (internal error)
  3  usage error

Evidence for an assessor that the discovery method works on the file types in use; the
pattern-set version printed identifies the patterns/ data that was tested."""


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; panscan's usage errors are exit 3."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(f"{self.prog}: error: {message}")


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number") from None
    if not 1 <= value <= _MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {_MAX_WORKERS}")
    return value


def _chunk_size(text: str) -> int:
    try:
        value = parse_size(text, "--chunk-size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not _MIN_CHUNK <= value <= _MAX_CHUNK:
        raise argparse.ArgumentTypeError("must be between 4KiB and 64MiB")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="panscan", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"panscan {__version__}")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true",
                       help="debug log on stderr (card numbers stay masked)")
    level.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    scan = commands.add_parser(
        "scan", help="scan files and directories for card data",
        description="Scan files and directories (mounted volumes included) for card numbers and track data.",
        epilog=SCAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    scan.add_argument("targets", nargs="+", metavar="TARGET",
                      help="a file or directory, s3://bucket[/prefix] (every version of every object "
                           "under it) or s3:// (every bucket the credentials can list); glacier:// "
                           "targets come in a later version")
    out = scan.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS + PLANNED_FORMATS, default="table",
                     help="report format: table (default; summary, findings, incomplete items), jsonl "
                          "(one JSON object per line: finding, item and summary records) or csv (findings "
                          "only; incomplete items and the summary go to stderr)")
    out.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write the report to FILE (mode 0600) instead of stdout")
    state = out.add_mutually_exclusive_group()
    state.add_argument("--state", type=Path, metavar="PATH",
                       help="state database path; the fingerprint key lives in its directory")
    state.add_argument("--no-state", action="store_true",
                       help="use a temporary fingerprint key, removed at exit")
    out.add_argument("--policy", type=Path, metavar="FILE",
                     help="panscan.toml: limits, excludes and retention rules (validated before scanning)")

    walk = scan.add_argument_group("what to scan")
    walk.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                      help="skip paths matching GLOB (repeatable; reported as EXCLUDED)")
    walk.add_argument("--follow-symlinks", action="store_true",
                      help="follow symbolic links (default: report them as SYMLINK_NOT_FOLLOWED)")
    walk.add_argument("--latest-only", action="store_true",
                      help="S3: scan current object versions only (default: every version)")
    walk.add_argument("--restore", choices=("none", "bulk", "standard", "expedited"), default=None,
                      help="S3: ask S3 to restore archived versions (GLACIER, DEEP_ARCHIVE) at this tier "
                           "(a write action and a cost: an estimate is printed); a later run with the "
                           "same option reads the copies that are ready (default: none, archived "
                           "versions are reported INVALID_OBJECT_STATE and never read)")
    walk.add_argument("--endpoint-url", metavar="URL",
                      help="AWS endpoint to use instead of the standard one (default: AWS_ENDPOINT_URL "
                           "or the AWS configuration)")

    perf = scan.add_argument_group("performance")
    perf.add_argument("--workers", type=_worker_count, metavar="N",
                      help="worker processes (default: one per CPU core)")
    perf.add_argument("--chunk-size", type=_chunk_size, metavar="SIZE",
                      help="read size per chunk, e.g. 1MiB (default) or 512KiB")

    planned = scan.add_argument_group("not available yet", "accepted for compatibility with DESIGN.md; "
                                      "using them is a usage error (exit 3) in this version")
    for flag in ("--retrieve", "--volumes", "--include-root"):
        planned.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in ("--evidence", "--scheduler"):
        planned.add_argument(flag, metavar="VALUE", help=argparse.SUPPRESS)
    planned.add_argument("--engine", choices=("local", "dask"), default="local",
                         help="only 'local' is available")

    patterns = commands.add_parser(
        "patterns", help="the detection patterns: self-test",
        description="Commands about the detection patterns (patterns/ in the package).")
    patterns_commands = patterns.add_subparsers(dest="patterns_command", metavar="SUBCOMMAND", required=True)
    selftest = patterns_commands.add_parser(
        "test", help="self-test: find a generated card number in one sample of every supported format",
        description="Generate, in memory, one sample of every supported format (text, UTF-16, binary,\n"
                    "compressed streams, archives, office documents, PDF, RTF, e-mail, track data), each\n"
                    "holding a generated card number; scan it as a worker scans a file; print per format\n"
                    "whether the number was found and at which member path. Nothing is written to disk;\n"
                    "numbers are shown masked only.",
        epilog=SELFTEST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    selftest.add_argument("--format", choices=("table", "jsonl"), default="table",
                          help="table (default) or jsonl (one record per format, then a summary)")
    return parser


def _unavailable(args: argparse.Namespace) -> str | None:
    for name in ("retrieve", "volumes", "include_root", "evidence", "scheduler"):
        if getattr(args, name):
            return "--" + name.replace("_", "-")
    if args.engine != "local":
        return "--engine dask"
    if args.format in PLANNED_FORMATS:
        return f"--format {args.format}"
    return None


class _MaskingFormatter(logging.Formatter):
    """Masks card numbers in the final text of every record, worker records included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


def _configure_logging(verbose: bool, quiet: bool) -> tuple[logging.Logger, logging.Handler, bool]:
    log = logging.getLogger("panscan")
    handler = logging.StreamHandler(sys.stderr)
    fmt = "panscan: %(levelname)s: " + ("%(name)s: %(message)s" if verbose else "%(message)s")
    handler.setFormatter(_MaskingFormatter(fmt))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)
    propagate = log.propagate
    log.propagate = False  # our handler is the one that masks; no second copy via root
    return log, handler, propagate


def _say(message: str) -> None:
    print(mask_text(message), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        _say(f"{exc}\n(see 'panscan --help' or 'panscan scan --help')")
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0

    log, handler, propagate = _configure_logging(args.verbose, args.quiet)
    # A handler that fails would print the record's message and arguments: never.
    raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        if args.command == "patterns":
            return _patterns_test(args)
        return _scan(args)
    except (UsageError, ConfigError) as exc:
        _say(f"panscan: error: {exc}")
        return EXIT_USAGE
    except Exception as exc:
        # A bug. Its text may quote content, so only its type and where it happened.
        _say(f"panscan: internal error ({type(exc).__name__}); the scan did not complete")
        log.debug("where:\n%s", "".join(traceback.format_tb(exc.__traceback__)))
        return EXIT_INCOMPLETE
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
        logging.raiseExceptions = raise_exceptions
        handler.flush()


def _patterns_test(args: argparse.Namespace) -> int:
    # Imported here: the sample builders are not needed by a scan and cost start-up time.
    from panscan.match.patterns import load_patterns
    from panscan.selftest import jsonl_report, run_selftest, table_report

    results = run_selftest()
    render = jsonl_report if args.format == "jsonl" else table_report
    for line in render(results, load_patterns().version[:12]):
        print(mask_text(line))
    return 0 if all(r.found for r in results) else 1


def _scan(args: argparse.Namespace) -> int:
    flag = _unavailable(args)
    if flag:
        raise UsageError(f"{flag} is not available yet in this version")
    policy = load_policy(args.policy) if args.policy else Policy()
    opts = ScanOptions(
        targets=tuple(args.targets), fmt=args.format, output=args.output, workers=args.workers,
        policy=policy, state=args.state, no_state=args.no_state, excludes=tuple(args.exclude),
        follow_symlinks=args.follow_symlinks, latest_only=args.latest_only, endpoint_url=args.endpoint_url,
        restore=None if args.restore in (None, "none") else args.restore.capitalize(),
        **({"chunk_size": args.chunk_size} if args.chunk_size else {}),
    )
    return run_scan(opts)
