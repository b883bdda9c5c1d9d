"""Text of an RTF document, as a reader sees it.

:func:`rtf_parts` is the handler (see :mod:`panscan.extract.parts`) the framework calls for
a file sniffed as RTF. It yields one text part named :data:`RTF_PART_NAME`.

What callers may rely on:

* Text is the document's visible text, so a card number split by formatting groups
  (``{\\b 4111}1111...``) or control words comes out contiguous: literal text, ``\\'hh``
  bytes decoded in the document's code page (``\\ansicpgN``, ``\\mac``, ``\\pc``, ``\\pca``;
  cp1252 by default; double-byte code pages decoded as pairs), ``\\uN`` Unicode characters
  (negative N as RTF writes them, surrogate pairs joined) with the ``\\ucN`` fallback
  characters after them skipped, ``\\par`` / ``\\line`` / ``\\sect`` / ``\\page`` /
  ``\\row`` -> newline, ``\\tab`` / ``\\cell`` -> tab, ``\\~`` -> space, ``\\_`` -> ``-``,
  typographic quotes and dashes as characters.
* Left out: ignorable destinations ``{\\*\\...}``, and the groups of non-text destinations
  (font, colour, style and list tables, ``\\info`` metadata, pictures, embedded object data,
  field instructions, shape properties...; :data:`_SKIPPED_DESTINATIONS`). ``\\binN`` data is
  skipped by count, wherever it occurs. Per-font character sets (``\\fcharsetN``) are not
  followed: bytes are decoded in the document code page.
* Memory is bounded whatever the input (pictures make RTF files large): the input is read
  in 64 KiB blocks, a control word cut by a block end is carried (a few bytes), and text
  is yielded block by block. Unbalanced braces are tolerated as readers tolerate them.
* Errors, as :class:`ExtractError`: input that does not start with ``{\\rtf`` ->
  ``MALFORMED_FILE`` (nothing yielded); the file failing to read -> ``READ_ERROR`` (after
  the text decoded before it).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import BinaryIO

from panscan.extract.budget import ExtractError, Limits
from panscan.extract.parts import Part, text_chunks
from panscan.model import Reason

__all__ = ["RTF_PART_NAME", "rtf_parts"]

#: The name of the one part an RTF document yields.
RTF_PART_NAME = "text"

_READ_SIZE = 64 * 1024
_DEFAULT_CODEC = "cp1252"

_TOKEN = re.compile(
    rb"""\\([a-zA-Z]{1,32})(-?[0-9]{1,10})?[ ]?   # 1, 2: control word and its parameter
    |\\'([0-9a-fA-F]{2})                          # 3: a byte in the code page
    |\\([^a-zA-Z'])                               # 4: control symbol
    |([{}])                                       # 5: group
    |[\r\n]+                                      # raw line ends mean nothing in RTF
    |([^\\{}\r\n]+)                               # 6: literal text
    """,
    re.VERBOSE | re.DOTALL,
)
_WORD, _PARAM, _HEX, _SYMBOL, _BRACE, _TEXT = 1, 2, 3, 4, 5, 6
# Longest token that may be cut by a block end and must be carried: a backslash, a
# 32-letter word, a sign, 10 digits and the delimiting space.
_MAX_TOKEN = 45

#: Destinations whose group holds no text a reader sees (tables, metadata, binary data).
_SKIPPED_DESTINATIONS = frozenset({
    "fonttbl", "colortbl", "stylesheet", "info", "pict", "objdata", "objclass", "objname",
    "themedata", "colorschememapping", "datastore", "latentstyles", "listtable",
    "listoverridetable", "rsidtbl", "generator", "xmlnstbl", "fldinst", "filetbl", "revtbl",
    "pgdsctbl", "nonshppict", "sp", "mmathPr", "xe", "tc", "template", "userprops", "docvar",
    "bkmkstart", "bkmkend", "ftnsep", "ftnsepc", "aftnsep", "aftnsepc", "fchars", "lchars",
    "keycode", "protusertbl", "passwordhash", "atnauthor", "atnid", "atndate", "listtext", "pntext",
})
_SPECIAL_WORDS = {
    "par": "\n", "line": "\n", "sect": "\n", "page": "\n", "row": "\n",
    "tab": "\t", "cell": "\t", "nestcell": "\t",
    "lquote": "\u2018", "rquote": "\u2019", "ldblquote": "\u201c", "rdblquote": "\u201d",
    "bullet": "\u2022", "emdash": "\u2014", "endash": "\u2013",
    "emspace": " ", "enspace": " ", "qmspace": " ",
}
_SPECIAL_SYMBOLS = {"~": " ", "_": "-", "-": "", "\n": "\n", "\r": "\n", "\\": "\\", "{": "{", "}": "}"}
_CHARSET_WORDS = {"mac": "mac_roman", "pc": "cp437", "pca": "cp850"}
_CODE_PAGES = {10000: "mac_roman", 65001: "utf-8"}


def rtf_parts(f: BinaryIO, limits: Limits) -> Iterator[Part]:
    """The document's text as one part (see the module docstring). ``limits`` is unused:
    the text is never larger than the input, and the framework keeps the time."""
    yield Part(RTF_PART_NAME, text_chunks(_text(f)))


def _codec(name: str) -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder(name)(errors="replace")


class _Reader:
    """Tokenizer state: group stack, skipping, code page, pending fallback characters."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.stack: list[tuple[bool, int]] = []
        self.skip = False  # inside a group whose text is not shown
        self.uc = 1  # fallback characters after each \uN (per group)
        self.fallback = 0  # fallback characters still to drop
        self.bin_left = 0  # \bin bytes still to skip
        self.decoder = _codec(_DEFAULT_CODEC)
        self.high_surrogate = ""

    def feed(self, buf: bytes, final: bool) -> int:
        """Handle the tokens in ``buf``; return how many bytes were consumed (the rest, a
        token that the next block may complete, is to be fed again with more data)."""
        pos, n = 0, len(buf)
        while pos < n:
            if self.bin_left:
                step = min(self.bin_left, n - pos)
                self.bin_left -= step
                pos += step
                continue
            m = _TOKEN.match(buf, pos)
            if m is None:
                # A lone backslash or a cut \'h at the block end: wait for more; anywhere
                # else it is not a token at all and is dropped.
                if not final and n - pos < 4:
                    return pos
                pos += 1
                continue
            if not final and m.end() == n and m.lastindex in (_WORD, _PARAM):
                return pos  # the word or its parameter may go on in the next block
            pos = m.end()
            self.token(m)
        return pos

    def token(self, m: re.Match[bytes]) -> None:
        kind = _WORD if m.lastindex == _PARAM else m.lastindex
        if kind == _TEXT:
            if not self.skip:
                text = m.group(_TEXT)
                if self.fallback:
                    dropped = min(self.fallback, len(text))
                    self.fallback -= dropped
                    text = text[dropped:]
                if text:
                    self.emit(self.decoder.decode(text))
        elif kind == _BRACE:
            self.fallback = 0
            if m.group(_BRACE) == b"{":
                self.stack.append((self.skip, self.uc))
            elif self.stack:
                self.skip, self.uc = self.stack.pop()
        elif kind == _HEX:
            if self.fallback:
                self.fallback -= 1
            elif not self.skip:
                self.emit(self.decoder.decode(bytes([int(m.group(_HEX), 16)])))
        elif kind == _SYMBOL:
            symbol = m.group(_SYMBOL).decode("latin-1")
            if symbol == "*":
                self.skip = True
            elif self.fallback:
                self.fallback -= 1
            elif not self.skip:
                self.emit(_SPECIAL_SYMBOLS.get(symbol, ""))
        elif kind == _WORD:
            self.word(m.group(_WORD).decode("ascii"), m.group(_PARAM))

    def word(self, word: str, raw_param: bytes | None) -> None:
        param = int(raw_param) if raw_param is not None else None
        if word == "bin":
            # Binary data follows whatever the group: its bytes must not be read as tokens.
            self.bin_left = max(param or 0, 0)
            return
        if word in _SKIPPED_DESTINATIONS:
            self.skip = True
        if self.skip:
            return
        if word == "u" and param is not None:
            # A \u ends the previous one's fallback: a writer that omits fallback text
            # (against its own \uc) must not make us drop the next character.
            self.unicode(param % 0x10000)
            self.fallback = self.uc
        elif self.fallback:
            self.fallback -= 1
        elif word == "uc" and param is not None:
            self.uc = max(param, 0)
        elif word in _SPECIAL_WORDS:
            self.emit(_SPECIAL_WORDS[word])
        elif word == "ansicpg" and param is not None:
            self.set_codec(_CODE_PAGES.get(param, f"cp{param}"))
        elif word in _CHARSET_WORDS:
            self.set_codec(_CHARSET_WORDS[word])

    def set_codec(self, name: str) -> None:
        try:
            self.decoder = _codec(name)
        except LookupError:
            pass  # an unknown code page: keep decoding as before

    def unicode(self, code: int) -> None:
        if 0xD800 <= code < 0xDC00:
            self.emit("")
            self.high_surrogate = chr(code)
        elif 0xDC00 <= code < 0xE000 and self.high_surrogate:
            high = ord(self.high_surrogate)
            self.high_surrogate = ""
            self.emit(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)))
        else:
            self.emit(chr(code))

    def emit(self, text: str) -> None:
        if self.high_surrogate:  # a high surrogate without its pair stays as it was
            self.out.append(self.high_surrogate)
            self.high_surrogate = ""
        if text:
            self.out.append(text)


def _text(f: BinaryIO) -> Iterator[str]:
    reader = _Reader()
    carry = b""
    started = False
    while True:
        try:
            data = f.read(_READ_SIZE)
        except OSError as e:
            raise ExtractError(Reason.READ_ERROR, f"reading RTF failed: {type(e).__name__}") from None
        buf = carry + data
        if not started:
            if len(buf) < 5 and data:
                carry = buf
                continue
            if not buf.lstrip().startswith(b"{\\rtf"):
                raise ExtractError(Reason.MALFORMED_FILE, "not RTF: no {\\rtf header")
            started = True
        used = reader.feed(buf, final=not data)
        carry = buf[used:]
        if len(carry) > _MAX_TOKEN:  # cannot happen: only a cut token is carried
            carry = b""
        if not data:
            reader.emit(reader.decoder.decode(b"", final=True))
        if reader.out:
            # One string per block: text_chunks holds every piece until it has 1 MiB.
            yield "".join(reader.out)
            reader.out.clear()
        if not data:
            return
