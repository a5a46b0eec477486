"""Fidelity benchmark: how sharp each bundle's output is, and how much slice-axis detail it restores.

Each validation volume is thickened (x4 boxcar along axis 2 by default), restored by cubic B-spline
and by each bundle (plain inference), and scored against the original: masked PSNR, sharpness ratio
(mean gradient, SR / reference) and the slice-axis power above the band the thick slices keep
(:func:`volsr.evaluation.metrics.high_frequency_power_ratio`, SR / reference). One JSON line per
(volume, method) on stdout.

    python benchmarks/fidelity.py
    python benchmarks/fidelity.py --bundle volsr_gan3d --factor 3 --device cuda
"""

from __future__ import annotations

import argparse
import json

from volsr.api import SuperResolver
from volsr.data.io import load_image, scan_stem
from volsr.evaluation.comparison import degrade, restore_baseline
from volsr.evaluation.metrics import compare, high_frequency_power_ratio
from volsr.geometry.grids import grid_factors
from volsr.transforms.protocol import ThickSlices

DEFAULT_DATA = ["../shared/data/val/T1_head_ext2.nii.gz", "../shared/data/val/T2w.nii.gz"]


def run(path: str, protocol: ThickSlices, bundles: list[str], device: str) -> list[dict]:
    hr = load_image(path)
    lr = degrade(hr, protocol)
    scale = grid_factors(lr.shape[1:], hr.shape[1:])
    outputs = {"cubic": restore_baseline(lr, hr.shape[1:], "cubic")}
    for bundle in bundles:
        outputs[bundle] = SuperResolver.from_bundle(bundle, device=device)(lr, scale=scale)
    cutoff = 0.5 / protocol.factor  # the thick slices' Nyquist frequency on the output grid
    rows = []
    for method, out in outputs.items():
        scores = compare(out, hr)
        row = {
            "scan": scan_stem(path),
            "method": method,
            "psnr": round(scores["psnr"], 3),
            "sharpness": round(scores["sharpness"], 3),
            "slice_axis_hf_power": round(high_frequency_power_ratio(out, hr, protocol.axis, cutoff), 3),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--bundle", nargs="+", default=["volsr_cnn3d", "volsr_gan3d"])
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--axis", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    protocol = ThickSlices(axis=args.axis, factor=args.factor)
    return [row for path in args.data for row in run(path, protocol, args.bundle, args.device)]


if __name__ == "__main__":
    main()
