"""Sweeps in the state database: what each recorded, unchanged-item lookup, findings compared
between sweeps, and replay for ``panscan report``.

How it is stored (schema version 2): an item result is a ``results`` row, stored once. A sweep's
record order is a list of result references in ``sweep_records`` (see
:mod:`panscan.state.records`), so a sweep that records an unchanged item as the result an
earlier sweep stored adds a few bytes, not a row. A result is stored again only when what the
sweep would print differs from the stored one (the item's metadata moved, a retention verdict,
a read). Findings are stored per sweep (``sweep_findings``): they carry the sweep's ``change``.
``seen`` holds, per identity, the last complete read and the result to carry.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any

from panscan.model import Confidence, Finding, Item, ItemResult, Kind, Reason, RetentionVerdict, Status
from panscan.state.codec import (
    KeyCounts,
    finding_keys,
    item_from_stored,
    item_matches_stored,
    item_to_stored,
    verdict_from_json,
    verdict_to_json,
)
from panscan.state.db import (
    FLUSH_ROWS,
    FLUSH_SECONDS,
    StateDB,
    StateError,
    Stored,
    db_opt,
    db_text,
    int_column,
    text,
    text_opt,
    unvid,
    vid,
)
from panscan.state.records import CARRIED, pack, unpack

#: ``Finding.change`` values.
NEW, STILL_PRESENT, RESOLVED = "new", "still present", "resolved"


@dataclass(frozen=True)
class SweepInfo:
    id: int
    started: float
    finished: float | None
    status: str  # "running", "complete" or "interrupted"
    targets: tuple[str, ...]
    pattern_version: str
    exit_status: int | None
    summary: dict[str, Any] | None


@dataclass(frozen=True)
class SweepStart:
    id: int
    previous_id: int | None  # the latest complete sweep of the same targets
    interrupted: tuple[int, ...]  # sweeps found 'running' with their process gone, just marked interrupted


# Statements used per item are module constants: sqlite3 caches prepared statements by text.
# seen points only at complete results, so this is the whole test: one seek in seen, one by id.
_LOOKUP = """SELECT s.sweep_id, r.id, r.item, r.detail, r.bytes_scanned, r.findings, r.unchanged_since_sweep,
        r.stored_in, r.retention
    FROM seen AS s JOIN results AS r ON r.id = s.result_id
    WHERE s.location = ? AND s.version_id = ? AND s.pattern = ?
      AND s.size IS ? AND s.last_modified IS ? AND s.etag IS ? AND s.mtime_ns IS ? AND s.inode IS ? AND s.device IS ?"""
# The result a sweep read completely (or carried from the one that did), newest first.
_CARRIED_RESULT = """SELECT id, item, detail, bytes_scanned, findings, unchanged_since_sweep, stored_in, retention
    FROM results WHERE location = ? AND version_id = ? AND status = 'complete'
      AND coalesce(unchanged_since_sweep, stored_in) = ? ORDER BY id DESC LIMIT 1"""
_NEXT_RESULT_ID = "SELECT coalesce(max(id), 0) + 1 FROM results"
_DELETE_STORED = "DELETE FROM results WHERE stored_in = ? AND location = ? AND version_id = ?"
_INSERT_RESULT = """INSERT INTO results (id, stored_in, location, version_id, item, status, reason, detail,
    bytes_scanned, findings, unchanged_since_sweep, retention) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_UNSEE = "DELETE FROM seen WHERE location = ? AND version_id = ? AND sweep_id = ?"
_UPSERT_SEEN = """INSERT OR REPLACE INTO seen (location, version_id, size, last_modified, etag, mtime_ns, inode, device,
    pattern, sweep_id, result_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_PATTERN_ID = "SELECT id FROM patterns WHERE version = ?"
_RELINK_SEEN = "UPDATE seen SET result_id = ? WHERE location = ? AND version_id = ? AND sweep_id = ?"
_NEXT_CHUNK = "SELECT coalesce(max(chunk), -1) + 1 FROM sweep_records WHERE sweep_id = ?"
_INSERT_CHUNK = "INSERT INTO sweep_records (sweep_id, chunk, entries) VALUES (?, ?, ?)"
_CHUNK_AFTER = "SELECT chunk, entries FROM sweep_records WHERE sweep_id = ? AND chunk > ? ORDER BY chunk LIMIT 1"
_DELETE_ITEM_FINDINGS = "DELETE FROM sweep_findings WHERE sweep_id = ? AND location = ? AND version_id = ?"
_INSERT_FINDING = """INSERT INTO sweep_findings (sweep_id, location, version_id, is_latest, member, "offset", line,
    kind, brand, masked, fingerprint, confidence, test_card, retention, change, fkey)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_BUCKET = "INSERT INTO sweep_buckets (sweep_id, bucket, record) VALUES (?, ?, ?)"
# Rows read back as findings start with these eleven columns, in this order (see _finding).
_ITEM_FINDINGS = """SELECT is_latest, member, "offset", line, kind, brand, masked, fingerprint, confidence, test_card,
    retention, change FROM sweep_findings WHERE sweep_id = ? AND location = ? AND version_id = ? ORDER BY rowid"""
_ITEM_FINDINGS_PAGE = """SELECT is_latest, member, "offset", line, kind, brand, masked, fingerprint, confidence,
    test_card, retention, change, rowid FROM sweep_findings WHERE sweep_id = ? AND location = ? AND version_id = ?
    AND rowid > ? ORDER BY rowid LIMIT ?"""
_ITEM_FKEYS = "SELECT fkey FROM sweep_findings WHERE sweep_id = ? AND location = ? AND version_id = ?"
# Which of some keys a sweep has (an fkey names its item): one index seek per key.
_FKEYS_AMONG = "SELECT fkey FROM sweep_findings WHERE sweep_id = ? AND fkey IN ({})"
_FKEYS_PER_QUERY = 500
_GONE = """SELECT p.is_latest, p.member, p."offset", p.line, p.kind, p.brand, p.masked, p.fingerprint, p.confidence,
        p.test_card, p.retention, p.location, p.version_id
    FROM sweep_findings AS p
    WHERE p.sweep_id = :previous
      AND NOT EXISTS (SELECT 1 FROM sweep_findings AS c WHERE c.sweep_id = :current AND c.fkey = p.fkey)
    ORDER BY p.rowid"""
_RESULTS_OF_ITEM = "SELECT id, status FROM results WHERE location = ? AND version_id = ?"
_INSERT_RESOLVED = """INSERT INTO sweep_resolved (sweep_id, location, version_id, is_latest, member, "offset", line,
    kind, brand, masked, fingerprint, confidence, test_card, retention)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_RESOLVED = """SELECT is_latest, member, "offset", line, kind, brand, masked, fingerprint, confidence, test_card,
    retention, location, version_id FROM sweep_resolved WHERE sweep_id = ? ORDER BY rowid"""
_SWEEPS = "SELECT id, started, finished, status, targets, pattern_version, exit_status, summary FROM sweeps"
_REPLAY_PAGE_SIZE = 500
_REPLAY_RESULTS = """SELECT id, location, version_id, item, status, reason, detail, bytes_scanned, findings,
    unchanged_since_sweep, retention, stored_in FROM results WHERE id IN ({})"""
_LAST_FINDINGS_OF = """SELECT is_latest, member, "offset", line, kind, brand, masked, fingerprint, confidence,
    test_card, retention, change FROM sweep_findings WHERE location = ? AND version_id = ? AND member = ?
    AND sweep_id = (SELECT max(sweep_id) FROM sweep_findings
                    WHERE location = ? AND version_id = ? AND member = ?)
    ORDER BY rowid"""

_Key = tuple[int, Stored, Stored]  # (sweep id, location, version id), stored form
# A stored result that a carried record may name instead of storing its own:
# (id, stored item (codec.item_to_stored), detail, bytes_scanned, findings, unchanged_since_sweep, stored_in,
# retention JSON).
_StoredResult = tuple[int, str, Stored | None, int, int, int | None, int, str | None]
# A result to store at the next flush: its row (without id), finding rows, its seen row (a
# complete read) and the sweep whose seen entry should point at it instead (a carried result
# whose metadata moved).
_NewRow = tuple[tuple[Any, ...], list[tuple[Any, ...]], tuple[Any, ...] | None, int | None]


def _pid_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class SweepStore(StateDB):
    """Sweeps, their results and findings (see the module docstring of :mod:`panscan.state`)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # Write buffer. New results keyed by identity so a second record of an item replaces
        # the first before it reaches the database; the order per sweep holds result
        # references (ints) and keys of new results (None where one was replaced).
        self._new: dict[_Key, _NewRow] = {}
        self._order: dict[int, list[int | _Key | None]] = {}
        self._positions: dict[_Key, int] = {}
        self._loose: list[tuple[Any, ...]] = []  # finding rows of carried records
        self._seen: dict[tuple[Stored, Stored], tuple[tuple[Any, ...], str, int]] = {}  # buffered reads
        self._buckets: list[tuple[int, str | None, str]] = []
        self._pending_sweeps: set[int] = set()
        self._rows = 0
        self._last_commit = time.monotonic()
        self._pattern_versions: dict[int, str] = {}
        self._pattern_ids: dict[str, int] = {}
        self._chunks: dict[int, int] = {}  # next sweep_records chunk per sweep
        # The stored result behind the last lookup hit, and those of carried results not yet
        # recorded, so recording an unchanged item costs no query.
        self._hit: tuple[Stored, Stored, int, _StoredResult] | None = None
        self._carry: dict[tuple[Stored, Stored], _StoredResult] = {}
        # The findings annotate() returned last and their keys (identity-checked: a tuple is
        # immutable, and holding it keeps its id from being reused).
        self._annotated: tuple[tuple[Finding, ...], list[str]] | None = None
        # Items whose findings come in batches before their result (record_findings): the
        # numbering of their keys so far, and per sweep which are open, which started since
        # the last flush (rows of an earlier attempt are deleted first) and their rows.
        self._stream_counts: dict[tuple[Stored, Stored], KeyCounts] = {}
        self._streamed: set[_Key] = set()
        self._stream_starts: set[_Key] = set()
        self._stream_rows: list[tuple[Any, ...]] = []
        self._keep: set[_Key] = set()  # buffered items whose finding rows are partly written

    def _flush_on_close(self) -> None:
        self.flush()

    # --- sweeps --------------------------------------------------------------------------------

    def begin_sweep(self, targets: tuple[str, ...], pattern_version: str, options: dict[str, Any],
                    started: float) -> SweepStart:
        """Start a 'running' sweep of ``targets``.

        Sweeps left 'running' by a process that no longer exists on this host are marked
        'interrupted' first (those of other hosts are left alone: their process cannot be
        checked). ``previous_id`` is the latest complete sweep of the same set of targets
        (order and repeats ignored), the one findings are compared against.
        """
        self.flush()
        host = socket.gethostname()
        targets_key = json.dumps(sorted(set(targets)))
        options_json = json.dumps(options, sort_keys=True)
        with self._writing() as conn:
            stale = [sid for sid, pid, sweep_host in
                     conn.execute("SELECT id, pid, host FROM sweeps WHERE status = 'running'")
                     if sweep_host == host and not _pid_alive(pid)]
            conn.executemany("UPDATE sweeps SET status = 'interrupted' WHERE id = ?", [(s,) for s in stale])
            row = conn.execute("SELECT max(id) FROM sweeps WHERE targets_key = ? AND status = 'complete'",
                               (targets_key,)).fetchone()
            conn.execute("INSERT OR IGNORE INTO patterns (version) VALUES (?)", (pattern_version,))
            cur = conn.execute(
                "INSERT INTO sweeps (started, status, targets, targets_key, pattern_version, options, pid, host) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
                (started, json.dumps(list(targets)), targets_key, pattern_version, options_json, os.getpid(), host))
            sweep_id = cur.lastrowid
        assert sweep_id is not None
        self._pattern_versions[sweep_id] = pattern_version
        return SweepStart(sweep_id, row[0], tuple(stale))

    def finish_sweep(self, sweep_id: int, status: str, summary: dict[str, Any], exit_status: int,
                     finished: float) -> None:
        """Commit what is buffered and close the sweep as 'complete' or 'interrupted'."""
        if status not in ("complete", "interrupted"):
            raise ValueError(f"a sweep finishes 'complete' or 'interrupted', not {status!r}")
        summary_json = json.dumps(summary)
        self.flush()
        with self._writing() as conn:
            cur = conn.execute("UPDATE sweeps SET status = ?, summary = ?, exit_status = ?, finished = ? WHERE id = ?",
                               (status, summary_json, exit_status, finished, sweep_id))
            if cur.rowcount != 1:
                raise KeyError(sweep_id)

    def sweeps(self) -> list[SweepInfo]:
        """Every sweep, newest first."""
        with self._reading() as conn:
            return [_sweep_info(r) for r in conn.execute(_SWEEPS + " ORDER BY id DESC")]

    def sweep(self, sweep_id: int) -> SweepInfo | None:
        with self._reading() as conn:
            row = conn.execute(_SWEEPS + " WHERE id = ?", (sweep_id,)).fetchone()
        return None if row is None else _sweep_info(row)

    def latest_sweep_id(self) -> int | None:
        """The newest sweep of any status (a running or interrupted one included)."""
        with self._reading() as conn:
            value: int | None = conn.execute("SELECT max(id) FROM sweeps").fetchone()[0]
        return value

    def _pattern_version(self, sweep_id: int) -> str:
        version = self._pattern_versions.get(sweep_id)
        if version is None:
            with self._reading() as conn:
                row = conn.execute("SELECT pattern_version FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
            if row is None:
                raise KeyError(sweep_id)
            version = self._pattern_versions[sweep_id] = row[0]
        return version


    def _pattern_id(self, pattern_version: str) -> int | None:
        """The number of a pattern set some sweep used (None: no sweep did, nothing was read with it)."""
        pid = self._pattern_ids.get(pattern_version)
        if pid is None:
            rows = self._fetch(_PATTERN_ID, (pattern_version,))
            if not rows:
                return None
            pid = self._pattern_ids[pattern_version] = rows[0][0]
        return pid

    # --- items ---------------------------------------------------------------------------------

    def lookup(self, item: Item, pattern_version: str) -> int | None:
        """The sweep in which an identical item was scanned completely with ``pattern_version``."""
        location, v = db_text(item.location), vid(item.version_id)
        identity = (int_column(item.size), item.last_modified, item.etag, int_column(item.mtime_ns),
                    int_column(item.inode), int_column(item.device))
        pending = self._seen.get((location, v))
        if pending is not None and pending[0] == identity and pending[1] == pattern_version:
            return pending[2]
        pid = self._pattern_id(pattern_version)
        if pid is None:
            return None
        rows = self._fetch(_LOOKUP, (location, v, pid, *identity))
        if not rows:
            return None
        row = rows[0]
        sweep_id = row[0]
        buffered = self._new.get((sweep_id, location, v))
        if buffered is not None and buffered[0][4] != Status.COMPLETE:
            return None  # that complete result is about to be replaced by a failed retry
        self._hit = (location, v, sweep_id, row[1:])
        return int(sweep_id)

    def _stored_result(self, from_sweep: int, location: Stored, v: Stored, item: Item) -> _StoredResult:
        carried = self._carry.get((location, v))
        if carried is not None and (carried[5] if carried[5] is not None else carried[6]) == from_sweep:
            return carried
        hit = self._hit
        if hit is not None and hit[0] == location and hit[1] == v and hit[2] == from_sweep:
            return hit[3]
        if from_sweep in self._pending_sweeps:
            self.flush()
        rows = self._fetch(_CARRIED_RESULT, (location, v, from_sweep))
        if not rows:
            raise StateError(f"the state database {self.path} holds no complete result for {item.location!r} "
                             f"in sweep {from_sweep}")
        found: _StoredResult = tuple(rows[0])
        return found

    def carried(self, from_sweep: int, item: Item, *, max_findings: int | None = None) -> ItemResult:
        """The complete result of ``item`` stored in ``from_sweep``, rebuilt for the fresh listing.

        The fresh ``item`` wins (its metadata, ``is_latest``, ``version_id``); findings keep
        their stored member, offset, masked number and fingerprint, with ``change`` and
        ``retention`` cleared for the caller to judge again; ``unchanged_since_sweep`` is
        ``from_sweep``. With more than ``max_findings`` findings, none are loaded:
        ``earlier_findings`` says how many there are, for :meth:`carried_findings`.
        """
        location, v = db_text(item.location), vid(item.version_id)
        stored = self._stored_result(from_sweep, location, v, item)
        self._carry[(location, v)] = stored  # for record(): no query, no second copy
        _, _, detail, bytes_scanned, count, _, stored_in, _ = stored
        if max_findings is not None and count > max_findings:
            return ItemResult(item, Status.COMPLETE, None, text_opt(detail), bytes_scanned,
                              unchanged_since_sweep=from_sweep, earlier_findings=count)
        if count and stored_in in self._pending_sweeps:
            self.flush()
        # The findings the sweep that stored the result recorded with it.
        findings = () if not count else tuple(
            _finding(r, item.location, item.version_id, item.is_latest, change=None, retention=None)
            for r in self._fetch(_ITEM_FINDINGS, (stored_in, location, v)))
        return ItemResult(item, Status.COMPLETE, None, text_opt(detail), bytes_scanned, findings,
                          unchanged_since_sweep=from_sweep)

    def carried_findings(self, from_sweep: int, item: Item, batch: int) -> Iterator[tuple[Finding, ...]]:
        """The findings :meth:`carried` did not load, in batches of ``batch``, in stored order
        (a page per query: nothing is held between batches but the last rowid)."""
        location, v = db_text(item.location), vid(item.version_id)
        stored_in = self._stored_result(from_sweep, location, v, item)[6]
        if stored_in in self._pending_sweeps:
            self.flush()
        for rows in self._finding_pages(stored_in, location, v, batch):
            yield tuple(_finding(r, item.location, item.version_id, item.is_latest, change=None, retention=None)
                        for r in rows)

    def _finding_pages(self, sweep_id: int, location: Stored, v: Stored, size: int) -> Iterator[list[Any]]:
        """An item's stored finding rows (the columns of _ITEM_FINDINGS, then the rowid), a page
        of ``size`` per query."""
        after = -1
        while rows := self._fetch(_ITEM_FINDINGS_PAGE, (sweep_id, location, v, after, size)):
            after = rows[-1][-1]
            yield rows

    def last_findings(self, item: Item, member: str) -> tuple[Finding, ...]:
        """The findings under ``member`` that the latest sweep which had any recorded for
        ``item`` (e.g. those in a Glacier archive's description, scanned once, when its
        inventory was collected), rebuilt for ``item``."""
        self.flush()
        key = (db_text(item.location), vid(item.version_id), member)
        return tuple(_finding(r, item.location, item.version_id, item.is_latest, change=None, retention=None)
                     for r in self._fetch(_LAST_FINDINGS_OF, key + key))

    def annotate(self, previous_id: int | None, result: ItemResult, *, streaming: bool = False) -> ItemResult:
        """``result`` with each finding's ``change``: "new" or "still present" against ``previous_id``.

        ``streaming``: ``result`` holds a batch of the findings of an item still being
        scanned (see :meth:`record_findings`); its later batches and result continue it.
        """
        if not result.findings:
            return result
        identity = (db_text(result.item.location), vid(result.item.version_id))
        counts = self._stream_counts.setdefault(identity, {}) if streaming else self._stream_counts.get(identity)
        keys = finding_keys(result.item, result.findings, counts)
        previous: set[str] = set()
        if previous_id is not None:
            if previous_id in self._pending_sweeps:
                self.flush()
            if counts is None:
                previous = {r[0] for r in self._fetch(_ITEM_FKEYS, (previous_id, *identity))}
            else:  # a PAN-dense item: only the keys of this batch, not all of the item's
                for i in range(0, len(keys), _FKEYS_PER_QUERY):
                    some = keys[i:i + _FKEYS_PER_QUERY]
                    query = _FKEYS_AMONG.format(", ".join("?" * len(some)))
                    previous.update(r[0] for r in self._fetch(query, (previous_id, *some)))
        findings = tuple(replace(f, change=STILL_PRESENT if k in previous else NEW)
                         for f, k in zip(result.findings, keys, strict=True))
        self._annotated = (findings, keys)  # record() of this result reuses the keys
        return replace(result, findings=findings)

    def _finding_rows(self, sweep_id: int, item: Item, findings: tuple[Finding, ...],
                      counts: KeyCounts | None) -> list[tuple[Any, ...]]:
        if not findings:
            return []
        if self._annotated is not None and self._annotated[0] is findings:
            keys = self._annotated[1]
        else:
            keys = finding_keys(item, findings, counts)
        location, v = db_text(item.location), vid(item.version_id)
        return [
            (sweep_id, location, v, f.is_latest, db_opt(f.member), f.offset, f.line, str(f.kind), f.brand, f.masked,
             f.fingerprint, str(f.confidence), f.test_card, f.retention, f.change, k)
            for f, k in zip(findings, keys, strict=True)]

    def record_findings(self, sweep_id: int, batch: ItemResult) -> None:
        """Store a batch of the findings of an item still being scanned (annotated with
        ``streaming``); its :meth:`record` comes later with the rest. Buffered like record,
        so an item's findings need not all be held until its end."""
        self._pattern_version(sweep_id)
        item = batch.item
        identity = (db_text(item.location), vid(item.version_id))
        key = (sweep_id, *identity)
        if key not in self._streamed:
            # A new attempt at the item in this sweep: what an earlier one stored goes.
            self._streamed.add(key)
            self._stream_starts.add(key)
            self._drop_buffered(key)
        rows = self._finding_rows(sweep_id, item, batch.findings, self._stream_counts.setdefault(identity, {}))
        self._stream_rows += rows
        self._pending_sweeps.add(sweep_id)
        self._rows += len(rows)
        self._maybe_flush()

    def _drop_buffered(self, key: _Key) -> None:
        if self._new.pop(key, None) is not None:
            self._order[key[0]][self._positions.pop(key)] = None

    def record(self, sweep_id: int, result: ItemResult, verdict: RetentionVerdict | None = None) -> None:
        """Store ``result`` (and its verdict) in the sweep; buffered (see the module docstring).

        A complete result that was read (not carried) also becomes the ``seen`` entry of its
        item, for :meth:`lookup` in later sweeps. A carried result identical to the stored
        one it came from (the common case) is recorded as a reference to it.
        """
        # Also checks the sweep exists (KeyError), so a bad id fails here, not in a later flush.
        pattern_version = self._pattern_version(sweep_id)
        item = result.item
        location, v = db_text(item.location), vid(item.version_id)
        key = (sweep_id, location, v)
        finding_rows = self._finding_rows(sweep_id, item, result.findings,
                                          self._stream_counts.pop((location, v), None))
        if key in self._streamed:
            self._streamed.discard(key)
            self._keep.add(key)  # its first findings were stored in batches
        else:
            self._keep.discard(key)
        retention = None if verdict is None else verdict_to_json(verdict)
        order = self._order.setdefault(sweep_id, [])
        self._pending_sweeps.add(sweep_id)
        self._rows += 1 + len(finding_rows)
        unchanged = result.unchanged_since_sweep
        stored = self._carry.pop((location, v), None) if unchanged is not None else None
        if stored is not None and result.status is Status.COMPLETE and result.reason is None:
            rid, item_json, detail, bytes_scanned, count, stored_unchanged, stored_in, stored_retention = stored
            if (bytes_scanned == result.bytes_scanned and count == result.findings_total
                    and retention == stored_retention and detail == db_opt(result.detail)
                    and unchanged == (stored_in if stored_unchanged is None else stored_unchanged)
                    and item_matches_stored(item, item_json)):
                self._drop_buffered(key)
                order.append(rid << 1 | CARRIED)
                self._loose += finding_rows
                self._maybe_flush()
                return
        self._drop_buffered(key)
        row = (sweep_id, location, v, item_to_stored(item), str(result.status),
               None if result.reason is None else str(result.reason), db_opt(result.detail), result.bytes_scanned,
               result.findings_total, unchanged, retention)
        seen_row: tuple[Any, ...] | None = None
        relink: int | None = None
        if result.status is Status.COMPLETE:
            if unchanged is None:
                identity = (int_column(item.size), item.last_modified, item.etag, int_column(item.mtime_ns),
                            int_column(item.inode), int_column(item.device))
                seen_row = (location, v, *identity, self._pattern_id(pattern_version), sweep_id)
                self._seen[(location, v)] = (identity, pattern_version, sweep_id)
            else:
                relink = unchanged  # the item's seen entry now carries this result
        else:
            # A retry that failed after a complete read in this sweep: the buffered seen entry
            # would point lookup at a result that is no longer complete.
            pending = self._seen.get((location, v))
            if pending is not None and pending[2] == sweep_id:
                del self._seen[(location, v)]
        self._positions[key] = len(order)
        order.append(key)
        self._new[key] = (row, finding_rows, seen_row, relink)
        self._maybe_flush()

    def record_bucket(self, sweep_id: int, record: dict[str, Any]) -> None:
        """Store a bucket-level record (a JSON object), buffered like :meth:`record`."""
        self._pattern_version(sweep_id)  # the sweep exists (KeyError otherwise)
        bucket = record.get("bucket")
        self._buckets.append((sweep_id, None if bucket is None else str(bucket), json.dumps(record)))
        self._pending_sweeps.add(sweep_id)
        self._rows += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._rows >= FLUSH_ROWS or time.monotonic() - self._last_commit >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows now. On failure nothing of the buffer is committed and it is
        kept, so a later flush can retry."""
        if not (self._order or self._buckets or self._stream_rows or self._stream_starts or self._loose):
            self._last_commit = time.monotonic()
            return
        chunks: dict[int, int] = {}
        try:
            with self._writing() as conn:
                first = conn.execute(_NEXT_RESULT_ID).fetchone()[0]
                ids: dict[_Key, int] = {}
                results, seen, relinks, unseen = [], [], [], []
                for rid, (key, (row, _, seen_row, relink)) in enumerate(self._new.items(), first):
                    ids[key] = rid
                    results.append((rid, *row))
                    if seen_row is not None:
                        seen.append((*seen_row, rid))
                    elif relink is not None:
                        relinks.append((rid, key[1], key[2], relink))
                    elif row[4] != Status.COMPLETE:
                        unseen.append((key[1], key[2], key[0]))
                # An item recorded again in the same sweep replaces what that sweep stored of it.
                conn.executemany(_DELETE_STORED, self._new)
                conn.executemany(_DELETE_ITEM_FINDINGS, (k for k in self._new if k not in self._keep))
                conn.executemany(_DELETE_ITEM_FINDINGS, self._stream_starts)
                conn.executemany(_INSERT_FINDING, self._stream_rows)
                conn.executemany(_INSERT_RESULT, results)
                conn.executemany(_INSERT_FINDING, chain.from_iterable(f for _, f, _, _ in self._new.values()))
                conn.executemany(_INSERT_FINDING, self._loose)
                conn.executemany(_UNSEE, unseen)
                conn.executemany(_UPSERT_SEEN, seen)
                conn.executemany(_RELINK_SEEN, relinks)
                for sweep_id, order in self._order.items():
                    entries = [e if isinstance(e, int) else ids[e] << 1 for e in order if e is not None]
                    if not entries:
                        continue
                    chunk = self._chunks.get(sweep_id)
                    if chunk is None:
                        chunk = conn.execute(_NEXT_CHUNK, (sweep_id,)).fetchone()[0]
                    conn.execute(_INSERT_CHUNK, (sweep_id, chunk, pack(entries)))
                    chunks[sweep_id] = chunk + 1
                conn.executemany(_INSERT_BUCKET, self._buckets)
        finally:
            # Also after a failure: retrying on every record() would stall each one for the busy timeout.
            self._last_commit = time.monotonic()
        self._chunks.update(chunks)
        self._new.clear()
        self._order.clear()
        self._positions.clear()
        self._loose = []
        self._keep.clear()
        self._stream_starts.clear()
        self._stream_rows = []
        self._seen.clear()
        self._buckets.clear()
        self._pending_sweeps.clear()
        self._rows = 0

    def _entries(self, sweep_id: int) -> Iterator[list[int]]:
        """The sweep's record order, a committed chunk at a time (one query each: no cursor is
        held while the caller works)."""
        after = -1
        while rows := self._fetch(_CHUNK_AFTER, (sweep_id, after)):
            after, blob = rows[0]
            yield unpack(blob)

    # --- comparing sweeps --------------------------------------------------------------------

    def resolved(self, sweep_id: int, previous_id: int | None, enumeration_complete: bool) -> tuple[list[Finding], int]:
        """Findings of ``previous_id`` that ``sweep_id`` no longer has, and how many could not be checked.

        A previous finding is resolved when its item was recorded complete in ``sweep_id``
        without it, or when the item was not recorded at all and ``enumeration_complete`` (the
        item is gone). It is unverified (counted) when its item was recorded but not complete,
        or was absent while enumeration was incomplete. The resolved findings (``change`` =
        "resolved") are stored in ``sweep_id`` for :meth:`replay_resolved`.
        """
        self.flush()
        found: list[Finding] = []
        unverified = 0
        if previous_id is not None:
            gone = self._fetch(_GONE, {"current": sweep_id, "previous": previous_id})
            statuses = self._statuses(sweep_id, {(r[-2], r[-1]) for r in gone}) if gone else {}
            for r in gone:
                status = statuses.get((r[-2], r[-1]))
                if status == Status.COMPLETE or (status is None and enumeration_complete):
                    found.append(_finding(r, text(r[-2]), unvid(r[-1]), _opt_bool(r[0]), change=RESOLVED,
                                          retention=r[10]))
                else:
                    unverified += 1
        with self._writing() as conn:
            conn.execute("DELETE FROM sweep_resolved WHERE sweep_id = ?", (sweep_id,))
            conn.executemany(_INSERT_RESOLVED, [
                (sweep_id, db_text(f.location), vid(f.version_id), f.is_latest, db_opt(f.member), f.offset, f.line,
                 str(f.kind), f.brand, f.masked, f.fingerprint, str(f.confidence), f.test_card, f.retention)
                for f in found])
        return found, unverified

    def _statuses(self, sweep_id: int, identities: set[tuple[Stored, Stored]]) -> dict[tuple[Stored, Stored], str]:
        """The status each of ``identities`` was recorded with in the sweep (absent: not recorded).
        Few identities (those that had findings), so their results are looked up and the sweep's
        record order is read once, not a row per item."""
        candidates: dict[int, tuple[tuple[Stored, Stored], str]] = {}
        for identity in identities:
            for rid, status in self._fetch(_RESULTS_OF_ITEM, identity):
                candidates[rid] = (identity, status)
        found: dict[tuple[Stored, Stored], str] = {}
        wanted = candidates.keys()
        for entries in self._entries(sweep_id):
            for rid in wanted & {e >> 1 for e in entries}:
                identity, status = candidates[rid]
                found[identity] = status
        return found

    # --- replay --------------------------------------------------------------------------------

    def replay(self, sweep_id: int, on_findings: Callable[[tuple[Finding, ...]], None] | None = None,
               batch: int = 1000) -> Iterator[tuple[ItemResult, RetentionVerdict | None]]:
        """The sweep's stored results and verdicts, in record order.

        With ``on_findings``, an item with more than ``batch`` findings has them handed to it
        in batches before its result is yielded (``earlier_findings`` counts them), so a
        PAN-dense item is never held whole.
        """
        self.flush()
        for entries in self._entries(sweep_id):
            for start in range(0, len(entries), _REPLAY_PAGE_SIZE):
                page = entries[start:start + _REPLAY_PAGE_SIZE]
                wanted = sorted({e >> 1 for e in page})
                rows = {r[0]: r for r in self._fetch(_REPLAY_RESULTS.format(", ".join("?" * len(wanted))), wanted)}
                for entry in page:
                    row = rows.get(entry >> 1)
                    if row is None:
                        continue  # replaced by a later record of the same item in this sweep
                    yield self._replayed(sweep_id, entry, row, on_findings, batch)

    def _replayed(self, sweep_id: int, entry: int, row: Sequence[Any],
                  on_findings: Callable[[tuple[Finding, ...]], None] | None,
                  batch: int) -> tuple[ItemResult, RetentionVerdict | None]:
        _, location, v, item_json, status, reason, detail, bytes_scanned, count, unchanged, retention, stored_in = row
        if entry & CARRIED and unchanged is None:
            unchanged = stored_in
        earlier = 0
        findings: tuple[Finding, ...]
        if on_findings is not None and count > batch:
            for rows in self._finding_pages(sweep_id, location, v, batch):
                on_findings(tuple(_finding(r, text(location), unvid(v), _opt_bool(r[0]), change=r[11],
                                           retention=r[10]) for r in rows))
            findings, earlier = (), count
        else:
            findings = () if not count else tuple(
                _finding(r, text(location), unvid(v), _opt_bool(r[0]), change=r[-1], retention=r[10])
                for r in self._fetch(_ITEM_FINDINGS, (sweep_id, location, v)))
        result = ItemResult(item_from_stored(item_json, text(location)), Status(status),
                            None if reason is None else Reason(reason), text_opt(detail), bytes_scanned, findings,
                            unchanged, earlier)
        return result, None if retention is None else verdict_from_json(retention)

    def replay_buckets(self, sweep_id: int) -> list[dict[str, Any]]:
        self.flush()
        with self._reading() as conn:
            return [json.loads(r[0]) for r in
                    conn.execute("SELECT record FROM sweep_buckets WHERE sweep_id = ? ORDER BY rowid", (sweep_id,))]

    def replay_resolved(self, sweep_id: int) -> list[Finding]:
        """What :meth:`resolved` returned (and stored) for the sweep; empty if it was never called."""
        with self._reading() as conn:
            return [_finding(r, text(r[-2]), unvid(r[-1]), _opt_bool(r[0]), change=RESOLVED, retention=r[10])
                    for r in conn.execute(_RESOLVED, (sweep_id,))]


def _sweep_info(row: tuple[Any, ...]) -> SweepInfo:
    sid, started, finished, status, targets, pattern_version, exit_status, summary = row
    return SweepInfo(sid, started, finished, status, tuple(json.loads(targets)), pattern_version, exit_status,
                     None if summary is None else json.loads(summary))


def _opt_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _finding(row: Sequence[Any], location: str, version_id: str | None, is_latest: bool | None, *,
             change: str | None, retention: str | None) -> Finding:
    """A Finding from the first ``_FINDING_COLUMNS`` of ``row`` (``is_latest`` is passed: the
    stored one, or a fresh item's)."""
    member, offset, line, kind, brand, masked, fp, confidence, test_card = row[1:10]
    return Finding(location, version_id, is_latest, text_opt(member), offset, line, Kind(kind), brand, masked, fp,
                   Confidence(confidence), bool(test_card), retention, change)
