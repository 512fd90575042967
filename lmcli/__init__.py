"""lmcli: a command-line workbench for training and sampling tiny language models."""

__version__ = "0.1.0"
