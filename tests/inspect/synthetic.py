"""Views made by hand, one of each panel kind, with the awkward text a tokenizer produces:
newlines, tabs, an emoji, HTML, a URL and dollar signs."""

from __future__ import annotations

from lmcli.inspect.panels import Bars, Heatmap, Lines, Span, Spans, Table, ViewResult

TOKENS = ["<s>", "a&b", " to", "\n", "\t", "$x$"]


def attention(n: int = len(TOKENS)) -> Heatmap:
    """Causal attention: each query spreads its weight over the keys up to itself; None above
    the diagonal."""
    values: list[list[float | None]] = [
        [(j + 1) / ((i + 1) * (i + 2) / 2) if j <= i else None for j in range(n)] for i in range(n)
    ]
    names = [TOKENS[i % len(TOKENS)] for i in range(n)]
    return Heatmap(
        "layer 0, head 1",
        values,
        names,
        names,
        note="keys after the query are masked",
        row_axis="query",
        col_axis="key",
    )


def lens() -> Heatmap:
    """A logit-lens grid: a token written in each cell, coloured by its probability."""
    values: list[list[float | None]] = [[0.125 * (r + c) % 1 for c in range(5)] for r in range(4)]
    labels = [[f"t{r}{c}" if c else "\n" for c in range(5)] for r in range(4)]
    labels[3][4] = " "  # a space token: drawn as ␣, not as an empty cell
    rows = ["embed", "layer 0", "layer 1", "final"]
    return Heatmap(
        "top prediction per layer",
        values,
        rows,
        [str(c) for c in range(5)],
        labels=labels,
        row_axis="stream",
        col_axis="position",
    )


BARS = Bars(
    "next token",
    ["the", " a", "<eos>", "$5 and $6", "x", "y"],
    [0.4, 0.25, 0.15, 0.1, 0.06, 0.04],
    cut=3,
    cut_label="top-p 0.8 keeps 3",
    note="entropy 2.2 bits",
)
SPANS = Spans(
    "surprisal",
    [
        Span("Hello", 0.5, "0.50 bits"),
        Span(" world\n", 5.5, "5.50 bits"),
        Span("\tindented", None),
        Span("🙂", 3.0, "3.00 bits"),
        Span("<script>alert('x')</script>", 1.0, '"quoted" <tip> & more'),
        Span(" see https://example.org", 2.0, "2.00 bits"),
    ],
    lo=0.0,
    hi=6.0,
    legend="surprisal, 0 to 6.0 bits",
)
LINES = Lines(
    "KL by distance",
    [1.0, 10.0, 100.0, 1000.0],
    {"train": [3.0, 2.0, None, 1.0], "val": [3.2, 2.5, 2.0, 1.6]},
    x_label="distance",
    y_label="KL (bits)",
    log_x=True,
    note="a gap at 100",
)
TABLE = Table(
    "per layer",
    ["layer", "norm", "what"],
    [["embed", 0.5, "a<b"], ["layer 0", 1.25, "tab\there"], ["final", 2, True]],
    shade=True,
    lo=0.0,
    hi=2.0,
    note="shaded 0 to 2",
)


def views() -> list[ViewResult]:
    return [
        ViewResult(
            "attention",
            "Attention",
            "Where each query looks.",
            [attention(), lens()],
            {},
            notes=["the prompt was cut to its last 6 tokens", "Https links stay text"],
        ),
        ViewResult("next", "Next token", "The distribution of the next token.", [BARS, SPANS], {}),
        ViewResult("memory", "Memory <&>", "How far back a change matters.", [LINES, TABLE], {}),
    ]
