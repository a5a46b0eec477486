import numpy as np
import pytest
import torch
from conftest import make_image, oblique_affine, smooth_volume

from volsr.api import SuperResolver
from volsr.evaluation.comparison import degrade
from volsr.geometry.interpolation import resample
from volsr.inference.consistency import consistency_error, degrade_separable, project_consistent
from volsr.inference.sliding_window import super_resolve
from volsr.networks import ResidualSR3D
from volsr.transforms import SliceThickness
from volsr.transforms.protocol import ThickSlices


@pytest.fixture
def hr():
    """24 x 20 x 30 voxels of 1 mm, oblique."""
    return make_image(smooth_volume((24, 20, 30)), oblique_affine((1.0, 1.0, 1.0)))


@pytest.mark.parametrize(
    "hr_shape, lr_shape",
    [
        ((16, 16, 32), (16, 16, 8)),
        ((16, 16, 30), (16, 16, 8)),
        ((12, 18, 20), (4, 6, 5)),
        ((10, 9, 7), (5, 9, 2)),
    ],
)
@pytest.mark.parametrize("profile", ["boxcar", "gaussian"])
def test_projection_is_consistent(hr_shape, lr_shape, profile):
    g = torch.Generator().manual_seed(0)
    sr, lr = torch.rand((2, *hr_shape), generator=g), torch.rand((2, *lr_shape), generator=g)
    assert consistency_error(sr, lr, profile) > 0.1
    out = project_consistent(sr, lr, profile)
    assert out.shape == sr.shape and out.dtype == sr.dtype
    assert consistency_error(out, lr, profile) < 1e-5


def test_own_degradation_is_consistent_non_integer_factor(hr):
    lr = SliceThickness(axis=2, thickness=3.75)(hr)  # 30 slices -> 8, factor 3.75
    assert lr.shape[1:] == (24, 20, 8)
    assert consistency_error(hr, lr) < 1e-6
    lr = degrade(hr, ThickSlices(axis=0, factor=4.0, profile="gaussian"))
    assert consistency_error(hr, lr, profile="gaussian") < 1e-6


def test_random_volume_own_separable_degradation_is_consistent():
    x = torch.randn(1, 12, 15, 21, generator=torch.Generator().manual_seed(1))
    lr = degrade_separable(x, (4, 5, 7))
    assert lr.shape == (1, 4, 5, 7)
    assert consistency_error(x, lr) < 1e-6


def test_consistent_volume_is_unchanged(hr):
    lr = SliceThickness(axis=2, thickness=3.0)(hr)  # 30 -> 10 slices
    out = project_consistent(hr, lr)
    assert torch.allclose(out.as_tensor(), hr.as_tensor(), atol=1e-4 * float(hr.abs().max()))
    # and projecting twice is projecting once
    sr = resample(lr, scale=(1, 1, 3), mode="cubic")
    once = project_consistent(sr, lr)
    assert torch.allclose(project_consistent(once, lr), once, atol=1e-5 * float(once.abs().max()))


def test_scale_one_everywhere_is_the_identity_operator():
    sr, lr = torch.rand(1, 6, 7, 8), torch.rand(1, 6, 7, 8)
    assert consistency_error(lr, lr) == 0.0
    assert torch.allclose(project_consistent(sr, lr), lr, atol=1e-6)  # D = I: only lr itself is consistent


def test_projection_is_orthogonal(hr):
    # Pythagoras for the projection onto an affine set: |y - c|^2 = |y - Py|^2 + |Py - c|^2, c consistent
    lr = SliceThickness(axis=2, thickness=5.0)(hr)  # 30 -> 6 slices
    y = hr.as_tensor() + 5.0 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(2))
    p = project_consistent(y, lr)
    c = hr.as_tensor().double()
    lhs = float(((y.double() - c) ** 2).sum())
    rhs = float(((y.double() - p.double()) ** 2).sum() + ((p.double() - c) ** 2).sum())
    assert rhs == pytest.approx(lhs, rel=1e-4)


def test_metadata_and_affine_are_kept(hr):
    lr = SliceThickness(axis=2, thickness=3.0)(hr)
    out = project_consistent(hr, lr)
    assert np.allclose(np.asarray(out.affine), np.asarray(hr.affine))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="leading"):
        project_consistent(torch.zeros(2, 8, 8, 8), torch.zeros(1, 8, 8, 2))
    with pytest.raises(ValueError, match="sr"):
        consistency_error(torch.zeros(8, 8, 8), torch.zeros(1, 8, 8, 2))


def test_super_resolve_with_consistency(thick_image):
    net = ResidualSR3D(features=4, num_blocks=1)  # identity residual: the cubic spline
    plain = super_resolve(thick_image, net, scale=(1, 1, 4), roi=(16, 16, 16), device="cpu")
    dc = super_resolve(thick_image, net, scale=(1, 1, 4), roi=(16, 16, 16), device="cpu", consistency=True)
    assert consistency_error(plain, thick_image) > 1e-3
    assert consistency_error(dc, thick_image) < 1e-5
    assert np.allclose(np.asarray(dc.affine), np.asarray(plain.affine))
    sr = SuperResolver(net, roi=(16, 16, 16), device="cpu", consistency=True)
    assert sr.consistency
    assert torch.allclose(sr(thick_image, scale=(1, 1, 4)).as_tensor(), dc.as_tensor())


@pytest.mark.parametrize(
    ("shape", "fraction", "axes"),
    [((24, 20, 16), 0.5, (0, 1, 2)), ((23, 21, 17), 0.33, (0, 1, 2)), ((24, 20, 16), 0.5, (2,))],
)
def test_kspace_projection_keeps_the_acquired_band_exactly(shape, fraction, axes):
    from monai.data import MetaTensor

    from volsr.inference.consistency import project_kspace_consistent
    from volsr.transforms.kspace import KSpaceTruncation

    torch.manual_seed(0)
    acquire = KSpaceTruncation(fraction, axes=axes, reduce_matrix=True)
    hr = MetaTensor(torch.rand(1, *shape, dtype=torch.float64))
    lr = acquire(hr)
    guess = MetaTensor(torch.rand(1, *shape, dtype=torch.float64), affine=hr.affine)
    fixed = project_kspace_consistent(guess, lr)
    assert isinstance(fixed, MetaTensor) and fixed.shape == guess.shape
    torch.testing.assert_close(acquire(fixed).as_tensor(), lr.as_tensor(), rtol=0, atol=1e-12)  # D P = D
    torch.testing.assert_close(project_kspace_consistent(fixed, lr), fixed, rtol=0, atol=1e-12)  # idempotent
    torch.testing.assert_close(project_kspace_consistent(hr, lr), hr, rtol=0, atol=1e-12)  # truth is kept
    # the closest such volume: the correction is orthogonal to every volume the band leaves free
    # (v projected onto zero data is v's component that the acquisition cannot see)
    free = project_kspace_consistent(torch.rand(1, *shape, dtype=torch.float64), torch.zeros_like(lr))
    assert float(free.abs().max()) > 0.1
    assert abs(float(((fixed - guess) * free).sum())) < 1e-9


def test_super_resolve_with_kspace_consistency_reproduces_a_coarse_matrix():
    from monai.data import MetaTensor

    from volsr.api import SuperResolver
    from volsr.data.normalization import PercentileNormalizer
    from volsr.networks import ResidualSR3D
    from volsr.transforms.kspace import KSpaceTruncation

    torch.manual_seed(1)
    network = ResidualSR3D(features=4, num_blocks=1)
    torch.nn.init.normal_(network.out.weight, std=0.05)  # a network that changes its input
    hr = MetaTensor(torch.rand(1, 20, 18, 16) * 100)
    acquire = KSpaceTruncation(0.5, axes=(0, 1, 2), reduce_matrix=True)
    lr = acquire(hr)
    scale = [h / lo for h, lo in zip(hr.shape[1:], lr.shape[1:], strict=True)]
    plain = SuperResolver(network, PercentileNormalizer(), device="cpu", amp=False, consistency=False)
    kept = SuperResolver(network, PercentileNormalizer(), device="cpu", amp=False, consistency="kspace")
    out = kept(lr, scale=scale)
    error = float((acquire(out) - lr).abs().max()) / float(lr.abs().max())
    assert error < 1e-5 < float((acquire(plain(lr, scale=scale)) - lr).abs().max()) / float(lr.abs().max())
    # by default the grid (every axis x2, nothing stated) chooses the same projection
    default = SuperResolver(network, PercentileNormalizer(), device="cpu", amp=False)(lr, scale=scale)
    assert torch.equal(default.as_tensor(), out.as_tensor())
    assert (default.meta["consistency"]["model"], default.meta["consistency"]["source"]) == (
        "kspace",
        "geometry",
    )
    with pytest.raises(ValueError, match="consistency must be"):
        SuperResolver(network, device="cpu", consistency="wavelets")(lr, scale=scale)
