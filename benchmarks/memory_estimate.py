"""Memory estimate against measured peaks: does :func:`volsr.inference.memory.estimate_peak` bound a run?

Each case runs :func:`volsr.inference.sliding_window.super_resolve` and
:func:`volsr.data.io.save_image` in its own subprocess on a synthetic scan (peak resident memory
``VmHWM`` from ``/proc/self/status``, so the cases' peaks do not mix) and prints, per case, the bytes
per output voxel the run added and the estimate's bytes per voxel for the same run. The estimate's
constants are meant to bound the measured values (ratio estimate / measured >= 1); they are not meant
to be tight (their purpose is to refuse an impossible grid before allocating it).

    python benchmarks/memory_estimate.py                   # 192^3 output, every case (about 1 min)
    python benchmarks/memory_estimate.py --size 256 --case plain int16

A small random network (4 features) keeps the windows' activations small beside the whole-volume
buffers the constants describe; the estimate counts them as the resolver does before a run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

#: name -> (uncertainty map, stored type, consistency, the network's input interpolation)
CASES: dict[str, tuple[bool, str, bool | str, str]] = {
    "plain": (False, "float32", False, "cubic"),
    "int16": (False, "int16", False, "cubic"),
    "consistency": (False, "int16", "slices", "cubic"),
    "uncertainty": (True, "float32", False, "cubic"),
    # volsr_kspace3d: the scan re-gridded by zero-filled Fourier interpolation, the k-space projection
    "fourier": (False, "float32", "kspace", "fourier"),
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_case(case: str, size: int, factor: int) -> dict:
    """One case in this process: a ``size x size x size/factor`` scan up-sampled ``factor`` times
    along its last axis; the added peak resident memory per output voxel, and the estimate's."""
    from monai.data import MetaTensor

    from volsr.data.io import save_image
    from volsr.inference import memory
    from volsr.inference.sliding_window import super_resolve, window_budget
    from volsr.networks.residual_sr import ResidualSR3D, ResidualSRConfig

    uncertainty, dtype, consistency, interpolation = CASES[case]
    torch.manual_seed(0)
    config = ResidualSRConfig(features=4, num_blocks=1, attention=False, input_interpolation=interpolation)
    network = ResidualSR3D(config).eval()
    shape = (size, size, size // factor)
    data = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)) * 1000
    image = MetaTensor(data, affine=torch.as_tensor(np.diag([1.0, 1.0, float(factor), 1.0])))

    def once(scan: MetaTensor, folder: str) -> torch.Tensor:
        with torch.no_grad():
            out = super_resolve(
                scan,
                network,
                scale=(1, 1, factor),
                device="cpu",
                precision=torch.float32,
                consistency=consistency,
                uncertainty=uncertainty,
            )
        volume = out[0] if uncertainty else out
        save_image(volume, Path(folder) / "out.nii", dtype=dtype, overwrite=True)
        return volume

    with tempfile.TemporaryDirectory() as folder:
        once(image[:, :16, :16, :8], folder)  # lazy imports and first allocations, outside the peak
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        before = _status_kib("VmRSS")
        t0 = time.perf_counter()
        volume = once(image, folder)
        seconds = time.perf_counter() - t0
        peak = _status_kib("VmHWM")
    voxels = int(np.prod(volume.shape[1:]))
    estimate = memory.estimate_peak(
        voxels,
        channels=2 if uncertainty else 1,
        stored_itemsize=np.dtype(dtype).itemsize,
        integer_output=np.dtype(dtype).kind in "iu",
        # the windows' activations, as the resolver counts them before a run
        window_bytes=memory.window_bytes(
            min(window_budget(voxels, network, torch.device("cpu"), torch.float32), voxels), 4, 4
        ),
    )
    measured = (peak - before) * 1024 / voxels
    return {
        "case": case,
        "output_shape": list(volume.shape[1:]),
        "seconds": round(seconds, 2),
        "measured_bytes_per_voxel": round(measured, 1),
        "estimate_bytes_per_voxel": round(estimate / voxels, 1),
        "estimate_over_measured": round(estimate / voxels / measured, 2),
    }


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=192, help="output edge in voxels (default 192)")
    parser.add_argument("--factor", type=int, default=4, help="up-sampling along the last axis")
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("MEMORY " + json.dumps(run_case(args.case[0], args.size, args.factor)), flush=True)
        return []
    rows = []
    for case in args.case:
        cmd = [sys.executable, __file__, "--child", "--case", case, "--size", str(args.size)]
        cmd += ["--factor", str(args.factor)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")), None)
        row = json.loads(line[7:]) if line else {"case": case, "error": proc.stderr.strip()[-400:]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
