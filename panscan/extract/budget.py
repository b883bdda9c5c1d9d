"""Limits on what extracting one item may cost, and the accounting that enforces them.

``Limits`` is the frozen, picklable configuration (built by the config loader from
``[limits]`` in ``panscan.toml``, or left at its safe defaults). ``Meter`` is the mutable,
per-item accounting an extractor updates as it reads and produces bytes; the worker creates
one per item, passes it to :func:`panscan.extract.expand.open_streams`, and afterwards reads
``bytes_in`` (raw bytes consumed from the item: its ``bytes_scanned``) and ``bytes_expanded``.

An extractor that hits a limit, or that meets data it cannot decode, raises
:class:`ExtractError` from its chunk iterator *after* yielding everything it produced before
that point; the expansion framework turns it into a ``Problem`` for that branch (or, for
the per-item budgets in :data:`ITEM_WIDE_REASONS`, for everything after it), so the caller
scans what was read and records the item as ``partial`` with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from panscan.model import Reason

#: The compression ratio is judged only once this many bytes have been produced: small,
#: highly compressible files (a page of zeros, a sparse log) are legitimate, and the
#: ratio of a few kilobytes says nothing about a bomb.
RATIO_GRACE_BYTES = 16 * 2**20


#: Reasons that exhaust the whole item's budget: once one is raised, nothing more of the
#: item is extracted (other reasons stop only the branch they arose in).
ITEM_WIDE_REASONS = frozenset({
    Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
    Reason.ARCHIVE_TOTAL_FILES_OVER_LIMIT,
    Reason.TIME_CUT_OFF_REACHED,
    Reason.READ_ERROR,  # the item itself failed to read: every branch reads from it
})


class ExtractError(Exception):
    """An item's content could not be extracted completely.

    ``reason`` is the item's reason code; ``detail`` explains it for a person and never
    contains content from the item (a member name or a path is fine).
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """How much work extracting one item may take.

    ``max_archive_depth``: how many containers (compressed layers included: a ``.tar.gz``
    is two) may enclose a stream. ``max_expanded_bytes``: bytes produced per item by
    decompressors and container handlers (zip members, document text; tar members and raw
    bytes are slices of their input and are not counted). ``max_members``: parts (archive
    members, document parts) per item. ``max_ratio`` compares bytes a decoder or handler
    actually produced with the bytes read for it (headers declaring sizes are never
    trusted) and is checked only after :data:`RATIO_GRACE_BYTES` have been produced.
    ``max_spool_bytes``: how much of a non-seekable container (a zip inside a tar.gz, a
    decompressed PDF) may be held in memory at once to give its parser random access;
    nothing is ever spooled to disk.
    ``max_decoder_memory`` caps what one decoder may allocate (an xz header may ask for a
    dictionary of gigabytes). ``max_item_seconds`` is wall time from the moment the item's
    streams are opened, including the time the caller spends between chunks.
    """

    max_archive_depth: int = 8
    max_expanded_bytes: int = 4 * 2**30
    max_members: int = 100_000
    max_ratio: float = 1000.0
    max_item_seconds: float = 3600.0
    max_decoder_memory: int = 256 * 2**20
    max_spool_bytes: int = 256 * 2**20


@dataclass
class Meter:
    """Per-item byte accounting and deadline, shared by every stream of one item.

    ``bytes_in``: raw bytes read from the item. ``bytes_expanded``: bytes produced by
    decompressors (raw pass-through bytes are not counted: ``max_expanded_bytes`` limits
    expansion, not plain file size). ``deadline``: a ``time.monotonic()`` value, set when
    the first stream is opened if the caller left it ``None``.
    """

    bytes_in: int = 0
    bytes_expanded: int = 0
    deadline: float | None = field(default=None)

    def start(self, limits: Limits) -> None:
        """Start the item's clock, unless the caller already did."""
        if self.deadline is None:
            self.deadline = time.monotonic() + limits.max_item_seconds

    def fit(self, out: bytes, limits: Limits) -> bytes:
        """The part of freshly produced ``out`` that fits ``max_expanded_bytes``, counted in
        ``bytes_expanded``. When it is shorter than ``out`` the caller yields it and then
        raises :meth:`over_expanded` (so exactly the limit is produced)."""
        allowed = max(0, limits.max_expanded_bytes - self.bytes_expanded)
        if len(out) > allowed:
            out = out[:allowed]
        self.bytes_expanded += len(out)
        return out

    @staticmethod
    def over_expanded(limits: Limits) -> ExtractError:
        return ExtractError(Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
                            f"extracted more than {limits.max_expanded_bytes} bytes")

    def check_time(self) -> None:
        """Raise ``TIME_CUT_OFF_REACHED`` once the deadline has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise ExtractError(Reason.TIME_CUT_OFF_REACHED, "item time limit reached")


class OutputBudget:
    """Bytes one handler may still produce (``Limits.max_expanded_bytes``), for handlers that
    decode their parts themselves (PDF, e-mail) and must stop on their own when called
    directly; the framework's meter counts the same bytes again for the whole item."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.left = limit
        self.exhausted = False
        self._what = what

    def check(self) -> None:
        if self.exhausted:
            raise self._error()

    def _error(self) -> ExtractError:
        return ExtractError(
            Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
            f"{self._what} produced more than {self.limit} bytes of text and attachments",
        )

    def take(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` up to the budget; past it, the part of the chunk that fits, then the error."""
        for chunk in chunks:
            if len(chunk) > self.left:
                if self.left:
                    yield chunk[: self.left]
                self.left = 0
                self.exhausted = True
                raise self._error()
            self.left -= len(chunk)
            yield chunk
