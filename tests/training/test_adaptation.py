"""Self-supervised adaptation: the scan's own grid, its own slice thickness in-plane, a tuned copy."""

import numpy as np
import pytest
import torch
from conftest import make_image, oblique_affine, smooth_volume

from volsr.api import SuperResolver
from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.grids import scale_for_spacing, scaled_grid
from volsr.geometry.meta import affine_of
from volsr.networks import ResidualSR3D
from volsr.training.adaptation import adapt, adaptation_sampler, adaptation_volume


def _ramp_image() -> torch.Tensor:
    """0.5 x 0.5 x 4 mm voxels on an oblique grid; intensity 10 + 3 i along the first axis."""
    i = np.arange(48, dtype=float)[:, None, None]
    return make_image(np.broadcast_to(10.0 + 3.0 * i, (48, 40, 6)).copy(), oblique_affine((0.5, 0.5, 4.0)))


def test_adaptation_volume_lies_on_the_output_grid_with_in_plane_detail_box_averaged():
    image = _ramp_image()
    volume, axis, thickness = adaptation_volume(image, spacing=1.0)
    affine = affine_of(image)
    out_affine, out_shape = scaled_grid(affine, image.shape[1:], scale_for_spacing(affine, 1.0))
    assert (axis, thickness) == (2, pytest.approx(4.0))
    assert tuple(volume.shape[1:]) == out_shape == (24, 20, 24)
    np.testing.assert_allclose(affine_of(volume), out_affine, atol=1e-9)  # same world positions
    # voxel i of the 1 mm grid averages input voxels 2i and 2i + 1: the ramp at index 2i + 0.5
    lo, hi = PercentileNormalizer().fit(image.as_tensor())
    expected = (10.0 + 3.0 * (2 * np.arange(24) + 0.5) - lo) / (hi - lo)
    np.testing.assert_allclose(volume[0, :, 4, 10].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(volume[0].std(dim=(1, 2)).numpy(), 0.0, atol=1e-5)  # nothing leaks across


def test_pairs_thicken_an_in_plane_axis_to_the_scans_own_slice_thickness():
    sampler = adaptation_sampler(_ramp_image(), spacing=1.0, patch_size=8, seed=3)
    axes = set()
    for _ in range(12):
        x, y, info = sampler.sample()
        record = info["degradation"][-1]
        axes.add(record["axis"])
        assert record["thickness_mm"] == pytest.approx(4.0)  # the thick axis's 4 mm, in-plane
        assert info["scale"][record["axis"]] == pytest.approx(4.0)
        assert x.shape == y.shape == (1, 8, 8, 8)
    assert axes == {0, 1}


def test_scans_without_finer_in_plane_detail_or_a_thick_axis_are_refused():
    coarse = make_image(smooth_volume((12, 10, 6)), oblique_affine((2.0, 2.0, 4.0)))
    with pytest.raises(ValueError, match="no finer detail"):
        adaptation_volume(coarse, spacing=1.0)
    iso = make_image(smooth_volume((12, 10, 8)), oblique_affine((1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="one thick axis"):
        adaptation_volume(iso)
    with pytest.raises(ValueError, match="at least one step"):
        adapt(ResidualSR3D(features=4, num_blocks=1), _ramp_image(), steps=0)


def _edges_image() -> torch.Tensor:
    rng = np.random.default_rng(0)
    blocks = rng.uniform(0, 100, (6, 5, 3)).repeat(4, 0).repeat(4, 1).repeat(2, 2)  # sharp edges
    return make_image(blocks, oblique_affine((1.0, 1.0, 4.0)))


def test_adapt_returns_a_tuned_copy_that_fits_the_scans_own_pairs_better():
    torch.manual_seed(0)
    image = _edges_image()
    network = ResidualSR3D(features=8, num_blocks=1)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    held_out = adaptation_sampler(image, patch_size=12, seed=99)  # pairs the tuning never drew
    x, y = held_out.batch(8)

    def l1(net):
        with torch.no_grad():
            return float((net.eval()(x) - y).abs().mean())

    tuned = adapt(network, image, steps=60, lr=5e-3, patch_size=12, device="cpu", amp=False)
    assert tuned is not network
    for k, v in network.state_dict().items():  # the loaded network is left as it was
        torch.testing.assert_close(v, before[k])
    assert l1(tuned) < 0.95 * l1(network)  # it starts as the cubic B-spline


def test_adapt_minimises_the_loss_it_is_given():
    """MSE tuning fits the held-out pairs in mean square at least as well as L1 tuning, which fits
    them in mean absolute error at least as well: each minimises its own loss."""
    torch.manual_seed(0)
    image = _edges_image()
    network = ResidualSR3D(features=8, num_blocks=1)
    x, y = adaptation_sampler(image, patch_size=12, seed=99).batch(8)
    options = {"steps": 60, "lr": 5e-3, "patch_size": 12, "device": "cpu", "amp": False}
    tuned = {loss: adapt(network, image, loss=loss, **options) for loss in ("l1", "mse")}
    with torch.no_grad():
        error = {loss: net(x) - y for loss, net in tuned.items()}
    assert float((error["mse"] ** 2).mean()) < float((error["l1"] ** 2).mean())
    assert float(error["l1"].abs().mean()) < float(error["mse"].abs().mean())
    with pytest.raises(ValueError, match="pixel_loss must be one of"):
        adapt(network, image, loss="huber", **options)


def test_super_resolver_adapts_per_scan_on_the_same_output_grid():
    image = _edges_image()
    network = ResidualSR3D(features=4, num_blocks=1)
    plain = SuperResolver(network, device="cpu", amp=False)(image)
    adapted_sr = SuperResolver(network, device="cpu", amp=False, adapt=3)
    adapted = adapted_sr(image)
    np.testing.assert_allclose(affine_of(adapted), affine_of(plain), atol=1e-9)
    assert adapted.shape == plain.shape
    assert not torch.allclose(adapted, plain)
    assert adapted_sr.network is network


def test_evaluation_fine_tunes_once_per_scan_for_adapt_and_adapt_tta(tmp_path, monkeypatch):
    import nibabel as nib

    import volsr.training.adaptation as adaptation
    from volsr.api import evaluate_files
    from volsr.networks.checkpoint import save_checkpoint

    calls = []
    real = adaptation.adapt
    monkeypatch.setattr(adaptation, "adapt", lambda *a, **k: calls.append(k["steps"]) or real(*a, **k))
    bundle = tmp_path / "tiny"
    network = ResidualSR3D(features=4, num_blocks=1)
    save_checkpoint(bundle / "models" / "model.pt", network, PercentileNormalizer(), step=1)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"hr{i}.nii.gz")
        volume = smooth_volume((20, 20, 24), seed=i).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), paths[-1])
    protocol = {"kind": "thickness", "axis": 2, "factor": 3.0, "profile": "boxcar"}
    summary = evaluate_files(paths, protocol, [bundle], tmp_path / "out", device="cpu", tta=True, adapt=2)
    assert calls == [2, 2]  # one fine-tuning per scan, shared by +adapt and +adapt+tta
    for scan in ("hr0", "hr1"):
        methods = summary["scans"][scan]["methods"]
        assert {"tiny+adapt", "tiny+adapt+tta"} <= set(methods)
        assert methods["tiny+adapt"]["psnr"] != methods["tiny+adapt+tta"]["psnr"]


def test_real_t2w_at_x4_adapts_on_its_2mm_reference_grid(shared_data):
    """T2w is 1 x 1 x 2 mm; x4 thick slices make 8 mm; restoring to its own grid means 2 mm output
    spacing, so the 1 mm in-plane detail is box-averaged to 2 mm and thickened to 8 mm in-plane."""
    from volsr.data.io import load_image
    from volsr.evaluation.comparison import degrade
    from volsr.geometry.grids import voxel_spacing
    from volsr.transforms.protocol import ThickSlices

    hr = load_image(shared_data / "val" / "T2w.nii.gz")
    lr = degrade(hr, ThickSlices(axis=2, factor=4.0))
    scale = [n / m for n, m in zip(hr.shape[1:], lr.shape[1:], strict=True)]
    volume, axis, thickness = adaptation_volume(lr, scale=scale)
    assert (axis, thickness) == (2, pytest.approx(8.0))
    assert tuple(volume.shape[1:]) == (112, 112, 60)
    np.testing.assert_allclose(voxel_spacing(affine_of(volume)), 2.0, atol=1e-6)
    # the first 2 mm voxel is centred between the reference's first two 1 mm voxels, in world mm
    ref = affine_of(hr)
    first_centre = ref[:3, :3] @ [0.5, 0.5, 0.0] + ref[:3, 3]
    np.testing.assert_allclose(affine_of(volume)[:3, 3], first_centre, atol=1e-5)
