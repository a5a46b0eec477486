"""Which data-consistency model a scan gets, and why: thick slices or a smaller k-space matrix.

Data consistency (:mod:`volsr.inference.consistency`) needs the forward model of the acquisition:
thick slices (:func:`~volsr.inference.consistency.project_consistent`) or a reduced matrix
(:func:`~volsr.inference.consistency.project_kspace_consistent`). What decides, first to last:

1. The header's acquisition type (``meta["acquisition_type"]``, read by :func:`volsr.data.io.load_image`
   from DICOM MRAcquisitionType (0018,0023) or a dcm2niix / BIDS sidecar's ``"MRAcquisitionType"``):
   ``3D`` -> k-space (the resolution of every axis is set by the k-space matrix), ``2D`` -> slices.
2. A stated slice thickness with gaps or overlaps (:mod:`volsr.data.acquisition`): only separate
   slices have them -> slices.
3. Otherwise the geometry, from the up-sampling factors of the run (output voxels per input voxel
   per axis): all axes up-sampled alike (largest / smallest <= :data:`SIMILAR_FACTORS`)
   is the signature of a reduced 3D matrix -> k-space; anything else (one coarse axis, or axes coarser
   by different factors) -> slices, the acquisition the default network was trained for.

The reason is said in words, for the output's sidecar and the one-line summary.

Example:
    >>> choice = choose_consistency_model(scan, factors=(2.0, 2.0, 2.0))
    >>> choice.model, choice.reason
    ('kspace', 'no acquisition type stated; all axes up-sampled alike (x2, x2, x2): a reduced 3D matrix')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from volsr.data.acquisition import slice_acquisition

__all__ = ["MODELS", "SIMILAR_FACTORS", "UPSAMPLED", "ConsistencyChoice", "choose_consistency_model"]

#: the two forward models: thick slices, or a smaller k-space matrix
MODELS = ("slices", "kspace")
#: largest / smallest factor up to which every axis counts as coarser by a similar factor: a reduced
#: matrix of 256 x 256 x 176 at 1 mm read at 128 x 128 x 96 has 2 x 2 x 1.83 (ratio 1.09); a thick-slice
#: scan with a slightly coarser in-plane grid (0.9 x 0.9 x 3 mm to 0.9 mm) has 1 x 1 x 3.3 (ratio 3.3)
SIMILAR_FACTORS = 1.5
#: a factor above this counts as up-sampled (output grids round to whole voxels: 1.005 is not)
UPSAMPLED = 1.05


@dataclass(frozen=True)
class ConsistencyChoice:
    """The consistency model (``"slices"`` or ``"kspace"``), the reason in words, and what decided it
    (``"header"`` or ``"geometry"``)."""

    model: str
    reason: str
    source: str

    @property
    def label(self) -> str:
        """``"k-space"`` or ``"thick slices"``: the model as the summary names it."""
        return "k-space" if self.model == "kspace" else "thick slices"

    def summary(self) -> str:
        """E.g. ``"consistency: k-space (the DICOM header states a 3D acquisition)"``."""
        return f"consistency: {self.label} ({self.reason})"

    def sidecar_fields(self) -> dict:
        """What the output's sidecar records: ``{"ConsistencyModel", "ConsistencyModelReason"}``."""
        return {"ConsistencyModel": self.model, "ConsistencyModelReason": self.reason}


def _factors_text(factors: Sequence[float]) -> str:
    return ", ".join(f"x{f:.3g}" for f in factors)


def choose_consistency_model(image: torch.Tensor, factors: Sequence[float]) -> ConsistencyChoice:
    """The consistency model for ``image`` super-resolved by ``factors`` (output / input voxels per
    axis, as :func:`volsr.inference.sliding_window.output_grid` gives them); see the module doc.

    Raises:
        ValueError: ``factors`` is not three positive numbers.
    """
    factors = tuple(float(f) for f in factors)
    if len(factors) != 3 or not all(f > 0 for f in factors):
        raise ValueError(f"factors must be three positive numbers, got {factors!r}")
    meta = getattr(image, "meta", None) or {}
    stated = meta.get("acquisition_type")
    where = "the DICOM header" if meta.get("source_format") == "dicom" else "the sidecar"
    if stated == "3D":
        return ConsistencyChoice("kspace", f"{where} states a 3D acquisition", "header")
    if stated == "2D":
        return ConsistencyChoice("slices", f"{where} states a 2D acquisition", "header")
    acquisition = slice_acquisition(image)
    if acquisition is not None and not acquisition.contiguous:
        return ConsistencyChoice("slices", f"the header states {acquisition.describe()}", "header")
    up = [f for f in factors if f > UPSAMPLED]
    text = _factors_text(factors)
    if len(up) == 3 and max(up) / min(up) <= SIMILAR_FACTORS:
        reason = f"no acquisition type stated; all axes up-sampled alike ({text}): a reduced 3D matrix"
        return ConsistencyChoice("kspace", reason, "geometry")
    if len(up) == 1:
        reason = f"no acquisition type stated; one axis up-sampled ({text}): thick slices"
    elif not up:
        reason = f"no acquisition type stated and no axis up-sampled ({text}): thick slices assumed"
    else:
        reason = (
            f"no acquisition type stated; axes up-sampled by different factors ({text}): thick slices assumed"
        )
    return ConsistencyChoice("slices", reason, "geometry")
