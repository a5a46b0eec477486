"""Intensity normalisation shared by training and inference (stored with the weights)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["PercentileNormalizer"]

_MAX_SAMPLES = 2_000_000  # percentiles from a strided subsample: the same answer, far faster


@dataclass
class PercentileNormalizer:
    """Maps the ``lower`` and ``upper`` percentiles of a volume (all voxels) to 0 and 1.

    ``fit`` runs on the network's input (the low-resolution scan) at inference and on the
    high-resolution crop's source volume in training; ``denormalize`` brings the output back to
    the input's units (Hounsfield, scanner units).
    """

    lower: float = 0.5
    upper: float = 99.5

    def fit(self, image: torch.Tensor) -> tuple[float, float]:
        flat = image.detach().reshape(-1)
        step = max(1, flat.numel() // _MAX_SAMPLES)
        values = flat[::step].float().cpu().numpy()
        lo, hi = np.percentile(values, [self.lower, self.upper])
        if hi - lo <= 1e-8 * max(1.0, abs(float(hi))):
            lo, hi = float(values.min()), float(values.max())
        if hi - lo <= 0:
            hi = lo + 1.0  # a constant volume: keep it as is, shifted to zero
        return float(lo), float(hi)

    @staticmethod
    def normalize(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return (x - lo) / (hi - lo)

    @staticmethod
    def denormalize(y: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return y * (hi - lo) + lo

    @staticmethod
    def denormalize_(y: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        """In place: no second full-size buffer for a large output."""
        return y.mul_(hi - lo).add_(lo)

    def to_dict(self) -> dict:
        return {"name": "percentile", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> PercentileNormalizer:
        d = {k: v for k, v in d.items() if k != "name"}
        return cls(**d)
