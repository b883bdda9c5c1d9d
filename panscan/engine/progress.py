"""Progress on stderr: items and bytes done, shown only when stderr is a terminal.

Labels are fixed words and counts. Never a file name: names can hold card numbers, and a
terminal's scrollback is an output channel like any other.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from panscan.model import ItemResult


class Progress:
    """Counts items and bytes; draws two tqdm bars when ``stream`` is a terminal.

    ``enabled=None`` means "when ``stream`` is a TTY"; otherwise nothing is ever written.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _is_tty(self._stream)
        self.items = 0
        self.bytes = 0
        self._bars: list[Any] = []
        if enabled:
            from tqdm import tqdm  # only for a terminal: keeps start-up short for scripted runs

            self._items_bar = tqdm(desc="items", unit=" items", file=self._stream, position=0,
                                   dynamic_ncols=True, leave=False)
            self._bytes_bar = tqdm(desc="bytes", unit="B", unit_scale=True, unit_divisor=1024,
                                   file=self._stream, position=1, dynamic_ncols=True, leave=False)
            self._bars = [self._items_bar, self._bytes_bar]

    def update(self, result: ItemResult) -> None:
        """Count one finished item."""
        self.count(result.bytes_scanned)

    def count(self, nbytes: int) -> None:
        """Count one item of ``nbytes`` (read, or listed by a metadata-only sweep)."""
        self.items += 1
        self.bytes += nbytes
        if self._bars:
            self._items_bar.update(1)
            self._bytes_bar.update(nbytes)

    def close(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
