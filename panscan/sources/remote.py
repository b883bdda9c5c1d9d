"""The file side of an object read over HTTP (an S3 object version, a Glacier job output):
what ``io`` asks of a raw, read-only file, around a ``read`` each source writes itself.

A source subclass implements :meth:`RemoteFile.read` (exactly ``size`` bytes unless the
data ends first, resuming cut bodies its own way), :meth:`RemoteFile.seekable` and
``_drop_body`` (release the HTTP body it holds); ``_pos`` is where it stands.
"""

from __future__ import annotations

import io
from typing import Any

# readall() reads in pieces of this size: a whole archive is never asked for at once.
_READALL_PIECE = 1 << 20


class RemoteFile(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._drop_body()
        super().close()

    def _drop_body(self) -> None:
        raise NotImplementedError

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while data := self.read(_READALL_PIECE):
            parts.append(data)
        return b"".join(parts)
