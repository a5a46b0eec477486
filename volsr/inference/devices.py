"""Where computation runs and in which precision: one place for CPU/CUDA choices."""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch
from torch import nn

__all__ = [
    "resolve_device",
    "cpu_has_native_bf16",
    "cpu_prefers_bf16",
    "measured_cpu_prefers_bf16",
    "bf16_wins",
    "autocast_dtype",
    "autocast",
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
    """Whether CPU autocast should use bfloat16: ``VOLSR_CPU_BF16=1`` or ``0`` if set (e.g. for outputs
    identical across machines), else measured once per process (:func:`measured_cpu_prefers_bf16`)."""
    forced = os.environ.get("VOLSR_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return measured_cpu_prefers_bf16()


@functools.lru_cache(maxsize=1)
def measured_cpu_prefers_bf16() -> bool:
    """Whether a bfloat16 conv3d beats float32 here by :data:`BF16_MIN_SPEEDUP` (about 0.1 s, once).

    Why measured: the flags do not tell. On an AMD EPYC with AVX512-BF16, oneDNN's bf16 conv3d ran
    2.3x faster than float32; on an Intel Xeon guest that shows AVX512-BF16 but not AMX, 2x slower.
    """
    if not cpu_has_native_bf16():
        return False
    return bf16_wins(_time_conv3d(None), _time_conv3d(torch.bfloat16))


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """float16 on CUDA, bfloat16 on a CPU where it is faster (:func:`cpu_prefers_bf16`), else None
    (full float32)."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_prefers_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, amp: bool):
    """The autocast context for ``device`` (a null context when mixed precision does not apply)."""
    dtype = autocast_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
