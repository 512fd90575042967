"""The command line: thin commands over the library. The only package that imports typer."""

from lmcli.cli.app import app, main

__all__ = ["app", "main"]
