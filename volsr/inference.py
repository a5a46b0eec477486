"""Sliding-window super-resolution of a whole volume, on the grid that keeps its field of view.

Data flow: scan (MetaTensor, scanner units) -> percentile-normalised -> cubic B-spline onto the
output grid (once, on the CPU) -> coarse axis moved last -> MONAI ``sliding_window_inference``
with gaussian blending (windows on ``device``, the volume and the blended output stay on the CPU,
so memory is bounded by the window, not the volume) -> back to the input's orientation and units
-> MetaTensor with the output grid's affine (MONAI's inferer keeps the input's affine; we set it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from volsr.consistency import project_consistent
from volsr.geometry import scale_for_spacing, scaled_grid, voxel_spacing
from volsr.interpolation import resample_array
from volsr.meta import affine_of, new_image
from volsr.normalization import PercentileNormalizer
from volsr.orientation import coarse_axis, from_canonical, to_canonical

__all__ = ["super_resolve", "default_scale", "resolve_device", "DEFAULT_ROI", "DEFAULT_OVERLAP"]

# Windows from the receptive field, not habit: the base network sees 23 voxels, so an overlap of
# 24 voxels (0.15 x 160) leaves every output voxel at least 11 voxels inside some window. Large
# windows cut the recomputed fraction (a head MR fits in one window, as the whole-volume pass);
# 160^3 is about 0.9 GiB of bf16 activations (1.5 GiB fp32), which keeps a 512x512x480 output under
# 4 GB peak RSS. Measured (benchmarks/speed.py): 96^3 / 0.25 ran 2.9x the network's work of one pass on
# a 191x256x151 output, 160^3 / 0.15 2.1x; PSNR unchanged (+0.001 dB). Networks with a larger
# receptive field (preset "large": 39) want overlap >= 0.25.
DEFAULT_ROI = (160, 160, 160)
DEFAULT_OVERLAP = 0.15


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return dev


def default_scale(affine: np.ndarray) -> tuple[float, float, float]:
    """Isotropic at the finest input spacing (a 0.9 x 0.9 x 4 mm scan goes to 0.9 mm)."""
    return scale_for_spacing(affine, float(voxel_spacing(affine).min()))


def _target_scale(image: torch.Tensor, scale, spacing) -> tuple[float, ...]:
    if scale is not None and spacing is not None:
        raise ValueError("give at most one of scale and spacing")
    affine = affine_of(image)
    if spacing is not None:
        return scale_for_spacing(affine, spacing)
    if scale is not None:
        s = [float(scale)] * 3 if np.isscalar(scale) else [float(v) for v in scale]
        if len(s) != 3 or min(s) <= 0:
            raise ValueError(f"scale needs 3 positive factors, got {scale}")
        return tuple(s)
    return default_scale(affine)


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 dot products (AVX512-BF16 or AMX), where oneDNN's bf16 conv3d is
    about twice as fast as fp32; elsewhere bf16 is emulated and no faster."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _Predictor(nn.Module):
    """The network as the inferer calls it.

    CPU: input *and* weights channels-last-3d (oneDNN's fast conv3d layout; the input alone leaves the
    weights reordered on every call) and, with ``amp``, bfloat16 autocast where the CPU has native bf16.
    Measured on ``benchmarks/speed.py`` (base network, AVX512-BF16 EPYC): 27 -> 42 GFLOP/s from the
    weights' layout, -> 92 GFLOP/s with bf16; the PSNR changes by < 0.01 dB (the spline input and the
    residual sum stay float32). CUDA: float16 autocast with ``amp``. Returns float32, contiguous.
    """

    def __init__(self, network: nn.Module, device: torch.device, amp: bool) -> None:
        super().__init__()
        if device.type == "cpu":
            network = network.to(memory_format=torch.channels_last_3d)
        self.network = network
        self.device = device
        if amp and device.type == "cuda":
            self.autocast: tuple[str, torch.dtype] | None = ("cuda", torch.float16)
        elif amp and device.type == "cpu" and _cpu_has_native_bf16():
            self.autocast = ("cpu", torch.bfloat16)
        else:
            self.autocast = None
        self.amp = self.autocast is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.autocast is None:
            ctx = contextlib.nullcontext()
        else:
            ctx = torch.autocast(self.autocast[0], dtype=self.autocast[1])
        with ctx:
            y = self.network(x)
        return y.float().contiguous()


@torch.no_grad()
def super_resolve(
    image: torch.Tensor,
    network: nn.Module,
    normalizer: PercentileNormalizer | None = None,
    scale: float | Sequence[float] | None = None,
    spacing: float | Sequence[float | None] | None = None,
    roi: Sequence[int] = DEFAULT_ROI,
    overlap: float = DEFAULT_OVERLAP,
    device: str | torch.device = "auto",
    amp: bool = True,
    progress: bool = False,
    sw_batch_size: int = 1,
    consistency: bool = False,
) -> torch.Tensor:
    """Super-resolve a channel-first scan ``(C, X, Y, Z)``.

    Args:
        image: MetaTensor in scanner units; its affine defines the input grid.
        network: a generator mapping a spline-interpolated, normalised patch to its refinement.
        normalizer: the normalisation the network was trained with (default percentile 0.5/99.5).
        scale: per-axis up-sampling factors (non-integer allowed); or
        spacing: target voxel size in mm (``None`` on an axis keeps it). With neither, the output
            is isotropic at the finest input spacing.
        roi: window size in output voxels, in the network's canonical order (coarse axis last).
        overlap: window overlap fraction (gaussian blending).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``: where windows run; the volume stays on the CPU.
        amp: float16 autocast on CUDA; bfloat16 autocast on a CPU with native bf16 (AVX512-BF16, AMX).
        progress: show a progress bar over windows.
        sw_batch_size: windows per network call.
        consistency: project the output onto the volumes whose boxcar thick-slice degradation onto
            the input grid reproduces the input exactly (:func:`volsr.consistency.project_consistent`),
            in normalised units, before de-normalising. Exact and cheap, but it assumes contiguous
            boxcar slices on every up-sampled axis.

    Returns:
        MetaTensor on the output grid (field of view kept), float32 in the input's units.
    """
    normalizer = normalizer or PercentileNormalizer()
    dev = resolve_device(device)
    affine = affine_of(image)
    target = _target_scale(image, scale, spacing)
    out_affine, out_shape = scaled_grid(affine, image.shape[1:], target)
    effective = [n_out / n_in for n_in, n_out in zip(image.shape[1:], out_shape, strict=True)]

    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    lo, hi = normalizer.fit(data)
    x_lr = normalizer.normalize(data.float(), lo, hi)  # (C, *in_shape)
    x = resample_array(x_lr, out_shape, "cubic")  # (C, *out_shape): the only whole-volume resampling

    axis = coarse_axis(effective)
    x = to_canonical(x[None], axis).contiguous()  # (1, C, ...), coarse axis last
    roi = tuple(min(int(r), int(n)) for r, n in zip(roi, x.shape[2:], strict=True))
    predictor = _Predictor(network.to(dev).eval(), dev, amp)
    y = sliding_window_inference(
        x,
        roi,
        sw_batch_size,
        predictor,
        overlap=overlap,
        mode="gaussian",
        sw_device=dev,
        device=torch.device("cpu"),
        progress=progress,
    )
    y = from_canonical(y, axis)[0]  # (C, *out_shape), normalised
    if consistency:  # the input grid is the low-resolution grid of the model: same field of view
        y = project_consistent(y, x_lr)
    y = normalizer.denormalize(y, lo, hi)
    return new_image(y.contiguous(), image, out_affine)
