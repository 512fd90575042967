"""The errors a user can cause. The CLI prints them as one line (plus a hint) and exits 1.

Anything else that escapes is a bug and keeps its traceback, except the environment's own
failures (a full disk, a path that cannot be written, memory that cannot be had), which
`environment_error` turns into the same one-line errors.
"""

from __future__ import annotations

import errno


class LmcliError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(LmcliError):
    """An option or config value is invalid or inconsistent with another."""


class InputError(LmcliError):
    """A file or corpus cannot be used: missing, empty, binary, too small, ..."""


class DownloadError(LmcliError):
    """A named corpus or encoding could not be fetched or failed its checksum."""


class EnvironmentFailure(LmcliError):
    """The machine refused: no space left, a path that cannot be written, no memory."""


class Stopped(KeyboardInterrupt):
    """A signal asked the command to stop at once (Ctrl-C twice, or SIGTERM/SIGHUP where work
    cannot stop gracefully). `finally` blocks still run; the exit code is 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_WRITE_HINT = "choose another --out, or check the folder's permissions"


def environment_error(exc: OSError) -> EnvironmentFailure:
    """The one-line error for an OSError, with the path it concerns when known."""
    path = exc.filename if exc.filename is not None else "(unnamed)"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        if exc.filename is None:  # a write to stdout (or a file already open)
            return EnvironmentFailure(
                "no space left on device (writing the output)",
                hint="free some space, or send the output somewhere else",
            )
        return EnvironmentFailure(
            f"no space left on the device holding {path}",
            hint="free some disk space, or write to another disk (--out)",
        )
    if code in (errno.EACCES, errno.EPERM):
        return EnvironmentFailure(f"permission denied: {path}", hint=_WRITE_HINT)
    if code == errno.EROFS:
        return EnvironmentFailure(f"{path} is on a read-only file system", hint=_WRITE_HINT)
    if code == errno.ENOENT:
        return EnvironmentFailure(f"no such file or directory: {path}")
    if code == errno.ENOTDIR:
        return EnvironmentFailure(f"{path}: a part of this path is a file, not a directory")
    if code == errno.EEXIST:
        return EnvironmentFailure(f"{path} already exists")
    if code == errno.EISDIR:
        return EnvironmentFailure(f"{path} is a directory")
    if code == errno.ENOMEM:
        return EnvironmentFailure("out of memory", hint="use a smaller model, batch or context")
    reason = exc.strerror or type(exc).__name__
    return EnvironmentFailure(f"{reason}: {path}")
