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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import regex

from panscan.match import structure
from panscan.match.luhn import DOUBLED, luhn_valid
from panscan.match.patterns import PatternSet, load_patterns
from panscan.match.structure import CARD_GROUPINGS
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

if TYPE_CHECKING:  # numpy.typing costs ~60 ms of start-up; annotations only need it here
    import numpy.typing as npt

    _U8 = npt.NDArray[np.uint8]
    _I64 = npt.NDArray[np.int64]

_IS_LETTER = np.zeros(256, dtype=bool)
_IS_LETTER[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)] = True
_DOUBLED_U8 = np.array(DOUBLED, dtype=np.uint8)
_POW10 = (10 ** np.arange(7, -1, -1)).astype(np.int64)
_COLS = np.arange(MAX_DIGITS, dtype=np.int64)
_GROUP_START = regex.compile(rb"(?<![0-9])[0-9]")
_GROUP = regex.compile(rb"[0-9]+")
_RUN = regex.compile(rb"[0-9]+(?:[ \-][0-9]+)*")
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
# Prefilter: where in a buffer could a candidate be?

SPARSE_LIMIT = 64  # prefilter matches per buffer beyond which the whole buffer is vectorised
_Spans = list[tuple[int, int]] | None  # None: look at the whole buffer
_RUN_TEXT = b"0123456789 -"


class _Locator:
    """Finds the regions of a buffer worth the full pipeline.

    With hyperscan, a scan for "13 digits with single separators" reports match ends; when
    there are few (prose, sparse logs) only the runs around them are examined, otherwise the
    whole buffer is. Without hyperscan a squeeze-and-find answers yes or no for the buffer.
    """

    def __init__(self) -> None:
        self._db: Any = None
        if _hs is not None:
            self._db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            self._db.compile(expressions=[rb"[0-9](?:[ \-]?[0-9]){12}"], ids=[0], flags=[0])
            self._scratch = _hs.Scratch(self._db)

    def locate(self, data: bytes) -> tuple[bool, _Spans]:
        """(anything to look at, spans to look at or None for all of it)."""
        if self._db is None:
            return data.translate(_SQUEEZE, b" -").find(_THIRTEEN) >= 0, None
        ends: list[int] = []

        def on_match(_id: int, _start: int, end: int, _flags: int, _ctx: object) -> bool:
            ends.append(end)
            return len(ends) > SPARSE_LIMIT  # True stops the scan: dense, take everything

        try:
            self._db.scan(data, match_event_handler=on_match, scratch=self._scratch)
        except _hs.ScanTerminated:
            return True, None
        if not ends:
            return False, None
        return True, _spans_around(data, ends)


def _spans_around(data: bytes, ends: list[int]) -> list[tuple[int, int]]:
    """Whole stretches of digit/space/dash bytes around each prefilter match end, merged."""
    spans: list[tuple[int, int]] = []
    for end in ends:
        if spans and end <= spans[-1][1]:
            continue  # inside the stretch already taken
        lo = _stretch_start(data, end - MIN_DIGITS, _RUN_TEXT)
        hi = _stretch_end(data, end, _RUN_TEXT)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return spans


_locator: _Locator | None = None


def _locate(data: bytes) -> tuple[bool, _Spans]:
    global _locator
    if _locator is None:
        _locator = _Locator()
    return _locator.locate(data)


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
    judge: bool = True  # apply structure.judge; False: every valid candidate (masking text)


@dataclass(slots=True)
class _Groups:
    """The digit groups of every run that holds 13 or more digits, in order (view indexes)."""

    start: _I64
    end: _I64
    first: _I64  # per group: index of its run's first group
    last: _I64  # per group: index of its run's last group


def _digits_in_long_stretches(a: _U8) -> npt.NDArray[np.bool_]:
    """Digit mask limited to stretches of 13+ digit/space/dash bytes (a superset of the runs).

    Logs are full of short numbers (dates, IPs, hex ids); dropping them with a few shifted
    boolean passes is cheaper than carrying every one of them through the group arrays.
    """
    n = len(a)
    isd = (a - np.uint8(48)) < 10
    if n < MIN_DIGITS:
        return isd & False
    cur = isd | (a == 32)
    cur |= a == 45
    nxt = np.empty_like(cur)
    # Ping-pong between two buffers: in-place shifted operands would make numpy copy them.
    for shift in (1, 2, 4, 5):  # erosion: cur[p] = all of bytes p .. p+12 (1+2+4 covers 8, +5 covers 13)
        np.logical_and(cur[:-shift], cur[shift:], out=nxt[:-shift])
        nxt[-shift:] = False
        cur, nxt = nxt, cur
    cur[n - MIN_DIGITS + 1:] = False
    for shift in (1, 2, 4, 8):  # dilation back over p .. p+15: covers every byte of such a stretch
        nxt[:shift] = cur[:shift]
        np.logical_or(cur[shift:], cur[:-shift], out=nxt[shift:])
        cur, nxt = nxt, cur
    isd &= cur
    return isd


def _group_edges(a: _U8, offset: int, whole_stretch: bool = False) -> tuple[_I64, _I64]:
    """Start and end of the digit groups of ``a`` that lie in long stretches, plus ``offset``.

    ``whole_stretch``: ``a`` is known to be one stretch around a prefilter match; every digit
    of it counts, and the stretch filter would only cost time.
    """
    n = len(a)
    isd = (a - np.uint8(48)) < 10 if whole_stretch else _digits_in_long_stretches(a)
    edges = np.flatnonzero(isd[1:] != isd[:-1]) + 1
    if n and isd[0]:
        edges = np.concatenate(([0], edges))
    if n and isd[-1]:
        edges = np.concatenate((edges, [n]))
    edges = edges.astype(np.int64) + offset
    return edges[0::2], edges[1::2]


def _candidate_groups(a: _U8, spans: _Spans) -> _Groups | None:
    """Digit groups and their runs, vectorised, over the whole of ``a`` or the given spans.

    One pass finds the groups; the joins between them (exactly one space or dash) are decided
    on the much shorter group arrays, and runs with fewer than 13 digits are dropped there.
    Spans are whole stretches of run bytes, so no run crosses a span's edge.
    """
    n = len(a)
    if spans is None:
        gs, ge = _group_edges(a, 0)
    else:
        parts = [_group_edges(a[lo:hi], lo, whole_stretch=True) for lo, hi in spans]
        gs = np.concatenate([p[0] for p in parts])
        ge = np.concatenate([p[1] for p in parts])
    if not len(gs):
        return None
    gl = ge - gs
    between = a[np.minimum(ge[:-1], n - 1)]
    joins = ((gs[1:] - ge[:-1]) == 1) & ((between == 32) | (between == 45))
    if not joins.any():  # every group is a run of its own
        keep = np.flatnonzero(gl >= MIN_DIGITS)
        if not len(keep):
            return None
        own = np.arange(len(keep), dtype=np.int64)
        return _Groups(gs[keep], ge[keep], own, own)
    first = np.concatenate(([True], ~joins))
    run_first = np.flatnonzero(first)
    run_last = np.concatenate((run_first[1:] - 1, [len(gs) - 1]))
    run_keep = np.add.reduceat(gl, run_first) >= MIN_DIGITS
    if not run_keep.any():
        return None
    run_of = np.cumsum(first) - 1
    sel = np.flatnonzero(run_keep[run_of])
    rid = run_of[sel]
    new_first = np.arange(len(sel), dtype=np.int64) - (sel - run_first[rid])
    new_last = new_first + (run_last - run_first)[rid]
    return _Groups(gs[sel], ge[sel], new_first, new_last)


def _windows(g: _Groups) -> tuple[_I64, _I64, _I64]:
    """First group, last group and digit count of every window of 13-19 digits."""
    cum = np.concatenate(([0], np.cumsum(g.end - g.start)))
    active = np.arange(len(g.start), dtype=np.int64)
    firsts, lasts, counts = [], [], []
    width = 0
    while len(active):
        last = active + width
        inside = last <= g.last[active]
        active, last = active[inside], last[inside]
        count = cum[last + 1] - cum[active]
        fits = count <= MAX_DIGITS  # digits only grow with the width: drop what overflowed
        active, last, count = active[fits], last[fits], count[fits]
        take = count >= MIN_DIGITS
        firsts.append(active[take])
        lasts.append(last[take])
        counts.append(count[take])
        width += 1
    return np.concatenate(firsts), np.concatenate(lasts), np.concatenate(counts)


def _window_digits(a: _U8, g: _Groups, first: _I64, last: _I64, count: _I64,
                   width: int = MAX_DIGITS) -> _U8:
    """The first ``width`` digit values of each window, left-aligned (zeros beyond its end)."""
    cols = _COLS[:width]
    pos = g.start[first][:, None] + cols[None, :]
    multi = np.flatnonzero(first != last)
    if len(multi):  # windows spanning groups: map the k-th digit to its group
        cum = np.concatenate(([0], np.cumsum(g.end - g.start)))
        target = cum[first[multi]][:, None] + cols[None, :]
        grp = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, len(g.start) - 1)
        pos[multi] = g.start[grp] + (target - cum[grp])
    if width <= MIN_DIGITS:  # every window has at least this many digits: no padding needed
        return np.asarray(a[pos] - np.uint8(48))
    inside = cols[None, :] < count[:, None]
    pos = np.minimum(pos, len(a) - 1)
    return np.where(inside, a[pos] - np.uint8(48), np.uint8(0))


def _luhn_ok(digits: _U8, count: _I64) -> npt.NDArray[np.bool_]:
    inside = _COLS[None, :] < count[:, None]
    # From the right, every second digit is doubled: column c is doubled when count-1-c is odd.
    doubled = inside & (((count[:, None] - 1 - _COLS[None, :]) & 1) == 1)
    total = np.where(doubled, _DOUBLED_U8[digits], digits).sum(axis=1, dtype=np.int64)
    return np.asarray(total % 10 == 0)


def _keyword_near(data: bytes, start: int, end: int, patterns: PatternSet) -> bool:
    w = patterns.keywords.window
    return patterns.keywords.near(data[max(0, start - w):start] + b" " + data[end:end + w])


def _confidence(groups: tuple[int, ...], digits: str, data: bytes, start: int, end: int,
                patterns: PatternSet) -> Confidence | None:
    """The confidence of a validated PAN candidate, or None when it is no card number
    (structure.judge; a number only a broad IIN range issues needs a keyword there). A
    published test number is always reported: grouping and keywords only set its confidence."""
    keyword = _keyword_near(data, start, end, patterns)
    if digits in patterns.test_pans:
        card_like = len(groups) == 1 or groups in CARD_GROUPINGS
        if card_like and keyword:
            return Confidence.HIGH
        return Confidence.MEDIUM if card_like or keyword else Confidence.LOW
    return structure.judge(groups, digits, data, start, end, keyword, patterns.table.is_broad(digits))


def _track_kind(data: bytes, start: int, end: int) -> Kind | None:
    if start >= 2 and data[start - 2:start] == b"%B" and _TRACK1_TAIL.match(data, end):
        return Kind.TRACK1
    if start >= 1 and data[start - 1:start] == b";" and _TRACK2_TAIL.match(data, end):
        return Kind.TRACK2
    return None


def _scan_view(view: _View, region: _Region, patterns: PatternSet) -> list[RawHit]:
    data = view.data
    n = len(data)
    if n < MIN_DIGITS:
        return []
    anything, spans = _locate(data)
    if not anything:
        return []
    if spans is not None and not (region.head_continues or region.tail_open):
        return _scan_spans(data, view, region, spans, patterns)
    a = np.frombuffer(data, dtype=np.uint8)
    g = _candidate_groups(a, spans)
    if g is None:
        return []
    first, last, count = _windows(g)
    if not len(first):
        return []

    # Ownership: a run belongs to the buffer where it starts; a run cut by a forced carry cut
    # (region.tail_open / head_continues) is shared by window start, never using a cut group.
    run_start = g.start[g.first[first]]
    run_end = g.end[g.last[first]]
    buf_run_start = view.shift + view.scale * run_start
    buf_start = view.shift + view.scale * g.start[first]
    owned = (buf_run_start >= region.lo) & (buf_run_start < region.hi)
    if region.head_continues:
        owned |= (buf_run_start < region.lo) & (buf_start >= region.lo)
    tail_run = np.zeros(len(first), dtype=bool)
    if region.tail_open:
        tail_run = run_end == n  # its end is not known: it may go on in the next buffer
        # The run the forced cut went through: it crosses region.hi wherever it ends (the
        # buffer may end in a separator or a NUL after it). This scan owns its windows that
        # start before the cut, the next scan (head_continues) those that start after it.
        cut_through = view.shift + view.scale * run_end > region.hi
        owned &= ~cut_through | ((buf_start < region.hi) & ~(tail_run & (last == g.last[first])))

    # Letter rule: only a run's outer groups can touch a letter. "%B" before track 1 is checked
    # per hit below.
    before = np.where(run_start > 0, a[np.maximum(run_start - 1, 0)], np.uint8(0))
    after = np.where(run_end < n, a[np.minimum(run_end, n - 1)], np.uint8(0))
    touch_before = (first == g.first[first]) & _IS_LETTER[before]
    touch_after = (last == g.last[first]) & _IS_LETTER[after] & ~tail_run
    live = np.flatnonzero(owned & ~touch_after & (~touch_before | (before == ord("B"))))
    if not len(live):
        return []
    first, last, count, touch_before = first[live], last[live], count[live], touch_before[live]

    # IIN and length first, on eight digits: most windows (timestamps, ids) stop here.
    prefix = _window_digits(a, g, first, last, count, 8).astype(np.int64) @ _POW10
    brand = patterns.table.lookup_many(prefix, count)
    issued = np.flatnonzero(brand >= 0)
    if not len(issued):
        return []
    first, last, count, touch_before, brand = (
        first[issued], last[issued], count[issued], touch_before[issued], brand[issued])
    ok = _luhn_ok(_window_digits(a, g, first, last, count), count)
    found = []
    for i in np.flatnonzero(ok):
        f, la = int(first[i]), int(last[i])
        groups = tuple(int(x) for x in (g.end[f:la + 1] - g.start[f:la + 1]))
        hit = _make_hit(data, view, int(g.start[f]), int(g.end[la]), groups,
                        patterns.table.brands[brand[i]], bool(touch_before[i]), patterns, region.judge)
        if hit is not None:
            found.append((hit, groups))
    return _longest_card_grouped(found)


def _scan_spans(data: bytes, view: _View, region: _Region, spans: list[tuple[int, int]],
                patterns: PatternSet) -> list[RawHit]:
    """The same rules as the vectorised path, run by run, for the few spans of a sparse buffer.

    A handful of short spans costs less in plain Python than in a dozen numpy calls each.
    """
    found = []
    n = len(data)
    table = patterns.table
    for span_lo, span_hi in spans:
        for run in _RUN.finditer(data, span_lo, span_hi):
            start, end = run.span()
            if not region.lo <= view.to_buf(start) < region.hi:
                continue
            groups = [g.span() for g in _GROUP.finditer(data, start, end)]
            before = data[start - 1] if start > 0 else 0
            letter_before = _IS_LETTER[before]
            letter_after = end < n and _IS_LETTER[data[end]]
            for i, (g_start, _) in enumerate(groups):
                if i == 0 and letter_before and before != ord("B"):
                    continue  # only "%B" of track 1 may touch the first group
                count = 0
                for j in range(i, len(groups)):
                    count += groups[j][1] - groups[j][0]
                    if count > MAX_DIGITS or (letter_after and j == len(groups) - 1):
                        break
                    if count < MIN_DIGITS:
                        continue
                    w_end = groups[j][1]
                    digits = data[g_start:w_end].translate(None, b" -").decode("ascii")
                    brand = table.lookup(digits)
                    if brand is None or not luhn_valid(digits):
                        continue
                    sizes = tuple(e - s for s, e in groups[i:j + 1])
                    hit = _make_hit(data, view, g_start, w_end, sizes, brand, bool(i == 0 and letter_before),
                                    patterns, region.judge)
                    if hit is not None:
                        found.append((hit, sizes))
    return _longest_card_grouped(found)


def _make_hit(data: bytes, view: _View, start: int, end: int, groups: tuple[int, ...], brand: str,
              letter_before: bool, patterns: PatternSet, judge: bool = True) -> RawHit | None:
    kind = _track_kind(data, start, end)
    if letter_before and kind is not Kind.TRACK1:
        return None  # touched a letter that was not the "%B" of track 1
    digits = data[start:end].translate(None, b" -").decode("ascii")
    confidence = (Confidence.HIGH if kind is not None
                  else _confidence(groups, digits, data, start, end, patterns))
    if confidence is None:
        if judge:
            return None  # a structure that is not a card number
        confidence = Confidence.LOW  # masking: every valid number is hidden, whatever its shape
    return RawHit(
        offset=view.to_buf(start),
        length=view.scale * (end - start),
        digits=digits,
        kind=kind or Kind.PAN,
        brand=brand,
        confidence=confidence,
        test_card=digits in patterns.test_pans,
    )


def _longest_card_grouped(found: list[tuple[RawHit, tuple[int, ...]]]) -> list[RawHit]:
    """The hits less those whose start a longer, card-grouped hit shares.

    A 19-digit number printed 4-4-4-4-3 holds a 16-digit window at its start that may pass
    the checks too; it is one number, reported once, as the longer one.
    """
    longest: dict[int, int] = {}
    for hit, groups in found:
        if groups in CARD_GROUPINGS and hit.length > longest.get(hit.offset, 0):
            longest[hit.offset] = hit.length
    return [hit for hit, _ in found if hit.length >= longest.get(hit.offset, 0)]


# Digits become "d", NUL stays NUL, every other byte becomes "x".
_DIGIT_NUL_MAP = bytes(0x64 if 48 <= b <= 57 else 0 if b == 0 else 0x78 for b in range(256))


def _may_hold_utf16_digits(buf: bytes) -> bool:
    """Whether any UTF-16 view of ``buf`` can hold a digit: some digit byte has a NUL
    neighbour. Zero-filled regions (sparse files, disk images, preallocated databases) are
    all NUL and no digit; building their four views cost ~20 ms per MiB for nothing."""
    if buf.count(0) == len(buf):
        return False  # a hole: counting one byte value is several times faster than translate()
    squeezed = buf.translate(_DIGIT_NUL_MAP)
    # "d" alone is a memchr; the pairs are searched only when there are digits at all.
    return b"d" in squeezed and (b"d\x00" in squeezed or b"\x00d" in squeezed)


def scan_buffer(buf: bytes, region: _Region, patterns: PatternSet) -> list[RawHit]:
    """Hits of the runs ``region`` owns in ``buf``, sorted by offset."""
    hits = _scan_view(_View(buf, 1, 0), region, patterns)
    if b"\x00" in buf and _may_hold_utf16_digits(buf):
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
                 own_from: int = 0, own_to: int | None = None, judge_structure: bool = True) -> None:
        self._patterns = patterns or load_patterns()
        # False for masking names and messages: there, a number is hidden whatever its shape.
        self._judge = judge_structure
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
        # A stretch reaching below n - MAX_CARRY is cut by force wherever it starts, so the
        # search for its start stops there: a long stretch (a run of NULs in a sparse file)
        # is not walked back over the whole buffer for every chunk.
        cut = _stretch_start(buf, n - RIGHT, floor=n - MAX_CARRY - 1)
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
                         at_stream_start=self._buf_abs == 0, judge=self._judge)
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
                lines += _newlines(buf, pos - self._buf_abs, offset - self._buf_abs)
                pos = offset
            out.append(_placed(hit, offset, lines + 1))
        if own_hi > pos:
            lines += _newlines(buf, pos - self._buf_abs, own_hi - self._buf_abs)
        self._newlines = lines
        return out


def _newlines(buf: bytes, lo: int, hi: int) -> int:
    if hi - lo < 4096:
        return buf.count(b"\n", lo, hi)
    # bytes.count walks byte by byte; numpy compares a vector at a time.
    return int(np.count_nonzero(np.frombuffer(buf, np.uint8, hi - lo, lo) == 10))


def _stretch_start(buf: bytes, end: int, chars: bytes = RUN_BYTES, floor: int = 0) -> int:
    """Start of the stretch of ``chars`` bytes that ends at ``end`` (``end`` if there is none),
    or ``floor`` if the stretch reaches below it."""
    # Look at a short tail first: copying the whole buffer for rstrip costs more than the scan.
    floor = max(0, floor)
    end = max(floor, end)
    step = 256
    while True:
        lo = max(floor, end - step)
        kept = len(buf[lo:end].rstrip(chars))
        if kept or lo == floor:
            return lo + kept
        step *= 4


def _stretch_end(buf: bytes, start: int, chars: bytes) -> int:
    """End of the stretch of ``chars`` bytes that begins at ``start``."""
    step = 256
    while True:
        hi = min(len(buf), start + step)
        left = len(buf[start:hi].lstrip(chars))
        if left or hi == len(buf):
            return hi - left
        step *= 4


def _group_start_near(buf: bytes, pos: int) -> int:
    """A digit-group start at or shortly after ``pos`` (else ``pos``): a forced cut there splits no group."""
    m = _GROUP_START.search(buf, pos, min(len(buf) - RIGHT, pos + 4096))
    return m.start() if m else pos


def _placed(hit: RawHit, offset: int, line: int) -> RawHit:
    return RawHit(offset, hit.length, hit.digits, hit.kind, hit.brand, hit.confidence,
                  hit.test_card, line)


def tune_allocator() -> None:
    """Keep large temporaries on the heap (glibc): the vectorised passes allocate a few
    megabyte-sized arrays per chunk, and fresh mmap()ed pages for each cost more than the
    arithmetic. Called once per worker process; harmless elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def _has_candidates(data: bytes) -> bool:
    """Whether a buffer may hold a candidate at all (the benchmark and tests use this)."""
    return _locate(data)[0]


def scan_chunks(chunks: Iterable[bytes], patterns: PatternSet | None = None, *,
                base_offset: int = 0, judge_structure: bool = True) -> Iterator[RawHit]:
    """Hits of a whole stream given as chunks; ``judge_structure=False`` keeps the valid
    numbers that structure.judge would not report (masking text must hide those too)."""
    scanner = StreamScanner(patterns, base_offset=base_offset, judge_structure=judge_structure)
    for chunk in chunks:
        yield from scanner.feed(chunk)
    yield from scanner.finish()


def scan_bytes(data: bytes, patterns: PatternSet | None = None, *,
               judge_structure: bool = True) -> list[RawHit]:
    """Hits of one complete buffer (``judge_structure``: see scan_chunks)."""
    return list(scan_chunks([data], patterns, judge_structure=judge_structure))
