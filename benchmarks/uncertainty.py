"""Uncertainty benchmark: how well the map ranks the error, and how often the calibrated error bar holds.

Two steps, so the network runs once per case:

``collect`` degrades a crop of each scan (thick slices, or a coarser 3-D k-space matrix), runs the
network once per symmetric view (16 passes; 4 with ``--views cheap``, which can calibrate only the
default 4-view map) without data consistency, and caches every view's output, normalised, with the
reference crop. ``analyse`` builds from the cache the 16-view map and the cheap 4-view map
(:data:`volsr.inference.uncertainty.CHEAP_VIEWS`) as the views' spread, and the output as inference
writes it by default: the views' mean projected onto the input with the consistency model inference
chooses (:func:`volsr.inference.consistency_choice.choose_consistency_model`, then
:func:`~volsr.inference.consistency.project_consistent` or
:func:`~volsr.inference.consistency.project_kspace_consistent`; ``--no-consistency`` scores the raw
mean). It fits the calibration (:func:`volsr.inference.uncertainty.fit_calibration`: per family, a
table over the up-sampling factor) on the ``fit`` cases (volumes of ``shared/data/train`` the bundle
never chose a step on), choosing its form by leave-one-volume-out coverage on them, and scores both
maps on ``val`` (and ``test``): Spearman with |error|, coverage of |error| <= 1.96 x the calibrated
map, and the reliability table (:mod:`volsr.evaluation.calibration`). It writes the calibration JSON,
the results JSON/Markdown and a reliability diagram.

    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py collect --split fit --split val
    python benchmarks/uncertainty.py analyse \
        --calibrate bundles/volsr_cnn3d/models/uncertainty_calibration.json
    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py collect --split test   # once, at the end
    python benchmarks/uncertainty.py analyse --split val --split test

    # the GAN bundle, 4-view map only; report in docs/evaluation/uncertainty_calibration_gan3d
    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py collect --bundle volsr_gan3d --views cheap \
        --split fit --split val
    python benchmarks/uncertainty.py analyse --bundle volsr_gan3d \
        --calibrate bundles/volsr_gan3d/models/uncertainty_calibration.json

Crops keep the measurement within a CPU budget: 48 x 48 x 60 voxels for fitting and ``test``,
64 x 64 x 60 for ``val``, centred on the reference's foreground; the thick axis keeps 60 voxels (a
multiple of every factor 2-5). Scores are on the whole volume's percentile scale and its foreground
(the voxels PSNR is scored on), a 4-voxel rim at the crop's faces left out (a cut face is not a volume
edge a user meets).
"""

from __future__ import annotations

import argparse
import json
import re
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
    ("fit", "train/ds002748_sub-04_T1w", (48, 60, 48), {"kind": "thickness", "axis": 1, "factor": 2.0}),
    ("fit", "train/ds002748_sub-06_T1w", (60, 48, 48), {"kind": "thickness", "axis": 0, "factor": 4.0}),
    ("fit", "train/studyforrest_T1w", (48, 48, 60), {"kind": "thickness", "axis": 2, "factor": 5.0}),
    ("fit", "train/child3y_MPRAGE", (60, 48, 48), {"kind": "thickness", "axis": 0, "factor": 2.0}),
    ("fit", "train/MR_Gd", (48, 48, 60), {"kind": "thickness", "axis": 2, "factor": 3.0}),
    ("fit", "train/PD25-fusion-template-1mm", (48, 60, 48), {"kind": "thickness", "axis": 1, "factor": 5.0}),
    ("fit", "train/ds002748_sub-04_T1w", (48, 48, 48), {"kind": "kspace", "fraction": 0.4}),
    ("fit", "train/child3y_MPRAGE", (48, 48, 48), {"kind": "kspace", "fraction": 0.5}),
    ("fit", "train/FLAIR", (48, 48, 48), {"kind": "kspace", "fraction": 0.4}),
    # a T2-weighted contrast at every factor, so that no factor's table is fitted on T1 scans alone
    ("fit", "train/FLAIR", (48, 60, 48), {"kind": "thickness", "axis": 1, "factor": 2.0}),
    ("fit", "train/FLAIR", (60, 48, 48), {"kind": "thickness", "axis": 0, "factor": 3.0}),
    ("fit", "train/FLAIR", (48, 60, 48), {"kind": "thickness", "axis": 1, "factor": 4.0}),
]
for _scan in ("val/T2w", "val/T1_head_ext2", "test/philips_ADNI_MPRAGE", "test/ds002748_sub-07_T1w"):
    _split = _scan.split("/")[0]
    _size = (64, 64, 60) if _split == "val" else (48, 48, 60)
    for _factor in (2.0, 3.0, 4.0, 5.0):
        CASES.append((_split, _scan, _size, {"kind": "thickness", "axis": 2, "factor": _factor}))
    CASES.append((_split, _scan, _size, {"kind": "kspace", "fraction": 0.5}))


def case_name(scan: str, protocol: dict) -> str:
    from volsr.transforms.protocol import protocol_from_dict

    return f"{Path(scan).name}__{protocol_from_dict(protocol).name.replace(' ', '_')}"


def _crop(hr: torch.Tensor, size: tuple[int, int, int], ref_scale) -> torch.Tensor:
    """A crop of ``size`` centred on the reference's foreground centroid, inside the volume."""
    from volsr.evaluation.metrics import foreground_mask

    mask = foreground_mask(ref_scale(hr))
    centre = torch.nonzero(mask).float().mean(0).round().long().tolist()
    start = [int(min(max(0, c - s // 2), n - s)) for c, s, n in zip(centre, size, hr.shape[1:], strict=True)]
    return SpatialCrop(roi_start=start, roi_end=[a + s for a, s in zip(start, size, strict=True)])(hr)


def collect(split: str, bundle: str, device: str, views: str = "all") -> None:
    """Run the network on every view (``views="all"``: the 16; ``"cheap"``: the 4 of the default
    map, a quarter of the time) of every case of ``split`` and cache the views' outputs."""
    import volsr.inference.sliding_window as sliding_window
    from volsr.api import SuperResolver
    from volsr.data.io import load_image
    from volsr.evaluation.comparison import degrade
    from volsr.evaluation.metrics import reference_scale
    from volsr.geometry.grids import grid_factors
    from volsr.inference.uncertainty import ALL_VIEWS, CHEAP_VIEWS
    from volsr.transforms.protocol import protocol_from_dict

    view_ids = list(range(len(ALL_VIEWS))) if views == "all" else [ALL_VIEWS.index(v) for v in CHEAP_VIEWS]
    # the raw views (no projection): inference's map is their spread, and analyse projects their mean
    sr = SuperResolver.from_bundle(bundle, device=device, tta=True, consistency=False)
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
        outputs = []
        for k in view_ids:  # one pass per view: every subset's spread comes from the same outputs
            with mock.patch.object(sliding_window, "_symmetries", lambda view=ALL_VIEWS[k]: [view]):
                out = sr(lr, scale=scale)
            outputs.append(((out.as_tensor()[0] - lo) / (hi - lo)).numpy().astype(np.float32))
        np.savez(
            path,
            views=np.stack(outputs),
            view_ids=np.asarray(view_ids),
            reference=hr.as_tensor()[0].numpy(),
            lo=lo,
            hi=hi,
            ref_lo=ref_lo,
            ref_hi=ref_hi,
            protocol=json.dumps(protocol_dict),
            scan=scan,
        )
        print(f"{split} {path.name}: {time.time() - start:.0f} s", flush=True)


def cached_views(folders: list[Path]) -> set[int]:
    """The views (indices into ``ALL_VIEWS``) every case cached in ``folders`` holds."""
    held: set[int] | None = None
    for path in (p for folder in folders for p in folder.glob("*.npz")):
        with np.load(path) as z:
            ids = {int(k) for k in z["view_ids"]} if "view_ids" in z.files else set(range(len(z["views"])))
        held = ids if held is None else held & ids
    return held or set()


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def degraded_input(case: dict):
    """The case's low-resolution input again (both degradations are deterministic), its per-axis
    factors and the consistency model inference chooses for it
    (:func:`volsr.inference.consistency_choice.choose_consistency_model`)."""
    from monai.data import MetaTensor

    from volsr.evaluation.comparison import degrade
    from volsr.geometry.grids import grid_factors
    from volsr.inference.consistency_choice import choose_consistency_model
    from volsr.transforms.protocol import protocol_from_dict

    ref = case["reference"]
    hr = MetaTensor(torch.from_numpy(ref)[None], affine=torch.eye(4, dtype=torch.float64))
    lr = degrade(hr, protocol_from_dict(json.loads(str(case["protocol"]))))
    factors = grid_factors(lr.shape[1:], ref.shape)
    return lr, factors, choose_consistency_model(lr, factors)


def case_maps(case: dict, views: list[int], consistency: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The output (mean over ``views``, projected onto the input as inference projects it unless
    ``consistency`` is off) and its uncertainty map (the views' spread), both in normalised units."""
    from volsr.data.acquisition import thickness_ratios
    from volsr.inference.consistency import project_consistent, project_kspace_consistent
    from volsr.inference.sliding_window import uncertainty_map

    held = [int(k) for k in case.get("view_ids", range(len(case["views"])))]  # ALL_VIEWS indices
    chosen = torch.from_numpy(case["views"][[held.index(k) for k in views]])
    mean = chosen.mean(0)[None]
    spread = chosen.std(0, correction=0)[None]
    if consistency:  # the default inference's projection, on the same normalised scale
        lr, _, choice = degraded_input(case)
        x_lr = (lr.as_tensor().float() - float(case["lo"])) / float(case["hi"] - case["lo"])
        if choice.model == "kspace":
            mean = project_kspace_consistent(mean, x_lr)
        else:
            mean = project_consistent(mean, x_lr, thickness_ratio=thickness_ratios(lr))
    return mean[0].numpy(), uncertainty_map(spread, 1.0)[0].numpy()


def scored(case: dict, views: list[int], consistency: bool = True) -> dict:
    """Map, |error| (scored voxels), the scan's noise, family and factor, on the reference's scale."""
    from volsr.inference.uncertainty import calibration_factor, scan_noise

    mean, umap = case_maps(case, views, consistency)
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
    lr, factors, choice = degraded_input(case)  # the noise the map is told of is the input's
    noise = scan_noise((lr.as_tensor() - float(case["lo"])) / lr_range, factors)
    return {
        "map": umap[keep] * lr_range / ref_range,
        "error": error[keep],
        "noise": noise * lr_range / ref_range,
        "family": choice.model,
        "factor": calibration_factor(factors),
    }


def _sample(d: dict, with_noise: bool = True):
    from volsr.inference.uncertainty import CalibrationSample

    noise = d["noise"] if with_noise else 0.0
    return CalibrationSample(d["map"], d["error"], d["family"], d["factor"], noise)


#: the calibration's candidate forms: (one slope and floor per factor, noise term)
FORMS: dict[str, tuple[bool, bool]] = {
    "one line per family": (False, False),
    "one line per family + noise": (False, True),
    "per factor + noise": (True, True),
}


def model_choice(fit_scans: list[dict], scans: list[str], views: int) -> dict:
    """Leave-one-volume-out coverage on the fit cases for each of :data:`FORMS`: every case of one
    volume is scored by the calibration fitted on the other volumes' cases. What chose the
    calibration's form (the validation volumes play no part)."""
    from volsr.evaluation.calibration import coverage_of
    from volsr.inference.uncertainty import fit_calibration

    out = {}
    for form, (per_factor, with_noise) in FORMS.items():
        coverages = [0.0] * len(fit_scans)
        for volume in sorted(set(scans)):
            rest = [_sample(d, with_noise) for d, v in zip(fit_scans, scans, strict=True) if v != volume]
            cal = fit_calibration(rest, views, per_factor=per_factor)
            for k, (held, v) in enumerate(zip(fit_scans, scans, strict=True)):
                if v == volume:
                    noise = held["noise"] if with_noise else 0.0
                    sigma = cal.sigma(held["map"], held["family"], held["factor"], noise)
                    coverages[k] = round(coverage_of(sigma, held["error"]), 4)
        inside = sum(0.90 <= c <= 0.98 for c in coverages)
        miss = float(np.mean([max(0.90 - c, c - 0.98, 0.0) for c in coverages]))
        out[form] = {"coverage": coverages, "within_90_98": f"{inside}/{len(coverages)}", "mean_miss": miss}
    return out


def chosen_form(choice: dict) -> str:
    """The form whose held-out coverage lies closest to 90-98 % on average (the mean distance outside
    the band: a case at 99.9 % counts more against a form than one at 98.1 %), then the one with most
    cases inside."""
    return min(
        FORMS, key=lambda f: (round(choice[f]["mean_miss"], 4), -int(choice[f]["within_90_98"].split("/")[0]))
    )


def analyse(
    splits: list[str], bundle: str, calibrate: str | None, out_dir: Path, consistency: bool = True
) -> dict:
    from scipy.stats import spearmanr

    from volsr.evaluation.calibration import coverage_of, reliability_table, save_reliability_diagram
    from volsr.inference.uncertainty import (
        ALL_VIEWS,
        CALIBRATION_FILE,
        CHEAP_VIEWS,
        SCHEMA,
        UncertaintyCalibration,
        fit_calibration,
        load_calibration,
    )

    designs = {"16 views": list(range(len(ALL_VIEWS))), "4 views": [ALL_VIEWS.index(v) for v in CHEAP_VIEWS]}
    root = CACHE / Path(bundle).name
    held = cached_views([root / split for split in {*splits, *(["fit"] if calibrate else [])}])
    designs = {d: v for d, v in designs.items() if set(v) <= held}  # a 4-view collect has no 16-view map
    output = "projected (data consistency on)" if consistency else "raw network output (no consistency)"
    results: dict = {"bundle": bundle, "hardware": hardware(), "output": output, "cases": []}
    calibrations: dict[str, UncertaintyCalibration] = {}
    if calibrate:
        fit_paths = sorted((root / "fit").glob("*.npz"))
        fit_cases = [_load(p) for p in fit_paths]
        volumes = [str(c["scan"]) for c in fit_cases]
        results["model_choice"] = {}
        forms = {}
        for design, views in designs.items():
            data = [scored(c, views, consistency) for c in fit_cases]
            choice = model_choice(data, volumes, len(views))
            forms[design] = chosen_form(choice)
            per_factor, with_noise = FORMS[forms[design]]
            samples = [_sample(d, with_noise) for d in data]
            calibrations[design] = fit_calibration(samples, views=len(views), per_factor=per_factor)
            results["model_choice"][design] = choice
        results["model_choice"]["scans"] = [p.stem for p in fit_paths]
        record = {
            "schema": SCHEMA,
            "form": "sigma = slope x spread + floor + noise_weight x noise, normalised units; per family "
            "(the consistency model) a table over the up-sampling factor, linear in log-factor "
            "(volsr.inference.uncertainty)",
            "output": output,
            "views": {str(len(designs[d])): calibrations[d].to_dict() for d in designs},
            "form_chosen": forms,
            "form_choice": results["model_choice"],
            "fitted_on": [f"{c['scan']}: {json.loads(str(c['protocol']))}" for c in fit_cases],
            "crop": "48 x 48 x 60 (or 48^3) voxels around the reference's foreground centroid",
            "command": f"python benchmarks/uncertainty.py analyse --bundle {Path(bundle).name} "
            f"--calibrate {calibrate}",
        }
        Path(calibrate).write_text(readable_json(record))
    else:
        stored = ROOT / "bundles" / Path(bundle).name / "models" / CALIBRATION_FILE
        if stored.is_file():  # how its form was chosen, for the report
            choice = json.loads(stored.read_text()).get("form_choice")
            if choice:
                results["model_choice"] = choice
        for design, views in designs.items():
            found = load_calibration(ROOT / "bundles" / Path(bundle).name, len(views))
            if found is None:
                raise SystemExit(f"{bundle} has no calibration for {len(views)} views: run with --calibrate")
            calibrations[design] = found
    results["calibration"] = {d: c.to_dict() for d, c in calibrations.items()}
    pooled: dict = {}
    for split in splits:
        for path in sorted((root / split).glob("*.npz")):
            case = _load(path)
            row = {"split": split, "scan": str(case["scan"]), "protocol": json.loads(str(case["protocol"]))}
            for design, views in designs.items():
                d = scored(case, views, consistency)
                sigma = calibrations[design].sigma(d["map"], d["family"], d["factor"], d["noise"])
                row[design] = {
                    "spearman": round(float(spearmanr(d["map"], d["error"]).statistic), 3),
                    "coverage": round(coverage_of(sigma, d["error"]), 4),
                    "rms_error": round(float(np.sqrt(np.mean(d["error"] ** 2))), 4),
                    "rms_sigma": round(float(np.sqrt(np.mean(sigma**2))), 4),
                    "noise": round(d["noise"], 4),
                }
                pooled.setdefault((split, design), []).append((sigma, d["error"]))
            results["cases"].append(row)
            print(json.dumps(row), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["reliability"] = {}
    for (split, design), parts in pooled.items():
        table = reliability_table(
            np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        )
        results["reliability"][f"{split}, {design}"] = table
        png = out_dir / f"reliability_{split}_{design.split()[0]}views.png"
        save_reliability_diagram(table, png, title=f"{Path(bundle).name}: {split}/ crops, {design}")
    example = root / "val" / "T2w__thick_x4_axis_2_boxcar.npz"
    if "val" in splits and example.exists():
        results["worked_example"] = worked_example(
            _load(example), designs["4 views"], calibrations["4 views"], consistency
        )
    (out_dir / "uncertainty.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "summary.md").write_text(summary_markdown(results))
    return results


def readable_json(record: dict) -> str:
    """``record`` as indented JSON with each list of numbers on one line (a table reads as a row)."""
    text = json.dumps(record, indent=2)
    numbers = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return numbers.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def worked_example(
    case: dict, views: list[int], calibration, consistency: bool = True, length: int = 9
) -> dict:
    """A line of voxels along the slice axis across the strongest boundary near the crop's centre: the
    reference, the output and its error bar there, in the scan's units (the 4-view map)."""
    mean, umap = case_maps(case, views, consistency)
    d = scored(case, views, consistency)
    protocol = json.loads(str(case["protocol"]))
    axis = int(protocol.get("axis", 2))
    lo, lr_range = float(case["lo"]), float(case["hi"] - case["lo"])
    ref = case["reference"]
    ref_range = float(case["ref_hi"] - case["ref_lo"])
    noise = d["noise"] * ref_range / lr_range  # back to the input's normalised units
    family = d["family"]
    sigma = np.asarray(calibration.sigma(umap, family, d["factor"], noise)) * lr_range
    from scipy.ndimage import gaussian_filter

    # a boundary between two tissues, not a one-voxel line: the steepest edge of the smoothed reference
    gradient = np.abs(np.gradient(gaussian_filter(ref.astype(np.float64), 2.0), axis=axis))
    centre = [n // 2 for n in ref.shape]
    box = tuple(slice(c - 8, c + 8) for c in centre)
    local = np.unravel_index(int(np.argmax(gradient[box])), gradient[box].shape)
    at = [b.start + i for b, i in zip(box, local, strict=True)]
    rows = []
    for k in range(at[axis] - length // 2, at[axis] + length // 2 + 1):
        idx = list(at)
        idx[axis] = k
        idx = tuple(idx)
        out = float(mean[idx] * lr_range + lo)
        rows.append(
            {
                "voxel": [int(v) for v in idx],
                "reference": round(float(ref[idx]), 1),
                "output": round(out, 1),
                "sigma": round(float(sigma[idx]), 1),
                "error": round(out - float(ref[idx]), 1),
                "inside_1.96_sigma": bool(abs(out - float(ref[idx])) <= 1.96 * float(sigma[idx])),
            }
        )
    return {"scan": str(case["scan"]), "protocol": protocol, "axis": axis, "line": rows}


def summary_markdown(results: dict) -> str:
    """The per-case table and the reliability tables, for docs/evaluation."""
    lines = [
        f"# Uncertainty map as an error bar: {Path(results['bundle']).name}",
        "",
        "Written by `benchmarks/uncertainty.py analyse`. Coverage: share of foreground voxels with",
        "|error| <= 1.96 x the calibrated map (target 90-98 %). Spearman: the map against |error|.",
        "RMS error and RMS sigma on the reference's percentile scale (its 0.5-99.5 % range is 1).",
        "",
        f"Output scored: {results.get('output', 'projected (data consistency on)')}.",
        "",
        "| split | scan | degradation | Spearman 16 | Spearman 4 | coverage 16 | coverage 4 "
        "| RMS error (4) | RMS sigma (4) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    from volsr.transforms.protocol import protocol_from_dict

    for row in results["cases"]:
        a, b = row.get("16 views"), row["4 views"]
        spearman16 = "n/a" if a is None else f"{a['spearman']:.3f}"
        coverage16 = "n/a" if a is None else f"{a['coverage']:.1%}"
        lines.append(
            f"| {row['split']} | {Path(row['scan']).name} | {protocol_from_dict(row['protocol']).name} "
            f"| {spearman16} | {b['spearman']:.3f} | {coverage16} | {b['coverage']:.1%} "
            f"| {b['rms_error']:.4f} | {b['rms_sigma']:.4f} |"
        )
    if "worked_example" in results:
        ex = results["worked_example"]
        lines += [
            "",
            f"## Worked example: {Path(ex['scan']).name}, {protocol_from_dict(ex['protocol']).name}, "
            f"along axis {ex['axis']}",
            "",
        ]
        lines += [
            "| voxel | reference | output | sigma | error | inside +-1.96 sigma |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {r['voxel']} | {r['reference']} | {r['output']} | {r['sigma']} | {r['error']} "
            f"| {'yes' if r['inside_1.96_sigma'] else 'no'} |"
            for r in ex["line"]
        ]
    choice = results.get("model_choice")
    if choice:
        lines += ["", "## The calibration's form: leave-one-volume-out coverage on the fit cases", ""]
        lines += [
            "Each volume's cases are scored by the calibration fitted on the other volumes' cases. The",
            "form shipped is the one with the smallest mean distance outside 90-98 % (`chosen`).",
            "",
            "| views | form | cases within 90-98 % | mean distance outside | coverage per held-out case |",
            "| --- | --- | ---: | ---: | --- |",
        ]
        for design in (d for d in ("16 views", "4 views") if d in choice):
            best = chosen_form(choice[design])
            for form, r in choice[design].items():
                cov = ", ".join(f"{c:.1%}" for c in r["coverage"])
                name = f"**{form}** (chosen)" if form == best else form
                lines.append(f"| {design} | {name} | {r['within_90_98']} | {r['mean_miss']:.2%} | {cov} |")
        lines += ["", "Cases, in order: " + ", ".join(choice["scans"])]
    for key, table in results["reliability"].items():
        lines += ["", f"## Reliability, {key} (all cases pooled, deciles of the map)", ""]
        lines += [
            "| decile | expected (RMS sigma) | observed (RMS error) | coverage |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['bin']} | {r['expected']:.4f} | {r['observed']:.4f} | {r['coverage']:.1%} |" for r in table
        ]
        lines += [
            "",
            f"![reliability](reliability_{key.split(', ')[0]}_{key.split(', ')[1].split()[0]}views.png)",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["collect", "analyse"])
    parser.add_argument("--split", action="append", choices=["fit", "val", "test"])
    parser.add_argument("--bundle", default="volsr_cnn3d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--views",
        choices=["all", "cheap"],
        default="all",
        help="collect: all 16 views, or only the default map's 4 (only that map can then be calibrated)",
    )
    parser.add_argument("--calibrate", help="fit on the fit split and write this calibration JSON")
    parser.add_argument(
        "--no-consistency",
        action="store_true",
        help="score the network's raw output, not the data-consistent output inference writes by default",
    )
    parser.add_argument(
        "-o", "--out", type=Path, help="report folder (default docs/evaluation/uncertainty_calibration[_GAN])"
    )
    args = parser.parse_args()
    name = Path(args.bundle).name
    suffix = "" if name == "volsr_cnn3d" else "_" + name.removeprefix("volsr_")
    out = args.out or ROOT / "docs" / "evaluation" / f"uncertainty_calibration{suffix}"
    splits = args.split or (["fit", "val"] if args.step == "collect" else ["val"])
    if args.step == "collect":
        for split in splits:
            collect(split, args.bundle, args.device, args.views)
    else:
        analyse(splits, args.bundle, args.calibrate, out, consistency=not args.no_consistency)


if __name__ == "__main__":
    main()
