"""tokens: the text as the model receives it, one coloured span per token.

A character that byte-level BPE splits over several byte tokens is one span with several ids
(its bytes mean nothing alone); a character a char vocabulary lacks is an unknown span with none.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmcli.config import InspectConfig
from lmcli.inspect.panels import Span, Spans, Table, ViewResult
from lmcli.inspect.source import Subject, Text
from lmcli.sampling.prompt import unknown_characters
from lmcli.tokenizers import Tokenizer

# Spans cycle through this many colours: neighbours always differ.
SHADES = 6


@dataclass(frozen=True)
class TokenSpan:
    text: str
    ids: list[int]  # [] for a character the vocabulary lacks
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "ids": self.ids, "bytes": self.bytes}


def token_spans(tokenizer: Tokenizer, text: str) -> list[TokenSpan]:
    """The text split into spans that each decode to whole characters; joined, they are the
    text, and their ids, in order, are `tokenizer.encode(text)` (unknown characters aside)."""
    missing = set(unknown_characters(tokenizer, text))
    spans: list[TokenSpan] = []
    known = ""
    for ch in [*text, None]:
        if ch is not None and ch not in missing:
            known += ch
            continue
        spans += _known_spans(tokenizer, known)
        known = ""
        if ch is not None:
            spans.append(TokenSpan(ch, [], len(ch.encode("utf-8", errors="surrogatepass"))))
    return spans


def _known_spans(tokenizer: Tokenizer, text: str) -> list[TokenSpan]:
    if not text:
        return []
    spans: list[TokenSpan] = []
    pending: list[int] = []
    raw = b""
    for token in (int(i) for i in tokenizer.encode(text)):
        pending.append(token)
        raw += tokenizer.decode_bytes([token])
        try:
            piece = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a character: wait for its other bytes
        spans.append(TokenSpan(piece, pending, len(raw)))
        pending, raw = [], b""
    if pending:  # cannot happen for valid text; kept so that nothing is ever dropped
        spans.append(TokenSpan(raw.decode("utf-8", errors="replace"), pending, len(raw)))
    return spans


def summary(spans: list[TokenSpan]) -> dict[str, float | int]:
    tokens = sum(len(s.ids) for s in spans)
    size = sum(s.bytes for s in spans if s.ids)
    return {
        "tokens": tokens,
        "characters": sum(len(s.text) for s in spans),
        "bytes": sum(s.bytes for s in spans),
        "bytes_per_token": size / tokens if tokens else 0.0,
        "unknown": sum(1 for s in spans if not s.ids),
    }


def _panel(title: str, spans: list[TokenSpan], name: str) -> Spans:
    pieces = []
    for i, s in enumerate(spans):
        if not s.ids:
            pieces.append(Span(s.text, None, f"{s.text!r}: not in {name}'s vocabulary"))
            continue
        shade = (i % SHADES + 0.5) / SHADES
        ids = " ".join(str(t) for t in s.ids)
        pieces.append(Span(s.text, shade, f"{s.text!r}: id {ids}, {s.bytes} bytes"))
    return Spans(title, pieces, legend="colours only tell neighbouring tokens apart", graded=False)


def view(subject: Subject, text: Text, cfg: InspectConfig) -> ViewResult:
    spans = token_spans(subject.tokenizer, text.raw)
    stats = summary(spans)
    panels: list[Spans | Table] = [_panel(f"{stats['tokens']} tokens", spans, "the run")]
    data: dict[str, object] = {"spans": [s.to_dict() for s in spans], **stats}
    rows: list[list[str | float | int]] = [
        [
            "this run's",
            stats["tokens"],
            round(float(stats["bytes_per_token"]), 3),
            stats["unknown"],
        ],
    ]
    if cfg.vs is not None:
        from lmcli.tokenizers.bpe import pretrained

        other = token_spans(pretrained(cfg.vs), text.raw)
        other_stats = summary(other)
        panels.append(_panel(f"{cfg.vs}: {other_stats['tokens']} tokens", other, cfg.vs))
        rows.append(
            [
                cfg.vs,
                other_stats["tokens"],
                round(float(other_stats["bytes_per_token"]), 3),
                other_stats["unknown"],
            ]
        )
        data["vs"] = {"name": cfg.vs, "spans": [s.to_dict() for s in other], **other_stats}
    panels.append(
        Table("token counts", ["tokenizer", "tokens", "bytes per token", "unknown"], rows)
    )
    unknown = int(stats["unknown"])
    notes = [f"{unknown} characters are not in the vocabulary: the model cannot see them"] * bool(
        unknown
    )
    return ViewResult(
        "tokens",
        "Tokens",
        "The text as the model receives it: each coloured span is one token (or one character "
        "made of several byte tokens), with its id in the tooltip.",
        list(panels),
        data,
        notes,
    )
