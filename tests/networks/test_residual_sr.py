import pytest
import torch
from monai.networks.blocks import ChannelSELayer

from volsr.networks.residual_sr import PRESETS, ResidualSR3D, SqueezeExcitation3D


def _randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_squeeze_excitation_matches_monai_channel_se(channels_last):
    ours = _randomised(SqueezeExcitation3D(3, 8, r=2))
    monai_se = ChannelSELayer(3, 8, r=2).eval()
    monai_se.load_state_dict(ours.state_dict())  # same parameter names: shipped weights still load
    x = torch.randn(2, 8, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        expected = monai_se(x)
        assert torch.allclose(ours(x), expected, atol=1e-6)
        assert torch.allclose(ours(x.clone(), inplace=True), expected, atol=1e-6)


@pytest.mark.parametrize("coarse_blocks", [0, 1])
def test_inplace_inference_equals_autograd_forward_and_keeps_input(coarse_blocks):
    net = _randomised(
        ResidualSR3D(features=6, num_blocks=3, attention=True, reduction=2, coarse_blocks=coarse_blocks)
    )
    x = torch.randn(1, 1, 12, 11, 10).contiguous(memory_format=torch.channels_last_3d)
    x_before = x.clone()
    expected = net(x).detach()  # autograd on: every op out of place
    with torch.no_grad():
        got = net(x)  # in place
    assert torch.equal(x, x_before)
    assert torch.allclose(got, expected, atol=1e-6)


def test_output_changes_only_within_half_the_receptive_field():
    net = _randomised(ResidualSR3D(PRESETS["light"]))
    half = net.receptive_field // 2  # 7 voxels for light
    x = torch.zeros(1, 1, 31, 31, 31)
    poked = x.clone()
    poked[0, 0, 15, 15, 15] = 1.0
    with torch.no_grad():
        diff = (net(poked) - net(x)).abs()[0, 0]
    changed = diff > 0
    idx = changed.nonzero()
    assert changed[15, 15, 15]
    assert (idx - 15).abs().max() == half  # reaches exactly half the receptive field, no further


def test_context_branch_reaches_its_receptive_field_and_no_further():
    # no channel attention: its global pooling would let every voxel reach every other
    net = _randomised(ResidualSR3D(features=4, num_blocks=1, coarse_blocks=1, attention=False))
    half = net.receptive_field // 2  # 5 full-resolution + 5 from the branch
    assert half == 10
    x = torch.zeros(1, 1, 33, 33, 33)
    reach = 0
    for at in (15, 16):  # both parities of the stride-2 grid
        poked = x.clone()
        poked[0, 0, at, at, at] = 1.0
        with torch.no_grad():
            changed = ((net(poked) - net(x)).abs()[0, 0] > 0).nonzero()
        reach = max(reach, int((changed - at).abs().max()))
    assert reach == half


def test_context_branch_takes_odd_sizes_and_keeps_them():
    net = _randomised(ResidualSR3D(features=4, num_blocks=1, coarse_blocks=1, reduction=2))
    x = torch.randn(2, 1, 9, 10, 7)
    with torch.no_grad():
        assert net(x).shape == x.shape
