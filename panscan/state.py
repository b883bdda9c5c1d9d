"""The state database: sweeps, what was scanned, findings, pending S3 restores, Glacier jobs and inventories.

One SQLite file (stdlib ``sqlite3``, WAL journal), written only by the coordinator process;
other processes (``panscan report``, ``panscan jobs``) may read it while a scan runs.

What callers may rely on:

* **It stores exactly what it is given.** Locations, details and findings arrive already masked
  (``findings.mask.mask_result``); this module never sees content and never adds anything to
  what it receives. A :class:`~panscan.model.Finding` holds only the masked number and the keyed
  fingerprint, so that is all that can reach the file.
* **Private files.** The parent directory is created with mode 0700 when missing; the database
  and its ``-wal``/``-shm`` files are mode 0600.
* **Errors.** A file that is not a panscan state, one written by a newer panscan, or a database
  that cannot be read or written (disk full, read-only, locked for longer than 10 s) raises
  :class:`StateError` with a one-line message naming the path. Other exceptions are bugs.
* **Consistency.** Every write is a transaction: an item row and its findings, a ``seen`` entry
  and the item row it points at, are committed together or not at all. A crash or ``kill -9``
  loses at most the rows not yet committed, never the consistency of the rest.
* **Buffering.** :meth:`State.record` and :meth:`State.record_bucket` are buffered and committed
  when 500 rows are pending, when 0.5 s have passed since the last commit (checked on the next
  call), on :meth:`State.flush`, :meth:`State.close`, and before any read that needs them. Reads
  through this object always see the buffered rows.
* **Text round trips**, file names that are not UTF-8 (surrogate-escaped) included.
* **Identity of an item** is ``(location, version_id)``; ``version_id`` None is stored as ``''``
  and comes back as None. Recording the same identity twice in one sweep replaces the first row
  and its findings. :meth:`State.lookup` treats an item as unchanged when location, version id,
  size, last-modified, etag, mtime_ns, inode and device are all equal (None equals None) and it
  was scanned completely with the same pattern version: an unchanged item is only as well
  detected as the metadata its source supplies.
* **Identity of a finding** (``fkey``) is location, version id, member, kind, fingerprint and the
  occurrence index among the item's findings with those same five values, ordered by offset:
  moving text does not turn a finding into new+resolved, a second copy of a number is a second
  finding. Every sweep stores its own copy of its findings, carried items included, so a sweep
  compares only against the one before it.
* **Resolved findings.** :meth:`State.resolved` stores what it returns in the sweep (replacing an
  earlier call's), and :meth:`State.replay_resolved` gives it back; nothing else is needed.
* **Schema** is versioned with ``PRAGMA user_version`` and tagged with ``PRAGMA application_id``;
  a file from a newer panscan is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum
from itertools import chain
from pathlib import Path
from types import TracebackType, UnionType
from typing import Any, TypeVar

from panscan.model import Confidence, Finding, Item, ItemResult, Kind, Reason, RetentionVerdict, Status

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a panscan state: "PanS", so a foreign SQLite file is recognised.
APPLICATION_ID = 0x50616E53
BUSY_TIMEOUT_SECONDS = 10.0
#: Commit the write buffer when this many rows are pending ...
FLUSH_ROWS = 500
#: ... or when this long has passed since the last commit.
FLUSH_SECONDS = 0.5

#: ``Finding.change`` values.
NEW, STILL_PRESENT, RESOLVED = "new", "still present", "resolved"

JOB_ACTIONS = frozenset({"InventoryRetrieval", "ArchiveRetrieval"})
JOB_STATUSES = frozenset({"pending", "succeeded", "failed", "collected", "expired"})


class StateError(Exception):
    """The state database cannot be used; the message is one line for the user and names the path."""


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
    ``size`` and ``tree_hash``, in the inventory's order."""

    vault: str
    region: str | None
    inventory_date: float
    collected_at: float
    archives: list[dict[str, Any]]


# --- serialisation -------------------------------------------------------------------------

_T = TypeVar("_T")
_ENUM_FIELDS: dict[type, dict[str, type[Enum]]] = {}


def _enum_fields(cls: type) -> dict[str, type[Enum]]:
    """Fields of dataclass ``cls`` typed as an enum (or enum | None), so JSON values are restored."""
    found = _ENUM_FIELDS.get(cls)
    if found is not None:
        return found
    found = _ENUM_FIELDS[cls] = {}
    for name, hint in typing.get_type_hints(cls).items():
        candidates = typing.get_args(hint) if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        for c in candidates:
            if isinstance(c, type) and issubclass(c, Enum):
                found[name] = c
    return found


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _dataclass_to_json(obj: Any) -> str:
    # Field by field, so a field added to the dataclass is stored without touching this module
    # (dataclasses.asdict would deep-copy; fields() is slow enough per item to be cached).
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(obj))
    return _ENCODER.encode({name: getattr(obj, name) for name in names})


def _dataclass_from_json(cls: type[_T], text: str) -> _T:
    data = json.loads(text)
    enums = _enum_fields(cls)
    kwargs: dict[str, Any] = {}
    # Unknown keys are ignored and missing ones take the field's default: rows written before a
    # field was added or after one was removed still load.
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            if value is not None and f.name in enums:
                value = enums[f.name](value)
            kwargs[f.name] = value
    return cls(**kwargs)


def item_to_json(item: Item) -> str:
    return _dataclass_to_json(item)


def item_from_json(text: str) -> Item:
    return _dataclass_from_json(Item, text)


def verdict_to_json(verdict: RetentionVerdict) -> str:
    return _dataclass_to_json(verdict)


def verdict_from_json(text: str) -> RetentionVerdict:
    return _dataclass_from_json(RetentionVerdict, text)


_KeyCounts = dict[tuple[str | None, str, str], int]


def finding_keys(item: Item, findings: Sequence[Finding], counts: _KeyCounts | None = None) -> list[str]:
    """The ``fkey`` of each finding of ``item``, in the order given (see the module docstring).

    ``counts`` carries the numbering from one batch of an item's findings to the next
    (batches in offset order per member), so batches get the keys the whole would get.
    """
    vid = item.version_id or ""
    counts = {} if counts is None else counts
    keys = [""] * len(findings)
    # sorted() is stable: findings at the same offset keep their order, so keys are deterministic.
    for i in sorted(range(len(findings)), key=lambda j: findings[j].offset):
        f = findings[i]
        base = (f.member, str(f.kind), f.fingerprint)
        n = counts.get(base, 0)
        counts[base] = n + 1
        # Length-prefixed parts (unambiguous whatever the names hold; "-" for no member), hashed:
        # a fixed-width key keeps the (sweep_id, fkey) index small whatever the paths.
        member = "-" if f.member is None else f"{len(f.member)}:{f.member}"
        raw = f"{len(item.location)}:{item.location}{len(vid)}:{vid}{member}{f.kind}:{f.fingerprint}:{n}"
        keys[i] = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return keys


_INT64 = range(-(2**63), 2**63)


def _int_column(value: int | None) -> int | str | None:
    # SQLite integers are signed 64-bit; an inode or device number beyond that (some network
    # filesystems) is kept as hex text instead of failing the whole sweep. Hex, because decimal
    # text would be turned into an approximate REAL by the column's INTEGER affinity.
    return value if value is None or value in _INT64 else hex(value)


# --- schema --------------------------------------------------------------------------------

_TABLES = ("sweeps", "seen", "sweep_items", "sweep_findings", "sweep_resolved", "sweep_buckets", "restores",
           "glacier_jobs")

# The columns of a stored finding (sweep_findings and sweep_resolved).
_FINDING_COLUMNS = """        is_latest INTEGER,
        member TEXT,
        "offset" INTEGER NOT NULL,
        line INTEGER NOT NULL,
        kind TEXT NOT NULL,
        brand TEXT NOT NULL,
        masked TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        confidence TEXT NOT NULL,
        test_card INTEGER NOT NULL,
        retention TEXT"""

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE sweeps (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        status TEXT NOT NULL,
        targets TEXT NOT NULL,          -- JSON list, as given
        targets_key TEXT NOT NULL,      -- JSON list, sorted and unique: sweeps of the same targets
        pattern_version TEXT NOT NULL,
        options TEXT NOT NULL,          -- JSON
        pid INTEGER,
        host TEXT,
        summary TEXT,                   -- JSON
        exit_status INTEGER)""",
    "CREATE INDEX sweeps_by_targets ON sweeps (targets_key, status)",
    # One row per item identity: the last complete scan of it. WITHOUT ROWID: lookup is one
    # primary-key seek.
    """CREATE TABLE seen (
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
        size INTEGER,
        last_modified REAL,
        etag TEXT,
        mtime_ns INTEGER,
        inode INTEGER,
        device INTEGER,
        pattern_version TEXT NOT NULL,
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        bytes_scanned INTEGER NOT NULL,
        PRIMARY KEY (location, version_id)) WITHOUT ROWID""",
    # rowid is the record order (a replaced row moves to the end).
    """CREATE TABLE sweep_items (
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
        item TEXT NOT NULL,             -- JSON of every Item field
        status TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        bytes_scanned INTEGER NOT NULL,
        findings INTEGER NOT NULL,
        unchanged_since_sweep INTEGER,
        retention TEXT,                 -- JSON of the RetentionVerdict, or NULL
        UNIQUE (sweep_id, location, version_id))""",
    "CREATE INDEX sweep_items_order ON sweep_items (sweep_id)",
    # Findings are stored under their item's location and version id; rowid is their order.
    f"""CREATE TABLE sweep_findings (
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
{_FINDING_COLUMNS},
        change TEXT,
        fkey TEXT NOT NULL)""",
    "CREATE INDEX sweep_findings_by_key ON sweep_findings (sweep_id, fkey)",
    "CREATE INDEX sweep_findings_by_item ON sweep_findings (sweep_id, location, version_id)",
    # What resolved() returned for the sweep: findings of the previous sweep no longer found.
    f"""CREATE TABLE sweep_resolved (
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
{_FINDING_COLUMNS})""",
    "CREATE INDEX sweep_resolved_by_sweep ON sweep_resolved (sweep_id)",
    """CREATE TABLE sweep_buckets (
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        bucket TEXT,
        record TEXT NOT NULL)""",
    "CREATE INDEX sweep_buckets_by_sweep ON sweep_buckets (sweep_id)",
    """CREATE TABLE restores (
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
        tier TEXT NOT NULL,
        storage_class TEXT,
        size INTEGER,
        requested_at REAL NOT NULL,
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        PRIMARY KEY (location, version_id))""",
    """CREATE TABLE glacier_jobs (
        job_id TEXT PRIMARY KEY,
        vault TEXT NOT NULL,
        region TEXT,
        action TEXT NOT NULL,
        archive_id TEXT,
        tier TEXT,
        initiated_at REAL NOT NULL,
        status TEXT NOT NULL,
        detail TEXT,
        attempts INTEGER NOT NULL,
        size INTEGER,
        description TEXT)""",
    "CREATE INDEX glacier_jobs_by_status ON glacier_jobs (status)",
)

# Added to schema version 1 after files of it existed (never released, so no version bump):
# created by every open that does not find them, so older files gain them.
_ADDED_SCHEMA: tuple[str, ...] = (
    # One row per vault and region (region '' for the default one): the last inventory collected.
    """CREATE TABLE IF NOT EXISTS glacier_inventories (
        vault TEXT NOT NULL,
        region TEXT NOT NULL,
        inventory_date REAL NOT NULL,
        collected_at REAL NOT NULL,
        archives TEXT NOT NULL,         -- JSON list of archive dicts (see StoredInventory)
        PRIMARY KEY (vault, region))""",
    "CREATE INDEX IF NOT EXISTS glacier_jobs_by_archive ON glacier_jobs (vault, archive_id)",
)
_SCHEMA += _ADDED_SCHEMA

# Statements used per item are module constants: sqlite3 caches prepared statements by text.
_LOOKUP = """SELECT s.sweep_id FROM seen AS s
    JOIN sweep_items AS i ON i.sweep_id = s.sweep_id AND i.location = s.location AND i.version_id = s.version_id
    WHERE s.location = ? AND s.version_id = ? AND s.pattern_version = ?
      AND s.size IS ? AND s.last_modified IS ? AND s.etag IS ? AND s.mtime_ns IS ? AND s.inode IS ? AND s.device IS ?
      AND i.status = 'complete'"""
_DELETE_ITEM_FINDINGS = "DELETE FROM sweep_findings WHERE sweep_id = ? AND location = ? AND version_id = ?"
_INSERT_ITEM = """INSERT OR REPLACE INTO sweep_items (sweep_id, location, version_id, item, status, reason, detail,
    bytes_scanned, findings, unchanged_since_sweep, retention) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_FINDING = """INSERT INTO sweep_findings (sweep_id, location, version_id, is_latest, member, "offset", line,
    kind, brand, masked, fingerprint, confidence, test_card, retention, change, fkey)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_UPSERT_SEEN = """INSERT OR REPLACE INTO seen (location, version_id, size, last_modified, etag, mtime_ns, inode, device,
    pattern_version, sweep_id, bytes_scanned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
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
        p.test_card, p.retention, p.location, p.version_id, i.status
    FROM sweep_findings AS p
    LEFT JOIN sweep_items AS i ON i.sweep_id = :current AND i.location = p.location AND i.version_id = p.version_id
    WHERE p.sweep_id = :previous
      AND NOT EXISTS (SELECT 1 FROM sweep_findings AS c WHERE c.sweep_id = :current AND c.fkey = p.fkey)
    ORDER BY p.rowid"""
_INSERT_RESOLVED = """INSERT INTO sweep_resolved (sweep_id, location, version_id, is_latest, member, "offset", line,
    kind, brand, masked, fingerprint, confidence, test_card, retention)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_RESOLVED = """SELECT is_latest, member, "offset", line, kind, brand, masked, fingerprint, confidence, test_card,
    retention, location, version_id FROM sweep_resolved WHERE sweep_id = ? ORDER BY rowid"""
_SWEEPS = "SELECT id, started, finished, status, targets, pattern_version, exit_status, summary FROM sweeps"
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
_REPLAY_PAGE_SIZE = 1000
_REPLAY_PAGE = """SELECT rowid, location, version_id, item, status, reason, detail, bytes_scanned, findings,
        unchanged_since_sweep, retention
    FROM sweep_items WHERE sweep_id = ? AND rowid > ? ORDER BY rowid LIMIT ?"""
_LAST_FINDINGS_OF = """SELECT is_latest, member, "offset", line, kind, brand, masked, fingerprint, confidence,
    test_card, retention, change FROM sweep_findings WHERE location = ? AND version_id = ? AND member = ?
    AND sweep_id = (SELECT max(sweep_id) FROM sweep_findings
                    WHERE location = ? AND version_id = ? AND member = ?)
    ORDER BY rowid"""
_CARRIED_ITEM = """SELECT bytes_scanned, findings, detail FROM sweep_items
    WHERE sweep_id = ? AND location = ? AND version_id = ? AND status = 'complete'"""

# A write transaction is BEGIN IMMEDIATE: the write lock is taken (waiting up to busy_timeout)
# before anything is read, so a concurrent writer can never make it fail half way.
_BEGIN = "BEGIN IMMEDIATE"

# sqlite3 exceptions that are bugs in the caller or here, not a property of the file or the disk.
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError)


_Stored = str | bytes


def _db(text: str) -> _Stored:
    """``text`` as stored: itself, or, when it holds lone surrogates (file names that are not
    UTF-8 arrive surrogate-escaped, and sqlite3 refuses them), its UTF-8 bytes with the
    surrogates passed through, as a BLOB. The same text always maps to the same value, so
    equality and lookups hold; :func:`_text` reverses it."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _db_opt(text: str | None) -> str | bytes | None:
    return None if text is None else _db(text)


def _text(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def _text_opt(stored: str | bytes | None) -> str | None:
    return None if stored is None else _text(stored)


def _vid(version_id: str | None) -> str | bytes:
    return "" if version_id is None else _db(version_id)


def _unvid(stored: str | bytes) -> str | None:
    return _text(stored) or None


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


class State:
    """An open state database. Use :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._conn = conn
        self._closed = False
        # Write buffer. Keyed by identity so a second record of an item replaces the first
        # before it reaches the database (executemany runs each statement over all rows).
        # Identities in their stored form (see _db).
        self._items: dict[tuple[int, _Stored, _Stored], tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = {}
        self._seen: dict[tuple[_Stored, _Stored], tuple[Any, ...]] = {}
        self._buckets: list[tuple[int, str | None, str]] = []
        self._pending_sweeps: set[int] = set()
        self._rows = 0
        self._last_commit = time.monotonic()
        self._pattern_versions: dict[int, str] = {}
        # The findings annotate() returned last and their keys (identity-checked: a tuple is
        # immutable, and holding it keeps its id from being reused).
        self._annotated: tuple[tuple[Finding, ...], list[str]] | None = None
        # Items whose findings come in batches before their result (record_findings): the
        # numbering of their keys so far, and per sweep which are open, which started since
        # the last flush (rows of an earlier attempt are deleted first) and their rows.
        self._stream_counts: dict[tuple[_Stored, _Stored], _KeyCounts] = {}
        self._streamed: set[tuple[int, _Stored, _Stored]] = set()
        self._stream_starts: set[tuple[int, _Stored, _Stored]] = set()
        self._stream_rows: list[tuple[Any, ...]] = []
        self._keep: set[tuple[int, _Stored, _Stored]] = set()  # buffered items whose rows are partly written

    # --- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> State:
        """Open (creating if missing) the state database at ``path``; raises :class:`StateError`."""
        path = Path(path).expanduser()
        # The umask covers the directory, the database and the -wal/-shm files SQLite creates
        # while setting up, so no file exists even briefly with wider permissions.
        previous_umask = os.umask(0o077)
        try:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot create the state directory {path.parent}: {exc.strerror or exc}") from None
            try:
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                       cached_statements=64)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the state database {path}: {exc}") from None
            try:
                state = cls(conn, path)
                state._set_up()
            except BaseException:
                conn.close()
                raise
        finally:
            os.umask(previous_umask)
        return state

    def _set_up(self) -> None:
        conn, path = self._conn, self.path
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._check_identity(create=False)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                # Some filesystems (network mounts) cannot share WAL memory; the rollback journal
                # is still transactional, just slower for concurrent readers.
                logger.warning("state database %s: write-ahead logging unavailable, using %s journal", path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_BEGIN)
            try:
                self._check_identity(create=True)  # again, under the write lock: another process may have won
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
        except StateError:
            raise
        except _BUGS:
            raise
        except sqlite3.OperationalError as exc:
            raise StateError(f"cannot open the state database {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path} is not a panscan state database ({exc})") from None
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                os.chmod(name, 0o600)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StateError(f"cannot make the state database {name} private: {exc.strerror or exc}") from None

    def _check_identity(self, *, create: bool) -> None:
        conn, path = self._conn, self.path
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id != APPLICATION_ID:
            if app_id == 0 and version == 0 and not tables:
                if create:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            raise StateError(f"{path} is not a panscan state database")
        if version > SCHEMA_VERSION:
            raise StateError(f"the state database {path} was written by a newer panscan "
                             f"(schema version {version}, this panscan reads up to {SCHEMA_VERSION})")
        # Version 1 is the only schema so far; later versions migrate older files here.
        missing = [t for t in _TABLES if t not in tables]
        if version < 1 or missing:
            raise StateError(f"{path} is not a panscan state database (missing tables: {', '.join(missing)})"
                             if missing else f"{path} is not a panscan state database (schema version {version})")
        if create:
            for statement in _ADDED_SCHEMA:
                conn.execute(statement)

    def close(self) -> None:
        """Commit what is buffered and close; closing twice is harmless."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        # Keep what was recorded before the failure, but let the original exception through.
        try:
            self.close()
        except StateError as err:
            logger.error("%s", err)

    # --- error handling ----------------------------------------------------------------------

    def _error(self, action: str, exc: sqlite3.Error) -> StateError:
        return StateError(f"cannot {action} the state database {self.path}: {exc}")

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """All rows of one query; the per-item read path (no context manager to set up)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except _BUGS:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn
        except _BUGS:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction; rolled back on any failure, sqlite3 failures become StateError."""
        conn = self._conn
        try:
            conn.execute(_BEGIN)
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
        except _BUGS:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._error("write", exc) from None

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

    # --- items ---------------------------------------------------------------------------------

    def lookup(self, item: Item, pattern_version: str) -> int | None:
        """The sweep in which an identical item was scanned completely with ``pattern_version``."""
        location, vid = _db(item.location), _vid(item.version_id)
        identity = (_int_column(item.size), item.last_modified, item.etag, _int_column(item.mtime_ns),
                    _int_column(item.inode), _int_column(item.device))
        pending = self._seen.get((location, vid))
        if pending is not None and pending[2:8] == identity and pending[8] == pattern_version:
            pending_sweep: int = pending[9]
            return pending_sweep
        rows = self._fetch(_LOOKUP, (location, vid, pattern_version, *identity))
        if not rows:
            return None
        sweep_id = int(rows[0][0])
        buffered = self._items.get((sweep_id, location, vid))
        if buffered is not None and buffered[0][4] != Status.COMPLETE:
            return None  # that complete row is about to be replaced by a failed retry
        return sweep_id

    def carried(self, from_sweep: int, item: Item, *, max_findings: int | None = None) -> ItemResult:
        """The complete result of ``item`` stored in ``from_sweep``, rebuilt for the fresh listing.

        The fresh ``item`` wins (its metadata, ``is_latest``, ``version_id``); findings keep
        their stored member, offset, masked number and fingerprint, with ``change`` and
        ``retention`` cleared for the caller to judge again; ``unchanged_since_sweep`` is
        ``from_sweep``. With more than ``max_findings`` findings, none are loaded:
        ``earlier_findings`` says how many there are, for :meth:`carried_findings`.
        """
        if from_sweep in self._pending_sweeps:
            self.flush()
        location, vid = _db(item.location), _vid(item.version_id)
        rows = self._fetch(_CARRIED_ITEM, (from_sweep, location, vid))
        if not rows:
            raise StateError(f"the state database {self.path} holds no complete result for {item.location!r} "
                             f"in sweep {from_sweep}")
        bytes_scanned, count, detail = rows[0]
        if max_findings is not None and count > max_findings:
            return ItemResult(item, Status.COMPLETE, None, _text_opt(detail), bytes_scanned,
                              unchanged_since_sweep=from_sweep, earlier_findings=count)
        findings = () if not count else tuple(
            _finding(r, item.location, item.version_id, item.is_latest, change=None, retention=None)
            for r in self._fetch(_ITEM_FINDINGS, (from_sweep, location, vid)))
        return ItemResult(item, Status.COMPLETE, None, _text_opt(detail), bytes_scanned, findings,
                          unchanged_since_sweep=from_sweep)

    def carried_findings(self, from_sweep: int, item: Item, batch: int) -> Iterator[tuple[Finding, ...]]:
        """The findings :meth:`carried` did not load, in batches of ``batch``, in stored order
        (a page per query: nothing is held between batches but the last rowid)."""
        if from_sweep in self._pending_sweeps:
            self.flush()
        for rows in self._finding_pages(from_sweep, _db(item.location), _vid(item.version_id), batch):
            yield tuple(_finding(r, item.location, item.version_id, item.is_latest, change=None, retention=None)
                        for r in rows)

    def _finding_pages(self, sweep_id: int, location: _Stored, vid: _Stored, size: int) -> Iterator[list[Any]]:
        """An item's stored finding rows (the columns of _ITEM_FINDINGS, then the rowid), a page
        of ``size`` per query."""
        after = -1
        while rows := self._fetch(_ITEM_FINDINGS_PAGE, (sweep_id, location, vid, after, size)):
            after = rows[-1][-1]
            yield rows

    def last_findings(self, item: Item, member: str) -> tuple[Finding, ...]:
        """The findings under ``member`` that the latest sweep which had any recorded for
        ``item`` (e.g. those in a Glacier archive's description, scanned once, when its
        inventory was collected), rebuilt for ``item``."""
        self.flush()
        key = (_db(item.location), _vid(item.version_id), member)
        return tuple(_finding(r, item.location, item.version_id, item.is_latest, change=None, retention=None)
                     for r in self._fetch(_LAST_FINDINGS_OF, key + key))

    def annotate(self, previous_id: int | None, result: ItemResult, *, streaming: bool = False) -> ItemResult:
        """``result`` with each finding's ``change``: "new" or "still present" against ``previous_id``.

        ``streaming``: ``result`` holds a batch of the findings of an item still being
        scanned (see :meth:`record_findings`); its later batches and result continue it.
        """
        if not result.findings:
            return result
        identity = (_db(result.item.location), _vid(result.item.version_id))
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
                      counts: _KeyCounts | None) -> list[tuple[Any, ...]]:
        if not findings:
            keys: list[str] = []
        elif self._annotated is not None and self._annotated[0] is findings:
            keys = self._annotated[1]
        else:
            keys = finding_keys(item, findings, counts)
        location, vid = _db(item.location), _vid(item.version_id)
        return [
            (sweep_id, location, vid, f.is_latest, _db_opt(f.member), f.offset, f.line, str(f.kind), f.brand, f.masked,
             f.fingerprint, str(f.confidence), f.test_card, f.retention, f.change, k)
            for f, k in zip(findings, keys, strict=True)]

    def record_findings(self, sweep_id: int, batch: ItemResult) -> None:
        """Store a batch of the findings of an item still being scanned (annotated with
        ``streaming``); its :meth:`record` comes later with the rest. Buffered like record,
        so an item's findings need not all be held until its end."""
        self._pattern_version(sweep_id)
        item = batch.item
        identity = (_db(item.location), _vid(item.version_id))
        key = (sweep_id, *identity)
        if key not in self._streamed:
            # A new attempt at the item in this sweep: what an earlier one stored goes.
            self._streamed.add(key)
            self._stream_starts.add(key)
            self._items.pop(key, None)
        rows = self._finding_rows(sweep_id, item, batch.findings, self._stream_counts.setdefault(identity, {}))
        self._stream_rows += rows
        self._pending_sweeps.add(sweep_id)
        self._rows += len(rows)
        self._maybe_flush()

    def record(self, sweep_id: int, result: ItemResult, verdict: RetentionVerdict | None = None) -> None:
        """Store ``result`` (and its verdict) in the sweep; buffered (see the module docstring).

        A complete result that was read (not carried) also becomes the ``seen`` entry of its
        item, for :meth:`lookup` in later sweeps.
        """
        # Also checks the sweep exists (KeyError), so a bad id fails here, not in a later flush.
        pattern_version = self._pattern_version(sweep_id)
        item = result.item
        location, vid = _db(item.location), _vid(item.version_id)
        key = (sweep_id, location, vid)
        finding_rows = self._finding_rows(sweep_id, item, result.findings,
                                          self._stream_counts.pop((location, vid), None))
        if key in self._streamed:
            self._streamed.discard(key)
            self._keep.add(key)  # its first findings were stored in batches
        else:
            self._keep.discard(key)
        item_row = (sweep_id, location, vid, item_to_json(item), str(result.status),
                    None if result.reason is None else str(result.reason), _db_opt(result.detail), result.bytes_scanned,
                    result.findings_total, result.unchanged_since_sweep,
                    None if verdict is None else verdict_to_json(verdict))
        # Re-inserted rather than overwritten so the buffer keeps record order.
        self._items.pop(key, None)
        self._items[key] = (item_row, finding_rows)
        self._pending_sweeps.add(sweep_id)
        seen_key = (location, vid)
        if result.status is Status.COMPLETE:
            if result.unchanged_since_sweep is None:
                self._seen[seen_key] = (
                    location, vid, _int_column(item.size), item.last_modified, item.etag, _int_column(item.mtime_ns),
                    _int_column(item.inode), _int_column(item.device), pattern_version, sweep_id,
                    result.bytes_scanned)
        else:
            # A retry that failed after a complete read in this sweep: the buffered seen entry
            # would point lookup at a row that is no longer complete.
            pending = self._seen.get(seen_key)
            if pending is not None and pending[9] == sweep_id:
                del self._seen[seen_key]
        self._rows += 1 + len(finding_rows)
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
        if not (self._items or self._seen or self._buckets or self._stream_rows or self._stream_starts):
            self._last_commit = time.monotonic()
            return
        try:
            with self._writing() as conn:
                conn.executemany(_DELETE_ITEM_FINDINGS, (k for k in self._items if k not in self._keep))
                conn.executemany(_DELETE_ITEM_FINDINGS, self._stream_starts)
                conn.executemany(_INSERT_FINDING, self._stream_rows)
                conn.executemany(_INSERT_ITEM, (row for row, _ in self._items.values()))
                conn.executemany(_INSERT_FINDING, chain.from_iterable(f for _, f in self._items.values()))
                conn.executemany(_UPSERT_SEEN, self._seen.values())
                conn.executemany(_INSERT_BUCKET, self._buckets)
        finally:
            # Also after a failure: retrying on every record() would stall each one for the busy timeout.
            self._last_commit = time.monotonic()
        self._items.clear()
        self._keep.clear()
        self._stream_starts.clear()
        self._stream_rows = []
        self._seen.clear()
        self._buckets.clear()
        self._pending_sweeps.clear()
        self._rows = 0

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
            with self._reading() as conn:
                for r in conn.execute(_GONE, {"current": sweep_id, "previous": previous_id}):
                    status = r[-1]
                    if status == Status.COMPLETE or (status is None and enumeration_complete):
                        found.append(_finding(r, _text(r[-3]), _unvid(r[-2]), _opt_bool(r[0]), change=RESOLVED,
                                              retention=r[10]))
                    else:
                        unverified += 1
        with self._writing() as conn:
            conn.execute("DELETE FROM sweep_resolved WHERE sweep_id = ?", (sweep_id,))
            conn.executemany(_INSERT_RESOLVED, [
                (sweep_id, _db(f.location), _vid(f.version_id), f.is_latest, _db_opt(f.member), f.offset, f.line,
                 str(f.kind), f.brand, f.masked, f.fingerprint, str(f.confidence), f.test_card, f.retention)
                for f in found])
        return found, unverified

    # --- replay --------------------------------------------------------------------------------

    def replay(self, sweep_id: int, on_findings: Callable[[tuple[Finding, ...]], None] | None = None,
               batch: int = 1000) -> Iterator[tuple[ItemResult, RetentionVerdict | None]]:
        """The sweep's stored results and verdicts, in record order.

        With ``on_findings``, an item with more than ``batch`` findings has them handed to it
        in batches before its result is yielded (``earlier_findings`` counts them), so a
        PAN-dense item is never held whole.
        """
        self.flush()
        after = 0
        while True:
            # Page by page: a cursor left open across the caller's work would pin a read snapshot
            # (and keep the WAL growing) for as long as a report takes; fetching a million items
            # at once would hold them all in memory.
            page = self._fetch(_REPLAY_PAGE, (sweep_id, after, _REPLAY_PAGE_SIZE))
            if not page:
                return
            for rowid, location, vid, item_json, status, reason, detail, bytes_scanned, count, unchanged, retention \
                    in page:
                after = rowid
                earlier = 0
                findings: tuple[Finding, ...]
                if on_findings is not None and count > batch:
                    for rows in self._finding_pages(sweep_id, location, vid, batch):
                        on_findings(tuple(_finding(r, _text(location), _unvid(vid), _opt_bool(r[0]), change=r[11],
                                                   retention=r[10]) for r in rows))
                    findings, earlier = (), count
                else:
                    findings = () if not count else tuple(
                        _finding(r, _text(location), _unvid(vid), _opt_bool(r[0]), change=r[-1], retention=r[10])
                        for r in self._fetch(_ITEM_FINDINGS, (sweep_id, location, vid)))
                result = ItemResult(item_from_json(item_json), Status(status),
                                    None if reason is None else Reason(reason), _text_opt(detail), bytes_scanned,
                                    findings, unchanged, earlier)
                yield result, None if retention is None else verdict_from_json(retention)

    def replay_buckets(self, sweep_id: int) -> list[dict[str, Any]]:
        self.flush()
        with self._reading() as conn:
            return [json.loads(r[0]) for r in
                    conn.execute("SELECT record FROM sweep_buckets WHERE sweep_id = ? ORDER BY rowid", (sweep_id,))]

    def replay_resolved(self, sweep_id: int) -> list[Finding]:
        """What :meth:`resolved` returned (and stored) for the sweep; empty if it was never called."""
        with self._reading() as conn:
            return [_finding(r, _text(r[-2]), _unvid(r[-1]), _opt_bool(r[0]), change=RESOLVED, retention=r[10])
                    for r in conn.execute(_RESOLVED, (sweep_id,))]

    # --- S3 restores ---------------------------------------------------------------------------

    def add_restore(self, location: str, version_id: str | None, tier: str, storage_class: str | None,
                    size: int | None, requested_at: float, sweep_id: int) -> None:
        """Remember a requested restore (replacing an earlier one of the same version)."""
        with self._writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO restores (location, version_id, tier, storage_class, size, requested_at, "
                "sweep_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_db(location), _vid(version_id), tier, storage_class, size, requested_at, sweep_id))

    def clear_restore(self, location: str, version_id: str | None) -> bool:
        """Forget a restore; whether one was pending."""
        with self._writing() as conn:
            cur = conn.execute("DELETE FROM restores WHERE location = ? AND version_id = ?",
                               (_db(location), _vid(version_id)))
            return cur.rowcount > 0

    def pending_restores(self) -> list[PendingRestore]:
        """Oldest request first."""
        with self._reading() as conn:
            return [PendingRestore(_text(loc), _unvid(vid), tier, sc, size, at, sid)
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

    def inventory(self, vault: str, region: str | None) -> StoredInventory | None:
        """The inventory last stored for the vault in ``region``, or None."""
        rows = self._fetch("SELECT inventory_date, collected_at, archives FROM glacier_inventories "
                           "WHERE vault = ? AND region = ?", (vault, region or ""))
        if not rows:
            return None
        inventory_date, collected_at, archives = rows[0]
        return StoredInventory(vault, region, inventory_date, collected_at, json.loads(archives))




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
    return Finding(location, version_id, is_latest, _text_opt(member), offset, line, Kind(kind), brand, masked, fp,
                   Confidence(confidence), bool(test_card), retention, change)
