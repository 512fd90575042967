"""A corpus as a list of documents: one text file, a directory of them, a glob, or a named corpus.

A directory is walked recursively and a glob expanded (`**` matches folders too); the files are
read in the sorted order of their names relative to the directory (or the glob's fixed prefix),
so the same folder always gives the same corpus. Hidden files and folders (a leading `.`, such
as `.git`) are skipped, as are links to folders (never followed, so no loops). Every file gets
the same checks as a single corpus file; in a directory or a glob a file that fails them (a
picture, an empty file) is skipped and named, with why, in the summary and in meta.json. A
corpus with no text file left is an error that lists what was skipped.

The validation split is the end of the concatenation, cut just after a newline (`split_corpus`),
or whole files held out from the end (`val_files`). Each split is a list of `Segment`s: byte
ranges of documents, streamed one after the other, so memory stays bounded whatever the corpus.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli.corpus.named import resolve_corpus
from lmcli.corpus.text import TextStats, describe_path, find_cut, iter_text, scan_text_file
from lmcli.corpus.tokenfiles import META_FILE, TokenMeta
from lmcli.errors import InputError

_GLOB_CHARS = frozenset("*?[")
_SHOWN = 5  # skipped files named in an error


@dataclass(frozen=True)
class Document:
    path: Path
    name: str  # relative to the corpus's folder (a single file: its file name)
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Skipped:
    name: str
    why: str


@dataclass(frozen=True)
class Located:
    """Where a CORPUS argument points, before any file is read."""

    name: str  # names output folders: the corpus name, the file's stem or the folder's name
    source: str  # what the user passed, for the record
    files: tuple[tuple[Path, str], ...]  # each candidate file and its name
    skipped: tuple[Skipped, ...]
    many: bool  # a directory or a glob (its files are checked one by one, bad ones skipped)


@dataclass(frozen=True)
class Corpus:
    name: str
    source: str
    documents: tuple[Document, ...]
    skipped: tuple[Skipped, ...]

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.documents)

    @property
    def sha256(self) -> str:
        """One file: its sha256. Several: the sha256 of their `sha256sum` listing (a line of
        "<sha256>  <name>" per file, in order), which `sha256sum FILES | sha256sum` repeats."""
        if len(self.documents) == 1:
            return self.documents[0].sha256
        listing = "".join(f"{d.sha256}  {d.name}\n" for d in self.documents)
        return hashlib.sha256(listing.encode("utf-8", errors="surrogateescape")).hexdigest()

    def record(self) -> dict[str, Any]:
        """What meta.json says of the corpus."""
        out: dict[str, Any] = {"source": self.source, "sha256": self.sha256, "bytes": self.bytes}
        if len(self.documents) > 1 or self.skipped:
            out["files"] = [
                {"name": d.name, "bytes": d.bytes, "sha256": d.sha256} for d in self.documents
            ]
            out["skipped"] = [{"name": s.name, "why": s.why} for s in self.skipped]
        return out


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of documents[doc]; `end` at the document's size ends the document."""

    doc: int
    start: int
    end: int


def locate_corpus(
    spec: str,
    data_dir: Path | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> Located:
    """A path (file or directory) wins, then a glob, then a named corpus (fetched)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if _made_by_lmcli(path):
            raise InputError(
                f"{path} is a folder lmcli wrote (a token or run directory), not text",
                hint="train on a token directory with: lmcli train " + str(path),
            )
        files, skipped = _walk(path)
        return _many(spec, path.absolute().name or "corpus", files, skipped, "directory")
    if not (path.exists() or path.is_symlink()) and _GLOB_CHARS & set(spec):
        return _many(spec, _glob_root(spec).absolute().name or "corpus", _expand(spec), [], "glob")
    resolved = resolve_corpus(spec, data_dir, on_bytes)
    problem = describe_path(resolved.path)
    if problem is not None:
        raise InputError(problem)
    return Located(resolved.name, resolved.source, ((resolved.path, resolved.path.name),), (),
                   many=False)  # fmt: skip


def _many(
    spec: str, name: str, files: list[tuple[Path, str]], skipped: list[Skipped], kind: str
) -> Located:
    if not files:
        what = "no files" if kind == "glob" else "no files to read"
        raise InputError(f"{kind} {spec} matches {what}" + _listing(skipped))
    return Located(name, spec, tuple(files), tuple(skipped), many=True)


def _listing(skipped: list[Skipped] | tuple[Skipped, ...]) -> str:
    if not skipped:
        return ""
    shown = "; ".join(f"{s.name}: {s.why}" for s in skipped[:_SHOWN])
    more = f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    return f" (skipped {shown}{more})"


def _walk(root: Path) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    files: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        rel = here.relative_to(root)
        for d in sorted(dirs):
            full, name = here / d, f"{(rel / d).as_posix()}/"
            why = (
                "hidden folder"
                if d.startswith(".")
                else "a link to a folder (not followed)"
                if full.is_symlink()
                else "a folder lmcli wrote (tokens or a run)"
                if _made_by_lmcli(full)
                else None
            )
            if why is not None:
                skipped.append(Skipped(name, why))
                dirs.remove(d)
        for n in names:
            name = (rel / n).as_posix()
            if n.startswith("."):
                skipped.append(Skipped(name, "hidden file"))
            else:
                files.append((here / n, name))
    files.sort(key=lambda f: f[1])
    skipped.sort(key=lambda s: s.name)
    return files, skipped


def _made_by_lmcli(folder: Path) -> bool:
    """A token directory or a run directory: its meta.json is one lmcli wrote."""
    if not (folder / META_FILE).is_file():
        return False
    try:
        TokenMeta.load(folder)
    except InputError:
        return False
    return True


def _glob_root(spec: str) -> Path:
    """The folder before the first path part that holds a glob character."""
    fixed: list[str] = []
    for part in Path(spec).expanduser().parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand(spec: str) -> list[tuple[Path, str]]:
    """The files a glob matches (folders it matches are left out), named relative to its root.
    Like the shell, `*` matches no hidden name."""
    root = _glob_root(spec)
    files = [
        (path, path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path))
        for path in map(Path, glob.glob(os.path.expanduser(spec), recursive=True))
        if not path.is_dir()
    ]
    return sorted(files, key=lambda f: f[1])


def open_corpus(
    spec: str,
    data_dir: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Corpus:
    """Locate the corpus and read each file once to check it and take its sha256."""
    report = on_progress or (lambda stage, done, total: None)
    located = locate_corpus(spec, data_dir, lambda done, total: report("download", done, total))
    return read_corpus(located, on_progress)


def read_corpus(
    located: Located, on_progress: Callable[[str, int, int], None] | None = None
) -> Corpus:
    """Check each located file as text and take its sha256 (a directory's or a glob's bad files
    are skipped, with why; a single file's problem is an error)."""
    report = on_progress or (lambda stage, done, total: None)
    sizes = [_size(path) for path, _ in located.files]
    total = sum(sizes)
    documents: list[Document] = []
    skipped = list(located.skipped)
    done = 0
    for (path, name), size in zip(located.files, sizes, strict=True):
        try:
            length, digest = scan_text_file(path, _checking(report, done, total))
        except InputError as exc:
            if not located.many:
                raise
            skipped.append(Skipped(name, _why(exc.message, path)))
        else:
            documents.append(Document(path, name, length, digest))
        done += size
    if not documents:
        raise InputError(f"{located.source} holds no text file" + _listing(skipped))
    skipped.sort(key=lambda s: s.name)
    return Corpus(located.name, located.source, tuple(documents), tuple(skipped))


def _checking(
    report: Callable[[str, int, int], None], base: int, total: int
) -> Callable[[int, int], None]:
    """scan_text_file's progress for one file, as progress over all of them."""
    return lambda done, _size: report("check", base + done, total)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # a broken link: scanning names it


def _why(message: str, path: Path) -> str:
    """An error message about `path` as a reason, without the path."""
    for prefix in (f"{path} ", f"{path}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message.replace(f": {path}", "")


def split_corpus(
    corpus: Corpus, val_fraction: float, val_files: int | None = None
) -> dict[str, list[Segment]]:
    """The train and val splits as segments. `val_files` holds out that many whole files from
    the end; otherwise the last `val_fraction` of the bytes, cut just after a newline."""
    docs = corpus.documents
    if val_files is not None:
        if val_files >= len(docs):
            raise InputError(
                f"--val-files {val_files} leaves no file to train on: {corpus.source} holds "
                f"{len(docs)} text file{'s' if len(docs) != 1 else ''}",
                hint="hold out fewer files, or use --val-fraction",
            )
        cut = len(docs) - val_files
        return {
            "train": [Segment(i, 0, d.bytes) for i, d in enumerate(docs[:cut])],
            "val": [Segment(cut + i, 0, d.bytes) for i, d in enumerate(docs[cut:])],
        }
    target = int(corpus.bytes * (1.0 - val_fraction))
    k, before = 0, 0  # docs[k] holds byte `target` of the concatenation; `before` precede it
    while k < len(docs) - 1 and before + docs[k].bytes <= target:
        before += docs[k].bytes
        k += 1
    doc = docs[k]
    offset = find_cut(doc.path, doc.bytes, min(target - before, doc.bytes))
    if (offset == 0 and k == 0) or (offset == doc.bytes and k == len(docs) - 1):
        raise InputError(
            f"{corpus.source} ({corpus.bytes:,} bytes) is too small to hold out --val-fraction "
            f"{val_fraction} for validation",
            hint="use a larger corpus or a larger --val-fraction",
        )
    train = [Segment(i, 0, d.bytes) for i, d in enumerate(docs[:k])]
    val = [Segment(i, 0, d.bytes) for i, d in enumerate(docs) if i > k]
    if offset > 0:
        train.append(Segment(k, 0, offset))
    if offset < doc.bytes:
        val.insert(0, Segment(k, offset, doc.bytes))
    return {"train": train, "val": val}


# How documents are told apart in the token stream (`separator` of `iter_pieces`).
EOT = "eot"  # the special token <|endoftext|>
BLANK_LINE = "blank-line"  # text: a newline if the document lacks its last one, then an empty line


class EndOfText:
    """In a stream of text pieces: a document ends here (the `<|endoftext|>` token)."""

    def __repr__(self) -> str:
        return "END_OF_TEXT"


END_OF_TEXT = EndOfText()
Piece = str | EndOfText


def iter_pieces(
    corpus: Corpus,
    segments: list[Segment],
    separator: str | None,
    *,
    exact: bool = False,
    chunk_bytes: int = 1 << 20,
    stats: TextStats | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[Piece]:
    """The text of `segments` in pieces (see text.iter_text), each document of a corpus of
    several followed by its separator: END_OF_TEXT, or a blank line added to its last piece.
    `on_bytes` gets the raw bytes read so far over all segments."""
    stats = stats if stats is not None else TextStats()
    separate = separator if len(corpus.documents) > 1 else None
    base = 0
    for seg in segments:
        doc = corpus.documents[seg.doc]
        report = None if on_bytes is None else _shifted(on_bytes, base)
        pieces = iter_text(doc.path, seg.start, seg.end, exact=exact, chunk_bytes=chunk_bytes,
                           stats=stats, on_bytes=report)  # fmt: skip
        ends = seg.end == doc.bytes
        if ends and separate == BLANK_LINE:
            pieces = _ending_with_blank_line(pieces, stats)
        yield from pieces
        if ends and separate == EOT:
            yield END_OF_TEXT
        base += seg.end - seg.start


def _shifted(on_bytes: Callable[[int], None], base: int) -> Callable[[int], None]:
    return lambda n: on_bytes(base + n)


def _ending_with_blank_line(pieces: Iterator[str], stats: TextStats) -> Iterator[str]:
    last = ""
    for piece in pieces:
        if last:
            yield last
        last = piece
    extra = "\n" if last.endswith("\n") else "\n\n"
    stats.chars += len(extra)
    stats.bytes += len(extra)
    yield last + extra
