"""Orchestration of one scan: sources → engine → masking → sinks, summary and exit status.

Exit status (DESIGN.md): 0 nothing found and coverage complete; 1 card data found; 2 no
card data found but coverage incomplete (an item partial, in error, or skipped for a reason
other than the deliberate ones of ``model.LEFT_OUT_ON_PURPOSE``, or the scan interrupted);
3 usage or configuration error (:class:`UsageError`, raised before anything is scanned).
Card data wins over incomplete coverage: a scan that found numbers exits 1 even when
interrupted.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from itertools import chain, groupby
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from panscan import __version__
from panscan.config import Policy
from panscan.engine.local import RANGE_SIZE, SPLIT_THRESHOLD, LocalEngine
from panscan.engine.progress import Progress
from panscan.engine.stdin import STDIN_TARGET, scan_stdin
from panscan.engine.suppress import Triage
from panscan.engine.sweep import Sweep
from panscan.engine.worker import WorkerContext, name_findings
from panscan.findings.mask import load_or_create_key, mask_result, mask_text
from panscan.match.matcher import CHUNK_SIZE
from panscan.match.patterns import load_patterns
from panscan.model import Finding, Item, ItemResult, Reason, RetentionVerdict, Status
from panscan.sinks.base import Sink, Summary, open_sink
from panscan.sinks.output import ReportStream, open_report_file
from panscan.sinks.tee import TeeSink
from panscan.sources.files import WalkOptions, enumerate_files
from panscan.state import State, StateError

if TYPE_CHECKING:
    from panscan.sources.glacier import GlacierOptions

logger = logging.getLogger(__name__)

EXIT_CLEAN, EXIT_FOUND, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2, 3
STATE_FILE = "state.db"


class UsageError(Exception):
    """The scan cannot start as asked (exit status 3); the message is for the user."""


class OutputError(Exception):
    """A report, the evidence bundle or the state database could not be written (a full disk,
    ``/dev/full``, a closed pipe, an I/O error). The message is one line naming what and the OS
    reason; ``status`` is the exit status (see :func:`after_failed_write`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def after_failed_write(status: int | None) -> int:
    """The exit status of a run whose results could not all be written: a failed write never
    hides card data (or data past retention) that was found, so 1 stays 1; anything else is
    2, since the results are incomplete where they were meant to be."""
    return EXIT_FOUND if status == EXIT_FOUND else EXIT_INCOMPLETE


@dataclass(frozen=True)
class ScanOptions:
    """A scan as the CLI asked for it; plain data.

    ``state`` is the state database path; the fingerprint key lives in its directory.
    ``None`` means ``state.db`` in the default state directory, ``no_state`` no database and
    a temporary key directory removed when the scan ends. ``latest_only``
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
    tags: bool = False  # S3: scan each version's tags too (one GetObjectTagging per version)
    endpoint_url: str | None = None
    split_threshold: int = SPLIT_THRESHOLD
    range_size: int = RANGE_SIZE
    as_of: float | None = None  # judge retention as of this time (POSIX seconds); None: now
    # Glacier: start archive-retrieval jobs (tier from ``restore``), selected by size budget and
    # age; how long to wait for jobs; the question asked before a retrieval is initiated.
    retrieve: bool = False
    max_bytes: int | None = None
    older_than_days: int | None = None
    wait_seconds: float = 0.0
    confirm: Callable[[str], bool] | None = None
    region: str | None = None
    # EBS: scan every mounted filesystem of the volumes attached to this instance (the root
    # volume too with ``include_root``); items and findings carry their volume id.
    volumes: bool = False
    include_root: bool = False
    evidence: Path | None = None  # write a signed evidence bundle into this (new) directory
    engine: str = "local"  # or "dask"
    # Findings below this confidence are counted, not reported (engine.suppress.CONFIDENCES).
    min_confidence: str = "low"
    scheduler: str | None = None  # dask: the scheduler's address; None: a LocalCluster on this machine


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


def state_path(state: Path | None) -> Path:
    """The state database a scan uses: ``--state PATH``, else ``state.db`` in the default
    state directory."""
    return state.expanduser().absolute() if state is not None else default_state_dir() / STATE_FILE


@contextlib.contextmanager
def open_state(path: Path | None, *, must_exist: bool = False) -> Iterator[State | None]:
    """The state database at ``path`` (None: no state), closed at the end; a database that
    cannot be opened, or is missing when ``must_exist`` (commands that only read the state
    never create one), is a usage error (exit 3) before anything is scanned."""
    if path is None:
        yield None
        return
    if must_exist and not path.exists():
        raise UsageError(f"no state database at {path} (run a scan first, or give --state PATH)")
    try:
        state = State.open(path)
    except StateError as exc:
        raise UsageError(str(exc)) from None
    try:
        yield state
    finally:
        state.close()


def check_targets(targets: tuple[str, ...], *, stdin: bool = False) -> None:
    """Reject targets that cannot be scanned, before any work (exit 3): a scheme this version
    does not know, a path that does not exist, ``-`` (standard input) given twice or to a
    command that does not read content (``stdin`` False), AWS targets without any AWS
    credentials. "Nothing found" must never stand for "nothing was read"."""
    if STDIN_TARGET in targets:
        if not stdin:
            raise UsageError("- (standard input) has no age to judge, and this command reads metadata only: "
                             "scan it with 'panscan scan -'")
        if targets.count(STDIN_TARGET) > 1:
            raise UsageError("- (standard input) can be given only once")
    for target in targets:
        if target == STDIN_TARGET:
            continue
        scheme, sep, _ = target.partition("://")
        if scheme in ("s3-inventory", "glacier") and sep:
            from panscan.sources.glacier import parse_glacier_url
            from panscan.sources.s3_inventory import parse_inventory_url

            try:
                (parse_glacier_url if scheme == "glacier" else parse_inventory_url)(target)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            continue
        if sep and scheme.isidentifier() and scheme != "s3":
            # Only the scheme is echoed: the rest of a target is a name that may hold a number.
            raise UsageError(f"{scheme}:// targets are not supported; panscan scans local paths, s3://, "
                             "s3-inventory:// and glacier:// targets")
        if _target_kind(target) == "path":
            _check_path(target)
    if any(_target_kind(t) != "path" for t in targets if t != STDIN_TARGET):
        from panscan.sources.aws import credentials_missing

        missing = credentials_missing()
        if missing is not None:
            raise UsageError(f"{missing} (nothing was scanned)")


def _check_path(target: str) -> None:
    """A local target that does not exist is a usage error. One that exists but cannot be
    read (no permission) is left to the walk, which reports it as an item with its reason."""
    try:
        os.stat(target)  # command-line links are followed, as the walk does
    except (FileNotFoundError, NotADirectoryError) as exc:
        why = ("a symbolic link to a path that does not exist" if os.path.islink(target)
               else exc.strerror or "does not exist")
        raise UsageError(f"target {target}: {why} (nothing was scanned)") from None
    except (OSError, ValueError):  # ValueError: a NUL in the name; the walk says so
        return


def enumerate_targets(targets: tuple[str, ...], walk: WalkOptions, latest_only: bool = False,
                      restore: str | None = None,
                      restore_pending: Callable[[Item], bool] | None = None, *,
                      glacier: GlacierOptions | None = None,
                      state: State | None = None, waiting: bool = False) -> Iterator[Item | ItemResult | None]:
    """The records of every target, in the order given; runs of consecutive local paths and
    of consecutive ``s3://`` targets are each listed by their source, and an
    ``s3-inventory://`` target takes its listing from the S3 Inventory report it names.
    With ``waiting``, None stands in for a record while a listing waits for an answer (see
    ``S3Options.waiting``); never without it."""
    # The S3 modules are imported only when a target needs them: boto3 and botocore add
    # ~0.15 s to the start-up of every local scan otherwise.
    for kind, group in groupby(targets, key=_target_kind):
        run = tuple(group)
        if kind == "s3":
            from panscan.sources.s3 import S3Options, enumerate_s3

            yield from enumerate_s3(run, S3Options(latest_only=latest_only, excludes=walk.excludes,
                                                   restore=restore, restore_pending=restore_pending,
                                                   waiting=waiting))
        elif kind == "inventory":
            from panscan.sources.aws import client
            from panscan.sources.s3_inventory import enumerate_inventory

            for manifest in run:
                yield from enumerate_inventory(manifest, client, latest_only=latest_only,
                                               excludes=walk.excludes)
        elif kind == "glacier":
            from panscan.sources.glacier import GlacierOptions as Options
            from panscan.sources.glacier import enumerate_glacier

            yield from enumerate_glacier(run, glacier or Options(), state)
        else:
            yield from enumerate_files(run, walk)


def normalised_scope(targets: tuple[str, ...], excludes: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``targets`` (each once, in the order given) and ``excludes`` spelled one way whatever way
    the user spelled them, so ``examples``, ``examples/`` and ``/abs/examples`` are one sweep
    scope and their items have the same locations (findings are "still present", not "new").

    A local path becomes absolute and normalised (``os.path.abspath``: no trailing slash, no
    ``.``; links are not resolved, as the walk reports locations under the path it was given);
    ``s3://bucket/`` and ``glacier://vault/`` lose the slash (a longer prefix keeps it: ``logs/``
    and ``logs`` list different keys). A relative exclude glob naming a path (with a ``/``, not
    starting with a wildcard) is anchored at the current directory, as relative targets are,
    so it matches the locations it matched when they were spelled relative."""
    return tuple(dict.fromkeys(_normalised_target(t) for t in targets)), tuple(_anchored(g) for g in excludes)


def _normalised_target(target: str) -> str:
    if target == STDIN_TARGET:
        return target
    kind = _target_kind(target)
    if kind in ("s3", "glacier"):
        scheme, _, rest = target.partition("://")
        if rest.endswith("/") and rest.count("/") == 1 and len(rest) > 1:
            return f"{scheme}://{rest[:-1]}"
        return target
    if kind != "path" or "://" in target:  # another scheme's target is no local path
        return target
    return _absolute(target)


def _anchored(glob: str) -> str:
    if "/" not in glob or glob.startswith(("/", "*", "?", "[")) or "://" in glob:
        return glob
    return _absolute(glob)


def _absolute(path: str) -> str:
    try:
        return os.path.abspath(path)
    except (OSError, ValueError):  # no current directory (removed), a NUL in the name: the walk says so
        return path


def _target_kind(target: str) -> str:
    if target.startswith("glacier://"):
        return "glacier"
    if target.startswith("s3://"):
        return "s3"
    if target.startswith("s3-inventory://"):
        return "inventory"
    return "path"


def _unreachable(result: ItemResult) -> bool:
    """Whether ``result`` is a bucket whose listing failed in transport (no answer from the
    endpoint, after every retry): asking for its facts would only wait as long again, per
    fact. A refusal (AccessDenied) is no such failure: the facts may still be readable."""
    return (result.item.source == "s3" and result.status is Status.ERROR and result.reason is Reason.READ_ERROR
            and result.item.version_id is None and result.item.size is None)


def _report_bucket(item: Item, seen: set[str], sink: Sink, sweep: Sweep | None = None) -> None:
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
    record = masked_record(bucket_facts(client("s3"), bucket).to_record())
    sink.write_bucket(record)
    if sweep is not None:
        sweep.record_bucket(record)


def masked_record(value: Any) -> Any:
    """``value`` (a JSON-like record) with every string masked, keys included (a summary
    keyed by place names a bucket or a directory, which may hold a number)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {mask_text(k) if isinstance(k, str) else k: masked_record(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked_record(v) for v in value]
    return value


@contextlib.contextmanager
def aws_endpoint(url: str | None, region: str | None = None) -> Iterator[None]:
    """``AWS_ENDPOINT_URL`` (and the region, when given) set for the duration of the scan;
    see :func:`_environment`."""
    with _environment("AWS_ENDPOINT_URL", url), _environment("AWS_REGION", region), \
            _environment("AWS_DEFAULT_REGION", region):
        yield


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """The variable ``name`` set to ``value`` (when given) for the duration of the scan.

    The environment is how the endpoint and region reach the workers: they are forked after
    this is set and botocore reads the variables when each of them builds its client. It is
    restored afterwards so an in-process caller (tests) is left as it was.
    """
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def open_report(path: Path | None, stdout: TextIO) -> Iterator[ReportStream]:
    """The stream of a report: ``stdout``, or ``path`` as :func:`sinks.output.open_report_file`
    opens it (a new file mode 0600, an existing file or device left with its mode and owner).

    A path that cannot be opened is a usage error (exit 3: nothing was done yet). A write that
    fails later is recorded by the stream, never raised at the writer; when the block ends
    normally with a failure no caller took (:meth:`ReportStream.take_failure`), it raises
    :class:`OutputError` with :func:`after_failed_write` of the ``exit_status`` the caller
    set on the stream.
    """
    if path is None:
        stream = ReportStream(stdout, "standard output")
    else:
        try:
            stream = open_report_file(path)
        except OSError as exc:
            raise UsageError(f"cannot write the report to {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        yield stream
    finally:
        stream.close()
    if stream.unhandled is not None:
        raise OutputError(stream.unhandled, after_failed_write(stream.exit_status))


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
        self.expired_items = 0
        self.expired_bytes = 0
        self.expired_with_card_data = 0
        self.findings_past_retention = 0
        self.expired_by_rule: Counter[str] = Counter()
        self.changes: Counter[str] = Counter()
        self.left_out = 0  # items skipped on purpose (model.LEFT_OUT_ON_PURPOSE): no gap in coverage

    def add(self, result: ItemResult, verdict: RetentionVerdict | None = None) -> None:
        """Count one item, and the findings its result holds (see :meth:`add_findings`)."""
        self.left_out += result.left_out_on_purpose
        if verdict is not None:
            self.expired_items += 1
            self.expired_bytes += verdict.size or 0
            self.expired_by_rule[verdict.rule] += 1
            if result.findings_total:
                self.expired_with_card_data += 1
        self.items[str(result.status)] += 1
        if result.status is not Status.COMPLETE and result.reason is not None:
            self.reasons[str(result.reason)] += 1
        self.bytes += result.bytes_scanned
        self.add_findings(result.findings, verdict is not None)

    def add_findings(self, findings: Sequence[Finding], expired: bool) -> None:
        """Count findings: those of a result, or a batch of an item still being scanned."""
        if expired:
            self.findings_past_retention += len(findings)
        for f in findings:
            self.findings += 1
            self.kinds[str(f.kind)] += 1
            self.brands[f.brand] += 1
            self.confidences[str(f.confidence)] += 1
            self.test_cards += f.test_card
            if f.change:
                self.changes[f.change] += 1

    def coverage_complete(self, interrupted: bool) -> bool:
        """Whether everything that should have been read was read: every item complete or left
        out on purpose (an exclude, a link not followed, a FIFO...), and no interruption."""
        not_complete = sum(n for s, n in self.items.items() if s != Status.COMPLETE)
        return not interrupted and not_complete == self.left_out

    def exit_status(self, interrupted: bool) -> int:
        if self.findings or self.expired_items:
            return EXIT_FOUND
        if not self.coverage_complete(interrupted):
            return EXIT_INCOMPLETE
        return EXIT_CLEAN

    def retention(self, as_of: float) -> dict[str, Any]:
        return {"expired_items": self.expired_items, "expired_bytes": self.expired_bytes,
                "expired_with_card_data": self.expired_with_card_data,
                "findings_past_retention": self.findings_past_retention,
                "by_rule": dict(self.expired_by_rule),
                "as_of": datetime.fromtimestamp(as_of, UTC).isoformat(timespec="seconds")}

    def summary(self, duration: float, interrupted: bool, started: datetime) -> Summary:
        complete = self.coverage_complete(interrupted)
        return Summary(
            items=dict(self.items), reasons=dict(self.reasons), findings=self.findings,
            by_kind=dict(self.kinds), by_brand=dict(self.brands), by_confidence=dict(self.confidences),
            test_cards=self.test_cards, bytes_scanned=self.bytes, duration_seconds=duration,
            coverage_complete=complete, interrupted=interrupted,
            exit_status=self.exit_status(interrupted), pattern_version=load_patterns().version,
            extra={"started": started.isoformat(timespec="seconds"), "panscan_version": __version__},
            left_out=self.left_out,
        )


def run_scan(opts: ScanOptions, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one scan and return its exit status; raises :class:`UsageError` (exit 3) before
    anything is scanned, :class:`OutputError` when the report, the evidence bundle or the state
    could not be written (its status keeps a 1 when card data was found)."""
    tally = Tally()
    try:
        return _run_scan(opts, tally, stdout if stdout is not None else sys.stdout,
                         stderr if stderr is not None else sys.stderr)
    except StateError as exc:  # unwritable mid-sweep (a full disk): what was committed stays
        found = EXIT_FOUND if tally.findings or tally.expired_items else EXIT_INCOMPLETE
        raise OutputError(f"{exc}; the sweep did not complete", after_failed_write(found)) from None


def _run_scan(opts: ScanOptions, tally: Tally, stdout: TextIO, stderr: TextIO) -> int:
    check_targets(opts.targets, stdin=True)
    opts = _normalised_options(opts)
    plan = plan_volumes(opts.include_root) if opts.volumes else None
    volumes = list(plan.volumes) if plan is not None else []
    mounted = dict(plan.mounted) if plan is not None else {}
    if plan is not None and not mounted:
        logger.warning("no mounted EBS volume to scan (see 'panscan volumes')")
    opts = replace(opts, targets=opts.targets + tuple(m for m in mounted if m not in opts.targets))
    started, t0 = datetime.now(UTC), time.monotonic()
    now = opts.as_of if opts.as_of is not None else started.timestamp()
    db = None if opts.no_state else state_path(opts.state)
    reads_stdin = STDIN_TARGET in opts.targets
    listed_targets = tuple(t for t in opts.targets if t != STDIN_TARGET)
    if opts.evidence is not None and opts.no_state:
        raise UsageError("--evidence needs the state's key to sign the bundle (and to verify it later): "
                         "use --state PATH, not --no-state")
    with key_directory(opts.state, opts.no_state) as key_dir, open_state(db) as state, \
            open_report(opts.output, stdout) as out, aws_endpoint(opts.endpoint_url, opts.region), \
            contextlib.ExitStack() as stack:
        try:
            key = load_or_create_key(key_dir)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use the fingerprint key in {key_dir}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        bundle, bundle_files = stack.enter_context(evidence_sinks(opts, key)) if opts.evidence else ([], [])
        outputs = [out, *bundle_files]
        sink: Sink = open_sink(opts.fmt, out, notes=stderr, policy=opts.policy)
        if bundle:
            sink = TeeSink([sink, *bundle])
        ctx = WorkerContext(key, opts.policy.limits, opts.chunk_size, tags=opts.tags)
        walk = WalkOptions(excludes=opts.excludes + opts.policy.excludes,
                           follow_symlinks=opts.follow_symlinks, one_filesystem=opts.one_filesystem,
                           name_findings=partial(name_findings, key=key))
        pattern_version = load_patterns().version
        sweep = _begin_sweep(state, opts, now, pattern_version)
        triage = _begin_triage(opts)
        for volume in volumes:
            sink.write_volume(masked_record(volume.to_record()))
        engine = make_engine(opts, ctx)
        interrupted = False
        stopped_by: str | None = None  # why the scan stopped on its own (credentials refused)
        unwritable: str | None = None  # the first failed write of a report: the scan stops there
        seen_buckets: set[str] = set()
        # Items given to the engine whose result has not come back, by identity: an engine
        # gives back the very Item it was given (hashing a frozen Item costs a tuple of all
        # its fields, several times per item).
        handed: dict[int, Item] = {}
        streamed: Counter[Item] = Counter()  # findings already reported of items still being scanned

        def handle_findings(item: Item, findings: tuple[Finding, ...]) -> None:
            # A batch of a PAN-dense item, before its result: written and counted now, so
            # memory does not grow with the item's findings.
            _report_bucket(item, seen_buckets, sink, sweep)
            streamed[item] += len(findings)
            batch, verdict = sweep.judge_findings(mask_result(ItemResult(item, Status.COMPLETE, findings=findings)))
            sweep.record_findings(batch)  # every finding: the state compares what was found
            shown, suppressed = triage.judge_findings(batch.findings)
            tally.add_findings(shown, verdict is not None)
            sink.write_suppressed(suppressed)
            sink.write_findings(shown)
            check_outputs()

        def check_outputs() -> None:
            # Every later record would be lost as well: scanning on would only cost time. What
            # was recorded in the state stays, and the same command resumes the sweep.
            nonlocal unwritable
            if unwritable is None:
                unwritable = next((o.failure for o in outputs if o.failure), None)
                if unwritable is not None:
                    engine.interrupt()

        def handle(result: ItemResult) -> None:
            nonlocal stopped_by
            if not _unreachable(result):
                _report_bucket(result.item, seen_buckets, sink, sweep)
            masked, verdict = sweep.judge(mask_result(result))
            sweep.record(masked, verdict)  # every finding: the state compares what was found
            shown, suppressed = triage.judge(masked)
            tally.add(shown, verdict)
            sink.write_suppressed(suppressed)
            sink.write_item(shown)
            if verdict is not None:
                sink.write_retention(verdict)
            check_outputs()
            progress.update(masked)
            if masked.status is not Status.COMPLETE:
                logger.info("%s: %s %s", masked.item.location, masked.status, masked.reason)
                if stopped_by is None and masked.item.source != "file":
                    # Expired credentials fail every later request the same way: stop at the
                    # first refusal instead of sending one doomed request per remaining item.
                    from panscan.sources.aws import credentials_problem

                    stopped_by = credentials_problem(masked)
                    if stopped_by is not None:
                        engine.interrupt()

        with _on_interrupt(engine), Progress(stderr) as progress:
            try:
                if reads_stdin:  # read here, by the coordinator: see engine.stdin
                    read = scan_stdin(ctx, lambda: engine.interrupted, handle_findings)
                    streamed.pop(read.item, None)
                    handle(read)
                with engine:
                    logger.debug("scanning with %d worker processes", engine.workers)
                    listed = enumerate_targets(listed_targets, walk, opts.latest_only, opts.restore,
                                               sweep.restore_pending if state is not None else None,
                                               glacier=_glacier_options(opts, now, sweep), state=state,
                                               waiting=True)
                    if mounted:
                        listed = tag_volumes(listed, mounted)
                    if plan is not None and plan.not_scanned:
                        # Each attached volume not read (not mounted, no device, the root one
                        # without --include-root) is an item: a gap in coverage, not a warning.
                        listed = chain(plan.not_scanned, listed)
                    try:
                        for result in engine.run(_handed_out(sweep.skip_unchanged(listed), handed),
                                                 handle_findings):
                            handed.pop(id(result.item), None)
                            carried = 0  # an unchanged dense item's stored findings: read back in batches
                            for batch in sweep.deferred_findings(result):
                                handle_findings(result.item, batch)
                                carried += len(batch)
                            if streamed:
                                streamed.pop(result.item, None)
                            handle(replace(result, earlier_findings=carried) if carried else result)
                    except KeyboardInterrupt:
                        # A second Ctrl-C, wherever the coordinator was (waiting for a listing
                        # page, for a worker): stop now, and account for the items the engine
                        # had taken but not finished.
                        engine.interrupt()
                        for item in list(handed.values()):
                            found = streamed.pop(item, 0)
                            handle(ItemResult(item, Status.PARTIAL if found else Status.SKIPPED, Reason.INTERRUPTED,
                                              "the scan was interrupted", earlier_findings=found))
            except KeyboardInterrupt:  # a second Ctrl-C while the workers start or stop: still the summary
                engine.interrupt()
            interrupted = engine.interrupted
        if stopped_by is not None:
            print(mask_text(f"panscan: error: {stopped_by}"), file=stderr)
        elif interrupted and unwritable is None:
            logger.warning("interrupted: the report covers the items finished so far")
        summary = _finish(sweep, sink, tally, interrupted, started, time.monotonic() - t0, now, triage)
        stack.close()  # the bundle's report files are complete before the manifest is written
        failures = [f for f in (o.take_failure() for o in bundle_files) if f]
        if opts.evidence is not None and not failures:  # never sign a bundle with a hole in it
            try:
                _seal_evidence(opts, key, summary, stderr)
            except OSError as exc:
                failures.append(f"cannot write the evidence bundle {opts.evidence}: {exc.strerror or exc}")
        out.close()  # the report's last bytes: a failure to write them counts like any other
        report_failure = out.take_failure()
        if report_failure is not None:
            failures.insert(0, report_failure)  # the report the user asked for is named first
    if failures:
        raise OutputError(_failure_line(failures[0], unwritable is not None, summary.sweep_id),
                          after_failed_write(summary.exit_status))
    return summary.exit_status


def _normalised_options(opts: ScanOptions) -> ScanOptions:
    """``opts`` with targets and excludes (the command line's and the policy's) spelled one
    way (:func:`normalised_scope`)."""
    targets, excludes = normalised_scope(opts.targets, opts.excludes)
    _, policy_excludes = normalised_scope((), opts.policy.excludes)
    return replace(opts, targets=targets, excludes=excludes, policy=replace(opts.policy, excludes=policy_excludes))


def _failure_line(failure: str, stopped: bool, sweep_id: int | None) -> str:
    """The one line that says a report could not be written, and what became of the scan."""
    if stopped:
        failure += "; the scan stopped there"
    if sweep_id is not None:
        failure += f"; the results are in the state database (panscan report --sweep {sweep_id})"
    return failure


def _handed_out(records: Iterable[Item | ItemResult | None],
                handed: dict[int, Item]) -> Iterator[Item | ItemResult | None]:
    """``records``, each item noted in ``handed`` as the engine takes it."""
    for record in records:
        if isinstance(record, Item):
            handed[id(record)] = record
        yield record


@contextlib.contextmanager
def evidence_sinks(opts: ScanOptions, key: bytes) -> Iterator[tuple[list[Sink], list[ReportStream]]]:
    """The JSON Lines and HTML copies of the report, written into a new bundle directory, and
    the streams of those files (a failure to write one is recorded there, as for the report)."""
    from panscan.evidence import EvidenceError, create_bundle, open_file

    assert opts.evidence is not None
    try:
        directory = create_bundle(opts.evidence)
    except EvidenceError as exc:
        raise UsageError(str(exc)) from None
    with contextlib.ExitStack() as files:
        streams = []
        for name in ("results.jsonl", "report.html"):
            try:
                stream = ReportStream(open_file(directory, name), str(directory / name), owned=True,
                                      label=f"the evidence bundle file {directory / name}")
            except OSError as exc:
                raise UsageError(f"cannot write the evidence bundle {directory}: {exc.strerror or exc}") from None
            streams.append(files.enter_context(contextlib.closing(stream)))
        yield [open_sink("jsonl", streams[0]), open_sink("html", streams[1], policy=opts.policy)], streams


def _seal_evidence(opts: ScanOptions, key: bytes, summary: Summary, stderr: TextIO) -> None:
    from panscan.evidence import open_file, seal

    assert opts.evidence is not None
    if opts.policy.source and Path(opts.policy.source).is_file():
        with open_file(opts.evidence, "policy.toml") as out:
            out.write(Path(opts.policy.source).read_text(encoding="utf-8"))
    patterns = load_patterns()
    with open_file(opts.evidence, "pattern-set.txt") as out:
        out.write(f"pattern set {patterns.version}\n")
    seal(opts.evidence, key, {
        "panscan_version": __version__, "pattern_version": patterns.version,
        "targets": [mask_text(t) for t in opts.targets], "exit_status": summary.exit_status,
        "sweep_id": summary.sweep_id, "policy": "policy.toml" if opts.policy.source else None})
    print(mask_text(f"panscan: evidence bundle written to {opts.evidence} (check it with: panscan verify "
                    f"{opts.evidence})"), file=stderr)


class Engine(Protocol):
    """What the runner needs of an engine (local process pool or Dask cluster)."""

    @property
    def workers(self) -> int: ...

    @property
    def interrupted(self) -> bool: ...

    def interrupt(self) -> None: ...

    def run(self, items: Iterable[Item | ItemResult | None],
            on_findings: Callable[[Item, tuple[Finding, ...]], None] | None = None) -> Iterator[ItemResult]: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def make_engine(opts: ScanOptions, ctx: WorkerContext) -> Engine:
    """The engine the scan runs on; the Dask one needs the ``dask`` extra."""
    if opts.engine != "dask":
        return LocalEngine(ctx, opts.workers, split_threshold=opts.split_threshold, range_size=opts.range_size)
    try:
        from panscan.engine.dask import DaskEngine
    except ImportError:
        raise UsageError("--engine dask needs Dask: pip install 'panscan[dask]'") from None
    return DaskEngine(ctx, opts.scheduler, workers=opts.workers, split_threshold=opts.split_threshold,
                      range_size=opts.range_size)


def plan_volumes(include_root: bool) -> Any:
    """What ``scan --volumes`` does with the EBS volumes attached to this instance
    (``engine.volumes.VolumeScan``); not being on EC2 is a usage error."""
    from panscan.engine.volumes import plan_volume_scan
    from panscan.sources.ebs import DiscoveryError

    try:
        return plan_volume_scan(include_root)
    except DiscoveryError as exc:
        raise UsageError(str(exc)) from None


def tag_volumes(records: Iterator[Item | ItemResult | None],
                mounted: dict[str, str]) -> Iterator[Item | ItemResult | None]:
    """``records`` with the volume id of the mount point each lies under (the longest match)."""
    points = sorted(mounted, key=len, reverse=True)

    def volume_of(location: str) -> str | None:
        for point in points:
            if location == point or location.startswith(point.rstrip("/") + "/"):
                return mounted[point]
        return None

    for record in records:
        if record is None:
            yield record
            continue
        item = record.item if isinstance(record, ItemResult) else record
        volume = volume_of(item.location) if item.source == "file" else None
        if volume is None:
            yield record
        elif isinstance(record, ItemResult):
            yield replace(record, item=replace(item, volume_id=volume))
        else:
            yield replace(item, volume_id=volume)


def _glacier_options(opts: ScanOptions, now: float, sweep: Sweep) -> GlacierOptions | None:
    if not any(t.startswith("glacier://") for t in opts.targets):
        return None
    from panscan.sources.glacier import GlacierOptions

    return GlacierOptions(retrieve=opts.retrieve, tier=opts.restore or "Standard", max_bytes=opts.max_bytes,
                          older_than_days=opts.older_than_days, wait_seconds=opts.wait_seconds,
                          confirm=opts.confirm, now=now, already_scanned=sweep.scanned_before)


def _begin_sweep(state: State | None, opts: ScanOptions, now: float, pattern_version: str) -> Sweep:
    options = {"latest_only": opts.latest_only, "restore": opts.restore,
               "excludes": list(opts.excludes + opts.policy.excludes), "policy": opts.policy.source}
    try:
        return Sweep(state, opts.policy, now, targets=opts.targets, pattern_version=pattern_version,
                     options=options, restore_tier=opts.restore)
    except StateError as exc:
        raise UsageError(str(exc)) from None


def _begin_triage(opts: ScanOptions) -> Triage:
    """The judge of what the reports show (``[[allow]]`` entries, ``--min-confidence``); an
    entry past its ``expires`` date, or one that cannot match, is said on stderr."""
    from panscan.config import expired_allow_warnings, utc_today

    today = utc_today()
    for warning in expired_allow_warnings(opts.policy, today):
        logger.warning("%s", warning)
    if opts.no_state and any(r.fingerprint for r in opts.policy.allow):
        logger.warning("[[allow]] entries by fingerprint match nothing with --no-state: fingerprints are keyed by "
                       "the state's key, and this scan uses a temporary one")
    return Triage.for_scan(opts.policy, opts.min_confidence, today=today)


def _finish(sweep: Sweep, sink: Sink, tally: Tally, interrupted: bool, started: datetime,
            duration: float, now: float, triage: Triage | None = None) -> Summary:
    """Resolved findings, the summary, and the sweep closed in the state."""
    resolved, unverified = sweep.finish(enumeration_complete=not interrupted and tally.items["error"] == 0)
    for finding in resolved:
        sink.write_resolved(finding)
    summary = tally.summary(duration, interrupted, started)
    summary = replace(
        summary, extra={**summary.extra, "targets": sweep.targets},
        retention=tally.retention(now) if sweep.judging else None,
        changes=None if sweep.state is None else {
            "previous_sweep": sweep.previous_id, "new": tally.changes["new"],
            "still_present": tally.changes["still present"], "resolved": len(resolved),
            "unverified": unverified, "unchanged_items": sweep.unchanged},
        sweep_id=sweep.id,
    )
    if triage is not None:  # what was found but not reported, and the [[allow]] entries in force
        summary = replace(summary, **triage.summary_fields())
    sink.finish(summary)
    sweep.close("interrupted" if interrupted else "complete", summary.to_record(), summary.exit_status,
                time.time())
    return summary


@contextlib.contextmanager
def _on_interrupt(engine: Engine) -> Iterator[None]:
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
