"""`lmcli train --processes N`: N copies of the same command, started as torchrun starts them,
training data-parallel with one thread each (lmcli/training/distributed.py).

On a small CPU a one-thread step scales better than one step on two spinning OpenMP threads, so
two processes of one thread outrun one process of two. The children run in their own process
group: a Ctrl-C reaches this process alone, which passes each signal on once (the first asks
every rank to stop after its step and save, a second stops them at once). If a child dies, the
others would wait in a collective forever: they are stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from lmcli.cli.signals import SIGNALS
from lmcli.errors import ConfigError

GRACE_SECONDS = 10.0  # after one child fails, how long the others get to end by themselves


def launched() -> bool:
    """True inside a process that torchrun or `--processes` started."""
    return "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_processes(count: int) -> int:
    """Run this command (sys.argv) as `count` ranks; their exit code (rank 0's, else the first
    failure's)."""
    if sys.argv[1:2] != ["train"]:
        raise ConfigError("--processes needs lmcli started as a program (lmcli train …)")
    port = _free_port()
    children = []
    for rank in range(count):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(count), "LOCAL_WORLD_SIZE": str(count),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        command = [sys.executable, "-m", "lmcli", *sys.argv[1:]]
        children.append(subprocess.Popen(command, env=env, process_group=0))

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        failed_at: float | None = None
        while any(child.poll() is None for child in children):
            if failed_at is None and any(child.poll() not in (None, 0) for child in children):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                for child in children:
                    if child.poll() is None:
                        child.kill()
            time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [child.returncode for child in children]
    return codes[0] if codes[0] != 0 else next((c for c in codes if c != 0), 0)
