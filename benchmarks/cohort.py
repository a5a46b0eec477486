"""Volumes per hour over a cohort: the cohort runner against a plain loop over ``predict_file``.

One process writes ``--count`` synthetic thick-slice scans (``--shape`` voxels of 1 x 1 x 4 mm,
gzipped NIfTI, int16), loads the bundle once, then super-resolves the whole cohort with each method
in turn, ``--rounds`` times, alternating (the best round of each is reported):

* ``sequential``: ``for scan in cohort: sr.predict_file(scan, dst)``: read, run, write, one by one;
* ``cohort``: :func:`volsr.api.cohort.run_jobs` (what ``volsr infer`` runs): reader threads load the
  next ``--prefetch`` scans while the network runs, a writer thread writes behind.

Outputs are compared voxel for voxel between the two methods.

    python -m benchmarks.cohort                            # CPU; writes docs/cohort.md "cohort_cpu"
    python -m benchmarks.cohort --device cuda --out $OUT/cohort.json --no-write
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, command_line, hardware, hardware_line, now, write_section


def make_cohort(folder: Path, count: int, shape: tuple[int, int, int], seed: int = 0) -> list[Path]:
    """``count`` smooth int16 scans of ``shape`` voxels, 1 x 1 x 4 mm, as ``scan_NNN.nii.gz``."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        vol = np.zeros(shape, np.float32)
        for _ in range(8):
            c, w = rng.uniform(-0.6, 0.6, 3), rng.uniform(0.1, 0.3)
            vol += rng.uniform(200, 800) * np.exp(
                -sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)) / w**2
            )
        vol += rng.normal(0, 5, shape).astype(np.float32)
        paths.append(folder / f"scan_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(vol.astype(np.int16), np.diag([1.0, 1.0, 4.0, 1.0])), paths[-1])
    return paths


def run(args: argparse.Namespace) -> dict:
    import nibabel as nib
    import torch

    from volsr.api import SuperResolver
    from volsr.api.cohort import run_jobs
    from volsr.api.cohort.inputs import Job

    sr = SuperResolver.from_bundle(args.bundle, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        scans = make_cohort(Path(tmp) / "in", args.count, tuple(args.shape))
        sr(str(scans[0]))  # warm-up: the CPU precision check, allocator, CUDA start
        best: dict[str, float] = {}
        for round_ in range(args.rounds):
            for method in ("sequential", "cohort"):
                out = Path(tmp) / f"{method}{round_}"
                jobs = [Job(s, out / s.name.replace(".nii.gz", "_sr.nii.gz")) for s in scans]
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                start = time.perf_counter()
                if method == "sequential":
                    for job in jobs:
                        sr.predict_file(job.src, job.dst)
                else:
                    counts = run_jobs(sr, jobs, prefetch=args.prefetch, echo=lambda line: None)
                    assert counts["done"] == len(jobs), counts
                seconds = time.perf_counter() - start
                best[method] = min(best.get(method, float("inf")), seconds)
                print(f"round {round_ + 1} {method}: {seconds:.2f} s for {len(jobs)} scans", flush=True)
        pairs = zip(
            sorted((Path(tmp) / "sequential0").glob("*.nii.gz")),
            sorted((Path(tmp) / "cohort0").glob("*.nii.gz")),
            strict=True,
        )
        same = all(np.array_equal(nib.load(a).dataobj, nib.load(b).dataobj) for a, b in pairs)
    rows = {
        m: {"seconds": round(s, 2), "volumes_per_hour": round(args.count * 3600 / s)} for m, s in best.items()
    }
    return {
        "date": now(),
        "command": command_line(),
        "hardware": hardware(),
        "bundle": args.bundle,
        "device": str(sr.device),
        "count": args.count,
        "shape": list(args.shape),
        "output_shape": [args.shape[0], args.shape[1], args.shape[2] * 4],
        "prefetch": args.prefetch,
        "rounds": args.rounds,
        "methods": rows,
        "speedup": round(best["sequential"] / best["cohort"], 2),
        "identical_outputs": same,
    }


def markdown(result: dict) -> str:
    shape, out = result["shape"], result["output_shape"]
    lines = [
        f"Measured {result['date']} on {hardware_line(result['hardware'])}, device {result['device']}, "
        f"bundle {result['bundle']}: {result['count']} scans of {' x '.join(map(str, shape))} voxels "
        f"(1 x 1 x 4 mm, gzipped int16) to {' x '.join(map(str, out))}, best of {result['rounds']} rounds.",
        "",
        "| method | seconds | volumes / hour |",
        "| --- | ---: | ---: |",
    ]
    names = {
        "sequential": "`for scan: predict_file(scan)`",
        "cohort": f"`volsr infer` (prefetch {result['prefetch']})",
    }
    for method, row in result["methods"].items():
        lines.append(f"| {names[method]} | {row['seconds']} | {row['volumes_per_hour']} |")
    lines += [
        "",
        f"Speed-up: {result['speedup']}x; outputs identical voxel for voxel: {result['identical_outputs']}.",
        "",
        f"`{result['command']}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="volsr_cnn3d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 24])
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Also write the result as JSON here.")
    parser.add_argument("--no-write", action="store_true", help="Do not update docs/cohort.md.")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result["methods"]), f"speed-up {result['speedup']}x", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_write:
        section = "cohort_gpu" if result["device"].startswith("cuda") else "cohort_cpu"
        write_section(ROOT / "docs" / "cohort.md", section, markdown(result), title="# Cohorts")


if __name__ == "__main__":
    main()
