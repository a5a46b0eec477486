"""Is an uncertainty map an error bar? Coverage and the reliability table against a reference.

An error bar ``sigma`` (the estimated standard deviation of the error, per voxel) holds where
``|error| <= 1.96 x sigma``; for a calibrated map that is about 95 % of the voxels. The reliability
table sorts the voxels into deciles of ``sigma`` and sets the error each decile expects (the root mean
square of its ``sigma``) beside the error it has (the root mean square of its ``|error|``): a
calibrated map puts every decile on the diagonal. Voxels are the reference's foreground, on its
percentile scale (:func:`volsr.evaluation.metrics.reference_scale`), as for every other score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from volsr.evaluation.metrics import foreground_mask, reference_scale
from volsr.inference.uncertainty import Z_95

__all__ = ["coverage_of", "reliability_table", "error_bar_scores", "save_reliability_diagram"]


def coverage_of(sigma: np.ndarray, error: np.ndarray, z: float = Z_95) -> float:
    """Share of voxels with ``|error| <= z x sigma`` (same voxels, same units)."""
    sigma, error = np.asarray(sigma).ravel(), np.abs(np.asarray(error).ravel())
    if sigma.shape != error.shape or sigma.size == 0:
        raise ValueError(f"need as many sigmas as errors (at least one), got {sigma.size} and {error.size}")
    return float(np.mean(error <= z * sigma))


def reliability_table(sigma: np.ndarray, error: np.ndarray, bins: int = 10) -> list[dict]:
    """Per equally populated bin of ``sigma`` (deciles by default): its share of the voxels, the
    expected error (RMS of ``sigma``), the observed error (RMS of ``|error|``) and the bin's coverage."""
    sigma, error = np.asarray(sigma, np.float64).ravel(), np.abs(np.asarray(error, np.float64).ravel())
    if sigma.shape != error.shape or sigma.size < bins:
        raise ValueError(f"need as many sigmas as errors and at least {bins}, got {sigma.size}, {error.size}")
    rows = []
    for k, group in enumerate(np.array_split(np.argsort(sigma, kind="stable"), bins)):
        s, e = sigma[group], error[group]
        rows.append(
            {
                "bin": k + 1,
                "voxels": int(group.size),
                "expected": float(np.sqrt(np.mean(s**2))),
                "observed": float(np.sqrt(np.mean(e**2))),
                "coverage": float(np.mean(e <= Z_95 * s)),
            }
        )
    return rows


def error_bar_scores(
    sigma: torch.Tensor, pred: torch.Tensor, reference: torch.Tensor, bins: int = 10
) -> dict:
    """Coverage and reliability table of the error bar ``sigma`` (scanner units, the grid of ``pred``)
    for ``pred`` against ``reference``, over the reference's foreground on its percentile scale."""
    scaled = reference_scale(reference)
    r = scaled(reference)
    mask = foreground_mask(r)
    zero = scaled(torch.zeros(1, 1, 1))  # a width is scaled without the scale's offset
    s = (scaled(sigma) - zero)[mask].numpy()
    e = (scaled(pred) - r).abs()[mask].numpy()
    return {"coverage": coverage_of(s, e), "reliability": reliability_table(s, e, bins)}


def save_reliability_diagram(table: list[dict], path: str | Path, title: str = "") -> Path:
    """Expected against observed error per bin of ``table`` (:func:`reliability_table`), with the
    diagonal a calibrated map would follow, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    expected = [row["expected"] for row in table]
    observed = [row["observed"] for row in table]
    top = 1.1 * max(*expected, *observed)
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--", label="calibrated")
    ax.plot(expected, observed, "o-", color="C0", label="per decile of the map")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("expected error (RMS of the map)")
    ax.set_ylabel("observed error (RMS of |error|)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
