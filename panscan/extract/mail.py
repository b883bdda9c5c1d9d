"""Email (RFC 5322 ``.eml``) and mbox files as what a reader sees: headers, bodies, attachments.

:func:`mail_parts` is a :data:`panscan.extract.parts.Handler`. What callers may rely on:

* A file whose first bytes are ``From `` is an mbox: messages are split on lines starting
  with ``From `` (as :mod:`mailbox` does) while streaming, and each message's parts are
  named ``message N/...`` (1-based). Anything else is one message, parts named without
  that prefix.
* Per message, in order: ``headers`` (every header, ``Name: value`` per line, RFC 2047
  encoded words decoded), then the MIME leaves depth first:

  - inline text (``text/*`` without a file name or ``attachment`` disposition): decoded
    (transfer encoding, then charset with ``errors="replace"``; an unknown charset is read
    as UTF-8) into a text part ``body`` (the first ``text/plain`` leaf), ``body (text/html)``
    (the first text leaf when it is not plain) or ``part K (TYPE)`` (K: the leaf's 1-based
    position in the message). HTML is reduced to its text: tags dropped (inline tags join
    their neighbours, block tags end a line), entities decoded, whitespace collapsed as a
    browser does, and the human-readable attribute values (``alt``, ``title``, ``value``...)
    kept, one per line.
  - everything else (attachments, images, ``application/*``, text with a file name): an
    ``embedded=True`` part ``attachment: FILENAME`` (or ``attachment: part K (TYPE)`` without
    a file name) holding the decoded bytes, for the framework to sniff and expand (so an
    attached zip is opened, whatever its declared type or name).
  - ``message/*`` (forwarded ``message/rfc822``, delivery reports): read here, as messages
    of their own, with names under ``attachment: FILENAME/`` or ``part K (TYPE)/``.

* Memory: one message at a time, at most ``limits.max_decoder_memory`` raw bytes of it (the
  MIME parser needs the whole message; decoded parts add a few times that). A larger message
  is not parsed: its raw bytes are streamed as a text part ``raw`` (``message N/raw``) and
  ``FILE_EXCEEDS_SIZE_LIMIT`` is raised after the last part.
* Errors, all :class:`~panscan.extract.budget.ExtractError`, nothing else, raised after the
  last part so every other message and part is still read; the detail names the message or
  part, never content:

  - a part that cannot be decoded (base64 of impossible length, exceptions from the parser
    on hostile input) or a multipart missing its start or close boundary (usually a
    truncated file) -> ``MALFORMED_FILE`` (the framework then also scans the raw bytes);
  - ``message/*`` nested deeper than ``limits.max_archive_depth`` ->
    ``ARCHIVE_NESTING_LEVEL_OVER_LIMIT`` (the deeper messages are not read);
  - an oversized message -> ``FILE_EXCEEDS_SIZE_LIMIT`` (as above);
  - when several apply, the first one met is the reason and the detail lists all;
  - more than ``limits.max_expanded_bytes`` produced (text and attachment bytes together)
    -> ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT``, raised at once from the chunks of the
    part that crossed it, after exactly the budget has been yielded.
"""

from __future__ import annotations

import html
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import errors, policy
from email.message import Message
from email.parser import BytesParser
from typing import BinaryIO

from panscan.extract.budget import ExtractError, Limits, OutputBudget
from panscan.extract.parts import Part, text_chunks
from panscan.model import Reason

__all__ = ["mail_parts"]

_CHUNK = 1 << 20
_TEXT_PIECE = 1 << 18  # characters handed to text_chunks at a time
_MBOX_SEPARATOR = b"\nFrom "

#: Multipart nesting inside one message. Real mail nests three or four deep; this bound
#: exists only to keep a hostile message from exhausting the interpreter's recursion, so it
#: is not a policy setting (nested *messages* count against ``max_archive_depth``).
_MAX_MULTIPART_DEPTH = 64

#: Defects after which a message's content may be incomplete.
_LOSSY_DEFECTS = (
    errors.InvalidBase64LengthDefect,  # the part's bytes could not be decoded at all
    errors.StartBoundaryNotFoundDefect,  # the parts were never separated
    errors.CloseBoundaryNotFoundDefect,  # usually a truncated file
)


@dataclass
class _Trouble:
    """What could not be read; reported once, after everything else was read."""

    problems: list[tuple[Reason, str]] = field(default_factory=list)

    def note(self, reason: Reason, what: str) -> None:
        self.problems.append((reason, what))

    def raise_if_any(self) -> None:
        if self.problems:
            shown = "; ".join(what for _, what in self.problems[:5])
            more = f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else ""
            raise ExtractError(self.problems[0][0], f"{shown}{more}")


def mail_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """The parts of the email or mbox read from ``f`` (seekable, at its first byte)."""
    reader = _MailReader(f, limits)
    start = f.tell()
    is_mbox = f.read(5) == b"From "
    if is_mbox:
        spans: Iterable[tuple[int, int]] = _mbox_spans(f, start)
    else:
        spans = [(start, f.seek(0, io.SEEK_END))]
    for number, (begin, end) in enumerate(spans, 1):
        prefix = f"message {number}/" if is_mbox else ""
        yield from reader.stored_message(begin, end, prefix, skip_from_line=is_mbox)
    reader.budget.check()
    reader.trouble.raise_if_any()


def _mbox_spans(f: BinaryIO, start: int, block_size: int = _CHUNK) -> Iterator[tuple[int, int]]:
    """``(begin, end)`` offsets of each message, ``From `` line included, found by reading
    ``f`` in blocks (never by lines: a newline-free file must not become one huge line).
    Seeks before every read, so the caller may move ``f`` between messages."""
    begin = pos = start
    carry = b""  # shorter than the separator, so no separator is found twice
    while True:
        f.seek(pos)
        block = f.read(block_size)
        if not block:
            break
        data = carry + block
        base = pos - len(carry)
        i = data.find(_MBOX_SEPARATOR)
        while i >= 0:
            boundary = base + i + 1  # the next message starts at its "From "
            if boundary > begin:
                yield begin, boundary
                begin = boundary
            i = data.find(_MBOX_SEPARATOR, i + 1)
        carry = data[-(len(_MBOX_SEPARATOR) - 1) :]
        pos += len(block)
    if pos > begin:
        yield begin, pos


class _MailReader:
    def __init__(self, f: BinaryIO, limits: Limits) -> None:
        self.f = f
        self.limits = limits
        self.budget = OutputBudget(limits.max_expanded_bytes, "mail")
        self.trouble = _Trouble()

    # -- whole messages ------------------------------------------------------------------

    def stored_message(self, begin: int, end: int, prefix: str, *, skip_from_line: bool) -> Iterator[Part]:
        """The parts of the message stored at ``f[begin:end]``."""
        label = prefix.rstrip("/") or "message"
        if end - begin > self.limits.max_decoder_memory:
            self.trouble.note(
                Reason.FILE_EXCEEDS_SIZE_LIMIT,
                f"{label} is larger than {self.limits.max_decoder_memory} bytes; its raw bytes were scanned",
            )
            yield self._text_part(prefix + "raw", self._raw_chunks(begin, end))
            return
        self.f.seek(begin)
        data = self.f.read(end - begin)
        if skip_from_line:
            newline = data.find(b"\n")
            data = data[newline + 1 :] if newline >= 0 else b""
        try:
            message = BytesParser(policy=policy.default).parsebytes(data)
        except Exception as e:  # the parser is lenient; anything it still raises is a bug or an attack
            self.trouble.note(Reason.MALFORMED_FILE, f"{label} could not be parsed ({type(e).__name__})")
            yield self._text_part(prefix + "raw", iter([data]))
            return
        del data  # the parsed message holds its own copy
        yield from self.message(message, prefix, depth=0)

    def message(self, message: Message, prefix: str, depth: int) -> Iterator[Part]:
        """Headers, then every MIME leaf of ``message`` (nested messages recursively)."""
        label = prefix.rstrip("/") or "message"
        yield self._text_part(prefix + "headers", text_chunks(iter(_header_lines(message)), _CHUNK))
        state = _Leaves(numbering=itertools.count(1))
        try:
            yield from self._entity(message, prefix, depth, 0, state)
        except ExtractError:
            raise
        except Exception as e:  # hostile structure that the parser let through
            self.trouble.note(Reason.MALFORMED_FILE, f"{label} could not be read ({type(e).__name__})")

    # -- MIME structure ------------------------------------------------------------------

    def _entity(self, entity: Message, prefix: str, depth: int, nesting: int, state: _Leaves) -> Iterator[Part]:
        label = prefix.rstrip("/") or "message"
        for defect in entity.defects:
            if isinstance(defect, _LOSSY_DEFECTS):
                self.trouble.note(Reason.MALFORMED_FILE, f"{label}: {type(defect).__name__}")
        if not entity.is_multipart():
            number = next(state.numbering)
            try:
                yield from self._leaf(entity, prefix, number, state)
            except ExtractError:
                raise
            except Exception as e:  # hostile content the parser let through: skip this part only
                what = f"{label}: part {number} could not be read ({type(e).__name__})"
                self.trouble.note(Reason.MALFORMED_FILE, what)
            return
        if nesting >= _MAX_MULTIPART_DEPTH:
            self.trouble.note(Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT, f"{label}: multipart nested too deep")
            return
        payload = entity.get_payload()
        if not isinstance(payload, list):  # is_multipart() says it is; for the type checker
            return
        if entity.get_content_maintype() != "message":
            for sub in payload:
                if isinstance(sub, Message):
                    yield from self._entity(sub, prefix, depth, nesting + 1, state)
            return
        # message/rfc822 holds one message, message/delivery-status several header blocks.
        name = prefix + _attachment_label(entity, next(state.numbering), unnamed_prefix="")
        if depth + 1 > self.limits.max_archive_depth:
            self.trouble.note(
                Reason.ARCHIVE_NESTING_LEVEL_OVER_LIMIT,
                f"{name}: messages nested deeper than {self.limits.max_archive_depth}",
            )
            return
        for i, inner in enumerate(payload):
            if not isinstance(inner, Message):
                continue
            inner_name = name if i == 0 else f"{name} ({i + 1})"
            yield from self.message(inner, inner_name + "/", depth + 1)

    def _leaf(self, leaf: Message, prefix: str, number: int, state: _Leaves) -> Iterator[Part]:
        ctype = leaf.get_content_type()
        maintype = leaf.get_content_maintype()
        filename = _filename(leaf)
        # A multipart that is not one (its boundary never appeared) is text as far as
        # anyone can tell; scanning it as text keeps whatever plain content it has.
        inline_text = (
            maintype in ("text", "multipart") and filename is None and leaf.get_content_disposition() != "attachment"
        )
        data = leaf.get_payload(decode=True)
        raw = data if isinstance(data, bytes) else b""
        label = prefix.rstrip("/") or "message"
        if any(isinstance(d, errors.InvalidBase64LengthDefect) for d in leaf.defects):
            self.trouble.note(Reason.MALFORMED_FILE, f"{label}: part {number} could not be decoded")
        if not inline_text:
            if raw:
                name = prefix + _attachment_label(leaf, number, unnamed_prefix="attachment: ")
                self.budget.check()
                yield Part(name, self.budget.take(_slices(raw)), embedded=True)
            return
        if not raw:
            return
        if not state.seen_text:
            state.seen_text = True
            name = "body" if ctype == "text/plain" else f"body ({ctype})"
        else:
            name = f"part {number} ({ctype})"
        text = _decode(raw, leaf.get_content_charset())
        del raw, data
        pieces = _html_text(text) if ctype == "text/html" else _pieces(text)
        yield self._text_part(prefix + name, text_chunks(pieces, _CHUNK))

    # -- helpers -------------------------------------------------------------------------

    def _text_part(self, name: str, chunks: Iterator[bytes]) -> Part:
        self.budget.check()
        return Part(name, self.budget.take(chunks))

    def _raw_chunks(self, begin: int, end: int) -> Iterator[bytes]:
        pos = begin
        while pos < end:
            self.f.seek(pos)
            chunk = self.f.read(min(_CHUNK, end - pos))
            if not chunk:
                return
            pos += len(chunk)
            yield chunk


@dataclass
class _Leaves:
    """Per-message numbering of MIME leaves, shared by the recursion."""

    numbering: Iterator[int]
    seen_text: bool = False


def _header_lines(message: Message) -> Iterator[str]:
    """``Name: value`` per header, decoded where the policy can, raw where it cannot."""
    for name, raw in message.raw_items():
        try:
            value = str(message.policy.header_fetch_parse(name, raw))
        except Exception:  # a header the parser cannot decode is still scanned as written
            value = str(raw)
        yield f"{name}: {value}\n"


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # an unparseable RFC 2231 parameter: the part is still read, unnamed
        return None
    return name or None


def _attachment_label(part: Message, number: int, unnamed_prefix: str) -> str:
    """``attachment: FILENAME``, or ``{unnamed_prefix}part K (TYPE)`` without a file name."""
    filename = _filename(part)
    if filename:
        return f"attachment: {filename}"
    return f"{unnamed_prefix}part {number} ({part.get_content_type()})"


def _decode(data: bytes, charset: str | None) -> str:
    """Text from a part's bytes; digits survive any fallback, which is what matters here."""
    if charset:
        try:
            return data.decode(charset, "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass  # unknown or non-text codec ("base64", "rot13"): read as UTF-8 below
    return data.decode("utf-8", "replace")


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), _TEXT_PIECE):
        yield text[start : start + _TEXT_PIECE]


# A tag is at most 4 KiB and never contains "<": every attempt to match one stops at the
# next "<", so tokenising is linear however hostile the markup (html.parser can go
# quadratic on unclosed constructs). As in a browser, "<" starts a tag only before a letter,
# "/", "!" or "?"; anything else is text, a stray "<" included.
_TOKEN = re.compile(r"<[A-Za-z/!?][^<>]{0,4096}>|[^<]+|<")
_TAG_NAME = re.compile(r"<\s*/?\s*([A-Za-z][A-Za-z0-9]*)")
_READABLE_ATTR = re.compile(
    r"""\b(?:alt|title|value|placeholder|content|aria-label|label)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")  # includes no-break spaces, which a reader sees as spaces
#: Tags that end a line for a reader; other (inline) tags join the text around them, so a
#: number split by <b> or <span> is still one number.
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl", "dt",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "option", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead",
    "title", "tr", "ul",
})


def _html_text(markup: str) -> Iterator[str]:
    """The text of an HTML document, in pieces."""
    after_space = True  # collapse whitespace across tags too, as a browser renders it
    for token in _TOKEN.finditer(markup):
        s = token.group()
        if s.startswith("<") and len(s) > 1:
            tag = _TAG_NAME.match(s)
            if tag is not None and tag.group(1).lower() in _BLOCK_TAGS:
                yield "\n"
                after_space = True
            for attr in _READABLE_ATTR.finditer(s):
                value = next(v for v in attr.groups() if v is not None)
                if value:
                    yield "\n" + _SPACE.sub(" ", html.unescape(value)).strip() + "\n"
                    after_space = True
            continue
        text = _SPACE.sub(" ", html.unescape(s))
        if after_space:
            text = text.lstrip(" ")
        if text:
            yield text
            after_space = text.endswith(" ")


def _slices(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        yield bytes(view[start : start + _CHUNK])

