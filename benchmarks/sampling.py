"""Training-patch throughput: samples per second drawn in 0, 2 and 16 DataLoader worker processes.

The patches are the default bundle's (``configs/train.json``: 48^3, x2-6 boxcar thick slices on any
axis, zoom 1-2, contrast remapping half the time, grid encoding), drawn from training volumes as
:func:`volsr.training.trainer.train_cnn` draws them (:func:`volsr.training.data.patch_batches`). Each
worker count is timed over the same number of batches after one warm-up batch (the workers' start-up
excluded); ratios are against the in-process sampler (0 workers) timed in the same run.

    python -m benchmarks.sampling                       # writes the "sampling" section of docs/benchmarks.md
    python -m benchmarks.sampling --workers 0 4 --batches 20 --no-write
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import DATA, ROOT, command_line, hardware, hardware_line, now, write_section
from volsr.data.normalization import PercentileNormalizer
from volsr.training.data import PatchPairSampler, load_normalized, patch_batches
from volsr.transforms import build_degradation

DEFAULT_VOLUMES = ["train/FLAIR.nii.gz", "train/MR_Gd.nii.gz", "train/PD25-fusion-template-1mm.nii.gz"]


def make_sampler(paths: list[Path], seed: int = 0) -> PatchPairSampler:
    from volsr.data.io import load_image

    cfg = json.loads((ROOT / "bundles" / "volsr_cnn3d" / "configs" / "train.json").read_text())["config"]
    volumes = load_normalized([str(p) for p in paths], PercentileNormalizer(), load_image)
    return PatchPairSampler(
        volumes,
        build_degradation(cfg["degradation"], seed=seed),
        cfg["patch_size"],
        zoom=tuple(cfg["zoom"]),
        seed=seed,
        contrast_prob=cfg["contrast_prob"],
        grid_encoding=cfg["network"]["arguments"].get("grid_channels", 0) > 0,
    )


def samples_per_second(sampler: PatchPairSampler, workers: int, batch_size: int, batches: int) -> float:
    stream = patch_batches(sampler, batch_size, seed=0, workers=workers)
    next(stream)  # warm-up: the workers start and fill their queues
    t0 = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 16])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--data", nargs="+", default=[str(DATA / v) for v in DEFAULT_VOLUMES])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampler = make_sampler([Path(p) for p in args.data])
    rows = []
    for workers in args.workers:
        rate = samples_per_second(sampler, workers, args.batch_size, args.batches)
        rows.append({"workers": workers, "samples_per_s": round(rate, 2)})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r["samples_per_s"] for r in rows if r["workers"] == 0), None)
    hw = hardware()
    lines = [
        "## Training-patch sampling",
        "",
        f"{hardware_line(hw)}; {now()}. Command: `{command_line()}`.",
        "",
        f"Patches of the default bundle's `train.json` (48^3, batch {args.batch_size}), "
        f"{args.batches} batches after a warm-up batch; ratio against 0 workers (the sampler in the "
        "training process), timed in the same run.",
        "",
        "| DataLoader workers | samples / s | vs 0 workers |",
        "| ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['samples_per_s'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['workers']} | {r['samples_per_s']:.1f} | {ratio} |")
    if not args.no_write:
        write_section(ROOT / "docs" / "benchmarks.md", "sampling", "\n".join(lines))


if __name__ == "__main__":
    main()
