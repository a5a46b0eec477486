"""Cost of data consistency against the network: the projection's seconds over one network pass.

Data consistency is on by default (``volsr infer``), so its projection
(:func:`volsr.inference.consistency.project_consistent` for thick slices,
:func:`~volsr.inference.consistency.project_kspace_consistent` for a smaller matrix) runs after every
network pass. For each case, in one process and on the same volume: one ``super_resolve`` without
data consistency (spline, windows, de-normalisation: the run it is added to), then the projection of
that output in normalised units, as ``super_resolve`` does it, timed ``--repeats`` times (the median
is kept). The volume is a smooth synthetic one: the times depend on the grid, not on the content.

Cases (``name:INPUT_SHAPE:FACTORS:MODEL``): thick slices 191 x 256 x 54 up-sampled x2.8 along axis 2
(a 0.9 x 0.9 x 2.5 mm head to isotropic), and a reduced matrix 96 x 128 x 88 up-sampled x2 on every
axis (k-space).

    python benchmarks/consistency.py --device cpu --out /tmp/consistency.json
    python benchmarks/consistency.py --quick                  # small grids, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from volsr.api import SuperResolver
from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.interpolation import resample_array
from volsr.inference.consistency import project_consistent, project_kspace_consistent
from volsr.inference.devices import resolve_device
from volsr.inference.sliding_window import super_resolve

CASES = ("thick_x2.8:191,256,54:1,1,2.8:slices", "kspace_x2:96,128,88:2,2,2:kspace")
QUICK_CASES = ("thick_x2.8:48,40,12:1,1,2.8:slices", "kspace_x2:24,20,16:2,2,2:kspace")


def parse_case(text: str) -> dict:
    """``name:X,Y,Z:FX,FY,FZ:MODEL`` -> ``{"name", "shape", "scale", "model"}``."""
    name, shape, scale, model = text.split(":")
    if model not in ("slices", "kspace"):
        raise ValueError(f"model must be slices or kspace, got {model!r}")
    return {
        "name": name,
        "shape": tuple(int(n) for n in shape.split(",")),
        "scale": tuple(float(f) for f in scale.split(",")),
        "model": model,
    }


def synthetic_scan(shape, seed: int = 0) -> MetaTensor:
    """A smooth positive volume of ``shape`` on a 1 mm grid (noise smoothed by a cubic up-sampling)."""
    g = np.random.default_rng(seed)
    coarse = torch.as_tensor(g.random([1] + [max(2, n // 4) for n in shape]), dtype=torch.float32)
    volume = resample_array(coarse, shape, "cubic").clamp_(min=0) * 1000
    return MetaTensor(volume, affine=torch.eye(4, dtype=torch.float64))


def _project(y: torch.Tensor, x_lr: torch.Tensor, model: str) -> torch.Tensor:
    return project_kspace_consistent(y, x_lr) if model == "kspace" else project_consistent(y, x_lr)


def measure(case: dict, network, normalizer: PercentileNormalizer, device: str, repeats: int = 3) -> dict:
    """Seconds of one network pass and of the projection (median of ``repeats``) on ``case``'s volume."""
    scan = synthetic_scan(case["shape"])
    dev = resolve_device(device)
    t0 = time.perf_counter()
    out = super_resolve(scan, network, normalizer, scale=case["scale"], device=dev, consistency=False)
    network_s = time.perf_counter() - t0
    lo, hi = normalizer.fit(scan.as_tensor())
    work = dev if dev.type == "cuda" else torch.device("cpu")
    y = normalizer.normalize(out.as_tensor().to(work), lo, hi)  # the output as super_resolve projects it
    x_lr = normalizer.normalize(scan.as_tensor().to(work), lo, hi)
    times = []
    for _ in range(repeats):
        if work.type == "cuda":
            torch.cuda.synchronize(work)
        t0 = time.perf_counter()
        _project(y, x_lr, case["model"])
        if work.type == "cuda":
            torch.cuda.synchronize(work)
        times.append(time.perf_counter() - t0)
    projection_s = statistics.median(times)
    return {
        "case": case["name"],
        "model": case["model"],
        "input": list(case["shape"]),
        "output": [int(n) for n in out.shape[1:]],
        "network_s": round(network_s, 3),
        "projection_s": round(projection_s, 5),
        "ratio": round(projection_s / network_s, 6),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | model | input | output | network pass (s) | projection (s) | projection / network |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        grid = " x ".join
        lines.append(
            f"| {r['case']} | {r['model']} | {grid(map(str, r['input']))} | {grid(map(str, r['output']))} "
            f"| {r['network_s']:.1f} | {r['projection_s']:.2f} | {100 * r['ratio']:.2f} % |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", action="append", help="name:X,Y,Z:FX,FY,FZ:slices|kspace (repeatable)")
    p.add_argument("--quick", action="store_true", help="small grids (seconds)")
    p.add_argument("--bundle", default="volsr_cnn3d")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args()
    cases = [parse_case(c) for c in (args.case or (QUICK_CASES if args.quick else CASES))]
    sr = SuperResolver.from_bundle(args.bundle, device=args.device)
    rows = []
    for case in cases:
        rows.append(measure(case, sr.network, sr.normalizer, args.device, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows))
    if args.out:
        args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
