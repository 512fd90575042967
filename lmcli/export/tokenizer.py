"""lmcli's tokenizers in the forms Hugging Face tokenizers and llama.cpp read.

Both speak byte-level BPE: each byte is written as one printable character (GPT-2's
`bytes_to_unicode`), a token as the string of its bytes' characters, and the merges as pairs of
such strings.

- **BPE** (ranks from rustbpe or tiktoken): the same tokens with the same ids, the merges derived
  from the ranks (each token longer than one byte is the merge of two shorter ones; ordered by
  the rank of what they make, which is the order tiktoken applies them in), and GPT-4's split
  pattern as the pre-tokenizer.
- **char**: HF gets a BPE model whose vocabulary is the characters and which has no merges, so
  each character is one token. A character outside the vocabulary has no token: HF leaves it
  out, as `lmcli sample --drop-unknown` does (lmcli refuses it otherwise). llama.cpp gets the
  characters as byte-level tokens and the merges that assemble each multi-byte character from
  its bytes (a vocabulary of ASCII alone gets one merge of its first two characters: a GGUF file
  with no merges is refused by llama.cpp).
- The special `<|endoftext|>` (a folder of documents) keeps its id; HF is told to split special
  strings in text as ordinary text, as lmcli does (`split_special_tokens`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from lmcli.tokenizers import CharTokenizer
from lmcli.tokenizers.char import END_OF_TEXT


@cache
def byte_chars() -> tuple[str, ...]:
    """GPT-2's printable character for each byte 0..255 (printable Latin-1 bytes stand for
    themselves; the others map to U+0100 onwards)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def byte_level(data: bytes) -> str:
    table = byte_chars()
    return "".join(table[b] for b in data)


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merges that rebuild each token longer than a byte from two tokens, in the order of
    the rank of what they make (every split of a token into two tokens, as HF's own tiktoken
    converter does: any of them yields the same token)."""
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(left, right) for _, _, _, left, right in merges]


def vocabulary(tokenizer: Any) -> list[bytes]:
    """Every token's bytes by id (a special token: its name's bytes)."""
    if isinstance(tokenizer, CharTokenizer):
        return [c.encode("utf-8", errors="surrogatepass") for c in tokenizer.chars] + [
            s.encode() for s in tokenizer.specials
        ]
    encoding = tokenizer.encoding
    tokens: list[bytes] = [b""] * tokenizer.vocab_size
    for token, rank in encoding._mergeable_ranks.items():
        tokens[rank] = token
    for name, rank in encoding._special_tokens.items():
        tokens[rank] = name.encode()
    return tokens


def specials(tokenizer: Any) -> dict[str, int]:
    if isinstance(tokenizer, CharTokenizer):
        return {s: len(tokenizer.chars) + i for i, s in enumerate(tokenizer.specials)}
    return dict(tokenizer.encoding._special_tokens)


def hf_tokenizer_files(tokenizer: Any, context: int) -> dict[str, dict[str, Any]]:
    """tokenizer.json (the `tokenizers` library's format) and tokenizer_config.json."""
    special = specials(tokenizer)
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in special.items()]  # fmt: skip
    model: dict[str, Any] = {"type": "BPE", "dropout": None, "unk_token": None,
                             "continuing_subword_prefix": None, "end_of_word_suffix": None,
                             "fuse_unk": False, "byte_fallback": False,
                             "ignore_merges": False}  # fmt: skip
    pre: dict[str, Any] | None
    decoder: dict[str, Any]
    if isinstance(tokenizer, CharTokenizer):
        model |= {"vocab": {c: i for i, c in enumerate(tokenizer.chars)}, "merges": []}
        pre, decoder = None, {"type": "Fuse"}
    else:
        ranks = tokenizer.encoding._mergeable_ranks
        merges = [[byte_level(a), byte_level(b)] for a, b in bpe_merges(ranks)]
        model |= {"vocab": {byte_level(t): r for t, r in ranks.items()}, "merges": merges}
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenizer.encoding._pat_str},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False},
        ]}  # fmt: skip
        decoder = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                   "use_regex": False}  # fmt: skip
    tokenizer_json = {"version": "1.0", "truncation": None, "padding": None,
                      "added_tokens": added, "normalizer": None, "pre_tokenizer": pre,
                      "post_processor": None, "decoder": decoder, "model": model}  # fmt: skip
    eot = END_OF_TEXT if END_OF_TEXT in special else None
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context,
              "clean_up_tokenization_spaces": False, "split_special_tokens": True,
              "add_bos_token": False, "add_eos_token": False,
              "bos_token": eot, "eos_token": eot, "pad_token": eot}  # fmt: skip
    return {"tokenizer.json": tokenizer_json, "tokenizer_config.json": config}


def gguf_vocabulary(tokenizer: Any) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) for a GGUF file of tokenizer model "gpt2"."""
    normal, control = 1, 3  # llama.cpp's token types
    special = set(specials(tokenizer).values())
    tokens = [byte_level(t) if i not in special else t.decode()
              for i, t in enumerate(vocabulary(tokenizer))]  # fmt: skip
    types = [control if i in special else normal for i in range(len(tokens))]
    if isinstance(tokenizer, CharTokenizer):
        merges: list[str] = []
        for c in tokenizer.chars:
            data = c.encode("utf-8", errors="surrogatepass")
            merges += [f"{byte_level(data[:i])} {byte_level(data[i:i + 1])}"
                       for i in range(1, len(data))]  # fmt: skip
        merges = list(dict.fromkeys(merges))  # characters sharing lead bytes share merges
        if not merges:
            # ASCII alone: one merge whose result is no token, of a printable character with
            # itself ("aa" then falls back to "a" + "a", each one byte and one token).
            c = next((c for c in tokenizer.chars if "!" <= c <= "~"), tokenizer.chars[0])
            merges = [f"{byte_level(c.encode())} {byte_level(c.encode())}"]
    else:
        ranks = tokenizer.encoding._mergeable_ranks
        merges = [f"{byte_level(a)} {byte_level(b)}" for a, b in bpe_merges(ranks)]
    return tokens, types, merges
