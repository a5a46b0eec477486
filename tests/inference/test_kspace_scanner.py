"""The k-space data-consistency projection checked against a scanner model written here with numpy alone.

The scanner (issue 32): a volume ``x`` of ``n = s m`` voxels per reduced axis is acquired on an
``m``-voxel matrix over the same field of view (integer factor ``s``). Per axis: centre the spectrum
(``fftshift``), crop the ``m`` central lines (even ``m``: ``-m/2 ... m/2 - 1``, odd ``m``:
``-(m-1)/2 ... (m-1)/2``), inverse FFT at the small size, voxel ``j`` centred at fine index
``c_j = j s + (s - 1)/2``, the centre of the ``s`` fine voxels it covers.

Why the phase ramp: the inverse FFT at the small size samples the band-limited function
``f(u) = (1/n) sum_k X_k exp(2 pi i k u / n)`` at ``u = j n / m = j s``; placing voxel ``j`` at
``j s + (s - 1)/2`` multiplies line ``k`` by ``exp(2 pi i k (s - 1) / (2 n))`` first. The ``m / n`` factor
keeps intensities (``f`` has the mean of ``x``). A crop of an even band is asymmetric, so the coarse
image of a real volume is complex; its real part is the image, the linear model of the acquired
data (for a real object it is the acquisition of the Hermitian-symmetric weights ``(B(k) + B(-k)) / 2``
of the acquired box ``B``: halves on both edges of one even band, halves on the diagonal corners
``(-,-)``, ``(+,+)`` and nothing on ``(-,+)``, ``(+,-)`` where two even bands meet).

What follows from it, and is asserted:

- volsr's :class:`~volsr.transforms.kspace.KSpaceTruncation` (``reduce_matrix=True``) is this scanner:
  the same values, and its affine puts voxel ``j`` at the world position of fine index ``c_j``;
- the projection :func:`~volsr.inference.consistency.project_kspace_consistent` of any volume onto a
  coarse scan ``lr``, acquired again by the scanner, gives ``lr`` to float precision;
- its lines inside the band (every axis strictly inside ``|k| < m/2``) are the zero-filled Fourier
  interpolation's (the acquired lines placed in an otherwise empty spectrum: here, with numpy), while
  outside the band it keeps what the network put there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import oblique_affine
from monai.data import MetaTensor

from volsr.geometry.meta import affine_of
from volsr.inference.consistency import project_kspace_consistent
from volsr.transforms.kspace import KSpaceTruncation, fourier_resample

#: coarse matrices: odd and even sizes on every axis, both orders
COARSE = [(7, 6, 5), (4, 5, 6)]
AXES = [(0,), (2,), (0, 1), (1, 2), (0, 1, 2)]
UNTOUCHED = 9  # size of an axis the scanner does not reduce


def _phase(n: int, m: int, s: int, axis: int, ndim: int) -> np.ndarray:
    k = np.arange(m) - m // 2  # centred labels of the kept lines
    shape = [1] * ndim
    shape[axis] = m
    return np.exp(2j * np.pi * k * ((s - 1) / 2) / n).reshape(shape)


def scanner_axis(x: np.ndarray, axis: int, s: int) -> np.ndarray:
    """One axis of the scanner: crop the centred spectrum to ``n / s`` lines, inverse FFT at that size."""
    n = x.shape[axis]
    m = n // s
    spectrum = np.fft.fftshift(np.fft.fft(x, axis=axis), axes=axis)  # DC at index n // 2
    first = n // 2 - m // 2  # even m: labels -m/2 ... m/2 - 1
    crop = np.take(spectrum, np.arange(first, first + m), axis=axis) * _phase(n, m, s, axis, x.ndim)
    return np.fft.ifft(np.fft.ifftshift(crop, axes=axis), axis=axis) * (m / n)


def scanner(x: np.ndarray, axes, s: int) -> np.ndarray:
    """The coarse image the scanner reconstructs (real part of the complex reconstruction)."""
    y = x.astype(np.complex128)
    for a in axes:
        y = scanner_axis(y, a, s)
    return y.real


def zero_filled(lr: np.ndarray, axes, s: int) -> np.ndarray:
    """Zero-filled Fourier interpolation of ``lr`` onto the fine grid: the acquired lines (phase of the
    coarse voxel centres undone) in an empty spectrum of ``s m`` lines, inverse FFT, real part."""
    y = lr.astype(np.complex128)
    for a in axes:
        m = y.shape[a]
        n = m * s
        lines = np.fft.fftshift(np.fft.fft(y, axis=a), axes=a) / _phase(n, m, s, a, y.ndim)
        shape = list(y.shape)
        shape[a] = n
        full = np.zeros(shape, dtype=np.complex128)
        first = n // 2 - m // 2
        index = [slice(None)] * y.ndim
        index[a] = slice(first, first + m)
        full[tuple(index)] = lines
        y = np.fft.ifft(np.fft.ifftshift(full, axes=a), axis=a) * (n / m)
    return y.real


def fine_shape(coarse, axes, s: int) -> tuple[int, ...]:
    return tuple(c * s if a in axes else UNTOUCHED for a, c in enumerate(coarse))


def interior(shape, coarse, axes) -> np.ndarray:
    """Mask of the fine spectrum (FFT order) strictly inside the band on every reduced axis."""
    masks = []
    for a, n in enumerate(shape):
        k = np.rint(np.fft.fftfreq(n) * n)
        masks.append(np.abs(k) < coarse[a] / 2 if a in axes else np.ones(n, dtype=bool))
    return masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("coarse", COARSE)
@pytest.mark.parametrize("axes", AXES)
def test_volsr_acquisition_is_the_scanner(s, coarse, axes):
    affine = oblique_affine((0.9, 1.1, 1.3))
    shape = fine_shape(coarse, axes, s)
    x = np.random.default_rng(s).normal(size=shape) + 2.0
    ours = KSpaceTruncation(1.0 / s, axes=axes, reduce_matrix=True)(
        MetaTensor(torch.as_tensor(x)[None], affine=affine)
    )
    expected = scanner(x, axes, s)
    assert ours.shape[1:] == expected.shape
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=0, atol=1e-12)
    # world position of coarse voxel j: the fine index j s + (s - 1)/2 on each reduced axis
    j = np.stack(np.meshgrid(*[np.arange(n) for n in expected.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    fine = j.astype(float)
    for a in axes:
        fine[:, a] = j[:, a] * s + (s - 1) / 2
    world = (affine_of(ours) @ np.c_[j, np.ones(len(j))].T)[:3]
    np.testing.assert_allclose(world, (affine @ np.c_[fine, np.ones(len(j))].T)[:3], atol=1e-9)


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("coarse", COARSE)
@pytest.mark.parametrize("axes", AXES)
def test_projection_reacquired_by_the_scanner_is_the_input(s, coarse, axes):
    rng = np.random.default_rng(10 * s + len(axes))
    shape = fine_shape(coarse, axes, s)
    lr = scanner(rng.normal(size=shape), axes, s)  # a scan: what the scanner gave
    guess = rng.normal(size=shape)  # what a network put on the fine grid
    out = project_kspace_consistent(torch.as_tensor(guess)[None], torch.as_tensor(lr)[None])[0].numpy()
    np.testing.assert_allclose(scanner(out, axes, s), lr, rtol=0, atol=1e-11)
    assert np.abs(scanner(guess, axes, s) - lr).max() > 0.1  # the guess alone was not consistent
    # inside the band: zero-filled Fourier's lines; outside: the guess's lines, untouched
    inside = interior(shape, coarse, axes)
    spec_out, spec_guess = np.fft.fftn(out), np.fft.fftn(guess)
    spec_zero = np.fft.fftn(zero_filled(lr, axes, s))
    scale = np.abs(spec_zero).max()
    np.testing.assert_allclose(spec_out[inside], spec_zero[inside], rtol=0, atol=1e-10 * scale)
    outside = ~interior(shape, [c + 2 for c in coarse], axes)  # beyond the edge lines on some axis
    np.testing.assert_allclose(spec_out[outside], spec_guess[outside], rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("axes", [(0,), (0, 1, 2)])
def test_volsr_zero_filled_fourier_is_the_scanners(s, axes):
    coarse = (6, 5, 4)
    shape = fine_shape(coarse, axes, s)
    lr = np.random.default_rng(4).normal(
        size=tuple(c if a in axes else UNTOUCHED for a, c in enumerate(coarse))
    )
    ours = fourier_resample(torch.as_tensor(lr)[None], shape)[0].numpy()
    np.testing.assert_allclose(ours, zero_filled(lr, axes, s), rtol=0, atol=1e-12)


def test_projection_in_float32_is_consistent_to_float32_precision():
    s, axes, coarse = 2, (0, 1, 2), (8, 7, 6)
    shape = fine_shape(coarse, axes, s)
    rng = np.random.default_rng(5)
    lr = scanner(rng.normal(size=shape), axes, s).astype(np.float32)
    guess = torch.as_tensor(rng.normal(size=shape), dtype=torch.float32)[None]
    out = project_kspace_consistent(guess, torch.as_tensor(lr)[None])
    assert out.dtype == torch.float32
    np.testing.assert_allclose(scanner(out[0].double().numpy(), axes, s), lr, rtol=0, atol=2e-6)
