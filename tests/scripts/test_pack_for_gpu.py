"""The GPU pack takes the smallest volumes first and never passes its room."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pack_for_gpu.py"


def _script():
    spec = importlib.util.spec_from_file_location("pack_for_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_volumes_are_picked_smallest_first_within_the_room():
    pick = _script().pick_within
    sizes = {"a.nii.gz": 30, "b.nii.gz": 10, "c.nii.gz": 20, "d.nii.gz": 25}
    assert pick(sizes, 60) == ["b.nii.gz", "c.nii.gz", "d.nii.gz"]  # 55 bytes; a would pass 60
    assert pick(sizes, 9) == []
    assert pick(sizes, 10**6) == ["b.nii.gz", "c.nii.gz", "d.nii.gz", "a.nii.gz"]
