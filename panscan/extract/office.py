"""Text of Office Open XML (docx, xlsx, pptx) and OpenDocument (odt, ods, odp) packages.

Handlers (see :mod:`panscan.extract.parts`) called by the framework once it has sniffed a
zip as OOXML or OpenDocument:

* :func:`ooxml_parts` -- docx, xlsx, pptx (and their macro/template variants), told apart
  by the package's main part (``_rels/.rels``, else the usual ``word/``, ``xl/``, ``ppt/``
  names). An unrecognised OOXML package (Visio, XPS...) yields the character data of each
  XML member, one line per element, so its text is still scanned.
* :func:`odf_parts` -- odt, ods, odp: ``content.xml``, then ``styles.xml`` (page headers and
  footers).

What callers may rely on:

* Every member of the package is accounted for. The members read as a document come first,
  as text parts (below). Then every other member is yielded as an ordinary member
  (``embedded=True``, its raw bytes, named by its path), exactly as a plain zip's members:
  the framework sniffs and expands it, so document properties (``docProps/core.xml``,
  ``app.xml``, ``custom.xml``, ODF ``meta.xml``, ``settings.xml``), ``customXml/``, package
  structure (``[Content_Types].xml``, ``*.rels``, ``META-INF/manifest.xml``, ``mimetype``),
  media, embedded objects and packages (``word/embeddings/*.xlsx``, expanded in turn) and
  anything else in the zip (``export/cards.csv``) are scanned. After the text parts, every
  member read as text comes again as its raw bytes in a ``backstop`` part (the framework
  does not report a number again that the text already gave): a reader takes text nodes,
  while attributes (alt text, tooltips, field codes) and fallback copies hold characters
  too, and a member that could not be parsed to its end (malformed XML, a refused DTD
  entity, a bad CRC) is seen whole; such a member's problem is raised after its bytes. A member named as
  document text whose root element is not of the vocabulary its reader knows (a "header"
  holding some other XML) gives no text and is an ordinary member.
  Members are read as :func:`panscan.extract.archive.zip_parts` reads them (same member
  count and overlap checks, encryption, compression methods, CRC and size checks).
* Text parts are ``embedded=False``, UTF-8, one line per paragraph / cell, laid out as a
  reader sees it, so a card number split across runs or formatting tags is contiguous:

  - docx: parts ``word/document.xml`` then headers, footers, footnotes, endnotes, comments,
    each named by its member path; ``w:t`` joined per ``w:p``, ``w:tab`` -> tab, ``w:br`` /
    ``w:cr`` -> newline, non-breaking hyphen -> ``-``. Text deleted with track changes on is
    still stored in the file, so it follows its paragraph on a line of its own.
    ``mc:Fallback`` copies (duplicates of ``mc:Choice``) and field instructions are
    skipped; document properties (``docProps/``) are ordinary members.
  - pptx: each slide ``ppt/slides/slideN.xml`` then each notes page, in slide order,
    ``a:t`` joined per ``a:p``.
  - xlsx: one part per worksheet, named by the sheet's name in ``xl/workbook.xml``
    (worksheets the workbook does not list are named by member path); one line per
    non-empty cell: shared strings (rich-text runs joined, phonetic runs left out), inline
    strings, numbers and formulas' cached values (never the formula); then, as a part
    ``xl/sharedStrings.xml``, the shared strings no cell showed. ``where(offset)``
    returns ``"!C5"`` for an offset inside a cell's text that holds at least 13 digits
    (every cell a card number can start in), ``None`` elsewhere.
    Numbers: an integer written plainly (``4111111111111111``) is kept as written; one in
    exponent form is rewritten as the integer it denotes when it is one
    (``4.111111111111111E+15`` -> ``4111111111111111``). A 16-digit number that a writer
    stored as a double with 15 significant digits has lost its last digit: that is
    Excel's doing and no reader can restore it.
  - odt / odp: ``text:p`` and ``text:h`` one line each, spans joined, ``text:s`` -> spaces,
    ``text:tab`` -> tab, ``text:line-break`` -> newline, white space collapsed as ODF
    specifies, footnote citation marks left out.
  - ods: one part per ``table:table`` named by its ``table:name``, one line per non-empty
    cell (a cell's paragraphs on lines of their own); when a numeric cell's stored value is
    not what its text shows (``4.11E+15``), the value follows on its own line. ``where``
    as for xlsx, with the reference computed from row and column positions including
    ``number-rows-repeated`` / ``number-columns-repeated``; a repeated row or cell is read
    once (its copies hold the same values), so huge repeats cost nothing.
    Parts of an ods come from one XML stream: consume each part's chunks before asking
    for the next part (a part asked for early makes the rest of the previous one skipped).

* Memory is bounded whatever the package: members are read in steps of at most 256 KiB
  into an expat parser (``defusedxml``: entity declarations and external references are
  refused) whose callbacks emit text as it arrives; no tree is built and nothing is written
  to disk. Kept in memory: the xlsx shared-string table (up to
  :data:`SHARED_STRINGS_MAX_CHARS`; strings past that are scanned as a part
  ``xl/sharedStrings.xml`` of their own, one per line, instead of inside their cells) with
  one byte per string (whether a cell showed it), and the offsets of cells with 13+ digits
  for ``where``.
* Errors, as :class:`ExtractError`. Raised from the parts iterator: not a readable zip ->
  ``MALFORMED_FILE``; too many members or overlapping ones (see ``open_zip``); an ODF whose
  manifest declares encryption -> ``INVALID_ENCRYPTION``, after the members stored in the
  clear (the encrypted ones are not scanned). Raised from the chunks of a member's raw or
  backstop part, after its bytes: malformed XML (or a DTD entity) -> ``MALFORMED_FILE``; and
  what the archive reader raises for a member (encrypted -> ``INVALID_ENCRYPTION``, a method
  zipfile lacks -> ``UNSUPPORTED_FILE_TYPE``, bad CRC or sizes -> ``MALFORMED_FILE``, ratio).
  Raised from a text part's chunks, after its text, and ending the item: the file failing to
  read -> ``READ_ERROR``; more than ``limits.max_expanded_bytes`` of member bytes parsed in
  total (bytes are counted as they come out of the decompressor, never from the sizes the zip
  declares) -> ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT``, after exactly that many bytes
  were parsed. Raw parts are counted by the framework like any zip member's.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO, Protocol

from defusedxml.common import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from panscan.extract.archive import open_zip, zip_member_part
from panscan.extract.budget import ITEM_WIDE_REASONS, ExtractError, Limits
from panscan.extract.parts import Part, text_chunks
from panscan.model import Reason

__all__ = ["SHARED_STRINGS_MAX_CHARS", "odf_parts", "ooxml_parts"]

#: Characters of xlsx shared strings held in memory to resolve cells (each string also
#: counts a fixed overhead). Strings past this are scanned on their own, without cell refs.
SHARED_STRINGS_MAX_CHARS = 32 * 2**20
_STRING_OVERHEAD = 64
# Fewest digits a card number has (DESIGN.md): cells with fewer cannot hold the start of a
# hit, so their offsets need not be kept for ``where``.
_MIN_PAN_DIGITS = 13
# An ODF text:s asking for more spaces than this gets this many: the matcher only cares
# whether there is one, and a hostile c="1000000000" must not cost a gigabyte.
_MAX_SPACES = 64

# --------------------------------------------------------------------------------------------
# Names. Transitional and Strict OOXML use different namespace URIs for the same elements.

_W_NS = ("http://schemas.openxmlformats.org/wordprocessingml/2006/main", "http://purl.oclc.org/ooxml/wordprocessingml/main")
_A_NS = ("http://schemas.openxmlformats.org/drawingml/2006/main", "http://purl.oclc.org/ooxml/drawingml/main")
_S_NS = ("http://schemas.openxmlformats.org/spreadsheetml/2006/main", "http://purl.oclc.org/ooxml/spreadsheetml/main")
_P_NS = ("http://schemas.openxmlformats.org/presentationml/2006/main", "http://purl.oclc.org/ooxml/presentationml/main")
_M_NS = ("http://schemas.openxmlformats.org/officeDocument/2006/math", "http://purl.oclc.org/ooxml/officeDocument/math")
_MC_NS = ("http://schemas.openxmlformats.org/markup-compatibility/2006",)
_PKG_REL_NS = ("http://schemas.openxmlformats.org/package/2006/relationships",)
_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_ODF_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_ODF_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ODF_DC = "http://purl.org/dc/elements/1.1/"
_ODF_MANIFEST = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
_ODF_ROOT = (_ODF_OFFICE,)


def _tags(namespaces: Iterable[str], *names: str) -> frozenset[str]:
    """The ``uri}name`` spellings expat gives for ``names`` in any of ``namespaces``."""
    return frozenset(f"{ns}}}{name}" for ns in namespaces for name in names)


def _tag(namespace: str, name: str) -> str:
    """An element or attribute name as expat reports it (``uri}local``; see :func:`_parser`)."""
    return f"{namespace}}}{name}"


_MC_FALLBACK = _tags(_MC_NS, "Fallback")

# --------------------------------------------------------------------------------------------
# Reading members: byte budget, zip errors, streaming parse.


class _Budget:
    """Member bytes still allowed for this package (``Limits.max_expanded_bytes``)."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, n: int) -> int:
        """How many of ``n`` more bytes fit; the budget is spent by that many."""
        allowed = max(0, min(n, self.left))
        self.left -= n
        return allowed


class _Target(Protocol):
    """Expat callbacks (``start``/``end``/``data``) that append what they produce to
    ``out``; the reader drains ``out`` after every fed block. Names are ``uri}local``
    (unprefixed attributes plain), attributes a dict."""

    out: list[Any]

    def start(self, tag: str, attrib: dict[str, str]) -> None: ...

    def end(self, tag: str) -> None: ...

    def data(self, text: str) -> None: ...


class _Package:
    """An open zip plus the state shared by the parts of one handler call: which members
    were read as text (``read``), and which could not be parsed to their end (``broken``:
    the error to report once their raw bytes have been scanned, or ``None`` when reading
    them again raises it by itself). :meth:`rest` accounts for every other member."""

    def __init__(self, f: BinaryIO, limits: Limits) -> None:
        # The same checks as for a plain zip (member count, overlapping members...).
        self.zip = open_zip(f, limits)
        self.file = f
        self.limits = limits
        self.budget = _Budget(limits.max_expanded_bytes)
        # Part names in a package are case-insensitive (OPC); writers differ in case.
        self.names = {info.filename.lower(): info for info in self.zip.infolist()}
        self.read: set[zipfile.ZipInfo] = set()
        self.broken: dict[zipfile.ZipInfo, ExtractError | None] = {}

    def info(self, name: str) -> zipfile.ZipInfo | None:
        return self.names.get(name.lower())

    def member(self, info: zipfile.ZipInfo) -> Part:
        """The member's bytes as a plain zip member: read by the archive reader, so
        encryption, compression methods, CRC and sizes are judged as for any zip."""
        return zip_member_part(self.zip, info, self.file, self.limits)

    def head(self, info: zipfile.ZipInfo, n: int) -> bytes:
        """Up to ``n`` first bytes of a member; b"" when they cannot be read (its raw part
        in :meth:`rest` reports why)."""
        chunks = self.member(info).chunks
        try:
            return next(chunks, b"")[:n]
        except ExtractError as e:
            if e.reason in ITEM_WIDE_REASONS:
                raise
            return b""
        finally:
            _close(chunks)

    def parse(self, info: zipfile.ZipInfo, target: _Target, join: bool = False,
              root: tuple[str, ...] | None = None) -> Iterator[Any]:
        """Stream one member through a defused expat parser into ``target`` and yield what
        the target produces, block by block; with ``join``, consecutive strings of a block
        are joined (a sheet's text as one string per block, not a small object per cell).

        With ``root``, a member whose root element is in none of those namespaces is not
        what ``target`` reads (a "header" that is some other XML): it yields nothing and no
        longer counts as read, so :meth:`rest` scans its raw bytes.

        A member that cannot be parsed to its end (malformed XML, a refused DTD entity, a
        bad CRC, encryption...) ends the generator quietly after everything produced from
        the bytes before the problem, and is noted in ``broken`` so that :meth:`rest` scans
        its raw bytes and then reports the problem. Only item-wide errors (the byte budget,
        the file failing to read) are raised, after that same text."""
        parser = _parser(target, root)
        out = target.out
        chunks = self.member(info).chunks
        try:
            while True:
                failure: ExtractError | None = None
                try:
                    data = next(chunks, b"")
                except ExtractError as e:
                    failure, data = e, b""
                allowed = self.budget.take(len(data))
                if allowed < len(data):
                    failure = ExtractError(
                        Reason.ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT,
                        f"more than {self.budget.limit} bytes of the package's XML expanded",
                    )
                    data = data[:allowed]
                try:
                    if data:
                        parser.feed(data)
                    elif failure is None:
                        parser.close()
                except (ParseError, DefusedXmlException) as e:
                    # Reading the member again will not meet this one: kept to be raised
                    # after its raw bytes.
                    failure = ExtractError(Reason.MALFORMED_FILE, f"bad XML ({type(e).__name__})")
                    self.broken[info] = failure
                except _Foreign:
                    self.read.discard(info)
                    return
                if out:
                    yield from _joined(out) if join else out
                    out.clear()
                if failure is not None:
                    if failure.reason in ITEM_WIDE_REASONS:
                        raise failure
                    self.broken.setdefault(info, None)
                    return
                if not data:
                    return
        finally:
            _close(chunks)

    def parse_small(self, name: str, target: _Target) -> list[Any]:
        """Everything ``target`` produces for a (structure) member; [] if it is absent."""
        info = self.info(name)
        return [] if info is None else list(self.parse(info, target))

    def text_part(self, info: zipfile.ZipInfo, name: str, pieces: Iterator[Any],
                  where: Callable[[int], str | None] | None = None) -> Part:
        """A text part made from ``info``'s parse: the member counts as read."""
        self.read.add(info)
        return Part(name, _text(pieces), where=where)

    def rest(self, skip: Iterable[str] = ()) -> Iterator[Part]:
        """Every member (directories and the names in ``skip`` aside) not read as text, as
        an ordinary member: its raw bytes, which the framework sniffs and expands (a csv, a
        nested xlsx, a properties XML scanned as it is); then, of each member read as text,
        its raw bytes as a backstop (scanned; a number its text already gave is not reported
        again). A member that failed to parse reports
        its problem after its raw bytes."""
        skipped = frozenset(skip)
        backstops: list[zipfile.ZipInfo] = []
        for info in self.zip.infolist():
            if info.is_dir() or info.filename in skipped:
                continue
            if info not in self.read:
                yield self._raw(info)
            else:
                # After all text, so that what the text gave counts first. Every member read as
                # text, not only a broken one: a reader takes text nodes, and an attribute (alt
                # text, a hyperlink, a field code) or a fallback copy holds characters too.
                backstops.append(info)
        for info in backstops:
            yield self._raw(info, backstop=True)

    def _raw(self, info: zipfile.ZipInfo, backstop: bool = False) -> Part:
        part = self.member(info)
        error = self.broken.get(info)
        chunks = part.chunks if error is None else _then_raise(part.chunks, error)
        if backstop:
            return Part(part.name, chunks, backstop=True)
        return Part(part.name, chunks, embedded=True)


def _close(chunks: Iterator[bytes]) -> None:
    """Stop a member's reader before its end (frees its decompressor; the file stays open)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _then_raise(chunks: Iterator[bytes], error: ExtractError) -> Iterator[bytes]:
    yield from chunks
    raise error


class _Foreign(Exception):
    """The member's root element is not of the vocabulary its reader knows."""


def _parser(target: _Target, root: tuple[str, ...] | None = None) -> Any:
    """A defusedxml parser whose element events go straight to ``target`` (after the root
    element's namespace was found in ``root``, when given; else :class:`_Foreign`).

    ``DefusedXMLParser`` installs the guards (entity declarations, external references);
    its ElementTree layer would then rename every tag and attribute and rebuild the
    attribute dict per element in Python, which costs more than the extraction itself on
    a big sheet, so expat's own callbacks are pointed at the target instead.
    """
    parser = DefusedXMLParser(target=target)
    expat = parser.parser
    expat.ordered_attributes = False
    expat.StartElementHandler = target.start if root is None else _check_root(expat, target, root)
    expat.EndElementHandler = target.end
    expat.CharacterDataHandler = target.data
    return parser


def _check_root(expat: Any, target: _Target, namespaces: tuple[str, ...]) -> Callable[[str, dict[str, str]], None]:
    """A start handler that checks the first (root) element, then hands over to ``target``."""

    def first(tag: str, attrib: dict[str, str]) -> None:
        if tag.rpartition("}")[0] not in namespaces:
            raise _Foreign
        expat.StartElementHandler = target.start
        target.start(tag, attrib)

    return first


def _joined(items: list[Any]) -> Iterator[Any]:
    """``items`` with each run of consecutive strings joined into one."""
    run: list[str] = []
    for item in items:
        if isinstance(item, str):
            run.append(item)
            continue
        if run:
            yield "".join(run)
            run.clear()
        yield item
    if run:
        yield "".join(run)


def _text(pieces: Iterator[str]) -> Iterator[bytes]:
    """``text_chunks`` of ``pieces``, flushed before an ``ExtractError`` from them is raised
    (``text_chunks`` alone would drop the text it buffered)."""
    failure: list[ExtractError] = []

    def guarded() -> Iterator[str]:
        try:
            yield from pieces
        except ExtractError as e:
            failure.append(e)

    yield from text_chunks(guarded())
    if failure:
        raise failure[0]


def _resolve(source: str, target: str) -> str:
    """A relationship target as a member name (relative to the source part's folder;
    ``source`` is "" for the package's own relationships)."""
    if target.startswith("/"):
        return target[1:]
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target))


def _rels_path(source: str) -> str:
    folder, name = posixpath.split(source)
    return posixpath.join(folder, "_rels", name + ".rels")


class _Relationships:
    """``Relationship`` elements of a ``.rels`` member as (id, type, target) triples."""

    def __init__(self) -> None:
        self.out: list[tuple[str, str, str]] = []
        self.tags = _tags(_PKG_REL_NS, "Relationship")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in self.tags and attrib.get("TargetMode") != "External":
            self.out.append((attrib.get("Id", ""), attrib.get("Type", ""), attrib.get("Target", "")))

    def end(self, tag: str) -> None:
        pass

    def data(self, text: str) -> None:
        pass


def _relationships(pkg: _Package, source: str) -> list[tuple[str, str, str]]:
    """(id, type, member name) of the relationships of part ``source`` ("" for the package)."""
    rels = pkg.parse_small(_rels_path(source) if source else "_rels/.rels", _Relationships())
    return [(rid, rtype, _resolve(source, target)) for rid, rtype, target in rels]


# --------------------------------------------------------------------------------------------
# Word and DrawingML text: runs joined per paragraph.


class _RunText:
    """Character data of ``text`` elements, a newline at each paragraph end.

    ``tabs`` / ``breaks`` count only inside a run when ``runs`` is non-empty (Word also
    uses ``w:tab`` for tab-stop definitions in paragraph properties). Text of ``deleted``
    elements is collected and emitted on its own line after its paragraph.
    """

    _DELETED_MAX = 1 << 20  # chars of deleted text held before they are emitted early

    def __init__(self, *, text: frozenset[str], paragraph: frozenset[str], tabs: frozenset[str],
                 breaks: frozenset[str], runs: frozenset[str] = frozenset(),
                 hyphens: frozenset[str] = frozenset(), deleted: frozenset[str] = frozenset()) -> None:
        self.out: list[str] = []
        self.text, self.paragraph, self.tabs, self.breaks = text, paragraph, tabs, breaks
        self.runs, self.hyphens, self.deleted_tags = runs, hyphens, deleted
        self.skip = 0  # depth inside an mc:Fallback copy
        self.in_text = 0
        self.in_deleted = 0
        self.in_run = 0
        self.deleted: list[str] = []
        self.deleted_size = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if self.skip or tag in _MC_FALLBACK:
            self.skip += 1
        elif tag in self.text:
            self.in_text += 1
        elif tag in self.deleted_tags:
            self.in_deleted += 1
        elif tag in self.runs:
            self.in_run += 1
        elif self.in_run or not self.runs:
            if tag in self.tabs:
                self.out.append("\t")
            elif tag in self.breaks:
                self.out.append("\n")
            elif tag in self.hyphens:
                self.out.append("-")

    def end(self, tag: str) -> None:
        if self.skip:
            self.skip -= 1
        elif tag in self.text:
            self.in_text -= 1
        elif tag in self.deleted_tags:
            self.in_deleted -= 1
            if self.deleted_size > self._DELETED_MAX:
                self.out.append("\n")  # mid-paragraph: the deleted text starts a line
                self._flush_deleted()
        elif tag in self.runs:
            self.in_run -= 1
        elif tag in self.paragraph:
            self.out.append("\n")
            self._flush_deleted()

    def data(self, text: str) -> None:
        if self.skip:
            return
        if self.in_text:
            self.out.append(text)
        elif self.in_deleted:
            self.deleted.append(text)
            self.deleted_size += len(text)

    def _flush_deleted(self) -> None:
        """Deleted text as a line of its own (called when a line has just ended)."""
        if self.deleted:
            self.out.extend(self.deleted)
            self.out.append("\n")
            self.deleted.clear()
            self.deleted_size = 0


def _word_text() -> _RunText:
    return _RunText(
        text=_tags(_W_NS, "t") | _tags(_M_NS, "t"),
        paragraph=_tags(_W_NS, "p"),
        tabs=_tags(_W_NS, "tab", "ptab"),
        breaks=_tags(_W_NS, "br", "cr"),
        runs=_tags(_W_NS, "r"),
        hyphens=_tags(_W_NS, "noBreakHyphen"),
        deleted=_tags(_W_NS, "delText"),
    )


def _drawing_text() -> _RunText:
    # DrawingML keeps tabs as literal characters in a:t; a:br sits beside the runs.
    return _RunText(text=_tags(_A_NS, "t"), paragraph=_tags(_A_NS, "p"), tabs=frozenset(),
                    breaks=_tags(_A_NS, "br"))


class _AllText:
    """Any character data, a newline after each element that held some (unknown XML)."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.had_text = False

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        pass

    def end(self, tag: str) -> None:
        if self.had_text:
            self.out.append("\n")
            self.had_text = False

    def data(self, text: str) -> None:
        if text.strip():
            self.out.append(text)
            self.had_text = True


def _numbered(names: Iterable[str], pattern: str) -> list[str]:
    """Member names matching ``pattern`` (one group: a number or "") in numeric order."""
    regex = re.compile(pattern, re.IGNORECASE)
    found = [(m.group(1), name) for name in names if (m := regex.fullmatch(name))]
    return [name for _, name in sorted(found, key=lambda t: (len(t[0]), t[0], t[1]))]


def _text_part(pkg: _Package, info: zipfile.ZipInfo, make_target: Callable[[], _Target],
               root: tuple[str, ...] | None) -> Part:
    return pkg.text_part(info, info.filename, pkg.parse(info, make_target(), join=True, root=root))


# --------------------------------------------------------------------------------------------
# OOXML


def ooxml_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """Text parts of a docx, xlsx or pptx (or an unknown OOXML package); module docstring."""
    pkg = _Package(f, limits)
    main = next((target for _, rtype, target in _relationships(pkg, "")
                 if rtype.endswith("/officeDocument") and pkg.info(target)), None)
    if main is None:
        main = next((name for name in ("word/document.xml", "xl/workbook.xml", "ppt/presentation.xml")
                     if pkg.info(name)), None)
    folder = main.split("/", 1)[0].lower() if main else ""
    if main and folder == "word":
        yield from _docx_parts(pkg, main)
    elif main and folder == "xl":
        yield from _xlsx_parts(pkg, main)
    elif main and folder == "ppt":
        yield from _pptx_parts(pkg)
    else:
        for info in pkg.zip.infolist():
            lower = info.filename.lower()
            if lower.endswith(".xml") and lower != "[content_types].xml" and not info.is_dir():
                yield _text_part(pkg, info, _AllText, None)
    yield from pkg.rest()


def _docx_parts(pkg: _Package, main: str) -> Iterator[Part]:
    names = [info.filename for info in pkg.zip.infolist()]
    members = [main]
    for kind in ("header", "footer", "footnotes", "endnotes", "comments"):
        members += _numbered(names, rf"word/{kind}(\d*)\.xml")
    seen: set[str] = set()
    for name in members:
        info = pkg.info(name)
        if info is not None and info.filename not in seen:
            seen.add(info.filename)
            yield _text_part(pkg, info, _word_text, _W_NS)


def _pptx_parts(pkg: _Package) -> Iterator[Part]:
    names = [info.filename for info in pkg.zip.infolist()]
    slides = _numbered(names, r"ppt/slides/slide(\d+)\.xml")
    notes = _numbered(names, r"ppt/notesSlides/notesSlide(\d+)\.xml")
    for name in slides + notes:
        info = pkg.info(name)
        if info is not None:
            yield _text_part(pkg, info, _drawing_text, _P_NS)


# --------------------------------------------------------------------------------------------
# Spreadsheets: cells, their references, and ``where``.


class _CellIndex:
    """Text spans of the cells that may hold a card number, for ``where``."""

    __slots__ = ("ends", "refs", "starts")

    def __init__(self) -> None:
        self.starts = array("q")
        self.ends = array("q")
        self.refs: list[str] = []

    def add(self, start: int, end: int, ref: str) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.refs.append(ref)

    def where(self, offset: int) -> str | None:
        i = bisect_right(self.starts, offset) - 1
        if i >= 0 and offset < self.ends[i]:
            return "!" + self.refs[i]
        return None


class _CellWriter:
    """Emits one cell's text as lines and records where it lies in the part's bytes."""

    __slots__ = ("cells", "out", "pos")

    def __init__(self, out: list[Any]) -> None:
        self.out = out
        self.pos = 0
        self.cells = _CellIndex()

    def restart(self) -> _CellIndex:
        """Offsets start again at 0 (a new part); returns the new part's index."""
        self.pos = 0
        self.cells = _CellIndex()
        return self.cells

    def emit(self, text: str, ref: Callable[[], str]) -> None:
        if not text:
            return
        line = text + "\n"
        size = len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))
        if len(text) >= _MIN_PAN_DIGITS and sum(map(text.count, "0123456789")) >= _MIN_PAN_DIGITS:
            self.cells.add(self.pos, self.pos + size, ref())
        self.out.append(line)
        self.pos += size


def _column_letters(col: int) -> str:
    """1 -> "A", 27 -> "AA"."""
    letters = ""
    while col > 0:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _column_number(letters: str) -> int:
    col = 0
    for ch in letters.upper():
        col = col * 26 + ord(ch) - 64
    return col


def _small_int(value: str | None) -> int | None:
    """A non-negative decimal attribute of at most 9 digits, else None (hostile or absent)."""
    if value and len(value) < 10 and value.isascii() and value.isdigit():
        return int(value)
    return None


_CELL_REF = re.compile(r"([A-Za-z]{1,3})([0-9]{1,7})")


def _plain_number(value: str) -> str:
    """An integer in exponent form written out (``4.1E+15`` -> ``4100000000000000``)."""
    if "E" not in value and "e" not in value:
        return value
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value
    if not number.is_finite() or abs(number) >= 10**20 or number != number.to_integral_value():
        return value
    return str(int(number))


class _SharedStrings:
    """One string per ``si``: its ``t`` text, rich-text runs joined, phonetic runs left out."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.si, self.t, self.phonetic = _tags(_S_NS, "si"), _tags(_S_NS, "t"), _tags(_S_NS, "rPh")
        self.in_t = 0
        self.in_phonetic = 0
        self.pieces: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in self.t:
            self.in_t += 1
        elif tag in self.phonetic:
            self.in_phonetic += 1

    def end(self, tag: str) -> None:
        if tag in self.t:
            self.in_t -= 1
        elif tag in self.phonetic:
            self.in_phonetic -= 1
        elif tag in self.si:
            self.out.append("".join(self.pieces))
            self.pieces.clear()

    def data(self, text: str) -> None:
        if self.in_t and not self.in_phonetic:
            self.pieces.append(text)


class _SheetCells:
    """Worksheet cells (``sheetData/row/c``) as lines, one per non-empty cell."""

    def __init__(self, shared: list[str], used: bytearray) -> None:
        self.out: list[str] = []
        self.writer = _CellWriter(self.out)
        self.shared = shared
        self.used = used
        self.c_tag, self.row_tag = _tags(_S_NS, "c"), _tags(_S_NS, "row")
        self.v_tag, self.t_tag = _tags(_S_NS, "v"), _tags(_S_NS, "t")
        self.is_tag, self.phonetic = _tags(_S_NS, "is"), _tags(_S_NS, "rPh")
        # Positions are worked out only when needed (a cell without an "r" attribute, or
        # one that may hold a card number): most cells never need them.
        self.row_attr: str | None = None
        self.row_number = 0
        self.ref: str | None = None
        self.col_number = 0
        self.kind: str | None = None
        self.in_v = self.in_is = self.in_t = self.in_phonetic = 0
        self.pieces: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in self.c_tag:
            ref = attrib.get("r")
            if ref is None:
                self.col_number = self._col() + 1
            self.ref = ref
            self.kind = attrib.get("t")
            self.pieces.clear()
        elif tag in self.v_tag:
            self.in_v += 1
        elif tag in self.is_tag:
            self.in_is += 1
        elif tag in self.t_tag:
            self.in_t += 1
        elif tag in self.phonetic:
            self.in_phonetic += 1
        elif tag in self.row_tag:
            row = attrib.get("r")
            if row is None:
                self.row_number = self._row() + 1
            self.row_attr = row
            self.ref = None
            self.col_number = 0

    def end(self, tag: str) -> None:
        if tag in self.c_tag:
            self._cell()
        elif tag in self.v_tag:
            self.in_v -= 1
        elif tag in self.is_tag:
            self.in_is -= 1
        elif tag in self.t_tag:
            self.in_t -= 1
        elif tag in self.phonetic:
            self.in_phonetic -= 1

    def data(self, text: str) -> None:
        if self.in_v or (self.in_is and self.in_t and not self.in_phonetic):
            self.pieces.append(text)

    def _cell(self) -> None:
        pieces = self.pieces
        value = pieces[0] if len(pieces) == 1 else "".join(pieces)
        pieces.clear()
        kind = self.kind
        if kind is None or kind == "n":
            value = _plain_number(value.strip())
        elif kind == "s":
            index = _small_int(value.strip())
            if index is not None and index < len(self.shared):
                value = self.shared[index]
                self.used[index] = 1
            else:
                value = ""
        self.writer.emit(value, self._ref)

    def _row(self) -> int:
        if self.row_attr is not None:
            self.row_number = _small_int(self.row_attr) or self.row_number + 1
            self.row_attr = None
        return self.row_number

    def _col(self) -> int:
        if self.ref is not None:
            m = _CELL_REF.fullmatch(self.ref)
            self.col_number = _column_number(m.group(1)) if m else self.col_number + 1
            self.ref = None
        return self.col_number

    def _ref(self) -> str:
        if self.ref is not None and _CELL_REF.fullmatch(self.ref):
            return self.ref
        return f"{_column_letters(self._col())}{self._row()}"


class _Workbook:
    """(sheet name, relationship id) of each ``sheets/sheet``, in workbook order."""

    def __init__(self) -> None:
        self.out: list[tuple[str, str]] = []
        self.sheet = _tags(_S_NS, "sheet")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in self.sheet:
            rid = next((v for k, v in attrib.items() if k.endswith("}id")), "")
            self.out.append((attrib.get("name", ""), rid))

    def end(self, tag: str) -> None:
        pass

    def data(self, text: str) -> None:
        pass


def _xlsx_parts(pkg: _Package, workbook: str) -> Iterator[Part]:
    rels = _relationships(pkg, workbook)
    # Only worksheets hold cells; chartsheets and the like listed beside them are read raw.
    targets = {rid: target for rid, rtype, target in rels if rtype.endswith("/worksheet")}
    shared: list[str] = []
    strings = next((target for _, rtype, target in rels if rtype.endswith("/sharedStrings")), "xl/sharedStrings.xml")
    info = pkg.info(strings)
    if info is not None:
        table = pkg.parse(info, _SharedStrings(), root=_S_NS)
        pkg.read.add(info)
        held = 0
        for s in table:
            shared.append(s)
            held += len(s) + _STRING_OVERHEAD
            if held > SHARED_STRINGS_MAX_CHARS:
                # The rest are scanned as a part of their own rather than held.
                yield pkg.text_part(info, info.filename, (s + "\n" for s in table))
                break
    used = bytearray(len(shared))  # which held strings some cell showed
    sheets: list[tuple[str, zipfile.ZipInfo]] = []
    for name, rid in pkg.parse_small(workbook, _Workbook()):
        sheet = pkg.info(targets.get(rid, ""))
        if sheet is not None:
            sheets.append((name or sheet.filename, sheet))
    listed = {info.filename for _, info in sheets}
    for member in _numbered(pkg.names, r"xl/worksheets/sheet(\d*)\.xml"):
        sheet = pkg.names[member]
        if sheet.filename not in listed:
            sheets.append((sheet.filename, sheet))
    for name, sheet in sheets:
        target = _SheetCells(shared, used)
        yield pkg.text_part(sheet, name, pkg.parse(sheet, target, join=True, root=_S_NS),
                            where=target.writer.cells.where)
    if info is not None and 0 in used:
        # Strings no cell showed (left behind by an edit, or after a sheet that broke) are
        # in the file all the same.
        yield pkg.text_part(info, info.filename, (s + "\n" for s, u in zip(shared, used, strict=True) if not u and s))


# --------------------------------------------------------------------------------------------
# OpenDocument


class _Manifest:
    """The entries that are encrypted (their paths), and the package's media type."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.encrypted: set[str] = set()
        self.media_type = ""
        self.current = ""
        self.entry, self.encryption = _tag(_ODF_MANIFEST, "file-entry"), _tag(_ODF_MANIFEST, "encryption-data")
        self.path, self.type = _tag(_ODF_MANIFEST, "full-path"), _tag(_ODF_MANIFEST, "media-type")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == self.encryption:
            self.encrypted.add(self.current)
        elif tag == self.entry:
            self.current = attrib.get(self.path, "")
            if self.current == "/":
                self.media_type = attrib.get(self.type, "")

    def end(self, tag: str) -> None:
        pass

    def data(self, text: str) -> None:
        pass


_ODF_PARAGRAPH = frozenset({_tag(_ODF_TEXT, "p"), _tag(_ODF_TEXT, "h")})
_ODF_SPACE = _tag(_ODF_TEXT, "s")
_ODF_TAB = _tag(_ODF_TEXT, "tab")
_ODF_LINE_BREAK = _tag(_ODF_TEXT, "line-break")
_ODF_COUNT = _tag(_ODF_TEXT, "c")
# Footnote marks would glue a digit onto the number they follow; a comment's author and
# date are not text of the paragraph the comment sits in.
_ODF_SKIP = frozenset({_tag(_ODF_TEXT, "note-citation"), _tag(_ODF_DC, "creator"), _tag(_ODF_DC, "date")})
# Notes and comments sit inside a paragraph but are read apart from it: they start a line.
_ODF_ASIDE = frozenset({_tag(_ODF_TEXT, "note-body"), _tag(_ODF_OFFICE, "annotation")})
_WHITESPACE = re.compile(r"[ \t\r\n]+")


class _OdfText:
    """Paragraph text as ODF defines it: white space collapsed, text:s/tab/line-break."""

    def __init__(self) -> None:
        self.out: list[Any] = []
        self.sink = self.out  # where text goes (a spreadsheet gathers each cell's text first)
        self.in_paragraph = 0
        self.skip = 0
        self.space = True  # the last character emitted was white space (or a line started)

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if self.skip or tag in _ODF_SKIP:
            self.skip += 1
        elif tag in _ODF_PARAGRAPH:
            self.in_paragraph += 1
            self.space = True
        elif not self.in_paragraph:
            pass
        elif tag == _ODF_SPACE:
            self.text(" " * min(_small_int(attrib.get(_ODF_COUNT)) or 1, _MAX_SPACES))
        elif tag == _ODF_TAB:
            self.text("\t")
        elif tag == _ODF_LINE_BREAK or tag in _ODF_ASIDE:
            self.text("\n")
            self.space = True

    def end(self, tag: str) -> None:
        if self.skip:
            self.skip -= 1
        elif tag in _ODF_PARAGRAPH:
            self.in_paragraph -= 1
            self.text("\n")
            self.space = True

    def data(self, text: str) -> None:
        if self.in_paragraph and not self.skip:
            text = _WHITESPACE.sub(" ", text)
            if self.space and text.startswith(" "):
                text = text[1:]
            if text:
                self.text(text)
                self.space = text.endswith(" ")

    def text(self, text: str) -> None:
        self.sink.append(text)
        self.space = False


class _Sheet:
    """Marker in an ods piece stream: a new table (part) starts here."""

    __slots__ = ("cells", "name")

    def __init__(self, name: str, cells: _CellIndex) -> None:
        self.name = name
        self.cells = cells


class _OdsCells(_OdfText):
    """Tables of a spreadsheet: a :class:`_Sheet` marker per table, then its cells' lines."""

    _TABLE = _tag(_ODF_TABLE, "table")
    _ROW = _tag(_ODF_TABLE, "table-row")
    _CELLS = frozenset({_tag(_ODF_TABLE, "table-cell"), _tag(_ODF_TABLE, "covered-table-cell")})
    _NAME = _tag(_ODF_TABLE, "name")
    _ROWS_REPEATED = _tag(_ODF_TABLE, "number-rows-repeated")
    _COLUMNS_REPEATED = _tag(_ODF_TABLE, "number-columns-repeated")
    _VALUE_TYPE = _tag(_ODF_OFFICE, "value-type")
    _VALUE = _tag(_ODF_OFFICE, "value")

    def __init__(self) -> None:
        super().__init__()
        self.writer = _CellWriter(self.out)
        self.depth = 0  # table nesting: sub-tables are read as text of their cell
        self.next_row = self.row = self.next_col = self.col = 0
        self.in_cell = 0
        self.value = ""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag == self._TABLE:
            self.depth += 1
            if self.depth == 1:
                self.out.append(_Sheet(attrib.get(self._NAME, "") or "table", self.writer.restart()))
                self.next_row = 0
                return
        if self.depth == 1 and tag == self._ROW:
            self.row = self.next_row
            self.next_row += _repeat(attrib.get(self._ROWS_REPEATED))
            self.next_col = 0
        elif self.depth == 1 and tag in self._CELLS:
            self.col = self.next_col
            self.next_col += _repeat(attrib.get(self._COLUMNS_REPEATED))
            self.in_cell += 1
            self.sink = []  # this cell's pieces
            value_type = attrib.get(self._VALUE_TYPE)
            self.value = attrib.get(self._VALUE, "") if value_type in ("float", "currency", "percentage") else ""
        elif self.in_cell:
            super().start(tag, attrib)

    def end(self, tag: str) -> None:
        if tag == self._TABLE:
            self.depth -= 1
        elif self.depth == 1 and tag in self._CELLS:
            self.in_cell -= 1
            text = "".join(self.sink).strip("\n")
            value = _plain_number(self.value)
            if value and value not in text:
                text = f"{text}\n{value}" if text else value
            self.sink = self.out
            self.writer.emit(text, self._ref)
        elif self.in_cell:
            super().end(tag)

    def data(self, text: str) -> None:
        if self.in_cell:
            super().data(text)

    def _ref(self) -> str:
        return f"{_column_letters(self.col + 1)}{self.row + 1}"


def _repeat(value: str | None) -> int:
    return _small_int(value) or 1


def odf_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """Text parts of an odt, ods or odp, then every other member; see the module docstring."""
    pkg = _Package(f, limits)
    manifest = _Manifest()
    pkg.parse_small("META-INF/manifest.xml", manifest)
    if manifest.encrypted:
        # Ciphertext is not worth scanning; what is stored in the clear (mimetype,
        # manifest, thumbnail...) is.
        yield from pkg.rest(skip=manifest.encrypted)
        raise ExtractError(Reason.INVALID_ENCRYPTION, "OpenDocument package is encrypted")
    media_type = manifest.media_type
    mimetype = pkg.info("mimetype")
    if mimetype is not None and mimetype.file_size < 256:
        media_type = pkg.head(mimetype, 256).decode("ascii", "replace").strip() or media_type
    content = pkg.info("content.xml")
    if content is not None:
        if "spreadsheet" in media_type:
            pkg.read.add(content)
            yield from _split_sheets(pkg.parse(content, _OdsCells(), join=True, root=_ODF_ROOT))
        else:
            yield _text_part(pkg, content, _OdfText, _ODF_ROOT)
    styles = pkg.info("styles.xml")
    if styles is not None:
        yield _text_part(pkg, styles, _OdfText, _ODF_ROOT)
    yield from pkg.rest()


def _split_sheets(pieces: Iterator[Any]) -> Iterator[Part]:
    """One part per :class:`_Sheet` marker in ``pieces``; each part's chunks read on from
    the shared stream up to the next marker (so parts must be consumed in order)."""
    sheet: _Sheet | None = next((p for p in pieces if isinstance(p, _Sheet)), None)
    while sheet is not None:
        following: list[_Sheet] = []

        def body(following: list[_Sheet] = following) -> Iterator[str]:
            for piece in pieces:
                if isinstance(piece, _Sheet):
                    following.append(piece)
                    return
                yield piece

        lines = body()
        yield Part(sheet.name, _text(lines), where=sheet.cells.where)
        for _ in lines:  # the consumer may not have read the part to its end
            pass
        sheet = following[0] if following else None
