from __future__ import annotations

from pathlib import Path

import pytest

from lmcli.errors import ConfigError
from lmcli.models import build_model
from lmcli.presets import PRESETS, as_record, resolve


def test_preset_shapes() -> None:
    tiny, _, _ = resolve({"preset": "tiny"}, vocab_size=65)
    assert 0.5e6 < build_model(tiny).num_params() < 1.5e6  # about 1M on the CPU
    default, train, _ = resolve({}, vocab_size=65)
    assert (default.layers, default.width, train.max_time) == (3, 96, 180.0)
    small, _, _ = resolve({"preset": "small"}, vocab_size=65)
    assert (small.layers, small.width, small.heads, small.context) == (6, 384, 6, 256)
    gpt2, _, _ = resolve({"preset": "gpt2-small"}, vocab_size=50257)
    assert (gpt2.layers, gpt2.width, gpt2.heads, gpt2.context) == (12, 768, 12, 1024)


def test_flags_beat_file_beat_preset(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('preset = "small"\nlayers = 3\nwidth = 96\nmax-time = "2m"\n')
    model, train, merged = resolve({"width": 48, "heads": 4}, config_file=path)
    assert (model.layers, model.width, model.heads, model.context) == (3, 48, 4, 256)
    assert train.max_time == 120.0 and train.max_steps is None  # a time budget replaces steps
    assert merged["preset"] == "small"
    assert as_record(model, train)["kv-heads"] is None


def test_every_preset_is_valid() -> None:
    for name in PRESETS:
        resolve({"preset": name}, vocab_size=100)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('layers = "four"', "--layers must be an integer"),
        ("kv_heads = 2", "unknown key 'kv_heads'"),
        ("[x", "--config"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        resolve({}, config_file=path)
