"""Amazon S3 Glacier vaults (the ``glacier`` API): archives as ``Item``s, the jobs that make
them readable, and a retrieved archive opened as a file.

Glacier answers nothing about a vault's contents synchronously: its archives are known only
from an *inventory* (the output of an inventory-retrieval job, ready in hours), and an
archive's bytes only from the output of an *archive-retrieval* job, which Glacier keeps for
about 24 hours after the job completes. Jobs outlive a run, so they are recorded in the
state database and collected by a later run (or by ``panscan jobs --collect``).

What callers may rely on:

* :func:`enumerate_glacier` works vault by vault over ``glacier://vault`` targets and
  ``glacier://`` (every vault ListVaults returns in the client's region); a vault named twice
  is listed once. It starts and checks all vaults' jobs first, waits for them together (one
  deadline, ``wait_seconds`` from the call), then yields each vault's records in target order.
* Per vault, first the vault-level records, each an ``ItemResult`` for ``glacier://vault``:
  ``error`` ``PERMISSION_DENIED``/``NOT_FOUND``/``READ_ERROR`` when the vault cannot be used
  (DescribeVault or a job call refused, throttled beyond the retries; the other vaults go on);
  ``skipped`` ``JOB_PENDING`` while the inventory-retrieval job runs; ``error`` ``READ_ERROR``
  when that job failed, or is no longer known to Glacier after one re-initiation (expired
  output or a bad id; the next run starts a new one); ``error`` ``MALFORMED_FILE`` when its
  output is not an inventory.
* Then one plain ``Item`` per archive of the inventory in use, in inventory order: location
  ``glacier://vault/archive-id``, source ``"glacier"``, size, creation date (``last_modified``,
  POSIX seconds), ``etag`` = the archive's SHA256TreeHash, ``description`` (None when empty),
  and ``job_id`` set exactly when a succeeded archive-retrieval job's output is readable now
  (checked with DescribeJob); None means only the description can be scanned. With
  ``retrieve``, an archive without ``job_id`` has ``not_retrieved``: why (its job still runs,
  left out by ``max_bytes`` or ``older_than_days``, not confirmed, ...), which its item's
  detail quotes instead of "use --retrieve".
* Times: ``now`` (``--as-of``) is the reference for ages (``older_than_days``); the clock is
  the reference for how old an inventory is (``INVENTORY_MAX_AGE_DAYS``,
  ``STALE_INVENTORY_DAYS``) and is the collection time stored: judging a week-old inventory
  "1,000 days old" because ages are judged as of a future date would be false.
* The inventory in use is the stored one when it was collected less than
  ``INVENTORY_MAX_AGE_DAYS`` ago, else the one a job delivered in this run. While a
  refresh is pending or has failed, the older stored inventory (if any) is still used, after
  the vault-level record, so the vault's earlier findings are matched against its archives
  instead of vanishing from the sweep. An inventory dated by Glacier more than
  ``STALE_INVENTORY_DAYS`` ago gets one warning naming the vault.
* Descriptions are masked (``findings.mask.mask_text``) before an inventory is stored, so
  ``Item.description`` is the raw text only in the run that collected the inventory; later
  runs that reuse it yield the masked text. Whichever run collects an inventory with a state
  (a scan, or :func:`collect_jobs`), the findings of each raw description are stored with it
  (masked, member :data:`DESCRIPTION_MEMBER`, fingerprinted with the key beside the state
  database), and ``State.last_findings`` gives them to a sweep that has none recorded: they
  are reported even when no scan ever read the raw text.
* Jobs: every job initiated is recorded with ``State.add_job`` at once (never a description);
  outcomes are written back with ``State.update_job``. Without a state, an inventory job is
  still started and waited for (``wait_seconds``), and archive retrievals are started only
  when ``wait_seconds`` is set (their output could not be found by a later run otherwise).
* Retrieval (``retrieve``): archives with no pending or succeeded job (and not
  ``already_scanned``), created more than ``older_than_days`` ago when set, are selected in
  inventory order across vaults until the next one would exceed ``max_bytes``. ``confirm``
  gets :func:`retrieval_estimate`'s text before anything is initiated (it shows it); False
  initiates nothing. Without ``confirm`` (``--yes``) the estimate is logged as a warning
  before the jobs are initiated. Either way it is said once.
* Logs and details name vaults, counts, job start times and AWS error codes; never a
  description or an archive id (archive ids appear only in item locations).
* :func:`open_glacier` reads the item's job output once, front to back (not seekable),
  verifying the tree hash at the end; see :class:`GlacierArchive`. It raises only
  ``SourceError``; reads raise ``OSError`` (:class:`GlacierReadError`).
* :func:`collect_jobs` asks Glacier about every pending job in the state and records the
  outcome; inventories that are ready are fetched and stored, their descriptions' findings
  with them. :func:`unread_retrievals` lists the archives retrieved and not read yet: what
  the next scan of their vault reads.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import urllib3.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from panscan.findings.mask import load_or_create_key, mask_text, to_finding
from panscan.match.matcher import scan_bytes
from panscan.match.patterns import load_patterns
from panscan.model import DESCRIPTION_MEMBER, Finding, Item, ItemResult, Reason, Status
from panscan.sources import aws
from panscan.sources.files import SourceError
from panscan.sources.remote import RemoteFile
from panscan.sources.s3 import RESTORE_PRICES
from panscan.state import GlacierJob, State, StoredInventory, inventory_finding

SCHEME = "glacier://"
SOURCE = "glacier"

logger = logging.getLogger(__name__)

#: How old a stored inventory may be before a new inventory-retrieval job is started.
#: Glacier itself refreshes a vault's inventory about once a day, and only when the vault
#: changed; a week keeps the cost of inventory jobs low while new archives are found weekly.
INVENTORY_MAX_AGE_DAYS = 7
#: An inventory dated (by Glacier) longer ago than this gets a warning: archives added since
#: are not in it.
STALE_INVENTORY_DAYS = 30
#: How long Glacier keeps a completed job's output.
OUTPUT_HOURS = 24
#: Tries at an inventory job that Glacier no longer knows (the first included) before the
#: vault is reported as an error.
INVENTORY_ATTEMPTS = 2
#: The longest an archive retrieval takes (Bulk: 5-12 hours): a succeeded job initiated more
#: than this plus ``OUTPUT_HOURS`` ago has no output left to read.
RETRIEVAL_HOURS = 12

MIB = 1 << 20
#: Archives larger than this are read in Range requests of ``RANGE_BYTES`` (a multiple of
#: 1 MiB), so a cut stream costs at most one range, not the archive.
RANGED_ABOVE = 64 * MIB
RANGE_BYTES = 64 * MIB
#: Range requests made in a row, without a byte of progress, before a read fails.
MAX_RESUMES = 5
#: Polling while waiting: the first pause, doubled after each round up to the last.
POLL_FIRST_SECONDS = 1.0
POLL_MAX_SECONDS = 60.0

TIERS = ("Expedited", "Standard", "Bulk")
_DAY = 86400.0
# Vault names: 1-255 of letters, digits, '_', '-' and '.'.
_VAULT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")

# What a body cut mid-stream looks like (see s3._CUT).
_CUT = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionClosedError,
        urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, http.client.IncompleteRead,
        ConnectionError, TimeoutError)
# A request that failed, or whose (non-streamed) body broke off.
_AWS_ERRORS = (ClientError, BotoCoreError, *_CUT)


@dataclass(frozen=True)
class GlacierOptions:
    """How to treat vaults (see the module docstring); ``tier`` is case-insensitive."""

    retrieve: bool = False
    tier: str = "Standard"
    max_bytes: int | None = None
    older_than_days: int | None = None
    wait_seconds: float = 0.0
    confirm: Callable[[str], bool] | None = None
    now: float = 0.0  # reference time (POSIX seconds); 0 means the time of the call
    # Archives a sweep already scanned completely (e.g. ``State.lookup`` found them): never
    # selected for retrieval again after their job output expired.
    already_scanned: Callable[[Item], bool] | None = None


def is_glacier_target(target: str) -> bool:
    return target.startswith(SCHEME)


def parse_glacier_url(target: str) -> str | None:
    """The vault of ``glacier://vault`` (a trailing ``/`` allowed), None for ``glacier://``.
    ValueError for anything else; the message does not repeat the target."""
    if not is_glacier_target(target):
        raise ValueError("a Glacier target starts with glacier://")
    rest = target[len(SCHEME):]
    if rest.endswith("/"):
        rest = rest[:-1]
    if not rest:
        return None
    if "/" in rest:
        raise ValueError("a Glacier target names a whole vault (glacier://VAULT) or every vault (glacier://); "
                         "archives cannot be named")
    if not _VAULT_NAME.fullmatch(rest):
        raise ValueError("invalid Glacier vault name in a glacier:// target (1-255 letters, digits, '_', '-', '.')")
    return rest


def split_location(location: str) -> tuple[str, str]:
    """``glacier://vault/archive-id`` → (vault, archive id)."""
    if not is_glacier_target(location):
        raise ValueError("not a glacier:// location")
    vault, _, archive_id = location[len(SCHEME):].partition("/")
    return vault, archive_id


# --- enumeration -----------------------------------------------------------------------


@dataclass
class _Vault:
    name: str
    records: list[ItemResult] = field(default_factory=list)
    usable: bool = True  # False: the vault itself could not be used, no archives are yielded
    stored: StoredInventory | None = None
    inventory: StoredInventory | None = None  # the one in use
    job: GlacierJob | None = None  # inventory job still to wait for
    readable: dict[str, str] = field(default_factory=dict)  # archive id → succeeded job id
    running: dict[str, GlacierJob] = field(default_factory=dict)  # archive id → job in progress
    eligible: set[str] = field(default_factory=set)  # archive ids that may be retrieved
    unchecked: int = 0  # archive jobs DescribeJob failed for (the last error in unchecked_why)
    unchecked_why: str = ""
    # archive id → why it was not retrieved in this run although --retrieve was given
    not_retrieved: dict[str, str] = field(default_factory=dict)

    def note(self, reason: Reason, detail: str, status: Status = Status.ERROR) -> None:
        self.records.append(ItemResult(Item(SCHEME + self.name, SOURCE), status, reason, detail))


@dataclass
class _Run:
    glacier: Any
    region: str | None
    state: State | None
    options: GlacierOptions
    tier: str
    now: float  # the reference for ages (--as-of)
    deadline: float
    clock: float = field(default_factory=time.time)  # the reference for how old an inventory is


def enumerate_glacier(targets: Sequence[str], options: GlacierOptions,
                      state: State | None) -> Iterator[Item | ItemResult]:
    """The records of every vault in ``targets`` (see the module docstring)."""
    glacier = aws.client("glacier")
    run = _Run(glacier, glacier.meta.region_name, state, options, normal_tier(options.tier),
               options.now or time.time(), time.monotonic() + max(0.0, options.wait_seconds))
    plan = _plan(run, targets)
    vaults = [v for v in plan if isinstance(v, _Vault)]
    for vault in vaults:
        _guarded(vault, lambda v: _start_inventory(run, v))
    _poll(run, [v for v in vaults if v.job is not None], lambda v: _guarded(v, lambda w: _check_inventory(run, w)))
    for vault in vaults:
        if vault.usable and vault.inventory is None:
            vault.inventory = vault.stored
        if vault.job is not None:
            detail = _pending_detail(vault.job, run.state)
            if vault.inventory is not None:
                detail += f"; archives listed from the inventory collected {_iso(vault.inventory.collected_at)}"
            vault.note(Reason.JOB_PENDING, detail, Status.SKIPPED)
        if vault.inventory is not None:
            _guarded(vault, lambda v: _check_archive_jobs(run, v))
    if options.retrieve:
        _retrieve(run, vaults)
    _poll(run, [(v, a) for v in vaults for a in v.running], lambda pair: _check_archive_job(run, *pair))
    for entry in plan:
        if isinstance(entry, ItemResult):
            yield entry
            continue
        yield from entry.records
        if entry.inventory is not None:
            yield from _archive_items(run, entry)


def normal_tier(tier: str) -> str:
    """``tier`` spelled as Glacier wants it; ValueError for an unknown tier."""
    for known in TIERS:
        if tier.lower() == known.lower():
            return known
    raise ValueError(f"unknown Glacier retrieval tier {tier!r} (Expedited, Standard or Bulk)")


def _plan(run: _Run, targets: Sequence[str]) -> list[_Vault | ItemResult]:
    plan: list[_Vault | ItemResult] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name not in seen:
            seen.add(name)
            plan.append(_Vault(name))

    for target in targets:
        name = parse_glacier_url(target)
        if name is not None:
            add(name)
            continue
        try:
            for page in run.glacier.get_paginator("list_vaults").paginate():
                for vault in page.get("VaultList", ()):
                    add(vault["VaultName"])
        except _AWS_ERRORS as exc:
            reason, why = reason_for(exc)
            plan.append(ItemResult(Item(SCHEME, SOURCE), Status.ERROR, reason, f"ListVaults failed: {why}"))
    return plan


_V = TypeVar("_V")


def _guarded(vault: _Vault, step: Callable[[_Vault], bool | None]) -> bool:
    """Run one step of a vault's work; an AWS error ends the vault's work as an error record.
    True when the vault needs no more polling."""
    try:
        return bool(step(vault))
    except _AWS_ERRORS as exc:
        reason, why = reason_for(exc)
        vault.note(reason, f"Glacier vault {vault.name}: {why}")
        vault.usable = False
        vault.job = None
        vault.inventory = None
        vault.running.clear()
        vault.readable.clear()
        return True


def _poll(run: _Run, pending: list[_V], check: Callable[[_V], bool]) -> None:
    """Check every pending entry (True: done) in rounds until none is left or the deadline."""
    delay = POLL_FIRST_SECONDS
    while pending:
        remaining = run.deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_MAX_SECONDS)
        pending = [p for p in pending if not check(p)]


# --- inventories -----------------------------------------------------------------------


def _stored(vault: str) -> str:
    """A vault's name as the state keeps it: masked, like every name there (a vault may be
    named with a number). Jobs read back from the state are given the real name again by
    the scan that lists the vault; ``panscan jobs --collect`` has only the masked one."""
    return mask_text(vault)


def _start_inventory(run: _Run, vault: _Vault) -> None:
    """Find the vault's inventory, or the job that will deliver it (started if none is)."""
    run.glacier.describe_vault(vaultName=vault.name)  # refused or missing: the vault's error record
    state = run.state
    if state is not None:
        vault.stored = state.inventory(_stored(vault.name), run.region)
        if vault.stored is not None and run.clock - vault.stored.collected_at < INVENTORY_MAX_AGE_DAYS * _DAY:
            vault.inventory = vault.stored
            return
        pending = state.pending_inventory_job(_stored(vault.name), run.region)
        vault.job = None if pending is None else replace(pending, vault=vault.name)
        if vault.job is not None:
            _check_inventory(run, vault)
            return
    vault.job = _initiate_inventory(run.glacier, vault.name, run.region, state, attempts=1)


def _initiate_inventory(glacier: Any, vault: str, region: str | None, state: State | None,
                        attempts: int) -> GlacierJob:
    # No Tier: Glacier applies tiers to archive retrievals only.
    response = glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval", "Format": "JSON"})
    job = GlacierJob(response["jobId"], vault, region, "InventoryRetrieval", None, None, time.time(), "pending",
                     attempts=attempts)
    if state is not None:
        state.add_job(replace(job, vault=_stored(vault)))
    logger.info("Glacier vault %s: inventory-retrieval job started", vault)
    return job


def _check_inventory(run: _Run, vault: _Vault) -> bool:
    """Ask Glacier about the vault's inventory job; collect its output when it succeeded.
    True when nothing is left to wait for."""
    job = vault.job
    assert job is not None
    try:
        status = run.glacier.describe_job(vaultName=vault.name, jobId=job.job_id).get("StatusCode")
    except ClientError as exc:
        if not _unknown(exc):
            raise
        status = None
    if status == "InProgress":
        return False
    vault.job = None
    if status == "Succeeded":
        # The scan loaded the same key before listing anything: reading it cannot fail here.
        key = None if run.state is None else state_key(run.state)
        outcome = _collect_inventory(run.glacier, job, run.state, run.clock, key)
        if isinstance(outcome, StoredInventory):
            vault.inventory = outcome
            return True
        if outcome is not None:
            vault.note(Reason.MALFORMED_FILE, outcome)
            return True
        status = None  # forgotten between DescribeJob and GetJobOutput
    if status is None:  # no longer known: expired output or a bad id
        _update(run.state, job.job_id, "expired", "no longer known to Glacier")
        if job.attempts < INVENTORY_ATTEMPTS:
            vault.job = _initiate_inventory(run.glacier, vault.name, run.region, run.state, job.attempts + 1)
            return False
        vault.note(Reason.READ_ERROR, f"the inventory-retrieval job started {_iso(job.initiated_at)} is no longer "
                                       "known to Glacier (its output expired or the job id is wrong); the next run "
                                       "starts a new one")
        return True
    _update(run.state, job.job_id, "failed", str(status))
    vault.note(Reason.READ_ERROR, f"the inventory-retrieval job started {_iso(job.initiated_at)} ended {status}; "
                                   "the next run starts a new one")
    return True


def state_key(state: State) -> bytes:
    """The fingerprint key a scan with ``state`` uses: the one beside the state database
    (created when missing, as the scan does). OSError or ValueError when it cannot be used."""
    return load_or_create_key(Path(state.path).expanduser().absolute().parent)


def _collect_inventory(glacier: Any, job: GlacierJob, state: State | None, collected_at: float,
                       key: bytes | None) -> StoredInventory | str | None:
    """Fetch a succeeded inventory job's output and store it (descriptions masked, with the
    findings each raw description gave, fingerprinted with ``key``: required with a state)
    with the job marked collected. The inventory with raw descriptions; or a message when the
    output is not an inventory (the job is marked failed); or None when Glacier no longer
    knows the job. Other AWS errors propagate."""
    try:
        response = glacier.get_job_output(vaultName=job.vault, jobId=job.job_id)
        body = response["body"]
        try:
            data = json.loads(body.read())
        finally:
            body.close()
    except ClientError as exc:
        if _unknown(exc):
            return None
        raise
    except ValueError:
        data = None
    try:
        inventory = _parse_inventory(job.vault, job.region, data, collected_at)
    except (KeyError, TypeError, ValueError, AttributeError):
        _update(state, job.job_id, "failed", "malformed inventory output")
        return f"the output of the inventory-retrieval job started {_iso(job.initiated_at)} is not a vault inventory"
    if state is not None:
        assert key is not None
        masked = [_stored_archive(job.vault, a, key) for a in inventory.archives]
        state.store_inventory(_stored(job.vault), job.region, inventory.inventory_date, collected_at, masked)
        state.update_job(job.job_id, status="collected")
    logger.info("Glacier vault %s: inventory collected (%d archives)", job.vault, len(inventory.archives))
    return inventory


def _stored_archive(vault: str, archive: dict[str, Any], key: bytes) -> dict[str, Any]:
    """An inventory entry as the state keeps it: the description masked and, beside it, the
    findings the raw one gave. Nothing can find them in the masked text, and the run that
    collects the inventory may never scan it (``panscan jobs --collect``, a scan stopped
    before it reached the archive)."""
    description = archive["description"]
    if description is None:
        return archive
    entry = {**archive, "description": mask_text(description)}
    findings = description_findings(_item(vault, archive), key)
    if findings:
        entry["description_findings"] = [inventory_finding(f) for f in findings]
    return entry


def description_findings(item: Item, key: bytes) -> tuple[Finding, ...]:
    """The findings of ``item``'s description, as the worker's scan of it makes them (the
    same matcher over the same bytes, member :data:`DESCRIPTION_MEMBER`), with the location
    masked: the raw hits do not leave this function."""
    hits = scan_bytes((item.description or "").encode("utf-8", "surrogateescape"), load_patterns())
    location = mask_text(item.location)
    return tuple(replace(to_finding(hit, item, DESCRIPTION_MEMBER, key), location=location) for hit in hits)


def _parse_inventory(vault: str, region: str | None, data: Any, collected_at: float) -> StoredInventory:
    archives = []
    for entry in data["ArchiveList"]:
        size = entry["Size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("bad archive size")
        archives.append({
            "archive_id": str(entry["ArchiveId"]),
            "description": str(entry.get("ArchiveDescription") or "") or None,
            "creation_date": _parse_time(entry["CreationDate"]),
            "size": size,
            "tree_hash": str(entry["SHA256TreeHash"]).lower(),
        })
    return StoredInventory(vault, region, _parse_time(data["InventoryDate"]), collected_at, archives)


def _parse_time(text: Any) -> float:
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _pending_detail(job: GlacierJob, state: State | None) -> str:
    started = f"inventory-retrieval job started {_iso(job.initiated_at)} is still running"
    if state is None:
        return (f"{started}; without a state database a later run cannot collect it: "
                "use a state (--state) or wait for it (--wait)")
    return f"{started}; run again later or use --wait"


# --- archives --------------------------------------------------------------------------


def _check_archive_jobs(run: _Run, vault: _Vault) -> None:
    """Sort the inventory's archives into readable now, retrieval running, and eligible."""
    assert vault.inventory is not None
    jobs = run.state.archive_jobs(_stored(vault.name)) if run.state is not None else {}
    for archive in vault.inventory.archives:
        archive_id = archive["archive_id"]
        job = jobs.get(archive_id)
        if job is None or job.status not in ("pending", "succeeded"):
            vault.eligible.add(archive_id)
            continue
        vault.running[archive_id] = job
        _check_archive_job(run, vault, archive_id)


def _check_archive_job(run: _Run, vault: _Vault, archive_id: str) -> bool:
    """DescribeJob for the archive's job; True when it no longer runs."""
    job = vault.running[archive_id]
    try:
        status = run.glacier.describe_job(vaultName=vault.name, jobId=job.job_id).get("StatusCode")
    except _AWS_ERRORS as exc:
        if not (isinstance(exc, ClientError) and _unknown(exc)):
            # Outcome unknown (throttled, refused): neither readable nor retried this run.
            vault.unchecked += 1
            vault.unchecked_why = reason_for(exc)[1]
            vault.not_retrieved[archive_id] = f"its retrieval job could not be checked: {vault.unchecked_why}"
            del vault.running[archive_id]
            return True
        status = None
    if status == "InProgress":
        return False
    del vault.running[archive_id]
    if status == "Succeeded":
        if job.status != "succeeded":
            _update(run.state, job.job_id, "succeeded")
        vault.readable[archive_id] = job.job_id
    elif status is None:
        _update(run.state, job.job_id, "expired", "no longer known to Glacier")
        vault.eligible.add(archive_id)
    else:
        _update(run.state, job.job_id, "failed", str(status))
        vault.eligible.add(archive_id)
    return True


def _item(vault: str, archive: dict[str, Any], job_id: str | None = None) -> Item:
    return Item(location=f"{SCHEME}{vault}/{archive['archive_id']}", source=SOURCE, size=archive["size"],
                last_modified=archive["creation_date"], etag=archive["tree_hash"],
                description=archive["description"] or None, job_id=job_id)


def _archive_items(run: _Run, vault: _Vault) -> Iterator[Item]:
    inventory = vault.inventory
    assert inventory is not None
    age = run.clock - inventory.inventory_date
    if age > STALE_INVENTORY_DAYS * _DAY:
        logger.warning("Glacier vault %s: the inventory is %d days old; archives added since are not listed",
                       vault.name, age // _DAY)
    if vault.unchecked:
        logger.warning("Glacier vault %s: %d archive-retrieval jobs could not be checked (%s); their archives "
                       "are listed as not retrieved", vault.name, vault.unchecked, vault.unchecked_why)
    for archive in inventory.archives:
        archive_id = archive["archive_id"]
        job_id = vault.readable.get(archive_id)
        item = _item(vault.name, archive, job_id)
        if job_id is None and run.options.retrieve:
            item = replace(item, not_retrieved=_not_retrieved(vault, archive_id))
        yield item


def _not_retrieved(vault: _Vault, archive_id: str) -> str | None:
    """Why an archive has no readable output although --retrieve was given; None when it was
    not a candidate (scanned completely by an earlier sweep: that result is reported)."""
    running = vault.running.get(archive_id)
    if running is not None:
        return f"its {running.tier or 'Standard'} retrieval job started {_iso(running.initiated_at)} is still running"
    return vault.not_retrieved.get(archive_id)


# --- retrieval -------------------------------------------------------------------------


#: Why an archive was not retrieved although --retrieve was given (quoted by its item's detail).
NO_STATE = "--retrieve needs a state database (--state) or --wait: without one a later run could not find the output"
NOT_CONFIRMED = "retrieval not confirmed: answer y at the prompt, or pass --yes"


def _retrieve(run: _Run, vaults: list[_Vault]) -> None:
    options = run.options
    if run.state is None and options.wait_seconds <= 0:
        logger.warning("Glacier: --retrieve needs a state database (or --wait): without one the jobs' output "
                       "could not be found later; no archive retrieval initiated")
        _left_out([(v, a) for v in vaults for a in v.eligible], NO_STATE)
        return
    selected = _select(run, vaults)
    if not selected:
        return
    estimate = retrieval_estimate([item for _, item in selected], run.tier)
    if options.confirm is None:
        logger.warning("%s", estimate)  # --yes: said before anything is sent, and only here
    elif not options.confirm(estimate):  # the prompt showed the estimate
        logger.warning("Glacier: archive retrievals not initiated (not confirmed)")
        _left_out([(v, split_location(item.location)[1]) for v, item in selected], NOT_CONFIRMED)
        return
    for vault in vaults:
        chosen = [item for v, item in selected if v is vault]
        if chosen:
            _initiate_archives(run, vault, chosen)


def _left_out(archives: Iterable[tuple[_Vault, str]], why: str) -> None:
    for vault, archive_id in archives:
        vault.not_retrieved[archive_id] = why


def _select(run: _Run, vaults: list[_Vault]) -> list[tuple[_Vault, Item]]:
    """The archives to retrieve (see the module docstring); each eligible archive left out
    says why in ``_Vault.not_retrieved``."""
    options = run.options
    cutoff = None if options.older_than_days is None else run.now - options.older_than_days * _DAY
    total = 0
    full = False  # in inventory order, the first archive that does not fit ends the selection
    selected: list[tuple[_Vault, Item]] = []
    for vault in vaults:
        if vault.inventory is None:
            continue
        for archive in vault.inventory.archives:
            archive_id = archive["archive_id"]
            if archive_id not in vault.eligible:
                continue
            if cutoff is not None and archive["creation_date"] >= cutoff:
                vault.not_retrieved[archive_id] = (f"created less than {options.older_than_days} days ago: "
                                                   "left out by --older-than")
                continue
            item = _item(vault.name, archive)
            if options.already_scanned is not None and options.already_scanned(item):
                continue
            full = full or (options.max_bytes is not None and total + archive["size"] > options.max_bytes)
            if full:
                vault.not_retrieved[archive_id] = (f"left out by --max-bytes {_gib(options.max_bytes or 0)}: "
                                                   "a later run with --retrieve can retrieve it")
                continue
            total += archive["size"]
            selected.append((vault, item))
    return selected


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def _initiate_archives(run: _Run, vault: _Vault, items: list[Item]) -> list[Item]:
    initiated: list[Item] = []
    for item in items:
        archive_id = split_location(item.location)[1]
        try:
            response = run.glacier.initiate_job(vaultName=vault.name, jobParameters={
                "Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": run.tier})
        except _AWS_ERRORS as exc:
            # Throttled beyond the retries, a retrieval policy or no expedited capacity: the
            # rest of this vault would fail the same way.
            why = reason_for(exc)[1]
            logger.warning("Glacier vault %s: archive retrieval stopped after %d of %d jobs (%s)", vault.name,
                           len(initiated), len(items), why)
            _left_out([(vault, split_location(i.location)[1]) for i in items[len(initiated):]],
                      f"its retrieval job could not be initiated: {why}")
            break
        previous = run.state.job_for_archive(_stored(vault.name), archive_id) if run.state is not None else None
        job = GlacierJob(response["jobId"], vault.name, run.region, "ArchiveRetrieval", archive_id, run.tier,
                         time.time(), "pending", attempts=1 if previous is None else previous.attempts + 1,
                         size=item.size, description=None)
        if run.state is not None:
            run.state.add_job(replace(job, vault=_stored(vault.name)))
        vault.eligible.discard(archive_id)
        vault.running[archive_id] = job
        initiated.append(item)
    return initiated


def retrieval_estimate(archives: list[Item], tier: str) -> str:
    """What retrieving ``archives`` at ``tier`` costs and takes, at us-east-1 list prices."""
    tier = normal_tier(tier)
    per_gb, per_k, when = RESTORE_PRICES.get(("GLACIER", tier), (0.0, 0.0, "unknown"))
    total = sum(a.size or 0 for a in archives)
    vaults = {split_location(a.location)[0] for a in archives}
    cost = per_gb * total / 1e9 + per_k * len(archives) / 1000
    return (f"Glacier archive retrieval of {_plural(len(archives), 'archive')} in {_plural(len(vaults), 'vault')} "
            f"({_gib(total)}, {tier} tier): about ${cost:.2f} at us-east-1 list prices; ready in {when}, "
            f"then readable for {OUTPUT_HOURS} hours")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- collecting jobs -------------------------------------------------------------------


def collect_jobs(state: State, now: float) -> list[str]:
    """Ask Glacier about every pending job in ``state`` and record the outcome: inventories
    that are ready are fetched and stored with the findings of their descriptions, as a scan
    stores them (the job becomes 'collected'; it stays pending when the fingerprint key
    beside the state cannot be used, for the next scan to collect), archive retrievals
    that are ready become 'succeeded' (the next scan reads them), failed ones 'failed', ones
    Glacier no longer knows 'expired'. One line per job, naming the vault, the job's kind and
    start time and a short job id: never a description or an archive id."""
    lines = []
    key: bytes | str | None = None  # the fingerprint key, or why it cannot be used
    for job in state.jobs():
        label = (f"vault {job.vault}: {'inventory' if job.action == 'InventoryRetrieval' else 'archive'}-retrieval "
                 f"job {job.job_id[:12]}... started {_iso(job.initiated_at)}")
        if "*" in job.vault:  # masked (see _stored): vault names never hold "*"
            lines.append(f"{label}: not collected here: the vault's name holds a card number and the state keeps "
                         "it masked; scan the vault by name (glacier://VAULT) to collect it")
            continue
        if job.action == "InventoryRetrieval":
            key = _usable_key(state) if key is None else key
            if isinstance(key, str):
                # Stored without the findings of its descriptions, they would be lost: the
                # next scan collects the inventory itself instead.
                lines.append(f"{label}: not collected here: {key}; the next scan of the vault collects it")
                continue
        glacier = aws.client("glacier", region=job.region)
        try:
            lines.append(f"{label}: {_collect_one(glacier, state, job, now, key)}")
        except _AWS_ERRORS as exc:
            lines.append(f"{label}: could not ask Glacier ({reason_for(exc)[1]}); still pending")
    return lines


def unread_retrievals(state: State, now: float) -> list[GlacierJob]:
    """The succeeded archive-retrieval jobs in ``state`` whose archive no scan has read
    completely since (with this pattern set), oldest first: what the next scan of each vault
    reads. Jobs initiated more than ``RETRIEVAL_HOURS + OUTPUT_HOURS`` before ``now`` are left
    out (Glacier no longer has their output; the next scan with --retrieve asks again)."""
    version = load_patterns().version
    archives: dict[tuple[str, str | None], dict[str, dict[str, Any]]] = {}
    unread = []
    for job in state.jobs(pending_only=False):
        if job.action != "ArchiveRetrieval" or job.status != "succeeded" or job.archive_id is None:
            continue
        if now - job.initiated_at > (RETRIEVAL_HOURS + OUTPUT_HOURS) * 3600:
            continue
        where = (job.vault, job.region)
        if where not in archives:  # one inventory read per vault, not one per job
            inventory = state.inventory(job.vault, job.region)
            archives[where] = {a["archive_id"]: a for a in inventory.archives} if inventory else {}
        archive = archives[where].get(job.archive_id)
        if archive is not None:
            item = _item(job.vault, archive)
            if state.lookup(replace(item, location=mask_text(item.location)), version) is not None:
                continue  # read by a scan since it was retrieved
        unread.append(job)
    return unread


def _usable_key(state: State) -> bytes | str:
    """The state's fingerprint key, or a line saying why it cannot be used."""
    try:
        return state_key(state)
    except (OSError, ValueError) as exc:
        return (f"cannot use the fingerprint key beside the state database "
                f"({getattr(exc, 'strerror', None) or exc})")


def _collect_one(glacier: Any, state: State, job: GlacierJob, now: float, key: bytes | str | None) -> str:
    try:
        status = glacier.describe_job(vaultName=job.vault, jobId=job.job_id).get("StatusCode")
    except ClientError as exc:
        if not _unknown(exc):
            raise
        status = None
    if status == "InProgress":
        return "still running"
    if status == "Succeeded" and job.action == "InventoryRetrieval":
        assert isinstance(key, bytes)
        outcome = _collect_inventory(glacier, job, state, now, key)
        if isinstance(outcome, StoredInventory):
            return f"inventory collected ({len(outcome.archives)} archives)"
        if outcome is not None:
            return "failed: the output is not a vault inventory"
        status = None
    if status == "Succeeded":
        state.update_job(job.job_id, status="succeeded")
        return f"succeeded; the next scan reads the archive (output kept {OUTPUT_HOURS} hours)"
    if status is None:
        state.update_job(job.job_id, status="expired", detail="no longer known to Glacier")
        return "expired: no longer known to Glacier"
    state.update_job(job.job_id, status="failed", detail=str(status))
    return f"failed ({status})"


# --- errors ----------------------------------------------------------------------------


def reason_for(exc: Exception) -> tuple[Reason, str]:
    """The reason code for a failed Glacier call and a short explanation naming the error
    code only (Glacier's messages quote ARNs and ids).

    AccessDenied, and credentials AWS refuses as expired or cannot find, ``PERMISSION_DENIED``
    (the latter worded so that the scan stops at the first, see ``aws.credentials_problem``);
    a missing vault (ResourceNotFoundException, moto's VaultNotFound, 404) ``NOT_FOUND``;
    anything else (throttling or 5xx beyond the retries, an unreachable endpoint, a refused
    parameter) ``READ_ERROR``.
    """
    refused = aws.credentials_refused(exc)
    if refused is not None:
        return Reason.PERMISSION_DENIED, aws.credentials_detail(*refused)
    if not isinstance(exc, ClientError):
        return Reason.READ_ERROR, f"request failed ({type(exc).__name__})"
    code = str(exc.response.get("Error", {}).get("Code") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("AccessDeniedException", "AccessDenied") or status == 403:
        return Reason.PERMISSION_DENIED, f"{code or status}: access denied"
    if code in ("ResourceNotFoundException", "VaultNotFound") or status == 404:
        return Reason.NOT_FOUND, f"{code or status}: not found"
    return Reason.READ_ERROR, f"{code or status}: request failed"


def _unknown(exc: ClientError) -> bool:
    """A job Glacier does not know (any more): DescribeJob's and GetJobOutput's 404."""
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(code == "ResourceNotFoundException" or status == 404)


def _update(state: State | None, job_id: str, status: str, detail: str | None = None) -> None:
    if state is not None:
        state.update_job(job_id, status=status, detail=detail)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- tree hash -------------------------------------------------------------------------


class TreeHash:
    """Glacier's SHA-256 tree hash, fed incrementally: SHA-256 of each 1 MiB leaf, then
    adjacent pairs hashed together level by level (an odd last node moves up unchanged).
    Memory is one digest per level (O(log n)), whatever the size."""

    def __init__(self) -> None:
        self._leaf = hashlib.sha256()
        self._leaf_len = 0
        # Completed subtrees, left to right: (level, digest); levels strictly decrease.
        self._stack: list[tuple[int, bytes]] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            take = min(MIB - self._leaf_len, len(view))
            self._leaf.update(view[:take])
            self._leaf_len += take
            view = view[take:]
            if self._leaf_len == MIB:
                self._push(self._leaf.digest())
                self._leaf = hashlib.sha256()
                self._leaf_len = 0

    def _push(self, digest: bytes) -> None:
        level = 0
        while self._stack and self._stack[-1][0] == level:
            digest = hashlib.sha256(self._stack.pop()[1] + digest).digest()
            level += 1
        self._stack.append((level, digest))

    def hexdigest(self) -> str:
        nodes = [d for _, d in self._stack]
        if self._leaf_len or not nodes:  # a partial last leaf, or no data at all: sha256(b"")
            nodes.append(self._leaf.digest())
        # Folding from the right joins the unfinished subtrees exactly as the level-by-level
        # pairing does: each is a complete power-of-two subtree, larger ones to the left.
        digest = nodes[-1]
        for left in reversed(nodes[:-1]):
            digest = hashlib.sha256(left + digest).digest()
        return digest.hex()


def tree_hash(data_chunks: Iterable[bytes]) -> str:
    """The SHA-256 tree hash (hex) of the concatenated chunks, as Glacier defines it; chunks
    may have any size."""
    hasher = TreeHash()
    for chunk in data_chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


# --- opening ---------------------------------------------------------------------------


class GlacierReadError(OSError):
    """A read that failed after the archive was opened (the worker turns ``OSError`` from a
    read into ``READ_ERROR`` with ``strerror`` as the explanation)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(errno.EIO, detail)
        self.reason = reason


def open_glacier(item: Item) -> BinaryIO:
    """The output of ``item.job_id`` (a succeeded archive-retrieval job) open for reading;
    see :class:`GlacierArchive`. The first GetJobOutput is sent here, so an expired or unknown
    job is a ``SourceError`` (``SOURCE_OBJECT_NO_LONGER_AVAILABLE``) before any byte is read;
    an item without a job is ``INVALID_OBJECT_STATE``. The caller closes the file."""
    vault, _ = split_location(item.location)
    if item.job_id is None:
        raise SourceError(Reason.INVALID_OBJECT_STATE,
                          "the archive's content has not been retrieved from Glacier (use --retrieve)")
    return cast(BinaryIO, GlacierArchive(aws.client("glacier"), vault, item))


def _open_reason(exc: Exception) -> tuple[Reason, str]:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        # GetJobOutput of a job whose output is gone: 404 once Glacier forgot the job,
        # InvalidParameterValueException ("not currently available") before that.
        if _unknown(exc) or code == "InvalidParameterValueException":
            return (Reason.SOURCE_OBJECT_NO_LONGER_AVAILABLE,
                    f"{code}: the archive-retrieval job's output is no longer available (Glacier keeps it "
                    f"{OUTPUT_HOURS} hours); retrieve it again with --retrieve")
    return reason_for(exc)


class GlacierArchive(RemoteFile):
    """A retrieved archive as a read-only, forward-only file.

    GetJobOutput is streamed in the sizes asked for; archives larger than ``RANGED_ABOVE``
    are requested in ranges of ``RANGE_BYTES``. A body cut mid-stream is resumed with a Range
    request from the current offset; after ``MAX_RESUMES`` attempts in a row that bring no
    byte, ``read`` raises :class:`GlacierReadError`. A server that ignores Range and answers
    200 with the whole archive is read from the right offset all the same.

    The SHA-256 tree hash of everything read is compared with ``item.etag`` (the inventory's
    SHA256TreeHash) when the last byte is read: a difference raises :class:`GlacierReadError`
    whose text says "tree hash mismatch", instead of returning those last bytes.
    """

    def __init__(self, glacier: Any, vault: str, item: Item) -> None:
        super().__init__()
        assert item.job_id is not None
        self._glacier = glacier
        self._vault = vault
        self._job_id = item.job_id
        self._expected = item.etag.lower() if item.etag else None
        self._size = item.size
        self._pos = 0
        self._body: Any = None
        self._body_end = 0  # where the current body stops serving this file
        self._skip = 0  # bytes of the current body before self._pos (a Range ignored)
        self._hasher = TreeHash()
        self._verified = False
        try:
            self._get(0)
        except _AWS_ERRORS as exc:
            raise SourceError(*_open_reason(exc)) from None

    # io plumbing (the rest in RemoteFile)

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (exactly ``size`` unless the archive ends first); ``b""`` at
        the end."""
        if self.closed:
            raise ValueError("read of a closed Glacier archive")
        if size is None or size < 0:
            return self.readall()
        total = self._size if self._size is not None else 0
        size = min(size, total - self._pos)
        if size <= 0:
            self._verify()
            return b""
        parts: list[bytes] = []
        got = 0
        failures = 0
        cause = ""
        while got < size:
            if self._body is None or self._pos >= self._body_end:
                self._reopen()
            want = min(size - got, self._body_end - self._pos) if not self._skip else min(self._skip, MIB)
            try:
                data = self._body.read(want)
            except _CUT as exc:
                data = b""
                cause = type(exc).__name__
            else:
                cause = "the body ended early"
            if not data:
                failures += 1
                self._drop_body()
                if failures >= MAX_RESUMES:
                    raise GlacierReadError(Reason.READ_ERROR,
                                           f"job output cut mid-stream {failures} times in a row ({cause})")
                logger.debug("Glacier job output cut at offset %d (%s); resuming with a range request",
                             self._pos, cause)
                continue
            failures = 0
            if self._skip:
                self._skip -= len(data)
                continue
            self._hasher.update(data)
            parts.append(data)
            got += len(data)
            self._pos += len(data)
        if self._pos == total:
            self._verify()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._expected is not None and self._hasher.hexdigest() != self._expected:
            raise GlacierReadError(Reason.READ_ERROR, "tree hash mismatch: the retrieved archive differs from the "
                                                      "SHA256TreeHash of the vault inventory")

    # requests

    def _reopen(self) -> None:
        self._drop_body()
        try:
            self._get(self._pos)
        except _AWS_ERRORS as exc:
            raise GlacierReadError(*_open_reason(exc)) from None

    def _get(self, start: int) -> None:
        """GetJobOutput from ``start`` to the end of its range (or of the archive)."""
        args: dict[str, Any] = {"vaultName": self._vault, "jobId": self._job_id}
        end = None
        if self._size is not None:
            end = self._size
            if self._size > RANGED_ABOVE:
                end = min(self._size, (start // RANGE_BYTES + 1) * RANGE_BYTES)
            if start > 0 or end < self._size:
                args["range"] = f"bytes={start}-{end - 1}"
        response = self._glacier.get_job_output(**args)
        self._body = response["body"]
        # 206 serves the range asked for; 200 is the whole archive (a server may ignore Range).
        self._skip = start if "range" in args and response.get("status") != 206 else 0
        if end is None:
            length = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-length")
            self._size = end = int(length) if str(length).isdigit() else 0
        self._body_end = end

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # closing a broken connection may fail; nothing to keep
                logger.debug("closing a Glacier job output failed", exc_info=False)
