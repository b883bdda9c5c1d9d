"""Progress bars: drawn on a terminal only, and never with a file name in them."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import termios

from panscan.engine.progress import Progress
from panscan.model import Item, ItemResult, Status

NAME_WITH_NUMBER = "/data/4111111111111111.csv"


def result() -> ItemResult:
    return ItemResult(Item(NAME_WITH_NUMBER, "file", size=2048), Status.COMPLETE, bytes_scanned=2048)


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress(out) as progress:
        progress.update(result())
    assert out.getvalue() == ""
    assert (progress.items, progress.bytes) == (1, 2048)


def test_progress_draws_items_and_bytes_on_a_terminal_without_names() -> None:
    master, slave = os.openpty()
    # A new pty is 0 columns wide, and tqdm draws nothing in no room: give it 100x30.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.set_blocking(master, False)
    shown = b""
    try:
        with os.fdopen(slave, "w") as tty:
            with Progress(tty) as progress:
                progress.update(result())
                progress.update(result())
            tty.flush()
            # Read while the terminal is still open: Linux drops unread output once it closes.
            while True:
                try:
                    block = os.read(master, 65536)
                except BlockingIOError:
                    break
                shown += block
    finally:
        os.close(master)
    text = shown.decode(errors="replace")
    assert "items" in text and "bytes" in text
    assert "4111" not in text and ".csv" not in text
