"""The wheel as a user gets it: built from an sdist, installed into a fresh virtual environment outside
the source tree, running ``volsr demo`` and ``volsr infer`` with the bundles it ships."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volsr.geometry.grids import fov_corners, voxel_spacing

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "volsr_cnn3d"  # what volsr demo and volsr infer use unless --bundle names another
SHIPPED_BUNDLES = (DEFAULT, "volsr_gan3d", "volsr_kspace3d")
BUNDLE_FILES = (
    "configs/metadata.json",
    "configs/inference.json",
    "models/model.pt",
    "models/model_meta.json",
)
SAMPLE = "volsr/data/sample_pd_thick.nii.gz"

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # UTF-8 (progress bars), whatever C locale a reader in an earlier in-process test left set
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, encoding="utf-8", timeout=900, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(dist: Path) -> Path:
    """``python -m build`` as a release does (sdist, then the wheel from the unpacked sdist, so a file
    the sdist forgets is missing from the wheel too); without isolation, as the test runs offline."""
    if importlib.util.find_spec("build") is not None:
        args = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)]
    else:  # the test extra brings `build`; pip's in-tree build is the fallback
        args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist)]
        args.append(str(REPO))
    _run(args, REPO, dict(os.environ))
    (wheel,) = dist.glob("volsr-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel, a venv holding only it (the dependencies are this interpreter's, by a .pth file, so
    nothing is downloaded), an environment and a working folder outside the source tree holding a
    48 x 48 x 12 crop of the shipped sample, and the outputs of ``volsr infer`` on it per bundle."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(root / "dist")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # installed before the dependencies become visible, so pip sees no other volsr
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--no-deps", "--no-index", str(wheel)], root, dict(os.environ))
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(subprocess.check_output([str(python), "-c", where], text=True).strip())
    # plain path lines: the directories join sys.path after the venv's own, and their .pth files (the
    # source tree's editable finder among them) are not run
    outer = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    lines = "".join(f"{p}\n" for p in dict.fromkeys(outer) if Path(p).is_dir())
    (purelib / "zz_outer_site_packages.pth").write_text(lines)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = root / "work"
    work.mkdir()
    # the slicer moves the affine with the crop
    nib.save(nib.load(REPO / SAMPLE).slicer[40:88, 40:88, 20:32], work / "crop_pd_thick.nii.gz")
    return {
        "wheel": wheel,
        "venv": venv.resolve(),
        "bundles": venv.resolve() / "share" / "volsr" / "bundles",
        "python": python,
        "volsr": str(venv / "bin" / "volsr"),  # the console script pip wrote
        "env": env,
        "work": work,
        "scan": work / "crop_pd_thick.nii.gz",
        "inferred": {},
    }


def _installed_infer(installed: dict, bundle: str) -> Path:
    """``volsr infer`` of the installed wheel on the crop with ``bundle`` (the default one by default),
    run once per bundle for the tests that look at it."""
    if bundle not in installed["inferred"]:
        output = installed["work"] / f"{bundle}_wheel_sr.nii.gz"
        args = [installed["volsr"], "infer", str(installed["scan"]), "--device", "cpu", "-o", str(output)]
        _run(args + ([] if bundle == DEFAULT else ["--bundle", bundle]), installed["work"], installed["env"])
        installed["inferred"][bundle] = output
    return installed["inferred"][bundle]


def _sidecar(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".nii.gz") + ".json")


def _recorded_bundle(sidecar: Path) -> Path:
    made = json.loads(sidecar.read_text())["GeneratedBy"]
    bundle = Path(made["Bundle"])
    return (bundle if bundle.is_absolute() else sidecar.parent / bundle).resolve()


def _assert_same_field_of_view(out_path: Path, src_path: Path) -> nib.Nifti1Image:
    out, src = nib.load(out_path), nib.load(src_path)
    spacing = voxel_spacing(out.affine)
    assert np.allclose(spacing, voxel_spacing(src.affine).min(), rtol=2e-2)  # isotropic, finest spacing
    assert out.shape[2] > src.shape[2]
    assert np.allclose(
        fov_corners(out.affine, out.shape[:3]), fov_corners(src.affine, src.shape[:3]), atol=1e-3
    )
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_wheel_ships_every_bundle_and_the_sample_as_in_the_source_tree(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        data = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".data"))
        for bundle in SHIPPED_BUNDLES:
            for file in BUNDLE_FILES:
                name = f"{data}/data/share/volsr/bundles/{bundle}/{file}"
                assert name in names, name
                assert _sha256(wheel.read(name)) == _sha256(
                    (REPO / "bundles" / bundle / file).read_bytes()
                ), name
        assert _sha256(wheel.read(SAMPLE)) == _sha256((REPO / SAMPLE).read_bytes())


def test_the_installed_copy_is_the_one_that_runs(installed):
    where = _run(
        [str(installed["python"]), "-c", "import volsr; print(volsr.__file__)"],
        installed["work"],
        installed["env"],
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(installed["venv"]), where


def test_installed_demo_runs_the_shipped_bundle_on_the_shipped_sample(installed):
    out_dir = installed["work"] / "demo"
    _run(
        [installed["volsr"], "demo", "--device", "cpu", "-o", str(out_dir)],
        installed["work"],
        installed["env"],
    )
    output, sidecar = out_dir / "sample_pd_thick_sr.nii.gz", out_dir / "sample_pd_thick_sr.json"
    assert (out_dir / "sample_pd_thick_sr.png").stat().st_size > 10_000
    _assert_same_field_of_view(output, REPO / SAMPLE)
    assert _recorded_bundle(sidecar) == installed["bundles"] / DEFAULT
    (source,) = json.loads(sidecar.read_text())["Sources"]
    source = Path(source) if Path(source).is_absolute() else sidecar.parent / source
    assert source.resolve().is_relative_to(installed["venv"]), source  # the sample of the installed copy


@pytest.mark.parametrize("bundle", SHIPPED_BUNDLES)
def test_installed_infer_runs_each_shipped_bundle_and_keeps_the_field_of_view(installed, bundle):
    output = _installed_infer(installed, bundle)
    _assert_same_field_of_view(output, installed["scan"])
    assert _recorded_bundle(_sidecar(output)) == installed["bundles"] / bundle


def test_the_installed_default_hands_a_reduced_matrix_to_the_installed_kspace_bundle(installed):
    # every axis up-sampled alike on a header that states nothing: a smaller 3D k-space matrix
    output = installed["work"] / "reduced_sr.nii.gz"
    args = [installed["volsr"], "infer", str(installed["scan"]), "--scale", "1.5", "1.5", "1.5"]
    _run([*args, "--device", "cpu", "-o", str(output)], installed["work"], installed["env"])
    record = json.loads(_sidecar(output).read_text())
    assert _recorded_bundle(_sidecar(output)) == installed["bundles"] / "volsr_kspace3d"
    assert record["Consistency"]["model"] == "kspace"


def test_installed_infer_writes_the_same_voxels_as_the_source_tree(installed):
    """The same call through the wheel and through this interpreter's volsr (the source tree): one
    result, byte for byte once decompressed (gzip stamps its own time)."""
    wheel_out = _installed_infer(installed, DEFAULT)
    tree_out = installed["work"] / "tree_sr.nii.gz"
    call = ["infer", str(installed["scan"]), "--device", "cpu", "-o", str(tree_out)]
    _run([sys.executable, "-m", "volsr.cli", *call], installed["work"], dict(os.environ))
    tree_bundle = _recorded_bundle(_sidecar(tree_out))
    assert not tree_bundle.is_relative_to(installed["venv"]), tree_bundle  # two copies compared, not one
    assert gzip.decompress(wheel_out.read_bytes()) == gzip.decompress(tree_out.read_bytes())
    options = [json.loads(_sidecar(p).read_text())["GeneratedBy"]["Options"] for p in (wheel_out, tree_out)]
    assert options[0] == options[1]
