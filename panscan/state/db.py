"""Opening the state database: files, schema, identity, transactions, errors, column values.

Everything else in :mod:`panscan.state` builds on :class:`StateDB`; nothing here knows about
sweeps or jobs beyond the schema that holds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: ``PRAGMA application_id`` of a panscan state: "PanS", so a foreign SQLite file is recognised.
APPLICATION_ID = 0x50616E53
#: Commit the write buffer when this many rows are pending ...
FLUSH_ROWS = 500
#: ... or when this long has passed since the last commit.
FLUSH_SECONDS = 0.5


class StateError(Exception):
    """The state database cannot be used; the message is one line for the user and names the path."""


_INT64 = range(-(2**63), 2**63)


def int_column(value: int | None) -> int | str | None:
    # SQLite integers are signed 64-bit; an inode or device number beyond that (some network
    # filesystems) is kept as hex text instead of failing the whole sweep. Hex, because decimal
    # text would be turned into an approximate REAL by the column's INTEGER affinity.
    return value if value is None or value in _INT64 else hex(value)


Stored = str | bytes


def db_text(text: str) -> Stored:
    """``text`` as stored: itself, or, when it holds lone surrogates (file names that are not
    UTF-8 arrive surrogate-escaped, and sqlite3 refuses them), its UTF-8 bytes with the
    surrogates passed through, as a BLOB. The same text always maps to the same value, so
    equality and lookups hold; :func:`text` reverses it."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def db_opt(text: str | None) -> str | bytes | None:
    return None if text is None else db_text(text)


def text(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def text_opt(stored: str | bytes | None) -> str | None:
    return None if stored is None else text(stored)


def vid(version_id: str | None) -> str | bytes:
    return "" if version_id is None else db_text(version_id)


def unvid(stored: str | bytes) -> str | None:
    return text(stored) or None


# --- schema --------------------------------------------------------------------------------

TABLES = ("sweeps", "patterns", "seen", "results", "sweep_records", "sweep_findings", "sweep_resolved", "sweep_buckets",
          "restores", "glacier_jobs")

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

# Sweep ids in seen, results and sweep_findings carry no foreign key: `state prune` removes a
# sweep while rows it stored stay, shared by the later sweeps that carried them.
SCHEMA: tuple[str, ...] = (
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
    # One row per item identity: its last complete scan, and the stored result a later sweep
    # carries when the item is unchanged. WITHOUT ROWID: lookup is one primary-key seek.
    """CREATE TABLE seen (
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
        size INTEGER,
        last_modified REAL,
        etag TEXT,
        mtime_ns INTEGER,
        inode INTEGER,
        device INTEGER,
        pattern INTEGER NOT NULL,       -- patterns.id of the pattern set it was read with
        sweep_id INTEGER NOT NULL,      -- the sweep that read it (unchanged_since_sweep of a carried result)
        result_id INTEGER NOT NULL,     -- results.id
        PRIMARY KEY (location, version_id)) WITHOUT ROWID""",
    # Pattern set versions (64 hex digits each), numbered so seen stores a small integer.
    "CREATE TABLE patterns (id INTEGER PRIMARY KEY, version TEXT NOT NULL UNIQUE)",
    # An item result as some sweep recorded it, stored once: every later sweep that records
    # the same result only names its id in sweep_records.
    """CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        stored_in INTEGER NOT NULL,     -- the sweep that stored it
        location TEXT NOT NULL,
        version_id TEXT NOT NULL,
        item TEXT NOT NULL,             -- JSON of the Item's fields but location (codec.item_to_stored)
        status TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        bytes_scanned INTEGER NOT NULL,
        findings INTEGER NOT NULL,
        unchanged_since_sweep INTEGER,
        retention TEXT)                 -- JSON of the RetentionVerdict, or NULL""",
    "CREATE INDEX results_by_item ON results (location, version_id)",
    # What a sweep recorded, in record order: chunks of packed result references (see
    # panscan.state.records), a few bytes per item whatever the item.
    """CREATE TABLE sweep_records (
        sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
        chunk INTEGER NOT NULL,
        entries BLOB NOT NULL,
        PRIMARY KEY (sweep_id, chunk)) WITHOUT ROWID""",
    # Findings are stored per sweep under their item's location and version id; rowid is their order.
    f"""CREATE TABLE sweep_findings (
        sweep_id INTEGER NOT NULL,
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

# Created by every open that does not find them (a file whose table was dropped gains it back).
ADDED_SCHEMA: tuple[str, ...] = (
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
SCHEMA += ADDED_SCHEMA


# A write transaction is BEGIN IMMEDIATE: the write lock is taken (waiting up to busy_timeout)
# before anything is read, so a concurrent writer can never make it fail half way.
_BEGIN = "BEGIN IMMEDIATE"

# sqlite3 exceptions that are bugs in the caller or here, not a property of the file or the disk.
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError)


class StateDB:
    """The connection and its transactions; :class:`panscan.state.State` adds the rest."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._conn = conn
        self._closed = False

    # --- opening and closing ---------------------------------------------------------------

    @classmethod
    def _open(cls, path: Path, busy_timeout: float) -> Self:
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
                conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, cached_statements=64)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the state database {path}: {exc}") from None
            try:
                state = cls(conn, path)
                state._set_up(busy_timeout)
            except BaseException:
                conn.close()
                raise
        finally:
            os.umask(previous_umask)
        return state

    def _set_up(self, busy_timeout: float) -> None:
        conn, path = self._conn, self.path
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._check_identity(create=False)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                # Some filesystems (network mounts) cannot share WAL memory; the rollback journal
                # is still transactional, just slower for concurrent readers.
                logger.warning("state database %s: write-ahead logging unavailable, using %s journal", path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            with _transaction(conn):
                self._check_identity(create=True)  # again, under the write lock: another process may have won
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
                    for statement in SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            raise StateError(f"{path} is not a panscan state database")
        if version > SCHEMA_VERSION:
            raise StateError(f"the state database {path} was written by a newer panscan "
                             f"(schema version {version}, this panscan reads up to {SCHEMA_VERSION})")
        if 1 <= version < SCHEMA_VERSION:
            # Version 1 kept a full copy of every item per sweep; its rows are not converted
            # (that would rewrite the whole file). The user moves it aside and starts afresh.
            raise StateError(f"the state database {path} was written by an older panscan (schema version {version}, "
                             f"this panscan needs {SCHEMA_VERSION}): move it aside (e.g. mv {path} {path}.v{version}) "
                             "and scan again; the next sweep reads every item once and starts a new history")
        missing = [t for t in TABLES if t not in tables]
        if version < 1 or missing:
            raise StateError(f"{path} is not a panscan state database (missing tables: {', '.join(missing)})"
                             if missing else f"{path} is not a panscan state database (schema version {version})")
        if create:
            for statement in ADDED_SCHEMA:
                conn.execute(statement)

    def close(self) -> None:
        """Commit what is buffered and close; closing twice is harmless."""
        if self._closed:
            return
        try:
            self._flush_on_close()
        finally:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Self:
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

    def _flush_on_close(self) -> None:
        """Commit what a subclass buffers (nothing here)."""

    # --- error handling ----------------------------------------------------------------------

    def _error(self, action: str, exc: sqlite3.Error) -> StateError:
        return StateError(f"cannot {action} the state database {self.path}: {exc}")

    def _fetch(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
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
        try:
            with _transaction(self._conn) as conn:
                yield conn
        except _BUGS:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._error("write", exc) from None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back when anything fails inside or at the commit."""
    conn.execute(_BEGIN)
    try:
        yield conn
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
