"""Orchestration of one scan: sources → engine → masking → sinks, summary and exit status.

Exit status (DESIGN.md): 0 nothing found and coverage complete; 1 card data found; 2 no
card data found but coverage incomplete (an item skipped, partial or in error, or the scan
interrupted); 3 usage or configuration error (:class:`UsageError`, raised before anything
is scanned). Card data wins over incomplete coverage: a scan that found numbers exits 1
even when interrupted.

Every result passes ``findings.mask.mask_result`` before it reaches a sink or a log line, so
card numbers in file names are masked like those in content.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from panscan import __version__
from panscan.config import Policy
from panscan.engine.local import RANGE_SIZE, SPLIT_THRESHOLD, LocalEngine
from panscan.engine.progress import Progress
from panscan.engine.worker import WorkerContext
from panscan.findings.mask import load_or_create_key, mask_result, mask_text
from panscan.match.matcher import CHUNK_SIZE
from panscan.match.patterns import load_patterns
from panscan.model import Item, ItemResult, Status
from panscan.sinks.base import Sink, Summary, open_sink
from panscan.sources.files import WalkOptions, enumerate_files

logger = logging.getLogger(__name__)

EXIT_CLEAN, EXIT_FOUND, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2, 3


class UsageError(Exception):
    """The scan cannot start as asked (exit status 3); the message is for the user."""


@dataclass(frozen=True)
class ScanOptions:
    """A scan as the CLI asked for it; plain data.

    ``state`` is the state database path: the fingerprint key lives in its directory (the
    database itself comes with a later issue). ``None`` means the default state directory,
    ``no_state`` a temporary key directory removed when the scan ends. ``latest_only``
    restricts S3 targets to current versions; ``endpoint_url`` replaces the AWS endpoint for
    this scan (coordinator and workers alike).
    """

    targets: tuple[str, ...]
    fmt: str = "table"
    output: Path | None = None
    workers: int | None = None
    policy: Policy = field(default_factory=Policy)
    state: Path | None = None
    no_state: bool = False
    excludes: tuple[str, ...] = ()
    follow_symlinks: bool = False
    one_filesystem: bool = True
    chunk_size: int = CHUNK_SIZE
    latest_only: bool = False
    restore: str | None = None  # S3 restore tier (Bulk, Standard, Expedited) or None
    endpoint_url: str | None = None
    split_threshold: int = SPLIT_THRESHOLD
    range_size: int = RANGE_SIZE


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/panscan``, else ``~/.local/state/panscan``."""
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "panscan"


@contextlib.contextmanager
def key_directory(state: Path | None, no_state: bool) -> Iterator[Path]:
    """The directory holding the fingerprint key for this scan (see :class:`ScanOptions`)."""
    if no_state:
        tmp = tempfile.mkdtemp(prefix="panscan-")  # mode 0700
        try:
            yield Path(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    elif state is not None:
        yield state.expanduser().absolute().parent
    else:
        yield default_state_dir()


def check_targets(targets: tuple[str, ...]) -> None:
    """Reject targets this version cannot scan (exit 3 before any work)."""
    for target in targets:
        scheme, sep, _ = target.partition("://")
        if scheme == "s3-inventory" and sep:
            from panscan.sources.s3_inventory import parse_inventory_url

            try:
                parse_inventory_url(target)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            continue
        if sep and scheme.isidentifier() and scheme != "s3":
            # Only the scheme is echoed: the rest of a target is a name that may hold a number.
            raise UsageError(f"{scheme}:// targets are not supported yet; this version scans local paths, "
                             "s3:// and s3-inventory:// targets")


def enumerate_targets(targets: tuple[str, ...], walk: WalkOptions, latest_only: bool = False,
                      restore: str | None = None) -> Iterator[Item | ItemResult]:
    """The records of every target, in the order given; runs of consecutive local paths and
    of consecutive ``s3://`` targets are each listed by their source, and an
    ``s3-inventory://`` target takes its listing from the S3 Inventory report it names."""
    # The S3 modules are imported only when a target needs them: boto3 and botocore add
    # ~0.15 s to the start-up of every local scan otherwise.
    for kind, group in groupby(targets, key=_target_kind):
        run = tuple(group)
        if kind == "s3":
            from panscan.sources.s3 import S3Options, enumerate_s3

            yield from enumerate_s3(run, S3Options(latest_only=latest_only, excludes=walk.excludes,
                                                   restore=restore))
        elif kind == "inventory":
            from panscan.sources.aws import client
            from panscan.sources.s3_inventory import enumerate_inventory

            for manifest in run:
                yield from enumerate_inventory(manifest, client, latest_only=latest_only,
                                               excludes=walk.excludes)
        else:
            yield from enumerate_files(run, walk)


def _target_kind(target: str) -> str:
    if target.startswith("s3://"):
        return "s3"
    if target.startswith("s3-inventory://"):
        return "inventory"
    return "path"


def _report_bucket(item: Item, seen: set[str], sink: Sink) -> None:
    """Write the facts of an S3 bucket the first time one of its objects is reported."""
    if item.source != "s3" or not item.location.startswith("s3://"):
        return
    bucket = item.location[len("s3://"):].split("/", 1)[0]
    if not bucket or bucket in seen:
        return
    seen.add(bucket)
    from panscan.sources.aws import client
    from panscan.sources.s3_facts import bucket_facts

    # Bucket names are names like any other: they may hold a number, so every text is masked.
    sink.write_bucket(_masked_record(bucket_facts(client("s3"), bucket).to_record()))


def _masked_record(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _masked_record(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_record(v) for v in value]
    return value


@contextlib.contextmanager
def aws_endpoint(url: str | None) -> Iterator[None]:
    """``AWS_ENDPOINT_URL`` set to ``url`` (when given) for the duration of the scan.

    The environment is how the endpoint reaches the workers: they are forked after this is
    set and botocore reads the variable when each of them builds its client. It is restored
    afterwards so an in-process caller (tests) is left as it was.
    """
    if url is None:
        yield
        return
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous


@contextlib.contextmanager
def open_report(path: Path | None, stdout: TextIO) -> Iterator[TextIO]:
    """``stdout``, or ``path`` created (or truncated) with mode 0600: even masked reports
    are sensitive."""
    if path is None:
        yield stdout
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or type(exc).__name__}") from None
    with open(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as out:
        yield out


class Tally:
    """Running totals for the summary."""

    def __init__(self) -> None:
        self.items: Counter[str] = Counter({str(s): 0 for s in Status})
        self.reasons: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.brands: Counter[str] = Counter()
        self.confidences: Counter[str] = Counter()
        self.findings = 0
        self.test_cards = 0
        self.bytes = 0

    def add(self, result: ItemResult) -> None:
        self.items[str(result.status)] += 1
        if result.status is not Status.COMPLETE and result.reason is not None:
            self.reasons[str(result.reason)] += 1
        self.bytes += result.bytes_scanned
        for f in result.findings:
            self.findings += 1
            self.kinds[str(f.kind)] += 1
            self.brands[f.brand] += 1
            self.confidences[str(f.confidence)] += 1
            self.test_cards += f.test_card

    def exit_status(self, interrupted: bool) -> int:
        if self.findings:
            return EXIT_FOUND
        if interrupted or any(n for s, n in self.items.items() if s != Status.COMPLETE):
            return EXIT_INCOMPLETE
        return EXIT_CLEAN

    def summary(self, duration: float, interrupted: bool, started: datetime) -> Summary:
        complete = not interrupted and all(n == 0 for s, n in self.items.items() if s != Status.COMPLETE)
        return Summary(
            items=dict(self.items), reasons=dict(self.reasons), findings=self.findings,
            by_kind=dict(self.kinds), by_brand=dict(self.brands), by_confidence=dict(self.confidences),
            test_cards=self.test_cards, bytes_scanned=self.bytes, duration_seconds=duration,
            coverage_complete=complete, interrupted=interrupted,
            exit_status=self.exit_status(interrupted), pattern_version=load_patterns().version,
            extra={"started": started.isoformat(timespec="seconds"), "panscan_version": __version__},
        )


def run_scan(opts: ScanOptions, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one scan and return its exit status; raises :class:`UsageError` (exit 3)."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    check_targets(opts.targets)
    started, t0 = datetime.now(UTC), time.monotonic()
    tally = Tally()
    with key_directory(opts.state, opts.no_state) as key_dir, open_report(opts.output, stdout) as out, \
            aws_endpoint(opts.endpoint_url):
        try:
            key = load_or_create_key(key_dir)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use the fingerprint key in {key_dir}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        sink = open_sink(opts.fmt, out, notes=stderr)
        ctx = WorkerContext(key, opts.policy.limits, opts.chunk_size)
        walk = WalkOptions(excludes=opts.excludes + opts.policy.excludes,
                           follow_symlinks=opts.follow_symlinks, one_filesystem=opts.one_filesystem)
        engine = LocalEngine(ctx, opts.workers, split_threshold=opts.split_threshold,
                             range_size=opts.range_size)
        interrupted = False
        with _on_interrupt(engine), Progress(stderr) as progress:
            try:
                with engine:
                    logger.debug("scanning with %d worker processes", engine.workers)
                    seen_buckets: set[str] = set()
                    for result in engine.run(enumerate_targets(opts.targets, walk, opts.latest_only, opts.restore)):
                        _report_bucket(result.item, seen_buckets, sink)
                        masked = mask_result(result)
                        tally.add(masked)
                        sink.write_item(masked)
                        progress.update(masked)
                        if masked.status is not Status.COMPLETE:
                            logger.info("%s: %s %s", masked.item.location, masked.status, masked.reason)
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, still write the summary
                engine.interrupt()
            interrupted = engine.interrupted
        if interrupted:
            logger.warning("interrupted: the report covers the items finished so far")
        summary = tally.summary(time.monotonic() - t0, interrupted, started)
        sink.finish(summary)
    return summary.exit_status


@contextlib.contextmanager
def _on_interrupt(engine: LocalEngine) -> Iterator[None]:
    """SIGINT and SIGTERM ask the engine to stop; a second SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if engine.interrupted and signum == signal.SIGINT:
            raise KeyboardInterrupt
        engine.interrupt()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
