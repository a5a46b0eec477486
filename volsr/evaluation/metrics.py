"""Masked PSNR and 3-D SSIM against a high-resolution reference.

Both images are put on the reference's percentile scale (0.5 -> 0, 99.5 -> 1, the same
normalisation the networks use), so ``data_range = 1`` and scans in Hounsfield units and in
arbitrary MR units are scored alike. The mask is the reference's foreground: voxels above 10 % of
its normalised range, so the empty air around a head does not inflate the scores.
SSIM uses MONAI's ``compute_ssim_and_cs`` (gaussian window 7, sigma 1.5, valid region) and
averages the SSIM map over the mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.metrics.regression import compute_ssim_and_cs

from volsr.data.normalization import PercentileNormalizer

__all__ = [
    "foreground_mask",
    "masked_psnr",
    "masked_ssim",
    "sharpness_ratio",
    "compare",
    "reference_scale",
    "error_rank_correlation",
    "high_frequency_power_ratio",
    "FOREGROUND_LEVEL",
]

FOREGROUND_LEVEL = 0.1
SSIM_WINDOW = 7
SSIM_SIGMA = 1.5


def _plain(x: torch.Tensor) -> torch.Tensor:
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float().reshape(x.shape[-3:])


def foreground_mask(reference_normalized: torch.Tensor, level: float = FOREGROUND_LEVEL) -> torch.Tensor:
    return _plain(reference_normalized) > level


def masked_psnr(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB over the voxels where ``mask`` is true (inputs already on the same scale)."""
    p, r, m = _plain(pred), _plain(ref), mask.reshape(pred.shape[-3:]).bool()
    mse = float(((p - r)[m] ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def masked_ssim(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean of the 3-D SSIM map over ``mask`` (valid region of the window only)."""
    p, r = _plain(pred)[None, None], _plain(ref)[None, None]
    k = min(SSIM_WINDOW, *p.shape[2:])
    k -= 1 - k % 2  # odd window that fits every axis
    ssim_map, _ = compute_ssim_and_cs(
        p, r, spatial_dims=3, kernel_size=[k] * 3, kernel_sigma=[SSIM_SIGMA] * 3, data_range=data_range
    )
    h = k // 2
    m = mask.reshape(p.shape[2:]).bool()
    m = m[h : m.shape[0] - h, h : m.shape[1] - h, h : m.shape[2] - h]
    values = ssim_map[0, 0][m]
    return float(values.mean()) if values.numel() else float("nan")


def sharpness_ratio(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean gradient magnitude of ``pred`` over that of ``ref`` inside ``mask``: 1 is as sharp as the
    reference, below 1 smoother (spline, L1-trained CNN), above 1 over-sharpened or noisy."""
    m = mask.reshape(pred.shape[-3:]).bool()

    def mean_gradient(x: torch.Tensor) -> torch.Tensor:
        g = torch.gradient(_plain(x))  # central differences along each axis, in voxels
        return torch.sqrt(sum(gi**2 for gi in g))[m].mean()

    return float(mean_gradient(pred) / mean_gradient(ref))


def reference_scale(reference: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map of any image on the grid of ``reference`` onto the reference's percentile scale (the
    one every score here is computed on)."""
    norm = PercentileNormalizer()
    lo, hi = norm.fit(_plain(reference))
    return lambda x: norm.normalize(_plain(x), lo, hi)


def compare(pred: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Masked PSNR, SSIM and sharpness ratio of ``pred`` against ``reference`` (same grid, scanner units)."""
    if tuple(pred.shape[-3:]) != tuple(reference.shape[-3:]):
        raise ValueError(
            f"prediction {tuple(pred.shape)} and reference {tuple(reference.shape)} differ in shape"
        )
    scaled = reference_scale(reference)
    r, p = scaled(reference), scaled(pred)
    mask = foreground_mask(r)
    return {
        "psnr": masked_psnr(p, r, mask),
        "ssim": masked_ssim(p, r, mask),
        "sharpness": sharpness_ratio(p, r, mask),
    }


def error_rank_correlation(uncertainty: torch.Tensor, pred: torch.Tensor, reference: torch.Tensor) -> float:
    """Spearman's rank correlation between an uncertainty map and the absolute error of ``pred``,
    over the reference's foreground (the voxels PSNR is scored on; the empty air around a head,
    where both are near 0, would inflate it). 1: the map orders the voxels exactly as their errors;
    0 for a constant map, which orders nothing (Spearman's coefficient is undefined there)."""
    from scipy.stats import spearmanr

    scaled = reference_scale(reference)
    r = scaled(reference)
    error = (scaled(pred) - r).abs()
    mask = foreground_mask(r)
    values = _plain(uncertainty)[mask]
    if values.numel() < 2 or bool((values == values[0]).all()):
        return 0.0
    return float(spearmanr(values.numpy(), error[mask].numpy()).statistic)


def high_frequency_power_ratio(
    pred: torch.Tensor, reference: torch.Tensor, axis: int, cutoff: float
) -> float:
    """Power of ``pred`` along spatial ``axis`` above ``cutoff`` (cycles per voxel), over the
    reference's, both on the reference's percentile scale: how much of the detail beyond what thick
    slices keep (``cutoff`` = 1 / (2 x factor)) an output restores. 1: as much as the reference;
    a spline is far below 1, an over-sharpened or noisy output above."""
    scaled = reference_scale(reference)

    def power(x: torch.Tensor) -> float:
        spectrum = torch.fft.rfft(scaled(x).double(), dim=axis).abs().square()
        frequencies = torch.fft.rfftfreq(x.shape[-3:][axis], dtype=torch.float64)
        return float(spectrum.movedim(axis, -1)[..., frequencies > cutoff].sum())

    return power(pred) / power(reference)
