"""Build a large, varied text corpus from text already on this machine (nothing is downloaded).

Used by the README's tokenize benchmark: Tiny Shakespeare followed by Python's standard library
sources, /usr/share/doc and the man pages (decompressed), in sorted order, until the target
size. Files that are not valid UTF-8 are skipped.

    python data/make_big_corpus.py /tmp/big.txt --size-mb 100 \
        --shakespeare ../shared/data/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import gzip
import sysconfig
from collections.abc import Iterator
from pathlib import Path


def sources() -> Iterator[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    yield from sorted(stdlib.rglob("*.py"))
    for root in (Path("/usr/share/doc"), Path("/usr/share/man")):
        if root.is_dir():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def read_text(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size-mb", type=float, default=100.0)
    parser.add_argument("--shakespeare", type=Path, required=True)
    args = parser.parse_args()
    target = int(args.size_mb * 1e6)
    written = 0
    with args.out.open("w", encoding="utf-8") as out:
        written += out.write(args.shakespeare.read_text(encoding="utf-8"))
        while written < target:
            before = written
            for path in sources():
                text = read_text(path)
                if text and "\x00" not in text:
                    written += len(text.encode("utf-8"))
                    out.write(text if text.endswith("\n") else text + "\n")
                if written >= target:
                    break
            if written == before:
                raise SystemExit("no usable text found on this machine")
    print(f"{args.out}: {written / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
