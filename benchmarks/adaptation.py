"""Self-supervised adaptation benchmark: PSNR gain over cubic against fine-tuning steps and rate.

Each validation volume is degraded once (x4 boxcar thick slices along axis 2 by default); a bundle's
network is fine-tuned on the degraded scan alone (:func:`volsr.training.adaptation.adapt`) for each
``STEPS:LR`` setting, run, and scored against the original. Step 0 is the shipped network. One JSON
line per (volume, setting) on stdout, with the fine-tuning time in seconds.

    python benchmarks/adaptation.py 0:0 200:5e-4 500:5e-4 1000:1e-3
    python benchmarks/adaptation.py 500:5e-4 --data ../shared/data/val/T2w.nii.gz --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from volsr.api import SuperResolver
from volsr.data.io import load_image, scan_stem
from volsr.evaluation.comparison import degrade, restore_baseline
from volsr.evaluation.metrics import compare
from volsr.geometry.grids import grid_factors
from volsr.inference.sliding_window import super_resolve
from volsr.training.adaptation import adapt
from volsr.transforms.protocol import Protocol, ThickSlices

DEFAULT_DATA = [
    "../shared/data/val/T1_head_ext2.nii.gz",
    "../shared/data/val/T2w.nii.gz",
]


def run(
    path: str, settings: list[tuple[int, float]], protocol: Protocol, bundle: str, device: str
) -> list[dict]:
    hr = load_image(path)
    lr = degrade(hr, protocol)
    scale = grid_factors(lr.shape[1:], hr.shape[1:])
    cubic = compare(restore_baseline(lr, hr.shape[1:], "cubic"), hr)["psnr"]
    sr = SuperResolver.from_bundle(bundle, device=device)
    rows = []
    for steps, rate in settings:
        t0 = time.perf_counter()
        network = sr.network
        if steps > 0:
            network = adapt(network, lr, sr.normalizer, scale=scale, steps=steps, lr=rate, device=device)
        seconds = time.perf_counter() - t0
        scores = compare(super_resolve(lr, network, sr.normalizer, scale=scale, device=device), hr)
        row = {
            "scan": scan_stem(path),
            "steps": steps,
            "lr": rate,
            "psnr": round(scores["psnr"], 3),
            "gain": round(scores["psnr"] - cubic, 3),
            "ssim": round(scores["ssim"], 4),
            "adapt_s": round(seconds, 3),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def parse_setting(text: str) -> tuple[int, float]:
    steps, rate = text.split(":")
    return int(steps), float(rate)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="+", type=parse_setting, help="STEPS:LR (0:0: as shipped)")
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    p.add_argument("--factor", type=float, default=4.0)
    p.add_argument("--axis", type=int, default=2)
    p.add_argument("--bundle", default="volsr_cnn3d")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    protocol = ThickSlices(axis=a.axis, factor=a.factor)
    for path in a.data:
        if not Path(path).exists():
            raise SystemExit(f"{path}: no such file")
        run(path, a.settings, protocol, a.bundle, a.device)


if __name__ == "__main__":
    main()
