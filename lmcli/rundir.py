"""The run directory: what a training run leaves behind, and the rules for writing one.

config.json      the model + training config (flag-spelled keys), where the token data is (a path
                 relative to the run directory when it is the run's own data/), the data's
                 fingerprint, versions
tokenizer.json   the tokenizer (+ tokenizer.tiktoken for BPE), copied from the token data
meta.json        the token data's description (byte counts for bits per byte)
best.safetensors weights of the best validation loss so far (sample and export from here)
last.safetensors weights of the last checkpoint (sampled when no evaluation improved yet)
last.pt          full training state: weights, optimizer, step, RNG (resume from here)
metrics.jsonl    one JSON object per log step and per evaluation
data/            token files, when `train` tokenized a text file itself
.lock            held (fcntl) by the one process writing the run; its PID inside

The rules: one writer at a time (`RunLock`); a new run goes into a new or empty folder and,
if it fails before its first checkpoint, leaves nothing behind (`new_run`); `--resume`
continues only on the data the run began with (`check_data`) and with the config it began with
(`check_resumable`). Training and sampling both read the names from here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli import __version__
from lmcli.corpus.tokenfiles import META_FILE, TokenMeta
from lmcli.errors import ConfigError, InputError
from lmcli.files import (
    FORMAT_VERSION,
    atomic_write_bytes,
    is_temporary,
    make_dir,
    read_json_file,
    readable_format,
    sweep_stale,
    write_json,
)
from lmcli.tokenizers import RANKS_FILE, TOKENIZER_FILE

CONFIG_FILE = "config.json"
BEST = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
STATE = "last.pt"
LEGACY = ("best.pt", STATE)  # what lmcli 0.1 sampled from (its last.pt still resumes)
METRICS = "metrics.jsonl"
DATA_DIR = "data"
LOCK_FILE = ".lock"
# Files of a run lmcli writes, copies or makes: what `new_run` removes after an early failure.
RUN_FILES = (CONFIG_FILE, TOKENIZER_FILE, RANKS_FILE, META_FILE, METRICS, STATE, BEST,
             LAST_WEIGHTS, LOCK_FILE)  # fmt: skip
# Keys that may differ when resuming: budgets, reporting and where/how fast it runs.
RESUMABLE_CHANGES = {
    "max-steps", "max-time", "eval-every", "eval-interval", "log-every", "sample-every", "device",
    "dtype", "compile", "threads",
}  # fmt: skip


def find_weights(path: Path) -> Path:
    """The weights a run directory samples from (best.safetensors, else last.safetensors, else
    lmcli 0.1's best.pt or last.pt), or the file given."""
    if path.is_dir():
        for name in (BEST, LAST_WEIGHTS, *LEGACY):
            if (path / name).is_file():
                return path / name
        raise InputError(
            f"{path} holds no weights ({BEST} or {LAST_WEIGHTS})",
            hint="pass a run directory made by lmcli train, or a .safetensors file",
        )
    if not path.exists():
        raise InputError(f"no such run directory or weights file: {path}")
    return path


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunLock:
    """An exclusive lock on a run directory for as long as one process writes it.

    fcntl locks belong to the process: the kernel drops a dead process's lock, so a lock is never
    stale; the file's content (the holder's PID and command) only names who holds it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise InputError(
                    f"{self.path.parent} is in use by process {holder or '(unknown)'}",
                    hint="wait for it to finish (or stop it) before writing to that run",
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed while we waited for it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} ({' '.join(sys.argv[:3])[:150]})\n".encode(), 0)
        self.fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(
                f"cannot write into {self.path.parent}: {exc.strerror}",
                hint="choose another --out, or check that folder's permissions",
            ) from None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def _contents(run_dir: Path) -> list[str]:
    """What a folder holds besides lmcli's lock and temporaries."""
    return sorted(
        p.name for p in run_dir.iterdir() if p.name != LOCK_FILE and not is_temporary(p.name)
    )


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs a new or empty folder: refuse anything else before any work. (The lock
    and temporaries of a run being made there are left to the lock to sort out.)"""
    if not run_dir.exists():
        if run_dir.is_symlink():
            raise InputError(f"--out {run_dir} is a broken symlink")
        return
    if not run_dir.is_dir():
        raise InputError(
            f"--out {run_dir} exists and is not a directory", hint="choose another --out"
        )
    if (run_dir / CONFIG_FILE).exists() or (run_dir / STATE).exists():
        raise InputError(
            f"{run_dir} already holds a run",
            hint=f"continue it with --resume {run_dir}, or choose another --out",
        )
    others = _contents(run_dir)
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        raise InputError(
            f"--out {run_dir} is not empty (it holds {shown}): a new run needs a new or empty "
            "folder, so that lmcli never overwrites what it did not make",
            hint="choose another --out",
        )


@contextmanager
def new_run(run_dir: Path) -> Iterator[Path]:
    """A new run in `run_dir` (made now, or an empty folder), locked for this process.

    If the block fails (an error, a second Ctrl-C) before any checkpoint is saved, everything
    this made is removed again: a failed start leaves no half-made run behind.
    """
    check_new_run_dir(run_dir)
    created = make_dir(run_dir, "the run directory")
    locked = False
    try:
        with RunLock(run_dir):
            locked = True
            sweep_stale(run_dir)
            check_new_run_dir(run_dir)  # again, now that no other writer can be busy here
            yield run_dir
    except BaseException:
        if locked and not (run_dir / STATE).exists():
            _remove_run(run_dir, created)
        elif created:
            _rmdir_if_empty(run_dir)  # never another writer's files: only an empty folder
        raise


def _remove_run(run_dir: Path, created: bool) -> None:
    """Undo a new run that saved no checkpoint: its files, and the folder if it made it."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / DATA_DIR, ignore_errors=True)
    sweep_stale(run_dir)
    if created:
        _rmdir_if_empty(run_dir)


def _rmdir_if_empty(run_dir: Path) -> None:
    with suppress(OSError):  # something else is in it now: keep it
        run_dir.rmdir()


@contextmanager
def existing_run(run_dir: Path) -> Iterator[Path]:
    """An existing run, locked for this process; temporaries a killed process left are swept."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise InputError(f"{run_dir} is not an lmcli run directory (no {CONFIG_FILE})")
    with RunLock(run_dir):
        sweep_stale(run_dir)
        yield run_dir


@dataclass(frozen=True)
class RunConfig:
    """config.json, read back."""

    record: dict[str, Any]  # flag-spelled keys, as `lmcli train` printed them
    data: Path  # the token directory
    fingerprint: str | None  # sha256 of its meta.json when the run began (None: lmcli 0.1)
    init_from: dict[str, Any] | None = None  # a warm start's source: run, weights, step, sha256


def data_fingerprint(token_dir: Path) -> str:
    return hashlib.sha256((token_dir / META_FILE).read_bytes()).hexdigest()


def create(
    run_dir: Path, token_dir: Path, record: dict[str, Any], init_from: dict[str, Any] | None = None
) -> None:
    """Write a new run's config and a copy of its tokenizer and meta.json (into a folder that
    `new_run` holds, for a caller that follows the rules); `init_from` says where a warm start
    began."""
    run_dir.mkdir(parents=True, exist_ok=True)
    copy_data_files(token_dir, run_dir)
    own = token_dir.absolute().resolve() == (run_dir / DATA_DIR).absolute().resolve()
    config = {
        "schema_version": FORMAT_VERSION,
        "lmcli_version": __version__,
        # The run's own data by a relative path (the folder can move); other data as given.
        "data": DATA_DIR if own else str(token_dir.absolute()),
        "data_fingerprint": data_fingerprint(token_dir),
        "config": record,
    }
    if init_from is not None:
        config["init_from"] = init_from
    write_json(run_dir / CONFIG_FILE, config)


def copy_data_files(token_dir: Path, run_dir: Path) -> None:
    """The tokenizer and meta.json beside the checkpoints, where `lmcli sample` reads them."""
    for name in (TOKENIZER_FILE, RANKS_FILE, META_FILE):
        src = token_dir / name
        if src.is_file() and src.resolve() != (run_dir / name).resolve():
            atomic_write_bytes(run_dir / name, src.read_bytes())


def load_config(run_dir: Path) -> RunConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{run_dir} is not an lmcli run directory (no {CONFIG_FILE})")
    config = read_json_file(path)
    version = config.get("schema_version")
    if not readable_format(version):  # 1: lmcli 0.1's, an absolute data path, no fingerprint
        raise InputError(f"{path}: unsupported run schema {version!r}")
    record, data = config.get("config"), config.get("data")
    fingerprint = config.get("data_fingerprint")
    if not isinstance(record, dict) or not isinstance(data, str) or not data:
        raise InputError(f"{path} is damaged: it lacks the run's config or its data")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise InputError(f"{path} is damaged: data_fingerprint is not a string")
    init_from = config.get("init_from")
    if init_from is not None and not (
        isinstance(init_from, dict)
        and isinstance(init_from.get("run"), str)
        and isinstance(init_from.get("weights"), str)
    ):
        raise InputError(f"{path} is damaged: init_from does not name a run and its weights")
    data_dir = run_dir / data if not Path(data).is_absolute() else Path(data)
    if version == 1 and not data_dir.is_dir() and (run_dir / DATA_DIR).is_dir():
        data_dir = run_dir / DATA_DIR  # a 0.1 run moved with its own data
    return RunConfig(record=record, data=data_dir, fingerprint=fingerprint, init_from=init_from)


def check_data(run_dir: Path, saved: RunConfig) -> TokenMeta:
    """The run's token data, refused if it is not the data the run began on."""
    meta = TokenMeta.load(saved.data)
    if saved.fingerprint is not None and data_fingerprint(saved.data) != saved.fingerprint:
        before = _recorded_meta(run_dir)
        what = ""
        if before is not None:
            was, now = before.corpus, meta.corpus
            what = (
                f" (it began on {was.get('source')!r}, sha256 {str(was.get('sha256'))[:12]}…; "
                f"the data is now {now.get('source')!r}, {str(now.get('sha256'))[:12]}…)"
            )
        raise InputError(
            f"the token data in {saved.data} changed since {run_dir} began{what}",
            hint="resume only on the data a run began with; train a new run on the new data",
        )
    copy_data_files(saved.data, run_dir)  # restores a tokenizer.json deleted by hand
    return meta


def _recorded_meta(run_dir: Path) -> TokenMeta | None:
    try:
        return TokenMeta.load(run_dir)
    except InputError:
        return None


def check_resumable(saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse a resume whose config differs from the saved one beyond budgets and devices."""
    differing = [
        f"{key} {saved.get(key)!r} → {new.get(key)!r}"
        for key in sorted(set(saved) | set(new))
        if key not in RESUMABLE_CHANGES and key != "preset" and saved.get(key) != new.get(key)
    ]
    if differing:
        raise ConfigError(
            "cannot resume with a different config: " + "; ".join(differing),
            hint="only budgets, evaluation/log/sample intervals, device, dtype, compile and "
            "threads may change on --resume",
        )


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run's lock (a training in progress): its PID and command, or None.

    Probed with a shared lock held for an instant (flock has no query): a `lmcli train` that
    takes the run at that very instant is told the run is in use, and can simply be started
    again."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nothing ever trained here, or lmcli 0.1's run
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "(unknown)"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class MetricsLog:
    """metrics.jsonl: one JSON object per row, appended and flushed as it happens; the last row
    of a run that ended by itself (its budget spent) or by a stop is an "end" row."""

    def __init__(self, run_dir: Path) -> None:
        self.file = (run_dir / METRICS).open("a", encoding="utf-8")

    def train(self, step: int, seconds: float, tokens: int, **values: float) -> None:
        """A log step's row: loss, lr, tokens_per_s."""
        self._row({"step": step, "kind": "train", **values, "train_seconds": round(seconds, 3),
                   "tokens": tokens})  # fmt: skip

    def eval(self, step: int, seconds: float, tokens: int, **values: float) -> None:
        """An evaluation's row: val_loss, val_bpb, val_ppl."""
        self._row({"step": step, "kind": "eval", **values, "train_seconds": round(seconds, 3),
                   "tokens": tokens})  # fmt: skip

    def end(self, step: int, seconds: float, tokens: int, interrupted: bool) -> None:
        """The run stopped: its budget spent (interrupted False) or a signal (True)."""
        self._row({"step": step, "kind": "end", "interrupted": interrupted,
                   "train_seconds": round(seconds, 3), "tokens": tokens})  # fmt: skip

    def _row(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a row torn by a crash is skipped."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric rows logged after the checkpoint we resume from, and the "end" row of the
    attempt that is being continued."""
    if not (run_dir / METRICS).is_file():
        return
    rows = read_metrics(run_dir)
    keep = [row for row in rows if _step_of(row) <= step and row.get("kind") != "end"]
    atomic_write_bytes(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in keep).encode())


def _step_of(row: dict[str, Any]) -> float:
    step = row.get("step", 0)
    return step if isinstance(step, int | float) else float("inf")
