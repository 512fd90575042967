from __future__ import annotations

from pathlib import Path

import pytest
import tiktoken

from lmcli.errors import DownloadError, InputError
from lmcli.tokenizers import load_tokenizer, save_tokenizer
from lmcli.tokenizers.bpe import pretrained, train_bpe


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown tokenizer 'gpt5'.*char, bpe,.*gpt2"):
        pretrained("gpt5")


def test_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Route tiktoken's download through a closed local port: it fails at once, never online.
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(DownloadError, match="offline or not cached") as info:
        pretrained("gpt2")
    assert "TIKTOKEN_CACHE_DIR" in (info.value.hint or "")


def test_a_fetched_encoding_is_saved_self_contained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shakespeare_text: str
) -> None:
    # Stand in for tiktoken's registry (which would download): a small encoding with a special
    # token, as gpt2 has.
    base = train_bpe([shakespeare_text[:50_000]], 300).encoding
    fake = tiktoken.Encoding(
        "gpt2",
        pat_str=base._pat_str,
        mergeable_ranks=base._mergeable_ranks,
        special_tokens={"<|endoftext|>": 300},
    )
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: fake)
    tok = pretrained("gpt2")
    assert tok.vocab_size == 301
    # Special-token text in a corpus is ordinary text, never the special id.
    assert 300 not in [int(t) for t in tok.encode("a <|endoftext|> b")]
    save_tokenizer(tok, tmp_path)
    monkeypatch.undo()
    again = load_tokenizer(tmp_path)
    assert again.vocab_size == 301
    assert again.decode(again.encode("hello <|endoftext|>")) == "hello <|endoftext|>"
