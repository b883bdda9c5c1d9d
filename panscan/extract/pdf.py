"""PDF documents as the text a reader sees: page text, metadata, form values, attachments.

:func:`pdf_parts` is a :data:`panscan.extract.parts.Handler`. What callers may rely on:

* Parts, in this order: ``metadata`` (document information dictionary and the XMP packet),
  ``form fields`` (AcroForm ``name: value`` lines), ``page N`` (1-based; the page's
  ``extract_text()`` followed by the text of its annotations, one per line), each page's
  file-attachment annotations as ``attachment: NAME (page N)``, then the document's embedded
  files (``/EmbeddedFiles``) as ``attachment: NAME``. Text parts are UTF-8; attachment parts
  are ``embedded=True`` and carry the file's decoded bytes for the framework to expand.
  ``metadata`` and ``form fields`` appear only when the document has some; every page has
  its part, whose chunks may be empty (a scanned image). The cheap, small parts come first
  so that a page that exhausts the budget or the clock cannot cost them.
* Work happens when a part's chunks are iterated, not when the part is yielded: one page's
  text or one attachment is extracted at a time, so memory holds one page's text (plus
  pypdf's cache of parsed objects) or one attachment, and the bytes pypdf reads from ``f``
  for a part are read while that part is produced (the framework's ratio check is per part).
* Text is what pypdf's ``extract_text()`` gives: an image-only (scanned) page has none, and
  a content stream pypdf cannot decode is skipped silently by pypdf (non-strict mode);
  the framework therefore scans every PDF's raw bytes as well (a backstop pass).
* Errors, all :class:`~panscan.extract.budget.ExtractError`, nothing else:

  - encrypted and not readable with the empty user password (or with an encryption handler
    pypdf cannot apply) -> ``INVALID_ENCRYPTION``, before any part;
  - no PDF structure pypdf can recover -> ``MALFORMED_FILE``, before any part;
  - a page, the metadata, the form or an attachment that fails to parse is skipped, the
    rest is still read, and ``MALFORMED_FILE`` is raised after the last part (its detail
    names what failed, e.g. ``page 3``, never content), so the framework also scans the
    raw bytes;
  - more than ``limits.max_expanded_bytes`` produced by this document (text and attachment
    bytes together) -> ``ARCHIVE_TOTAL_BYTES_EXTRACTED_OVER_LIMIT``, raised from the chunks
    of the part that crossed it after exactly the budget has been yielded.

* Nothing from the document reaches a log: pypdf's loggers (which quote object contents in
  some warnings) are cut off from panscan's handlers, and exception details name only the
  exception class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO

from panscan.extract.budget import ExtractError, Limits, OutputBudget
from panscan.extract.parts import Part, text_chunks
from panscan.model import Reason

if TYPE_CHECKING:
    from pypdf import PageObject, PdfReader

__all__ = ["pdf_parts"]

_CHUNK = 1 << 20


def _silence_pypdf() -> None:
    """Keep every pypdf log record away from panscan's handlers.

    pypdf's warnings interpolate object values (``"AcroForm is not a dictionary: %s"``), so a
    record could carry a card number from the document into a log, which DESIGN.md forbids.
    The level alone is not enough (pypdf's error records may quote content too): records
    stop at the ``pypdf`` logger, whose only handler discards them. The NullHandler also
    keeps ``logging.lastResort`` from printing them to stderr.
    """
    logger = logging.getLogger("pypdf")
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


# At import, not first use: a PDF handled by anything else in the process (or a pypdf
# imported by another module) must not log content either.
_silence_pypdf()


@dataclass
class _Trouble:
    """What could not be read; reported once, after everything else was read."""

    failed: list[str] = field(default_factory=list)

    def note(self, what: str, exc: BaseException) -> None:
        # The class name only: pypdf messages may quote bytes of the document.
        self.failed.append(f"{what} ({type(exc).__name__})")

    def raise_if_any(self) -> None:
        if self.failed:
            shown = ", ".join(self.failed[:5])
            more = f" and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
            raise ExtractError(Reason.MALFORMED_FILE, f"PDF parts could not be read: {shown}{more}")


def pdf_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """The parts of the PDF read from ``f`` (seekable, positioned at its first byte)."""
    _silence_pypdf()  # again: something may have reconfigured logging since import
    # Imported here: pypdf costs start-up time that scans without PDFs should not pay.
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(f, strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ExtractError(Reason.INVALID_ENCRYPTION, "PDF is encrypted with a user password")
    except ExtractError:
        raise
    except (DependencyError, NotImplementedError) as e:
        # DependencyError: AES without the cryptography package; NotImplementedError: a
        # security handler other than the standard one (certificates). Neither can be read,
        # and neither is a malformed file. Opening reads only the trailer, xref and
        # encryption dictionary, where nothing else raises these.
        raise ExtractError(Reason.INVALID_ENCRYPTION, f"unsupported PDF encryption ({type(e).__name__})") from None
    except Exception as e:  # pypdf raises anything on hostile input
        raise ExtractError(Reason.MALFORMED_FILE, f"not a readable PDF ({type(e).__name__})") from None

    trouble = _Trouble()
    budget = OutputBudget(limits.max_expanded_bytes, "PDF")

    for name, pieces in (("metadata", _metadata_text), ("form fields", _form_text)):
        try:
            text = pieces(reader)
        except Exception as e:
            trouble.note(name, e)
            continue
        if text:
            budget.check()
            yield Part(name, budget.take(text_chunks(iter(text), _CHUNK)))

    try:
        page_count = len(reader.pages)
    except Exception as e:
        trouble.note("page tree", e)
        page_count = 0
    for index in range(page_count):
        label = f"page {index + 1}"
        budget.check()
        yield Part(label, budget.take(_page_chunks(reader, index, label, trouble)))
        for name, stream in _page_attachments(reader, index, label, trouble):
            what = f"attachment: {name} ({label})"
            budget.check()
            yield Part(what, budget.take(_lazy_slices(partial(_stream_data, stream), what, trouble)), embedded=True)

    try:
        attachments = reader.attachments
        names = list(attachments)
    except Exception as e:
        trouble.note("attachments", e)
        names = []
    for name in names:
        # Decoded only when the part is read, so the framework sees the compressed bytes
        # being read while the file's bytes are produced (its ratio check is per part).
        # Several files may share a name: the first part loads them all, and the others
        # follow from memory.
        what = f"attachment: {name}"
        loaded: list[bytes] = []

        def load(name: str = name, loaded: list[bytes] = loaded) -> list[bytes]:
            loaded.extend(attachments[name])
            return loaded[:1]

        budget.check()
        yield Part(what, budget.take(_lazy_slices(load, what, trouble)), embedded=True)
        for data in loaded[1:]:
            budget.check()
            yield Part(what, budget.take(_slices(data)), embedded=True)

    budget.check()
    trouble.raise_if_any()


def _page_chunks(reader: PdfReader, index: int, label: str, trouble: _Trouble) -> Iterator[bytes]:
    """A page's text, extracted only when the part is read. A failure is noted, not raised:
    the other pages are still worth reading."""
    try:
        page = reader.pages[index]
        pieces = [page.extract_text()]
        pieces.extend(_annotation_texts(page))
    except Exception as e:
        trouble.note(label, e)
        return
    yield from text_chunks(iter(_lines(pieces)), _CHUNK)


def _annotation_texts(page: PageObject) -> list[str]:
    """Comments, form-widget values and the like that page text extraction leaves out."""
    texts = []
    for annot in _annotations(page):
        for key in ("/Contents", "/V", "/RC"):
            texts.extend(_strings(annot.get(key)))
    return texts


def _annotations(page: PageObject) -> list[Any]:
    annots = _resolve(page.get("/Annots"))
    if not isinstance(annots, list):
        return []
    return [annot for annot in map(_resolve, annots) if isinstance(annot, dict)]


def _page_attachments(reader: PdfReader, index: int, label: str, trouble: _Trouble) -> list[tuple[str, Any]]:
    """Files attached to a page through ``/FileAttachment`` annotations (not listed in
    ``/EmbeddedFiles``, so ``reader.attachments`` misses them): names and their (still
    encoded) streams."""
    try:
        page = reader.pages[index]
        found = []
        for annot in _annotations(page):
            if annot.get("/Subtype") != "/FileAttachment":
                continue
            # A file specification may be a bare file name (an external file): nothing embedded.
            spec = _resolve(annot.get("/FS"))
            embedded = _resolve(spec.get("/EF")) if isinstance(spec, dict) else None
            if not isinstance(spec, dict) or not isinstance(embedded, dict):
                continue
            names = _strings(spec.get("/UF")) or _strings(spec.get("/F")) or ["unnamed"]
            found.append((names[0], _resolve(embedded.get("/UF") or embedded["/F"])))
        return found
    except Exception as e:
        trouble.note(f"{label} attachments", e)
        return []


def _stream_data(stream: Any) -> list[bytes]:
    data: bytes = stream.get_data()
    return [data]


def _metadata_text(reader: PdfReader) -> list[str]:
    pieces: list[str] = []
    info = reader.metadata
    if info is not None:
        for key in list(info):
            pieces.extend(f"{key}: {s}" for s in _strings(info[key]))
    xmp = reader.root_object.get("/Metadata")
    if xmp is not None:
        data = _resolve(xmp).get_data()
        # XMP is XML; its markup (<, >) cannot join or split a number, so no parsing needed.
        pieces.append(data.decode("utf-8", "replace"))
    return _lines(pieces)


def _form_text(reader: PdfReader) -> list[str]:
    fields = reader.get_fields()
    pieces: list[str] = []
    for name, fld in (fields or {}).items():
        # Field values and defaults; /Opt lists the choices a user was offered.
        for key in ("/V", "/DV", "/Opt"):
            pieces.extend(f"{name}: {s}" for s in _strings(fld.get(key)))
    return _lines(pieces)


def _strings(value: Any, depth: int = 0) -> list[str]:
    """The text inside a PDF value: strings, byte strings, arrays of them; names are skipped."""
    from pypdf.generic import NameObject

    if value is None or depth > 8:  # arrays of arrays are legal; a cycle of them is not
        return []
    value = _resolve(value)
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    if isinstance(value, NameObject):  # a name is a PDF keyword (/Yes, /Off), not text
        return []
    if isinstance(value, str):
        return [str(value)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []


def _resolve(value: Any) -> Any:
    """The object an indirect reference points to; any other value as is."""
    return value.get_object() if hasattr(value, "get_object") else value


def _lines(pieces: Iterable[str]) -> list[str]:
    """One piece per line, so text from two places never joins into one number."""
    out: list[str] = []
    for piece in pieces:
        if piece:
            out.extend((piece, "\n"))
    return out


def _lazy_slices(load: Callable[[], list[bytes]], what: str, trouble: _Trouble) -> Iterator[bytes]:
    """The bytes ``load()`` returns, loaded when first asked for; a failure is noted."""
    try:
        contents = load()
    except Exception as e:
        trouble.note(what, e)
        return
    for data in contents:
        yield from _slices(data)


def _slices(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        yield bytes(view[start : start + _CHUNK])
