"""One run's options, from the command line (or Python) to the writer: what to read, how to resolve
it, where and how to write it, each a frozen value checked once when it is made.

Example:
    >>> request = InferRequest(
    ...     source=ScanSource(volume=0),
    ...     spacing=(1.0, 1.0, 1.0),
    ...     resolver=ResolverOptions(tta=True),
    ...     output=OutputOptions(path=Path("out"), dtype="float32"),
    ... )
    >>> infer_cohort(["scan.nii.gz"], request=request)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from volsr.errors import Option, VolsrOptionError
from volsr.inference.consistency_choice import check_request

if TYPE_CHECKING:
    import torch

__all__ = ["ResolverOptions", "ScanSource", "OutputOptions", "InferRequest"]


@dataclass(frozen=True)
class ResolverOptions:
    """How a :class:`SuperResolver` runs its network over a scan.

    Args:
        roi: sliding-window size in output voxels (coarse axis last); default: fitted to each volume
            (:func:`volsr.inference.sliding_window.plan_windows`).
        overlap: window overlap fraction with an explicit ``roi``.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        amp: bfloat16 autocast where it is native and fast (:func:`volsr.inference.devices.decide_precision`).
        progress: progress bar over windows.
        consistency: data consistency: make every output reproduce its input exactly under a model of
            the acquisition. ``"auto"`` (the default; True is the same): per scan, the model the header
            states (DICOM MRAcquisitionType or a dcm2niix sidecar: 3D -> k-space, 2D or stated gaps ->
            thick slices), else the one the grid points to (every axis up-sampled alike -> k-space,
            else thick slices), and no projection on a grid coarser than the input on some axis
            (:func:`volsr.inference.consistency_choice.decide_consistency`); ``"slices"``: boxcar
            thick slices (:func:`volsr.inference.consistency.project_consistent`); ``"kspace"``: a
            smaller acquisition matrix, keeping the acquired band of k-space
            (:func:`volsr.inference.consistency.project_kspace_consistent`); False: the network's
            output as it is. The output's sidecar says which model was used and why (``"Consistency"``).
        tta: average the network over 16 flips and in-plane swaps of each window.
        uncertainty: also make the uncertainty map (:func:`volsr.inference.sliding_window.uncertainty_map`):
            the spread of those 16 views, whose mean is then the output (so it implies ``tta``); the
            resolver then returns ``(output, map)``, and :meth:`SuperResolver.predict_file` writes the
            map beside the output.
        adapt: before restoring each scan, fine-tune a copy of the network for this many steps on
            the scan's own in-plane detail (:func:`volsr.training.adaptation.adapt`; 0: off). The
            loaded network is not changed.
        max_memory: bytes (or a size such as ``"8G"``) a scan's run may take at its peak
            (:mod:`volsr.inference.memory`); a scan whose output grid needs more is refused before
            anything is allocated. Default: the memory available when the scan starts.

    Raises:
        ValueError: a ``roi`` that is not 3 positive sizes, an ``overlap`` outside [0, 1), a
            negative ``adapt``, a ``max_memory`` below 1 byte, a ``consistency`` not named above.
    """

    roi: tuple[int, ...] | None = None
    overlap: float | None = None
    device: str | torch.device = "auto"
    amp: bool = True
    progress: bool = False
    consistency: bool | str = "auto"
    tta: bool = False
    uncertainty: bool = False
    adapt: int = 0
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        # frozen: normalising the given values once, here
        object.__setattr__(self, "roi", _window_size(self.roi))
        object.__setattr__(self, "overlap", _overlap_fraction(self.overlap))
        object.__setattr__(self, "adapt", _count(self.adapt, "adapt"))
        check_request(self.consistency)
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", _memory_size(self.max_memory))


def _option(name: str) -> Option:
    """The argument ``name`` as Python and as ``volsr infer`` spell it (``max_memory``, ``--max-memory``)."""
    return Option(name, "--" + name.replace("_", "-"))


def _finite(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise VolsrOptionError("{name} must be a finite number, got " + repr(value), name=_option(name))
    return number


def _count(value, name: str, least: int = 0) -> int:
    number = _finite(value, name)
    if number != int(number) or number < least:
        raise VolsrOptionError(
            "{name} must be a whole number >= " + f"{least}, got {value!r}", name=_option(name)
        )
    return int(number)


def _memory_size(size: int | str) -> int:
    """Bytes from a number of bytes or a size such as ``"8G"`` (:func:`volsr.inference.memory.parse_size`)."""
    from volsr.inference.memory import parse_size

    if isinstance(size, str):
        try:
            return parse_size(size, "{name}")  # names the option by the field it is given
        except ValueError as exc:
            raise VolsrOptionError(str(exc), name=_option("max_memory")) from None
    return _count(size, "max_memory", least=1)


def _window_size(roi: Sequence[int] | None) -> tuple[int, ...] | None:
    """``roi`` as 3 positive window sizes in voxels (``None``: fitted to each volume)."""
    if roi is None:
        return None
    if isinstance(roi, (str, bytes)) or len(tuple(roi)) != 3:
        raise VolsrOptionError("{name} takes 3 window sizes in voxels, got " + repr(roi), name=_option("roi"))
    return tuple(_count(r, "roi", least=1) for r in roi)


def _overlap_fraction(overlap: float | None) -> float | None:
    """``overlap`` as a fraction in [0, 1): MONAI's windows step by ``roi * (1 - overlap)``."""
    if overlap is None:
        return None
    fraction = _finite(overlap, "overlap")
    if not 0.0 <= fraction < 1.0:
        raise VolsrOptionError(
            "{name} is a fraction of the window in [0, 1), got " + repr(overlap), name=_option("overlap")
        )
    return fraction


@dataclass(frozen=True)
class ScanSource:
    """What to read of each scan: ``series`` (a SeriesInstanceUID of a DICOM folder, or ``"all"``:
    every series of each folder, each to its own output) and ``volume`` (of a 4-D image)."""

    series: str | None = None
    volume: int | None = None


@dataclass(frozen=True)
class OutputOptions:
    """Where and how outputs are written.

    Args:
        path: the output file (one scan; with ``dicom`` a series folder) or the folder of a cohort's
            outputs; ``None``: the default name (:func:`volsr.api.outputs.output_path_for`).
        dtype: ``"input"`` (the input's data type, rounded and clipped), ``"float32"``, or a type whose
            range holds the output's values.
        overwrite: replace existing outputs.
        sidecar: write the JSON sidecar recording how the output was made.
        dicom: write a new DICOM series (a folder of slices) instead of NIfTI.
        modality: ``"MR"`` or ``"CT"``: the modality of a DICOM series whose source is not DICOM.
        skip_existing: keep the outputs that exist, and skip their scans (cohorts).
    """

    path: Path | None = None
    dtype: str = "input"
    overwrite: bool = False
    sidecar: bool = True
    dicom: bool = False
    modality: str | None = None
    skip_existing: bool = False


@dataclass(frozen=True)
class InferRequest:
    """Everything one run makes of its scans: what to read (``source``), on which grid (``spacing`` in
    mm or ``scale`` factors per axis; neither: isotropic at the finest input spacing), how the network
    runs (``resolver``; ``None``: as the resolver at hand is set up) and where and how to write
    (``output``).

    Raises:
        ValueError: a ``spacing`` or ``scale`` that is not positive and finite.
    """

    source: ScanSource = field(default_factory=ScanSource)
    spacing: float | tuple[float | None, ...] | None = None
    scale: float | tuple[float, ...] | None = None
    resolver: ResolverOptions | None = None
    output: OutputOptions = field(default_factory=OutputOptions)

    def __post_init__(self) -> None:
        for name, values in (("spacing", self.spacing), ("scale", self.scale)):
            _check_positive(values, name, none_allowed=name == "spacing")

    @classmethod
    def of(
        cls,
        spacing: float | Sequence[float | None] | None = None,
        scale: float | Sequence[float] | None = None,
        dtype: str = "input",
        overwrite: bool = False,
        series_uid: str | None = None,
        volume: int | None = None,
        sidecar: bool = True,
        dicom: bool = False,
        modality: str | None = None,
        output: str | Path | None = None,
    ) -> InferRequest:
        """The request :meth:`volsr.api.resolver.SuperResolver.predict_file`'s keywords name."""
        return cls(
            source=ScanSource(series=series_uid, volume=volume),
            spacing=spacing,
            scale=scale,
            output=OutputOptions(
                path=None if output is None else Path(output), dtype=dtype, overwrite=overwrite,
                sidecar=sidecar, dicom=dicom, modality=modality,
            ),
        )  # fmt: skip

    def fingerprint(self) -> dict:
        """The options of the request that change an output (not what to do with existing ones)."""
        out = self.output
        return {
            "spacing": self.spacing, "scale": self.scale, "dtype": out.dtype, "volume": self.source.volume,
            "sidecar": out.sidecar, "dicom": out.dicom, "modality": out.modality,
        }  # fmt: skip


def _check_positive(values, name: str, none_allowed: bool) -> None:
    """Refuse a grid option (``spacing`` in mm, ``scale`` factors) that is not positive and finite, in
    one line before any scan is read (``None`` on an axis keeps that axis, for ``spacing`` only)."""
    if values is None:
        return
    items = [values] if isinstance(values, numbers.Real) else list(values)
    for v in items:
        if v is None and none_allowed:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            shown = " ".join("None" if x is None else f"{x:g}" for x in items)
            raise VolsrOptionError("{name} takes positive, finite values; got " + shown, name=_option(name))
