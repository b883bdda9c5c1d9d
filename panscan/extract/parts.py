"""The contract between the extraction framework and the format handlers.

A *handler* turns one container (a zip, a tar, a docx, a PDF, an email...) into ``Part``s:
either text a person would read (``embedded=False``: scanned as is, as UTF-8) or the raw
bytes of a file held inside (``embedded=True``: the framework sniffs it and expands it in
turn, so a zip in a tar in an email is followed to any depth within the limits).

Handlers are plain generator functions with the signature of :data:`Handler`. They:

* read only from the file object they are given (seekable; the framework spools a
  non-seekable member into memory first, within the limits) and never write to disk;
* yield parts lazily, each part's ``chunks`` lazily too, so memory stays bounded by a few
  chunks whatever the container's size; chunks are non-empty ``bytes``;
* raise :class:`panscan.extract.budget.ExtractError` for what makes them stop: an encrypted
  container -> ``INVALID_ENCRYPTION``; a container they cannot parse -> ``MALFORMED_FILE``
  (the framework then scans the container's raw bytes as well). They may raise it from
  inside a part's ``chunks`` after yielding what they could; parts yielded before stay valid;
* never trust sizes declared in headers: the framework counts the bytes actually produced
  for the expansion, ratio and time limits.

``name`` is one path segment of the finding's ``member`` (``exports/q1.zip``,
``word/document.xml``, ``Sheet1``, ``page 3``, ``attachment: cards.csv``); the framework
joins segments with ``/``. ``where``, when set, maps an offset in the part's text to a
suffix appended to the member without a separator (``"!C5"`` for a spreadsheet cell).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from panscan.extract.budget import Limits


@dataclass(frozen=True)
class Part:
    name: str
    chunks: Iterator[bytes]
    embedded: bool = False
    where: Callable[[int], str | None] | None = None
    #: Raw bytes of the container's own structure (headers, padding), scanned so that no
    #: byte goes unseen; see :attr:`panscan.extract.expand.Stream.backstop`.
    backstop: bool = False


#: ``handler(f, limits) -> parts``: ``f`` is positioned at the container's first byte.
Handler = Callable[[BinaryIO, Limits], Iterator[Part]]


def text_chunks(pieces: Iterator[str], chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """UTF-8 chunks of at most about ``chunk_size`` bytes from a stream of text pieces.

    If ``pieces`` raises, the text gathered so far is yielded first, then the error propagates.
    """
    return gathered((piece.encode("utf-8", "surrogatepass") for piece in pieces), chunk_size)


def gathered(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """``pieces`` joined into chunks of at most ``size`` bytes (a single larger piece is
    handed on as it is). If ``pieces`` raises, what was gathered is yielded first: a limit or
    a malformed container ends the stream, and the text before it is still scanned."""
    held: list[bytes] = []
    total = 0
    try:
        for piece in pieces:
            if not piece:
                continue
            if total + len(piece) > size and held:
                yield b"".join(held)
                held, total = [], 0
            held.append(piece)
            total += len(piece)
    except GeneratorExit:
        raise  # the consumer stopped reading: nothing more to hand over
    except Exception:
        if held:
            yield b"".join(held)
        raise
    if held:
        yield b"".join(held)
