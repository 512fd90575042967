"""A prompt's token ids, with the errors a user can act on."""

from __future__ import annotations

from lmcli.errors import InputError
from lmcli.tokenizers import CharTokenizer, Tokenizer


def unknown_characters(tokenizer: Tokenizer, text: str) -> list[str]:
    """The characters of `text` a char vocabulary lacks (none for byte-level BPE)."""
    if not isinstance(tokenizer, CharTokenizer):
        return []
    known = set(tokenizer.chars)
    return sorted({ch for ch in text if ch not in known})


def encode_prompt(
    tokenizer: Tokenizer,
    text: str,
    drop_unknown: bool = False,
    hint: str = "change the prompt, or pass --drop-unknown",
) -> list[int]:
    """The prompt's token ids. A char vocabulary cannot encode characters it has never seen: they
    are an InputError naming them (with `hint`), or dropped with `drop_unknown`."""
    if isinstance(tokenizer, CharTokenizer):
        missing = unknown_characters(tokenizer, text)
        if missing and drop_unknown:
            text = "".join(ch for ch in text if ch not in set(missing))
            if not text:
                shown = ", ".join(repr(ch) for ch in missing[:10])
                raise InputError(
                    f"every character of the prompt was dropped (none is in the char "
                    f"vocabulary: {shown})",
                    hint="give a prompt in the model's characters",
                )
        try:
            return [int(i) for i in tokenizer.encode(text)]
        except InputError as exc:
            raise InputError(f"the prompt has {exc.message}", hint=hint) from None
    try:
        return [int(i) for i in tokenizer.encode(text)]
    except InputError:
        raise InputError(
            "the prompt is not valid Unicode (it holds lone surrogates)",
            hint="give the prompt as UTF-8 text",
        ) from None
