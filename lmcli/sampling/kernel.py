"""The transformer in C (sampling/decode.c): compiled on first use, loaded through ctypes.

A transformer's one-position step in numpy is ~200 small array operations at ~1.5 us of
dispatch each; decode.c runs a whole forward in one call: ~4x faster for a step of the models
lmcli trains, and faster than numpy's BLAS for a prompt or a refill too. The machine's C compiler
($CC, else cc, gcc or clang) builds it into a cache folder ($LMCLI_CACHE_DIR, else
$XDG_CACHE_HOME/lmcli, else ~/.cache/lmcli) under a name that hashes the source, the compiler,
its flags and the CPU: each machine compiles once (~1 s), and a changed source never runs
stale. Without a compiler, or if compiling fails, `load_kernel` says why and the numpy engine
runs the network itself: the same tokens, slower.

decode.c reads weights through raw pointers, so `KernelForward` checks that every array has
exactly the shape the config implies before it passes one (a crafted checkpoint must not read
out of bounds) and keeps the arrays alive for as long as the kernel can see them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmcli.errors import ConfigError

if TYPE_CHECKING:
    from lmcli.sampling.numpy_engine import NumpyKVCache, NumpyTransformer

SOURCE = "decode.c"
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-fno-math-errno")
PORTABLE_FLAGS = ("-O2", "-shared", "-fPIC")  # when the compiler has no -march=native
NORMS = {"layernorm": 0, "rmsnorm": 1}
MLPS = {"gelu": 0, "relu2": 1, "swiglu": 2}


def _fields(kind: Any, names: str) -> list[tuple[str, Any]]:
    return [(name, kind) for name in names.split()]


class _Layer(ctypes.Structure):  # as decode.c's Layer
    _fields_ = [
        *_fields(ctypes.c_void_p, "qkv_w qkv_b proj_w proj_b fc_w fc_b out_w out_b"),
        *_fields(ctypes.c_void_p, "norm1_w norm1_b norm2_w norm2_b"),
        ("window", ctypes.c_int64),
    ]


class _Model(ctypes.Structure):  # as decode.c's Model
    _fields_ = [
        *_fields(ctypes.c_int64, "layers width heads kv_heads head_dim context vocab"),
        *_fields(ctypes.c_int64, "qkv_cols fc_cols hidden norm pre_norm mlp"),
        *_fields(ctypes.c_void_p, "wte positions rope_cos rope_sin head_w head_b"),
        ("layer", ctypes.POINTER(_Layer)),
    ]


@dataclass(frozen=True)
class Kernel:
    """The loaded library, or why there is none."""

    library: ctypes.CDLL | None
    reason: str  # the compiled file, or why it could not be had


def cache_dir() -> Path:
    if os.environ.get("LMCLI_CACHE_DIR"):
        return Path(os.environ["LMCLI_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmcli"


def _cpu() -> str:
    """What -march=native compiles for: a binary built on one CPU may not run on another."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep))) or platform.machine()


def _find_compiler() -> tuple[str | None, str]:
    """$CC, else the first of cc, gcc and clang on the PATH; or None and why."""
    chosen = os.environ.get("CC")
    if chosen:
        if shutil.which(chosen) is None:
            return None, f"$CC={chosen} is not a program on this machine"
        return chosen, ""
    found = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    return found, "" if found else "no C compiler found (cc, gcc or clang; or set $CC)"


def _intact(target: Path) -> bool:
    """The compiled file is the one written beside its sha256: loading a damaged shared library
    can crash the process (a truncated one with SIGBUS), so a mismatch means: build it again."""
    digest = target.with_name(target.name + ".sha256")
    try:
        return digest.read_text(encoding="ascii").strip() == _sha256(target)
    except OSError:
        return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_kernel() -> Kernel:
    """Compile (once per machine) and load decode.c; Kernel(None, why) when it cannot be."""
    compiler, why = _find_compiler()
    if compiler is None:
        return Kernel(None, why)
    source = resources.files("lmcli.sampling").joinpath(SOURCE).read_bytes()
    reason = ""
    for flags in (FLAGS, PORTABLE_FLAGS):
        key = b"\0".join([source, compiler.encode(), " ".join(flags).encode(), _cpu().encode()])
        target = cache_dir() / f"decode-{hashlib.sha256(key).hexdigest()[:16]}.so"
        for _ in range(2):  # a cached file that will not load (damaged) is rebuilt once
            if target.is_file() and not _intact(target):
                target.unlink(missing_ok=True)
            if not target.is_file():
                error = _compile(compiler, flags, source, target)
                if error is not None:
                    reason = error
                    break
            try:
                library = ctypes.CDLL(str(target))
            except OSError as exc:
                target.unlink(missing_ok=True)
                reason = f"could not load {target}: {exc}"
                continue
            _declare(library)
            return Kernel(library, str(target))
    return Kernel(None, reason)


def _compile(compiler: str, flags: tuple[str, ...], source: bytes, target: Path) -> str | None:
    """Compile into target atomically (another process may be compiling too); None when done."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, out = Path(tmp) / SOURCE, Path(tmp) / target.name
            src.write_bytes(source)
            done = subprocess.run(
                [compiler, *flags, "-o", str(out), str(src), "-lm"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["no message"])[0]
                return f"{compiler} failed: {first[:200]}"
            digest = Path(tmp) / "digest"
            digest.write_text(_sha256(out) + "\n", encoding="ascii")
            os.replace(out, target)
            os.replace(digest, target.with_name(target.name + ".sha256"))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not compile with {compiler}: {exc}"
    return None


def _declare(library: ctypes.CDLL) -> None:
    library.lm_forward.argtypes = [ctypes.POINTER(_Model), ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
    library.lm_forward.restype = ctypes.c_int64
    library.lm_scratch_floats.argtypes = [ctypes.POINTER(_Model), ctypes.c_int64]
    library.lm_scratch_floats.restype = ctypes.c_int64


class KernelForward:
    """NumpyTransformer.forward run by decode.c, on the same weights and the same cache."""

    def __init__(self, library: ctypes.CDLL, net: NumpyTransformer) -> None:
        self.library, self.net = library, net
        cfg = net.cfg
        C, K, D, ctx, V = cfg.width, net.kv_heads, net.head_dim, cfg.context, cfg.vocab_size
        qkv_cols = net.layers[0].qkv.weight_t.shape[1]
        fc_cols = net.layers[0].fc.weight_t.shape[1]
        hidden = fc_cols // 2 if cfg.mlp == "swiglu" else fc_cols
        self.keep: list[Any] = []  # every array a pointer was taken from

        def ptr(array: Any, shape: tuple[int, ...] | None) -> int | None:
            if array is None:
                return None
            if shape is not None and (array.shape != shape or array.dtype != np.float32
                                      or not array.flags.c_contiguous):  # fmt: skip
                raise ValueError(f"an array of shape {array.shape} where {shape} was expected")
            self.keep.append(array)
            return int(array.ctypes.data)

        pre = cfg.norm_placement == "pre"
        layers = (_Layer * cfg.layers)()
        for layer, block, window in zip(layers, net.layers, net.windows, strict=True):
            layer.qkv_w = ptr(block.qkv.weight_t, (C, qkv_cols))
            layer.qkv_b = ptr(block.qkv.bias, (qkv_cols,))
            layer.proj_w = ptr(block.proj.weight_t, (C, C))
            layer.proj_b = ptr(block.proj.bias, (C,))
            layer.fc_w = ptr(block.fc.weight_t, (C, fc_cols))
            layer.fc_b = ptr(block.fc.bias, (fc_cols,))
            layer.out_w = ptr(block.out.weight_t, (hidden, C))
            layer.out_b = ptr(block.out.bias, (C,))
            if not pre:
                assert block.norm1 is not None and block.norm2 is not None
                layer.norm1_w = ptr(block.norm1.weight, (C,))
                layer.norm1_b = ptr(block.norm1.bias, (C,))
                layer.norm2_w = ptr(block.norm2.weight, (C,))
                layer.norm2_b = ptr(block.norm2.bias, (C,))
            layer.window = window or 0
        self.keep.append(layers)
        rope = net.rope or (None, None)
        qk = C + K * D
        self.model = _Model(
            layers=cfg.layers, width=C, heads=net.heads, kv_heads=K, head_dim=D, context=ctx,
            vocab=V, qkv_cols=qkv_cols, fc_cols=fc_cols, hidden=hidden, norm=NORMS[cfg.norm],
            pre_norm=int(pre), mlp=MLPS[cfg.mlp],
            wte=ptr(net.wte, (V, C)), positions=ptr(net.positions, (ctx, C)),
            rope_cos=ptr(rope[0], (ctx, qk)), rope_sin=ptr(rope[1], (ctx, qk)),
            head_w=ptr(net.head.weight_t, (C, V)), head_b=ptr(net.head.bias, (V,)),
            layer=layers,
        )  # fmt: skip
        self.model_ref = ctypes.byref(self.model)
        self.scratch = np.empty(0, np.float32)
        self.scratch_floats: dict[int, int] = {}  # per number of rows
        self.cache: NumpyKVCache | None = None
        self.pointers: tuple[Any, Any] = (None, None)

    def __call__(self, tokens: Any, cache: NumpyKVCache) -> Any:
        """Logits (B, V) of the last of the positions tokens (B, T) add to the cache."""
        net, (B, T) = self.net, tokens.shape
        if cache.pos + T > net.cfg.context:
            raise ConfigError(f"{cache.pos + T} positions exceed --context {net.cfg.context}")
        if cache is not self.cache:  # a new cache (a prompt or a refill): point at its arrays
            k_shape = (B, net.kv_heads, net.head_dim, net.cfg.context)
            v_shape = (B, net.kv_heads, net.cfg.context, net.head_dim)
            if any(k.shape != k_shape for k in cache.k) or any(v.shape != v_shape for v in cache.v):
                raise ValueError("the cache does not fit the model")
            arrays = ctypes.c_void_p * len(cache.k)
            self.pointers = (arrays(*[k.ctypes.data for k in cache.k]),
                             arrays(*[v.ctypes.data for v in cache.v]))  # fmt: skip
            self.cache = cache
        floats = self.scratch_floats.get(B * T)
        if floats is None:
            floats = self.scratch_floats[B * T] = self.library.lm_scratch_floats(
                self.model_ref, B * T
            )
        if self.scratch.size < floats:
            self.scratch = np.empty(floats, np.float32)
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        logits = np.empty((B, net.cfg.vocab_size), np.float32)
        status = self.library.lm_forward(self.model_ref, self.pointers[0], self.pointers[1],
                                         tokens.ctypes.data, B, T, cache.pos,
                                         self.scratch.ctypes.data, logits.ctypes.data)  # fmt: skip
        if status != 0:
            raise IndexError("a token id outside the vocabulary")
        cache.pos += T
        return logits
