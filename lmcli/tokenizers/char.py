"""Character-level tokenizer: one token per Unicode code point seen in the corpus, sorted, then
any special tokens (`<|endoftext|>` between documents, when asked for)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence

import numpy as np

from lmcli.errors import InputError

MAX_CODE_POINTS = 0x110000  # every Unicode code point
_SURROGATE = re.compile("[\ud800-\udfff]")
END_OF_TEXT = "<|endoftext|>"


class CharTokenizer:
    """Token i is the i-th smallest code point of the vocabulary; the special tokens follow.

    Text never encodes to a special token (the characters `<|endoftext|>` in a text are those
    characters); only the tokenizer's caller places one, between documents."""

    kind = "char"

    def __init__(self, chars: str, specials: Sequence[str] = ()) -> None:
        if not chars:
            raise InputError("a char vocabulary needs at least one character")
        self.chars = "".join(sorted(set(chars)))
        self.specials = tuple(specials)
        self.name = "char"
        self._tokens = [*self.chars, *self.specials]
        # Sorted code points: encoding is one vectorised binary search per text.
        self._codepoints = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)

    @classmethod
    def checked(cls, chars: str, where: str, specials: object = None) -> CharTokenizer:
        """A vocabulary read from a file: refused if it could never have come from text."""
        if len(chars) > MAX_CODE_POINTS:
            raise InputError(f"{where}: {len(chars):,} characters is more than Unicode has")
        if _SURROGATE.search(chars):
            raise InputError(f"{where}: the vocabulary holds surrogate code points, not text")
        if len(set(chars)) != len(chars):
            raise InputError(f"{where}: the vocabulary repeats a character")
        names: list[str] = []
        if specials is not None:
            if not (
                isinstance(specials, dict)
                and all(isinstance(k, str) and k for k in specials)
                and sorted(specials.values()) == list(range(len(chars), len(chars) + len(specials)))
            ):
                raise InputError(
                    f"{where}: special_tokens must map names to the ids after the characters"
                )
            names = sorted(specials, key=lambda k: specials[k])
        return cls(chars, names)

    @classmethod
    def from_texts(cls, texts: Iterable[str], specials: Sequence[str] = ()) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls("".join(seen), specials)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def eot_id(self) -> int | None:
        """The id of `<|endoftext|>`, or None when the vocabulary has none."""
        if END_OF_TEXT not in self.specials:
            return None
        return len(self.chars) + self.specials.index(END_OF_TEXT)

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
        """The text of the tokens; a special token decodes to its name."""
        tokens = self._tokens
        return "".join(tokens[int(i)] for i in ids)

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        return self.decode(ids).encode("utf-8", errors="surrogatepass")

    def fingerprint(self) -> str:
        """Equal for two tokenizers exactly when they encode and decode alike."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": "char", "chars": self.chars}
        if self.specials:
            out["special_tokens"] = {t: len(self.chars) + i for i, t in enumerate(self.specials)}
        return out
