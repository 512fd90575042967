"""Corpora: named recipes and downloads, streaming text, token files, and `tokenize`."""
