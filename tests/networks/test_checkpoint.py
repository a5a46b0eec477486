import torch

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import load_checkpoint, save_checkpoint


def test_checkpoint_rebuilds_its_model_alone(tmp_path):
    torch.manual_seed(0)
    net = ResidualSR3D(features=8, num_blocks=1, attention=True)
    torch.nn.init.normal_(net.out.weight, std=0.05)  # non-identity so the outputs tell
    norm = PercentileNormalizer(lower=1.0, upper=99.0)
    path = save_checkpoint(tmp_path / "m.pt", net, norm, step=42, validation={"psnr_gain": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left behind
    net2, norm2, ckpt = load_checkpoint(path)
    x = torch.rand(1, 1, 10, 10, 10)
    assert torch.allclose(net(x), net2(x))
    assert norm2 == norm and ckpt["step"] == 42 and ckpt["network"]["arguments"]["features"] == 8
    assert not net2.training


def test_fresh_network_is_the_identity_map():
    # zero-initialised output conv: training starts exactly at the spline baseline
    net = ResidualSR3D(features=8, num_blocks=1)
    x = torch.rand(2, 1, 9, 9, 9)
    assert torch.equal(net(x), x)
