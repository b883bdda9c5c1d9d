"""Card numbers and track data in byte streams.

Detection rules (DESIGN.md): a *run* is a maximal stretch of digits in which single spaces or
dashes may stand between digits; its *groups* are the contiguous digit stretches. Every window
of consecutive groups holding 13-19 digits is a candidate, so a PAN followed by a CVV group is
still found; a group of more than 19 digits is never split; a group touching an ASCII letter
is part of no candidate (hex digests, tokens). (The letter rule is judged per group, not per
run: "PAN 2024-01-01T10:00" must not hide the PAN because the date's last group touches "T".)
Candidates must be in a brand's IIN range, have a length that brand issues, and pass Luhn.
``%B<pan>^NAME^YYMM`` is track 1 and ``;<pan>=YYMM`` track 2. UTF-16 text (either byte order,
any alignment, inside binary files too) is read through a view that keeps the ASCII bytes whose neighbour is NUL.

Streaming: ``StreamScanner`` owns buffering. Each buffer is the carried tail of the previous
one plus a new chunk; it reports the runs that *start* in its owned region and carries the
unfinished trailing stretch of run bytes (digits, space, dash, NUL) plus enough context for
keywords and track data, so every hit is reported exactly once at its absolute offset,
whatever the chunk size. A trailing stretch longer than ``MAX_CARRY`` (a numeric dump with no
line breaks) is cut at a group start so memory stays bounded and no group is split.

The only record here holding a full number is ``RawHit``; it must not leave the worker
(``findings.mask`` turns it into a storable ``Finding``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import regex

from panscan.match.luhn import DOUBLED, luhn_valid
from panscan.match.patterns import PatternSet, load_patterns
from panscan.model import Confidence, Kind

_hs: Any
try:  # hyperscan ships wheels for the common platforms only; numpy covers the rest.
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised on platforms without wheels
    _hs = None

CHUNK_SIZE = 1 << 20
MIN_DIGITS, MAX_DIGITS = 13, 19
RUN_BYTES = b"0123456789 -\x00"
# Context carried into the next buffer: keyword window (64 chars, doubled for UTF-16) plus "%B".
LEFT = 160
# Bytes kept back at the end of a buffer: track data after a PAN (^NAME^YYMM, 32 chars) and the
# keyword window, doubled for UTF-16.
RIGHT = 320
MAX_CARRY = 64 * 1024
# A byte-range task reads this much on either side of its range: more than the carry bound, so
# runs and their context near a range edge are seen whole by the range that owns them.
RANGE_OVERLAP = MAX_CARRY + 4096
CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3)})

_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]

_IS_LETTER = np.zeros(256, dtype=bool)
_IS_LETTER[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)] = True
_DOUBLED_U8 = np.array(DOUBLED, dtype=np.uint8)
_POW10 = (10 ** np.arange(7, -1, -1)).astype(np.int64)
_COLS = np.arange(MAX_DIGITS, dtype=np.int64)
_GROUP = regex.compile(rb"[0-9]+")
_GROUP_START = regex.compile(rb"(?<![0-9])[0-9]")
_TRACK1_TAIL = regex.compile(rb"\^[^^\x00-\x1f]{2,26}\^[0-9]{4}")
_TRACK2_TAIL = regex.compile(rb"=[0-9]{4}")
# Digits become "0" and separators vanish: a cheap over-approximation of "has a run of >= 13
# digits" for the no-hyperscan prefilter.
_SQUEEZE = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))
_THIRTEEN = b"0" * MIN_DIGITS


@dataclass(frozen=True, slots=True, repr=False)
class RawHit:
    """A validated match. Holds the full number: worker memory only."""

    offset: int  # absolute byte offset of the first digit
    length: int  # bytes from the first to the last digit, separators included
    digits: str
    kind: Kind
    brand: str
    confidence: Confidence
    test_card: bool
    line: int = 0  # 1-based; set by StreamScanner

    def __repr__(self) -> str:  # tracebacks and debug output must never show the digits
        return f"RawHit(offset={self.offset}, kind={self.kind}, brand={self.brand!r}, digits=<masked>)"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------
# Prefilter: does a buffer hold anything that could become a candidate?

def _build_prefilter() -> Callable[[bytes], bool]:
    if _hs is None:
        return lambda data: data.translate(_SQUEEZE, b" -").find(_THIRTEEN) >= 0
    db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    db.compile(expressions=[rb"[0-9](?:[ \-]?[0-9]){12}"], ids=[0], flags=[_hs.HS_FLAG_SINGLEMATCH])
    scratch = _hs.Scratch(db)

    def found(data: bytes) -> bool:
        hit: list[bool] = []

        def on_match(_id: int, _start: int, _end: int, _flags: int, _ctx: object) -> bool:
            hit.append(True)
            return True  # stop at the first: we only ask "any?"

        try:
            db.scan(data, match_event_handler=on_match, scratch=scratch)
        except _hs.ScanTerminated:
            pass  # the handler stopped the scan at the first match
        return bool(hit)

    return found


_prefilter: Callable[[bytes], bool] | None = None


def _has_candidates(data: bytes) -> bool:
    global _prefilter
    if _prefilter is None:
        _prefilter = _build_prefilter()
    return _prefilter(data)


# --------------------------------------------------------------------------------------------
# One view of a buffer (raw bytes, or the UTF-16 view of one byte parity).

@dataclass(slots=True)
class _View:
    data: bytes
    scale: int  # buffer offset = shift + scale * view index
    shift: int

    def to_buf(self, i: int) -> int:
        return self.shift + self.scale * i


def _utf16_views(buf: bytes) -> list[_View]:
    """Views of ``buf`` as UTF-16 text: little- and big-endian, at both byte parities.

    A view keeps the low byte of each code unit whose high byte is NUL (an ASCII character)
    and turns every other unit into 0xFF, which is neither digit, separator nor letter. Plain
    ASCII text has no NUL partners, so it keeps nothing and nothing is found twice; UTF-16
    text looks alike through both byte orders inside a run, and the caller drops the copies.
    """
    a = np.frombuffer(buf, dtype=np.uint8)
    n = len(a)
    zero = a == 0
    views = []
    for parity in (0, 1):
        low = a[parity::2]
        m = len(low)
        for partner in (1, -1):  # little-endian: high byte follows; big-endian: it precedes
            pos = parity + 2 * np.arange(m) + partner
            inside = (pos >= 0) & (pos < n)
            keep = inside & zero[np.clip(pos, 0, n - 1)] & (low != 0)
            if not keep.any():
                continue
            data = np.where(keep, low, np.uint8(0xFF)).astype(np.uint8).tobytes()
            views.append(_View(data, 2, parity))
    return views


# --------------------------------------------------------------------------------------------
# Candidate runs in one view.

@dataclass(slots=True)
class _Region:
    """Which runs of a buffer belong to this scan (see StreamScanner)."""

    lo: int  # buffer offsets: runs starting in [lo, hi) are owned
    hi: int
    head_continues: bool  # a run cut at the previous buffer's end continues at lo
    tail_open: bool  # the run reaching the buffer's end was cut; its end is not known
    at_stream_start: bool  # nothing precedes buffer offset 0


def _runs(data: bytes) -> tuple[_I64, _I64, _I64]:
    """Start, end and separator count of every run holding 13 or more digits.

    Works on digit groups rather than bytes: one vectorised pass finds the groups, and the
    joins between them (a single space or dash) are decided on the much shorter group arrays.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    n = len(a)
    isd = (a - np.uint8(48)) < 10
    edges = np.flatnonzero(isd[1:] != isd[:-1]) + 1
    if n and isd[0]:
        edges = np.concatenate(([0], edges))
    if n and isd[-1]:
        edges = np.concatenate((edges, [n]))
    gs, ge = edges[0::2], edges[1::2]
    empty = np.zeros(0, dtype=np.int64)
    if not len(gs):
        return empty, empty, empty
    gl = ge - gs
    # Group k joins group k+1 when exactly one separator byte stands between them.
    gap_one = (gs[1:] - ge[:-1]) == 1
    between = a[np.minimum(ge[:-1], n - 1)]
    joins = gap_one & ((between == 32) | (between == 45))
    if not joins.any():
        keep = gl >= MIN_DIGITS
        return gs[keep].astype(np.int64), ge[keep].astype(np.int64), np.zeros(int(keep.sum()), np.int64)
    # Runs are maximal chains of joined groups: a new run starts wherever group k-1 does not join k.
    first = np.concatenate(([True], ~joins))
    run_first = np.flatnonzero(first)
    run_last = np.concatenate((run_first[1:] - 1, [len(gs) - 1]))
    digits = np.add.reduceat(gl, run_first)
    keep = digits >= MIN_DIGITS
    run_first, run_last = run_first[keep], run_last[keep]
    return (gs[run_first].astype(np.int64), ge[run_last].astype(np.int64),
            (run_last - run_first).astype(np.int64))


def _valid_contiguous(a: _U8, starts: _I64, lengths: _I64, patterns: PatternSet) -> _I64:
    """Brand index per contiguous candidate (-1 when IIN, length or Luhn fails), vectorised.

    The IIN and length test comes first, on the 8-digit prefix alone: it rejects most
    candidates (timestamps, ids) before the full digit matrix is built for Luhn.
    """
    pre = (a[starts[:, None] + _COLS[None, :8]].astype(np.int64) - 48) @ _POW10
    brand = patterns.table.lookup_many(pre, lengths)
    live = np.flatnonzero(brand >= 0)
    if not len(live):
        return brand
    s, ln = starts[live], lengths[live]
    idx = np.minimum(s[:, None] + _COLS[None, :], len(a) - 1)
    inside = _COLS[None, :] < ln[:, None]
    digits = np.where(inside, a[idx] - np.uint8(48), np.uint8(0))
    # Luhn from the right: position (length-1-col) odd means doubled.
    doubled = inside & (((ln[:, None] - 1 - _COLS[None, :]) & 1) == 1)
    total = np.where(doubled, _DOUBLED_U8[digits], digits).sum(axis=1, dtype=np.int64)
    brand[live[total % 10 != 0]] = -1
    return brand


def _confidence(groups: tuple[int, ...], data: bytes, start: int, end: int, scale: int,
                patterns: PatternSet) -> Confidence:
    card_like = len(groups) == 1 or groups in CARD_GROUPINGS
    w = patterns.keywords.window
    context = data[max(0, start - w):start] + b" " + data[end:end + w]
    keyword = patterns.keywords.near(context)
    if card_like and keyword:
        return Confidence.HIGH
    if card_like or keyword:
        return Confidence.MEDIUM
    return Confidence.LOW


def _track_kind(data: bytes, start: int, end: int) -> Kind | None:
    if start >= 2 and data[start - 2:start] == b"%B" and _TRACK1_TAIL.match(data, end):
        return Kind.TRACK1
    if start >= 1 and data[start - 1:start] == b";" and _TRACK2_TAIL.match(data, end):
        return Kind.TRACK2
    return None


def _scan_view(view: _View, region: _Region, patterns: PatternSet) -> list[RawHit]:
    data = view.data
    n = len(data)
    if n < MIN_DIGITS or not _has_candidates(data):
        return []
    starts, ends, nsep = _runs(data)
    if not len(starts):
        return []
    a = np.frombuffer(data, dtype=np.uint8)
    buf_starts = view.shift + view.scale * starts
    owned = (buf_starts >= region.lo) & (buf_starts < region.hi)
    continued = np.zeros(len(starts), dtype=bool)
    if region.head_continues:
        continued = (buf_starts < region.lo) & (view.shift + view.scale * ends > region.lo)
    tail_cut = np.zeros(len(starts), dtype=bool)
    if region.tail_open:
        tail_cut = (ends == n) & (buf_starts < region.hi)
    keep = owned | continued
    if not keep.any():
        return []

    # Letter rule, with the track-1 exception (the PAN follows "%B").
    before = np.where(starts > 0, a[np.maximum(starts - 1, 0)], np.uint8(0))
    after = np.where(ends < n, a[np.minimum(ends, n - 1)], np.uint8(0))
    letter_before = _IS_LETTER[before] & ~continued
    letter_after = _IS_LETTER[after] & ~tail_cut
    maybe_track1 = (before == ord("B")) & (after == ord("^"))
    letter_ok = (~letter_before | maybe_track1) & ~letter_after  # for lone groups

    hits: list[RawHit] = []
    # A lone group cut at either buffer edge has an unknown length: the neighbour buffer sees it.
    single = keep & letter_ok & (nsep == 0) & ((ends - starts) <= MAX_DIGITS) & ~continued & ~tail_cut
    if single.any():
        s, e = starts[single], ends[single]
        lengths = e - s
        brand_idx = _valid_contiguous(a, s, lengths, patterns)
        single_letter_before = letter_before[single]
        for i in np.flatnonzero(brand_idx >= 0):
            hit = _make_hit(data, view, int(s[i]), int(e[i]), (int(lengths[i]),),
                            patterns.table.brands[brand_idx[i]], bool(single_letter_before[i]), patterns)
            if hit is not None:
                hits.append(hit)
    multi = keep & (nsep > 0)
    for i in np.flatnonzero(multi):
        lo_window = region.lo if continued[i] else 0
        hits.extend(_scan_grouped_run(data, view, int(starts[i]), int(ends[i]), bool(letter_before[i]),
                                      bool(letter_after[i]), lo_window,
                                      region.hi if tail_cut[i] else None, patterns))
    return hits


def _make_hit(data: bytes, view: _View, start: int, end: int, groups: tuple[int, ...], brand: str,
              letter_before: bool, patterns: PatternSet) -> RawHit | None:
    kind = _track_kind(data, start, end)
    if letter_before and kind is not Kind.TRACK1:
        return None  # touched a letter that was not the "%B" of track 1
    digits = data[start:end].translate(None, b" -").decode("ascii")
    confidence = (Confidence.HIGH if kind is not None
                  else _confidence(groups, data, start, end, view.scale, patterns))
    return RawHit(
        offset=view.to_buf(start),
        length=view.scale * (end - start),
        digits=digits,
        kind=kind or Kind.PAN,
        brand=brand,
        confidence=confidence,
        test_card=digits in patterns.test_pans,
    )


def _scan_grouped_run(data: bytes, view: _View, start: int, end: int, letter_before: bool,
                      letter_after: bool, window_from: int, window_to: int | None,
                      patterns: PatternSet) -> list[RawHit]:
    """Every window of whole groups with 13-19 digits in one run that has separators."""
    spans = [(m.start(), m.end()) for m in _GROUP.finditer(data, start, end)]
    hits = []
    for i, (g_start, _) in enumerate(spans):
        buf_pos = view.to_buf(g_start)
        if buf_pos < window_from or (window_to is not None and buf_pos >= window_to):
            continue
        count = 0
        for j in range(i, len(spans)):
            count += spans[j][1] - spans[j][0]
            if count > MAX_DIGITS:
                break
            if count < MIN_DIGITS:
                continue
            if letter_after and j == len(spans) - 1:
                break  # the last group touches a letter
            w_end = spans[j][1]
            digits = data[g_start:w_end].translate(None, b" -").decode("ascii")
            brand = patterns.table.lookup(digits)
            if brand is None or not luhn_valid(digits):
                continue
            groups = tuple(e - s for s, e in spans[i:j + 1])
            # Only the run's first group can touch the letter before it.
            hit = _make_hit(data, view, g_start, w_end, groups, brand, letter_before and i == 0, patterns)
            if hit is not None:
                hits.append(hit)
    return hits


def scan_buffer(buf: bytes, region: _Region, patterns: PatternSet) -> list[RawHit]:
    """Hits of the runs ``region`` owns in ``buf``, sorted by offset."""
    hits = _scan_view(_View(buf, 1, 0), region, patterns)
    if b"\x00" in buf:
        wide: dict[tuple[int, int, Kind], RawHit] = {}
        for view in _utf16_views(buf):
            for hit in _scan_view(view, region, patterns):
                wide.setdefault((hit.offset, hit.length, hit.kind), hit)
        hits.extend(wide.values())
    hits.sort(key=lambda h: (h.offset, h.length))
    return hits


# --------------------------------------------------------------------------------------------
# Streaming.

class StreamScanner:
    """Feeds a byte stream through the matcher in chunks.

    Hits are returned once each, at absolute offsets (``base_offset`` is the offset of the
    first byte fed), whatever the chunk sizes. Only hits whose offset lies in
    ``[own_from, own_to)`` are returned (byte-range tasks), with ``line`` counted from
    ``own_from``; ``newlines_owned`` is the number of newlines in that range once finished.
    """

    def __init__(self, patterns: PatternSet | None = None, *, base_offset: int = 0,
                 own_from: int = 0, own_to: int | None = None) -> None:
        self._patterns = patterns or load_patterns()
        self._buf = b""
        self._buf_abs = base_offset  # absolute offset of self._buf[0]
        self._lo = 0  # owned region starts here in self._buf
        self._head_continues = False
        self._own_from = own_from
        self._own_to = own_to
        self._newlines = 0  # newlines in [own_from, start of unscanned region)
        self._finished = False
        self.bytes_fed = 0

    @property
    def newlines_owned(self) -> int:
        return self._newlines

    def feed(self, chunk: bytes) -> list[RawHit]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self.bytes_fed += len(chunk)
        buf = self._buf + chunk if self._buf else bytes(chunk)
        n = len(buf)
        if n - self._lo <= RIGHT:
            self._buf = buf
            return []
        # Keep back whatever run is still open near the end (it may continue) and the context
        # that track data and keywords need.
        cut = _stretch_start(buf, n - RIGHT)
        tail_open = False
        if n - cut > MAX_CARRY:
            cut, tail_open = _group_start_near(buf, n - MAX_CARRY // 2), True
        if cut <= self._lo:
            self._buf = buf
            return []
        hits = self._scan(buf, cut, tail_open)
        keep_from = max(0, cut - LEFT)
        self._buf = buf[keep_from:]
        self._buf_abs += keep_from
        self._lo = cut - keep_from
        self._head_continues = tail_open
        return hits

    def finish(self) -> list[RawHit]:
        if self._finished:
            return []
        self._finished = True
        hits = self._scan(self._buf, len(self._buf), False)
        self._buf = b""
        return hits

    def _scan(self, buf: bytes, cut: int, tail_open: bool) -> list[RawHit]:
        region = _Region(self._lo, cut, self._head_continues, tail_open,
                         at_stream_start=self._buf_abs == 0)
        found = scan_buffer(buf, region, self._patterns)
        # Lines: newlines between own_from and each hit, counted once per byte.
        abs_lo, abs_hi = self._buf_abs + self._lo, self._buf_abs + cut
        own_lo = max(abs_lo, self._own_from)
        own_hi = abs_hi if self._own_to is None else min(abs_hi, self._own_to)
        out = []
        pos = own_lo
        lines = self._newlines
        for hit in found:
            offset = self._buf_abs + hit.offset  # buffer-relative until here
            if offset < self._own_from or (self._own_to is not None and offset >= self._own_to):
                continue
            if offset > pos:
                lines += buf.count(b"\n", pos - self._buf_abs, offset - self._buf_abs)
                pos = offset
            out.append(_placed(hit, offset, lines + 1))
        if own_hi > pos:
            lines += buf.count(b"\n", pos - self._buf_abs, own_hi - self._buf_abs)
        self._newlines = lines
        return out


def _stretch_start(buf: bytes, end: int) -> int:
    """Start of the stretch of run bytes that ends at ``end`` (``end`` if there is none)."""
    # Look at a short tail first: copying the whole buffer for rstrip costs more than the scan.
    step = 256
    while True:
        lo = max(0, end - step)
        kept = len(buf[lo:end].rstrip(RUN_BYTES))
        if kept or lo == 0:
            return lo + kept
        if step > MAX_CARRY:
            return lo  # longer than any carry: the caller cuts it anyway
        step *= 4


def _group_start_near(buf: bytes, pos: int) -> int:
    """A digit-group start at or shortly after ``pos`` (else ``pos``): a forced cut there splits no group."""
    m = _GROUP_START.search(buf, pos, min(len(buf) - RIGHT, pos + 4096))
    return m.start() if m else pos


def _placed(hit: RawHit, offset: int, line: int) -> RawHit:
    return RawHit(offset, hit.length, hit.digits, hit.kind, hit.brand, hit.confidence,
                  hit.test_card, line)


def scan_chunks(chunks: Iterable[bytes], patterns: PatternSet | None = None, *,
                base_offset: int = 0) -> Iterator[RawHit]:
    """Hits of a whole stream given as chunks."""
    scanner = StreamScanner(patterns, base_offset=base_offset)
    for chunk in chunks:
        yield from scanner.feed(chunk)
    yield from scanner.finish()


def scan_bytes(data: bytes, patterns: PatternSet | None = None) -> list[RawHit]:
    """Hits of one complete buffer."""
    return list(scan_chunks([data], patterns))
