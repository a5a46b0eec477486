"""Checkpoints in both forms: the model zoo's (a bare state dict and ``model_meta.json``) and the one-file
dict of training and earlier bundles; each rebuilds its network alone, to the same outputs."""

import json

import pytest
import torch

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import (
    load_checkpoint,
    load_weights,
    metadata_path,
    remove_stray_temporaries,
    save_checkpoint,
    save_model,
    split_checkpoint,
)


def _trained() -> ResidualSR3D:
    torch.manual_seed(0)
    net = ResidualSR3D(features=8, num_blocks=1, attention=True, grid_channels=9, coarse_blocks=1)
    torch.nn.init.normal_(net.out.weight, std=0.05)  # non-identity so the outputs tell
    return net.eval()


def _outputs(net: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.rand(1, 10, 9, 8, 7, generator=torch.Generator().manual_seed(1)))


def test_checkpoint_rebuilds_its_model_alone(tmp_path):
    net = _trained()
    norm = PercentileNormalizer(lower=1.0, upper=99.0)
    path = save_checkpoint(tmp_path / "m.pt", net, norm, step=42, validation={"psnr_gain": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left behind
    net2, norm2, ckpt = load_checkpoint(path)
    assert torch.equal(_outputs(net), _outputs(net2))
    assert norm2 == norm and ckpt["step"] == 42 and ckpt["network"]["arguments"]["features"] == 8
    assert not net2.training


def test_shipped_model_is_a_bare_state_dict_with_its_metadata_beside_it(tmp_path):
    net = _trained()
    norm = PercentileNormalizer(lower=1.0, upper=99.0)
    path = save_model(tmp_path / "model.pt", net, norm, step=42, validation={"psnr_gain": 1.25})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model_meta.json"]
    state = torch.load(path, weights_only=True)  # what monai.bundle ckpt_export reads by default
    assert state.keys() == net.state_dict().keys()
    plain = ResidualSR3D(**json.loads(metadata_path(path).read_text())["network"]["arguments"]).eval()
    plain.load_state_dict(state)  # a user outside volsr: the config's network, then the weights
    assert torch.equal(_outputs(plain), _outputs(net))

    net2, norm2, ckpt = load_checkpoint(path)
    assert torch.equal(_outputs(net2), _outputs(net)) and not net2.training
    assert norm2 == norm and ckpt["step"] == 42 and ckpt["validation"] == {"psnr_gain": 1.25}
    assert ckpt["network"] == {"name": "residual_sr", "arguments": net.arguments()}
    assert all(torch.equal(load_weights(path)[k], v) for k, v in net.state_dict().items())


def test_earlier_one_file_checkpoint_loads_and_splits_to_identical_outputs(tmp_path):
    """A ``model.pt`` as bundles shipped it before the zoo's form: one dict, written here by hand."""
    net = _trained()
    old = tmp_path / "old" / "model.pt"
    old.parent.mkdir()
    entries = {
        "network": {"name": "residual_sr", "arguments": net.arguments()},
        "normalization": {"name": "percentile", "lower": 0.5, "upper": 99.5},
        "step": 2800,
        "validation": {"psnr_gain": 1.398, "step": 2800},
    }
    torch.save({"model": net.state_dict(), **entries}, old)
    loaded, norm, ckpt = load_checkpoint(old)
    assert torch.equal(_outputs(loaded), _outputs(net))
    assert norm == PercentileNormalizer(0.5, 99.5) and ckpt["step"] == 2800 and "validation" in ckpt
    assert all(torch.equal(load_weights(old)[k], v) for k, v in net.state_dict().items())

    new = split_checkpoint(old, tmp_path / "new" / "model.pt")
    state = torch.load(new, weights_only=True)
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in net.state_dict().items())
    assert json.loads(metadata_path(new).read_text()) == entries
    converted, norm2, ckpt2 = load_checkpoint(new)
    assert torch.equal(_outputs(converted), _outputs(loaded)) and norm2 == norm
    assert {k: v for k, v in ckpt2.items() if k != "model"} == entries


def test_a_state_dict_without_its_metadata_is_refused_by_name(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_trained().state_dict(), path)
    with pytest.raises(ValueError, match="model.pt: a state dict without model_meta.json"):
        load_checkpoint(path)
    metadata_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="model_meta.json: not valid JSON"):
        load_checkpoint(path)
    metadata_path(path).write_text('{"step": 3}')
    with pytest.raises(ValueError, match="needs a 'network' entry"):
        load_checkpoint(path)
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a volsr checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_metadata_json_cannot_hold_leaves_nothing_written(tmp_path):
    with pytest.raises(TypeError):
        save_model(tmp_path / "model.pt", _trained(), PercentileNormalizer(), 1, optimizer=torch.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_stray_temporaries_of_both_files_are_removed(tmp_path):
    strays = [tmp_path / ".model.pt.0badf00d.tmp", tmp_path / ".model_meta.json.1234abcd.tmp"]
    kept = [tmp_path / "model.pt", tmp_path / "notes.json.tmp"]
    for p in strays + kept:
        p.write_bytes(b"x")
    assert sorted(remove_stray_temporaries(tmp_path)) == sorted(strays)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_fresh_network_is_the_identity_map():
    # zero-initialised output conv: training starts exactly at the spline baseline
    net = ResidualSR3D(features=8, num_blocks=1)
    x = torch.rand(2, 1, 9, 9, 9)
    assert torch.equal(net(x), x)
