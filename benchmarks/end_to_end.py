"""Where the time of one ``volsr infer`` goes, and how it compares with the bare network.

One process super-resolves a synthetic scan (``--shape``, default 256x256x64 at 1x1x4 mm, so the
output is 256^3 at 1 mm) with the default bundle through :meth:`volsr.api.SuperResolver.predict_file`,
under ``cProfile``; the cumulative time of each stage's function is reported (reading, percentile
fit, spline, the network's windows, sliding-window stitching, writing, sidecar), the device start
(the first CUDA call) and, in a separate interpreter, the imports (``import volsr.api``). The bare
network is the time spent inside the network's forward calls; the ratio end to end / bare network
is the figure to watch (targets: <= 1.2 on a CPU, <= 3 on a GPU).

    python -m benchmarks.end_to_end                        # CPU; writes docs/benchmarks.md "end_to_end"
    python -m benchmarks.end_to_end --device cuda --out $OUT/end_to_end.json --no-write
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, command_line, hardware, hardware_line, now, write_section

#: stage -> (file suffix, function name) of the function whose cumulative time is the stage's
STAGES = {
    "read": ("io.py", "load_image"),
    "percentiles": ("normalization.py", "fit"),
    "spline": ("interpolation.py", "resample_array"),
    "sliding window (all)": ("utils.py", "sliding_window_inference"),
    "network": ("residual_sr.py", "forward"),
    "write": ("io.py", "save_image"),
    "sidecar": ("io.py", "write_sidecar"),
}


def import_seconds() -> float:
    """Wall seconds of ``import volsr.api`` in a fresh interpreter (best of 3)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import volsr.api"], check=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
    return best


def synthetic_scan(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    data = gaussian_filter(rng.random(shape, dtype=np.float32), 2.0) * 4000
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([*spacing, 1.0])), path)
    return path


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    found: dict[str, float] = {}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, (suffix, function) in STAGES.items():
            if filename.endswith(suffix) and name == function:
                # recursive or nested calls of one function appear once: keep the outermost's total
                found[stage] = max(found.get(stage, 0.0), cumulative)
    return found


def run(device: str, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> dict:
    import torch

    from volsr.api import SuperResolver

    with tempfile.TemporaryDirectory() as tmp:
        src = synthetic_scan(Path(tmp) / "scan.nii.gz", shape, spacing)
        t0 = time.perf_counter()
        sr = SuperResolver.from_bundle(device=device)
        if sr.device.type == "cuda":
            torch.zeros(1, device=sr.device).sum().item()
        start = time.perf_counter() - t0
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.enable()
        out = sr.predict_file(src, Path(tmp) / "scan_sr.nii.gz")
        profile.disable()
        total = time.perf_counter() - t0
        out_shape = list(json.loads(out.with_name("scan_sr.json").read_text())["Output"]["shape"])
    stages = stage_seconds(pstats.Stats(profile))
    imports = import_seconds()
    return {
        "device": str(sr.device),
        "input_shape": list(shape),
        "output_shape": out_shape,
        "imports_s": round(imports, 2),
        "load_bundle_and_device_start_s": round(start, 2),
        "predict_file_s": round(total, 2),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "end_to_end_over_network": round((imports + start + total) / stages.get("network", float("nan")), 3),
    }


def markdown(result: dict, hw: dict) -> str:
    rows = [
        ("imports (`import volsr.api`, own interpreter)", result["imports_s"]),
        ("bundle load and device start", result["load_bundle_and_device_start_s"]),
        *[(f"`predict_file`: {k}", v) for k, v in result["stages_s"].items()],
        ("`predict_file` in all", result["predict_file_s"]),
    ]
    lines = [
        f"## End to end ({result['device']})",
        "",
        f"{hardware_line(hw)}; {now()}. Command: `{command_line()}`.",
        "",
        f"Synthetic scan {'x'.join(map(str, result['input_shape']))} -> output "
        f"{'x'.join(map(str, result['output_shape']))}, default bundle, default options. Stage times are "
        "cumulative (the network's time is inside the sliding window's).",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *[f"| {name} | {seconds:.2f} |" for name, seconds in rows],
        "",
        "End to end (imports + start + `predict_file`) / bare network = "
        f"**{result['end_to_end_over_network']}**.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 64])
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 4.0])
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md as it is")
    args = parser.parse_args()
    result = run(args.device, tuple(args.shape), tuple(args.spacing))
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    if not args.no_write:
        name = "end_to_end" if result["device"] == "cpu" else "end_to_end_cuda"
        write_section(ROOT / "docs" / "benchmarks.md", name, markdown(result, hardware()))


if __name__ == "__main__":
    main()
