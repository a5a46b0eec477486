"""Data consistency: make a super-resolved volume reproduce its low-resolution input exactly.

The forward model is the thick-slice acquisition of :mod:`volsr.transforms.slice_thickness` on every
axis whose size changed: along axis ``a`` with ``n_hr`` output and ``n_lr`` input voxels (same field
of view, the grids of :mod:`volsr.geometry.grids`), the ``(n_lr, n_hr)`` matrix

    D_a = slice_profile_matrix(n_hr, n_lr, thickness=n_hr / n_lr, profile)

averages contiguous slabs (``"boxcar"``: contiguous slices, thickness = spacing). Slices with gaps
or overlaps (:mod:`volsr.data.acquisition`) scale the thickness by ``thickness_ratio`` = thickness /
spacing; the slabs keep their centres, so the matrix keeps full row rank. The 3-D operator is
separable, ``D = D_0 (x) D_1 (x) D_2`` (Kronecker product), so its pseudo-inverse is too,
``D^+ = pinv(D_0) (x) pinv(D_1) (x) pinv(D_2)``, and the orthogonal projection of ``y`` onto
``{y : D y = x_lr}``

    y <- y + D^+ (x_lr - D y)

costs one small matrix product per changed axis, twice. When every ``D_a`` has full row rank (any
up-sampling, ``n_lr <= n_hr``) ``D D^+ = I`` and one projection is exact: no iterations are needed.
It is also the smallest change (in L2) that makes ``y`` consistent, and it removes only the part of
``y`` that the acquisition sees, so detail the network adds between slices is kept. An axis whose
size did not change is the identity (skipped): there the output must equal the input, so with no
axis up-sampled the projection returns ``lr`` itself. On an axis that is down-sampled
(``n_lr > n_hr``) the result is the least-squares fit.

The model is exact for data degraded by :class:`volsr.transforms.SliceThickness` when ``n_hr /
n_lr`` is the factor and ``thickness_ratio`` is ``thickness / spacing`` (1: contiguous); for a real
scan it is an assumption (a boxcar slice profile, and contiguous slices unless the header states
the thickness). Inference applies it by default where the header or the grid points to thick slices,
and :func:`project_kspace_consistent` where they point to a smaller matrix
(:mod:`volsr.inference.consistency_choice`): where the model matches the acquisition it has not
lowered PSNR on the validation volumes, and its cost is small against the network
(``benchmarks/consistency.py``).

Example:
    >>> sr = super_resolve(lr, network, scale=(1, 1, 4))
    >>> consistency_error(sr, lr)                   # e.g. 0.02
    >>> consistency_error(project_consistent(sr, lr), lr)  # ~1e-7
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from monai.data import MetaTensor

from volsr.geometry.interpolation import apply_along_axis
from volsr.geometry.meta import new_image
from volsr.transforms.slice_thickness import slice_profile_matrix

__all__ = [
    "degradation_matrices",
    "degrade_separable",
    "project_consistent",
    "project_kspace_consistent",
    "consistency_error",
]

Profile = str | Sequence[float]
Ratios = float | Sequence[float]


def _hashable(profile: Profile) -> str | tuple[float, ...]:
    return profile if isinstance(profile, str) else tuple(float(k) for k in profile)


@lru_cache(maxsize=32)
def _axis_operators(
    n_hr: int, n_lr: int, profile: str | tuple[float, ...], ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    d = slice_profile_matrix(n_hr, n_lr, thickness=ratio * n_hr / n_lr, profile=profile)  # (n_lr, n_hr)
    return d, np.linalg.pinv(d)  # (n_lr, n_hr), (n_hr, n_lr)


def _per_axis(thickness_ratio: Ratios, n: int) -> list[float]:
    if np.isscalar(thickness_ratio):
        ratios = [float(thickness_ratio)] * n
    else:
        ratios = [float(r) for r in thickness_ratio]
    if len(ratios) != n or min(ratios) <= 0:
        raise ValueError(f"thickness_ratio needs {n} positive values (or one), got {thickness_ratio!r}")
    return ratios


def degradation_matrices(
    hr_shape: Sequence[int],
    lr_shape: Sequence[int],
    profile: Profile = "boxcar",
    thickness_ratio: Ratios = 1.0,
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per spatial axis, ``(D_a, pinv(D_a))`` or ``None`` where the axis keeps its size (identity).

    ``thickness_ratio``: slice thickness over slice spacing, one for all axes or one per axis.
    """
    if len(hr_shape) != len(lr_shape):
        raise ValueError(f"hr_shape {tuple(hr_shape)} and lr_shape {tuple(lr_shape)} differ in rank")
    key = _hashable(profile)
    ratios = _per_axis(thickness_ratio, len(hr_shape))
    return [
        None if int(h) == int(low) else _axis_operators(int(h), int(low), key, r)
        for h, low, r in zip(hr_shape, lr_shape, ratios, strict=True)
    ]


def _plain(x: torch.Tensor) -> torch.Tensor:
    x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_pair(sr: torch.Tensor, lr: torch.Tensor, spatial_dims: int = 3) -> None:
    if sr.ndim < spatial_dims or sr.ndim != lr.ndim:
        raise ValueError(f"sr {tuple(sr.shape)} and lr {tuple(lr.shape)} must both be (C, X, Y, Z)")
    if sr.shape[:-spatial_dims] != lr.shape[:-spatial_dims]:
        raise ValueError(f"sr {tuple(sr.shape)} and lr {tuple(lr.shape)} differ in their leading axes")


def _apply(x: torch.Tensor, mats: list[np.ndarray | None]) -> torch.Tensor:
    """Apply one matrix per spatial axis (the last ``len(mats)`` axes of ``x``); ``None`` skips."""
    nd = len(mats)
    for i, m in enumerate(mats):
        if m is not None:
            x = apply_along_axis(x, torch.as_tensor(m), x.ndim - nd + i)
    return x


def degrade_separable(
    sr: torch.Tensor, lr_shape: Sequence[int], profile: Profile = "boxcar", thickness_ratio: Ratios = 1.0
) -> torch.Tensor:
    """``D sr``: the thick-slice model onto the grid of spatial shape ``lr_shape`` (plain tensor).

    Args:
        sr: ``(..., X, Y, Z)`` volume on the high-resolution grid.
        lr_shape: spatial shape of the low-resolution grid (same field of view).
        profile: slice profile, as in :func:`volsr.transforms.slice_profile_matrix`.
        thickness_ratio: slice thickness over spacing (1: contiguous), for all axes or per axis.
    """
    x = _plain(sr)
    ops = degradation_matrices(x.shape[-len(lr_shape) :], lr_shape, profile, thickness_ratio)
    return _apply(x, [None if op is None else op[0] for op in ops])


def project_consistent(
    sr: torch.Tensor, lr: torch.Tensor, profile: Profile = "boxcar", thickness_ratio: Ratios = 1.0
) -> torch.Tensor:
    """The volume closest to ``sr`` (L2) whose thick-slice degradation equals ``lr``.

    Args:
        sr: ``(C, X, Y, Z)`` super-resolved volume (a MetaTensor keeps its metadata and affine).
        lr: ``(C, x, y, z)`` low-resolution input on the coarser grid with the same field of view,
            in the same intensity units as ``sr``.
        profile: slice profile of the model (``"boxcar"``, ``"gaussian"`` or a kernel).
        thickness_ratio: slice thickness over spacing (1: contiguous), for all axes or per axis.

    Returns:
        ``sr + D^+ (lr - D sr)``, same shape, dtype (float32 or float64) and type as ``sr``.
    """
    _check_pair(sr, lr)
    x, target = _plain(sr), _plain(lr).to(device=sr.device)
    ops = degradation_matrices(x.shape[-3:], target.shape[-3:], profile, thickness_ratio)
    residual = target.to(x.dtype) - _apply(x, [None if op is None else op[0] for op in ops])  # (C, *S_lr)
    out = x + _apply(residual, [None if op is None else op[1] for op in ops])  # (C, *S_hr)
    return new_image(out, sr) if isinstance(sr, MetaTensor) else out


@lru_cache(maxsize=64)
def _fourier_operators(n_hr: int, n_lr: int) -> tuple[np.ndarray, np.ndarray]:
    """``(D, D^+)`` of one axis: ``D`` (``n_lr x n_hr``) is :func:`~volsr.transforms.kspace.fourier_resample`
    of each unit impulse, ``D^+`` its pseudo-inverse: the least-squares fit where the input is the finer
    grid on an axis (``n_lr > n_hr``)."""
    from volsr.transforms.kspace import fourier_resample

    impulses = torch.eye(n_hr, dtype=torch.float64)[:, :, None, None]  # (n_hr impulses, n_hr, 1, 1)
    d = fourier_resample(impulses, (n_lr, 1, 1)).as_tensor()[:, :, 0, 0].T.numpy()  # (n_lr, n_hr)
    return d, np.linalg.pinv(d)


@lru_cache(maxsize=64)
def _reduction_operators(n_hr: int, n_lr: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(E, P)`` of one reduced axis: ``E`` the complex acquisition matrix
    (:func:`~volsr.transforms.kspace.reduction_matrix`), ``P`` the projector removing the Nyquist line of
    an even ``n_lr`` (``I - v v^T / n_lr``, ``v_j = (-1)^j``), ``None`` for an odd ``n_lr`` (identity)."""
    from volsr.transforms.kspace import reduction_matrix

    e = reduction_matrix(n_hr, n_lr)
    if n_lr % 2:
        return e, None
    v = (-1.0) ** np.arange(n_lr)
    return e, np.eye(n_lr) - np.outer(v, v) / n_lr


def _complex(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


def _project_reduced(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The projection onto ``{y : Re(E y) = lr}`` for a reduced matrix on every changed axis.

    ``E = E_0 (x) E_1 (x) E_2`` has ``E E^H = c I`` (``c = prod n_lr / n_hr``) and ``E E^T = c G`` with
    ``G = P_0 (x) P_1 (x) P_2`` (the band without its Nyquist lines is the band mirrored: a scanner's even
    band has ``-n/2`` and not ``+n/2``). So ``D = Re(E)`` has ``D D^T = (c / 2)(I + G)`` and, ``G`` being a
    projector, ``(D D^T)^-1 = (2 I - G) / c``: ``D^+ r = Re(E^H (2 r - G r)) / c``, exact, separable
    matrices only. An axis whose size did not change is the identity (skipped).
    """
    n_hr, n_lr = x.shape[-3:], target.shape[-3:]
    ops = [None if m == n else _reduction_operators(n, m) for n, m in zip(n_hr, n_lr, strict=True)]
    forward = [None if op is None else torch.as_tensor(op[0]) for op in ops]
    backward = [None if op is None else torch.as_tensor(op[0].conj().T.copy()) for op in ops]
    c = math.prod(m / n for n, m in zip(n_hr, n_lr, strict=True))
    residual = target.to(x.dtype) - _apply(_complex(x), forward).real.to(x.dtype)  # (C, *S_lr)
    nyquist = [None if op is None or op[1] is None else torch.as_tensor(op[1]) for op in ops]
    removed = _apply(residual, nyquist) if any(p is not None for p in nyquist) else residual
    weighted = (2.0 * residual - removed) / c
    return x + _apply(_complex(weighted), backward).real.to(x.dtype)  # (C, *S_hr)


def project_kspace_consistent(sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """The volume closest to ``sr`` (L2) whose acquisition with ``lr``'s smaller matrix is ``lr``: the
    exact projection for a scan acquired with a smaller matrix
    (:class:`~volsr.transforms.kspace.KSpaceTruncation` with ``reduce_matrix=True`` and no window, which
    is what a scanner reconstructs: ``tests/inference/test_kspace_scanner.py``).

    It reproduces the acquired band exactly and keeps the network's fill everywhere else: the band's
    lines come out as zero-filled Fourier interpolation has them, the unacquired ones as ``sr`` has them
    (see :func:`_project_reduced`). Where ``lr`` is the finer grid on an axis, the separable
    least-squares fit of :func:`_fourier_operators` is used instead.

    Args:
        sr: ``(C, X, Y, Z)`` super-resolved volume (a MetaTensor keeps its metadata and affine).
        lr: ``(C, x, y, z)`` acquired volume on the coarser grid with the same field of view.

    Returns:
        The projected volume, same shape, dtype and type as ``sr``.
    """
    _check_pair(sr, lr)
    x, target = _plain(sr), _plain(lr).to(device=sr.device)
    pairs = list(zip(x.shape[-3:], target.shape[-3:], strict=True))
    if all(m <= n for n, m in pairs):
        out = _project_reduced(x, target)
    else:
        ops = [None if m == n else _fourier_operators(n, m) for n, m in pairs]
        residual = target.to(x.dtype) - _apply(x, [None if op is None else op[0] for op in ops])
        out = x + _apply(residual, [None if op is None else op[1] for op in ops])
    return new_image(out, sr) if isinstance(sr, MetaTensor) else out


def consistency_error(
    sr: torch.Tensor, lr: torch.Tensor, profile: Profile = "boxcar", thickness_ratio: Ratios = 1.0
) -> float:
    """Relative L2 error ``||D sr - lr|| / ||lr||`` of ``sr`` (C, X, Y, Z) against its input ``lr``.

    0 for a volume consistent with ``lr``; ``inf`` when ``lr`` is all zeros and ``D sr`` is not.
    """
    _check_pair(sr, lr)
    target = _plain(lr).double()
    predicted = degrade_separable(_plain(sr).double(), target.shape[-3:], profile, thickness_ratio)
    num, den = float(torch.linalg.vector_norm(predicted - target)), float(torch.linalg.vector_norm(target))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
