"""What runs a model for generation: two engines for a transformer, one for an LSTM/GRU.

- torch (lmcli/models, through torch_engine.py): the reference, on every device, for every knob;
  on the CPU it is the fallback when decode.c cannot be built, and the reason is shown.
- C (decode.c through c_transformer.py): a transformer on the CPU, the default there. It covers
  every knob the torch model has; one it did not know would be refused by decode.c at open, and
  torch would run instead with that reason shown.
- numpy (recurrent.py): an LSTM/GRU on the CPU.
The C and numpy engines never import torch.
"""

from __future__ import annotations

from lmcli.sampling.engines.build import build
from lmcli.sampling.engines.c_transformer import CTransformer, EngineUnavailable
from lmcli.sampling.engines.recurrent import RecurrentEngine
from lmcli.sampling.generate import Engine
from lmcli.weights import Weights

ENGINES = ("auto", "c", "numpy", "torch")


def open_engine(weights: Weights, device: str = "cpu", engine: str = "auto") -> tuple[Engine, str]:
    """The engine for `weights` on `device` ("cpu", "auto", "cuda", ...), and its name as
    `lmcli sample` shows it. engine "auto" chooses as above; "c", "numpy" or "torch" forces one
    (tests compare them)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    recurrent = weights.config.model != "transformer"
    on_cpu = device == "cpu" or _resolves_to_cpu(device)
    if engine == "numpy" or (engine == "auto" and on_cpu and recurrent):
        return RecurrentEngine(weights), "numpy"
    if engine in ("auto", "c") and on_cpu and not recurrent:
        library = build()
        reason = library.reason
        if library.handle is not None:
            try:
                return CTransformer(library.handle, weights), "C"
            except EngineUnavailable as exc:
                reason = str(exc)
        if engine == "c":
            raise EngineUnavailable(reason)
        return _torch(weights, "cpu"), f"torch; no C engine: {reason}"
    return _torch(weights, device), "torch"


def _resolves_to_cpu(device: str) -> bool:
    from lmcli.devices import resolve_device  # imports torch: only for names other than cpu

    return resolve_device(device).type == "cpu"


def _torch(weights: Weights, device: str) -> Engine:
    from lmcli.checkpoints import model_from_weights
    from lmcli.devices import resolve_device
    from lmcli.sampling.engines.torch_engine import TorchEngine

    resolved = resolve_device(device)
    return TorchEngine(model_from_weights(weights).to(resolved))
