"""Both shipped bundles pass the MONAI model zoo's pre-merge check (``ci/verify_bundle.py`` of
Project-MONAI/model-zoo, full mode), done here through MONAI's public functions: the files the zoo
requires, the version in the changelog, the metadata against the zoo's schema (a copy in
tests/schemas: nothing is downloaded), the inference workflow's properties, the network's input and
output against ``network_data_format``, and ``ckpt_export`` with its default arguments (the weights
read from ``models/model.pt`` as a bare state dict) to a TorchScript file that computes what the
eager network does."""

import json
import logging
import shutil

import pytest
import torch
from conftest import REPO
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from packaging.version import Version

BUNDLES = ("volsr_cnn3d", "volsr_gan3d")
SCHEMA = REPO / "tests" / "schemas" / "meta_schema_20240725.json"
SCHEMA_SHA256 = "f28c6f8968dee9a47ba59892b82499e6604d932b11f3e4925c0388c70f1eac42"  # tests/schemas/README.md


def _files(bundle: str) -> tuple:
    root = REPO / "bundles" / bundle
    return root, root / "configs" / "metadata.json", root / "configs" / "inference.json"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_holds_the_files_the_zoo_requires(bundle):
    root, meta_file, _ = _files(bundle)
    assert (root / "LICENSE").is_file() and "License" in (root / "LICENSE").read_text()
    assert meta_file.is_file() and (root / "models" / "model.pt").is_file()
    configs = sorted(p.name for p in (root / "configs").glob("inference.*"))
    assert configs == ["inference.json"]  # one inference config, in one of the zoo's formats
    assert not list(root.glob("large_files.*"))  # everything ships in the folder: nothing to download


@pytest.mark.parametrize("bundle", BUNDLES)
def test_version_is_the_newest_entry_of_the_changelog(bundle):
    meta = json.loads(_files(bundle)[1].read_text())
    assert meta["version"] in meta["changelog"]
    assert Version(meta["version"]) == max(Version(v) for v in meta["changelog"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_verifies_against_the_zoo_schema_offline(bundle, tmp_path):
    _, meta_file, _ = _files(bundle)
    meta = json.loads(meta_file.read_text())
    assert meta["schema"].rsplit("/", 1)[1] == SCHEMA.name  # the schema it names is the copy here
    schema = shutil.copy(SCHEMA, tmp_path / SCHEMA.name)  # an existing file is read, not downloaded
    verify_metadata(
        meta_file=str(meta_file), filepath=str(schema), hash_val=SCHEMA_SHA256, hash_type="sha256"
    )

    del meta["network_data_format"]  # the same check refuses metadata without a required entry
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(
            meta_file=str(broken), filepath=str(schema), hash_val=SCHEMA_SHA256, hash_type="sha256"
        )


@pytest.fixture
def root_logger():
    """The bundle's logging.conf reconfigures the root logger: this process's is restored after."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_workflow_has_every_property_and_reads_the_shipped_model(bundle, root_logger):
    root, meta_file, config_file = _files(bundle)
    workflow = ConfigWorkflow(
        config_file=str(config_file),
        meta_file=str(meta_file),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type="inference",
        bundle_root=str(root),
        device="cpu",
    )
    workflow.initialize()
    assert workflow.check_properties() == []  # MONAI's inference and metadata properties, none missing
    assert workflow.version == json.loads(meta_file.read_text())["version"]
    resolver = workflow.inferer  # built by the config from models/model.pt and models/model_meta.json
    stored = json.loads((root / "models" / "model_meta.json").read_text())
    assert resolver.info["step"] == stored["step"] > 0 and resolver.info["bundle"] == str(root)
    assert resolver.normalizer.to_dict() == stored["normalization"]
    weights = torch.load(root / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(resolver.network.state_dict()[k], v) for k, v in weights.items())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_input_and_output_match_network_data_format(bundle):
    root, meta_file, config_file = _files(bundle)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(meta_file),
        config_file=str(config_file),
        bundle_root=str(root),
        device="cpu",
        any=8,  # "*" spatial sizes: 8^3 voxels
    )  # raises on a channel count or dtype that network_data_format does not promise


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_with_default_arguments_gives_the_eager_output(bundle, tmp_path):
    root, meta_file, config_file = _files(bundle)
    exported_file = tmp_path / "model.ts"
    # the zoo's call: net_id "network_def", ckpt_file models/model.pt, key_in_ckpt "" (a bare state dict)
    ckpt_export(filepath=str(exported_file), config_file=str(config_file), bundle_root=str(root))
    extra = {"metadata.json": ""}
    exported = torch.jit.load(str(exported_file), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(meta_file.read_text())["version"]

    parser = ConfigParser()
    parser.read_config(str(config_file))
    eager = parser.get_parsed_content("network_def")  # what a zoo user builds, then loads the weights into
    eager.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    eager.eval()
    x = torch.rand(1, 10, 9, 8, 7, generator=torch.Generator().manual_seed(0))  # odd sizes on purpose
    with torch.no_grad():
        expected = eager(x)
        assert expected.shape == (1, 1, 9, 8, 7)
        assert (expected - x[:, :1]).abs().max() > 1e-3  # trained: more than the spline input
        torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_run_writes_the_bytes_the_api_writes(bundle, tmp_path):
    import nibabel as nib
    import numpy as np
    from conftest import oblique_affine, smooth_volume

    from volsr.api import SuperResolver

    root, _, config_file = _files(bundle)
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((12, 10, 4)).astype(np.float32), oblique_affine((1, 1, 3))), src)
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update(
        {"bundle_root": str(root), "image": str(src), "output_dir": str(tmp_path / "run"), "device": "cpu"}
    )
    parser.get_parsed_content("run")  # what `python -m monai.bundle run` runs
    api = SuperResolver.from_bundle(root, device="cpu").predict_file(
        src, tmp_path / "api" / "thick_sr.nii.gz"
    )
    assert (tmp_path / "run" / "thick_sr.nii.gz").read_bytes() == api.read_bytes()
    ran, made = (json.loads((tmp_path / d / "thick_sr.json").read_text()) for d in ("run", "api"))
    assert ran["GeneratedBy"] == made["GeneratedBy"]
    step = json.loads((root / "models" / "model_meta.json").read_text())["step"]
    assert made["GeneratedBy"]["CheckpointStep"] == step  # the sidecar's step is the shipped weights'


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_run_and_volsr_infer_agree_with_data_consistency_on_and_off(bundle, tmp_path):
    """The config's default (``"consistency": "auto"``) is ``volsr infer``'s; ``false`` is
    ``--no-consistency``."""
    import nibabel as nib
    import numpy as np
    from conftest import oblique_affine, smooth_volume
    from typer.testing import CliRunner

    from volsr.cli import app

    root, _, config_file = _files(bundle)
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((12, 10, 4)).astype(np.float32), oblique_affine((1, 1, 3))), src)
    written = {}
    for name, consistency, flags in (("on", "auto", []), ("off", False, ["--no-consistency"])):
        parser = ConfigParser()
        parser.read_config(str(config_file))
        parser.update(
            {"bundle_root": str(root), "image": str(src), "output_dir": str(tmp_path / f"run_{name}"),
             "device": "cpu", "consistency": consistency}
        )  # fmt: skip
        parser.get_parsed_content("run")
        cli = tmp_path / f"cli_{name}" / "thick_sr.nii.gz"
        args = ["infer", str(src), "-o", str(cli), "--bundle", str(root), "--device", "cpu", "--no-progress"]
        result = CliRunner().invoke(app, [*args, *flags])
        assert result.exit_code == 0, result.output
        ran = tmp_path / f"run_{name}" / "thick_sr.nii.gz"
        assert ran.read_bytes() == cli.read_bytes()
        sidecars = [json.loads(p.with_name("thick_sr.json").read_text()) for p in (ran, cli)]
        assert sidecars[0]["Consistency"] == sidecars[1]["Consistency"]
        written[name] = (cli.read_bytes(), sidecars[1]["Consistency"])
    assert written["on"][1]["model"] == "slices" and written["off"][1]["model"] is None
    assert written["on"][0] != written["off"][0]  # the projection changed the output
