"""Pending S3 restores, Glacier jobs and Glacier vault inventories in the state database."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from panscan.model import Confidence, Finding, Item, Kind
from panscan.state.db import StateDB, db_text, text, unvid, vid

JOB_ACTIONS = frozenset({"InventoryRetrieval", "ArchiveRetrieval"})
JOB_STATUSES = frozenset({"pending", "succeeded", "failed", "collected", "expired"})



@dataclass(frozen=True)
class PendingRestore:
    """An S3 restore requested with ``--restore``, until a later sweep reads the restored copy."""

    location: str
    version_id: str | None
    tier: str
    storage_class: str | None
    size: int | None
    requested_at: float
    sweep_id: int


@dataclass(frozen=True)
class GlacierJob:
    job_id: str
    vault: str
    region: str | None
    action: str  # "InventoryRetrieval" or "ArchiveRetrieval"
    archive_id: str | None
    tier: str | None
    initiated_at: float
    status: str  # "pending", "succeeded", "failed", "collected" or "expired"
    detail: str | None = None
    attempts: int = 1
    size: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class StoredInventory:
    """A Glacier vault inventory as collected: ``archives`` are dicts with ``archive_id``,
    ``description`` (masked by the caller before storing), ``creation_date`` (POSIX seconds),
    ``size`` and ``tree_hash``, in the inventory's order. A stored archive whose description
    gave findings also has ``description_findings``: :func:`inventory_finding` records of
    those findings (masked), because no later run can find them again in the masked text."""

    vault: str
    region: str | None
    inventory_date: float
    collected_at: float
    archives: list[dict[str, Any]]



# Column order is GlacierJob's field order: rows become GlacierJob(*row).
_INSERT_JOB = """INSERT OR REPLACE INTO glacier_jobs (job_id, vault, region, action, archive_id, tier, initiated_at,
    status, detail, attempts, size, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_ALL_JOBS = """SELECT job_id, vault, region, action, archive_id, tier, initiated_at, status, detail, attempts, size,
    description FROM glacier_jobs ORDER BY initiated_at, job_id"""
_PENDING_JOBS = """SELECT job_id, vault, region, action, archive_id, tier, initiated_at, status, detail, attempts, size,
    description FROM glacier_jobs WHERE status = 'pending' ORDER BY initiated_at, job_id"""
# Newest first; rowid breaks ties between jobs initiated in the same instant.
_ARCHIVE_JOB = """SELECT job_id, vault, region, action, archive_id, tier, initiated_at, status, detail, attempts, size,
    description FROM glacier_jobs WHERE vault = ? AND archive_id = ? AND action = 'ArchiveRetrieval'
    ORDER BY initiated_at DESC, rowid DESC LIMIT 1"""
_VAULT_ARCHIVE_JOBS = """SELECT job_id, vault, region, action, archive_id, tier, initiated_at, status, detail, attempts,
    size, description FROM glacier_jobs WHERE vault = ? AND action = 'ArchiveRetrieval' ORDER BY initiated_at, rowid"""
_PENDING_INVENTORY_JOB = """SELECT job_id, vault, region, action, archive_id, tier, initiated_at, status, detail,
    attempts, size, description FROM glacier_jobs
    WHERE vault = ? AND region IS ? AND action = 'InventoryRetrieval' AND status = 'pending'
    ORDER BY initiated_at DESC, rowid DESC LIMIT 1"""
_RESTORES = """SELECT location, version_id, tier, storage_class, size, requested_at, sweep_id FROM restores
    ORDER BY requested_at, location, version_id"""

_GLACIER = "glacier://"
# The Finding fields an inventory keeps of a description's finding; the rest (version, latest,
# retention, change) belong to the sweep that reports it.
_INVENTORY_FINDING_FIELDS = ("location", "member", "offset", "line", "kind", "brand", "masked", "fingerprint",
                             "confidence", "test_card")


def inventory_finding(finding: Finding) -> dict[str, Any]:
    """``finding`` (masked, location included) as a stored archive's ``description_findings``
    keeps it."""
    record = finding.to_record()
    return {name: record[name] for name in _INVENTORY_FINDING_FIELDS}


def _rebuilt(record: dict[str, Any], item: Item) -> Finding:
    return Finding(item.location, item.version_id, item.is_latest, record["member"], record["offset"], record["line"],
                   Kind(record["kind"]), record["brand"], record["masked"], record["fingerprint"],
                   Confidence(record["confidence"]), bool(record["test_card"]))


class JobStore(StateDB):
    """Restores, jobs and inventories: each call is its own transaction, nothing is buffered."""

    # Per stored (masked) vault name: masked archive location → its description_findings
    # records, built on first use and dropped when this object stores an inventory of the
    # vault (one JSON parse per vault and run, not one per archive).
    _described: dict[str, dict[str, list[dict[str, Any]]]] | None = None

    # --- S3 restores ---------------------------------------------------------------------------

    def add_restore(self, location: str, version_id: str | None, tier: str, storage_class: str | None,
                    size: int | None, requested_at: float, sweep_id: int) -> None:
        """Remember a requested restore (replacing an earlier one of the same version)."""
        with self._writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO restores (location, version_id, tier, storage_class, size, requested_at, "
                "sweep_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (db_text(location), vid(version_id), tier, storage_class, size, requested_at, sweep_id))

    def clear_restore(self, location: str, version_id: str | None) -> bool:
        """Forget a restore; whether one was pending."""
        with self._writing() as conn:
            cur = conn.execute("DELETE FROM restores WHERE location = ? AND version_id = ?",
                               (db_text(location), vid(version_id)))
            return cur.rowcount > 0

    def pending_restores(self) -> list[PendingRestore]:
        """Oldest request first."""
        with self._reading() as conn:
            return [PendingRestore(text(loc), unvid(vid), tier, sc, size, at, sid)
                    for loc, vid, tier, sc, size, at, sid in conn.execute(_RESTORES)]

    # --- Glacier jobs --------------------------------------------------------------------------

    def add_job(self, job: GlacierJob) -> None:
        """Remember a job (replacing one with the same id)."""
        if job.action not in JOB_ACTIONS:
            raise ValueError(f"unknown Glacier job action {job.action!r}")
        if job.status not in JOB_STATUSES:
            raise ValueError(f"unknown Glacier job status {job.status!r}")
        with self._writing() as conn:
            conn.execute(_INSERT_JOB, tuple(getattr(job, f.name) for f in fields(GlacierJob)))

    def update_job(self, job_id: str, *, status: str, detail: str | None = None, attempts: int | None = None) -> None:
        """Set a job's status; ``detail`` and ``attempts`` are changed only when given. KeyError
        for an unknown job."""
        if status not in JOB_STATUSES:
            raise ValueError(f"unknown Glacier job status {status!r}")
        with self._writing() as conn:
            cur = conn.execute(
                "UPDATE glacier_jobs SET status = ?, detail = coalesce(?, detail), attempts = coalesce(?, attempts) "
                "WHERE job_id = ?", (status, detail, attempts, job_id))
            if cur.rowcount != 1:
                raise KeyError(job_id)

    def jobs(self, *, pending_only: bool = True) -> list[GlacierJob]:
        """Jobs in the order they were initiated; only 'pending' ones unless ``pending_only`` is false."""
        with self._reading() as conn:
            return [GlacierJob(*r) for r in conn.execute(_PENDING_JOBS if pending_only else _ALL_JOBS)]

    def job_for_archive(self, vault: str, archive_id: str) -> GlacierJob | None:
        """The newest ArchiveRetrieval job of the archive, whatever its status."""
        rows = self._fetch(_ARCHIVE_JOB, (vault, archive_id))
        return GlacierJob(*rows[0]) if rows else None

    def archive_jobs(self, vault: str) -> dict[str, GlacierJob]:
        """The newest ArchiveRetrieval job of each archive of ``vault`` that has one (one query
        for a whole inventory, where :meth:`job_for_archive` would take one per archive)."""
        newest: dict[str, GlacierJob] = {}
        for r in self._fetch(_VAULT_ARCHIVE_JOBS, (vault,)):
            job = GlacierJob(*r)
            if job.archive_id is not None:
                newest[job.archive_id] = job  # oldest first: the last one wins
        return newest

    def pending_inventory_job(self, vault: str, region: str | None) -> GlacierJob | None:
        """The newest 'pending' InventoryRetrieval job of the vault in ``region``."""
        rows = self._fetch(_PENDING_INVENTORY_JOB, (vault, region))
        return GlacierJob(*rows[0]) if rows else None

    # --- Glacier inventories -------------------------------------------------------------------

    def store_inventory(self, vault: str, region: str | None, inventory_date: float, collected_at: float,
                        archives: list[dict[str, Any]]) -> None:
        """Keep a collected inventory, replacing the vault's earlier one (committed at once).
        Descriptions must already be masked: this module stores what it is given."""
        with self._writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO glacier_inventories (vault, region, inventory_date, collected_at, archives) "
                "VALUES (?, ?, ?, ?, ?)",
                (vault, region or "", inventory_date, collected_at, json.dumps(archives, separators=(",", ":"))))
        if self._described is not None:
            self._described.pop(vault, None)

    def inventory(self, vault: str, region: str | None) -> StoredInventory | None:
        """The inventory last stored for the vault in ``region``, or None."""
        rows = self._fetch("SELECT inventory_date, collected_at, archives FROM glacier_inventories "
                           "WHERE vault = ? AND region = ?", (vault, region or ""))
        if not rows:
            return None
        inventory_date, collected_at, archives = rows[0]
        return StoredInventory(vault, region, inventory_date, collected_at, json.loads(archives))

    def inventory_findings(self, item: Item, member: str) -> tuple[Finding, ...]:
        """The findings under ``member`` that a stored inventory (of any region) keeps for the
        Glacier archive ``item`` (location masked, as stored), rebuilt for ``item``; empty for
        any other item. These are the findings of its description, made when the inventory
        was collected: by a scan or by ``panscan jobs --collect``, outside any sweep."""
        if not item.location.startswith(_GLACIER):
            return ()
        vault = item.location[len(_GLACIER):].partition("/")[0]
        if self._described is None:
            self._described = {}
        described = self._described.get(vault)
        if described is None:
            described = self._described[vault] = {}
            for (archives,) in self._fetch("SELECT archives FROM glacier_inventories WHERE vault = ?", (vault,)):
                for archive in json.loads(archives):
                    for record in archive.get("description_findings", ()):
                        described.setdefault(record["location"], []).append(record)
        return tuple(_rebuilt(r, item) for r in described.get(item.location, ()) if r["member"] == member)
