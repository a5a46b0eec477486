"""A smaller acquisition matrix: keep the central k-space lines, optionally on the reduced grid.

Forward model along each chosen axis ``a`` with ``n`` voxels: the image ``x`` is transformed to k-space
``X_k`` (DFT, integer frequency ``k`` in ``[-n/2, n/2)``), only the ``n_keep = round(fraction * n)``
central lines are kept, apodised by a window ``h``, and transformed back:

    y = Re( IDFT( w * X ) ),    w_k = prod_a h(k_a / n_keep_a) * b_a(k_a),

where ``b_a = 1`` on the lines a scanner acquires, ``k = -(n_keep // 2) ... (n_keep - 1) // 2``
(centred on DC for an odd ``n_keep``; for an even one the band cannot be centred and the line
``-n_keep/2`` is acquired, ``+n_keep/2`` not), and ``0`` outside. The reconstruction of that asymmetric
band is complex even for a real object; its real part is the image (the linear model of the acquired
data; for a real object it equals the acquisition of the Hermitian-symmetric weights
``(w_k + w_-k) / 2``, which along one axis splits each edge line ``+-n_keep/2`` into halves, and at the
corners of two or more even bands gives ``1/2`` to the diagonal corners ``(-,-)``, ``(+,+)`` and ``0``
to the others). Windows over the band position ``u = k / n_keep`` in ``[-1/2, 1/2]``: ``none``
(``h = 1``), ``hamming`` (``h = 0.54 + 0.46 cos(2 pi u)``) and ``tukey`` with ``alpha = 0.5`` (flat for
``|u| <= 1/4``, a cosine taper to zero at ``|u| = 1/2``); every window has ``h(0) = 1``, so the mean is
kept.

Partial Fourier (``partial_fourier = p < 1``) acquires only ``n_acq = round(p * n_keep)`` lines of the
band along the *first* chosen axis: the highest ones, ``k = (n_keep - 1) // 2 - n_acq + 1 ...
(n_keep - 1) // 2`` (DC and the positive side; at least half the band). The rest is zero-filled and the
magnitude ``|IDFT(w * X)|`` is taken instead of the real part, as an MRI reconstruction does.

Output grid: the original one (zero-filled reconstruction, same affine), or with
``reduce_matrix=True`` the ``n_keep``-voxel grid over the same field of view
(:func:`volsr.geometry.grids.scaled_grid`, scale ``n_keep / n``). The reduced image samples the *same*
band-limited function ``f(x) = (1/n) sum_k w_k X_k exp(2 pi i k x / n)`` at the reduced voxel centres
``c_j = (j + 1/2) n / n_keep - 1/2`` (input index units), so intensities are kept (the mean exactly):
what a scanner reconstructs from those lines on its smaller matrix, voxel ``j`` covering input voxels
``j s ... j s + s - 1`` for an integer factor ``s`` (``tests/inference/test_kspace_scanner.py`` checks this
against an independent scanner model). :func:`fourier_resample` is the same operator without a
window: zero-filled ("sinc") interpolation, the classical Fourier baseline.

Hand-written with ``torch.fft`` rather than ``monai.data.fft_utils``: those helpers transform every
spatial axis at once and also shift the image origin, while this needs per-axis bands and folding.
MONAI's ``GibbsNoise`` is a spherical mask on the same grid, not a per-axis reduced matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Transform

from volsr.geometry.grids import scaled_grid
from volsr.geometry.meta import affine_of, new_image
from volsr.transforms.arguments import parse_axes, parse_choices, parse_range
from volsr.transforms.dictionary import ApplyToKeys, RandApplyToKeys
from volsr.transforms.drawn import DrawnTransform

__all__ = [
    "WINDOWS",
    "window_profile",
    "kspace_weights",
    "fourier_resample",
    "reduction_matrix",
    "KSpaceTruncation",
    "KSpaceTruncationd",
    "RandKSpaceTruncation",
    "RandKSpaceTruncationd",
]

WINDOWS = ("none", "hamming", "tukey")
_TUKEY_ALPHA = 0.5


def window_profile(u: np.ndarray, window: str = "none") -> np.ndarray:
    """Apodisation ``h(u)`` at band position ``u = k / n_keep`` (``|u| <= 1/2``); ``h(0) = 1``."""
    parse_choices(window, "window", WINDOWS)
    u = np.abs(np.asarray(u, dtype=np.float64))
    if window == "hamming":
        return 0.54 + 0.46 * np.cos(2.0 * np.pi * u)
    if window == "tukey":
        flat = (1.0 - _TUKEY_ALPHA) / 2.0
        taper = 0.5 * (1.0 + np.cos(2.0 * np.pi / _TUKEY_ALPHA * (u - flat)))
        return np.where(u <= flat, 1.0, taper)
    return np.ones_like(u)


def _labels(n: int) -> np.ndarray:
    """Integer frequencies of the ``n`` DFT bins in FFT order (``-n/2`` for the Nyquist bin)."""
    return np.rint(np.fft.fftfreq(n) * n).astype(np.int64)


def kspace_weights(n: int, n_keep: int, window: str = "none", acquired: int | None = None) -> np.ndarray:
    """The weights ``w_k`` of the ``n`` DFT bins (FFT order) of the lines acquired when ``n_keep``
    central lines are kept: ``h(k / n_keep)`` on ``k = -(n_keep // 2) ... (n_keep - 1) // 2``, 0 elsewhere.

    For an even ``n_keep`` the band is asymmetric (``-n_keep/2`` in, ``+n_keep/2`` out); the real part
    of the reconstruction makes the weights the image sees Hermitian-symmetric (see the module doc).

    Args:
        n: number of voxels (and DFT bins) along the axis.
        n_keep: number of k-space lines kept, ``1 <= n_keep <= n``.
        window: apodisation over the band, one of :data:`WINDOWS`.
        acquired: lines acquired under partial Fourier (the highest ``acquired`` lines of the band);
            ``None`` acquires the whole band.
    """
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in 1..{n}, got {n_keep}")
    k = _labels(n)
    lo, hi = -(n_keep // 2), (n_keep - 1) // 2
    if acquired is not None:
        lo = hi - int(acquired) + 1
    h = window_profile(k / n_keep, window)
    return np.where((k >= lo) & (k <= hi), h, 0.0)


def _along(vec: np.ndarray, dim: int, ndim: int, like: torch.Tensor) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = len(vec)
    return torch.as_tensor(vec, device=like.device).reshape(shape).to(like.dtype)


def _regrid_spectrum(spec: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    """Spectrum of the ``n_out``-voxel field-of-view-keeping grid sampling the band-limited function.

    Each input bin keeps its integer frequency ``k`` (``-n/2`` for an even ``n``'s Nyquist bin, the
    line a scanner acquires) and moves to bin ``k mod n_out``, with the phase of the shifted voxel
    centres. ``spec`` must vanish outside ``-n_out/2 <= k < n_out/2`` along ``dim`` (else the fold
    aliases); the caller takes the real part at the end.
    """
    n = spec.shape[dim]
    ks = np.arange(-(n // 2), (n - 1) // 2 + 1)  # every bin once
    delta = 0.5 * n / n_out - 0.5  # first output centre, in input index units
    factor = np.exp(2j * np.pi * ks * delta / n) * (n_out / n)
    ext = spec.index_select(dim, torch.as_tensor(ks % n, device=spec.device))
    ext = ext * _along(factor, dim, spec.ndim, spec)
    shape = list(spec.shape)
    shape[dim] = n_out
    out = torch.zeros(shape, dtype=spec.dtype, device=spec.device)
    return out.index_add_(dim, torch.as_tensor(ks % n_out, device=spec.device), ext)


def _float(img: torch.Tensor) -> torch.Tensor:
    data = img.as_tensor() if hasattr(img, "as_tensor") else img
    return data if data.is_floating_point() else data.float()


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def fourier_resample(image: torch.Tensor, new_shape: Sequence[int]) -> torch.Tensor:
    """Zero-filled Fourier ("sinc") re-gridding of a channel-first image to ``new_shape`` voxels.

    The output grid keeps the field of view (:func:`volsr.geometry.grids.scaled_grid`); each output voxel
    is the real part of the trigonometric interpolant of the input sampled at its centre. Up-sampling
    zero-pads the spectrum (an even input's Nyquist line at ``-n/2``, where a scanner acquires it, so the
    real part splits it over ``+-n/2``); down-sampling first keeps the ``n_out`` central lines
    (:class:`KSpaceTruncation` with ``reduce_matrix=True``). The mean is kept.

    Args:
        image: ``(C, X, Y, Z)`` tensor or MetaTensor.
        new_shape: output spatial shape (voxels per axis).

    Returns:
        A MetaTensor with the new affine.

    Example:
        >>> up = fourier_resample(lr, (128, 128, 128))  # Fourier baseline for x4 along z
    """
    spatial = tuple(image.shape[1:])
    new_shape = tuple(int(s) for s in new_shape)
    if len(new_shape) != len(spatial) or min(new_shape) < 1:
        raise ValueError(f"new_shape must give {len(spatial)} positive sizes, got {new_shape!r}")
    data = _float(image)
    dims = [1 + a for a, (n, m) in enumerate(zip(spatial, new_shape, strict=True)) if n != m]
    new_affine, grid_shape = scaled_grid(
        affine_of(image), spatial, [m / n for n, m in zip(spatial, new_shape, strict=True)]
    )
    if grid_shape != new_shape:
        raise RuntimeError(f"grid shape {grid_shape} differs from the requested {new_shape}")
    if not dims:
        return new_image(data.clone(), image, new_affine)
    spec = torch.fft.fftn(data.to(_complex_dtype(data.dtype)), dim=dims)
    for dim in dims:
        n, m = spatial[dim - 1], new_shape[dim - 1]
        if m < n:
            spec = spec * _along(kspace_weights(n, m), dim, spec.ndim, spec)
        spec = _regrid_spectrum(spec, dim, m)
    out = torch.fft.ifftn(spec, dim=dims).real.to(data.dtype)
    return new_image(out, image, new_affine)


def reduction_matrix(n: int, n_keep: int) -> np.ndarray:
    """The complex ``(n_keep, n)`` matrix ``E`` of one axis of the reduced acquisition before its real
    part: ``KSpaceTruncation(n_keep / n, reduce_matrix=True)`` along that axis is ``Re(E x)``, and on
    several axes ``Re(E_0 E_1 E_2 x)`` (the real part taken once, at the end). ``E E^H = (n_keep / n) I``.
    """
    eye = torch.eye(n, dtype=torch.complex128)  # row i: the unit impulse at voxel i
    spec = torch.fft.fft(eye, dim=1) * _along(kspace_weights(n, n_keep), 1, 2, eye)
    return torch.fft.ifft(_regrid_spectrum(spec, 1, n_keep), dim=1).numpy().T


def _check_fraction(value: float, name: str = "fraction") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not np.isfinite(v) or not 0.0 < v <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


def _check_partial_fourier(value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"partial_fourier must be a number in [0.5, 1], got {value!r}") from None
    if not np.isfinite(v) or not 0.5 <= v <= 1.0:
        raise ValueError(f"partial_fourier must be in [0.5, 1], got {value!r}")
    return v


def _check_bool(value: bool, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class KSpaceTruncation(Transform):
    """Keep the central k-space lines along chosen axes (a smaller acquisition matrix).

    Args:
        fraction: fraction of k-space lines kept, in ``(0, 1]``: one value for all ``axes`` or one
            per axis; ``round(fraction * n)`` lines (at least one) are kept. The resolution becomes
            ``n / n_keep`` times coarser (e.g. 0.5 at 1 mm -> 2 mm nominal resolution).
        axes: spatial axes (0, 1, 2; channel not counted) truncated.
        window: apodisation over the kept band: ``"none"``, ``"hamming"`` or ``"tukey"`` (alpha 0.5).
        partial_fourier: fraction of the kept band acquired along the first of ``axes``, in
            ``[0.5, 1]``; below 1 the reconstruction is zero-filled and its magnitude is returned.
        reduce_matrix: return the ``n_keep``-voxel grid (field of view kept, affine updated) instead of
            the zero-filled original grid.

    See the module docstring for the forward model. ``meta["degradation"]`` gains a record.

    Example:
        >>> lr = KSpaceTruncation(0.5, axes=(0, 1), window="hamming", reduce_matrix=True)(hr)
    """

    backend = [torch.Tensor]

    def __init__(
        self,
        fraction: float | Sequence[float],
        axes: int | Sequence[int] = (0, 1, 2),
        window: str = "none",
        partial_fourier: float = 1.0,
        reduce_matrix: bool = False,
    ) -> None:
        self.axes = parse_axes(axes, "axes")
        if np.isscalar(fraction):
            fractions = [fraction] * len(self.axes)
        else:
            fractions = list(fraction)  # type: ignore[arg-type]
            if len(fractions) != len(self.axes):
                raise ValueError(
                    f"fraction needs one value or one per axis ({len(self.axes)}), got {fraction!r}"
                )
        self.fraction = tuple(_check_fraction(f) for f in fractions)
        if not isinstance(window, str):
            raise ValueError(f"window must be one of {list(WINDOWS)}, got {window!r}")
        self.window = parse_choices(window, "window", WINDOWS)[0]
        self.partial_fourier = _check_partial_fourier(partial_fourier)
        self.reduce_matrix = _check_bool(reduce_matrix, "reduce_matrix")

    def lines(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Number of k-space lines kept along each of ``axes`` for a spatial ``shape``."""
        return tuple(max(1, round(f * shape[a])) for a, f in zip(self.axes, self.fraction, strict=True))

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        spatial = tuple(img.shape[1:])
        data = _float(img)
        lines = self.lines(spatial)
        partial = False
        plan = []  # (dim, n_keep, weights or None when all ones)
        for i, (axis, n_keep) in enumerate(zip(self.axes, lines, strict=True)):
            n = spatial[axis]
            acquired = None
            if i == 0 and self.partial_fourier < 1.0:
                acquired = max((n_keep - 1) // 2 + 1, round(self.partial_fourier * n_keep))
                acquired = None if acquired >= n_keep else acquired
            partial = partial or acquired is not None
            w = kspace_weights(n, n_keep, self.window, acquired)
            plan.append((1 + axis, n_keep, None if np.all(w == 1.0) else w))
        scale = [1.0] * len(spatial)
        if self.reduce_matrix:
            for dim, n_keep, _ in plan:
                scale[dim - 1] = n_keep / spatial[dim - 1]
        new_affine, new_shape = scaled_grid(affine_of(img), spatial, scale)
        if self.reduce_matrix and any(new_shape[dim - 1] != n_keep for dim, n_keep, _ in plan):
            raise RuntimeError(f"reduced grid {new_shape} does not match the kept lines {lines}")
        dims = [dim for dim, n_keep, w in plan if w is not None or new_shape[dim - 1] != spatial[dim - 1]]
        if dims:
            spec = torch.fft.fftn(data.to(_complex_dtype(data.dtype)), dim=dims)
            for dim, n_keep, w in plan:
                if w is not None:
                    spec = spec * _along(w, dim, spec.ndim, spec)
                if new_shape[dim - 1] != spatial[dim - 1]:
                    spec = _regrid_spectrum(spec, dim, n_keep)
            rec = torch.fft.ifftn(spec, dim=dims)
            out = (rec.abs() if partial else rec.real).to(data.dtype)
        else:
            out = data.clone()
        record = {
            "name": "kspace_truncation",
            "axes": list(self.axes),
            "fraction": list(self.fraction),
            "lines": list(lines),
            "window": self.window,
            "partial_fourier": self.partial_fourier,
            "reduce_matrix": self.reduce_matrix,
        }
        history = list(img.meta.get("degradation", [])) if hasattr(img, "meta") else []
        return new_image(out, img, new_affine, degradation=history + [record])


class RandKSpaceTruncation(DrawnTransform):
    """K-space truncation with a random fraction, window and partial-Fourier factor.

    Draws ``fraction ~ U(fraction)`` once for all ``axes`` (or independently per axis with
    ``per_axis=True``), ``window`` uniformly from ``windows`` and ``partial_fourier ~
    U(partial_fourier)``, then applies :class:`KSpaceTruncation`. With probability ``1 - prob`` the
    image is returned unchanged.

    Args:
        prob: probability of applying the transform.
        fraction: ``(min, max)`` fraction of lines kept, within ``(0, 1]``, or a fixed number.
        axes: spatial axes truncated (all of them, together).
        per_axis: draw one fraction per axis instead of one shared value.
        windows: window choices, among ``"none"``, ``"hamming"``, ``"tukey"``.
        partial_fourier: ``(min, max)`` within ``[0.5, 1]``, or a fixed number (1: off).
        reduce_matrix: output on the reduced grid (see :class:`KSpaceTruncation`).
    """

    backend = KSpaceTruncation.backend

    def __init__(
        self,
        prob: float = 1.0,
        fraction: float | Sequence[float] = (0.4, 0.7),
        axes: int | Sequence[int] = (0, 1, 2),
        per_axis: bool = False,
        windows: str | Sequence[str] = WINDOWS,
        partial_fourier: float | Sequence[float] = 1.0,
        reduce_matrix: bool = False,
    ) -> None:
        super().__init__(prob)
        self.fraction = parse_range(fraction, "fraction", max_value=1.0)
        _check_fraction(self.fraction[0])
        self.axes = parse_axes(axes, "axes")
        self.per_axis = _check_bool(per_axis, "per_axis")
        self.windows = parse_choices(windows, "windows", WINDOWS)
        self.partial_fourier = parse_range(partial_fourier, "partial_fourier", min_value=0.5, max_value=1.0)
        self.reduce_matrix = _check_bool(reduce_matrix, "reduce_matrix")

    def draw(self) -> dict:
        if self.per_axis:
            fraction = [float(f) for f in self.R.uniform(*self.fraction, size=len(self.axes))]
        else:
            fraction = [float(self.R.uniform(*self.fraction))] * len(self.axes)
        return {
            "fraction": fraction,
            "window": str(self.R.choice(self.windows)),
            "partial_fourier": float(self.R.uniform(*self.partial_fourier)),
        }

    def transform_for(self, img: torch.Tensor, params: dict) -> KSpaceTruncation:
        p = params
        return KSpaceTruncation(
            p["fraction"], self.axes, p["window"], p["partial_fourier"], self.reduce_matrix
        )


class KSpaceTruncationd(ApplyToKeys):
    """Dictionary version of :class:`KSpaceTruncation`; the same truncation for every key."""

    backend = KSpaceTruncation.backend

    def __init__(
        self,
        keys,
        fraction: float | Sequence[float],
        axes: int | Sequence[int] = (0, 1, 2),
        window: str = "none",
        partial_fourier: float = 1.0,
        reduce_matrix: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KSpaceTruncation(fraction, axes, window, partial_fourier, reduce_matrix)


class RandKSpaceTruncationd(RandApplyToKeys):
    """Dictionary version of :class:`RandKSpaceTruncation`: one draw shared by all keys."""

    backend = KSpaceTruncation.backend

    def __init__(
        self,
        keys,
        prob: float = 1.0,
        fraction: float | Sequence[float] = (0.4, 0.7),
        axes: int | Sequence[int] = (0, 1, 2),
        per_axis: bool = False,
        windows: str | Sequence[str] = WINDOWS,
        partial_fourier: float | Sequence[float] = 1.0,
        reduce_matrix: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            allow_missing_keys=allow_missing_keys,
            rand=RandKSpaceTruncation(
                prob, fraction, axes, per_axis, windows, partial_fourier, reduce_matrix
            ),
        )
