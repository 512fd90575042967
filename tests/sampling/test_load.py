"""Loading for sampling: run directories and files, and every way a file can be wrong."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import serialization

from lmcli.checkpoints import save_checkpoint
from lmcli.config import ModelConfig
from lmcli.errors import InputError
from lmcli.models import build_model
from lmcli.sampling.load import encode_prompt, load, load_model
from lmcli.tokenizers import CharTokenizer, save_tokenizer

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CFG = ModelConfig(vocab_size=len(CHARS), layers=1, width=16, heads=2, context=8)
CPU = torch.device("cpu")


def write_run(directory: Path, cfg: ModelConfig = CFG, name: str = "best.pt", **extra) -> Path:
    """A run directory as `lmcli train` leaves it, as far as sampling reads it."""
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(CharTokenizer(CHARS), directory)
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"model_config": json.dumps(cfg.__dict__), "model": model.state_dict(), "step": 5}
    save_checkpoint(directory / name, {**state, **extra})
    return directory / name


LOADERS = {
    "torch": lambda path: load_model(path, CPU),  # torch.load(weights_only=True)
    "numpy": lambda path: load(path, "cpu"),  # lmcli.torchfile, no torch
}


@pytest.fixture(params=list(LOADERS))
def loader(request: pytest.FixtureRequest):
    return LOADERS[request.param]


def error_of(path: Path, loader=LOADERS["torch"]) -> str:
    with pytest.raises(InputError) as caught:
        loader(path)
    return caught.value.message


def test_a_run_directory_gives_its_best_checkpoint_else_its_last(tmp_path: Path) -> None:
    write_run(tmp_path, name="last.pt", step=9)
    loaded = load_model(tmp_path, CPU)
    assert loaded.checkpoint == tmp_path / "last.pt" and loaded.step == 9
    write_run(tmp_path)
    loaded = load_model(tmp_path, CPU)
    assert loaded.checkpoint == tmp_path / "best.pt" and loaded.step == 5
    assert loaded.config == CFG and not loaded.model.training
    assert isinstance(loaded.tokenizer, CharTokenizer) and loaded.tokenizer.chars == CHARS
    torch.manual_seed(0)
    assert torch.equal(loaded.model.state_dict()["wte.weight"], build_model(CFG).wte.weight)


def test_a_checkpoint_file_loads_with_the_tokenizer_beside_it(tmp_path: Path) -> None:
    path = write_run(tmp_path, replace(CFG, pos="learned"), name="step5.pt")
    assert load_model(path, CPU).config.pos == "learned"


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path: Path) -> None:
    """Tensors saved from CUDA carry the location "cuda:0"; torch.load without a map_location
    fails on a machine without CUDA. Tag every storage so, as a GPU run would have."""

    def tag(storage: object) -> str:
        return "cuda:0"

    def restore(storage: object, location: str) -> None:
        return None

    serialization.register_package(-100, tag, restore)
    try:
        path = write_run(tmp_path)
    finally:
        serialization._package_registry[:] = [
            entry for entry in serialization._package_registry if entry[1] is not tag
        ]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = load_model(path, CPU)
    assert all(p.device == CPU for p in loaded.model.parameters())


def test_a_missing_path_or_an_empty_directory(tmp_path: Path, loader) -> None:
    assert (
        error_of(tmp_path / "nope", loader)
        == f"no such run directory or checkpoint: {tmp_path}/nope"
    )
    assert "holds no checkpoint (best.pt or last.pt)" in error_of(tmp_path, loader)


def test_a_truncated_checkpoint(tmp_path: Path, loader) -> None:
    path = write_run(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "(truncated or foreign" in error_of(path, loader)


def test_foreign_files(tmp_path: Path, loader) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert "(truncated or foreign" in error_of(text, loader)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert "is not an lmcli checkpoint of schema 1" in error_of(other, loader)
    no_config = tmp_path / "no-config.pt"
    save_checkpoint(no_config, {"model": {"w": torch.zeros(2)}})
    assert "has no model config: not a checkpoint of an lmcli model" in error_of(no_config, loader)


class Exploit:
    """Unpickling this would create the file `marker` (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("format", ["torch.save", "raw pickle"])
def test_a_crafted_pickle_is_refused_without_running_its_code(
    tmp_path: Path, format: str, loader
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "best.pt"
    payload = {"schema_version": 1, "model_config": "{}", "model": Exploit(marker)}
    if format == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    message = error_of(path, loader)
    assert "truncated or foreign" in message or "refused: not a plain torch.save file" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_config": "{not json"}, "its model config is not valid JSON"),
        ({"model_config": json.dumps({"layers": 2, "qk_norm": True})}, "unknown model config"),
        ({"model_config": json.dumps({**CFG.__dict__, "heads": 3})}, "--heads must divide"),
        ({"model_config": json.dumps({**CFG.__dict__, "layers": "two"})}, "config is invalid"),
        ({"model_config": json.dumps({**CFG.__dict__, "width": 32})}, "weights do not fit"),
        ({"model": torch.zeros(3)}, "holds no model weights"),
    ],
)
def test_a_checkpoint_with_a_broken_config_or_weights(
    tmp_path: Path, change: dict, message: str, loader
) -> None:
    assert message in error_of(write_run(tmp_path, **change), loader)


def test_a_tokenizer_that_does_not_fit_the_model(tmp_path: Path, loader) -> None:
    path = write_run(tmp_path)
    save_tokenizer(CharTokenizer("abc"), tmp_path)
    assert "has 3 tokens but the model 61" in error_of(path, loader)
    (tmp_path / "tokenizer.json").unlink()
    assert "no tokenizer in" in error_of(path, loader)


def test_a_prompt_with_characters_the_model_never_saw() -> None:
    tokenizer = CharTokenizer(CHARS)
    with pytest.raises(InputError) as caught:
        encode_prompt(tokenizer, "Café — ok")
    assert caught.value.message == "the prompt has characters not in the char vocabulary: 'é', '—'"
    assert caught.value.hint is not None and "--drop-unknown" in caught.value.hint
    assert tokenizer.decode(encode_prompt(tokenizer, "Café — ok", drop_unknown=True)) == "Caf  ok"
