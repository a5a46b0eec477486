import pytest
import torch

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import NETWORKS, PatchDiscriminator3D
from volsr.networks.checkpoint import build_network, load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    "patch, layers, expected",
    [((32, 32, 32), 2, (6, 6, 6)), ((16, 16, 16), 2, (2, 2, 2)), ((24, 16, 32), 1, (10, 6, 14))],
)
def test_shapes(patch, layers, expected):
    d = PatchDiscriminator3D(channels=4, num_layers_d=layers)
    logits, features = d(torch.zeros(2, 1, *patch))
    assert tuple(logits.shape) == (2, 1, *expected) == (2, 1, *d.output_shape(patch))
    assert len(features) == layers + 1
    assert [f.shape[1] for f in features] == [4 * 2**i for i in range(layers + 1)]
    assert features[0].shape[2:] == tuple(n // 2 for n in patch)


def test_one_score_per_patch_region():
    # each logit sees a bounded neighbourhood (34^3 voxels): a change in one corner of a 48^3 patch
    # moves the scores near it and leaves the far corner's score alone
    torch.manual_seed(0)
    d = PatchDiscriminator3D(channels=4).eval()
    x = torch.rand(1, 1, 48, 48, 48)
    y = x.clone()
    y[..., :4, :4, :4] += 1.0
    with torch.no_grad():
        a, _ = d(x)
        b, _ = d(y)
    assert a.shape == (1, 1, 10, 10, 10)
    assert not torch.allclose(a[..., 0, 0, 0], b[..., 0, 0, 0])
    assert torch.equal(a[..., -1, -1, -1], b[..., -1, -1, -1])
    # and the batch axis does not mix patches (no batch statistics)
    with torch.no_grad():
        both, _ = d(torch.cat([x, y]))
    assert torch.allclose(both[:1], a, atol=1e-6) and torch.allclose(both[1:], b, atol=1e-6)


def test_spectral_norm_bounds_every_convolution():
    torch.manual_seed(0)
    d = PatchDiscriminator3D(channels=4).eval()
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 4
    for conv in convs:
        weight = conv.weight.detach()  # the normalised weight the convolution uses
        sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.1)


def test_monai_original_with_batch_norm():
    d = PatchDiscriminator3D(channels=4, spectral_norm=False, norm="BATCH")
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in d.modules())
    logits, _ = d(torch.rand(2, 1, 16, 16, 16))
    assert logits.shape == (2, 1, 2, 2, 2)


def test_registered_and_checkpoint_round_trip(tmp_path):
    assert NETWORKS["patch_discriminator"] is PatchDiscriminator3D
    torch.manual_seed(0)
    d = PatchDiscriminator3D(channels=4).eval()
    path = save_checkpoint(tmp_path / "d.pt", d, PercentileNormalizer(), step=3)
    d2, _, ckpt = load_checkpoint(path)
    assert ckpt["network"] == {"name": "patch_discriminator", "arguments": d.arguments()}
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(d(x)[0], d2(x)[0])
    assert isinstance(
        build_network({"name": "patch_discriminator", "arguments": {"channels": 2}}), PatchDiscriminator3D
    )


@pytest.mark.parametrize("kwargs", [{"channels": 0}, {"spatial_dims": 4}, {"num_layers_d": 1.5}])
def test_bad_arguments_are_refused(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        PatchDiscriminator3D(**kwargs)
