import numpy as np
import pytest
import torch
from conftest import make_image, oblique_affine, smooth_volume

from volsr.geometry.grids import fov_corners, voxel_spacing, voxel_to_world
from volsr.geometry.interpolation import resample
from volsr.inference.sliding_window import (
    DEFAULT_MARGIN,
    MIN_WINDOW_BUDGET,
    WINDOW_BUDGET,
    plan_windows,
    super_resolve,
    window_budget,
    window_margin,
)
from volsr.networks import ResidualSR3D


@pytest.fixture
def identity_net():
    return ResidualSR3D(features=4, num_blocks=1)  # zero-initialised residual: output == input


def test_default_grid_is_isotropic_at_finest_spacing_and_keeps_fov(thick_image, identity_net):
    out = super_resolve(thick_image, identity_net, roi=(16, 16, 16), device="cpu")
    assert out.shape == (1, 24, 20, 24)
    assert np.allclose(voxel_spacing(out.affine), [1.0, 1.0, 1.0])
    assert np.allclose(fov_corners(out.affine, out.shape[1:]), fov_corners(thick_image.affine, (24, 20, 6)))
    # first output centre lies (s-1)/(2s) = 3/8 of an input voxel before the first input centre
    expected = voxel_to_world(np.asarray(thick_image.affine), [0.0, 0.0, -3 / 8])
    assert np.allclose(voxel_to_world(np.asarray(out.affine), [0, 0, 0]), expected)


def test_identity_network_reproduces_cubic_spline_through_sliding_windows(thick_image, identity_net):
    # windows smaller than the volume, coarse axis moved and restored, intensities denormalised:
    # with an identity network all of that must give back exactly the spline up-sampling
    out = super_resolve(
        thick_image, identity_net, scale=(1, 1, 4), roi=(12, 12, 12), overlap=0.25, device="cpu"
    )
    cubic = resample(thick_image, scale=(1, 1, 4), mode="cubic")
    assert torch.allclose(out.as_tensor(), cubic.as_tensor(), atol=1e-3 * float(cubic.abs().max()))
    assert np.allclose(np.asarray(out.affine), np.asarray(cubic.affine))


def test_spacing_equal_to_input_leaves_axis_and_non_integer_scale(identity_net):
    img = make_image(smooth_volume((20, 16, 10)), oblique_affine((0.8, 0.8, 3.0)))
    out = super_resolve(img, identity_net, spacing=(0.8, None, 1.2), roi=(16, 16, 16), device="cpu")
    assert out.shape[1:3] == (20, 16)
    assert out.shape[3] == 25  # 10 * 3.0 / 1.2
    assert np.allclose(voxel_spacing(out.affine), [0.8, 0.8, 1.2])
    assert np.allclose(fov_corners(out.affine, out.shape[1:]), fov_corners(img.affine, img.shape[1:]))


def test_deterministic_on_cpu(thick_image):
    torch.manual_seed(3)
    net = ResidualSR3D(features=4, num_blocks=1)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    a = super_resolve(thick_image, net, roi=(16, 16, 16), device="cpu")
    b = super_resolve(thick_image, net, roi=(16, 16, 16), device="cpu")
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert not torch.allclose(a.as_tensor(), resample(thick_image, scale=(1, 1, 4)).as_tensor(), atol=1e-3)


def test_bad_scale_and_device_are_refused(thick_image, identity_net):
    with pytest.raises(ValueError, match="scale"):
        super_resolve(thick_image, identity_net, scale=(1, 0, 2), device="cpu")
    with pytest.raises(ValueError, match="at most one"):
        super_resolve(thick_image, identity_net, scale=2, spacing=1.0, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            super_resolve(thick_image, identity_net, device="cuda")


def test_sheared_affine_is_carried_exactly_not_straightened(identity_net):
    shear = oblique_affine((0.5, 0.5, 2.4))
    shear[:3, 2] += 0.4 * shear[:3, 1]  # gantry tilt: the slice axis leans along y
    img = make_image(smooth_volume((12, 12, 5)), shear)
    out = super_resolve(img, identity_net, roi=(16, 16, 16), device="cpu")
    from volsr.geometry.grids import is_sheared

    assert is_sheared(np.asarray(out.affine))
    assert np.allclose(fov_corners(out.affine, out.shape[1:]), fov_corners(shear, img.shape[1:]))


def _shift_net() -> torch.nn.Conv3d:
    """out[i, j, k] = x[i + 1, j, k]: a network with no symmetry at all."""
    conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2, 1, 1] = 1.0
    return conv


def test_tta_averages_the_symmetric_views_of_a_shift():
    from volsr.inference.sliding_window import _Predictor

    x = torch.randn(1, 1, 9, 8, 7)
    y = _Predictor(_shift_net(), torch.device("cpu"), precision=torch.float32, tta=True)(x)
    # 16 views: a shift by +-1 along dim 2 (flipped or not), or, with the in-plane axes swapped,
    # along dim 3: the average is the in-plane 4-neighbour mean (checked away from the zero padding)
    x0 = x[0, 0]
    expected = (x0[2:, 1:-1] + x0[:-2, 1:-1] + x0[1:-1, 2:] + x0[1:-1, :-2]) / 4
    assert torch.allclose(y[0, 0, 1:-1, 1:-1], expected, atol=1e-6)
    plain = _Predictor(_shift_net(), torch.device("cpu"), precision=torch.float32)(x)
    assert torch.allclose(plain[0, 0, :-1], x0[1:], atol=1e-6)


def test_tta_leaves_a_symmetric_network_unchanged(thick_image, identity_net):
    a = super_resolve(thick_image, identity_net, roi=(16, 16, 16), device="cpu")
    b = super_resolve(thick_image, identity_net, roi=(16, 16, 16), device="cpu", tta=True)
    assert torch.allclose(a.as_tensor(), b.as_tensor(), atol=1e-4 * float(a.abs().max()))
    assert np.allclose(np.asarray(a.affine), np.asarray(b.affine))


def test_windows_of_a_deep_network_overlap_by_half_its_receptive_field():
    assert window_margin(ResidualSR3D(num_blocks=4)) == DEFAULT_MARGIN  # reach 11 < 24
    deep = ResidualSR3D(num_blocks=4, coarse_blocks=4)
    assert window_margin(deep) == deep.receptive_field // 2 == 28
    roi, overlap = plan_windows((300, 300, 300), margin=window_margin(deep))
    assert all(r < 300 and o * r >= 27.5 for r, o in zip(roi, overlap, strict=True))


def test_window_budget_shrinks_only_where_a_large_volume_needs_the_memory():
    net = ResidualSR3D(features=32, num_blocks=4)
    cpu, f32 = torch.device("cpu"), torch.float32
    assert window_budget(8_000_000, net, cpu, f32) == WINDOW_BUDGET  # a head scan: as before
    # 512 x 512 x 480: 3.25 GiB - 0.5 GiB runtime - 16 B x 126 M voxels, over 5 x 32 float32 per voxel
    voxels = 512 * 512 * 480
    expected = (int(3.25 * 2**30) - 2**29 - 16 * voxels) // (5 * 32 * 4)
    assert window_budget(voxels, net, cpu, f32) == expected < WINDOW_BUDGET
    assert window_budget(10**9, net, cpu, f32) == MIN_WINDOW_BUDGET  # never below a usable window
    assert window_budget(voxels, net, cpu, torch.bfloat16) == min(
        WINDOW_BUDGET, 2 * expected
    )  # half the bytes
    assert window_budget(voxels, net, torch.device("cuda"), torch.bfloat16) == WINDOW_BUDGET  # its own memory


def test_the_whole_volume_stays_on_a_gpu_only_when_it_fits():
    from volsr.inference.sliding_window import volume_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    voxels = 256**3  # 16 bytes a voxel on the device: 256 MiB, within half of 1 GiB free
    assert volume_device(cuda, voxels, free_bytes=2**30) == cuda
    assert volume_device(cuda, voxels, free_bytes=2**29 - 1) == cpu
    assert volume_device(cpu, voxels, free_bytes=2**40) == cpu
