"""Speed and memory benchmark: the network against the machine's own conv3d limit, in one process.

On the same input, in one process (timings interleaved round by round, best of ``--reps``):

(a) the machine's conv3d peak: a 32->32 3x3x3 convolution on a 1x32x64^3 tensor, fp32 and bf16
    (fp16 on CUDA), channels-last-3d and not; GFLOP/s = 2 * 27 * 32 * 32 * voxels / s;
(b) the bundle network's single forward pass over the whole pre-interpolated volume, as
    :func:`volsr.inference.sliding_window.super_resolve` calls it (same layout and autocast): the ideal;
(c) :func:`volsr.inference.sliding_window.super_resolve` end to end with its default settings (normalisation,
    cubic B-spline, sliding windows, back to scanner units);
(d) MONAI's ``sliding_window_inference`` with its defaults (roi 96^3, overlap 0.25, constant
    blending) around the plain network on the same pre-interpolated input;
(e) on a CPU with native bf16: (c) in the precision :func:`volsr.inference.devices.cpu_prefers_bf16` did not
    choose (bfloat16 if it chose float32 and the reverse), to check the choice.

Reported: output voxels/s, achieved GFLOP/s (``flops_per_voxel`` x output voxels / s: overlap
recomputation counts as overhead) and its fraction of (a), (c)/(b) and (d)/(c). Then the peak
resident memory of each case in its own subprocess (``VmHWM``) for a synthetic 512x512x120 input
up-sampled x4 along the slice axis (output 512x512x480).

Writes ``<out>/speed.json`` and the section between ``<!-- speed:begin -->`` and
``<!-- speed:end -->`` of ``<out>.md``.

    python benchmarks/speed.py                   # volsr_cnn3d, CPU (and CUDA when present)
    python benchmarks/speed.py --quick --no-memory --out /tmp/s
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.grid_encoding import SamplePositions, with_grid_channels
from volsr.geometry.interpolation import resample_array
from volsr.geometry.orientation import coarse_axis, to_canonical
from volsr.inference.devices import cpu_has_native_bf16, cpu_prefers_bf16, decide_precision
from volsr.inference.sliding_window import (
    DEFAULT_OVERLAP,
    DEFAULT_ROI,
    MEMORY_TARGET,
    WINDOW_BUDGET,
    _Predictor,
    grid_channels,
    output_grid,
    plan_windows,
    super_resolve,
    target_scale,
    window_budget,
    window_margin,
)
from volsr.networks.residual_sr import ResidualSR3D, flops_per_voxel
from volsr.transforms.protocol import ThickSlices

# imported as ``benchmarks.<script>`` (tests) or run as ``python benchmarks/<script>.py``
common = importlib.import_module(f"{__package__}.common" if __package__ else "common")
speed_report = importlib.import_module(f"{__package__}.speed_report" if __package__ else "speed_report")

PEAK_SHAPE = (1, 32, 64, 64, 64)
INPUT = common.DATA / "lowres" / "chris_PD.nii.gz"
QUICK_CROP = (64, 64, 24)  # the full scan otherwise: 191x256x54 -> 191x256x151
MONAI_ROI, MONAI_OVERLAP = (96, 96, 96), 0.25


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def interleaved(cases: dict[str, Callable[[], object]], device: torch.device, reps: int) -> dict[str, list]:
    """Seconds of each case, ``reps`` rounds, the cases taking turns (so background load hits all)."""
    times: dict[str, list] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    return times


# ------------------------------------------------------------------------------------ (a) conv3d peak
PEAK_SAMPLE_S = (
    0.5  # one timing sample repeats the convolution for about this long (short samples flatter it)
)


def _conv_case(
    device: torch.device, dtype: torch.dtype, channels_last: bool, shape: Sequence[int], calls: int = 1
) -> Callable[[], object]:
    conv = torch.nn.Conv3d(shape[1], shape[1], 3, padding=1).to(device).eval()
    x = torch.randn(*shape, device=device)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def run() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for _ in range(calls):
                conv(x)

    return run


def conv3d_peak(device: torch.device, shape: Sequence[int] = PEAK_SHAPE, reps: int = 5) -> dict:
    """GFLOP/s of a C->C 3x3x3 convolution (padding 1), every dtype and layout; best after warm-up.

    Each sample repeats the call for about ``PEAK_SAMPLE_S`` seconds, so that the best sample of a
    short kernel is not a lucky gap in background load that the longer network runs never get."""
    flops = 2 * 27 * shape[1] ** 2 * math.prod(shape[2:])
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    results = []
    for dtype in dtypes:
        for channels_last in (False, True):
            try:
                one = timed(_conv_case(device, dtype, channels_last, shape), device)  # warm-up, estimate
                calls = max(1, round(PEAK_SAMPLE_S / one))
                run = _conv_case(device, dtype, channels_last, shape, calls)
                best = min(timed(run, device) for _ in range(reps)) / calls
            except RuntimeError as e:  # dtype not supported here
                print(f"  conv3d {dtype} unsupported: {e}")
                continue
            rec = {
                "dtype": str(dtype).removeprefix("torch."),
                "channels_last": channels_last,
                "calls_per_sample": calls,
                "seconds": best,
                "gflops": flops / best / 1e9,
            }
            results.append(rec)
            print(
                f"  conv3d {rec['dtype']:>8} channels_last={channels_last!s:<5} {rec['gflops']:7.1f} GFLOP/s"
            )
    best = max(results, key=lambda r: r["gflops"])
    by_dtype = {}
    for r in results:
        if r["gflops"] > by_dtype.get(r["dtype"], {}).get("gflops", 0):
            by_dtype[r["dtype"]] = r
    return {"shape": list(shape), "runs": results, "best": best, "best_by_dtype": by_dtype}


# ------------------------------------------------------------------------------------------ the model
def load_model(
    bundle: str | None, checkpoint: Path | None
) -> tuple[torch.nn.Module, PercentileNormalizer, str]:
    """The bundle's network; else the checkpoint's; else an untrained ``base`` (same cost)."""
    from volsr.api import find_bundle
    from volsr.networks.checkpoint import load_checkpoint

    if checkpoint is not None:
        net, norm, ckpt = load_checkpoint(checkpoint)
        return net, norm, f"checkpoint {checkpoint} (step {ckpt.get('step')})"
    if bundle:
        try:
            root = find_bundle(bundle)
        except FileNotFoundError:
            print(
                f"bundle {bundle} has no models/model.pt: timing an untrained ResidualSR3D 'base' (same cost)"
            )
        else:
            net, norm, ckpt = load_checkpoint(root / "models" / "model.pt")
            return net, norm, f"bundle {bundle} (step {ckpt.get('step')})"
    return ResidualSR3D.from_preset("base").eval(), PercentileNormalizer(), "untrained ResidualSR3D 'base'"


def prepare(
    image: torch.Tensor, normalizer: PercentileNormalizer, scale=None
) -> tuple[torch.Tensor, tuple, SamplePositions]:
    """What super_resolve hands its inferer: normalised, cubic onto the output grid, coarse axis last;
    the target scale; the output voxels' positions on the input grid (canonical order)."""
    target = target_scale(image, scale, None)
    _, out_shape, factors = output_grid(image, target)  # the grid super_resolve builds
    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    lo, hi = normalizer.fit(data)
    x = resample_array(normalizer.normalize(data.float(), lo, hi), out_shape, "cubic")
    axis = coarse_axis(factors)
    positions = SamplePositions.canonical(image.shape[1:], out_shape, axis)
    return to_canonical(x[None], axis).contiguous(), target, positions


def window_count(
    shape: Sequence[int], roi: Sequence[int], overlap: float | Sequence[float], pad: bool = False
) -> tuple[int, float]:
    """MONAI's number of windows on ``shape`` and the network's work relative to one pass (window voxels /
    voxels). ``super_resolve`` clips the roi to the volume; MONAI alone (``pad=True``) pads the volume."""
    from volsr.inference.window_progress import window_count as windows

    roi = [int(r) if pad else min(int(r), int(n)) for r, n in zip(roi, shape, strict=True)]
    n = windows(shape, roi, overlap)
    return n, n * math.prod(roi) / math.prod(shape)


def monai_default(
    network: torch.nn.Module, device: torch.device, positions: SamplePositions
) -> Callable[[torch.Tensor], torch.Tensor]:
    """MONAI's sliding window with its defaults around the plain network (no layout or precision
    changes); a grid-encoding network gets its channels per window, as in ``super_resolve``."""
    from monai.inferers import sliding_window_inference

    def run(x: torch.Tensor) -> torch.Tensor:
        # MONAI pads axes shorter than the window (half on each side); its window slices count from there
        short = [max(r - n, 0) for r, n in zip(MONAI_ROI, x.shape[2:], strict=True)]
        padded = positions.padded([d // 2 for d in short], [d - d // 2 for d in short])

        def with_grid(window: torch.Tensor, location) -> torch.Tensor:
            return network(with_grid_channels(window, [padded.cropped(loc[2:]) for loc in location]))

        grid = grid_channels(network) > 0
        return sliding_window_inference(
            x,
            MONAI_ROI,
            1,
            with_grid if grid else network,
            overlap=MONAI_OVERLAP,
            mode="constant",
            sw_device=device,
            device=torch.device("cpu"),
            with_coord=grid,
        )

    return run


@contextlib.contextmanager
def cpu_bf16(enabled: bool):
    """CPU autocast forced to bfloat16 (or float32) inside the block, whatever the measured choice."""
    old = os.environ.get("VOLSR_CPU_BF16")
    os.environ["VOLSR_CPU_BF16"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("VOLSR_CPU_BF16")
        else:
            os.environ["VOLSR_CPU_BF16"] = old


def cases(
    image, x, positions, network, normalizer, device, amp: bool = True
) -> dict[str, Callable[[], object]]:
    plain = copy.deepcopy(network).to(
        memory_format=torch.contiguous_format
    )  # (d): as loaded, not as _Predictor leaves it
    predictor = _Predictor(network, device, decide_precision(device, amp), positions=positions)
    x_dev = x.to(device)

    def resolve() -> object:
        precision = None if amp else torch.float32  # None: decided per call, so other_precision's applies
        return super_resolve(image, network, normalizer, device=device, precision=precision)

    def other_precision() -> object:
        with cpu_bf16(not cpu_prefers_bf16()):
            return resolve()

    todo = {
        "b_whole_forward": lambda: predictor(x_dev).cpu(),
        "c_super_resolve": resolve,
        "d_monai_default": lambda: monai_default(plain, device, positions)(x),
    }
    if device.type == "cpu" and amp and cpu_has_native_bf16():
        todo["e_other_precision"] = other_precision
    return todo


def peak_case(device: torch.device, best: dict, shape: Sequence[int] = PEAK_SHAPE) -> Callable[[], object]:
    """The best (a) configuration as one more case of the interleaved rounds (same calls per sample)."""
    dtype = getattr(torch, best["dtype"])
    return _conv_case(device, dtype, best["channels_last"], shape, best["calls_per_sample"])


@torch.no_grad()
def speed(image, network, normalizer, device: torch.device, reps: int, peak: dict) -> dict:
    network = network.to(device).eval()
    x, target, positions = prepare(image, normalizer)
    voxels = math.prod(x.shape[2:])
    fpv = flops_per_voxel(copy.deepcopy(network).cpu())  # counts on CPU: its probe tensor is a CPU one
    print(
        f"{device}: input {list(image.shape[1:])} -> output {list(x.shape[2:])} (canonical), "
        f"{voxels / 1e6:.2f} M voxels, {fpv / 1e3:.0f} kFLOP/voxel"
    )
    width = int(getattr(getattr(network, "config", None), "features", PEAK_SHAPE[1]))
    width_shape = (1, width, *PEAK_SHAPE[2:])
    todo = {
        "a_conv3d_peak": peak_case(device, peak["best"]),
        "a_conv3d_width": peak_case(device, peak["best"], width_shape),
        **cases(image, x, positions, network, normalizer, device),
    }
    times = interleaved(todo, device, reps)
    peak_flops = 2 * 27 * PEAK_SHAPE[1] ** 2 * math.prod(PEAK_SHAPE[2:])
    calls = peak["best"]["calls_per_sample"]
    peak["interleaved_gflops"] = calls * peak_flops / min(times.pop("a_conv3d_peak")) / 1e9
    width_flops = 2 * 27 * width**2 * math.prod(PEAK_SHAPE[2:])
    peak["network_width"] = {
        "channels": width,
        "gflops": calls * width_flops / min(times.pop("a_conv3d_width")) / 1e9,
    }
    peak_best = max(peak["best"]["gflops"], peak["interleaved_gflops"])
    peak["reference_gflops"] = peak_best
    out = {}
    for name, ts in times.items():
        best = min(ts)
        gflops = fpv * voxels / best / 1e9
        out[name] = {
            "seconds": ts,
            "best_s": best,
            "median_s": statistics.median(ts),
            "voxels_per_s": voxels / best,
            "gflops": gflops,
            "fraction_of_peak": gflops / peak_best,
        }
    budget = window_budget(voxels, network, device, decide_precision(device, True))  # as super_resolve does
    roi, overlaps = plan_windows(x.shape[2:], budget, margin=window_margin(network))
    n_c, frac_c = window_count(x.shape[2:], roi, overlaps)
    n_d, frac_d = window_count(x.shape[2:], MONAI_ROI, MONAI_OVERLAP, pad=True)
    fixed_roi = tuple(min(r, n) for r, n in zip(DEFAULT_ROI, x.shape[2:], strict=True))
    n_f, frac_f = window_count(x.shape[2:], fixed_roi, DEFAULT_OVERLAP)
    b, c, d = (out[k]["best_s"] for k in ("b_whole_forward", "c_super_resolve", "d_monai_default"))
    precisions = ("bfloat16", "float32") if cpu_prefers_bf16() else ("float32", "bfloat16")  # (c), (e)
    return {
        "device": str(device),
        "input_shape": list(image.shape[1:]),
        "output_shape_canonical": list(x.shape[2:]),
        "scale": [round(float(s), 4) for s in target],
        "output_voxels": voxels,
        "flops_per_voxel": fpv,
        "cases": out,
        "windows": {
            "c": {
                "roi": list(roi),
                "overlap": [round(o, 4) for o in overlaps],
                "count": n_c,
                "recomputed": frac_c,
            },
            "d": {"roi": list(MONAI_ROI), "overlap": MONAI_OVERLAP, "count": n_d, "recomputed": frac_d},
            "fixed_160": {
                "roi": list(fixed_roi),
                "overlap": DEFAULT_OVERLAP,
                "count": n_f,
                "recomputed": frac_f,
            },
        },
        "ratio_c_over_b": c / b,
        "ratio_d_over_c": d / c,
        **(
            {
                "ratio_e_over_c": out["e_other_precision"]["best_s"] / c,
                "precision": dict(zip("ce", precisions, strict=True)),
            }
            if "e_other_precision" in out
            else {}
        ),
        "ratio_c_over_b_median": out["c_super_resolve"]["median_s"] / out["b_whole_forward"]["median_s"],
        "ratio_d_over_c_median": out["d_monai_default"]["median_s"] / out["c_super_resolve"]["median_s"],
    }


# ---------------------------------------------------------------------------------- autocast accuracy
ACCURACY_VOLUME = common.DATA / "val" / "T1_head_ext2.nii.gz"
ACCURACY_PROTOCOL = ThickSlices(axis=2, factor=4.0)


@torch.no_grad()
def amp_accuracy(
    network, normalizer, device: torch.device, path: Path = ACCURACY_VOLUME, crop_to=None
) -> dict | None:
    """Masked PSNR of ``super_resolve`` with and without autocast (x4 thick slices of a held-out
    volume, scored against the original); ``None`` when the volume is not there."""
    from volsr.api import SuperResolver
    from volsr.evaluation.comparison import evaluate

    if not Path(path).exists():
        return None
    hr = common.load_volume(path)
    if crop_to:
        hr = common.crop(hr, tuple(crop_to))
    # bfloat16 wherever it is native, even where the measured choice is float32: its accuracy is the point
    forced = cpu_bf16(True) if device.type == "cpu" and cpu_has_native_bf16() else contextlib.nullcontext()
    with forced:  # a resolver decides its precision when it is made
        resolvers = {amp: SuperResolver(network, normalizer, device=device, amp=amp) for amp in (False, True)}
        methods = evaluate(hr, ACCURACY_PROTOCOL, resolvers, baselines=())["methods"]
        dtype = resolvers[True].precision
    psnr = {amp: methods[amp]["psnr"] for amp in (False, True)}
    return {
        "volume": Path(path).name + (" centre crop" if crop_to else ""),
        "protocol": ACCURACY_PROTOCOL.to_dict(),
        "autocast": str(dtype).replace("torch.", "") if dtype != torch.float32 else "none (float32 only)",
        "psnr_float32": psnr[False],
        "psnr_autocast": psnr[True],
        "change_db": psnr[True] - psnr[False],
    }


# ---------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def synthetic_scan(shape: Sequence[int], scale: Sequence[float]) -> torch.Tensor:
    """A smooth-ish random float32 scan whose voxels are ``scale`` times longer along the coarse axis."""
    from monai.data import MetaTensor

    g = torch.Generator().manual_seed(0)
    data = torch.rand((1, *shape), generator=g, dtype=torch.float32) * 1000
    spacing = [0.5 * s for s in scale]
    return MetaTensor(data, affine=torch.as_tensor(np.diag([*spacing, 1.0]), dtype=torch.float64))


@torch.no_grad()
def memory_case(case: str, shape: Sequence[int], scale: Sequence[float], bundle, checkpoint) -> dict:
    """Run one case on a synthetic scan in this process; peak resident memory from /proc/self/status."""
    network, normalizer, _ = load_model(bundle, checkpoint)
    device = torch.device("cpu")
    image = synthetic_scan(shape, scale)
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if case == "c_super_resolve":
        y = super_resolve(image, network, normalizer, scale=scale, device=device)
    elif case == "d_monai_default":
        x, _, positions = prepare(image, normalizer, scale)
        y = monai_default(network, device, positions)(x)
    elif case == "b_whole_forward":
        x, _, positions = prepare(image, normalizer, scale)
        y = _Predictor(network, device, decide_precision(device, True), positions=positions)(x)
    else:
        raise ValueError(f"unknown memory case {case!r}")
    seconds = time.perf_counter() - t0
    hwm = _status_kib("VmHWM")
    return {
        "case": case,
        "output_shape": list(y.shape[-3:]),
        "seconds": seconds,
        "rss_before_gib": before / 2**20 if before else None,
        "peak_rss_gib": hwm / 2**20 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def memory(cases_: Sequence[str], shape, scale, bundle, checkpoint, timeout: float) -> dict:
    """Each case in its own subprocess (so peaks do not mix); VmHWM from the child, ru_maxrss checked."""
    out = {}
    for case in cases_:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-case",
            case,
            "--memory-shape",
            *map(str, shape),
            "--memory-scale",
            *map(str, scale),
        ]
        cmd += ["--bundle", bundle] if bundle else []
        cmd += ["--checkpoint", str(checkpoint)] if checkpoint else []
        print(f"memory: {case} on {list(shape)} x {list(scale)} ...", flush=True)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, cwd=common.ROOT
            )
        except subprocess.TimeoutExpired:
            out[case] = {"error": f"timed out after {timeout:.0f} s"}
            continue
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")), None)
        if proc.returncode != 0 or line is None:
            out[case] = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
        else:
            out[case] = json.loads(line[len("MEMORY ") :])
            # RUSAGE_CHILDREN's ru_maxrss is no check here: it keeps the forked copy of this (large)
            # process from before exec; VmHWM is reset by exec
        print(f"  {out[case]}", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="volsr_cnn3d", help="bundle name or folder (models/model.pt)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="time this checkpoint instead")
    parser.add_argument("--quick", action="store_true", help="a small crop, 2 rounds, no memory run")
    parser.add_argument(
        "--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, + cuda if present)"
    )
    parser.add_argument("--crop", type=int, nargs=3, default=None, help="centre crop of the input scan")
    parser.add_argument("--reps", type=int, default=None, help="rounds of (b), (c), (d) (default 3; quick 2)")
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the 512x512x120 memory cases (default: on unless --quick)",
    )
    parser.add_argument(
        "--memory-cases",
        nargs="+",
        default=["c_super_resolve"],
        help="b_whole_forward, c_super_resolve, d_monai_default (b needs ~50 GB at 512^2x480)",
    )
    parser.add_argument("--memory-shape", type=int, nargs=3, default=[512, 512, 120])
    parser.add_argument("--memory-scale", type=float, nargs=3, default=[1.0, 1.0, 4.0])
    parser.add_argument("--memory-timeout", type=float, default=7200.0)
    parser.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=common.ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)

    if args.memory_case:  # child process of memory()
        rec = memory_case(
            args.memory_case, args.memory_shape, args.memory_scale, args.bundle, args.checkpoint
        )
        print("MEMORY " + json.dumps(rec), flush=True)
        return None

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    reps = args.reps or (2 if args.quick else 3)
    network, normalizer, weights = load_model(args.bundle, args.checkpoint)
    image = common.load_volume(INPUT)
    if args.crop or args.quick:
        image = common.crop(image, tuple(args.crop or QUICK_CROP))
    result = {
        "command": common.command_line(),
        "date": common.now(),
        "quick": args.quick,
        "hardware": common.hardware(),
        "weights": weights,
        "defaults": {
            "roi": "fitted (plan_windows)",
            "budget_voxels": WINDOW_BUDGET,
            "memory_target_bytes": MEMORY_TARGET,
            "margin_voxels": 24,
        },
        "devices": {},
    }
    for name in devices:
        device = torch.device(name)
        print(f"(a) conv3d peak on {device}", flush=True)
        peak = conv3d_peak(device, reps=3 if args.quick else 5)
        rec = speed(image, network, normalizer, device, reps, peak)
        rec["peak"] = peak
        rec["input"] = INPUT.name + (" centre crop" if args.crop or args.quick else "")
        rec["amp_accuracy"] = amp_accuracy(
            network, normalizer, device, crop_to=QUICK_CROP if args.quick else None
        )
        result["devices"][name] = rec
        print(
            f"{name}: (c)/(b) = {rec['ratio_c_over_b']:.2f}, (d)/(c) = {rec['ratio_d_over_c']:.2f}, "
            f"(b) at {100 * rec['cases']['b_whole_forward']['fraction_of_peak']:.0f} % of peak",
            flush=True,
        )
    if args.memory if args.memory is not None else not args.quick:
        shape, scale = args.memory_shape, args.memory_scale
        out_shape = [round(n * s) for n, s in zip(shape, scale, strict=True)]
        width = int(getattr(getattr(network, "config", None), "features", 24))
        n_out = math.prod(out_shape)
        result["memory"] = {
            "shape": shape,
            "scale": scale,
            "output_shape": out_shape,
            "cases": memory(
                args.memory_cases, shape, scale, args.bundle, args.checkpoint, args.memory_timeout
            ),
            "note": f"(b) one pass over the whole {'x'.join(map(str, out_shape))} volume holds about 5 "
            f"activations of {width} channels x 4 bytes (fp32; 2 in bf16) x {n_out / 1e6:.0f} M voxels = "
            f"{5 * width * 4 * n_out / 2**30:.0f} GiB ({5 * width * 2 * n_out / 2**30:.0f} GiB in bf16): "
            "why inference tiles.",
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "speed.json"
    markdown = out.with_suffix(".md")
    result["json"] = os.path.relpath(json_path, markdown.parent)
    if (
        os.cpu_count()
        and result["hardware"]["load_average"]
        and result["hardware"]["load_average"][0] > 0.5 * os.cpu_count()
    ):
        result["note"] = (
            f"Note: the machine was busy at the start (load average "
            f"{result['hardware']['load_average'][0]:.1f} on {os.cpu_count()} cores): absolute "
            "timings are pessimistic; ratios come from interleaved rounds in one process."
        )
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    common.write_section(markdown, "speed", speed_report.section(result))
    print(f"wrote {common.display_path(json_path)}, {common.display_path(markdown)}")
    return result


if __name__ == "__main__":
    main()
