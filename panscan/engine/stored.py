"""Commands on the state database alone: ``panscan report`` renders a stored sweep through
the same sinks a scan uses; ``panscan jobs`` lists pending S3 restores and Glacier jobs;
``panscan state prune`` removes old sweeps. Nothing here reads data or talks to AWS (but
``jobs --collect``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from panscan.config import Policy
from panscan.engine.runner import Tally, UsageError, open_report, open_state
from panscan.engine.suppress import Triage
from panscan.engine.worker import STREAM_BATCH
from panscan.findings.mask import mask_text
from panscan.model import EXPIRED, Finding
from panscan.sinks.base import Summary, display, open_sink
from panscan.sinks.table import format_table
from panscan.state import State
from panscan.state.prune import describe


@contextmanager
def existing_state(path: Path) -> Iterator[State]:
    """The state database at ``path``, which must exist."""
    with open_state(path, must_exist=True) as state:
        assert state is not None
        yield state


def run_report(path: Path, sweep_id: int | None, fmt: str, output: Path | None, *, policy: Policy | None = None,
               stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Render sweep ``sweep_id`` (default: the latest) and return that sweep's exit status."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    with existing_state(path) as state:
        if sweep_id is None:
            sweep_id = state.latest_sweep_id()
            if sweep_id is None:
                raise UsageError(f"the state database {path} holds no sweep yet")
        info = state.sweep(sweep_id)
        if info is None:
            known = ", ".join(str(s.id) for s in state.sweeps()[:10]) or "none"
            raise UsageError(f"no sweep {sweep_id} in {path} (latest sweeps: {known})")
        with open_report(output, stdout) as out:
            sink = open_sink(fmt, out, notes=stderr, policy=policy)
            tally = Tally()
            # The state holds every finding; what the sweep reported is judged again with the
            # [[allow]] entries and threshold its summary recorded (engine.suppress), not with
            # today's policy file. A sweep killed before its summary lists every finding.
            triage = Triage.from_summary(str((info.summary or {}).get("min_confidence") or "low"),
                                         (info.summary or {}).get("allow"))
            for record in state.replay_buckets(sweep_id):
                sink.write_bucket(record)

            def found(batch: tuple[Finding, ...]) -> None:  # a PAN-dense item's, before its result
                shown, suppressed = triage.judge_findings(batch)
                tally.add_findings(shown, batch[0].retention == EXPIRED)
                sink.write_suppressed(suppressed)
                sink.write_findings(shown)

            for stored, verdict in state.replay(sweep_id, found, STREAM_BATCH):
                result, suppressed = triage.judge(stored)
                tally.add(result, verdict)
                sink.write_suppressed(suppressed)
                sink.write_item(result)
                if verdict is not None:
                    sink.write_retention(verdict)
            for finding in state.replay_resolved(sweep_id):
                sink.write_resolved(finding)
            if info.summary is not None:
                summary = Summary.from_record(info.summary)
            else:  # killed before it finished: what it recorded, marked as interrupted
                started = datetime.fromtimestamp(info.started, UTC)
                summary = replace(tally.summary(0.0, True, started), **triage.summary_fields())
                summary = Summary.from_record({**summary.to_record(), "sweep_id": sweep_id})
            sink.finish(summary)
            out.exit_status = summary.exit_status  # a failure to write it keeps a 1
    return summary.exit_status


def run_prune(path: Path, *, keep: int | None, older_than_days: int | None, stdout: TextIO | None = None) -> int:
    """Remove old sweeps (see :mod:`panscan.state.prune`), VACUUM, say what went; exit 0."""
    stdout = stdout if stdout is not None else sys.stdout
    with existing_state(path) as state:
        result = state.prune(keep=keep, older_than_days=older_than_days, now=time.time())
    stdout.write(f"panscan: {describe(result)}\n")
    stdout.flush()
    return 0


def run_jobs(path: Path, fmt: str, *, collect: bool = False, stdout: TextIO | None = None) -> int:
    """List pending restores and Glacier jobs (after asking Glacier about each, with
    ``collect``), then the Glacier archives retrieved and not read yet (status
    ``succeeded``: the next scan of their vault reads them); exit 0, or 2 while any is
    pending or unread."""
    stdout = stdout if stdout is not None else sys.stdout
    with existing_state(path) as state:
        if collect:
            from panscan.sources.glacier import collect_jobs

            for line in collect_jobs(state, time.time()):
                print(mask_text(line), file=sys.stderr)
        restores = state.pending_restores()
        jobs = state.jobs(pending_only=True)
        unread = _unread_retrievals(state)
    if fmt == "jsonl":
        for r in restores:
            stdout.write(json.dumps({"type": "restore", "location": r.location, "version_id": r.version_id,
                                     "tier": r.tier, "storage_class": r.storage_class, "size": r.size,
                                     "requested_at": _iso(r.requested_at), "sweep_id": r.sweep_id}) + "\n")
        for j in jobs + unread:
            stdout.write(json.dumps({"type": "glacier_job", "job_id": j.job_id, "vault": mask_text(j.vault),
                                     "region": j.region, "action": j.action, "archive_id": j.archive_id,
                                     "tier": j.tier, "initiated_at": _iso(j.initiated_at), "status": j.status,
                                     "detail": j.detail}) + "\n")
    else:
        stdout.write(_jobs_table(restores, jobs, unread))
    stdout.flush()
    return 2 if restores or jobs or unread else 0


def _unread_retrievals(state: Any) -> list[Any]:
    """``glacier.unread_retrievals``, importing the Glacier source (boto3) only when the state
    has a succeeded archive retrieval at all."""
    if not any(j.action == "ArchiveRetrieval" and j.status == "succeeded" for j in state.jobs(pending_only=False)):
        return []
    from panscan.sources.glacier import unread_retrievals

    return unread_retrievals(state, time.time())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jobs_table(restores: list, jobs: list, unread: list) -> str:  # type: ignore[type-arg]
    text = ""
    if restores:
        rows = [[display(r.location), display(r.version_id or "-"), r.tier, r.storage_class or "-",
                 _iso(r.requested_at), str(r.sweep_id)] for r in restores]
        text += (f"Pending S3 restores ({len(restores)}): run the same scan again once they are ready\n"
                 + format_table(("LOCATION", "VERSION", "TIER", "CLASS", "REQUESTED", "SWEEP"), rows) + "\n")
    if jobs:
        rows = [[display(mask_text(j.vault)), j.action, display(j.archive_id or "-"), j.tier or "-",
                 _iso(j.initiated_at), j.status, display(j.job_id[:16])] for j in jobs]
        text += (f"Pending Glacier jobs ({len(jobs)})\n"
                 + format_table(("VAULT", "ACTION", "ARCHIVE", "TIER", "INITIATED", "STATUS", "JOB"), rows) + "\n")
    if unread:
        # Retrieved is not read: the content is scanned only by the next scan of the vault, and
        # Glacier keeps the output for a day; "nothing pending" would let it expire unread.
        rows = [[display(mask_text(j.vault)), display(j.archive_id or "-"), j.tier or "-", _iso(j.initiated_at),
                 display(j.job_id[:16])] for j in unread]
        vaults = " ".join(sorted({f"glacier://{mask_text(j.vault)}" for j in unread}))
        text += (f"Retrieved Glacier archives not read yet ({len(unread)}): the next scan of {display(vaults)} "
                 "reads them (Glacier keeps each output 24 hours)\n"
                 + format_table(("VAULT", "ARCHIVE", "TIER", "INITIATED", "JOB"), rows) + "\n")
    return text or "No pending restores or Glacier jobs.\n"
