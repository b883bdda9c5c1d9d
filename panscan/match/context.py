"""Context keywords near a validated number (pyahocorasick over a small window)."""

from __future__ import annotations

import ahocorasick

_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")


class KeywordIndex:
    """Finds whole-word, case-insensitive keywords in short byte windows."""

    def __init__(self, words: list[str], window: int) -> None:
        self.window = window
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_LENGTH, ahocorasick.KEY_SEQUENCE)
        for w in words:
            self._automaton.add_word(tuple(w.lower().encode("ascii")))
        self._automaton.make_automaton()

    def near(self, text: bytes) -> bool:
        """True when ``text`` holds one of the keywords as a whole word."""
        low = text.lower()
        for end, length in self._automaton.iter(tuple(low)):
            start = end - length + 1
            if (start == 0 or low[start - 1] not in _WORD) and (end + 1 >= len(low) or low[end + 1] not in _WORD):
                return True
        return False
