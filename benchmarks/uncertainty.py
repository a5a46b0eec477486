"""Uncertainty benchmark: how well the map ranks the error, and how often the calibrated error bar holds.

Two steps, so the network runs once per case:

``collect`` degrades a crop of each scan (thick slices, or a coarser 3-D k-space matrix), runs the
network once per symmetric view (16 passes) and caches every view's output, normalised, with the
reference crop. ``analyse`` builds from the cache the 16-view map and the cheap 4-view map
(:data:`volsr.inference.uncertainty.CHEAP_VIEWS`), fits the calibration
(:func:`volsr.inference.uncertainty.fit_calibration`) on the ``fit`` cases (held-back volumes of
``shared/data/train`` the bundle never chose a step on), and scores both maps on ``val`` (and ``test``):
Spearman with |error|, coverage of |error| <= 1.96 x the calibrated map, and the reliability table
(:mod:`volsr.evaluation.calibration`). It writes the calibration JSON, the results JSON/Markdown and a
reliability diagram.

    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py collect --split fit --split val
    python benchmarks/uncertainty.py analyse --calibrate bundles/volsr_cnn3d/models/uncertainty_calibration.json
    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py collect --split test   # once, at the end
    python benchmarks/uncertainty.py analyse --split val --split test

Crops keep the measurement within a CPU budget: 48 x 48 x 60 voxels for fitting, 64 x 64 x 60 for
scoring, centred on the reference's foreground; the thick axis keeps 60 voxels (a multiple of every
factor 2-5). Scores are on the whole volume's percentile scale and its foreground (the voxels PSNR is
scored on), a 4-voxel rim at the crop's faces left out (a cut face is not a volume edge a user meets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from monai.transforms import SpatialCrop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, ROOT, hardware  # noqa: E402

CACHE = Path("/tmp/volsr_uncertainty_cache")
RIM = 4

#: (split, scan, crop size, protocol dict): thick slices along the scan's axis, or a k-space matrix
CASES: list[tuple[str, str, tuple[int, int, int], dict]] = [
    ("fit", "train/ds002748_sub-01_T1w", (48, 48, 60), {"kind": "thickness", "axis": 2, "factor": 2.0}),
    ("fit", "train/ds002748_sub-03_T1w", (60, 48, 48), {"kind": "thickness", "axis": 0, "factor": 3.0}),
    ("fit", "train/ds002748_sub-05_T1w", (48, 60, 48), {"kind": "thickness", "axis": 1, "factor": 5.0}),
    ("fit", "train/child3y_MPRAGE", (48, 48, 60), {"kind": "thickness", "axis": 2, "factor": 4.0}),
    ("fit", "train/studyforrest_T1w", (48, 48, 60), {"kind": "thickness", "axis": 2, "factor": 3.0}),
    ("fit", "train/FLAIR", (48, 48, 60), {"kind": "thickness", "axis": 2, "factor": 5.0}),
    ("fit", "train/MNI152_2009_template", (48, 60, 48), {"kind": "thickness", "axis": 1, "factor": 4.0}),
    ("fit", "train/MR_Gd", (48, 48, 48), {"kind": "kspace", "fraction": 0.5}),
    ("fit", "train/PD25-fusion-template-1mm", (48, 48, 48), {"kind": "kspace", "fraction": 0.4}),
    ("fit", "train/ds002748_sub-02_T1w", (48, 48, 48), {"kind": "kspace", "fraction": 0.5}),
]
for _scan in ("val/T2w", "val/T1_head_ext2", "test/philips_ADNI_MPRAGE", "test/ds002748_sub-07_T1w"):
    _split = _scan.split("/")[0]
    for _factor in (2.0, 3.0, 4.0, 5.0):
        CASES.append((_split, _scan, (64, 64, 60), {"kind": "thickness", "axis": 2, "factor": _factor}))
    CASES.append((_split, _scan, (64, 64, 60), {"kind": "kspace", "fraction": 0.5}))


def case_name(scan: str, protocol: dict) -> str:
    from volsr.transforms.protocol import protocol_from_dict

    return f"{Path(scan).name}__{protocol_from_dict(protocol).name.replace(' ', '_')}"


def _crop(hr: torch.Tensor, size: tuple[int, int, int], ref_scale) -> torch.Tensor:
    """A crop of ``size`` centred on the reference's foreground centroid, inside the volume."""
    from volsr.evaluation.metrics import foreground_mask

    mask = foreground_mask(ref_scale(hr))
    centre = torch.nonzero(mask).float().mean(0).round().long().tolist()
    start = [
        int(min(max(0, c - s // 2), n - s)) for c, s, n in zip(centre, size, hr.shape[1:], strict=True)
    ]
    return SpatialCrop(roi_start=start, roi_end=[a + s for a, s in zip(start, size, strict=True)])(hr)


def collect(split: str, bundle: str, device: str) -> None:
    """Run the network on every view of every case of ``split`` and cache the views' outputs."""
    import volsr.inference.sliding_window as sliding_window
    from volsr.api import SuperResolver
    from volsr.data.io import load_image
    from volsr.evaluation.comparison import degrade
    from volsr.evaluation.metrics import reference_scale
    from volsr.geometry.grids import grid_factors
    from volsr.inference.uncertainty import ALL_VIEWS
    from volsr.transforms.protocol import protocol_from_dict

    sr = SuperResolver.from_bundle(bundle, device=device, tta=True)
    folder = CACHE / Path(bundle).name / split
    folder.mkdir(parents=True, exist_ok=True)
    for case_split, scan, size, protocol_dict in CASES:
        if case_split != split:
            continue
        path = folder / f"{case_name(scan, protocol_dict)}.npz"
        if path.exists():
            continue
        start = time.time()
        full = load_image(DATA / f"{scan}.nii.gz")
        ref_lo, ref_hi = sr.normalizer.fit(full.as_tensor())  # the whole scan's percentile scale
        hr = _crop(full, size, reference_scale(full))
        protocol = protocol_from_dict(protocol_dict)
        lr = degrade(hr, protocol)
        lo, hi = sr.normalizer.fit(lr.as_tensor())
        scale = grid_factors(lr.shape[1:], hr.shape[1:])
        views = []
        for view in ALL_VIEWS:  # one pass per view: every subset's spread comes from the same outputs
            with mock.patch.object(sliding_window, "_symmetries", lambda view=view: [view]):
                out = sr(lr, scale=scale)
            views.append(((out.as_tensor()[0] - lo) / (hi - lo)).numpy().astype(np.float32))
        np.savez(
            path,
            views=np.stack(views),
            reference=hr.as_tensor()[0].numpy(),
            lo=lo,
            hi=hi,
            ref_lo=ref_lo,
            ref_hi=ref_hi,
            protocol=json.dumps(protocol_dict),
            scan=scan,
        )
        print(f"{split} {path.name}: {time.time() - start:.0f} s", flush=True)


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def case_maps(case: dict, views: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The output (mean over ``views``) and its uncertainty map, both in normalised units."""
    from volsr.inference.sliding_window import uncertainty_map

    chosen = torch.from_numpy(case["views"][views])
    mean = chosen.mean(0)
    spread = chosen.std(0, correction=0)[None]
    return mean.numpy(), uncertainty_map(spread, 1.0)[0].numpy()


def scored(case: dict, views: list[int]) -> dict[str, np.ndarray]:
    """Map, |error| and the method's factor over the scored voxels, on the LR's normalised scale."""
    mean, umap = case_maps(case, views)
    ref = case["reference"]
    ref_range = float(case["ref_hi"] - case["ref_lo"])
    lr_range = float(case["hi"] - case["lo"])
    # both on the reference's scale: the error bar is compared with the error in scanner units
    out_units = mean * lr_range + float(case["lo"])
    error = np.abs(out_units - ref) / ref_range
    fg = (ref - float(case["ref_lo"])) / ref_range > 0.1
    rim = np.zeros_like(fg)
    rim[RIM:-RIM, RIM:-RIM, RIM:-RIM] = True
    keep = fg & rim
    return {"map": umap[keep] * lr_range / ref_range, "error": error[keep], "out": mean, "keep": keep}


def analyse(splits: list[str], bundle: str, calibrate: str | None, out_dir: Path) -> dict:
    from scipy.stats import spearmanr

    from volsr.evaluation.calibration import coverage_of, reliability_table, save_reliability_diagram
    from volsr.inference.uncertainty import (
        ALL_VIEWS,
        CHEAP_VIEWS,
        UncertaintyCalibration,
        fit_calibration,
        load_calibration,
    )

    designs = {"16 views": list(range(len(ALL_VIEWS))), "4 views": [ALL_VIEWS.index(v) for v in CHEAP_VIEWS]}
    root = CACHE / Path(bundle).name
    calibrations: dict[str, UncertaintyCalibration] = {}
    if calibrate:
        fit_cases = [_load(p) for p in sorted((root / "fit").glob("*.npz"))]
        for design, views in designs.items():
            data = [scored(c, views) for c in fit_cases]
            m = np.concatenate([d["map"] for d in data])
            e = np.concatenate([d["error"] for d in data])
            calibrations[design] = fit_calibration(m, e, views=len(views), cases=len(fit_cases))
        record = {
            "views": {str(len(designs[d])): calibrations[d].to_dict() for d in designs},
            "fitted_on": [f"{c['scan']} {json.loads(str(c['protocol']))}" for c in fit_cases],
            "command": "python benchmarks/uncertainty.py analyse --calibrate " + calibrate,
        }
        Path(calibrate).write_text(json.dumps(record, indent=2) + "\n")
    else:
        for design, views in designs.items():
            calibrations[design] = load_calibration(ROOT / "bundles" / Path(bundle).name, len(views))
    results: dict = {"bundle": bundle, "hardware": hardware(), "cases": []}
    pooled: dict = {}
    for split in splits:
        for path in sorted((root / split).glob("*.npz")):
            case = _load(path)
            row = {"split": split, "scan": str(case["scan"]), "protocol": json.loads(str(case["protocol"]))}
            for design, views in designs.items():
                d = scored(case, views)
                sigma = calibrations[design].sigma(d["map"])
                rho = float(spearmanr(d["map"], d["error"]).statistic)
                row[design] = {
                    "spearman": round(rho, 3),
                    "coverage": round(coverage_of(sigma, d["error"]), 4),
                    "rmse": round(float(np.sqrt(np.mean(d["error"] ** 2))), 4),
                    "mean_sigma": round(float(np.mean(sigma)), 4),
                }
                pooled.setdefault((split, design), []).append((sigma, d["error"]))
            results["cases"].append(row)
            print(json.dumps(row), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["reliability"] = {}
    for (split, design), parts in pooled.items():
        sigma = np.concatenate([p[0] for p in parts])
        error = np.concatenate([p[1] for p in parts])
        table = reliability_table(sigma, error)
        key = f"{split}, {design}"
        results["reliability"][key] = table
        if design == "4 views":
            save_reliability_diagram(
                table, out_dir / f"reliability_{split}.png", title=f"{bundle}: {split}/, {design}"
            )
    (out_dir / "uncertainty.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["collect", "analyse"])
    parser.add_argument("--split", action="append", choices=["fit", "val", "test"])
    parser.add_argument("--bundle", default="volsr_cnn3d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibrate", help="fit on the fit split and write this calibration JSON")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "evaluation" / "uncertainty_calibration")
    args = parser.parse_args()
    splits = args.split or (["fit", "val"] if args.step == "collect" else ["val"])
    if args.step == "collect":
        for split in splits:
            collect(split, args.bundle, args.device)
    else:
        analyse(splits, args.bundle, args.calibrate, args.out)


if __name__ == "__main__":
    main()
