"""Tokenizers: character level, byte-level BPE trained on the corpus, or a pretrained tiktoken
encoding. All are saved as plain JSON (+ a tiktoken rank file for BPE) and loaded with
`load_tokenizer(directory)`.

BPE (tiktoken, rustbpe) is imported only where it is used: `lmcli sample` on a char model never
pays for it. Import BpeTokenizer, train_bpe and pretrained from lmcli.tokenizers.bpe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from lmcli.errors import InputError
from lmcli.files import FORMAT_VERSION, read_json_file, readable_format
from lmcli.tokenizers.char import CharTokenizer

if TYPE_CHECKING:
    from lmcli.tokenizers.bpe import BpeTokenizer

Tokenizer: TypeAlias = "CharTokenizer | BpeTokenizer"

TOKENIZER_FILE = "tokenizer.json"
RANKS_FILE = "tokenizer.tiktoken"

__all__ = ["CharTokenizer", "Tokenizer", "load_tokenizer", "save_tokenizer"]


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> list[str]:
    """Write the tokenizer into `directory`; return the file names written."""
    if isinstance(tokenizer, CharTokenizer):
        meta = tokenizer.to_json()
        files = [TOKENIZER_FILE]
    else:
        from lmcli.tokenizers.bpe import write_ranks

        write_ranks(directory / RANKS_FILE, tokenizer.mergeable_ranks())
        meta = tokenizer.to_json(RANKS_FILE)
        files = [TOKENIZER_FILE, RANKS_FILE]
    meta = {"schema_version": FORMAT_VERSION, **meta}
    text = json.dumps(meta, ensure_ascii=True, indent=1)
    (directory / TOKENIZER_FILE).write_text(text + "\n", encoding="utf-8")
    return files


def load_tokenizer(directory: Path) -> Tokenizer:
    """Load what `save_tokenizer` wrote, checking every field before it is used."""
    path = directory / TOKENIZER_FILE
    if not path.exists():
        raise InputError(f"no tokenizer in {directory} (missing {TOKENIZER_FILE})")
    meta = read_json_file(path)
    if not readable_format(meta.get("schema_version")):
        raise InputError(f"{path}: not an lmcli tokenizer file (schema 1 or 2)")
    if meta.get("type") == "char":
        chars = meta.get("chars")
        if not isinstance(chars, str):
            raise InputError(f"{path}: chars must be a string of the vocabulary's characters")
        return CharTokenizer.checked(chars, str(path), meta.get("special_tokens"))
    if meta.get("type") == "bpe":
        from lmcli.tokenizers.bpe import from_json

        return from_json(meta, directory)
    raise InputError(f"{path}: unknown tokenizer type {meta.get('type')!r}")
