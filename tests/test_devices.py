from __future__ import annotations

import pytest
import torch

from lmcli import devices
from lmcli.devices import ThreadTuner, resolve_placement
from lmcli.errors import ConfigError


@pytest.fixture
def two_candidates(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(devices, "thread_candidates", lambda: [1, 2])
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_tuner_keeps_the_faster_count_and_measures_again_when_slowed(two_candidates) -> None:
    cost = {1: 0.080, 2: 0.040}  # seconds per step at each thread count (a fake clock)
    tuner = ThreadTuner(lambda: cost[torch.get_num_threads()], slower=1.5, every=10.0)
    assert tuner.tune() == 2
    assert torch.get_num_threads() == 2
    assert tuner.timings == {1: 0.080, 2: 0.040}
    assert not tuner.observe(0.045, now=1.0)  # the typical step after tuning
    assert not tuner.observe(0.050, now=20.0)  # a little slower: nothing to do
    cost[2] = 0.200  # another process takes a core: two threads now spin against it
    assert not tuner.observe(0.200, now=5.0)  # too soon after the last measurement
    assert tuner.observe(0.200, now=30.0)
    assert tuner.threads == 1 and torch.get_num_threads() == 1


def test_placement_on_cpu() -> None:
    placement = resolve_placement("cpu", "auto")
    assert placement.device.type == "cpu" and placement.dtype == torch.float32
    assert not placement.autocast
    with pytest.raises(ConfigError, match="--dtype float16 is not supported on the CPU"):
        resolve_placement("cpu", "float16")
    with pytest.raises(ConfigError, match="unknown --dtype"):
        resolve_placement("cpu", "float8")
    with pytest.raises(ConfigError, match="unknown --device"):
        resolve_placement("tpu", "auto")


@pytest.mark.gpu
def test_cuda_placement_prefers_bf16() -> None:
    placement = resolve_placement("cuda", "auto")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert placement.dtype == expected
