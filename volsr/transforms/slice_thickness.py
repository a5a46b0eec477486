"""Thick-slice acquisition along one axis: a slice profile, then sampling at the slice spacing.

Forward model along axis ``a`` with input voxel size ``d`` (mm): each output slice ``j`` is centred
at input index ``c_j = (j + 0.5) * n / m - 0.5`` (``m = round(n * d / spacing)`` slices, halves up, field of
view kept, see :mod:`volsr.geometry.grids`) and records

    lr_j = sum_i W[j, i] * hr_i

where ``T = thickness / d`` is the thickness in input voxels and ``p`` the slice profile: a boxcar of
width ``T``, a Gaussian of FWHM ``T``, or a user kernel sampled on ``len(kernel)`` equal bins across
``T``. Each input voxel ``i`` is a box ``[i - 1/2, i + 1/2]``; the profile's mass over that box,
``M[j, i] = integral over the box of p((x - c_j) / T) dx``, is placed at the profile's centroid inside
the box, ``i + delta`` with ``|delta| <= 1/2``, by linear interpolation between voxel ``i`` (weight
``1 - |delta|``) and its neighbour on the side of ``delta`` (weight ``|delta|``); rows are then
normalised to sum to one. A slab that covers whole voxels (integer factor, contiguous boxcar) is
therefore the plain mean of its ``s`` voxels, and for any factor, gap or overlap a linear ramp keeps
its value at every slice centre (with plain box weights a slab cutting a voxel would count that
voxel's part at the voxel centre and shift the slice by up to ``1 / (8 T)`` voxel). All weights are
non-negative. Near the ends the profile is truncated and renormalised (no edge darkening).
``spacing > thickness`` leaves gaps between slices, ``spacing < thickness`` overlaps them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Transform
from scipy.special import ndtr

from volsr.data.acquisition import acquisition_record
from volsr.geometry.grids import scaled_grid, voxel_spacing
from volsr.geometry.interpolation import apply_along_axis
from volsr.geometry.meta import affine_of, new_image
from volsr.transforms.arguments import (
    check_positive,
    parse_axes,
    parse_choices,
    parse_range,
)
from volsr.transforms.dictionary import ApplyToKeys, RandApplyToKeys
from volsr.transforms.drawn import DrawnTransform

__all__ = [
    "PROFILES",
    "slice_profile_matrix",
    "thickness_for_factor",
    "SliceThickness",
    "SliceThicknessd",
    "RandSliceThickness",
    "RandSliceThicknessd",
]

PROFILES = ("boxcar", "gaussian")
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _check_profile(profile: str | Sequence[float]) -> str | tuple[float, ...]:
    if isinstance(profile, str):
        parse_choices(profile, "profile", PROFILES)
        return profile
    kernel = tuple(float(k) for k in profile)
    if not kernel or min(kernel) < 0 or sum(kernel) <= 0 or not np.all(np.isfinite(kernel)):
        raise ValueError(f"profile kernel must be non-negative with a positive sum, got {profile!r}")
    return kernel


def _std_normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


def _place_at_centroids(mass: np.ndarray, moment: np.ndarray) -> np.ndarray:
    """Weights that put ``mass[:, i]`` at ``i + moment / mass`` by linear interpolation between voxels.

    The offset lies in ``[-1/2, 1/2]``; its share ``|offset|`` goes to the neighbour on its side (kept
    on voxel ``i`` at the ends of the axis, where that neighbour does not exist).
    """
    offset = np.divide(moment, mass, out=np.zeros_like(mass), where=mass > 0).clip(-0.5, 0.5)
    moved = mass * np.abs(offset)
    w = mass - moved
    to_next = np.where(offset > 0, moved, 0.0)
    to_prev = np.where(offset < 0, moved, 0.0)
    w[:, 1:] += to_next[:, :-1]
    w[:, -1] += to_next[:, -1]
    w[:, :-1] += to_prev[:, 1:]
    w[:, 0] += to_prev[:, 0]
    return w


def slice_profile_matrix(
    n_in: int, n_out: int, thickness: float, profile: str | Sequence[float] = "boxcar"
) -> np.ndarray:
    """The ``(n_out, n_in)`` thick-slice operator; ``thickness`` in input voxels (see module doc)."""
    thickness = check_positive(thickness, "thickness")
    profile = _check_profile(profile)
    step = n_in / n_out
    centres = 0.5 * step - 0.5 + step * np.arange(n_out)[:, None]  # (n_out, 1)
    index = np.arange(n_in, dtype=np.float64)[None, :]  # (1, n_in)
    lo = index - 0.5  # voxel i covers [lo, lo + 1]
    hi = lo + 1.0
    if profile == "gaussian":
        sigma = thickness * _FWHM_TO_SIGMA
        z_lo, z_hi = (lo - centres) / sigma, (hi - centres) / sigma
        mass = ndtr(z_hi) - ndtr(z_lo)
        # integral over the box of (x - i) * pdf: (c - i) * mass + sigma * (phi(z_lo) - phi(z_hi))
        moment = (centres - index) * mass + sigma * (_std_normal_pdf(z_lo) - _std_normal_pdf(z_hi))
    else:
        kernel = np.array([1.0]) if profile == "boxcar" else np.asarray(profile)
        edges = np.linspace(-thickness / 2, thickness / 2, len(kernel) + 1)
        mass = np.zeros((n_out, n_in))
        moment = np.zeros((n_out, n_in))
        for k, a, b in zip(kernel, edges[:-1], edges[1:], strict=True):
            left = np.maximum(lo, centres + a)
            right = np.minimum(hi, centres + b)
            length = np.clip(right - left, 0.0, None)
            mass += k * length
            moment += k * length * (0.5 * (left + right) - index)
    w = _place_at_centroids(mass, moment)
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(total > 0, total, 1.0)


def thickness_for_factor(image: torch.Tensor, axis: int, factor: float) -> float:
    """Slice thickness in mm that is ``factor`` times the voxel size of ``image`` along ``axis``."""
    return check_positive(factor, "factor") * float(voxel_spacing(affine_of(image))[axis])


class SliceThickness(Transform):
    """Simulate thick slices along one spatial axis of a channel-first MetaTensor.

    Args:
        axis: spatial axis (0, 1 or 2; the channel axis is not counted) of the slices.
        thickness: slice thickness in mm (the profile's width; FWHM for ``"gaussian"``).
        spacing: distance between slice centres in mm; default ``thickness`` (contiguous slices).
        profile: ``"boxcar"``, ``"gaussian"`` or a 1-D kernel sampled across the thickness.

    The output has ``round(n * d / spacing)`` slices (halves up) on the field-of-view-keeping grid, with its
    affine updated; ``meta["degradation"]`` gains a record of the parameters and
    ``meta["slice_acquisition"]`` states the thickness (:mod:`volsr.data.acquisition`).

    Example:
        >>> lr = SliceThickness(axis=2, thickness=4.0)(hr)  # 1 mm -> 4 mm contiguous slices
    """

    backend = [torch.Tensor]

    def __init__(
        self,
        axis: int,
        thickness: float,
        spacing: float | None = None,
        profile: str | Sequence[float] = "boxcar",
    ) -> None:
        axes = parse_axes(axis, "axis")
        if len(axes) != 1:
            raise ValueError(f"axis must be a single spatial axis, got {axis!r}")
        self.axis = axes[0]
        self.thickness = check_positive(thickness, "thickness")
        self.spacing = self.thickness if spacing is None else check_positive(spacing, "spacing")
        self.profile = _check_profile(profile)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        affine = affine_of(img)
        d = float(voxel_spacing(affine)[self.axis])
        n_in = img.shape[1 + self.axis]
        scale = [1.0, 1.0, 1.0]
        scale[self.axis] = d / self.spacing
        new_affine, new_shape = scaled_grid(affine, img.shape[1:], scale)
        w = slice_profile_matrix(n_in, new_shape[self.axis], self.thickness / d, self.profile)
        data = img.as_tensor() if hasattr(img, "as_tensor") else img
        out = apply_along_axis(data.float(), torch.as_tensor(w), 1 + self.axis)
        record = {
            "name": "slice_thickness",
            "axis": self.axis,
            "thickness_mm": self.thickness,
            "spacing_mm": self.spacing,
            "profile": self.profile if isinstance(self.profile, str) else list(self.profile),
        }
        history = list(img.meta.get("degradation", [])) if hasattr(img, "meta") else []
        acquired = acquisition_record(self.thickness, new_affine, self.axis)  # volsr.data.acquisition
        return new_image(out, img, new_affine, degradation=history + [record], slice_acquisition=acquired)


class RandSliceThickness(DrawnTransform):
    """Thick slices with a random axis, factor and profile; the factor is relative to the voxel size.

    Draws ``axis`` uniformly from ``axes``, ``factor ~ U(factor)``, ``profile`` uniformly from
    ``profiles`` and ``gap ~ U(gap)``, then applies :class:`SliceThickness` with
    ``thickness = factor * d_axis`` and ``spacing = gap * thickness``.
    With probability ``1 - prob`` the image is returned unchanged.
    """

    backend = SliceThickness.backend

    def __init__(
        self,
        prob: float = 1.0,
        axes: int | Sequence[int] = (0, 1, 2),
        factor: float | Sequence[float] = (2.0, 5.0),
        profiles: str | Sequence[str] = PROFILES,
        gap: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__(prob)
        self.axes = parse_axes(axes, "axes")
        self.factor = parse_range(factor, "factor", min_value=1.0)
        self.profiles = parse_choices(profiles, "profiles", PROFILES)
        self.gap = parse_range(gap, "gap", min_value=1e-3)

    def draw(self) -> dict:
        return {
            "axis": int(self.R.choice(self.axes)),
            "factor": float(self.R.uniform(*self.factor)),
            "profile": str(self.R.choice(self.profiles)),
            "gap": float(self.R.uniform(*self.gap)),
        }

    def transform_for(self, img: torch.Tensor, params: dict) -> SliceThickness:
        p = params
        thickness = thickness_for_factor(img, p["axis"], p["factor"])
        return SliceThickness(p["axis"], thickness, p["gap"] * thickness, p["profile"])


class SliceThicknessd(ApplyToKeys):
    """Dictionary version of :class:`SliceThickness`; the same slices for every key."""

    backend = SliceThickness.backend

    def __init__(
        self,
        keys,
        axis: int,
        thickness: float,
        spacing: float | None = None,
        profile: str | Sequence[float] = "boxcar",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SliceThickness(axis, thickness, spacing, profile)


class RandSliceThicknessd(RandApplyToKeys):
    """Dictionary version of :class:`RandSliceThickness`: one draw shared by all keys."""

    backend = SliceThickness.backend

    def __init__(
        self,
        keys,
        prob: float = 1.0,
        axes: int | Sequence[int] = (0, 1, 2),
        factor: float | Sequence[float] = (2.0, 5.0),
        profiles: str | Sequence[str] = PROFILES,
        gap: float | Sequence[float] = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            allow_missing_keys=allow_missing_keys,
            rand=RandSliceThickness(prob, axes, factor, profiles, gap),
        )
