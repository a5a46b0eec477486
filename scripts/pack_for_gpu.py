"""Lay out what a GPU machine needs beside the working tree, within the size that travels with it.

The GPU machine has torch but not monai, nibabel, pytorch-ignite or fire, and reaches no registry; the
scans in ``../shared/data`` do not travel. This script fills ``.gpu/`` (ignored by git) with

* ``wheels/``: pure-Python wheels of the missing packages, for the machine's Python (3.12),
* ``data/val/``: the validation volumes, ``data/train/``: as many training volumes as fit,

keeping the tracked tree plus ``.gpu/`` under ``--budget-mib`` (64 MiB by default). Then, on the GPU
machine, from the repository root::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.gpu --data .gpu/data --out "$OUT"

and, to train the default bundle in calls of a few minutes each, ``scripts/gpu_train.py``.

Usage: ``python scripts/pack_for_gpu.py [--budget-mib 64] [--no-wheels]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PACK = ROOT / ".gpu"
WHEELS = ["monai==1.6.1", "nibabel", "pytorch-ignite", "fire", "termcolor"]


def tracked_bytes() -> int:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / n).stat().st_size for n in names.decode().split("\0") if n and (ROOT / n).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pick_within(sizes: dict[str, int], room: int) -> list[str]:
    """The names of ``sizes``, smallest first, while their sum stays within ``room`` bytes."""
    chosen, used = [], 0
    for name, size in sorted(sizes.items(), key=lambda item: (item[1], item[0])):
        if used + size > room:
            break
        chosen.append(name)
        used += size
    return chosen


def download_wheels(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
         "-d", str(target), *WHEELS],
        check=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mib", type=float, default=64.0)
    parser.add_argument("--no-wheels", action="store_true", help="keep .gpu/wheels as it is")
    args = parser.parse_args()
    if not args.no_wheels:
        shutil.rmtree(PACK / "wheels", ignore_errors=True)
        download_wheels(PACK / "wheels")
    shutil.rmtree(PACK / "data", ignore_errors=True)
    shutil.copytree(SHARED / "val", PACK / "data" / "val")
    budget = int(args.budget_mib * 2**20) - 2**20  # a MiB of room for what git does not track yet
    room = budget - tracked_bytes() - folder_bytes(PACK)
    train = {p.name: p.stat().st_size for p in sorted((SHARED / "train").glob("*.nii.gz"))}
    (PACK / "data" / "train").mkdir(parents=True)
    for name in pick_within(train, room):
        shutil.copy2(SHARED / "train" / name, PACK / "data" / "train" / name)
    total = tracked_bytes() + folder_bytes(PACK)
    print(f"{PACK.relative_to(ROOT)}: {folder_bytes(PACK) / 2**20:.1f} MiB; with the tracked tree "
          f"{total / 2**20:.1f} of {args.budget_mib:g} MiB; training volumes: "
          f"{', '.join(sorted(p.name for p in (PACK / 'data' / 'train').iterdir())) or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
