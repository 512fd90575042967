"""Regenerate tests/golden/continuations.json: each golden model's greedy continuation of the
prompt, by the torch model (the reference). Run it only when the forward is meant to change:

    python -m tests.golden.make_golden

A seed is kept only if every step's two likeliest tokens differ by at least MARGIN in logit,
so that an engine's rounding (~1e-6) cannot swap them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lmcli.config import SampleConfig
from lmcli.sampling.engines.torch_engine import TorchEngine
from lmcli.sampling.generate import generate

from .weights import MODELS, NEW_TOKENS, PROMPT, golden_model, weights_digest

MARGIN = 1e-3
OUT = Path(__file__).with_name("continuations.json")


class _Margins:
    """A TorchEngine that records each step's gap between its two likeliest logits."""

    def __init__(self, engine: TorchEngine) -> None:
        self.engine, self.gaps = engine, []

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def _seen(self, logits: np.ndarray) -> np.ndarray:
        top = np.sort(logits, axis=-1)[:, -2:]
        self.gaps.append(float((top[:, 1] - top[:, 0]).min()))
        return logits

    def start(self, tokens):
        return self._seen(self.engine.start(tokens))

    def step(self, tokens):
        return self._seen(self.engine.step(tokens))

    def recompute(self, tokens):
        return self._seen(self.engine.recompute(tokens))


def main() -> None:
    golden = {}
    greedy = SampleConfig(max_new_tokens=NEW_TOKENS, temperature=0)
    for name in MODELS:
        for seed in range(100):
            model = golden_model(name, seed)
            engine = _Margins(TorchEngine(model))
            with torch.no_grad():
                tokens = [int(t[0]) for t in generate(engine, PROMPT, greedy)]
            if min(engine.gaps) >= MARGIN:
                break
        else:
            raise SystemExit(f"no seed below 100 gives {name} margins of {MARGIN}")
        golden[name] = {"seed": seed, "weights": weights_digest(model), "prompt": PROMPT,
                        "tokens": tokens, "min_margin": round(min(engine.gaps), 6)}  # fmt: skip
    lines = [f" {json.dumps(name)}: {json.dumps(entry)}" for name, entry in golden.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
