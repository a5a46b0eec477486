"""The default bundle: its network, its shipped weights, and `monai.bundle run` end to end (the model zoo's
checks of both bundles: tests/bundles/test_bundle_zoo.py)."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, oblique_affine, smooth_volume

from volsr.geometry.grids import fov_corners, voxel_spacing

BUNDLE = REPO / "bundles" / "volsr_cnn3d"


def test_network_takes_the_image_and_its_grid_encoding():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["network_data_format"]
    channels = meta["inputs"]["image"]["num_channels"]
    assert channels == 1 + net.config.grid_channels  # the image, then the grid encoding
    x = torch.rand(1, channels, 12, 10, 16)
    y = net(x)
    assert y.shape == (1, 1, 12, 10, 16) and str(y.dtype).endswith(meta["outputs"]["pred"]["dtype"])


def test_shipped_weights_are_trained_and_match_the_config():
    from monai.bundle import ConfigParser

    from volsr.networks.checkpoint import load_checkpoint

    net, _, ckpt = load_checkpoint(BUNDLE / "models" / "model.pt")
    assert ckpt["step"] > 0 and ckpt["validation"]["step"] == ckpt["step"]  # trained, with its numbers
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    promised = parser.get_parsed_content("network_def")
    promised.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", weights_only=True))  # the zoo's way
    assert all(torch.equal(promised.state_dict()[k], v) for k, v in net.state_dict().items())
    assert not torch.equal(net.out.weight, torch.zeros_like(net.out.weight))


def test_monai_bundle_run_inference_writes_exact_grid(tmp_path):
    src = tmp_path / "thick.nii.gz"
    aff = oblique_affine((1.0, 1.0, 3.0))
    nib.save(nib.Nifti1Image(smooth_volume((20, 16, 6)).astype(np.float32), aff), src)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(BUNDLE / "configs" / "inference.json"),
        "--bundle_root",
        str(BUNDLE),
        "--image",
        str(src),
        "--output_dir",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--adapt",
        "2",  # the config's options reach SuperResolver: two steps of self-supervised fine-tuning
    ]
    # tqdm draws its bar in UTF-8 whatever the locale says
    result = subprocess.run(cmd, capture_output=True, timeout=300, encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stderr[-2000:]
    out = nib.load(tmp_path / "out" / "thick_sr.nii.gz")
    assert out.shape == (20, 16, 18)
    assert np.allclose(voxel_spacing(out.affine), 1.0, atol=1e-5)
    assert np.allclose(fov_corners(out.affine, out.shape), fov_corners(aff, (20, 16, 6)), atol=1e-4)


def test_bundle_inference_config_writes_a_dicom_series_when_asked(tmp_path):
    from monai.bundle import ConfigParser

    from volsr.data.io import load_image

    src = tmp_path / "thick.nii.gz"
    aff = oblique_affine((1.0, 1.0, 3.0))
    nib.save(nib.Nifti1Image(smooth_volume((20, 16, 6)).astype(np.float32), aff), src)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "image": str(src), "output_dir": str(tmp_path / "out"),
                   "device": "cpu", "dicom": True})  # fmt: skip
    parser.get_parsed_content("run")
    series = load_image(tmp_path / "out" / "thick_sr")
    assert series.shape == (1, 20, 16, 18) and (tmp_path / "out" / "thick_sr.json").is_file()
    assert np.allclose(
        np.sort(fov_corners(series.affine.numpy(), (20, 16, 18)), axis=0),
        np.sort(fov_corners(aff, (20, 16, 6)), axis=0),
        atol=1e-3,
    )


@pytest.mark.parametrize("bundle", ["volsr_cnn3d", "volsr_gan3d", "volsr_kspace3d"])
def test_metadata_names_the_volsr_version_of_this_package(bundle):
    import tomllib

    import volsr

    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == volsr.__version__  # one version, whether installed or imported
    assert meta["required_packages_version"]["volsr"] == volsr.__version__
    assert meta["version"] in meta["changelog"]
    # a consumer outside volsr learns what each input channel is from the metadata alone
    channels = meta["network_data_format"]["inputs"]["image"]["channel_def"]
    assert len(channels) == meta["network_data_format"]["inputs"]["image"]["num_channels"] == 10
    # channel 0 is made as the network's configuration says: the up-sampling it was trained to refine
    inference = REPO / "bundles" / bundle / "configs" / "inference.json"
    network = json.loads(inference.read_text())["network_def"]
    made_by = {"cubic": "cubic B-spline", "fourier": "zero-filled Fourier"}
    assert made_by[network.get("input_interpolation", "cubic")] in channels["0"]
    assert "grid_encoding" in meta["description"]
