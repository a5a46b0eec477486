import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oblique_affine, smooth_volume

from volsr.api import SuperResolver, find_bundle, output_path_for
from volsr.data.normalization import PercentileNormalizer
from volsr.errors import VolsrInputError
from volsr.geometry.grids import fov_corners, voxel_spacing
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import save_checkpoint


@pytest.fixture
def scan(tmp_path):
    aff = oblique_affine((1.0, 1.0, 3.0))
    path = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((20, 18, 6)).astype(np.int16), aff), path)
    return path


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(
        tmp_path / "ckpt" / "model.pt", ResidualSR3D(features=4, num_blocks=1), PercentileNormalizer(), step=1
    )


def test_output_path_for_strips_known_suffixes(tmp_path):
    assert output_path_for("a/b/scan.nii.gz", tmp_path) == tmp_path / "scan_sr.nii.gz"
    assert output_path_for("series_folder/", tmp_path) == tmp_path / "series_folder_sr.nii.gz"
    assert output_path_for("x.mha", tmp_path).name == "x_sr.nii.gz"


def test_missing_bundle_names_what_was_searched():
    with pytest.raises(FileNotFoundError, match="no_such_bundle"):
        find_bundle("no_such_bundle")


def test_shipped_bundle_found_by_name_outside_the_source_tree(tmp_path, monkeypatch):
    from volsr.api import DEFAULT_BUNDLE

    monkeypatch.chdir(tmp_path)  # no ./bundles here: found in the source tree (or the install prefix)
    assert (find_bundle(DEFAULT_BUNDLE) / "models" / "model.pt").is_file()


def test_predict_file_writes_beside_cwd_with_exact_world_grid(scan, checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sr = SuperResolver.from_checkpoint(checkpoint, device="cpu", roi=(16, 16, 16))
    out = sr.predict_file(scan)
    assert out == tmp_path / "thick_sr.nii.gz"
    img = nib.load(out)
    assert img.shape == (20, 18, 18)
    assert np.allclose(voxel_spacing(img.affine), [1.0, 1.0, 1.0], atol=1e-5)
    src = nib.load(scan)
    assert np.allclose(fov_corners(img.affine, img.shape), fov_corners(src.affine, src.shape), atol=1e-4)
    assert img.get_data_dtype() == np.int16  # dtype="input" by default


def test_never_overwrites_input_and_checks_output_before_work(scan, checkpoint, tmp_path):
    sr = SuperResolver.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(VolsrInputError, match="refusing to write over"):
        sr.predict_file(scan, scan)
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"keep me")

    class Exploding(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("inference ran although the output could not be written")

    sr.network = Exploding()
    with pytest.raises(VolsrInputError, match="already exists"):
        sr.predict_file(scan, existing)
    assert existing.read_bytes() == b"keep me"


def test_call_accepts_path_and_metatensor_alike(scan, checkpoint):
    sr = SuperResolver.from_checkpoint(checkpoint, device="cpu", roi=(16, 16, 16))
    a = sr(scan, spacing=(1.0, 1.0, 1.5))
    from volsr.data.io import load_image

    b = sr(load_image(scan), spacing=(1.0, 1.0, 1.5))
    assert a.shape == (1, 20, 18, 12)
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert np.allclose(np.asarray(a.affine), np.asarray(b.affine))


def test_predict_file_records_how_the_output_was_made_in_a_sidecar(scan, tmp_path):
    import json

    from volsr import __version__
    from volsr.api import DEFAULT_BUNDLE
    from volsr.data.acquisition import slice_acquisition
    from volsr.data.io import load_image

    sr = SuperResolver.from_bundle(DEFAULT_BUNDLE, device="cpu", tta=False)
    sr.network = ResidualSR3D(features=4, num_blocks=1, grid_channels=9)  # fast; the record is the point
    dst = sr.predict_file(scan, tmp_path / "out" / "thick_sr.nii.gz")
    info = json.loads((tmp_path / "out" / "thick_sr.json").read_text())
    made_by = info["GeneratedBy"]
    assert (made_by["Name"], made_by["Version"]) == ("volsr", __version__)
    metadata = json.loads((find_bundle(DEFAULT_BUNDLE) / "configs" / "metadata.json").read_text())
    assert made_by["BundleVersion"] == metadata["version"] and made_by["CheckpointStep"] == sr.info["step"]
    assert made_by["Options"]["tta"] is False and made_by["Options"]["device"] == "cpu"
    assert info["Sources"] == [str(scan)]
    assert info["Input"] == {"shape": [20, 18, 6], "spacing_mm": [1.0, 1.0, 3.0]}
    assert info["Output"] == {"shape": [20, 18, 18], "spacing_mm": [1.0, 1.0, 1.0]}
    assert slice_acquisition(load_image(dst)) is None  # the sidecar states no slice thickness

    again = tmp_path / "again.nii.gz"
    (tmp_path / "again.json").write_text("{}")
    with pytest.raises(VolsrInputError, match="again.json: .*sidecar of the output.* exists"):
        sr.predict_file(scan, again)
    assert not again.exists()  # refused before any work
    sr.predict_file(scan, again, sidecar=False)
    assert again.exists() and (tmp_path / "again.json").read_text() == "{}"
    # scan.nii.gz -> scan.nii would share the input's (dcm2niix) sidecar: refused, even with overwrite
    (tmp_path / "thick.json").write_text('{"SliceThickness": 3}')
    with pytest.raises(VolsrInputError, match="input's sidecar"):
        sr.predict_file(scan, tmp_path / "thick.nii", overwrite=True)
    assert (tmp_path / "thick.json").read_text() == '{"SliceThickness": 3}'


def test_two_identical_runs_write_identical_voxels_and_record_the_precision(
    scan, checkpoint, tmp_path, monkeypatch
):
    """Even when the bf16 timing flips between the runs (as the load of a machine makes it), the first
    measurement stands: both outputs are bit-identical and their sidecars name the precision used."""
    import json

    from volsr.inference import devices

    monkeypatch.delenv("VOLSR_CPU_BF16", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    outputs = []
    for run, timings in enumerate([{None: 2.0, torch.bfloat16: 1.0}, {None: 1.0, torch.bfloat16: 2.0}]):
        devices.measured_cpu_prefers_bf16.cache_clear()  # a new process
        monkeypatch.setattr(devices, "_time_conv3d", lambda dtype, repeats=3, t=timings: t[dtype])
        sr = SuperResolver.from_checkpoint(checkpoint, device="cpu")
        outputs.append(sr.predict_file(scan, tmp_path / f"run{run}.nii.gz", dtype="float32"))
    devices.measured_cpu_prefers_bf16.cache_clear()
    first, second = (np.asanyarray(nib.load(p).dataobj) for p in outputs)
    assert np.array_equal(first, second)
    for p in outputs:
        options = json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())["GeneratedBy"][
            "Options"
        ]
        assert options["precision"] == "bfloat16" and options["amp"] is True
    no_amp = SuperResolver.from_checkpoint(checkpoint, device="cpu", amp=False)
    written = no_amp.predict_file(scan, tmp_path / "float32.nii.gz", dtype="float32")
    sidecar = json.loads(written.with_name("float32.json").read_text())
    assert sidecar["GeneratedBy"]["Options"]["precision"] == "float32"


def test_uncertainty_map_is_written_beside_the_output_on_its_grid_and_named_in_the_sidecar(scan, tmp_path):
    import json

    from volsr.api import uncertainty_path_for

    sr = SuperResolver.from_checkpoint(
        save_checkpoint(tmp_path / "m.pt", _asymmetric(), PercentileNormalizer(), step=1),
        device="cpu",
        uncertainty=True,
    )
    dst = sr.predict_file(scan, tmp_path / "out" / "thick_sr.nii.gz")
    umap = tmp_path / "out" / "thick_sr_uncertainty.nii.gz"
    assert uncertainty_path_for(dst) == umap
    out, u = nib.load(dst), nib.load(umap)
    assert u.shape == out.shape == (20, 18, 18)
    np.testing.assert_allclose(u.affine, out.affine, atol=1e-6)  # the same world grid
    assert u.get_data_dtype() == np.float32 and float(u.get_fdata().min()) >= 0
    assert float(u.get_fdata().max()) > 0  # a network whose views disagree leaves something uncertain
    info = json.loads((tmp_path / "out" / "thick_sr.json").read_text())
    assert info["Uncertainty"]["File"] == "thick_sr_uncertainty.nii.gz"
    assert info["GeneratedBy"]["Options"]["uncertainty"] is True
    assert info["GeneratedBy"]["Options"]["tta"] is True  # the map's views are averaged into the output

    # an existing map is refused before any work, and nothing is written
    again = tmp_path / "again.nii.gz"
    uncertainty_path_for(again).write_bytes(b"keep me")
    with pytest.raises(VolsrInputError, match="again_uncertainty.nii.gz: already exists"):
        sr.predict_file(scan, again)
    assert not again.exists() and uncertainty_path_for(again).read_bytes() == b"keep me"


def test_uncertainty_map_goes_to_a_second_dicom_series_of_the_same_study(scan, tmp_path):
    import SimpleITK as sitk

    from volsr.data.io import load_image

    sr = SuperResolver.from_checkpoint(
        save_checkpoint(tmp_path / "m.pt", _asymmetric(), PercentileNormalizer(), step=1),
        device="cpu",
        uncertainty=True,
    )
    folder = sr.predict_file(scan, tmp_path / "thick_sr", dicom=True)
    maps = tmp_path / "thick_sr_uncertainty"
    assert folder.is_dir() and maps.is_dir()

    def tags(series, *keys):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(sorted(series.glob("*.dcm"))[0]))
        reader.ReadImageInformation()
        return [reader.GetMetaData(k).strip() for k in keys]

    keys = ("0020|000d", "0020|0052", "0020|000e", "0020|0011", "0008|103e")
    study, frame, uid, number, description = tags(folder, *keys)
    m_study, m_frame, m_uid, m_number, m_description = tags(maps, *keys)
    assert (m_study, m_frame) == (study, frame) and m_uid != uid  # one study, two series
    assert (number, m_number) == ("1000", "2000") and m_description.endswith("volsr uncertainty")
    # a checkpoint brings no calibration: the map series says it is the raw spread, not an error bar
    (derivation,) = tags(maps, "0008|2111")
    assert derivation.startswith("uncalibrated spread of the network's views") and "volsr" in derivation
    sr_image, map_image = load_image(folder), load_image(maps)
    assert map_image.shape == sr_image.shape
    np.testing.assert_allclose(map_image.affine, sr_image.affine, atol=1e-4)
    assert float(map_image.max()) > 0


def _asymmetric() -> ResidualSR3D:
    """A tiny network whose flipped views disagree: random, unsymmetric kernels everywhere (a fresh
    network's last layer starts at zero, the identity, where every view agrees)."""
    network = ResidualSR3D(features=4, num_blocks=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return network


def test_predict_file_takes_one_request_or_its_keywords_and_writes_the_same(scan, checkpoint, tmp_path):
    from volsr.api import InferRequest, OutputOptions, ResolverOptions, ScanSource

    sr = SuperResolver.from_checkpoint(checkpoint, device="cpu", amp=False)
    by_keywords = sr.predict_file(scan, tmp_path / "kw.nii.gz", spacing=1.5, dtype="float32", sidecar=False)
    request = InferRequest(
        source=ScanSource(volume=None),
        spacing=1.5,
        output=OutputOptions(path=tmp_path / "req.nii.gz", dtype="float32", sidecar=False),
    )
    by_request = sr.predict_file(scan, request=request)
    assert by_request == tmp_path / "req.nii.gz" and not (tmp_path / "req.json").exists()
    kw, req = (nib.load(p) for p in (by_keywords, by_request))
    assert np.array_equal(kw.affine, req.affine) and np.array_equal(kw.get_fdata(), req.get_fdata())
    assert np.allclose(voxel_spacing(req.affine), 1.5, atol=0.05)  # the grid keeps the field of view

    # the request's resolver options run instead of the resolver's own: here they add the map
    mapped = sr.predict_file(
        scan,
        tmp_path / "map.nii.gz",
        InferRequest(resolver=ResolverOptions(device="cpu", amp=False, uncertainty=True)),
    )
    assert (tmp_path / "map_uncertainty.nii.gz").is_file() and mapped == tmp_path / "map.nii.gz"
    assert not sr.uncertainty  # the resolver itself is unchanged

    with pytest.raises(TypeError, match="not both"):
        sr.predict_file(scan, tmp_path / "both.nii.gz", request, dtype="input")


def test_a_request_is_frozen_refuses_bad_grids_and_fingerprints_what_changes_an_output():
    import dataclasses

    from volsr.api import InferRequest, OutputOptions, ScanSource

    request = InferRequest(
        source=ScanSource(series="1.2.3", volume=2),
        spacing=(1.0, None, 2.0),
        output=OutputOptions(dtype="float32", overwrite=True, dicom=True, modality="CT", skip_existing=True),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.spacing = 1.0
    # what to do with existing outputs, and which series, do not change what an output holds
    assert request.fingerprint() == {
        "spacing": (1.0, None, 2.0), "scale": None, "dtype": "float32", "volume": 2, "sidecar": True,
        "dicom": True, "modality": "CT",
    }  # fmt: skip
    for bad in ({"spacing": 0.0}, {"scale": (2.0, float("nan"), 1.0)}, {"scale": (1.0, None, 2.0)}):
        with pytest.raises(ValueError, match="positive, finite"):
            InferRequest(**bad)
