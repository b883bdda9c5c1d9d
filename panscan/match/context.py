"""Context keywords near a validated number (pyahocorasick over a small window)."""

from __future__ import annotations

import ahocorasick

_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_WORD_OR_DOT = _WORD | {"."}


class KeywordIndex:
    """Finds whole-word, case-insensitive keywords in short byte windows."""

    def __init__(self, words: list[str], window: int) -> None:
        self.window = window
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_LENGTH)
        for w in words:
            self._automaton.add_word(w.lower())
        self._automaton.make_automaton()

    def near(self, text: bytes) -> bool:
        """True when ``text`` holds one of the keywords as a whole word."""
        # latin-1 maps every byte to one character, so indexes stay byte offsets.
        low = text.lower().decode("latin-1")
        for end, length in self._automaton.iter(low):
            start = end - length + 1
            # A "." before makes it a file extension ("hb-subset.cc", "notes.pan"), not a word.
            word_start = start == 0 or low[start - 1] not in _WORD_OR_DOT
            if word_start and (end + 1 >= len(low) or low[end + 1] not in _WORD):
                return True
        return False
