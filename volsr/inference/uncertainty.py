"""The uncertainty map as an error bar: which views make it, and its calibration to the error's size.

The map (:func:`volsr.inference.sliding_window.uncertainty_map`) is the spread of the network over
symmetric views of each window. A spread between views is smaller than the error it signals, and it
misses the part of the error a high-resolution acquisition's own noise makes, so the map a user gets
is calibrated::

    sigma = slope x spread + floor + noise_weight[family] x noise

an estimate of the standard deviation of the output's error, per voxel; every term is in the
network's normalised units (the input's 0.5-99.5 percentile range is 1) and the map is written in the
scan's units. ``noise`` (:func:`scan_noise`) is the scan's noise level, measured on the input and
carried to the output grid; ``family`` is ``"slices"`` for a scan with one coarse axis (thick slices)
and ``"matrix"`` for one coarse along several (a smaller acquisition matrix). The coefficients are
fitted per bundle on volumes the shipped step was not chosen on (``benchmarks/uncertainty.py``) and
stored beside the weights in ``models/uncertainty_calibration.json``, one entry per number of views.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

__all__ = [
    "ALL_VIEWS",
    "CHEAP_VIEWS",
    "COVERAGE_TARGET",
    "Z_95",
    "CALIBRATION_FILE",
    "UncertaintyCalibration",
    "CalibrationSample",
    "fit_calibration",
    "load_calibration",
    "map_views",
    "scan_noise",
    "acquisition_family",
]

View = tuple[tuple[int, ...], bool]

#: every flip of the spatial dims (2, 3, 4) of a window batch, each without and with the in-plane
#: dims 2 and 3 swapped: the 16 symmetries the network is trained with
ALL_VIEWS: list[View] = [
    (tuple(d for d, on in zip((2, 3, 4), bits, strict=True) if on), swap)
    for bits in itertools.product((0, 1), repeat=3)
    for swap in (False, True)
]

#: 4 of the 16 views for a map at a quarter of the cost: each flip and the swap is on in exactly two
#: of them and every pair of them differs in at least two, so no axis is left out of the spread
CHEAP_VIEWS: list[View] = [((), False), ((2, 3), True), ((2, 4), False), ((3, 4), True)]

#: the share of voxels whose error the error bar +-Z_95 x sigma should hold
COVERAGE_TARGET = 0.95
Z_95 = 1.959963984540054
CALIBRATION_FILE = "uncertainty_calibration.json"


FAMILIES = ("slices", "matrix")


def acquisition_family(factors: tuple[float, ...] | list[float]) -> str:
    """``"slices"`` when one axis is up-sampled (thick slices), ``"matrix"`` when several are (a
    smaller acquisition matrix): the two degradations leave different noise behind."""
    return "slices" if sum(f > 1.01 for f in factors) <= 1 else "matrix"


#: Immerkaer's noise kernel: the difference of two Laplacians, blind to linear ramps; its norm is 6
_NOISE_KERNEL = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817
FOREGROUND = 0.1


def scan_noise(x_lr: torch.Tensor, factors: tuple[float, ...] | list[float]) -> float:
    """The noise standard deviation a full-resolution acquisition of this scan would have, from the
    low-resolution input itself (normalised units, ``(C, *S)`` or ``(*S)``).

    Immerkaer's estimator (the median absolute response to :data:`_NOISE_KERNEL`, per plane of the two
    finest input axes, over the foreground), scaled by the square root of the voxel-volume ratio: a voxel
    ``prod(factors)`` times larger averages that many full-resolution voxels' noise. Written here because
    MONAI has no noise estimator and scikit-image's (wavelet) one is not a dependency.
    """
    x = torch.as_tensor(x_lr).float()
    x = x.reshape(-1, *x.shape[-3:])[0]  # the first channel of (C, *S); a single-channel scan's only one
    coarse = int(np.argmax(factors))  # the planes across the most up-sampled axis keep the most detail
    planes = x.movedim(coarse, 0)[:, None]  # (planes, 1, a, b)
    if min(planes.shape[2:]) < 3:
        return 0.0
    response = torch.nn.functional.conv2d(planes, _NOISE_KERNEL.to(planes.device)[None, None])[:, 0]
    inside = planes[:, 0, 1:-1, 1:-1] > FOREGROUND
    values = response[inside].abs()
    if values.numel() == 0:
        return 0.0
    sigma_lr = float(values.median()) * _MAD_TO_SIGMA / 6.0
    return sigma_lr * math.sqrt(math.prod(float(f) for f in factors))


@dataclass(frozen=True)
class UncertaintyCalibration:
    """``sigma = slope * spread + floor + noise_weight[family] * noise``, all in normalised units.

    ``views``: how many views the spread is over (the 16-view and the 4-view maps differ in scale).
    """

    slope: float
    floor: float
    noise_weight: dict[str, float]
    views: int
    fit: dict | None = None

    def sigma(self, spread: np.ndarray | torch.Tensor | float, noise: float = 0.0, family: str = "slices"):
        """The error's standard deviation for a spread and the scan's noise, in normalised units."""
        return spread * self.slope + (self.floor + self.noise_weight.get(family, 0.0) * noise)

    def error_bar(
        self,
        spread_map: torch.Tensor,
        x_lr: torch.Tensor,
        factors: tuple[float, ...] | list[float],
        intensity_range: float,
    ) -> torch.Tensor:
        """The map a user gets: ``spread_map`` (the smoothed spread in the scan's units,
        :func:`volsr.inference.sliding_window.uncertainty_map`) as the error's standard deviation in the
        scan's units, given the normalised input ``x_lr``, the per-axis factors and the input's
        percentile range (the normalisation's ``hi - lo``)."""
        noise = scan_noise(x_lr, factors)
        offset = (
            self.floor + self.noise_weight.get(acquisition_family(factors), 0.0) * noise
        ) * intensity_range
        return spread_map.mul(self.slope).add_(offset)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> UncertaintyCalibration:
        weights = {str(k): float(v) for k, v in d.get("noise_weight", {}).items()}
        return cls(float(d["slope"]), float(d["floor"]), weights, int(d["views"]), d.get("fit"))


@dataclass(frozen=True)
class CalibrationSample:
    """One degraded scan's voxels: the map's spread and the actual |error| (normalised units, same
    voxels), with the scan's :func:`scan_noise` and :func:`acquisition_family`."""

    spread: np.ndarray
    error: np.ndarray
    noise: float = 0.0
    family: str = "slices"


def _sigma_of(calibration: UncertaintyCalibration, s: CalibrationSample) -> np.ndarray:
    return np.asarray(calibration.sigma(np.asarray(s.spread, np.float64).ravel(), s.noise, s.family))


def fit_calibration(samples: list[CalibrationSample], views: int, bins: int = 20) -> UncertaintyCalibration:
    """Fit the calibration's coefficients to degraded scans whose actual errors are known.

    The shape comes from the error's root mean square in ``bins`` equally populated bins of each scan's
    spread: non-negative least squares of ``rms = slope x spread + floor + weight[family] x noise`` over
    the bins, weighted by their voxels. The scale is then set so that ``|error| <= Z_95 x sigma`` holds
    for :data:`COVERAGE_TARGET` of all voxels, since errors with heavier tails than a Gaussian's would
    otherwise be covered more (or less) often than the RMS suggests.
    """
    rows, rms, weights = [], [], []
    for s in samples:
        spread, error = np.asarray(s.spread, np.float64).ravel(), np.asarray(s.error, np.float64).ravel()
        if spread.shape != error.shape or spread.size < bins:
            raise ValueError(
                f"need as many spreads as errors and at least {bins}, got {spread.size}, {error.size}"
            )
        if s.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {s.family!r}")
        for group in np.array_split(np.argsort(spread, kind="stable"), bins):
            noise = [s.noise * (s.family == f) for f in FAMILIES]
            rows.append([spread[group].mean(), 1.0, *noise])
            rms.append(math.sqrt(float(np.mean(error[group] ** 2))))
            weights.append(math.sqrt(group.size))
    if not rows:
        raise ValueError("no samples to calibrate on")
    w = np.asarray(weights)
    coef, _ = nnls(np.asarray(rows) * w[:, None], np.asarray(rms) * w)
    if not coef.any():
        raise ValueError("the errors are all zero: nothing to calibrate")
    slope, floor, *noise_weights = (float(c) for c in coef)
    raw = UncertaintyCalibration(slope, floor, dict(zip(FAMILIES, noise_weights, strict=True)), views)
    ratio = np.concatenate([np.abs(s.error).ravel() / (Z_95 * _sigma_of(raw, s)) for s in samples])
    scale = float(np.quantile(ratio, COVERAGE_TARGET))
    fit = {
        "voxels": int(ratio.size),
        "scans": len(samples),
        "bins_per_scan": bins,
        "rms_fit": {"slope": slope, "floor": floor, "noise_weight": raw.noise_weight},
        "coverage_scale": round(scale, 4),
        "target": f"|error| <= {Z_95:.2f} sigma for {COVERAGE_TARGET:.0%} of foreground voxels",
    }
    weights_scaled = {k: v * scale for k, v in raw.noise_weight.items()}
    return UncertaintyCalibration(slope * scale, floor * scale, weights_scaled, views, fit)


def map_views(tta: bool) -> list[View]:
    """The views the map is made of: all 16 where the output averages them anyway (``tta``), else
    :data:`CHEAP_VIEWS` (4 network passes)."""
    return list(ALL_VIEWS) if tta else list(CHEAP_VIEWS)


def load_calibration(bundle_root: str | Path, views: int) -> UncertaintyCalibration | None:
    """The calibration stored in ``bundle_root/models/`` for a map over ``views`` views, or ``None``
    when the bundle has none (its map is then the raw spread)."""
    path = Path(bundle_root) / "models" / CALIBRATION_FILE
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get("views", {}).get(str(views))
    return None if entry is None else UncertaintyCalibration.from_dict(entry)
