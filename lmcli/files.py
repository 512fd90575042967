"""lmcli's own files: written atomically, read back with every field in doubt.

- Writes go to a temporary file beside the target (`.NAME.PID.tmp`), are fsynced and renamed
  over it: a crash or `kill -9` at any moment leaves the old file or the new one, never a torn
  one. Temporaries left by a killed process are swept by the next run (`sweep_stale`).
- Reads of JSON files check that they are UTF-8 JSON objects of a sane size, and file names
  they hold stay inside their folder (`plain_file_name`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lmcli.errors import InputError
from lmcli.machine import free_disk

# lmcli's file format: every file lmcli writes records it (config.json, meta.json, tokenizer.json,
# a weights file's metadata, last.pt) as its schema_version. 1 was lmcli 0.1's; it still reads.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# lmcli's JSON files are small: the largest, a char vocabulary of every Unicode code point
# (JSON-escaped), is ~13 MB.
MAX_JSON_BYTES = 64 << 20
# A temporary of process PID: `.NAME.PID.tmp` or `.NAME.PID-RANDOM.tmp` (a file or a folder).
_TEMPORARY = re.compile(r"^\..+\.(\d+)(-[0-9a-f]+)?\.tmp$")


def cache_dir() -> Path:
    """lmcli's cache (the compiled C engine, converted checkpoints): $LMCLI_CACHE_DIR, else
    $XDG_CACHE_HOME/lmcli, else ~/.cache/lmcli."""
    if os.environ.get("LMCLI_CACHE_DIR"):
        return Path(os.environ["LMCLI_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmcli"


def readable_format(version: object) -> bool:
    return (
        isinstance(version, int) and not isinstance(version, bool) and version in READABLE_FORMATS
    )


def temporary_name(path: Path, suffix: str = "") -> Path:
    """Where to write `path` before renaming it into place: beside it, named for this process."""
    return path.with_name(f".{path.name}.{os.getpid()}{suffix}.tmp")


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write `path` through `write(file)` into a temporary, fsync it, and rename it into place."""
    tmp = temporary_name(path)
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as exc:
        # torch.save reports a short write (a full disk) as a RuntimeError of its zip writer.
        raise _write_failure(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)  # make the rename itself durable


def _write_failure(path: Path, exc: RuntimeError) -> Exception:
    free = free_disk(path.parent)
    if free is not None and free < 1 << 20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return OSError(errno.EIO, f"could not write ({first[:120]})", str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("ascii"))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_file(path: Path, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object from one of lmcli's own files, or an InputError saying what is wrong."""
    if not path.exists():
        raise InputError(f"missing {path}")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path} is {size:,} bytes: too large for an lmcli file of its kind")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be an lmcli file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object")
    return data


def plain_file_name(value: object, where: Path, key: str) -> str:
    """A file name that stays inside its folder: no directories, no `..`, nothing absolute."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or Path(value).name != value
        or "\\" in value
        or "\0" in value
    ):
        raise InputError(f"{where}: {key} must be a file name in the same folder (got {value!r})")
    return value


def make_dir(path: Path, what: str) -> bool:
    """Create `path` (and its parents) if needed; True if it did. An error says it could not
    create `what` (followed by the folder it was to be made in, when that ends in "in")."""
    if path.is_dir():
        return False
    where = path.parent if what.endswith(" in") else path
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if path.is_dir():
            return False  # made by someone else meanwhile
        raise InputError(f"cannot create {what} {where}: a file is in the way") from None
    except OSError as exc:
        raise InputError(
            f"cannot create {what} {where}: {exc.strerror or exc}",
            hint="choose another --out, or check that folder's permissions",
        ) from None
    return True


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file or folder lmcli writes before renaming it."""
    return _TEMPORARY.match(name) is not None


def sweep_stale(directory: Path, prefix: str = "") -> list[Path]:
    """Remove the temporaries in `directory` (starting `.PREFIX`) that a dead process left;
    return them. A live process's are kept: it may still be writing them."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or not entry.name.startswith(f".{prefix}") or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
