"""Which data-consistency model a scan gets, and why: thick slices, a smaller k-space matrix, or none.

Data consistency (:mod:`volsr.inference.consistency`) needs the forward model of the acquisition:
thick slices (:func:`~volsr.inference.consistency.project_consistent`) or a reduced matrix
(:func:`~volsr.inference.consistency.project_kspace_consistent`). :func:`decide_consistency` takes
what was asked (``consistency``: ``"auto"`` or ``True``, the default of ``volsr infer`` and
:class:`volsr.SuperResolver`; ``"slices"`` or ``"kspace"``; ``False``) and the run's grid:

* ``False``: no projection.
* ``"slices"`` / ``"kspace"``: that model, as asked, whatever the header says.
* ``"auto"``: no projection where an axis is down-sampled (an output on a coarser grid than the
  input on some axis cannot reproduce the input: the projection would only be a least-squares fit
  that changes the network's output without making it consistent); else
  :func:`choose_consistency_model`.

Everywhere else both projections apply, so the default never turns a run into an error: any factor,
whole or not (slabs of ``n_out / n_in`` output voxels; the band of the smaller matrix), axes left as
they are (the identity there), test-time augmentation and uncertainty maps (the views' mean is
projected; the map, their spread, is not changed), per-scan adaptation (the adapted network's output).

:func:`choose_consistency_model` decides, first to last:

1. The header's acquisition type (``meta["acquisition_type"]``, read by :func:`volsr.data.io.load_image`
   from DICOM MRAcquisitionType (0018,0023) or a dcm2niix / BIDS sidecar's ``"MRAcquisitionType"``):
   ``3D`` -> k-space (the resolution of every axis is set by the k-space matrix), ``2D`` -> slices.
   ``meta["acquisition_stated_by"]`` names who stated it where not a file (an evaluation protocol).
2. A stated slice thickness with gaps or overlaps (:mod:`volsr.data.acquisition`): only separate
   slices have them -> slices.
3. Otherwise the geometry, from the up-sampling factors of the run (output voxels per input voxel
   per axis): all axes up-sampled alike (largest / smallest <= :data:`SIMILAR_FACTORS`)
   is the signature of a reduced 3D matrix -> k-space; anything else (one coarse axis, or axes coarser
   by different factors) -> slices, the acquisition the default network was trained for.

The reason is said in words, for the output's sidecar (``"Consistency"``: :meth:`ConsistencyChoice.record`)
and the one-line summary (:meth:`ConsistencyChoice.summary`).

Example:
    >>> choice = decide_consistency(scan, factors=(2.0, 2.0, 2.0))
    >>> choice.model, choice.reason
    ('kspace', 'no acquisition type stated; all axes up-sampled alike (x2, x2, x2): a reduced 3D matrix')
    >>> ConsistencyChoice.from_record(output.meta["consistency"]).summary()
    'consistency: k-space (no acquisition type stated; all axes up-sampled alike (x2, x2, x2): ...)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the options (volsr.api.request) check a request here without importing torch
    import torch

__all__ = [
    "MODELS",
    "REQUESTS",
    "SIMILAR_FACTORS",
    "UPSAMPLED",
    "ConsistencyChoice",
    "check_request",
    "choose_consistency_model",
    "decide_consistency",
]

#: the two forward models: thick slices, or a smaller k-space matrix
MODELS = ("slices", "kspace")
#: what ``consistency`` may be: off, on with the model chosen per scan (``True`` is ``"auto"``), one model
REQUESTS = (False, True, "auto", *MODELS)
#: largest / smallest factor up to which every axis counts as coarser by a similar factor: a reduced
#: matrix of 256 x 256 x 176 at 1 mm read at 128 x 128 x 96 has 2 x 2 x 1.83 (ratio 1.09); a thick-slice
#: scan with a slightly coarser in-plane grid (0.9 x 0.9 x 3 mm to 0.9 mm) has 1 x 1 x 3.3 (ratio 3.3)
SIMILAR_FACTORS = 1.5
#: a factor above this counts as up-sampled (output grids round to whole voxels: 1.005 is not)
UPSAMPLED = 1.05


@dataclass(frozen=True)
class ConsistencyChoice:
    """The consistency model (``"slices"``, ``"kspace"``, or ``None``: no projection), the reason in
    words, and what decided it (``"header"``, ``"geometry"``, ``"request"``: as asked, or
    ``"fallback"``: ``"auto"`` where no projection applies)."""

    model: str | None
    reason: str
    source: str

    @property
    def label(self) -> str:
        """``"k-space"``, ``"thick slices"`` or ``"off"``: the model as the summary names it."""
        return {"kspace": "k-space", "slices": "thick slices", None: "off"}[self.model]

    def summary(self) -> str:
        """E.g. ``"consistency: k-space (the DICOM header states a 3D acquisition)"``."""
        return f"consistency: {self.label} ({self.reason})"

    def record(self) -> dict:
        """What the output's sidecar records under ``"Consistency"`` (and the output MetaTensor under
        ``meta["consistency"]``): ``{"model", "reason", "source"}``."""
        return {"model": self.model, "reason": self.reason, "source": self.source}

    @classmethod
    def from_record(cls, record: dict) -> ConsistencyChoice:
        """The choice a :meth:`record` (a sidecar's ``"Consistency"``) holds."""
        return cls(record["model"], record["reason"], record["source"])


def _factors_text(factors: Sequence[float]) -> str:
    return ", ".join(f"x{f:.3g}" for f in factors)


def _checked_factors(factors: Sequence[float]) -> tuple[float, ...]:
    factors = tuple(float(f) for f in factors)
    if len(factors) != 3 or not all(f > 0 for f in factors):
        raise ValueError(f"factors must be three positive numbers, got {factors!r}")
    return factors


def check_request(consistency: bool | str) -> None:
    """Refuse a ``consistency`` that is not one of :data:`REQUESTS`, naming the value."""
    if not any(consistency is r if isinstance(r, bool) else consistency == r for r in REQUESTS):
        raise ValueError(
            f"consistency must be True, False, 'auto', 'slices' or 'kspace', got {consistency!r}"
        )


def decide_consistency(
    image: torch.Tensor, factors: Sequence[float], consistency: bool | str = "auto"
) -> ConsistencyChoice:
    """The projection ``image`` super-resolved by ``factors`` (output / input voxels per axis) gets
    under the ``consistency`` asked for (see the module doc): never an error for ``"auto"``, whose
    fallback is no projection with the reason said.

    Raises:
        ValueError: ``consistency`` is not one of :data:`REQUESTS`, or ``factors`` is not three
            positive numbers.
    """
    check_request(consistency)
    factors = _checked_factors(factors)
    if consistency is False:
        # a record read by Python and command-line users alike: it names the option both ways
        return ConsistencyChoice(None, "turned off (consistency=False / --no-consistency)", "request")
    if consistency in MODELS:
        asked = f"consistency={consistency!r} / --consistency-model {consistency}"
        return ConsistencyChoice(consistency, f"asked for ({asked})", "request")
    down = [f"axis {i} x{f:.3g}" for i, f in enumerate(factors) if f < 1.0]
    if down:
        reason = (
            f"not projected: down-sampled on {', '.join(down)}, where no output on the coarser grid "
            "reproduces the input"
        )
        return ConsistencyChoice(None, reason, "fallback")
    return choose_consistency_model(image, factors)


def choose_consistency_model(image: torch.Tensor, factors: Sequence[float]) -> ConsistencyChoice:
    """The consistency model for ``image`` super-resolved by ``factors`` (output / input voxels per
    axis, as :func:`volsr.inference.sliding_window.output_grid` gives them); see the module doc.

    Raises:
        ValueError: ``factors`` is not three positive numbers.
    """
    from volsr.data.acquisition import slice_acquisition  # numpy and torch: only when a scan is at hand

    factors = _checked_factors(factors)
    meta = getattr(image, "meta", None) or {}
    stated = meta.get("acquisition_type")
    where = meta.get("acquisition_stated_by") or (
        "the DICOM header" if meta.get("source_format") == "dicom" else "the sidecar"
    )
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
