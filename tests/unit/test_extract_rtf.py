"""RTF text: real documents written here, read in blocks of every size, scanned with the
real matcher."""

from __future__ import annotations

import io
import random
import time
import tracemalloc
from pathlib import Path

import pytest
from cards import make_pan, spaced

from panscan.extract.budget import ExtractError, Limits
from panscan.extract.rtf import RTF_PART_NAME, rtf_parts
from panscan.match.matcher import scan_chunks
from panscan.model import Reason

RNG = random.Random(77)
PANS = [make_pan(prefix, 16, RNG) for prefix in ("4", "51", "4", "55")]
HEADER = rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss Helvetica;}{\f1 Symbol;}}"
HEADER += rb"{\colortbl;\red255\green0\blue0;}{\*\generator Writer 1.0;}\viewkind4\uc1\pard\f0\fs22 "


class SmallReads(io.BytesIO):
    """A file that returns at most ``size`` bytes per read, as a slow stream may."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(data)
        self.size = size

    def read(self, n: int | None = -1) -> bytes:
        return super().read(self.size if n is None or n < 0 else min(n, self.size))


def text_of(data: bytes, read_size: int | None = None) -> str:
    f = io.BytesIO(data) if read_size is None else SmallReads(data, read_size)
    parts = list(rtf_parts(f, Limits()))
    assert [p.name for p in parts] == [RTF_PART_NAME]
    return b"".join(parts[0].chunks).decode("utf-8")


def found(data: bytes) -> list[str]:
    """Masked numbers the matcher finds in the document's text, in order."""
    part = next(rtf_parts(io.BytesIO(data), Limits()))
    return [h.digits[:6] + "******" + h.digits[-4:] for h in scan_chunks(part.chunks)]


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


def doc(body: bytes) -> bytes:
    return HEADER + body + b"\\par}"


def test_pan_split_by_formatting_groups_is_contiguous_and_found_once() -> None:
    g = spaced(PANS[0]).encode()
    body = b"Card: {\\b " + g[:4] + b"}" + g[4:10] + b"{\\i\\ul " + g[10:] + b"}\\par " + PANS[1][:7].encode()
    body += b"{\\cf1 " + PANS[1][7:].encode() + b"}"
    assert found(doc(body)) == [masked(PANS[0]), masked(PANS[1])]
    assert text_of(doc(body)) == f"Card: {spaced(PANS[0])}\n{PANS[1]}\n"


def test_hex_escapes_and_unicode_escapes_are_decoded() -> None:
    # \'34 is "4" in cp1252; \u8364 is the euro sign with "?" as its fallback; digits given
    # as \uN (with a two-character fallback under \uc2) join the number too.
    pan = PANS[2]
    body = (b"caf\\'e9 \\u8364?\\'%02x" % ord(pan[0]) + pan[1:8].encode()
            + b"{\\uc2\\u" + str(ord(pan[8])).encode() + b"\\'3f\\'3f}" + pan[9:].encode() + b" \\u-10179\\u-8704??end")
    assert found(doc(body)) == [masked(pan)]
    assert text_of(doc(body)) == f"caf\u00e9 \u20ac{pan} \U0001f600?end\n"


def test_code_page_from_ansicpg_decodes_hex_bytes() -> None:
    data = rb"{\rtf1\ansi\ansicpg1251 \'cf\'e0\'ed \'e8 \'ea\'e0\'f0\'f2\'e0\par}"
    assert text_of(data) == "\u041f\u0430\u043d \u0438 \u043a\u0430\u0440\u0442\u0430\n"
    shift_jis = rb"{\rtf1\ansi\ansicpg932 \'83\'4a\'81\'5b\'83\'68 " + PANS[3].encode() + rb"\par}"
    assert text_of(shift_jis) == f"\u30ab\u30fc\u30c9 {PANS[3]}\n"


def test_pans_in_skipped_destinations_are_not_text() -> None:
    hidden = PANS[0].encode()
    body = (b"{\\info{\\title " + hidden + b"}{\\author x}}"
            b"{\\*\\bkmkstart " + hidden + b"}"
            b"{\\field{\\*\\fldinst HYPERLINK \"http://x/" + hidden + b"\"}"
            b"{\\fldrslt visible " + PANS[1].encode() + b"}}\\line "
            b"{\\pict\\pngblip\\picw10 " + hidden + b"89504e47}"
            b"{\\object{\\*\\objdata 0105" + hidden + b"}{\\result shown}}")
    assert found(doc(body)) == [masked(PANS[1])]
    assert text_of(doc(body)) == f"visible {PANS[1]}\nshown\n"


def test_bin_data_is_skipped_by_count_even_with_braces_and_digits_inside() -> None:
    blob = b"}{\\" + PANS[0].encode() + b"{{"
    body = b"{\\pict\\bin" + str(len(blob)).encode() + b" " + blob + b"}after " + PANS[1].encode()
    assert found(doc(body)) == [masked(PANS[1])]
    assert text_of(doc(body)) == f"after {PANS[1]}\n"


def test_specials_tabs_lines_and_escaped_braces() -> None:
    body = rb"a\tab b\line c\~d\_e\-f \{g\}\\ \lquote q\rquote \emdash\cell x\row y"
    assert text_of(doc(body)) == "a\tb\nc d-ef {g}\\ \u2018q\u2019\u2014\tx\ny\n"


@pytest.mark.parametrize("read_size", [1, 2, 3, 5, 7, 13, 64])
def test_text_is_the_same_whatever_the_read_size(read_size: int) -> None:
    g = spaced(PANS[0]).encode()
    body = (b"{\\b " + g[:3] + b"}" + g[3:] + b"\\par \\'e9\\u8364?x\\uc0\\u233 " + PANS[1].encode()
            + b"{\\pict\\bin5 }}}}}}\\pard\\plain\\fs24 end\\par")
    assert text_of(doc(body), read_size) == text_of(doc(body))
    assert text_of(doc(body), read_size) == f"{spaced(PANS[0])}\n\u00e9\u20acx\u00e9{PANS[1]}end\n\n"


def test_not_rtf_is_malformed_file() -> None:
    part = next(rtf_parts(io.BytesIO(b"PK\x03\x04 not rtf"), Limits()))
    with pytest.raises(ExtractError) as e:
        list(part.chunks)
    assert e.value.reason == Reason.MALFORMED_FILE


def test_unbalanced_braces_and_a_truncated_file_still_give_the_text() -> None:
    data = HEADER + b"}}}" + PANS[0].encode() + b"{\\b {\\i  x" + b"\\'4"
    assert found(data) == [masked(PANS[0])]


def test_large_picture_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.rtf"
    with path.open("wb") as f:
        f.write(HEADER + b"before " + PANS[0].encode() + b"\\par{\\pict\\jpegblip ")
        line = b"0123456789abcdef" * 8 + b"\r\n"
        for _ in range(200_000):  # ~26 MB of picture hex
            f.write(line)
        f.write(b"}after " + PANS[1].encode() + b"\\par}")
    tracemalloc.start()
    started = time.monotonic()
    try:
        with path.open("rb") as f:
            part = next(rtf_parts(f, Limits()))
            hits = [masked(h.digits) for h in scan_chunks(part.chunks)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hits == [masked(PANS[0]), masked(PANS[1])]
    assert peak < 4 * 2**20
    assert time.monotonic() - started < 60
