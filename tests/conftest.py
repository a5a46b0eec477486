"""Shared fixtures: tiny synthetic volumes with honest geometry, and the real sample data."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

# tiny tensors: one thread avoids OpenMP overhead (and oversubscription beside other jobs)
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def oblique_affine(spacing=(1.0, 1.0, 4.0), angle_deg: float = 20.0, origin=(-30.0, 12.5, 7.0)) -> np.ndarray:
    """A rotated (about z then x), flipped-x affine with the given voxel size."""
    a, b = np.deg2rad(angle_deg), np.deg2rad(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag([-1.0, 1.0, 1.0]) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def smooth_volume(shape=(24, 20, 16), seed: int = 0) -> np.ndarray:
    """A smooth positive blob volume (sum of gaussians), values ~0..100."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    vol = np.zeros(shape)
    for _ in range(6):
        c = [rng.uniform(0.2 * n, 0.8 * n) for n in shape]
        w = rng.uniform(2.0, 5.0)
        vol += rng.uniform(30, 80) * np.exp(
            -sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)) / (2 * w * w)
        )
    return vol


def make_image(array: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], affine=torch.as_tensor(affine))


@pytest.fixture
def thick_image() -> MetaTensor:
    """24 x 20 x 6 voxels of 1 x 1 x 4 mm on an oblique grid."""
    return make_image(smooth_volume((24, 20, 6)), oblique_affine((1.0, 1.0, 4.0)))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The CPU precision measurement is cached per machine in $XDG_CACHE_HOME: tests keep their own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def make_tiny_bundle(root: Path, step: int = 1) -> Path:
    """A bundle folder at ``root``: the default bundle's configs with a 4-feature network at ``step``,
    so that tests of the CLI, the API and cohorts run in seconds."""
    import shutil

    from volsr.data.normalization import PercentileNormalizer
    from volsr.networks import ResidualSR3D
    from volsr.networks.checkpoint import save_model

    shutil.copytree(REPO / "bundles" / "volsr_cnn3d" / "configs", root / "configs")
    inference = root / "configs" / "inference.json"  # the tiny network keeps every scan to itself
    inference.write_text(
        json.dumps({k: v for k, v in json.loads(inference.read_text()).items() if k != "kspace_bundle"})
    )
    network = ResidualSR3D(features=4, num_blocks=1)
    save_model(root / "models" / "model.pt", network, PercentileNormalizer(), step=step)
    return root


def write_thick_scan(folder: Path) -> Path:
    """``folder/in/thick.nii.gz``: 16 x 12 x 5 float32 voxels of 1 x 1 x 2 mm on an oblique grid, the
    scan the CLI tests run on."""
    import nibabel as nib

    path = folder / "in" / "thick.nii.gz"
    path.parent.mkdir()
    data = smooth_volume((16, 12, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, oblique_affine((1.0, 1.0, 2.0))), path)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


def import_benchmark(name: str):
    """The module ``benchmarks.<name>``: ``benchmarks/`` is not installed, so the package is imported by
    path (the repository root need not be on sys.path)."""
    if "benchmarks" not in sys.modules:
        folder = REPO / "benchmarks"
        spec = importlib.util.spec_from_file_location(
            "benchmarks", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"benchmarks.{name}")
