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
import errno
import hashlib
import os
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
_SCAN_BLOCK = 1 << 20
_WINDOW = 1 << 16  # the span over which "mostly invalid UTF-8" is judged


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


def describe_path(path: Path) -> str | None:
    """Why `path` is not a readable regular file, or None if it is one."""
    if path.is_symlink():
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{path} is a symlink loop"
            return f"{path} is a broken symlink (to {os.readlink(path)})"
    if not path.exists():
        return f"no such file: {path}"
    if path.is_dir():
        return f"{path} is a directory, not a text file"
    if not path.is_file():
        kind = (
            "a FIFO"
            if path.is_fifo()
            else "a device"
            if path.is_char_device() or path.is_block_device()
            else "a socket"
            if path.is_socket()
            else "not a file"
        )
        return f"{path} is not a regular file ({kind})"
    return None


def read_text_file(path: Path, what: str = "file") -> str:
    """A small UTF-8 text a user names (a prompt, a text to inspect), whole; what is not a
    readable regular file (a FIFO or a device would block or never end) is an InputError."""
    if not path.exists() and not path.is_symlink():
        raise InputError(f"no such {what}: {path}")
    reason = describe_path(path)
    if reason is not None:
        raise InputError(reason)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def check_text_file(path: Path) -> int:
    """Refuse what is not a readable, non-empty text file; return its size in bytes."""
    return scan_text_file(path)[0]


def scan_text_file(
    path: Path, on_bytes: Callable[[int, int], None] | None = None
) -> tuple[int, str]:
    """Read the whole file once: refuse it if it is not text, return (size, sha256).

    Not text: empty, UTF-16 (its byte-order mark), a NUL byte anywhere, or any 64 KB of it more
    than 30 % invalid UTF-8 (a Latin-1 file is a few percent: it is read, each bad byte
    replaced; a binary file is mostly invalid)."""
    problem = describe_path(path)
    if problem is not None:
        raise InputError(problem)
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty")
    digest = hashlib.sha256()
    offset = 0
    carry = b""
    with path.open("rb") as f:
        head = f.read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InputError(
                f"{path} looks like UTF-16 text (it starts with a UTF-16 byte-order mark)",
                hint=f"convert it to UTF-8 first, e.g. iconv -f UTF-16 -t UTF-8 {path}",
            )
        f.seek(0)
        while block := f.read(_SCAN_BLOCK):
            digest.update(block)
            nul = block.find(b"\x00")
            if nul >= 0:
                raise InputError(
                    f"{path} looks like a binary file (a NUL byte at offset {offset + nul:,}), "
                    "not text",
                    hint="if it is UTF-16 or UTF-32 text, convert it to UTF-8 first (iconv)",
                )
            text, carry = _complete_utf8(carry + block)
            _check_mostly_valid(path, text, offset - len(carry))
            offset += len(block)
            if on_bytes is not None:
                on_bytes(offset, size)
    _check_mostly_valid(path, carry, offset - len(carry))
    return size, digest.hexdigest()


def _complete_utf8(data: bytes) -> tuple[bytes, bytes]:
    """data split into whole UTF-8 characters and an unfinished one at its end (≤ 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the start of the last character (or an ASCII byte)
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 6 else 3 if byte >> 4 == 14 else 4
            return (data, b"") if need <= back else (data[:-back], data[-back:])
    return data, b""


def _check_mostly_valid(path: Path, data: bytes, offset: int) -> None:
    try:
        data.decode("utf-8")
        return  # the usual case, at the speed of the C decoder
    except UnicodeDecodeError:
        pass
    for start in range(0, len(data), _WINDOW):
        window = data[start : start + _WINDOW]
        invalid = len(_INVALID.findall(window.decode("utf-8", errors="surrogateescape")))
        if len(window) >= 64 and invalid > 0.3 * len(window):
            raise InputError(
                f"{path} looks like a binary file ({invalid:,} invalid UTF-8 bytes in the "
                f"{len(window):,} bytes at offset {offset + start:,})"
            )


def find_split(path: Path, size: int, val_fraction: float) -> int:
    """Byte offset where the validation split of a one-file corpus starts (see find_cut)."""
    return find_cut(path, size, int(size * (1.0 - val_fraction)))


def find_cut(path: Path, size: int, target: int) -> int:
    """A byte offset near `target`: just after the nearest newline (the first after it, else
    the last before it), else at the first character boundary there. 0 or `size` mean the text
    has no cut before or after its end."""
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
