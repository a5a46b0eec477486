"""The grid encoding: where each output voxel sits on the acquired grid, in world coordinates, through
crops, flips and swaps of training patches and inference windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.grid_encoding import GRID_CHANNELS, SamplePositions
from volsr.geometry.grids import scaled_grid
from volsr.inference.sliding_window import _Predictor, super_resolve
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import load_grown_weights
from volsr.training.data import PatchPairSampler
from volsr.transforms import build_degradation


def _rotated_affine(seed: int, spacing) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    a = np.eye(4)
    a[:3, :3] = q @ np.diag(spacing)
    a[:3, 3] = [10.0, -20.0, 5.0]
    return a


def _input_index(a_in: np.ndarray, a_out: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Input-grid index of output voxels 0..n_out-1 along ``axis``, through world coordinates."""
    ijk = np.zeros((4, n_out))
    ijk[axis] = np.arange(n_out)
    ijk[3] = 1
    world = a_out @ ijk
    return (np.linalg.inv(a_in) @ world)[axis]


@pytest.mark.parametrize("scale", [(1.0, 1.0, 4.0), (2.5, 1.0, 1.7), (1.0, 3.0, 1.0)])
def test_positions_are_the_input_index_of_each_output_voxel_centre_in_world_coordinates(scale):
    shape = (7, 9, 11)
    a_in = _rotated_affine(1, (0.9, 1.1, 4.0))
    a_out, out_shape = scaled_grid(a_in, shape, scale)
    positions = SamplePositions.of_grids(shape, out_shape)
    for axis in range(3):
        expected = _input_index(a_in, a_out, axis, out_shape[axis])
        assert np.allclose(positions.coords[axis].numpy(), expected, atol=1e-9)
        assert math.isclose(positions.steps[axis], shape[axis] / out_shape[axis])


def test_x3_every_third_voxel_sits_on_an_acquired_slice_centre():
    positions = SamplePositions.of_grids((2, 2, 4), (2, 2, 12))
    ch = positions.channels()
    assert ch.shape == (GRID_CHANNELS, 2, 2, 12)
    cos_z, sin_z, step_z = ch[6, 0, 0], ch[7, 0, 0], ch[8, 0, 0]
    on_centre = torch.zeros(12, dtype=torch.bool)
    on_centre[1::3] = True  # centres at -1/3, 0, 1/3, 2/3, 1, ...: j = 1, 4, 7, 10
    assert torch.allclose(cos_z[on_centre], torch.ones(4), atol=1e-6)
    assert torch.all(cos_z[~on_centre] < 0)  # a third of a voxel away: cos(2 pi / 3) = -1/2
    assert torch.allclose(sin_z[1:3], torch.tensor([0.0, math.sin(2 * math.pi / 3)]), atol=1e-6)
    assert torch.allclose(step_z, torch.full((12,), 1 / 3))
    # axes kept as they are: every voxel on a centre, step 1
    assert torch.allclose(ch[0], torch.ones(2, 2, 12)) and torch.allclose(
        ch[1], torch.zeros(2, 2, 12), atol=1e-6
    )
    assert torch.allclose(ch[2], torch.ones(2, 2, 12))


def _flip_affine(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """The affine of a volume flipped along ``axis``: voxel j holds what voxel n - 1 - j held."""
    f = np.eye(4)
    f[axis, axis] = -1
    f[axis, 3] = n - 1
    return a @ f


def test_flipped_positions_are_those_of_the_flipped_grids_in_world_coordinates():
    shape, scale = (6, 5, 9), (1.0, 2.0, 3.7)
    a_in = _rotated_affine(2, (1.0, 1.0, 3.0))
    a_out, out_shape = scaled_grid(a_in, shape, scale)
    flipped = SamplePositions.of_grids(shape, out_shape).flipped([1, 2]).channels(torch.float64)
    for axis in (1, 2):
        f_in, f_out = _flip_affine(a_in, axis, shape[axis]), _flip_affine(a_out, axis, out_shape[axis])
        c = torch.as_tensor(_input_index(f_in, f_out, axis, out_shape[axis]))
        view = [1, 1, 1]
        view[axis] = -1
        assert torch.allclose(flipped[3 * axis], torch.cos(2 * math.pi * c).view(view).expand(out_shape))
        assert torch.allclose(flipped[3 * axis + 1], torch.sin(2 * math.pi * c).view(view).expand(out_shape))


def test_padding_continues_the_linear_grid():
    positions = SamplePositions.of_grids((3, 3, 5), (3, 3, 20))
    padded = positions.padded([0, 0, 2], [0, 0, 3])
    assert padded.shape == (3, 3, 25)
    j = torch.arange(-2, 23, dtype=torch.float64)
    assert torch.allclose(padded.coords[2], -0.375 + 0.25 * j)
    assert torch.equal(
        padded.cropped([slice(None), slice(None), slice(2, 22)]).coords[2], positions.coords[2]
    )


def test_sampler_grid_channels_follow_the_flips_of_the_patch():
    """An HR ramp of value (z + 0.5) / 4: x4 boxcar slabs of any crop average to their own slice index
    plus a constant, and the spline input reproduces the line, so x = c + const along the slice axis,
    where c is the input-grid index the channels encode; a flip reverses the patch and negates c, so
    there x = -c + const. The phasor exp(2 pi i x) times exp(-+2 pi i c) must be constant."""
    z = torch.arange(160, dtype=torch.float32)
    ramp = ((z + 0.5) / 4).view(1, 1, 1, -1).expand(1, 40, 40, 160).clone()
    vol = MetaTensor(ramp, affine=torch.eye(4, dtype=torch.float64))
    degrade = build_degradation(
        {"slice_thickness": {"axis": [2], "factor": [4.0, 4.0], "profile": ["boxcar"]}}
    )
    sampler = PatchPairSampler(
        [vol], degrade, patch_size=16, margin=16, foreground=-1e9, seed=0, grid_encoding=True
    )
    directions = set()
    for _ in range(12):
        x, y, info = sampler.sample()
        assert x.shape == (1 + GRID_CHANNELS, 16, 16, 16) and info["scale"] == [1.0, 1.0, 4.0]
        line = x[:, 8, 8].double()  # along the coarse (last) axis
        forward = bool(line[0, -1] > line[0, 0])
        directions.add(forward)
        encoded = torch.complex(line[7], line[8] if forward else -line[8])  # exp(+-2 pi i c)
        phasor = torch.exp(2j * math.pi * line[0]) * encoded.conj()
        # constant up to the spline's edge error (a wrong sign would turn it by 4 pi c)
        assert torch.allclose(phasor, phasor.mean().expand(16), atol=1e-2)
        assert torch.allclose(line[9], torch.full((16,), 0.25, dtype=torch.float64))
        assert torch.allclose(line[1:7], torch.tensor([1.0, 0, 1] * 2, dtype=torch.float64)[:, None])
    assert directions == {True, False}  # both orientations were drawn


class _PointwiseGridNet(nn.Module):
    """Outputs one grid-encoding channel: what a network sees of its position, nothing else."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"in_channels": 1, "grid_channels": GRID_CHANNELS})()
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1 + self.channel : 2 + self.channel].clone()


def _scan() -> MetaTensor:
    data = torch.linspace(0, 100, 24 * 20 * 9).view(1, 24, 20, 9)
    return MetaTensor(data, affine=torch.as_tensor(_rotated_affine(3, (1.0, 1.0, 4.0))))


@pytest.mark.parametrize("roi", [None, (12, 10, 16)])
def test_windows_see_the_positions_of_the_whole_grid(roi):
    """A pointwise network returning cos(2 pi c) along the slice axis gives exactly that at every output
    voxel, however the volume is cut into windows (MONAI's window slices are honoured)."""
    image = _scan()
    lo, hi = PercentileNormalizer().fit(image.as_tensor())
    sr = super_resolve(
        image, _PointwiseGridNet(6), scale=(1, 1, 4), roi=roi, device="cpu", precision=torch.float32
    )
    a_out, out_shape = scaled_grid(np.asarray(image.affine), image.shape[1:], (1, 1, 4))
    c = _input_index(np.asarray(image.affine), a_out, 2, out_shape[2])
    expected = torch.cos(2 * math.pi * torch.as_tensor(c, dtype=torch.float32)).expand(out_shape)
    assert torch.allclose((sr[0] - lo) / (hi - lo), expected, atol=1e-4)
    assert np.allclose(sr.affine, a_out)


def test_tta_views_get_positions_in_their_own_orientation():
    """Averaged over flips, the even cos channel survives unchanged and the odd sin channel cancels."""
    x = torch.zeros(1, 1, 6, 6, 20)
    positions = SamplePositions.of_grids((6, 6, 5), (6, 6, 20))
    cpu = torch.device("cpu")
    cos_net, sin_net = _PointwiseGridNet(6), _PointwiseGridNet(7)
    plain = _Predictor(cos_net, cpu, precision=torch.float32, positions=positions)(x)
    assert torch.allclose(
        _Predictor(cos_net, cpu, precision=torch.float32, tta=True, positions=positions)(x), plain, atol=1e-6
    )
    assert not torch.allclose(
        _Predictor(sin_net, cpu, precision=torch.float32, positions=positions)(x), torch.zeros(1)
    )
    tta_sin = _Predictor(sin_net, cpu, precision=torch.float32, tta=True, positions=positions)(x)
    assert torch.allclose(tta_sin, torch.zeros_like(tta_sin), atol=1e-6)


def test_a_grid_network_needs_positions():
    with pytest.raises(ValueError, match="grid-encoding"):
        _Predictor(_PointwiseGridNet(0), torch.device("cpu"), precision=torch.float32)


def _trained_looking(**arguments) -> ResidualSR3D:
    """A network with every weight random (the output conv starts at zero): something to compare."""
    torch.manual_seed(0)
    network = ResidualSR3D(**arguments).eval()
    for p in network.parameters():
        nn.init.normal_(p, std=0.1)
    return network


def test_grown_network_starts_as_the_network_it_was_grown_from():
    old = _trained_looking(features=6, num_blocks=1)
    new = ResidualSR3D(features=6, num_blocks=1, grid_channels=GRID_CHANNELS).eval()
    load_grown_weights(new, old.state_dict())
    x = torch.randn(2, 1, 10, 10, 10)
    grid = torch.randn(2, GRID_CHANNELS, 10, 10, 10)
    with torch.no_grad():
        assert torch.allclose(new(torch.cat([x, grid], 1)), old(x), atol=1e-6)
    wide = ResidualSR3D(features=10, num_blocks=1, grid_channels=GRID_CHANNELS).eval()
    load_grown_weights(wide, old.state_dict())  # wider too: same function, new features not dead
    with torch.no_grad():
        assert torch.allclose(wide(torch.cat([x, grid], 1)), old(x), atol=1e-6)
        assert wide.head(torch.cat([x, grid], 1))[:, 6:].abs().max() > 0
    with pytest.raises(ValueError, match="cannot grow"):
        load_grown_weights(ResidualSR3D(features=4, num_blocks=1), old.state_dict())


def test_network_grown_a_context_branch_starts_as_the_network_it_was_grown_from():
    old = _trained_looking(features=6, num_blocks=1)
    new = ResidualSR3D(features=6, num_blocks=1, coarse_blocks=2).eval()
    load_grown_weights(new, old.state_dict())
    x = torch.randn(1, 1, 11, 12, 10)
    with torch.no_grad():
        assert torch.allclose(new(x), old(x), atol=1e-6)
    assert new.coarse.down.weight.abs().max() > 0  # the branch is live; only its way out starts at 0
    with pytest.raises(ValueError, match="does not have"):
        load_grown_weights(old, new.state_dict())


def test_network_grown_deeper_starts_as_the_network_it_was_grown_from():
    """Added residual blocks (full and half resolution) start as the identity, and train: their
    first conv is random, so the zeroed second conv gets a gradient."""
    old = _trained_looking(features=6, num_blocks=1, coarse_blocks=1)
    deep = ResidualSR3D(features=6, num_blocks=3, coarse_blocks=2).eval()
    load_grown_weights(deep, old.state_dict())
    x = torch.randn(1, 1, 11, 12, 10)
    with torch.no_grad():
        assert torch.allclose(deep(x), old(x), atol=1e-6)
    deep(x).square().sum().backward()
    for block in (deep.blocks[1], deep.blocks[2], deep.coarse.blocks[1]):
        assert block.conv2.weight.abs().max() == 0 and block.conv1.weight.abs().max() > 0
        assert block.conv2.weight.grad.abs().max() > 0
    assert torch.equal(deep.blocks[0].conv2.weight, old.blocks[0].conv2.weight)  # loaded, not zeroed
