"""Streaming text out of tokens whose bytes may end inside a UTF-8 character.

A byte-level BPE token is a run of bytes, not of characters: "é" (c3 a9) can be split over two
tokens. Decoding each token on its own would show two replacement characters for valid text, so
the stream holds back an incomplete character until the bytes that finish it arrive. Invalid
bytes (a model can emit any byte sequence) become U+FFFD as soon as they are known to be invalid,
exactly where decoding the whole sequence at once puts them: the streamed text always equals
`decode_all(chunks)`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class Utf8Stream:
    """Feed bytes, get the text that is safe to show; `flush()` at the end gives the rest."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """The text completed by `data`; an unfinished character at its end is held back."""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """The text still held back: an unfinished character at the end becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


def decode_all(chunks: Iterable[bytes]) -> str:
    """What a stream of these chunks shows in total: their bytes decoded at once."""
    return b"".join(chunks).decode("utf-8", errors="replace")
