"""The command line: thin commands over the library. The only package that imports typer."""

import os

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads made
# each training step ~30x slower. It must be set before torch (and its OpenMP) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmcli.cli.app import app, main

__all__ = ["app", "main"]
