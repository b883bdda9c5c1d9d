"""Removing old sweeps: ``panscan state prune`` and ``[state]`` in panscan.toml.

A sweep is removed with every row only it referenced: its record order, findings, resolved
findings and bucket records, and the stored results no remaining sweep names. Results a kept
sweep carried stay, with the findings the sweep that stored them recorded (a later unchanged
item is carried from them). Never removed: a running sweep, the newest complete sweep of each
set of targets (the one incremental scanning and "resolved" compare against), and a sweep that
requested an S3 restore still pending (``panscan jobs`` names it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from panscan.state.records import unpack
from panscan.state.sweeps import SweepStore

_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class PruneResult:
    sweeps: tuple[int, ...]  # removed, oldest first
    results: int  # stored item results removed
    findings: int  # finding rows removed (per sweep, resolved ones included)
    kept: int  # sweeps left
    bytes_before: int  # database and WAL, before
    bytes_after: int  # and after (after VACUUM when asked for, else the same file with free pages)


def _choose(rows: list[tuple[int, float, str, str]], protected: set[int], keep: int | None,
            cutoff: float | None) -> tuple[list[int], list[int]]:
    """The sweeps to remove (oldest first) and to keep (newest first), from ``rows`` newest first."""
    newest_complete: set[str] = set()
    for sid, _, status, targets_key in rows:
        if status == "running":
            protected.add(sid)
        elif status == "complete" and targets_key not in newest_complete:
            newest_complete.add(targets_key)
            protected.add(sid)
    gone = sorted(sid for n, (sid, started, _, _) in enumerate(rows)
                  if sid not in protected
                  and ((keep is not None and n >= keep) or (cutoff is not None and started < cutoff)))
    removed = set(gone)
    return gone, [r[0] for r in rows if r[0] not in removed]


def _size(path: Path) -> int:
    total = 0
    for name in (path, Path(f"{path}-wal")):
        try:
            total += os.stat(name).st_size
        except FileNotFoundError:
            pass
    return total


class PruneStore(SweepStore):
    def prune(self, *, keep: int | None = None, older_than_days: int | None = None, now: float,
              vacuum: bool = True) -> PruneResult:
        """Remove the sweeps beyond the newest ``keep`` and those started more than
        ``older_than_days`` before ``now`` (either bound, or both), except those never removed
        (see the module docstring). ``vacuum`` returns the freed pages to the filesystem."""
        if keep is not None and keep < 1:
            raise ValueError("keep must be at least 1")
        if older_than_days is not None and older_than_days < 0:
            raise ValueError("older_than_days must not be negative")
        self.flush()
        before = _size(self.path)
        # Chosen under the write lock: a scan starting meanwhile cannot lose the sweep it compares with.
        with self._writing() as conn:
            gone, kept = _choose(conn.execute("SELECT id, started, status, targets_key FROM sweeps ORDER BY id DESC")
                                 .fetchall(), {r[0] for r in conn.execute("SELECT DISTINCT sweep_id FROM restores")},
                                 keep, None if older_than_days is None else now - older_than_days * _SECONDS_PER_DAY)
            if not gone:
                return PruneResult((), 0, 0, len(kept), before, before)
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_gone (id INTEGER PRIMARY KEY)")
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_named (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM prune_gone")
            conn.execute("DELETE FROM prune_named")
            conn.executemany("INSERT INTO prune_gone (id) VALUES (?)", [(s,) for s in gone])
            # Only results stored by a removed sweep can go: which of them a kept sweep names.
            low, high = conn.execute("SELECT min(id), max(id) FROM results WHERE stored_in IN prune_gone").fetchone()
            if low is not None:
                for sid in kept:
                    for blob, in conn.execute("SELECT entries FROM sweep_records WHERE sweep_id = ? ORDER BY chunk",
                                              (sid,)).fetchall():
                        named = [(e >> 1,) for e in unpack(blob) if low <= e >> 1 <= high]
                        conn.executemany("INSERT OR IGNORE INTO prune_named (id) VALUES (?)", named)
            results = conn.execute("DELETE FROM results WHERE stored_in IN prune_gone "
                                   "AND id NOT IN prune_named").rowcount
            conn.execute("DELETE FROM seen WHERE NOT EXISTS (SELECT 1 FROM results WHERE id = seen.result_id)")
            # A removed sweep's findings go, but those stored with a result that stays.
            findings = conn.execute(
                "DELETE FROM sweep_findings WHERE sweep_id IN prune_gone AND NOT EXISTS ("
                "SELECT 1 FROM results AS r WHERE r.location = sweep_findings.location "
                "AND r.version_id = sweep_findings.version_id AND r.stored_in = sweep_findings.sweep_id)").rowcount
            findings += conn.execute("DELETE FROM sweep_resolved WHERE sweep_id IN prune_gone").rowcount
            for table in ("sweep_records", "sweep_buckets"):
                conn.execute(f"DELETE FROM {table} WHERE sweep_id IN prune_gone")  # noqa: S608 (constant names)
            conn.execute("DELETE FROM sweeps WHERE id IN prune_gone")
            conn.execute("DELETE FROM prune_gone")
            conn.execute("DELETE FROM prune_named")
        for sid in gone:
            self._chunks.pop(sid, None)
            self._pattern_versions.pop(sid, None)
        if vacuum:
            with self._reading() as conn:
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return PruneResult(tuple(gone), results, findings, len(kept), before, _size(self.path))


def describe(result: PruneResult) -> str:
    """One line for the user."""
    if not result.sweeps:
        return f"nothing to prune: {_count(result.kept, 'sweep')} kept"
    ids = json.dumps(list(result.sweeps))[1:-1].replace(" ", "")
    return (f"removed {_count(len(result.sweeps), 'sweep')} ({ids}), "
            f"{_count(result.results, 'stored item result')} and {_count(result.findings, 'finding row')}; "
            f"{_count(result.kept, 'sweep')} kept; "
            f"{result.bytes_before - result.bytes_after} bytes reclaimed "
            f"({result.bytes_before} -> {result.bytes_after})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
