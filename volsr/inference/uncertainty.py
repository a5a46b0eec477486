"""The uncertainty map as an error bar: which views make it, and its calibration to the error's size.

The map (:func:`volsr.inference.sliding_window.uncertainty_map`) is the spread of the network over
symmetric views of each window. A spread between views is smaller than the error it signals, so the
map a user gets is calibrated: ``sigma = slope x spread + floor x range``, an estimate of the standard
deviation of the output's error in the scan's units (``range``: the input's 0.5-99.5 percentile range,
the normalisation the network works in). ``slope`` and ``floor`` are fitted per bundle on volumes the
shipped step was not chosen on (``benchmarks/uncertainty.py``) and stored beside the weights in
``models/uncertainty_calibration.json``, one entry per number of views.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ALL_VIEWS",
    "CHEAP_VIEWS",
    "COVERAGE_TARGET",
    "Z_95",
    "CALIBRATION_FILE",
    "UncertaintyCalibration",
    "fit_calibration",
    "load_calibration",
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


@dataclass(frozen=True)
class UncertaintyCalibration:
    """``sigma = slope * spread + floor`` in normalised units (multiply by the input's range).

    ``views``: how many views the spread is over (the 16-view and the 4-view maps differ in scale).
    """

    slope: float
    floor: float
    views: int
    fit: dict | None = None

    def sigma(self, spread: np.ndarray | float) -> np.ndarray:
        """The error's standard deviation for a spread, both in normalised units."""
        return self.slope * np.asarray(spread) + self.floor

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> UncertaintyCalibration:
        return cls(float(d["slope"]), float(d["floor"]), int(d["views"]), d.get("fit"))


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = slope x + floor`` with weights ``w``, slope and floor kept >= 0."""
    sw = w.sum()
    mx, my = (w * x).sum() / sw, (w * y).sum() / sw
    vx = (w * (x - mx) ** 2).sum()
    slope = max(0.0, float((w * (x - mx) * (y - my)).sum() / vx)) if vx > 0 else 0.0
    floor = float(my - slope * mx)
    if floor < 0:  # through the origin instead
        slope, floor = float((w * x * y).sum() / (w * x * x).sum()), 0.0
    return slope, floor


def fit_calibration(
    spread: np.ndarray, error: np.ndarray, views: int, bins: int = 20, cases: int | None = None
) -> UncertaintyCalibration:
    """Fit ``sigma = slope * spread + floor`` to absolute errors ``error`` (same voxels, normalised units).

    The line's shape comes from the error's root mean square in ``bins`` equally populated bins of the
    spread (weighted least squares over the bins); its scale is then set so that ``|error| <= Z_95 x
    sigma`` holds for :data:`COVERAGE_TARGET` of the voxels, since errors with heavier tails than a
    Gaussian's would otherwise be covered more (or less) often than the RMS suggests.
    """
    spread, error = np.asarray(spread, np.float64).ravel(), np.asarray(error, np.float64).ravel()
    if spread.shape != error.shape or spread.size < bins:
        raise ValueError(f"need as many spreads as errors and at least {bins}, got {spread.size}, {error.size}")
    order = np.argsort(spread, kind="stable")
    groups = np.array_split(order, bins)
    x = np.array([spread[g].mean() for g in groups])
    rms = np.array([math.sqrt(float(np.mean(error[g] ** 2))) for g in groups])
    w = np.array([len(g) for g in groups], dtype=np.float64)
    slope, floor = _weighted_line(x, rms, w)
    if slope == 0.0 and floor == 0.0:
        raise ValueError("the errors are all zero: nothing to calibrate")
    # the scale at which the target share of |error| / (Z_95 sigma) is <= 1
    ratio = error / (Z_95 * (slope * spread + floor))
    scale = float(np.quantile(ratio, COVERAGE_TARGET))
    fit = {
        "voxels": int(spread.size),
        "bins": bins,
        "rms_slope": round(slope, 5),
        "rms_floor": round(floor, 6),
        "coverage_scale": round(scale, 4),
        "target": f"|error| <= {Z_95:.2f} sigma for {COVERAGE_TARGET:.0%} of foreground voxels",
    }
    if cases is not None:
        fit["cases"] = cases
    return UncertaintyCalibration(slope * scale, floor * scale, views, fit)


def load_calibration(bundle_root: str | Path, views: int) -> UncertaintyCalibration | None:
    """The calibration stored in ``bundle_root/models/`` for a map over ``views`` views, or ``None``
    when the bundle has none (its map is then the raw spread)."""
    path = Path(bundle_root) / "models" / CALIBRATION_FILE
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get("views", {}).get(str(views))
    return None if entry is None else UncertaintyCalibration.from_dict(entry)
