"""How a command stops: Ctrl-C (SIGINT), SIGTERM (what `timeout`, systemd, `docker stop` and
Slurm send) and SIGHUP (a closed terminal) all mean the same thing, "stop".

- Work that can stop gracefully (training) gets `graceful_stop`: the first signal asks it to stop
  after the current step (it then saves and says how to resume); a second stops it at once.
- Other work gets `stop_at_once`: a signal raises `Stopped` where the program is, so `finally`
  blocks remove temporary files as they do for Ctrl-C.

Either way the command exits with 128 + the signal's number (130, 143, 129).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from lmcli.errors import Stopped

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    """Which signal asked the work to stop, if any; callable as the library's `should_stop`.

    Work that polls it (a training loop) stops gracefully; until the first poll (preparing,
    tokenizing) a signal stops the work at once, since nothing would see the request."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.polled = False

    def __call__(self) -> bool:
        self.polled = True
        return self.signum is not None


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[bool]:
    """Install `handler` for every stop signal; yields False where signals cannot be handled
    (not the main thread, e.g. inside a test runner's thread)."""
    try:
        previous = {s: signal.signal(s, handler) for s in SIGNALS}
    except ValueError:
        yield False
        return
    try:
        yield True
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def graceful_stop(on_request: Callable[[str], None]) -> Iterator[StopRequest]:
    """The first signal sets the request (and `on_request` says what happens next); a second
    raises Stopped at once."""
    request = StopRequest()

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.signum is not None or not request.polled:
            raise Stopped(signum)
        request.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        on_request(f"{name}: stopping after this step and saving ({name} again to stop at once)")

    with _handlers(handler):
        yield request


@contextmanager
def stop_at_once() -> Iterator[None]:
    """Any stop signal raises Stopped where the program is."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    with _handlers(handler):
        yield
