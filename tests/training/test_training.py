import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import smooth_volume
from monai.data import MetaTensor

from volsr.networks.checkpoint import load_checkpoint
from volsr.training.data import CONTRAST_KNOTS, PatchPairSampler, list_volumes, random_contrast
from volsr.training.trainer import TrainConfig, learning_rate, loss_function, train_cnn
from volsr.transforms import build_degradation


def _write(path, shape, seed):
    nib.save(nib.Nifti1Image(smooth_volume(shape, seed).astype(np.float32), np.eye(4)), path)
    return path


def _tiny_config(data, out, **overrides) -> TrainConfig:
    """A run of a few steps of a 4-feature network on 12^3 patches, on the CPU, quietly."""
    settings = dict(
        data=str(data),
        output_dir=str(out),
        batch_size=2,
        patch_size=12,
        warmup=1,
        network={"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1}},
        checkpoint_every=1,
        device="cpu",
        progress=False,
        degradation={"slice_thickness": {"axis": [2], "factor": [2.0, 3.0]}},
    )
    return TrainConfig(**{**settings, **overrides})


def test_learning_rate_warmup_then_cosine_to_min():
    cfg = TrainConfig(data="x", output_dir="y", steps=1000, warmup=100, lr=1e-3, min_lr=1e-5)
    assert math.isclose(learning_rate(0, cfg), 1e-5)
    assert math.isclose(learning_rate(99, cfg), 1e-3)
    assert math.isclose(learning_rate(100, cfg), 1e-3)
    assert math.isclose(learning_rate(550, cfg), (1e-3 + 1e-5) / 2)
    assert math.isclose(learning_rate(1000, cfg), 1e-5)


def test_pixel_losses_are_mean_absolute_and_mean_squared_error():
    pred = torch.tensor([0.0, 1.0, 3.0, -1.0]).view(1, 1, 2, 2, 1)
    target = torch.zeros_like(pred)  # errors 0, 1, 3, -1
    l1 = loss_function(TrainConfig(data="x", output_dir="y"))
    mse = loss_function(TrainConfig(data="x", output_dir="y", pixel_loss="mse"))
    assert l1(pred, target).item() == pytest.approx(5 / 4)
    assert mse(pred, target).item() == pytest.approx(11 / 4)
    with pytest.raises(ValueError, match="pixel_loss"):
        loss_function(TrainConfig(data="x", output_dir="y", pixel_loss="huber"))


def test_sampler_pairs_are_spline_inputs_of_degraded_crops():
    vol = torch.as_tensor(smooth_volume((40, 40, 40)), dtype=torch.float32)[None] / 100
    from monai.data import MetaTensor

    hr = MetaTensor(vol, affine=torch.eye(4, dtype=torch.float64))
    # factor 1 slice thickness is the identity: input must equal target exactly
    identity = build_degradation({"slice_thickness": {"axis": [0, 1, 2], "factor": 1.0}}, seed=0)
    x, y, info = PatchPairSampler([hr], identity, patch_size=16, margin=4, seed=0).sample()
    assert x.shape == y.shape == (1, 16, 16, 16)
    assert torch.allclose(x, y, atol=1e-5)
    # a real degradation: the coarse axis is moved last, so the input is smooth along it
    thick = build_degradation({"slice_thickness": {"axis": [0], "factor": 4.0}}, seed=0)
    x, y, info = PatchPairSampler([hr], thick, patch_size=16, margin=4, seed=0).sample()
    assert info["scale"][0] == 4.0 and not torch.allclose(x, y, atol=1e-3)


def test_train_writes_checkpoints_and_resumes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _write(data / f"v{i}.nii.gz", (28, 28, 28), i)
    val = _write(tmp_path / "val.nii.gz", (24, 24, 24), 5)
    assert [it["hr"] for it in list_volumes(data)] == [str(data / "v0.nii.gz"), str(data / "v1.nii.gz")]
    cfg = _tiny_config(data, tmp_path / "out", steps=3, val_data=[str(val)], val_every=3)
    best = train_cnn(cfg)
    assert "psnr_gain" in best and best["step"] == 3
    net, _, ckpt = load_checkpoint(tmp_path / "out" / "model.pt")
    assert ckpt["step"] == 3 and ckpt["validation"]["step"] == 3
    cfg.steps = 5
    train_cnn(cfg, resume=True)
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 5
    assert (tmp_path / "out" / "validation.jsonl").read_text().count("\n") == 2
    # a checkpoint without the optimiser's moments (as shipped in a bundle) still resumes
    del state["optimizer"]
    torch.save(state, tmp_path / "out" / "checkpoint.pt")
    cfg.steps = 6
    train_cnn(cfg, resume=True)
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)["step"] == 6


def test_zoom_coarsens_each_axis_independently_within_range():
    from monai.data import MetaTensor

    vol = MetaTensor(torch.rand(1, 120, 120, 120), affine=torch.eye(4, dtype=torch.float64))
    sampler = PatchPairSampler([vol], lambda d: d, patch_size=16, margin=4, zoom=(1.0, 2.0), seed=3)
    spacings = []
    for _ in range(20):
        crop = sampler._crop(vol)
        assert crop.shape[1:] == (24, 24, 24)
        spacings.append(crop.affine.diagonal()[:3].numpy())
    spacings = torch.as_tensor(np.stack(spacings))
    assert spacings.min() >= 1.0 - 1e-6 and spacings.max() <= 2.0 + 0.05
    # drawn per axis: most crops are anisotropic
    assert (spacings.max(1).values - spacings.min(1).values > 0.1).sum() >= 10


def test_model_pt_holds_the_moving_average_across_a_resume(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "v0.nii.gz", (28, 28, 28), 0)
    cfg = _tiny_config(data, tmp_path / "out", steps=1, batch_size=1, ema=0.5)
    out = tmp_path / "out"
    train_cnn(cfg)
    w1 = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(w1[k], v) for k, v in load_checkpoint(out / "model.pt")[2]["model"].items())
    cfg.steps = 2
    train_cnn(cfg, resume=True)  # the average carries over: after step 2 it is (w1 + w2) / 2
    w2 = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    shipped = load_checkpoint(out / "model.pt")[2]["model"]
    assert not torch.equal(w1["out.weight"], w2["out.weight"])
    for k, v in shipped.items():
        assert torch.allclose(v, 0.5 * w1[k] + 0.5 * w2[k], atol=1e-6), k


def test_random_contrast_is_piecewise_linear_through_knots_and_keeps_background():
    knots = torch.tensor(CONTRAST_KNOTS, dtype=torch.float32)
    mids = (knots[1:] + knots[:-1]) / 2
    t = torch.cat([knots, mids, torch.tensor([1.5])])
    out = random_contrast(t, np.random.default_rng(0))
    at_knots, at_mids = out[: len(knots)], out[len(knots) : -1]
    assert at_knots[0] == 0  # background stays dark
    assert ((at_knots[1:] >= 0.05) & (at_knots[1:] <= 1.0)).all()
    assert torch.allclose(at_mids, (at_knots[1:] + at_knots[:-1]) / 2, atol=1e-6)  # linear between
    assert out[-1] == at_knots[-1]  # above the last knot: its value
    other = random_contrast(t, np.random.default_rng(1))
    assert not torch.allclose(out, other)


def test_sampler_remaps_contrast_before_degrading():
    from monai.data import MetaTensor

    vol = torch.as_tensor(smooth_volume((40, 40, 40)), dtype=torch.float32)[None] / 100
    hr = MetaTensor(vol, affine=torch.eye(4, dtype=torch.float64))
    identity = build_degradation({"slice_thickness": {"axis": [0, 1, 2], "factor": 1.0}}, seed=0)
    plain = PatchPairSampler([hr], identity, patch_size=16, margin=4, seed=0)
    remapped = PatchPairSampler([hr], identity, patch_size=16, margin=4, seed=0, contrast_prob=1.0)
    x0, y0, _ = plain.sample()
    x1, y1, _ = remapped.sample()
    assert torch.allclose(x1, y1, atol=1e-5)  # the pair stays consistent
    assert not torch.allclose(y0, y1, atol=1e-3)  # but the target's contrast changed


def test_grid_network_fine_tuned_from_an_image_only_checkpoint(tmp_path):
    """``init`` grows the checkpoint's input conv with zero weights for the grid channels: before any
    step the new network computes what the old one did; training and validation then run with them."""
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "v0.nii.gz", (28, 28, 28), 0)
    val = _write(tmp_path / "val.nii.gz", (24, 24, 24), 5)
    train_cnn(_tiny_config(data, tmp_path / "old", steps=2))
    old, _, _ = load_checkpoint(tmp_path / "old" / "model.pt")
    grid_net = {"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1, "grid_channels": 9}}
    init = str(tmp_path / "old" / "model.pt")
    cfg = _tiny_config(data, tmp_path / "new", steps=0, network=grid_net, init=init, ema=0)
    train_cnn(cfg)
    new, _, _ = load_checkpoint(tmp_path / "new" / "model.pt")
    x = torch.randn(1, 1, 12, 12, 12)
    with torch.no_grad():
        assert torch.allclose(new(torch.cat([x, torch.randn(1, 9, 12, 12, 12)], 1)), old(x), atol=1e-6)
    best = train_cnn(
        _tiny_config(data, tmp_path / "run", steps=2, network=grid_net, init=init, val_data=[str(val)])
    )
    assert best["step"] == 2 and math.isfinite(best["psnr_gain"])


def _stream(seed: int, workers: int, batches: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from volsr.training.data import patch_batches

    vol = MetaTensor(torch.from_numpy(smooth_volume((30, 30, 30)) / 100.0).float()[None], affine=torch.eye(4))
    degradation = build_degradation({"slice_thickness": {"axis": [2], "factor": [2.0, 4.0]}}, seed=seed)
    sampler = PatchPairSampler([vol], degradation, patch_size=8, margin=4, seed=seed)
    stream = patch_batches(sampler, batch_size=2, seed=seed, workers=workers)
    return [next(stream) for _ in range(batches)]


def test_worker_processes_draw_reproducible_distinct_batches():
    first, again, other = _stream(1, workers=2), _stream(1, workers=2), _stream(2, workers=2)
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # the seed and the worker count fix the stream
    assert not torch.equal(first[0][1], other[0][1])
    targets = [y for _, y in first]  # worker 0 gives batches 0 and 2, worker 1 batches 1 and 3
    assert all(not torch.equal(a, b) for i, a in enumerate(targets) for b in targets[i + 1 :])
    x, y = first[0]
    assert x.shape == y.shape == (2, 1, 8, 8, 8) and torch.isfinite(x).all()


def test_without_workers_the_stream_is_the_seeded_sampler_itself():
    vol = MetaTensor(torch.from_numpy(smooth_volume((30, 30, 30)) / 100.0).float()[None], affine=torch.eye(4))
    degradation = build_degradation({"slice_thickness": {"axis": [2], "factor": [2.0, 4.0]}}, seed=3)
    expected = PatchPairSampler([vol], degradation, patch_size=8, margin=4, seed=3).batch(2)
    got = _stream(3, workers=0, batches=1)[0]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_training_with_worker_processes_checkpoints_and_resumes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "v0.nii.gz", (28, 28, 28), 0)
    cfg = _tiny_config(data, tmp_path / "out", steps=2, workers=2)
    train_cnn(cfg)
    cfg.steps = 3
    train_cnn(cfg, resume=True)
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3 and state["config"]["workers"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_ship_last_keeps_the_final_step_whatever_validation_says(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "v0.nii.gz", (28, 28, 28), 0)
    val = _write(tmp_path / "val.nii.gz", (24, 24, 24), 5)
    cfg = _tiny_config(data, tmp_path / "out", steps=3, val_data=[str(val)], val_every=1, ship="last")
    train_cnn(cfg)
    records = [json.loads(line) for line in (tmp_path / "out" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "out" / "model.pt")[2]["step"] == 3  # not chosen on these numbers
    with pytest.raises(ValueError, match="ship must be 'best' or 'last'"):
        _tiny_config(data, tmp_path / "out2", ship="first")


def test_a_fourier_sampler_keeps_the_acquired_band_exact_in_the_input():
    from monai.data import MetaTensor

    from volsr.transforms import build_degradation
    from volsr.transforms.protocol import KSpace

    vol = torch.as_tensor(smooth_volume((40, 40, 40)), dtype=torch.float32)[None] / 100
    hr = MetaTensor(vol, affine=torch.eye(4, dtype=torch.float64))
    halved = {"kspace": {"fraction": 0.5, "axes": [0, 1, 2], "window": ["none"], "reduce_matrix": True}}
    # 14 voxels halved to 7: a band symmetric about DC, which the sampler's random flips map onto itself
    pairs = {
        mode: PatchPairSampler(
            [hr], build_degradation(halved, seed=0), patch_size=14, margin=0, seed=1, interpolation=mode
        ).sample()
        for mode in ("cubic", "fourier")
    }
    (xc, yc, _), (xf, yf, _) = pairs["cubic"], pairs["fourier"]
    assert torch.equal(yc, yf)  # the same crop, flips and target
    # re-acquired on the halved matrix, the Fourier input is the target's acquisition; the spline's is not
    acquire = KSpace(0.5).transform()
    torch.testing.assert_close(acquire(xf), acquire(yf), atol=1e-5, rtol=0)
    assert float((acquire(xc) - acquire(yc)).abs().max()) > 1e-3
