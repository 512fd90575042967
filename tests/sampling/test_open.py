"""Opening a model for sampling: run directories and weights files, lmcli 0.1's checkpoints, and
every way a file can be wrong (each an InputError in one line, never a crash in C)."""

from __future__ import annotations

import json
import os
import pickle
import struct
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import serialization

from lmcli.checkpoints import load_model, save_checkpoint
from lmcli.config import ModelConfig
from lmcli.errors import InputError
from lmcli.models import build_model
from lmcli.sampling.open import open_model
from lmcli.sampling.prompt import encode_prompt
from lmcli.tokenizers import CharTokenizer, save_tokenizer
from lmcli.weights import save_weights

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CFG = ModelConfig(vocab_size=len(CHARS), layers=1, width=16, heads=2, context=8)
CPU = torch.device("cpu")


def write_run(directory: Path, cfg: ModelConfig = CFG, name: str = "best.safetensors",
              step: int = 5) -> Path:  # fmt: skip
    """A run directory as `lmcli train` leaves it, as far as sampling reads it."""
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(CharTokenizer(CHARS), directory)
    torch.manual_seed(0)
    save_weights(directory / name, build_model(cfg).state_dict(), cfg, step=step)
    return directory / name


def write_legacy(directory: Path, cfg: ModelConfig = CFG, name: str = "best.pt", **extra) -> Path:
    """A checkpoint as lmcli 0.1 wrote it: torch.save of the config, weights and step."""
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(CharTokenizer(CHARS), directory)
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"model_config": json.dumps(cfg.__dict__), "model": model.state_dict(), "step": 5}
    save_checkpoint(directory / name, {**state, **extra})
    return directory / name


LOADERS = {
    "C": lambda path: open_model(path, "cpu"),  # no torch
    "torch": lambda path: open_model(path, "cpu", engine="torch"),
    "training side": lambda path: load_model(path, CPU),  # compare-rnn, bench
}


@pytest.fixture(params=list(LOADERS))
def loader(request: pytest.FixtureRequest):
    return LOADERS[request.param]


def error_of(path: Path, loader=LOADERS["C"]) -> str:
    with pytest.raises(InputError) as caught:
        loader(path)
    return caught.value.message


def test_a_run_directory_gives_its_best_weights_else_its_last(tmp_path: Path) -> None:
    write_run(tmp_path, name="last.safetensors", step=9)
    opened = open_model(tmp_path)
    assert opened.weights == tmp_path / "last.safetensors" and opened.step == 9
    write_run(tmp_path)
    opened = open_model(tmp_path)
    assert opened.weights == tmp_path / "best.safetensors" and opened.step == 5
    assert opened.config == CFG and opened.engine_name == "C" and opened.note is None
    assert isinstance(opened.tokenizer, CharTokenizer) and opened.tokenizer.chars == CHARS
    model, weights = load_model(tmp_path, CPU)
    torch.manual_seed(0)
    assert torch.equal(model.state_dict()["wte.weight"], build_model(CFG).wte.weight)
    assert not model.training and weights.step == 5


def test_a_weights_file_opens_with_the_tokenizer_beside_it(tmp_path: Path, loader) -> None:
    path = write_run(tmp_path, replace(CFG, pos="learned"), name="step5.safetensors")
    assert loader(path) is not None
    assert open_model(path).config.pos == "learned"


def test_an_lmcli_0_1_checkpoint_is_converted_once(tmp_path: Path) -> None:
    legacy = write_legacy(tmp_path)
    first = open_model(tmp_path)
    assert first.weights == tmp_path / "best.safetensors"
    assert first.note is not None and "lmcli 0.1 checkpoint" in first.note
    assert "torch.load(weights_only=True)" in first.note
    again = open_model(tmp_path)
    assert again.weights == first.weights and again.note is None  # read once
    assert again.step == 5
    # A read-only folder: converted into lmcli's cache instead.
    (tmp_path / "best.safetensors").unlink()
    os.chmod(tmp_path, 0o555)
    try:
        if os.access(tmp_path, os.W_OK):  # root writes anyway: nothing to test here
            return
        opened = open_model(legacy)
        assert opened.weights.parent.name == "converted" and opened.note is not None
    finally:
        os.chmod(tmp_path, 0o755)


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path: Path) -> None:
    """Tensors saved from CUDA carry the location "cuda:0"; torch.load without a map_location
    fails on a machine without CUDA. Tag every storage so, as a GPU run of lmcli 0.1 would."""

    def tag(storage: object) -> str:
        return "cuda:0"

    def restore(storage: object, location: str) -> None:
        return None

    serialization.register_package(-100, tag, restore)
    try:
        path = write_legacy(tmp_path)
    finally:
        serialization._package_registry[:] = [
            entry for entry in serialization._package_registry if entry[1] is not tag
        ]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    model, _ = load_model(path, CPU)
    assert all(p.device == CPU for p in model.parameters())


def test_a_missing_path_or_an_empty_directory(tmp_path: Path, loader) -> None:
    assert (
        error_of(tmp_path / "nope", loader)
        == f"no such run directory or weights file: {tmp_path}/nope"
    )
    assert "holds no weights (best.safetensors or last.safetensors)" in error_of(tmp_path, loader)


def test_a_truncated_weights_file(tmp_path: Path, loader) -> None:
    path = write_run(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "is not a readable safetensors file" in error_of(path, loader)


def test_a_truncated_or_foreign_legacy_checkpoint(tmp_path: Path, loader) -> None:
    path = write_legacy(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "(truncated or foreign" in error_of(path, loader)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert "(truncated or foreign" in error_of(text, loader)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert "is not an lmcli checkpoint of schema 1" in error_of(other, loader)
    no_config = tmp_path / "no-config.pt"
    save_checkpoint(no_config, {"model": {"w": torch.zeros(2)}})
    assert "has no model config: not a checkpoint of an lmcli model" in error_of(no_config, loader)


def _rewrite(path: Path, edit) -> None:
    """The file with its JSON header changed by `edit(header)` (its data unchanged)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + length :])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h["wte.weight"].update(data_offsets=[0, 10**9]), "not a readable safetensors"),
        (lambda h: h["wte.weight"].update(dtype="F16"), "not a readable safetensors"),
        (lambda h: h["wte.weight"].update(shape=[16, 61]), "weights do not fit its model config"),
        (lambda h: h["__metadata__"].pop("lmcli_config"), "holds no lmcli model config"),
        (lambda h: h["__metadata__"].update(lmcli_sha256="0" * 64), "is damaged"),
        (lambda h: h["__metadata__"].update(lmcli_config="{not json"), "not valid JSON"),
    ],
)
def test_a_crafted_weights_file_is_refused(tmp_path: Path, loader, edit, message: str) -> None:
    path = write_run(tmp_path)
    _rewrite(path, edit)
    assert message in error_of(path, loader)


def test_a_header_longer_than_the_file(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw) * 2) + raw[8:])
    assert "is not a readable safetensors file" in error_of(path)


def test_damaged_tensor_bytes_are_refused(tmp_path: Path, loader) -> None:
    path = write_run(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert "is damaged: its tensors do not match the sha256 it recorded" in error_of(path, loader)


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
def test_a_legacy_checkpoint_with_a_broken_config_or_weights(
    tmp_path: Path, change: dict, message: str, loader
) -> None:
    assert message in error_of(write_legacy(tmp_path, **change), loader)


def test_a_tokenizer_that_does_not_fit_the_model(tmp_path: Path) -> None:
    path = write_run(tmp_path)
    save_tokenizer(CharTokenizer("abc"), tmp_path)
    assert "has 3 tokens but the model 61" in error_of(path)
    (tmp_path / "tokenizer.json").unlink()
    assert "no tokenizer in" in error_of(path)


def test_a_prompt_with_characters_the_model_never_saw() -> None:
    tokenizer = CharTokenizer(CHARS)
    with pytest.raises(InputError) as caught:
        encode_prompt(tokenizer, "Café — ok")
    assert caught.value.message == "the prompt has characters not in the char vocabulary: 'é', '—'"
    assert caught.value.hint is not None and "--drop-unknown" in caught.value.hint
    assert tokenizer.decode(encode_prompt(tokenizer, "Café — ok", drop_unknown=True)) == "Caf  ok"
