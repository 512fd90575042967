"""The errors a user can cause. The CLI prints them as one line (plus a hint) and exits 1.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


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
