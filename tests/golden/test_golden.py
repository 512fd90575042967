"""The golden continuations (continuations.json, written by make_golden.py from the torch
model): every engine, fed the same fixed weights, must reproduce each one exactly, as
llama2.c's run.c and its PyTorch reference are held to one greedy continuation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcli.config import SampleConfig
from lmcli.sampling.engines import open_engine
from lmcli.sampling.engines.torch_engine import TorchEngine
from lmcli.sampling.generate import generate
from lmcli.weights import read_weights

from .weights import MODELS, NEW_TOKENS, golden_model, save, weights_digest

GOLDEN = json.loads(Path(__file__).with_name("continuations.json").read_text())
GREEDY = SampleConfig(max_new_tokens=NEW_TOKENS, temperature=0)


def test_every_golden_model_has_a_continuation() -> None:
    assert set(GOLDEN) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_engine_reproduces_the_golden_continuation(
    name: str, tmp_path: Path, kernel_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    golden = GOLDEN[name]
    model = golden_model(name, golden["seed"])
    assert weights_digest(model) == golden["weights"], "the weights changed: run make_golden"
    weights = read_weights(save(model, tmp_path / "golden.safetensors"))
    monkeypatch.setenv("LMCLI_CACHE_DIR", str(kernel_cache))
    cpu_engine, engine_name = open_engine(weights, "cpu")
    assert engine_name == ("numpy" if MODELS[name].model == "lstm" else "C")
    engines = {"torch": TorchEngine(model), engine_name: cpu_engine}
    for label, engine in engines.items():
        with torch.no_grad():
            tokens = [int(t[0]) for t in generate(engine, golden["prompt"], GREEDY)]
        assert tokens == golden["tokens"], label
