"""The GPU check in one command (under 8 minutes on one data-centre GPU): precision, end to end, training.

1. Both bundles, in every autocast dtype (float32, bfloat16 and, for the record, float16, which volsr
   never chooses), on each validation volume thickened x4 along axis 2: non-finite voxel count,
   masked PSNR against the original, and seconds of the network pass.
2. The end-to-end breakdown of a 256^3 output (:mod:`benchmarks.end_to_end`).
3. Training throughput of the default bundle's ``train.json`` (48^3 patches) for ``--steps`` steps
   at batch 2 and 16, with the patches drawn in the training process and in DataLoader workers.

Everything goes to ``--out`` (``gpu.json`` and ``gpu.md``); the ``cuda`` section of
``docs/benchmarks.md`` is written from that file with ``--report FILE``.

    python -m benchmarks.gpu --data .gpu/data --out "$OUT"        # on the GPU machine (see scripts/)
    python -m benchmarks.gpu --device cpu --quick --out /tmp/gpu  # a smoke run anywhere
    python -m benchmarks.gpu --report /path/to/gpu.json           # back here: docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import DATA, ROOT, hardware, hardware_line, now, write_section

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BUNDLES = ("volsr_cnn3d", "volsr_gan3d")


@contextlib.contextmanager
def forced_precision(sr, dtype: torch.dtype):
    """The resolver ``sr`` runs its network in ``dtype`` inside the block, whatever it decided."""
    chosen = sr.precision
    sr.precision = dtype
    try:
        yield
    finally:
        sr.precision = chosen


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_rows(device: str, volumes: list[Path], quick: bool) -> list[dict]:
    from volsr.api import SuperResolver
    from volsr.data.io import load_image
    from volsr.evaluation.comparison import degrade
    from volsr.evaluation.metrics import compare
    from volsr.geometry.grids import grid_factors
    from volsr.transforms.protocol import ThickSlices

    rows = []
    for path in volumes:
        hr = load_image(path)
        if quick:
            hr = hr[:, :48, :48, :]
        lr = degrade(hr, ThickSlices(axis=2, factor=4.0))
        scale = grid_factors(lr.shape[1:], hr.shape[1:])
        for bundle in BUNDLES:
            sr = SuperResolver.from_bundle(bundle, device=device)
            for name, dtype in DTYPES.items():
                if quick and name == "float16" and sr.device.type == "cpu":
                    continue  # CPU float16 convolutions are reference code: minutes for a crop
                with forced_precision(sr, dtype):
                    sr(lr, scale=scale)  # warm-up: kernels chosen, memory pooled
                    sync(sr.device)
                    t0 = time.perf_counter()
                    out = sr(lr, scale=scale)
                    sync(sr.device)
                    seconds = time.perf_counter() - t0
                bad = int((~torch.isfinite(out.as_tensor())).sum())
                psnr = compare(out, hr)["psnr"] if bad == 0 else float("nan")
                rows.append({"volume": path.name, "bundle": bundle, "precision": name, "non_finite": bad,
                             "psnr": round(psnr, 3), "seconds": round(seconds, 3)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def training_rows(device: str, data: list[Path], steps: int) -> list[dict]:
    from volsr.networks.checkpoint import load_weights
    from volsr.training.trainer import TrainConfig, train_cnn

    base = json.loads((ROOT / "bundles" / "volsr_cnn3d" / "configs" / "train.json").read_text())["config"]
    rows = []
    for batch, workers in ((2, 0), (16, 0), (16, None)):
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(
                data=[str(p) for p in data], output_dir=out, network=base["network"],
                degradation=base["degradation"], patch_size=base["patch_size"], zoom=tuple(base["zoom"]),
                contrast_prob=base["contrast_prob"], batch_size=batch, steps=steps, warmup=10,
                checkpoint_every=10**9, device=device, progress=False, workers=workers,
            )  # fmt: skip
            t0 = time.perf_counter()
            train_cnn(cfg)
            seconds = time.perf_counter() - t0
            state = load_weights(Path(out) / "model.pt")
            finite = all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        rows.append({"batch": batch, "workers": "default" if workers is None else workers, "steps": steps,
                     "steps_per_s": round(steps / seconds, 2), "weights_finite": bool(finite)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report(result: dict) -> str:
    lines = [
        f"## GPU check ({result['device']})",
        "",
        f"{hardware_line(result['hardware'])}; {result['date']}. Command: `python -m benchmarks.gpu`.",
        "",
        "### Precision (x4 thick slices along axis 2, validation volumes)",
        "",
        "| volume | bundle | precision | non-finite voxels | PSNR (dB) | seconds |",
        "| --- | --- | --- | ---: | ---: | ---: |",
        *[
            f"| {r['volume']} | {r['bundle']} | {r['precision']} | {r['non_finite']} | {r['psnr']} | "
            f"{r['seconds']} |"
            for r in result["precision"]
        ],  # fmt: skip
    ]
    e2e = result.get("end_to_end")
    if e2e:
        lines += ["", f"### End to end, output {'x'.join(map(str, e2e['output_shape']))}", "",
                  "| stage | seconds |", "| --- | ---: |",
                  f"| imports | {e2e['imports_s']} |", f"| bundle load and device start | "
                  f"{e2e['load_bundle_and_device_start_s']} |",
                  *[f"| `predict_file`: {k} | {v} |" for k, v in e2e["stages_s"].items()],
                  f"| `predict_file` in all | {e2e['predict_file_s']} |", "",
                  f"End to end / bare net = **{e2e['end_to_end_over_network']}** (<= 3 wanted)."]  # fmt: skip
    lines += ["", "### Training throughput (default bundle's train.json, 48^3 patches)", "",
              "| batch | DataLoader workers | steps / s | weights finite |", "| ---: | ---: | ---: | --- |",
              *[f"| {r['batch']} | {r['workers']} | {r['steps_per_s']} | {r['weights_finite']} |"
                for r in result["training"]]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with val/ and train/ inside")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="small crops and few steps: a smoke run")
    parser.add_argument("--report", type=Path, help="write docs/benchmarks.md's cuda section from gpu.json")
    args = parser.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
        write_section(ROOT / "docs" / "benchmarks.md", "cuda", report(result))
        return
    from benchmarks import end_to_end

    args.out.mkdir(parents=True, exist_ok=True)
    volumes = sorted((args.data / "val").glob("*.nii.gz"))
    train_data = sorted((args.data / "train").glob("*.nii.gz"))[:3]
    result = {"device": args.device, "hardware": hardware(), "date": now()}
    result["precision"] = precision_rows(args.device, volumes, args.quick)
    shape = (32, 32, 8) if args.quick else (256, 256, 64)
    result["end_to_end"] = end_to_end.run(args.device, shape, (1.0, 1.0, 4.0))
    result["training"] = training_rows(args.device, train_data, 4 if args.quick else args.steps)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=1))
    (args.out / "gpu.md").write_text(report(result) + "\n")
    print(report(result))
    if not all(math.isfinite(r["psnr"]) for r in result["precision"] if r["precision"] != "float16"):
        raise SystemExit("a precision volsr chooses gave non-finite voxels")


if __name__ == "__main__":
    main()
