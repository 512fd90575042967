"""Named corpora: recipes in data/corpora.json, verified by size and sha256, cached.

A recipe with a `bundled` copy (Tiny Shakespeare, the default corpus) is decompressed from the
package itself, so the first `lmcli train` needs no network. Any other is downloaded on first use.
Either way the text streams into a temporary file beside the cache entry, is checked against the
recipe's size and sha256, and only then renamed into place: an interrupted or corrupt copy never
leaves a file that looks finished.
"""

from __future__ import annotations

import bz2
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from lmcli.errors import DownloadError, InputError

DATA_DIR_ENV = "LMCLI_DATA_DIR"
_CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "data"
_DOWNLOAD_TIMEOUT_S = 30.0
_BLOCK = 1 << 16


@dataclass(frozen=True)
class CorpusRecipe:
    name: str
    description: str
    url: str
    filename: str
    bytes: int
    sha256: str
    # A bz2 copy shipped in the package (data/ in a checkout), read instead of the URL.
    bundled: str | None = None


def _package_file(name: str) -> tuple[Path, bool]:
    """A file of data/ and whether it is the source checkout's (else the installed copy, which
    the wheel carries inside lmcli/corpus)."""
    checkout = _CHECKOUT_DATA / name
    if checkout.is_file():
        return checkout, True
    return Path(str(resources.files("lmcli.corpus") / name)), False


def _recipes_file() -> tuple[Path, bool]:
    return _package_file("corpora.json")


def load_catalog() -> dict[str, CorpusRecipe]:
    path, _ = _recipes_file()
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: CorpusRecipe(name=name, **fields) for name, fields in raw["corpora"].items()}


def default_data_dir() -> Path:
    """$LMCLI_DATA_DIR, else data/downloads in a source checkout, else the user's cache."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    _, in_checkout = _recipes_file()
    if in_checkout:
        return _CHECKOUT_DATA / "downloads"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lmcli"


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            done += len(block)
            if on_bytes is not None:
                on_bytes(done)
    return digest.hexdigest()


def cached_corpus(name: str, data_dir: Path | None = None) -> Path | None:
    """The named corpus's verified local copy, or None; never downloads."""
    recipe = load_catalog().get(name)
    if recipe is None:
        return None
    target = (data_dir or default_data_dir()) / recipe.filename
    size_ok = target.is_file() and target.stat().st_size == recipe.bytes
    return target if size_ok and sha256_file(target) == recipe.sha256 else None


def fetch(
    recipe: CorpusRecipe,
    data_dir: Path,
    on_bytes: Callable[[int, int], None] | None = None,
) -> Path:
    """Return the local path of `recipe`, unpacking its bundled copy or downloading it (then
    verifying it) if it is not cached.

    `on_bytes(done, total)` reports progress.
    """
    target = data_dir / recipe.filename
    if target.is_file():
        if target.stat().st_size == recipe.bytes and sha256_file(target) == recipe.sha256:
            return target
        target.unlink()  # a stale or corrupt copy: fetch it again
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the data directory {data_dir}: {exc.strerror}"
        ) from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{recipe.filename}.", suffix=".part", dir=data_dir)
    tmp = Path(tmp_name)
    try:
        bundled = _package_file(recipe.bundled)[0] if recipe.bundled else None
        with os.fdopen(fd, "wb") as out:
            if bundled is not None and bundled.is_file():
                digest, size = _unpack(bundled, out, recipe.bytes, on_bytes)
                what, origin = "the bundled copy", str(bundled)
            else:
                digest, size = _download(recipe, out, on_bytes)
                what, origin = "download", recipe.url
        if size != recipe.bytes or digest != recipe.sha256:
            raise DownloadError(
                f"{what} of {recipe.name} failed its check: got {size:,} bytes with sha256 "
                f"{digest[:12]}…, expected {recipe.bytes:,} bytes with {recipe.sha256[:12]}…",
                hint=f"{origin} changed or was corrupted; pass a local copy as the corpus",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _unpack(
    bundled: Path, out: BinaryIO, total: int, on_bytes: Callable[[int, int], None] | None
) -> tuple[str, int]:
    """Decompress the bundled bz2 copy into `out`; its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    try:
        with bz2.open(bundled, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
                out.write(block)
                size += len(block)
                if on_bytes is not None:
                    on_bytes(size, total)
    except (OSError, EOFError) as exc:  # a damaged archive
        raise DownloadError(
            f"the bundled copy {bundled} cannot be read ({exc})",
            hint="reinstall lmcli, or pass a local copy of the text as the corpus",
        ) from None
    return digest.hexdigest(), size


def _download(
    recipe: CorpusRecipe, out: BinaryIO, on_bytes: Callable[[int, int], None] | None
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    hint = (
        f"offline? pass a local copy of {recipe.filename} (a file path) as CORPUS instead, "
        f"or put it at {recipe.filename} in the data folder (--data-dir, $LMCLI_DATA_DIR)"
    )
    try:
        with urllib.request.urlopen(recipe.url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or recipe.bytes)
            while block := response.read(_BLOCK):
                digest.update(block)
                out.write(block)
                size += len(block)
                if on_bytes is not None:
                    on_bytes(size, total)
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"could not download {recipe.name}: HTTP {exc.code} from {recipe.url}", hint=hint
        ) from None
    except urllib.error.URLError as exc:
        raise DownloadError(
            f"could not download {recipe.name} from {recipe.url}: {exc.reason}", hint=hint
        ) from None
    except (http.client.HTTPException, OSError) as exc:
        raise DownloadError(
            f"download of {recipe.name} was interrupted after {size:,} bytes "
            f"({type(exc).__name__})",
            hint=hint,
        ) from None
    return digest.hexdigest(), size


@dataclass(frozen=True)
class ResolvedCorpus:
    path: Path
    name: str  # the corpus name or the file's stem; used to name output directories
    source: str  # what the user passed, for the record


def resolve_corpus(
    spec: str,
    data_dir: Path | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> ResolvedCorpus:
    """A path to an existing file wins; otherwise a catalog name is fetched."""
    path = Path(spec).expanduser()
    if path.exists() or path.is_symlink():  # a broken link or a loop is refused by name later
        return ResolvedCorpus(path=path, name=path.stem or "corpus", source=str(path))
    catalog = load_catalog()
    if spec in catalog:
        fetched = fetch(catalog[spec], data_dir or default_data_dir(), on_bytes)
        return ResolvedCorpus(path=fetched, name=spec, source=spec)
    names = ", ".join(sorted(catalog))
    raise InputError(f"no such file or named corpus: {spec} (named corpora: {names})")
