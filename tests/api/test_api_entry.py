"""The API as the one way in: resolver options and provenance, resuming a bundle's training from
Python, the CLI importing lightly, the facades, and the bundles' configs meeting MONAI's bundle
properties."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, make_tiny_bundle, oblique_affine, smooth_volume

from volsr.api import ResolverOptions, SuperResolver, ThickSlices, protocol_from_dict, train_bundle

BUNDLES = ["volsr_cnn3d", "volsr_gan3d"]


@pytest.fixture
def bundle(tmp_path):
    """The default bundle's configs with a tiny network (step 7), so tests stay fast."""
    return make_tiny_bundle(tmp_path / "tiny_bundle", step=7)


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "thick.nii.gz"
    nib.save(
        nib.Nifti1Image(smooth_volume((20, 18, 6)).astype(np.float32), oblique_affine((1.0, 1.0, 3.0))), path
    )
    return path


def test_with_options_and_adapted_keep_the_provenance(bundle, scan, tmp_path):
    from volsr.data.io import load_image

    sr = SuperResolver.from_bundle(bundle, device="cpu", adapt=3)
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    assert sr.info["bundle"] == str(bundle) and sr.info["bundle_version"] == version and sr.info["step"] == 7
    averaged = sr.with_options(tta=True, roi=(8, 8, 8))
    assert averaged.options == ResolverOptions(roi=(8, 8, 8), device=sr.device, tta=True, adapt=0)
    assert averaged.info == sr.info and averaged.network is sr.network
    tuned = sr.adapted(load_image(scan), steps=2)
    assert tuned.info == sr.info and tuned.network is not sr.network and tuned.adapt == 0
    tuned.predict_file(scan, tmp_path / "out" / "thick_sr.nii.gz")
    made_by = json.loads((tmp_path / "out" / "thick_sr.json").read_text())["GeneratedBy"]
    assert (made_by["Bundle"], made_by["BundleVersion"], made_by["CheckpointStep"]) == (
        str(bundle),
        version,
        7,
    )


def test_resolver_options_are_a_frozen_value():
    options = ResolverOptions(roi=[16, 16, 8], overlap=0.25)
    assert options.roi == (16, 16, 8)
    with pytest.raises(AttributeError):
        options.tta = True


def _tiny_train_config(bundle) -> None:
    config = json.loads((bundle / "configs" / "train.json").read_text())
    config["config"].update(
        network={"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1}},
        patch_size=12,
        batch_size=1,
        zoom=[1.0, 1.0],
        val_data=[],
        progress=False,
        log_dir=None,
    )
    (bundle / "configs" / "train.json").write_text(json.dumps(config))


def test_train_bundle_resumes_with_the_schedule_it_was_started_with(bundle, tmp_path):
    _tiny_train_config(bundle)
    data = tmp_path / "hr"
    data.mkdir()
    nib.save(nib.Nifti1Image(smooth_volume((30, 30, 30)).astype(np.float32), np.eye(4)), data / "a.nii.gz")
    train_bundle(bundle, data=data, steps=2, lr=1e-5, warmup=0, pixel_loss="mse", device="cpu")
    state = torch.load(bundle / "models" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2

    # the config says lr 1e-3, warm-up 200, l1: a resumed run keeps what the checkpoint was started with
    train_bundle(bundle, data=data, steps=3, resume=True, device="cpu")
    state = torch.load(bundle / "models" / "checkpoint.pt", weights_only=False)
    stored = state["config"]
    assert state["step"] == 3
    assert (stored["lr"], stored["warmup"], stored["pixel_loss"], stored["steps"]) == (1e-5, 0, "mse", 3)
    assert protocol_from_dict(stored["val_protocol"]) == ThickSlices(axis=2, factor=4.0)

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train_bundle(bundle, data=data, steps=1, init=tmp_path / "nope.pt", device="cpu")


def test_cli_imports_lightly_and_from_the_modules_that_define_things():
    # `volsr --help` is instant: importing the CLI loads none of the heavy libraries
    code = "import sys, volsr.cli; print(sorted({'torch', 'monai', 'nibabel', 'numpy'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert loaded.stdout.strip() == "[]"

    tree = ast.parse((REPO / "volsr" / "cli.py").read_text())
    at_top = {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in at_top if m.split(".")[0] == "volsr"} <= {"volsr.errors"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            if node.module.startswith("volsr."):  # the defining module, never a facade's lazy name
                assert node.module not in ("volsr.api", "volsr.api.cohort"), node.module
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {"torch", "pydoc", "dataclasses"} & imported


def test_the_facades_name_what_they_export_for_type_checkers():
    import volsr
    import volsr.api

    for facade in (volsr, volsr.api):
        tree = ast.parse(Path(facade.__file__).read_text())
        checked = next(
            n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
        )
        named = {
            alias.name
            for node in ast.walk(checked)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert set(facade.__all__) - {"__version__"} == named
        for name in facade.__all__:
            assert getattr(facade, name) is not None


def test_bundle_configs_name_only_the_api():
    for config in sorted((REPO / "bundles").glob("*/configs/*.json")):
        if config.name == "metadata.json":
            continue
        parsed = json.loads(config.read_text())
        parsed.pop("network_def", None)  # MONAI's tools build the network from it
        named = {word.strip("$'\"([") for word in json.dumps(parsed).split() if "volsr." in word}
        assert all(".api" in w or w.startswith("volsr.api") or w == "volsr" for w in named), (config, named)


@pytest.mark.parametrize("bundle_name", BUNDLES)
@pytest.mark.parametrize(("workflow", "config"), [("infer", "inference.json"), ("train", "train.json")])
def test_bundle_configs_have_every_monai_bundle_property(bundle_name, workflow, config, tmp_path):
    from monai.bundle import ConfigWorkflow

    nib.save(
        nib.Nifti1Image(smooth_volume((12, 12, 12)).astype(np.float32), np.eye(4)), tmp_path / "a.nii.gz"
    )
    root = REPO / "bundles" / bundle_name
    flow = ConfigWorkflow(
        config_file=str(root / "configs" / config),
        workflow_type=workflow,
        bundle_root=str(root),
        dataset_dir=str(tmp_path),
        device="cpu",
    )
    flow.initialize()
    assert flow.check_properties() == []
    if workflow == "train":
        assert flow.max_epochs == flow.trainer.config.steps  # volsr trains in steps: max_epochs is steps
        assert [item["hr"] for item in flow.train_dataset] == [str(tmp_path / "a.nii.gz")]
    else:
        assert [item["image"] for item in flow.dataset] == [str(tmp_path / "a.nii.gz")]
        assert isinstance(flow.inferer, SuperResolver) and flow.inferer.info["bundle"] == str(root)


def test_evaluate_shows_its_progress_over_the_scans(tmp_path, capsys):
    from volsr.api import ThickSlices, evaluate_files

    scans = []
    for i in range(2):
        scans.append(tmp_path / f"ref{i}.nii.gz")
        nib.save(
            nib.Nifti1Image(smooth_volume((16, 16, 16), seed=i).astype(np.float32), np.eye(4)), scans[-1]
        )
    summary = evaluate_files(scans, ThickSlices(axis=2, factor=2.0), out_dir=tmp_path / "eval", progress=True)
    assert set(summary["scans"]) == {"ref0", "ref1"}
    err = capsys.readouterr().err
    assert "evaluate" in err and "2/2" in err and "ref1.nii.gz" in err
    evaluate_files(scans[:1], ThickSlices(axis=2, factor=2.0), out_dir=tmp_path / "quiet")
    assert "evaluate" not in capsys.readouterr().err  # progress off by default in Python
