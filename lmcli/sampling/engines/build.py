"""Compiling decode.c on first use, once per machine, into a cache folder.

The machine's C compiler ($CC, else cc, gcc or clang) builds it into $LMCLI_CACHE_DIR (else
$XDG_CACHE_HOME/lmcli, else ~/.cache/lmcli) under a name that hashes the source, the compiler,
its flags and the CPU: each machine compiles once (~1 s), and a changed source never runs stale.
The compiled file is written atomically beside its sha256, and loaded only if they agree (a
truncated shared library crashes the process that loads it). Without a compiler, or if
compiling fails, `build` says why, and lmcli samples with the torch model instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lmcli.files import cache_dir

SOURCE = "decode.c"
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-fno-math-errno")
PORTABLE_FLAGS = ("-O2", "-shared", "-fPIC")  # when the compiler has no -march=native


@dataclass(frozen=True)
class Library:
    """The loaded decode.c, or why there is none."""

    handle: ctypes.CDLL | None
    reason: str  # the compiled file, or why it could not be had


def _cpu() -> str:
    """What -march=native compiles for: a binary built on one CPU may not run on another."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep))) or platform.machine()


def _find_compiler() -> tuple[str | None, str]:
    """$CC, else the first of cc, gcc and clang on the PATH; or None and why."""
    chosen = os.environ.get("CC")
    if chosen:
        if shutil.which(chosen) is None:
            return None, f"$CC={chosen} is not a program on this machine"
        return chosen, ""
    found = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    return found, "" if found else "no C compiler found (cc, gcc or clang; or set $CC)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(target: Path) -> bool:
    digest = target.with_name(target.name + ".sha256")
    try:
        return digest.read_text(encoding="ascii").strip() == _sha256(target)
    except OSError:
        return False


def build() -> Library:
    """Compile (once per machine) and load decode.c; Library(None, why) when it cannot be."""
    compiler, why = _find_compiler()
    if compiler is None:
        return Library(None, why)
    source = resources.files(__package__).joinpath(SOURCE).read_bytes()
    reason = ""
    for flags in (FLAGS, PORTABLE_FLAGS):
        key = b"\0".join([source, compiler.encode(), " ".join(flags).encode(), _cpu().encode()])
        target = cache_dir() / f"decode-{hashlib.sha256(key).hexdigest()[:16]}.so"
        for _ in range(2):  # a cached file that will not load (damaged) is rebuilt once
            if target.is_file() and not _intact(target):
                target.unlink(missing_ok=True)
            if not target.is_file():
                error = _compile(compiler, flags, source, target)
                if error is not None:
                    reason = error
                    break
            try:
                return Library(ctypes.CDLL(str(target)), str(target))
            except OSError as exc:
                target.unlink(missing_ok=True)
                reason = f"could not load {target}: {exc}"
    return Library(None, reason)


def _compile(compiler: str, flags: tuple[str, ...], source: bytes, target: Path) -> str | None:
    """Compile into target atomically (another process may be compiling too); None when done."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, out = Path(tmp) / SOURCE, Path(tmp) / target.name
            src.write_bytes(source)
            done = subprocess.run(
                [compiler, *flags, "-o", str(out), str(src), "-lm"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["no message"])[0]
                return f"{compiler} failed: {first[:200]}"
            digest = Path(tmp) / "digest"
            digest.write_text(_sha256(out) + "\n", encoding="ascii")
            os.replace(out, target)
            os.replace(digest, target.with_name(target.name + ".sha256"))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not compile with {compiler}: {exc}"
    return None
