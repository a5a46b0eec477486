"""A network's input is re-gridded as its weights were trained: cubic B-spline or zero-filled Fourier."""

import numpy as np
import pytest
import torch
from conftest import make_image, smooth_volume

from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.interpolation import resample
from volsr.inference.sliding_window import super_resolve
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import load_checkpoint, metadata_path, save_model
from volsr.networks.input_grid import input_interpolation, regrid_input
from volsr.transforms.kspace import fourier_resample
from volsr.transforms.protocol import KSpace


def _periodic(shape: tuple[int, ...], keep: int) -> np.ndarray:
    """A positive periodic volume whose spectrum lies within ``keep`` lines of DC on every axis."""
    grids = np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij")
    vol = 5.0 + np.cos(2 * np.pi * (keep * grids[0] + grids[2]) + 0.3) + np.sin(2 * np.pi * keep * grids[1])
    return vol.astype(np.float32)


def test_fourier_input_of_a_band_limited_scan_is_the_fine_scan_itself():
    # sampled on the coarse grid within its band, the fine volume is its trigonometric interpolant:
    # zero-filled Fourier gives it back exactly, the cubic spline only approximately
    fine = _periodic((24, 20, 18), keep=3)
    coarse = KSpace(0.5).transform()(make_image(fine, np.eye(4)))
    assert coarse.shape == (1, 12, 10, 9)
    fourier = regrid_input(coarse, (24, 20, 18), "fourier")
    cubic = regrid_input(coarse, (24, 20, 18), "cubic")
    assert not hasattr(fourier, "affine")  # a plain tensor: the caller owns the grid
    torch.testing.assert_close(fourier[0], torch.from_numpy(fine), atol=1e-4, rtol=0)
    assert float((cubic[0] - torch.from_numpy(fine)).abs().max()) > 1e-2


def test_an_untrained_fourier_network_gives_the_fourier_baseline_through_the_windows():
    # zero-initialised residual: with windows, blending, normalisation and the coarse axis moved, the
    # output is exactly the up-sampling the network refines
    hr = make_image((100 * smooth_volume((24, 20, 16))).astype(np.float32), np.diag([0.9, 0.9, 1.1, 1.0]))
    lr = KSpace(0.5, axes=(1, 2)).transform()(hr)
    net = ResidualSR3D(features=4, num_blocks=1, input_interpolation="fourier")
    out = super_resolve(lr, net, scale=(1, 2, 2), roi=(12, 12, 12), overlap=0.25, device="cpu")
    expected = fourier_resample(lr, (24, 20, 16))
    torch.testing.assert_close(
        out.as_tensor(), expected.as_tensor(), atol=1e-3 * float(expected.abs().max()), rtol=0
    )
    assert np.allclose(np.asarray(out.affine), np.asarray(expected.affine))
    cubic = super_resolve(lr, ResidualSR3D(features=4, num_blocks=1), scale=(1, 2, 2), device="cpu")
    spline = resample(lr, scale=(1, 2, 2), mode="cubic")
    torch.testing.assert_close(
        cubic.as_tensor(), spline.as_tensor(), atol=1e-3 * float(spline.abs().max()), rtol=0
    )


def test_the_interpolation_travels_with_the_weights(tmp_path):
    net = ResidualSR3D(features=4, num_blocks=1, input_interpolation="fourier")
    path = save_model(tmp_path / "model.pt", net, PercentileNormalizer(), step=3)
    loaded, _, _ = load_checkpoint(path)
    assert input_interpolation(loaded) == "fourier"
    # weights saved before the option existed were trained on the cubic spline
    meta = metadata_path(path)
    text = (
        meta.read_text()
        .replace('"input_interpolation": "fourier",', "")
        .replace(',\n      "input_interpolation": "fourier"', "")
    )
    meta.write_text(text)
    assert "input_interpolation" not in text
    assert input_interpolation(load_checkpoint(path)[0]) == "cubic"


def test_an_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="input_interpolation"):
        ResidualSR3D(features=4, num_blocks=1, input_interpolation="lanczos")
    with pytest.raises(ValueError, match="input interpolation"):
        regrid_input(torch.zeros(1, 4, 4, 4), (8, 8, 8), "lanczos")
