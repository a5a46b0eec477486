"""Where computation runs and in which precision: one place for CPU/CUDA choices.

The precision rule (:func:`decide_precision`), with ``amp`` on:

* CUDA: bfloat16 where the GPU supports it natively (Ampere and newer), else float32. float16 is
  never chosen: its 65,504 ceiling is too low for sums over a window's voxels, and the networks are
  not shown range-safe in it on every scan.
* CPU: bfloat16 only where a bfloat16 conv3d is measured :data:`BF16_MIN_SPEEDUP` faster than
  float32; the measurement is made once per machine and kept in :func:`precision_cache_file`, so the
  choice (and with it the output's last bits) is the same in every run on that machine.
  ``VOLSR_CPU_BF16=0`` / ``1`` overrides it (e.g. for outputs identical across machines).

:func:`decide_precision` is called once where a run starts (a :class:`volsr.api.SuperResolver`, a
training run, :func:`volsr.inference.sliding_window.super_resolve` when it is not given one); the
dtype it returns travels down to :func:`autocast` and the window budget, so every part of the run
uses the same precision, and :func:`precision_name` names it in the outputs' JSON sidecars.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "resolve_device",
    "cpu_has_native_bf16",
    "cpu_prefers_bf16",
    "measured_cpu_prefers_bf16",
    "bf16_wins",
    "decide_precision",
    "autocast",
    "precision_name",
    "cuda_supports_bf16",
    "precision_cache_file",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 dot products (AVX512-BF16 or AMX); elsewhere bf16 is emulated
    and never faster. Necessary for a fast bf16 conv3d, not sufficient: see :func:`cpu_prefers_bf16`."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: bfloat16 must be at least this much faster to be chosen: near ties go to float32, so the choice
#: (and with it the output's last bits) does not flip from run to run with the machine's load
BF16_MIN_SPEEDUP = 1.3


def bf16_wins(seconds_float32: float, seconds_bfloat16: float) -> bool:
    """Whether timings of the same convolution favour bfloat16 by :data:`BF16_MIN_SPEEDUP` or more."""
    return seconds_float32 >= BF16_MIN_SPEEDUP * seconds_bfloat16


def _time_conv3d(dtype: torch.dtype | None, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one channels-last 32->32 3x3x3 convolution on 1 x 32 x 32^3."""
    conv = nn.Conv3d(32, 32, 3, padding=1).to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 32, 32, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    context = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    best = float("inf")
    with torch.no_grad(), context:
        conv(x)  # warm-up: oneDNN picks and compiles its kernel
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return best


def cpu_prefers_bf16() -> bool:
    """Whether CPU autocast should use bfloat16: ``VOLSR_CPU_BF16=1`` or ``0`` if set, else the
    machine's cached measurement (:func:`measured_cpu_prefers_bf16`)."""
    forced = os.environ.get("VOLSR_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return measured_cpu_prefers_bf16()


def _cpu_identity() -> str:
    """What the measurement depends on: the CPU model and flags, the core count and torch's version."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    text = "".join(lines) + f"{os.cpu_count()} {torch.__version__} {platform.machine()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def precision_cache_file() -> Path:
    """Where the CPU measurement is kept: ``$XDG_CACHE_HOME/volsr/cpu-precision.json`` (default
    ``~/.cache``). One entry per CPU identity, so a shared home over different machines is fine."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "volsr" / "cpu-precision.json"


@functools.lru_cache(maxsize=1)
def measured_cpu_prefers_bf16() -> bool:
    """Whether a bfloat16 conv3d beats float32 here by :data:`BF16_MIN_SPEEDUP` (about 0.1 s), measured
    once per machine and read back from :func:`precision_cache_file` afterwards.

    Why measured: the flags do not tell. A CPU with AVX512-BF16 may run oneDNN's bf16 conv3d faster
    than float32, or (without AMX) slower; docs/benchmarks.md has the figures.
    Why cached: timings move with the machine's load, and a choice that flips between two runs
    changes their outputs. Where the cache cannot be written, float32: the same in every run.
    """
    if not cpu_has_native_bf16():
        return False
    path, key = precision_cache_file(), _cpu_identity()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), bool):
        return cached[key]
    choice = bf16_wins(_time_conv3d(None), _time_conv3d(torch.bfloat16))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**(cached if isinstance(cached, dict) else {}), key: choice}))
        os.replace(tmp, path)
    except OSError:
        return False
    return choice


def cuda_supports_bf16(device: torch.device) -> bool:
    """Whether ``device`` (a CUDA GPU) computes bfloat16 natively (compute capability 8.0 and up)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def decide_precision(device: torch.device, amp: bool) -> torch.dtype:
    """The dtype the networks run in on ``device``: ``torch.bfloat16`` or ``torch.float32`` (always
    without ``amp``); the rule is in the module docstring."""
    if not amp:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if cuda_supports_bf16(device) else torch.float32
    if device.type == "cpu" and cpu_prefers_bf16():
        return torch.bfloat16
    return torch.float32


def precision_name(precision: torch.dtype) -> str:
    """``"bfloat16"`` or ``"float32"``: a :func:`decide_precision` dtype by name, for sidecars and logs."""
    return str(precision).removeprefix("torch.")


def autocast(device: torch.device, precision: torch.dtype):
    """The autocast context that runs ``device``'s operations in ``precision`` (a
    :func:`decide_precision` dtype); a null context for float32, which needs none."""
    if precision == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision)
