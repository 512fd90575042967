"""Reading torch.save files without torch: equal to torch.load, and safe against crafted files."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lmcli.checkpoints import SCHEMA_VERSION, save_checkpoint
from lmcli.config import ModelConfig
from lmcli.errors import InputError
from lmcli.models import build_model
from lmcli.torchfile import read_torch_file

CFG = ModelConfig(vocab_size=40, layers=2, width=32, heads=2, context=16)


def assert_same(ours: Any, theirs: Any) -> None:
    """`ours` (read_torch_file) is `theirs` (torch.load) with numpy arrays for tensors."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray)
        want = theirs.detach()
        want = want.float().numpy() if want.dtype == torch.bfloat16 else want.numpy()
        assert ours.dtype == want.dtype and ours.shape == want.shape
        assert ours.flags.c_contiguous and ours.flags.writeable
        np.testing.assert_array_equal(ours, want, strict=True)
        return
    assert type(ours) is type(theirs)
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        for key in theirs:
            assert_same(ours[key], theirs[key])
    elif isinstance(theirs, list | tuple):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same(a, b)
    else:
        assert ours == theirs


def round_trip(obj: Any, path: Path) -> Any:
    torch.save(obj, path)
    ours = read_torch_file(path)
    assert_same(ours, torch.load(path, weights_only=True))
    return ours


def error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        read_torch_file(path)
    assert caught.value.message.startswith(f"{path}: ")
    assert caught.value.hint or not path.is_file()
    assert "Traceback" not in caught.value.message and "\n" not in caught.value.message
    return caught.value


def test_a_transformer_state_dict_keeps_its_tied_weights_shared(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build_model(CFG).state_dict()
    assert state["head.weight"].data_ptr() == state["wte.weight"].data_ptr()
    ours = round_trip(state, tmp_path / "model.pt")
    assert np.shares_memory(ours["head.weight"], ours["wte.weight"])


def test_every_dtype(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tensors = {
        str(dtype): (torch.randn(5) * 100).to(dtype)
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    }
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        info = torch.iinfo(dtype)
        values = [info.min, -1 if info.min else 0, 7, info.max]
        tensors[str(dtype)] = torch.tensor(values, dtype=dtype)
    tensors["bool"] = torch.tensor([True, False, True])
    # bfloat16's edges: signed zero, infinity, NaN, its largest value and a subnormal.
    special = [-0.0, float("inf"), float("nan"), 3.0e38, 1e-40, -1.5]
    tensors["bf16 special"] = torch.tensor(special, dtype=torch.bfloat16)
    tensors["f16 special"] = torch.tensor(special, dtype=torch.float16)
    ours = round_trip(tensors, tmp_path / "dtypes.pt")
    assert ours["torch.bfloat16"].dtype == np.float32


def test_views_honour_offset_size_and_stride(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"base": base, "t": base.t(), "slice": base[1:, 2:5], "step": base[::2, ::3]}
    views["row"], views["column"], views["element"] = base[2], base[:, 3], base[3, 4]
    ours = round_trip(views, tmp_path / "views.pt")
    # A contiguous view shares its storage with the base, as in torch; the others are copies.
    assert np.shares_memory(ours["row"], ours["base"])
    assert not np.shares_memory(ours["t"], ours["base"])


def test_zero_dimensional_empty_and_parameter_tensors(tmp_path: Path) -> None:
    tensors = {
        "scalar": torch.tensor(3.5),
        "int scalar": torch.tensor(-7),
        "empty": torch.zeros(0),
        "empty 3d": torch.zeros(3, 0, 2, dtype=torch.int16),
        "empty bf16": torch.zeros(0, 4, dtype=torch.bfloat16),
        "parameter": nn.Parameter(torch.ones(2, 3)),
        "needs grad": torch.ones(2, requires_grad=True),
    }
    ours = round_trip(tensors, tmp_path / "small.pt")
    assert ours["scalar"].shape == () and ours["scalar"] == 3.5


def test_nested_python_values(tmp_path: Path) -> None:
    obj = {
        "list": [1, -2.5, "ünïcode", None, True, False, (3, ("x", [torch.ones(2)]))],
        "ints": {1: 2**70, -3: -(2**40)},
        "empty": ([], (), {}, ""),
        "ordered": OrderedDict(b=1, a=torch.arange(3)),
    }
    round_trip(obj, tmp_path / "nested.pt")


def test_a_checkpoint_from_save_checkpoint(tmp_path: Path) -> None:
    model = build_model(CFG)
    path = tmp_path / "best.pt"
    config = json.dumps(CFG.__dict__)
    save_checkpoint(path, {"model_config": config, "model": model.state_dict(), "step": 5})
    state = read_torch_file(path)
    assert state["schema_version"] == SCHEMA_VERSION and state["step"] == 5
    assert state["model_config"] == config
    assert_same(state["model"], model.state_dict())


class RunsCode:
    def __init__(self, call: Any, *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.call, self.args


def write_archive(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A zip laid out as torch.save lays it out, with any pickle and records in it."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("how", ["os.system", "eval", "exec in a list", "open"])
def test_a_crafted_pickle_runs_nothing(tmp_path: Path, how: str, protocol: int) -> None:
    marker = tmp_path / "ran"
    payload = {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "eval": RunsCode(eval, f"open({str(marker)!r}, 'w')"),
        "exec in a list": [1, RunsCode(exec, f"open({str(marker)!r}, 'w')")],
        "open": RunsCode(open, str(marker), "w"),
    }[how]
    path = write_archive(tmp_path / "evil.pt", pickle.dumps(payload, protocol=protocol))
    error = error_of(path)
    assert "refused" in error.message
    assert not marker.exists()


def test_a_crafted_pickle_inside_a_real_checkpoint_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"w": torch.ones(3), "x": RunsCode(os.system, f"touch {marker}")}, tmp_path / "x.pt")
    assert "system" in error_of(tmp_path / "x.pt").message
    assert not marker.exists()


class Record:
    """Pickled as a persistent id, as torch.save pickles a storage."""

    def __init__(self, *pid: Any) -> None:
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, Record) else None


def tensor_pickle(size: Any, stride: Any, offset: Any = 0, numel: Any = 6) -> bytes:
    """A tensor record of our choosing on a FloatStorage of `numel` elements under key "0"."""
    storage = Record("storage", torch.FloatStorage, "0", "cpu", numel)
    args = (storage, offset, size, stride, False, OrderedDict())
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(RunsCode(torch._utils._rebuild_tensor_v2, *args))
    return buffer.getvalue()


def test_a_hand_made_tensor_record_reads(tmp_path: Path) -> None:
    data = np.arange(6, dtype="<f4").tobytes()
    path = write_archive(tmp_path / "ok.pt", tensor_pickle((2, 2), (1, 2), 1), {"data/0": data})
    np.testing.assert_array_equal(read_torch_file(path), [[1, 3], [2, 4]])


@pytest.mark.parametrize(
    ("size", "stride", "offset", "numel"),
    [
        ((7,), (1,), 0, 6),  # past the end of the storage
        ((2, 2), (1, 5), 0, 6),  # the last row starts outside
        ((3,), (1,), 4, 6),  # the offset pushes it out
        ((3,), (-1,), 2, 6),  # negative stride
        ((2,), (1,), -1, 6),  # negative offset
        ((1000, 1000), (0, 0), 0, 6),  # an expand()ed view would be copied a million times
        ((2, 3), (3,), 0, 6),  # size and stride of different lengths
        ((2.0,), (1,), 0, 6),  # not integers
        ((6,), (1,), 0, 1000),  # the record claims more elements than the file holds
        ((6,), (1,), 0, -1),  # negative element count
    ],
)
def test_a_tensor_record_cannot_reach_outside_its_storage(
    tmp_path: Path, size: Any, stride: Any, offset: Any, numel: Any
) -> None:
    data = np.arange(6, dtype="<f4").tobytes()
    pkl = tensor_pickle(size, stride, offset, numel)
    error_of(write_archive(tmp_path / "bad.pt", pkl, {"data/0": data}))


def test_a_big_endian_file_is_read_in_native_order(tmp_path: Path) -> None:
    data = np.array([1.5, -2.0, 3.0, 0.0, 5.0, 6.25], dtype=">f4").tobytes()
    records = {"data/0": data, "byteorder": b"big"}
    path = write_archive(tmp_path / "be.pt", tensor_pickle((2, 3), (3, 1)), records)
    ours = read_torch_file(path)
    assert ours.dtype == np.dtype("=f4")
    np.testing.assert_array_equal(ours, [[1.5, -2.0, 3.0], [0.0, 5.0, 6.25]])


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_a_truncated_file(tmp_path: Path, fraction: float) -> None:
    torch.save(build_model(CFG).state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * fraction)])
    error_of(tmp_path / "cut.pt")


def test_a_flipped_byte_in_a_storage_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    data = bytearray(path.read_bytes())
    data[data.index(b"byteorder") + 2000] ^= 0xFF  # inside the 4000 bytes of zeros
    path.write_bytes(bytes(data))
    assert "CRC" in error_of(path).message


def test_random_bytes_text_and_other_non_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "text.pt").write_text("First Citizen:\nBefore we proceed any further, hear me.\n")
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    write_archive(tmp_path / "no-pickle.pt", b"", {"data/0": b"1234"})
    (tmp_path / "not-a-file").mkdir()
    for name in ["random.pt", "text.pt", "legacy.pt", "no-pickle.pt", "not-a-file", "missing"]:
        error_of(tmp_path / name)


def test_a_missing_storage_record(tmp_path: Path) -> None:
    error_of(write_archive(tmp_path / "x.pt", tensor_pickle((6,), (1,))))


def test_a_compressed_member_is_refused(tmp_path: Path) -> None:
    """torch never compresses; a deflated member could inflate to any size."""
    torch.save({"w": torch.zeros(100)}, tmp_path / "x.pt")
    with (
        zipfile.ZipFile(tmp_path / "x.pt") as source,
        zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    assert "compressed" in error_of(tmp_path / "deflated.pt").message
