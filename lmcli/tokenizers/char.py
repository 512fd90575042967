"""Character-level tokenizer: one token per Unicode code point seen in the corpus, sorted."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from lmcli.errors import InputError

MAX_CODE_POINTS = 0x110000  # every Unicode code point
_SURROGATE = re.compile("[\ud800-\udfff]")


class CharTokenizer:
    """Token i is the i-th smallest code point of the vocabulary."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        if not chars:
            raise InputError("a char vocabulary needs at least one character")
        self.chars = "".join(sorted(set(chars)))
        self.name = "char"
        # Sorted code points: encoding is one vectorised binary search per text.
        self._codepoints = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)

    @classmethod
    def checked(cls, chars: str, where: str) -> CharTokenizer:
        """A vocabulary read from a file: refused if it could never have come from text."""
        if len(chars) > MAX_CODE_POINTS:
            raise InputError(f"{where}: {len(chars):,} characters is more than Unicode has")
        if _SURROGATE.search(chars):
            raise InputError(f"{where}: the vocabulary holds surrogate code points, not text")
        return cls(chars)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls("".join(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint32) of `text`; a character outside the vocabulary is an InputError."""
        points = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, points)
        ids = np.minimum(ids, len(self._codepoints) - 1)
        unknown = self._codepoints[ids] != points
        if unknown.any():
            missing = sorted({chr(int(p)) for p in points[unknown]})
            shown = ", ".join(repr(c) for c in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise InputError(f"characters not in the char vocabulary: {shown}{more}")
        return ids.astype(np.uint32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        return self.decode(ids).encode("utf-8", errors="surrogatepass")

    def to_json(self) -> dict[str, object]:
        return {"type": "char", "chars": self.chars}
