"""Reading a text corpus as a stream of pieces, with bounded memory.

Real text files are messy. By default lmcli *normalises*:
- a UTF-8 byte-order mark at the start of the file is dropped;
- CRLF and bare CR line endings become LF;
- each byte that is not valid UTF-8 becomes U+FFFD (the replacement character).
Every change is counted in `TextStats` and shown in the tokenize summary. With `exact=True` the
text is kept as it is (BOM as U+FEFF, CR and CRLF untouched) and invalid UTF-8 is an error.

Pieces are cut right after a newline that is followed by a non-space character. The GPT-4 split
pattern never joins text across such a point, so encoding the pieces one by one gives exactly the
tokens of encoding the whole text at once (tested), while memory stays at a few pieces.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmcli.errors import InputError

BOM = b"\xef\xbb\xbf"
# surrogateescape turns each invalid byte into one lone surrogate in this range; valid UTF-8
# never decodes to one, so they mark exactly the invalid bytes.
_INVALID = re.compile("[\udc80-\udcff]")
# A piece that finds no cut point grows to this many chunks before it is cut anyway (a file with
# no line breaks); only then can a piece boundary change the tokens next to it.
_MAX_CARRY_CHUNKS = 4
_SNIFF_BYTES = 1 << 16


@dataclass
class TextStats:
    """What was read and what normalisation changed (accumulated while streaming)."""

    chars: int = 0
    bytes: int = 0  # UTF-8 bytes of the text as tokenized (after normalisation)
    bom_stripped: bool = False
    crlf: int = 0  # CRLF line endings turned into LF
    cr: int = 0  # bare CR line endings turned into LF
    invalid_bytes: int = 0  # invalid UTF-8 bytes replaced by U+FFFD

    def add(self, other: TextStats) -> None:
        self.chars += other.chars
        self.bytes += other.bytes
        self.bom_stripped = self.bom_stripped or other.bom_stripped
        self.crlf += other.crlf
        self.cr += other.cr
        self.invalid_bytes += other.invalid_bytes


def check_text_file(path: Path) -> int:
    """Refuse what is not a readable, non-empty text file; return its size in bytes."""
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a text file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty")
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise InputError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    # A character cut at the end of the sniffed head adds at most 3 to the count: negligible.
    invalid = len(_INVALID.findall(head.decode("utf-8", errors="surrogateescape")))
    if len(head) >= 64 and invalid > 0.3 * len(head):
        raise InputError(f"{path} looks like a binary file ({invalid} invalid UTF-8 bytes)")
    return size


def find_split(path: Path, size: int, val_fraction: float) -> int:
    """Byte offset where the validation split starts: just after the newline nearest to
    (1 - val_fraction) of the file (the first after it, else the last before it), else at the
    first character boundary there. 0 or `size` mean one split would be empty."""
    target = int(size * (1.0 - val_fraction))
    window = 1 << 20
    with path.open("rb") as f:
        f.seek(target)
        after = f.read(window)
        f.seek(max(target - window, 0))
        before = f.read(target - max(target - window, 0))
    newline = after.find(b"\n")
    if newline >= 0 and target + newline + 1 < size:
        return target + newline + 1
    newline = before.rfind(b"\n")
    if newline >= 0:
        return target - len(before) + newline + 1
    # No usable newline: step over UTF-8 continuation bytes (10xxxxxx) to a character start.
    offset = 0
    while offset < len(after) and after[offset] & 0xC0 == 0x80:
        offset += 1
    return target + offset


def _cut_point(text: str) -> int:
    """Index just after the last newline followed by a non-space character, or -1."""
    i = text.rfind("\n")
    while i >= 0:
        if i + 1 < len(text) and not text[i + 1].isspace():
            return i + 1
        i = text.rfind("\n", 0, i)
    return -1


class _Normaliser:
    """Per-block text fix-ups; holds back a trailing CR that may start a CRLF."""

    def __init__(self, exact: bool, stats: TextStats, base_offset: int) -> None:
        self.exact = exact
        self.stats = stats
        self.base_offset = base_offset
        self.held_cr = ""

    def __call__(self, text: str, consumed: int, final: bool) -> str:
        match = _INVALID.search(text)
        if match and self.exact:
            raise InputError(
                f"invalid UTF-8 near byte {self.base_offset + consumed} (--exact keeps text "
                "byte-exact, so it refuses invalid bytes)",
                hint="drop --exact to replace invalid bytes with U+FFFD",
            )
        if match:
            text, n = _INVALID.subn("\ufffd", text)
            self.stats.invalid_bytes += n
        if self.exact:
            return text
        text = self.held_cr + text
        self.held_cr = ""
        if text.endswith("\r") and not final:
            self.held_cr, text = "\r", text[:-1]
        crlf = text.count("\r\n")
        if crlf:
            self.stats.crlf += crlf
            text = text.replace("\r\n", "\n")
        cr = text.count("\r")
        if cr:
            self.stats.cr += cr
            text = text.replace("\r", "\n")
        return text


def iter_text(
    path: Path,
    start: int,
    end: int,
    *,
    exact: bool = False,
    chunk_bytes: int = 1 << 20,
    stats: TextStats | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Yield the text of bytes [start, end) of `path` in pieces of about `chunk_bytes`.

    `stats` (if given) accumulates characters, bytes and normalisation counts; `on_bytes` is
    called with the number of raw bytes consumed so far (for progress bars).
    """
    stats = stats if stats is not None else TextStats()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    normalise = _Normaliser(exact, stats, start)
    carry = ""
    consumed = 0
    with path.open("rb") as f:
        f.seek(start)
        while True:
            block = f.read(min(chunk_bytes, end - start - consumed))
            final = not block
            if start == 0 and consumed == 0 and block.startswith(BOM) and not exact:
                block = block[len(BOM) :]
                stats.bom_stripped = True
                consumed += len(BOM)
            consumed += len(block)
            text = carry + normalise(decoder.decode(block, final=final), consumed, final)
            cut = len(text) if final else _cut_point(text)
            if cut < 0 and len(text) > _MAX_CARRY_CHUNKS * chunk_bytes:
                cut = len(text)
            if cut > 0:
                piece, carry = text[:cut], text[cut:]
                stats.chars += len(piece)
                stats.bytes += len(piece.encode("utf-8"))
                yield piece
            else:
                carry = text
            if on_bytes is not None:
                on_bytes(consumed)
            if final:
                return
