"""The ``panscan`` command: argument parsing, logging set-up, exit codes; nothing else.

Every message this module prints, and every log record, passes through
``findings.mask.mask_text``: arguments and file names can hold card numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn

from panscan import __version__
from panscan.config import (
    MAX_KEEP,
    ConfigError,
    Policy,
    append_allow,
    describe_policy,
    expired_allow_warnings,
    load_policy,
    parse_date,
    parse_duration,
    parse_size,
    utc_today,
)
from panscan.engine.local import EngineError
from panscan.engine.runner import (
    EXIT_INCOMPLETE,
    EXIT_USAGE,
    OutputError,
    ScanOptions,
    UsageError,
    aws_endpoint,
    run_scan,
    state_path,
)
from panscan.engine.suppress import CONFIDENCES
from panscan.findings.mask import mask_text
from panscan.sinks.base import FORMATS
from panscan.state import StateError

_MIN_CHUNK, _MAX_CHUNK = 4096, 64 * 2**20
_MAX_WORKERS = 1024  # a typo must not fork the machine to death

DESCRIPTION = """\
Find payment card numbers (PANs) and magnetic-stripe track data in files and directories.
Every finding is reported masked (first six and last four digits) with a keyed fingerprint;
full card numbers never appear in reports or logs."""

EPILOG = """\
exit status:
  0  nothing found and everything that should have been read was read completely (items
     left out on purpose: excludes, links not followed, FIFOs and devices, other
     filesystems, are listed with their reason but are no gap in coverage)
  1  card data found, or data older than the policy's retention (with --policy); a later
     error (a report or the state that cannot be written) never hides it
  2  no card data found, but coverage is incomplete (items partial, in error, or skipped
     for any other reason, or the scan was interrupted), or the report or the state could
     not be written
  3  usage or configuration error, nothing scanned: a target that does not exist, no AWS
     credentials for an AWS target, a report path that cannot be opened"""

SCAN_EPILOG = """\
examples:
  panscan scan /srv/data                       table report on stdout
  panscan scan /var/log --format jsonl -o r.jsonl --exclude '*.journal'
  panscan scan /mnt/vol1 --policy panscan.toml --workers 8
  panscan scan s3://acme-payments --policy panscan.toml --format jsonl -o sweep.jsonl

A TARGET of - reads standard input (a pipe, or a file redirected with <); its item is "-".

Reports (-o FILE): a new file is created with mode 0600; an existing file, FIFO or device
(/dev/null) is written as it is, its mode and owner unchanged. A report (or the state) that
cannot be written is named in one line with the reason, and the scan stops there.

Sweeps are recorded in the state database (--state PATH; by default
$XDG_STATE_HOME/panscan/state.db or ~/.local/state/panscan/state.db), which holds masked results
only, with the fingerprint key beside it. A later scan of the same targets does not read again
what has not changed (S3 versions, files with the same size, mtime and inode) unless the patterns
changed, marks findings "new" or "still present", lists those resolved since, and resumes a sweep
that was killed. With --no-state every item is read and a temporary key is used, so fingerprints
are not comparable across runs.

Findings an [[allow]] entry of the policy matches (see 'panscan allow') are listed as suppressed,
with the entry's reason, and findings below --min-confidence are counted: neither counts as card
data found in the exit status.

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


def _size(text: str) -> int:
    try:
        return parse_size(text, "size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _days(text: str) -> int:
    try:
        return parse_duration(text, "age")
    except ConfigError:
        raise argparse.ArgumentTypeError("expected an age such as 90d, 13w or 2y") from None


_WAIT = re.compile(r"^\s*(\d+)\s*([smh])\s*$")


def _days_or_time(text: str) -> float:
    m = _WAIT.match(text)
    if not m:
        raise argparse.ArgumentTypeError("expected a duration such as 90s, 30m or 6h")
    return float(int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]])


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


def _as_of(text: str) -> float:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date or time such as 2026-09-30 or 2026-09-30T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # ages are judged in UTC
    return when.timestamp()


def _sweep_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("expected a sweep number (see the summary of a scan)")
    return int(text)


def _add_state_options(group: argparse._ArgumentGroup) -> None:
    state = group.add_mutually_exclusive_group()
    state.add_argument("--state", type=Path, metavar="PATH",
                       help="state database (default: $XDG_STATE_HOME/panscan/state.db or "
                            "~/.local/state/panscan/state.db); the fingerprint key lives in its directory")
    state.add_argument("--no-state", action="store_true",
                       help="keep no state: every item is read, nothing is compared with earlier sweeps, "
                            "and a temporary fingerprint key is used and removed at exit")


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
        "scan", help="scan files, directories and S3 for card data",
        description="Scan files and directories, S3 buckets (every version), S3 Inventory reports, Glacier vaults\n"
                    "and the EBS volumes of this instance for card numbers and track data.",
        epilog=SCAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    scan.add_argument("targets", nargs="*", metavar="TARGET",
                      help="a file or directory, - (standard input), s3://bucket[/prefix] (every version "
                           "of every object under it), s3:// (every bucket the credentials can list), "
                           "s3-inventory://bucket/manifest.json, glacier://vault or glacier:// (every vault)")
    out = scan.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="table",
                     help="report format: table (default; summary, findings, incomplete items), jsonl "
                          "(one JSON object per line: finding, item and summary records) or csv (findings "
                          "only; incomplete items and the summary go to stderr)")
    out.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write the report to FILE instead of stdout (a new file is created mode 0600; "
                          "an existing one keeps its mode and owner)")
    _add_state_options(out)
    out.add_argument("--policy", type=Path, metavar="FILE",
                     help="panscan.toml: limits, excludes, retention rules and [[allow]] entries (validated "
                          "before scanning); items older than their rule are reported, and card data in them "
                          "first; findings an [[allow]] entry matches are listed as suppressed")
    out.add_argument("--evidence", type=Path, metavar="DIR",
                     help="also write a signed evidence bundle into the new directory DIR: the JSON Lines "
                          "results, the HTML report, the policy, the pattern-set hash and a manifest of "
                          "SHA-256 digests signed with the state's key (check it with 'panscan verify DIR')")
    out.add_argument("--as-of", type=_as_of, metavar="TIME",
                     help="judge retention ages as of TIME (e.g. 2026-09-30 or 2026-09-30T12:00:00Z, UTC "
                          "unless a zone is given; default: now)")
    out.add_argument("--min-confidence", choices=CONFIDENCES, default="low",
                     help="report findings of this confidence or higher (default: low, every finding); those "
                          "below are counted in the summary (below_threshold), not listed, and not in the "
                          "exit status")

    walk = scan.add_argument_group("what to scan")
    walk.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                      help="skip paths matching GLOB (repeatable; reported as EXCLUDED)")
    walk.add_argument("--follow-symlinks", action="store_true",
                      help="follow symbolic links (default: report them as SYMLINK_NOT_FOLLOWED)")
    walk.add_argument("--latest-only", action="store_true",
                      help="S3: scan current object versions only (default: every version)")
    walk.add_argument("--restore", choices=("none", "bulk", "standard", "expedited"), default=None,
                      help="S3: ask S3 to restore archived versions (GLACIER, DEEP_ARCHIVE) at this tier "
                           "(a write action and a cost: an estimate is printed); the requests are kept in "
                           "the state and a later run reads the copies that are ready (default: none, "
                           "archived versions are reported INVALID_OBJECT_STATE and never read). Glacier: "
                           "the tier of --retrieve")
    walk.add_argument("--tags", action="store_true",
                      help="S3: also scan each object version's tags, reported under member (tag KEY). "
                           "Costs one GetObjectTagging request per version (at us-east-1 list prices "
                           "$0.0004 per 1,000, like a GET) and needs s3:GetObjectVersionTagging; "
                           "tags that cannot be read leave the version partial (default: tags not read; "
                           "user metadata and Content-Disposition are always scanned, at no extra request)")
    walk.add_argument("--endpoint-url", metavar="URL",
                      help="AWS endpoint to use instead of the standard one (default: AWS_ENDPOINT_URL "
                           "or the AWS configuration); with --engine dask it is sent to the workers with "
                           "each batch, with the region, whatever their own environment says")

    ebs = scan.add_argument_group("EBS volumes (on an EC2 instance)")
    ebs.add_argument("--volumes", action="store_true",
                     help="also scan every mounted filesystem of the EBS volumes attached to this instance "
                          "(see 'panscan volumes'); items and findings carry the volume id")
    ebs.add_argument("--include-root", action="store_true",
                     help="with --volumes: the root volume too (default: the others only)")

    glacier = scan.add_argument_group("Glacier vaults (glacier://vault, glacier://)")
    glacier.add_argument("--retrieve", action="store_true",
                         help="start archive-retrieval jobs for the archives of the vault inventory (a write "
                              "action and a cost: an estimate is printed first; tier from --restore, default "
                              "standard); a later run reads the outputs")
    glacier.add_argument("--max-bytes", type=_size, metavar="SIZE",
                         help="with --retrieve: retrieve at most this many bytes (e.g. 50GiB)")
    glacier.add_argument("--older-than", type=_days, metavar="AGE",
                         help="with --retrieve: only archives created more than AGE ago (e.g. 365d)")
    glacier.add_argument("--wait", type=_days_or_time, metavar="DURATION", default=0.0,
                         help="wait up to DURATION (e.g. 30m, 6h) for Glacier jobs to complete instead of "
                              "reporting them JOB_PENDING")
    glacier.add_argument("--yes", action="store_true",
                         help="start retrievals without asking (needed when stdin is not a terminal)")
    glacier.add_argument("--region", metavar="REGION", help="AWS region of the vaults (default: the AWS configuration)")

    perf = scan.add_argument_group("performance")
    perf.add_argument("--workers", type=_worker_count, metavar="N",
                      help="worker processes (default: one per CPU core)")
    perf.add_argument("--chunk-size", type=_chunk_size, metavar="SIZE",
                      help="read size per chunk, e.g. 1MiB (default) or 512KiB")

    perf.add_argument("--engine", choices=("local", "dask"), default="local",
                      help="local (default): worker processes on this machine; dask: a Dask cluster "
                           "(needs 'panscan[dask]'; see docs/distributed.md)")
    perf.add_argument("--scheduler", metavar="ADDRESS",
                      help="with --engine dask: the scheduler, e.g. tls://10.0.1.10:8786 (default: "
                           "PANSCAN_DASK_SCHEDULER, else a local cluster sized to this machine)")

    _add_retention_parser(commands)
    _add_stored_parsers(commands)
    _add_allow_parser(commands)
    volumes = commands.add_parser(
        "volumes", help="EBS volumes attached to this EC2 instance: devices, mounts, encryption",
        description="List the EBS volumes attached to this instance (instance metadata, IMDSv2, then\n"
                    "DescribeVolumes): volume id, device, mount points, filesystem, size, encryption and\n"
                    "KMS key; for attached volumes that are not mounted, the read-only mount commands.",
        epilog="exit status: 0 listed, 3 not on EC2 (or instance metadata disabled) or DescribeVolumes refused",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    volumes.add_argument("--format", choices=("table", "jsonl"), default="table")
    volumes.add_argument("--endpoint-url", metavar="URL", help="AWS endpoint to use instead of the standard one")

    verify = commands.add_parser(
        "verify", help="check a signed evidence bundle (scan --evidence DIR)",
        description="Check that an evidence bundle is intact: the manifest's signature (HMAC with the\n"
                    "state's key) and the SHA-256 of every file it lists, and that nothing was added.",
        epilog="exit status: 0 intact, 1 altered (each problem is printed), 3 usage error (not a bundle, no key)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("bundle", type=Path, metavar="DIR")
    verify.add_argument("--state", type=Path, metavar="PATH",
                        help="the state database whose directory holds the key that signed the bundle "
                             "(default as for scan)")

    check = commands.add_parser(
        "check-config", help="validate a policy file (panscan.toml)",
        description="Validate a policy file and print what it says; errors name the line.",
        epilog="exit status: 0 valid, 3 invalid", formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("policy_file", type=Path, metavar="FILE")

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


RETENTION_EPILOG = """\
exit status:
  0  nothing past retention, and every S3 bucket's lifecycle can enforce the policy
  1  items past retention, or a bucket whose lifecycle cannot enforce the policy
  2  nothing flagged, but a target could not be listed completely (or interrupted)
  3  usage or configuration error

No object or file is read: ages come from metadata (file mtime, S3 LastModified and, for
non-current versions, when they became non-current). Use 'panscan scan --policy' to find
card data in the items past retention."""


def _add_retention_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ret = commands.add_parser(
        "retention", help="metadata-only sweep: what is older than the policy allows",
        description="List every target and judge each item's age against the retention policy, without\n"
                    "reading any content: counts and bytes past retention per rule, per bucket or\n"
                    "directory and per storage class, the oldest items, and S3 buckets whose lifecycle\n"
                    "rules cannot enforce the policy.",
        epilog=RETENTION_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ret.add_argument("targets", nargs="+", metavar="TARGET",
                     help="a file or directory, s3://bucket[/prefix], s3:// or s3-inventory://bucket/manifest.json")
    ret.add_argument("--policy", type=Path, metavar="FILE", required=True,
                     help="panscan.toml with a default_max_age or [[retention.rule]] entries")
    ret.add_argument("--format", choices=("table", "jsonl"), default="table",
                     help="table (default) or jsonl (a retention record per item past retention, "
                          "lifecycle_gap records, then a retention_summary record)")
    ret.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write the report to FILE (a new file is created mode 0600)")
    ret.add_argument("--as-of", type=_as_of, metavar="TIME", help="judge ages as of TIME (default: now)")
    ret.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave out matching locations")
    ret.add_argument("--latest-only", action="store_true", help="S3: judge current versions only")
    ret.add_argument("--follow-symlinks", action="store_true", help="follow symbolic links")
    ret.add_argument("--endpoint-url", metavar="URL", help="AWS endpoint to use instead of the standard one")
    ret.add_argument("--state", type=Path, metavar="PATH",
                     help="state database holding Glacier vault inventories (glacier:// targets; default as "
                          "for scan)")


def _add_stored_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = commands.add_parser(
        "report", help="render a sweep stored in the state database",
        description="Render a stored sweep (default: the latest) in any report format, with its\n"
                    "retention records and the findings resolved since the sweep before it.",
        epilog="exit status: that sweep's exit status (0, 1 or 2), or 3 for a usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("--sweep", type=_sweep_id, metavar="ID", help="sweep number (default: the latest)")
    report.add_argument("--format", choices=FORMATS, default="table", help="report format (default: table)")
    report.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write the report to FILE (a new file is created mode 0600)")
    report.add_argument("--state", type=Path, metavar="PATH", help="state database (default as for scan)")
    report.add_argument("--policy", type=Path, metavar="FILE",
                        help="panscan.toml: lets the HTML report chart every item's age against its rule")

    jobs = commands.add_parser(
        "jobs", help="pending S3 restores and Glacier jobs in the state database",
        description="List the S3 restores requested by 'scan --restore' that no scan has read yet, and\n"
                    "pending Glacier jobs, then the Glacier archives retrieved but not read yet (the next\n"
                    "scan of their vault reads them).",
        epilog="exit status: 0 nothing pending, 2 something pending or retrieved and not read yet, 3 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs.add_argument("--format", choices=("table", "jsonl"), default="table")
    jobs.add_argument("--state", type=Path, metavar="PATH", help="state database (default as for scan)")
    jobs.add_argument("--collect", action="store_true",
                      help="ask Glacier about each pending job and fetch finished inventories (archive "
                           "outputs are read by the next scan)")
    jobs.add_argument("--endpoint-url", metavar="URL", help="AWS endpoint to use instead of the standard one")
    _add_state_parser(commands)


ALLOW_EPILOG = """\
exit status: 0 added, 3 usage or configuration error (nothing written)

The entry is appended to the policy file (created when missing); the rest of the file, its
comments included, is left as it is. Later scans with --policy FILE list the finding as a
'suppressed' record with the reason, instead of reporting it: counted in the summary, shown in
every report, never in the exit status. A fingerprint is keyed by the state's key: the entry
matches in scans that use the same state directory (not with --no-state)."""


def _add_allow_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    allow = commands.add_parser(
        "allow", help="suppress a known finding by its fingerprint: append an [[allow]] entry to the policy",
        description="Mark a finding (by the fingerprint a report gives it) as a known false positive or as\n"
                    "accepted, with the reason, by appending an [[allow]] entry to the policy file.",
        epilog=ALLOW_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    allow.add_argument("fingerprint", metavar="FINGERPRINT",
                       help="the finding's fingerprint (64 hex digits, the 'fingerprint' field of a report)")
    allow.add_argument("--reason", required=True, metavar="TEXT",
                       help="why it may stay (required; shown beside the finding in every report)")
    allow.add_argument("--expires", type=_date, metavar="DATE",
                       help="the last day the entry suppresses the finding, e.g. 2027-06-30 (default: never)")
    allow.add_argument("--location", metavar="GLOB",
                       help="only where the location matches GLOB (fnmatch, '*' crosses '/'; default: anywhere)")
    allow.add_argument("--policy", type=Path, default=Path("panscan.toml"), metavar="FILE",
                       help="the policy file to append to (default: panscan.toml)")


def _date(text: str) -> date:
    try:
        return parse_date(text, "date")
    except ConfigError:
        raise argparse.ArgumentTypeError("expected a date such as 2027-06-30") from None


def _allow(args: argparse.Namespace) -> int:
    # Masked before it is written: the policy file is copied into evidence bundles, and a
    # reason or glob quoting a card number must not put one on disk.
    rule, added = append_allow(args.policy, args.fingerprint, mask_text(args.reason), expires=args.expires,
                               location=None if args.location is None else mask_text(args.location))
    where = f" (line {rule.line})" if rule.line is not None else ""
    print(mask_text(f"panscan: added [[allow]] #{rule.number} to {args.policy}{where}:"))
    print(mask_text(added), end="")
    return 0


def _keep_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_KEEP:
        raise argparse.ArgumentTypeError(f"expected a whole number of sweeps from 1 to {MAX_KEEP}")
    return int(text)


def _add_state_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    state = commands.add_parser(
        "state", help="maintain the state database (prune old sweeps)",
        description="Maintain the state database of past sweeps.",
        epilog="exit status: that of the action; 3 for a usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = state.add_subparsers(dest="state_command", metavar="ACTION", required=True, parser_class=_Parser)
    prune = actions.add_parser(
        "prune", help="remove old sweeps and the rows only they referenced",
        description="Remove old sweeps from the state database, with every row only they referenced\n"
                    "(their record order, findings, resolved findings, bucket records, and the stored\n"
                    "item results no kept sweep names), then VACUUM the file. Every kept sweep stays\n"
                    "reportable exactly as it was ('panscan report --sweep ID').\n\n"
                    "Never removed: a sweep still running, the newest complete sweep of each set of\n"
                    "targets (later scans read only what changed since it and compare findings with it),\n"
                    "and a sweep whose S3 restore request is still pending ('panscan jobs').\n\n"
                    "The same bounds can be applied after every scan: [state] keep = N and/or\n"
                    "prune_older_than = \"AGE\" in panscan.toml (without the VACUUM: freed pages are\n"
                    "reused by later sweeps).",
        epilog="exit status: 0 pruned (or nothing to prune), 3 usage error (bad or missing bound, no state "
               "database)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bound = prune.add_mutually_exclusive_group(required=True)
    bound.add_argument("--keep", type=_keep_count, metavar="N",
                       help="keep the newest N sweeps (of any targets and status), remove the others")
    bound.add_argument("--older-than", type=_days, metavar="AGE",
                       help="remove sweeps started more than AGE ago, e.g. 90d, 13w or 2y")
    prune.add_argument("--state", type=Path, metavar="PATH", help="state database (default as for scan)")





def _state_prune(args: argparse.Namespace) -> int:
    from panscan.engine.stored import run_prune

    return run_prune(state_path(args.state), keep=args.keep, older_than_days=args.older_than)


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` masked and safe for a terminal: bytes that were not UTF-8 and control
    characters (a file name can hold escape sequences) become ``\\xNN``, and a newline
    continues the same message (``  | ``) so a name can never start a line of its own."""
    text = mask_text(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)
    return text.replace("\n", "\n  | ")


class _MaskingFormatter(logging.Formatter):
    """Masks card numbers and escapes control characters in the final text of every record,
    worker records included (their arguments are merged into the message before they arrive)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record))


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
    print(terminal_safe(message), file=sys.stderr)


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
        if args.command == "volumes":
            from panscan.engine.volumes import run_volumes
            from panscan.sources.ebs import DiscoveryError

            try:
                with aws_endpoint(args.endpoint_url):
                    return run_volumes(args.format, sys.stdout)
            except DiscoveryError as exc:
                raise UsageError(str(exc)) from None
        if args.command == "verify":
            return _verify(args)
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "allow":
            return _allow(args)
        if args.command == "retention":
            return _retention(args)
        if args.command == "report":
            from panscan.engine.stored import run_report

            return run_report(state_path(args.state), args.sweep, args.format, args.output,
                              policy=load_policy(args.policy) if args.policy else None)
        if args.command == "state":
            return _state_prune(args)
        if args.command == "jobs":
            from panscan.engine.stored import run_jobs

            with aws_endpoint(args.endpoint_url):
                return run_jobs(state_path(args.state), args.format, collect=args.collect)
        return _scan(args)
    except (UsageError, ConfigError) as exc:
        _say(f"panscan: error: {exc}")
        return EXIT_USAGE
    except OutputError as exc:  # a report or the state could not be written: 1 stays 1, else 2
        _say(f"panscan: error: {exc}")
        return exc.status
    except StateError as exc:  # the state became unwritable mid-sweep (disk full): what was committed stays
        _say(f"panscan: error: {exc}; the sweep did not complete")
        return EXIT_INCOMPLETE
    except EngineError as exc:  # no scheduler, no workers, the cluster lost the batches
        _say(f"panscan: error: {exc}; the scan did not complete")
        return EXIT_INCOMPLETE
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


def _confirm(estimate: str) -> bool:
    """Ask before a retrieval is initiated; without a terminal to ask on, the answer is no."""
    _say(estimate)
    if not sys.stdin.isatty():
        _say("panscan: stdin is not a terminal to ask on: pass --yes to initiate the retrievals")
        return False
    try:
        answer = input("Initiate these retrievals? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _verify(args: argparse.Namespace) -> int:
    from panscan.evidence import EvidenceError, verify_bundle
    from panscan.findings.mask import KEY_FILE_NAME

    key_file = state_path(args.state).parent / KEY_FILE_NAME
    try:
        key = key_file.read_bytes()  # read, never created: a new key could not verify an old bundle
    except OSError as exc:
        raise UsageError(f"cannot read the key that signs bundles ({key_file}): {exc.strerror} "
                         "(give the --state PATH the scan used)") from None
    try:
        problems = verify_bundle(args.bundle, key)
    except EvidenceError as exc:
        raise UsageError(str(exc)) from None
    for problem in problems:
        _say(f"panscan: {problem}")
    print(mask_text(f"{args.bundle}: " + ("ALTERED" if problems else "intact (signature and every file check)")))
    return 1 if problems else 0


def _check_config(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy_file)
    today = utc_today()
    for line in describe_policy(policy, today):
        print(mask_text(line))
    for warning in expired_allow_warnings(policy, today):
        _say(f"panscan: warning: {warning}")
    print(mask_text(f"{args.policy_file}: valid"))
    return 0


def _retention(args: argparse.Namespace) -> int:
    from panscan.engine.retention_sweep import RetentionOptions, run_retention

    opts = RetentionOptions(
        targets=tuple(args.targets), policy=load_policy(args.policy), fmt=args.format, output=args.output,
        excludes=tuple(args.exclude), latest_only=args.latest_only, follow_symlinks=args.follow_symlinks,
        endpoint_url=args.endpoint_url, as_of=args.as_of, state=state_path(args.state))
    return run_retention(opts)


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
    if args.scheduler and args.engine != "dask":
        raise UsageError("--scheduler goes with --engine dask")
    if not args.targets and not args.volumes:
        raise UsageError("nothing to scan: give at least one TARGET, or --volumes")
    if args.include_root and not args.volumes:
        raise UsageError("--include-root goes with --volumes")
    vaults = any(t.startswith("glacier://") for t in args.targets)
    if args.retrieve and not vaults:
        raise UsageError("--retrieve goes with glacier:// targets (for S3 archived objects use --restore)")
    if args.tags and not any(t.startswith(("s3://", "s3-inventory://")) for t in args.targets):
        raise UsageError("--tags goes with s3:// or s3-inventory:// targets (object tags are an S3 feature)")
    for name, value in (("--max-bytes", args.max_bytes), ("--older-than", args.older_than), ("--yes", args.yes)):
        if value and not args.retrieve:
            raise UsageError(f"{name} goes with --retrieve")
    policy = load_policy(args.policy) if args.policy else Policy()
    opts = ScanOptions(
        targets=tuple(args.targets), fmt=args.format, output=args.output, workers=args.workers,
        policy=policy, state=args.state, no_state=args.no_state, excludes=tuple(args.exclude),
        follow_symlinks=args.follow_symlinks, latest_only=args.latest_only, endpoint_url=args.endpoint_url,
        restore=None if args.restore in (None, "none") else args.restore.capitalize(), as_of=args.as_of,
        tags=args.tags,
        retrieve=args.retrieve, max_bytes=args.max_bytes, older_than_days=args.older_than,
        wait_seconds=args.wait, confirm=None if args.yes else _confirm, region=args.region,
        volumes=args.volumes, include_root=args.include_root, evidence=args.evidence,
        min_confidence=args.min_confidence,
        engine=args.engine, scheduler=(args.scheduler or os.environ.get("PANSCAN_DASK_SCHEDULER")
                                       if args.engine == "dask" else None),
        **({"chunk_size": args.chunk_size} if args.chunk_size else {}),
    )
    return run_scan(opts)
