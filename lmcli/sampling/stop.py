"""Where a sample ends before --max-new-tokens: at a stop string, or at <|endoftext|>.

A stop string ends a sample when the sample's decoded text contains it, wherever the token
boundaries fall: "\\n\\n" may arrive as two tokens, "END" as "EN" + "D". The stop string itself
is not part of the sample. A streamed sample must never show text that a later token turns into
the start of a stop string, so `StopFilter` holds back the longest end of the text that could
still begin one (as `Utf8Stream` holds back an unfinished character), and the streamed text
always equals the final one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmcli.errors import ConfigError
from lmcli.sampling.stream import Utf8Stream

_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def parse_stop(text: str) -> str:
    """A --stop value with \\n, \\t and \\\\ read as newline, tab and backslash (a shell
    passes them as two characters); an empty one is refused."""
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in _ESCAPES:
            out.append(_ESCAPES[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    if not out:
        raise ConfigError("--stop needs a non-empty string", hint='e.g. --stop "\\n\\n"')
    return "".join(out)


class StopFilter:
    """Feed text, get what is safe to show: everything before the first stop string, less an
    end that could still begin one. `stopped` once a stop string is complete."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            shown, self.pending = self.pending[: min(found)], ""
            return shown
        keep = self._could_begin_a_stop()
        shown = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(shown) :]
        return shown

    def flush(self) -> str:
        """The held-back end, once no more text will come (it began no stop string)."""
        shown, self.pending = ("" if self.stopped else self.pending), ""
        return shown

    def _could_begin_a_stop(self) -> int:
        """The length of the longest end of `pending` that is the start of a stop string."""
        text = self.pending
        for length in range(min(len(text), max(map(len, self.stops)) - 1), 0, -1):
            end = text[-length:]
            if any(stop.startswith(end) for stop in self.stops):
                return length
        return 0


class Samples:
    """The text of each sample as its tokens come, cut at a stop string or <|endoftext|>.

    Without either to watch for, the tokens are only kept, and decoded at the end (the first
    sample's also as they come when `stream`): the loop of every token pays for nothing else."""

    def __init__(
        self, tokenizer: Any, count: int, stops: Sequence[str], eot: int | None, stream: bool
    ) -> None:
        self.tokenizer, self.eot, self.stream = tokenizer, eot, stream
        self.watch = bool(stops) or eot is not None
        self.utf8 = [Utf8Stream() for _ in range(count)]
        self.filters = [StopFilter(stops) for _ in range(count)]
        self.parts: list[list[str]] = [[] for _ in range(count)]
        self.steps: list[np.ndarray] = []  # every step's tokens (B,), when not watching
        self.ended = [False] * count
        self.tokens = [0] * count  # tokens that belong to each sample (a stop's own included)

    @property
    def done(self) -> bool:
        return all(self.ended)

    def feed(self, token: np.ndarray) -> str:
        """Take one step's tokens (B,); return the text the first sample may show now."""
        if not self.watch:
            self.steps.append(token)
            if not self.stream:
                return ""
            return self.utf8[0].feed(self.tokenizer.decode_bytes([int(token[0])]))
        before = len(self.parts[0])
        for i, t in enumerate(token.tolist()):
            if self.ended[i]:
                continue
            self.tokens[i] += 1
            if t == self.eot:
                self._end(i)
                continue
            shown = self.filters[i].feed(self.utf8[i].feed(self.tokenizer.decode_bytes([t])))
            self.parts[i].append(shown)
            if self.filters[i].stopped:
                self.ended[i] = True
        return "".join(self.parts[0][before:])

    def _end(self, i: int) -> None:
        """<|endoftext|>: what the stream held back is the sample's end (no stop string came)."""
        self.parts[i].append(self.filters[i].feed(self.utf8[i].flush()) + self.filters[i].flush())
        self.ended[i] = True

    def finish(self) -> list[str]:
        """Every sample's text, the held-back ends of those still open included (a stream of
        the first sample shows what `feed` did not return yet: the end of its text)."""
        if not self.watch:
            if not self.steps:
                return ["" for _ in self.ended]
            rows = np.stack(self.steps, axis=1).tolist()  # (B, N)
            self.tokens = [len(row) for row in rows]
            return [self.tokenizer.decode_bytes(r).decode("utf-8", errors="replace") for r in rows]
        for i in range(len(self.ended)):
            if not self.ended[i]:
                self._end(i)
        return ["".join(p) for p in self.parts]
