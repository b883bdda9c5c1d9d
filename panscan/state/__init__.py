"""The state database: sweeps, what was scanned, findings, pending S3 restores, Glacier jobs and inventories.

One SQLite file (stdlib ``sqlite3``, WAL journal), written only by the coordinator process;
other processes (``panscan report``, ``panscan jobs``) may read it while a scan runs.
:mod:`.db` opens it (schema, identity, transactions); :mod:`.sweeps` holds sweeps, results
and findings (stored as :mod:`.records` and :mod:`.codec` say); :mod:`.prune` removes old
sweeps; :mod:`.jobs` holds restores, Glacier jobs and inventories. Imports point one way:
this module → prune → sweeps → {db, codec, records}; jobs → db.

What callers may rely on:

* **It stores exactly what it is given.** Locations, details and findings arrive already masked
  (``findings.mask.mask_result``); this package never sees content and never adds anything to
  what it receives. A :class:`~panscan.model.Finding` holds only the masked number and the keyed
  fingerprint, so that is all that can reach the file.
* **Private files.** The parent directory is created with mode 0700 when missing; the database
  and its ``-wal``/``-shm`` files are mode 0600.
* **Errors.** A file that is not a panscan state, one written by a newer panscan or by an older
  one (schema version 1: the message says to move it aside), or a database that cannot be read
  or written (disk full, read-only, locked for longer than 10 s) raises :class:`StateError`
  with a one-line message naming the path. Other exceptions are bugs.
* **Consistency.** Every write is a transaction: a result, its findings, its place in the
  sweep's record order and the ``seen`` entry pointing at it are committed together or not at
  all. A crash or ``kill -9`` loses at most the rows not yet committed, never the consistency
  of the rest.
* **Buffering.** :meth:`State.record` and :meth:`State.record_bucket` are buffered and committed
  when 500 rows are pending, when 0.5 s have passed since the last commit (checked on the next
  call), on :meth:`State.flush`, :meth:`State.close`, and before any read that needs them. Reads
  through this object always see the buffered rows.
* **Text round trips**, file names that are not UTF-8 (surrogate-escaped) included.
* **Identity of an item** is ``(location, version_id)``; ``version_id`` None is stored as ``''``
  and comes back as None. Recording the same identity twice in one sweep replaces the first
  result and its findings. :meth:`State.lookup` treats an item as unchanged when location,
  version id, size, last-modified, etag, mtime_ns, inode and device are all equal (None equals
  None) and it was scanned completely with the same pattern version: an unchanged item is only
  as well detected as the metadata its source supplies.
* **Unchanged items cost a few bytes.** A carried result identical to the stored one it came
  from is recorded as a reference to it (see :mod:`.sweeps`); :meth:`State.replay` gives back
  exactly what was recorded, in record order, for every sweep still kept.
* **Identity of a finding** (``fkey``) is location, version id, member, kind, fingerprint and the
  occurrence index among the item's findings with those same five values, ordered by offset:
  moving text does not turn a finding into new+resolved, a second copy of a number is a second
  finding. Every sweep stores its own copy of its findings, carried items included, so a sweep
  compares only against the one before it.
* **Resolved findings.** :meth:`State.resolved` stores what it returns in the sweep (replacing an
  earlier call's), and :meth:`State.replay_resolved` gives it back; nothing else is needed.
* **Schema** is versioned with ``PRAGMA user_version`` and tagged with ``PRAGMA application_id``;
  a file from another schema version is refused rather than misread.
"""

from __future__ import annotations

from pathlib import Path

from panscan.model import Finding, Item
from panscan.state.codec import finding_keys, item_from_json, item_to_json, verdict_from_json, verdict_to_json
from panscan.state.db import APPLICATION_ID, FLUSH_ROWS, FLUSH_SECONDS, SCHEMA_VERSION, StateError
from panscan.state.jobs import (
    JOB_ACTIONS,
    JOB_STATUSES,
    GlacierJob,
    JobStore,
    PendingRestore,
    StoredInventory,
    inventory_finding,
)
from panscan.state.prune import PruneResult, PruneStore
from panscan.state.sweeps import NEW, RESOLVED, STILL_PRESENT, SweepInfo, SweepStart

__all__ = [
    "APPLICATION_ID", "BUSY_TIMEOUT_SECONDS", "FLUSH_ROWS", "FLUSH_SECONDS", "JOB_ACTIONS", "JOB_STATUSES", "NEW",
    "RESOLVED", "SCHEMA_VERSION", "STILL_PRESENT", "GlacierJob", "PendingRestore", "PruneResult", "State",
    "StateError", "StoredInventory", "SweepInfo", "SweepStart", "finding_keys", "inventory_finding", "item_from_json",
    "item_to_json", "verdict_from_json", "verdict_to_json",
]

BUSY_TIMEOUT_SECONDS = 10.0


class State(PruneStore, JobStore):
    """An open state database. Use :meth:`open`; close with :meth:`close` or ``with``."""

    @classmethod
    def open(cls, path: Path) -> State:
        """Open (creating if missing) the state database at ``path``; raises :class:`StateError`."""
        # Read at call time, so a caller (a test) can shorten the wait for a locked database.
        return cls._open(path, BUSY_TIMEOUT_SECONDS)

    def last_findings(self, item: Item, member: str) -> tuple[Finding, ...]:
        """As for sweeps (see :meth:`SweepStore.last_findings`); when no sweep recorded any, the
        ones a stored Glacier inventory keeps for ``item`` (see :meth:`JobStore.inventory_findings`):
        an inventory collected by ``panscan jobs --collect``, or by a scan stopped before it
        reached the archive, was never scanned in a sweep, and its descriptions are masked."""
        return super().last_findings(item, member) or self.inventory_findings(item, member)
