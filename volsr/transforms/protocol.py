"""Degradation protocols: one fixed, named way to turn a high-resolution scan into a low-resolution one.

A protocol is a frozen value: :class:`ThickSlices` (thick slices along one axis) or :class:`KSpace`
(a reduced acquisition matrix). Evaluation, validation during training, the benchmarks and
``volsr degrade`` / ``volsr evaluate`` all take one. Each has

- ``name``: the label reports and results are keyed by (``"thick x4 axis 2 boxcar"``,
  ``"k-space 0.5 axes 012"``);
- ``transform()``: the MONAI transform that applies it (:class:`~volsr.transforms.SliceThickness`,
  :class:`~volsr.transforms.KSpaceTruncation`);
- ``to_dict()`` / :func:`protocol_from_dict`: the JSON form that bundle configs, evaluation reports
  and training checkpoints hold, ``{"kind": "thickness", "axis": 2, "factor": 4.0, "profile": "boxcar"}``
  or ``{"kind": "kspace", "fraction": 0.5, "axes": [0, 1, 2], "window": "none"}``.

Example:
    >>> from volsr.transforms.protocol import ThickSlices
    >>> p = ThickSlices(axis=2, factor=4)
    >>> p.name
    'thick x4 axis 2 boxcar'
    >>> lr = p.transform()(hr)  # 4 x the voxel size along axis 2, contiguous boxcar slices
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from monai.transforms import Transform

from volsr.transforms.arguments import check_positive, parse_axes, parse_choices
from volsr.transforms.kspace import WINDOWS, KSpaceTruncation
from volsr.transforms.slice_thickness import PROFILES, SliceThickness, thickness_for_factor

__all__ = ["ThickSlices", "KSpace", "Protocol", "QUALITY_BAR", "as_protocol", "protocol_from_dict"]


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass's own field in __post_init__


@dataclass(frozen=True)
class ThickSlices:
    """Thick slices along one spatial axis.

    Args:
        axis: spatial axis (0, 1 or 2) across the slices.
        factor: slice thickness as a multiple of the scan's voxel size along ``axis``.
        thickness: slice thickness in mm (FWHM for ``"gaussian"``); give it or ``factor``, not both.
        profile: ``"boxcar"`` or ``"gaussian"``.
        spacing_factor: distance between slice centres / thickness: 1 contiguous, > 1 gaps, < 1 overlaps.
    """

    axis: int = 2
    factor: float | None = None
    thickness: float | None = None
    profile: str = "boxcar"
    spacing_factor: float = 1.0
    kind: Literal["thickness"] = field(default="thickness", init=False)

    def __post_init__(self) -> None:
        axes = parse_axes(self.axis, "axis")
        if len(axes) != 1:
            raise ValueError(f"axis must be a single spatial axis, got {self.axis!r}")
        _set(self, "axis", axes[0])
        if (self.factor is None) == (self.thickness is None):
            raise ValueError(
                f"give one of factor and thickness, got factor={self.factor!r}, thickness={self.thickness!r}"
            )
        if self.factor is not None:
            _set(self, "factor", check_positive(self.factor, "factor"))
        if self.thickness is not None:
            _set(self, "thickness", check_positive(self.thickness, "thickness"))
        _set(self, "profile", parse_choices(self.profile, "profile", PROFILES)[0])
        _set(self, "spacing_factor", check_positive(self.spacing_factor, "spacing_factor"))

    @property
    def name(self) -> str:
        """``"thick x4 axis 2 boxcar"``, ``"thick 3 mm axis 0 gaussian"``, ``"... spacing x1.5"``."""
        size = f"x{self.factor:g}" if self.factor is not None else f"{self.thickness:g} mm"
        name = f"thick {size} axis {self.axis} {self.profile}"
        return name if self.spacing_factor == 1.0 else f"{name} spacing x{self.spacing_factor:g}"

    def transform(self) -> Transform:
        """The transform that applies this protocol to a channel-first MetaTensor."""
        if self.thickness is None:
            return _RelativeSliceThickness(self.axis, self.factor, self.spacing_factor, self.profile)
        return SliceThickness(self.axis, self.thickness, self.spacing_factor * self.thickness, self.profile)

    def to_dict(self) -> dict:
        size = {"factor": self.factor} if self.factor is not None else {"thickness": self.thickness}
        out = {"kind": self.kind, "axis": self.axis, **size, "profile": self.profile}
        if self.spacing_factor != 1.0:
            out["spacing_factor"] = self.spacing_factor
        return out


@dataclass(frozen=True)
class KSpace:
    """A reduced acquisition matrix: only the central ``fraction`` of k-space lines along ``axes``.

    Args:
        fraction: share of the lines kept along each axis, in (0, 1].
        axes: spatial axes truncated.
        window: apodisation over the kept band, one of :data:`volsr.transforms.kspace.WINDOWS`.
        reduce_matrix: write the smaller matrix (same field of view), as a scanner does; ``False``
            keeps the original grid (a blurred image, the same size).
    """

    fraction: float
    axes: tuple[int, ...] = (0, 1, 2)
    window: str = "none"
    reduce_matrix: bool = True
    kind: Literal["kspace"] = field(default="kspace", init=False)

    def __post_init__(self) -> None:
        fraction = check_positive(self.fraction, "fraction")
        if fraction > 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        _set(self, "fraction", fraction)
        _set(self, "axes", parse_axes(self.axes, "axes"))
        if not isinstance(self.window, str):
            raise ValueError(f"window must be one of {list(WINDOWS)}, got {self.window!r}")
        _set(self, "window", parse_choices(self.window, "window", WINDOWS)[0])
        if not isinstance(self.reduce_matrix, bool):
            raise ValueError(f"reduce_matrix must be True or False, got {self.reduce_matrix!r}")

    @property
    def name(self) -> str:
        """``"k-space 0.5 axes 012"``."""
        return f"k-space {self.fraction:.2g} axes {''.join(str(a) for a in self.axes)}"

    def transform(self) -> Transform:
        """The transform that applies this protocol to a channel-first MetaTensor."""
        return KSpaceTruncation(self.fraction, self.axes, self.window, reduce_matrix=self.reduce_matrix)

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "fraction": self.fraction, "axes": list(self.axes), "window": self.window}
        if not self.reduce_matrix:
            out["reduce_matrix"] = False
        return out


Protocol = ThickSlices | KSpace
#: the project's quality bar: x4 boxcar thick slices along axis 2 (``volsr evaluate`` and validation)
QUALITY_BAR = ThickSlices(axis=2, factor=4.0)
_KINDS: dict[str, type] = {"thickness": ThickSlices, "kspace": KSpace}


def protocol_from_dict(d: Mapping) -> Protocol:
    """A protocol from its JSON form (:meth:`ThickSlices.to_dict` / :meth:`KSpace.to_dict`), or from
    the ``dataclasses.asdict`` form a training checkpoint stores (``None`` for the size not given).

    A dict without ``"kind"`` is thick slices with ``factor`` 4 unless it says otherwise: the untyped
    form of ``TrainConfig.val_protocol`` (axis, profile, factor) that training checkpoints may hold.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"protocol must be a dict with a 'kind', got {d!r}")
    values = {k: v for k, v in d.items() if v is not None}
    kind = values.pop("kind", "thickness")
    if kind not in _KINDS:
        raise ValueError(f"protocol kind must be one of {list(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    allowed = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(
            f"{kind} protocol has no {', '.join(unknown)} (it takes {', '.join(sorted(allowed))})"
        )
    if cls is ThickSlices and "factor" not in values and "thickness" not in values:
        values["factor"] = 4.0
    return cls(**values)


def as_protocol(value: Protocol | Mapping) -> Protocol:
    """``value`` itself when it is a protocol, else :func:`protocol_from_dict` of it."""
    return value if isinstance(value, (ThickSlices, KSpace)) else protocol_from_dict(value)


class _RelativeSliceThickness(Transform):
    """:class:`SliceThickness` whose thickness is ``factor`` x each image's own voxel size (hand-written:
    that size is only known per image, and RandSliceThickness would draw where nothing is random)."""

    backend = SliceThickness.backend

    def __init__(self, axis: int, factor: float, spacing_factor: float, profile: str) -> None:
        self.axis, self.factor, self.spacing_factor, self.profile = axis, factor, spacing_factor, profile

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        thickness = thickness_for_factor(img, self.axis, self.factor)
        return SliceThickness(self.axis, thickness, self.spacing_factor * thickness, self.profile)(img)
