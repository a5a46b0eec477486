"""The uncertainty map as an error bar: which views make it, and its calibration to the error's size.

The map (:func:`volsr.inference.sliding_window.uncertainty_map`) is the spread of the network over
symmetric views of each window. A spread between views is smaller than the error it signals, and it
misses the part of the error a high-resolution acquisition's own noise makes, so the map a user gets
is calibrated::

    sigma = slope(family, factor) x spread + floor(family, factor) + noise_weight(family, factor) x noise

an estimate of the standard deviation of the output's error, per voxel; every term is in the
network's normalised units (the input's 0.5-99.5 percentile range is 1) and the map is written in the
scan's units. ``noise`` (:func:`scan_noise`) is the scan's noise level, measured on the input and
carried to the output grid. ``family`` is the data-consistency model the output is projected with
(:func:`volsr.inference.consistency_choice.choose_consistency_model`: ``"slices"`` for thick slices,
``"kspace"`` for a smaller acquisition matrix), and ``factor`` the largest up-sampling factor of the
run (:func:`calibration_factor`): both change how large the error is for a given spread. Each family
holds a table of coefficients over the factors it was fitted at, read linearly in log-factor between
them and held at the nearest end beyond them.

The coefficients are fitted per bundle on volumes the shipped step was not chosen on
(``benchmarks/uncertainty.py``), against the projected output a user gets, and stored beside the
weights in ``models/uncertainty_calibration.json`` (schema :data:`SCHEMA`), one entry per number of
views. A file without a ``"schema"`` (schema 1: one line for all factors, families ``"slices"`` and
``"matrix"``) still loads, as tables of one factor; a schema this module does not know is refused.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from volsr.errors import VolsrInputError
from volsr.inference.consistency_choice import MODELS, choose_consistency_model

__all__ = [
    "ALL_VIEWS",
    "CHEAP_VIEWS",
    "COVERAGE_TARGET",
    "Z_95",
    "CALIBRATION_FILE",
    "FAMILIES",
    "SCHEMA",
    "FamilyTable",
    "UncertaintyCalibration",
    "CalibrationSample",
    "calibration_factor",
    "calibration_family",
    "fit_calibration",
    "load_calibration",
    "read_calibration_file",
    "map_views",
    "scan_noise",
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
#: the calibration file's format: ``"schema"`` in its JSON
SCHEMA = 2


#: the data-consistency models (:data:`volsr.inference.consistency_choice.MODELS`): each its own table
FAMILIES: tuple[str, ...] = MODELS
#: the family names of a schema-1 file, as the consistency models name them
_SCHEMA1_FAMILIES = {"slices": "slices", "matrix": "kspace"}


def calibration_factor(factors: Sequence[float]) -> float:
    """The up-sampling factor a calibration is read at: the largest per-axis factor (the thick
    slices' factor; a reduced matrix's coarsest axis)."""
    return float(max(float(f) for f in factors))


def calibration_family(factors: Sequence[float], image: torch.Tensor | None = None) -> str:
    """The family for a run with these per-axis factors: the consistency model
    :func:`~volsr.inference.consistency_choice.choose_consistency_model` picks for ``image`` (its
    header, else the grid alone)."""
    return choose_consistency_model(image if image is not None else torch.zeros(0), factors).model


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
class FamilyTable:
    """One family's coefficients at the up-sampling factors they were fitted at (ascending)."""

    factors: tuple[float, ...]
    slope: tuple[float, ...]
    floor: tuple[float, ...]
    noise_weight: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.factors)
        if n == 0 or any(len(c) != n for c in (self.slope, self.floor, self.noise_weight)):
            raise ValueError(f"a family table needs one slope, floor and noise weight per factor, got {self}")
        if any(f <= 0 for f in self.factors) or list(self.factors) != sorted(set(self.factors)):
            raise ValueError(f"a family table's factors must be positive and ascending, got {self.factors}")

    def at(self, factor: float) -> tuple[float, float, float]:
        """``(slope, floor, noise_weight)`` at ``factor``: linear in log-factor between the fitted
        factors, the nearest end's beyond them (no extrapolation past what was measured)."""
        where = math.log(max(float(factor), 1e-6))
        logs = np.log(self.factors)
        return tuple(float(np.interp(where, logs, c)) for c in (self.slope, self.floor, self.noise_weight))

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in ("factors", "slope", "floor", "noise_weight")}

    @classmethod
    def from_dict(cls, d: dict) -> FamilyTable:
        return cls(*(tuple(float(v) for v in d[k]) for k in ("factors", "slope", "floor", "noise_weight")))


@dataclass(frozen=True)
class UncertaintyCalibration:
    """Per family (:data:`FAMILIES`), ``sigma = slope x spread + floor + noise_weight x noise`` with
    the coefficients of its :class:`FamilyTable` at the run's factor, all in normalised units.

    ``views``: how many views the spread is over (the 16-view and the 4-view maps differ in scale).
    ``fit``: how the coefficients were fitted (what was measured), for the record.
    """

    views: int
    families: dict[str, FamilyTable]
    fit: dict | None = field(default=None, compare=False)

    @classmethod
    def constant(
        cls, slope: float, floor: float, noise_weight: dict[str, float], views: int
    ) -> UncertaintyCalibration:
        """One line for every factor: ``noise_weight`` per family (each family in it gets a table)."""
        tables = {f: FamilyTable((1.0,), (slope,), (floor,), (w,)) for f, w in noise_weight.items()}
        return cls(views, tables)

    def coefficients(self, family: str, factor: float) -> tuple[float, float, float]:
        """``(slope, floor, noise_weight)`` for ``family`` at the up-sampling ``factor``."""
        if family not in self.families:
            raise ValueError(
                f"the uncertainty calibration has no table for {family!r} (it has {sorted(self.families)})"
            )
        return self.families[family].at(factor)

    def sigma(
        self, spread: np.ndarray | torch.Tensor | float, family: str, factor: float, noise: float = 0.0
    ):
        """The error's standard deviation for a spread and the scan's noise, in normalised units."""
        slope, floor, weight = self.coefficients(family, factor)
        return spread * slope + (floor + weight * noise)

    def error_bar(
        self,
        spread_map: torch.Tensor,
        x_lr: torch.Tensor,
        factors: Sequence[float],
        intensity_range: float,
        family: str | None = None,
    ) -> torch.Tensor:
        """The map a user gets: ``spread_map`` (the smoothed spread in the scan's units,
        :func:`volsr.inference.sliding_window.uncertainty_map`) as the error's standard deviation in the
        scan's units, given the normalised input ``x_lr``, the per-axis factors, the input's percentile
        range (the normalisation's ``hi - lo``) and the consistency model the output was projected with
        (``None``: the one the grid points to, :func:`calibration_family`)."""
        family = family or calibration_family(factors)
        slope, floor, weight = self.coefficients(family, calibration_factor(factors))
        offset = (floor + weight * scan_noise(x_lr, factors)) * intensity_range
        return spread_map.mul(slope).add_(offset)

    def to_dict(self) -> dict:
        out: dict = {"views": self.views, "families": {k: t.to_dict() for k, t in self.families.items()}}
        if self.fit is not None:
            out["fit"] = self.fit
        return out

    @classmethod
    def from_dict(cls, d: dict) -> UncertaintyCalibration:
        """An entry of a schema-2 file (:meth:`to_dict`)."""
        tables = {str(k): FamilyTable.from_dict(t) for k, t in d["families"].items()}
        return cls(int(d["views"]), tables, d.get("fit"))

    @classmethod
    def from_schema1(cls, d: dict) -> UncertaintyCalibration:
        """An entry of a schema-1 file: one ``slope`` and ``floor`` for every factor and a
        ``noise_weight`` per family (``"matrix"`` is the ``"kspace"`` family)."""
        weights = {_SCHEMA1_FAMILIES.get(str(k), str(k)): float(v) for k, v in d["noise_weight"].items()}
        constant = cls.constant(float(d["slope"]), float(d["floor"]), weights, int(d["views"]))
        return cls(constant.views, constant.families, d.get("fit"))


@dataclass(frozen=True)
class CalibrationSample:
    """One degraded scan's voxels: the map's spread and the actual |error| (normalised units, same
    voxels), with the scan's :func:`scan_noise`, its family (:data:`FAMILIES`) and
    :func:`calibration_factor`."""

    spread: np.ndarray
    error: np.ndarray
    family: str
    factor: float
    noise: float = 0.0


def _factor_key(factor: float) -> float:
    return round(float(factor), 2)  # crops of one size degraded alike share their factor exactly


def _fit_family(samples: list[CalibrationSample], bins: int, per_factor: bool) -> tuple[FamilyTable, dict]:
    """NNLS of the binned RMS error on ``slope_k x spread + floor_k + weight x noise`` (``k``: the
    factor; one ``k`` for all unless ``per_factor``), each factor's line then scaled to the target
    coverage on its own voxels."""
    keys = sorted({_factor_key(s.factor) if per_factor else 0.0 for s in samples})
    k_of = {key: i for i, key in enumerate(keys)}
    n = len(keys)
    rows, rms, weights, group_of = [], [], [], []
    for s in samples:
        spread, error = np.asarray(s.spread, np.float64).ravel(), np.asarray(s.error, np.float64).ravel()
        k = k_of[_factor_key(s.factor) if per_factor else 0.0]
        for group in np.array_split(np.argsort(spread, kind="stable"), bins):
            row = np.zeros(2 * n + 1)
            row[k], row[n + k], row[2 * n] = spread[group].mean(), 1.0, s.noise
            rows.append(row)
            rms.append(math.sqrt(float(np.mean(error[group] ** 2))))
            weights.append(math.sqrt(group.size))
        group_of.append(k)
    w = np.asarray(weights)
    coef, _ = nnls(np.asarray(rows) * w[:, None], np.asarray(rms) * w)
    slopes, floors, weight = coef[:n], coef[n : 2 * n], float(coef[2 * n])
    scales, record = [], []
    for k, key in enumerate(keys):
        members = [s for s, g in zip(samples, group_of, strict=True) if g == k]
        raw = [
            slopes[k] * np.asarray(s.spread, np.float64).ravel() + floors[k] + weight * s.noise
            for s in members
        ]
        if not any(r.any() for r in raw):
            raise ValueError("the errors are all zero: nothing to calibrate")
        ratio = np.concatenate(
            [
                np.abs(np.asarray(s.error, np.float64).ravel()) / (Z_95 * np.maximum(r, 1e-12))
                for s, r in zip(members, raw, strict=True)
            ]
        )
        scales.append(float(np.quantile(ratio, COVERAGE_TARGET)))
        record.append(
            {
                "factor": key if per_factor else None,
                "cases": len(members),
                "voxels": int(ratio.size),
                "rms_fit": {"slope": float(slopes[k]), "floor": float(floors[k]), "noise_weight": weight},
                "coverage_scale": round(scales[-1], 4),
            }
        )
    factors = tuple(keys) if per_factor else (1.0,)
    table = FamilyTable(
        factors,
        tuple(float(a * c) for a, c in zip(slopes, scales, strict=True)),
        tuple(float(b * c) for b, c in zip(floors, scales, strict=True)),
        tuple(weight * c for c in scales),
    )
    return table, {"per_factor": record}


def fit_calibration(
    samples: list[CalibrationSample], views: int, bins: int = 20, per_factor: bool = True
) -> UncertaintyCalibration:
    """Fit the calibration's tables to degraded scans whose actual errors are known.

    Per family, the shape comes from the error's root mean square in ``bins`` equally populated bins
    of each scan's spread: non-negative least squares of ``rms = slope_k x spread + floor_k + weight x
    noise`` over the bins, weighted by their voxels, with a slope and a floor per up-sampling factor
    ``k`` (one for all with ``per_factor=False``) and one noise weight per family, since 3-4 scans per
    factor cannot separate a floor from a noise weight. The scale is then set per factor so that
    ``|error| <= Z_95 x sigma`` holds for :data:`COVERAGE_TARGET` of that factor's voxels, since errors
    with heavier tails than a Gaussian's would otherwise be covered more (or less) often than the RMS
    suggests.
    """
    if not samples:
        raise ValueError("no samples to calibrate on")
    for s in samples:
        size, other = np.asarray(s.spread).size, np.asarray(s.error).size
        if size != other or size < bins:
            raise ValueError(f"need as many spreads as errors and at least {bins}, got {size}, {other}")
        if s.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {s.family!r}")
        if not s.factor > 0:
            raise ValueError(f"the factor must be positive, got {s.factor!r}")
    tables, fits = {}, {}
    for family in FAMILIES:
        members = [s for s in samples if s.family == family]
        if members:
            tables[family], fits[family] = _fit_family(members, bins, per_factor)
    fit = {
        "cases": len(samples),
        "voxels": int(sum(np.asarray(s.error).size for s in samples)),
        "bins_per_scan": bins,
        "families": fits,
        "target": f"|error| <= {Z_95:.2f} sigma for {COVERAGE_TARGET:.0%} of foreground voxels per factor",
    }
    return UncertaintyCalibration(views, tables, fit)


def map_views(tta: bool) -> list[View]:
    """The views the map is made of: all 16 where the output averages them anyway (``tta``), else
    :data:`CHEAP_VIEWS` (4 network passes)."""
    return list(ALL_VIEWS) if tta else list(CHEAP_VIEWS)


def read_calibration_file(path: str | Path) -> dict[int, UncertaintyCalibration]:
    """Every entry of a calibration file, by number of views: schema :data:`SCHEMA`, or schema 1 (no
    ``"schema"`` key). A file volsr cannot read (not JSON, another schema, missing coefficients) is
    refused in one line naming it."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VolsrInputError(path, f"is not a readable uncertainty calibration ({e})") from None
    schema = record.get("schema", 1) if isinstance(record, dict) else None
    if schema not in (1, SCHEMA):
        raise VolsrInputError(
            path,
            f"is an uncertainty calibration of schema {schema!r}; this volsr reads schemas 1 and {SCHEMA} "
            "(refit it with benchmarks/uncertainty.py analyse --calibrate, or update volsr)",
        )
    read = UncertaintyCalibration.from_dict if schema == SCHEMA else UncertaintyCalibration.from_schema1
    try:
        return {int(k): read(entry) for k, entry in record["views"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise VolsrInputError(path, f"is an uncertainty calibration of schema {schema} missing {e}") from None


def load_calibration(bundle_root: str | Path, views: int) -> UncertaintyCalibration | None:
    """The calibration stored in ``bundle_root/models/`` for a map over ``views`` views, or ``None``
    when the bundle has none for it."""
    path = Path(bundle_root) / "models" / CALIBRATION_FILE
    if not path.is_file():
        return None
    return read_calibration_file(path).get(int(views))
