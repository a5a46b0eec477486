"""The uncertainty map: the spread of the network over its 16 symmetric views, on the output grid."""

import numpy as np
import pytest
import torch
from conftest import oblique_affine, smooth_volume
from monai.data import MetaTensor

from volsr.geometry.meta import affine_of
from volsr.inference.sliding_window import _Predictor, super_resolve, uncertainty_map


class Shift(torch.nn.Module):
    """Output voxel i = input voxel i+1 along the first spatial axis (circular): not flip-symmetric."""

    def forward(self, x):
        return torch.roll(x, shifts=-1, dims=2)


class Scale(torch.nn.Module):
    """A voxel-wise map: the same answer in every view."""

    def forward(self, x):
        return 2.0 * x


def test_spread_of_a_shift_is_the_spread_of_the_four_neighbours():
    # mapped back, a view that flips axis 0 shifts the other way, and one that swaps the in-plane
    # axes shifts along axis 1: the 16 views give each of the 4 in-plane neighbours 4 times
    x = torch.rand(1, 1, 6, 6, 5, dtype=torch.float32)
    out = _Predictor(Shift(), torch.device("cpu"), precision=torch.float32, spread=True)(x)
    neighbours = torch.stack([torch.roll(x, s, dims=d) for s in (-1, 1) for d in (2, 3)])
    assert out.shape == (1, 2, 6, 6, 5)
    torch.testing.assert_close(out[:, :1], neighbours.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 1:], neighbours.std(0, correction=0), atol=1e-6, rtol=0)


def test_views_that_agree_have_no_spread_and_the_mean_is_the_tta_output():
    x = torch.rand(1, 1, 6, 6, 5)
    spread = _Predictor(Scale(), torch.device("cpu"), precision=torch.float32, spread=True)(x)
    tta = _Predictor(Scale(), torch.device("cpu"), precision=torch.float32, tta=True)(x)
    torch.testing.assert_close(spread[:, :1], tta)
    assert float(spread[:, 1:].abs().max()) == 0.0


def test_map_is_in_intensity_units_and_keeps_a_constant_to_the_faces():
    spread = torch.full((1, 7, 6, 5), 0.02)
    m = uncertainty_map(spread, intensity_range=500.0)
    torch.testing.assert_close(m, torch.full_like(m, 10.0), atol=1e-4, rtol=0)  # no fading at the edges


def test_map_smooths_a_single_voxel_into_a_normalised_gaussian():
    spread = torch.zeros(1, 15, 15, 15)
    spread[0, 7, 7, 7] = 1.0
    m = uncertainty_map(spread, intensity_range=1.0)
    assert float(m.sum()) == pytest.approx(1.0, abs=1e-4)  # the total spread is kept
    profile = m[0, :, 7, 7].numpy()
    assert profile.argmax() == 7 and profile[6] == pytest.approx(profile[8])
    assert profile[6] / profile[7] == pytest.approx(np.exp(-0.5), rel=1e-3)  # sigma = 1 voxel


def test_super_resolve_returns_output_and_map_on_the_same_world_grid():
    aff = oblique_affine((1.0, 1.0, 3.0))
    image = MetaTensor(torch.as_tensor(smooth_volume((12, 10, 5)))[None] * 300.0, affine=torch.as_tensor(aff))
    out, umap = super_resolve(  # with tta: the map of all 16 views, whose mean is the tta output
        image, Shift(), device="cpu", precision=torch.float32, uncertainty=True, tta=True, roi=(12, 10, 15)
    )
    tta = super_resolve(image, Shift(), device="cpu", precision=torch.float32, tta=True, roi=(12, 10, 15))
    assert out.shape == umap.shape == (1, 12, 10, 15)
    np.testing.assert_allclose(affine_of(umap), affine_of(out))
    torch.testing.assert_close(out.as_tensor(), tta.as_tensor())  # the output is the views' mean
    assert float(umap.min()) >= 0 and float(umap.max()) > 0
    # a network whose views agree leaves nothing uncertain
    _, flat = super_resolve(
        image, Scale(), device="cpu", precision=torch.float32, uncertainty=True, roi=(12, 10, 15)
    )
    assert float(flat.abs().max()) < 1e-3 * float(image.max())


def test_auto_consistency_follows_the_acquisition_the_header_states():
    aff = oblique_affine((1.0, 1.0, 2.0))
    image = MetaTensor(torch.as_tensor(smooth_volume((12, 10, 6)))[None] * 300.0, affine=torch.as_tensor(aff))
    kwargs = dict(device="cpu", precision=torch.float32, roi=(12, 10, 12))
    for stated, model in (("3D", "kspace"), (None, "slices")):
        image.meta.pop("acquisition_type", None)
        if stated:
            image.meta["acquisition_type"] = stated
        auto = super_resolve(image, Scale(), consistency="auto", **kwargs)
        explicit = super_resolve(image, Scale(), consistency=model, **kwargs)
        other = super_resolve(
            image, Scale(), consistency={"kspace": "slices", "slices": "kspace"}[model], **kwargs
        )
        torch.testing.assert_close(auto.as_tensor(), explicit.as_tensor())
        assert not torch.allclose(auto.as_tensor(), other.as_tensor(), atol=1e-3)
