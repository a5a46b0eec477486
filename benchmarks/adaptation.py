"""Self-supervised adaptation benchmark: PSNR gain over cubic against fine-tuning steps and rate.

Each validation volume is degraded once (x4 boxcar thick slices along axis 2 by default); a bundle's
network is fine-tuned on the degraded scan alone (:func:`volsr.training.adaptation.adapt`) for each
``STEPS:LR`` setting, run, and scored against the original. Step 0 is the shipped network. One JSON
line per (volume, setting) on stdout, with the fine-tuning time in seconds.

    python benchmarks/adaptation.py 0:0 200:5e-4 500:5e-4 1000:1e-3
    python benchmarks/adaptation.py 50:1e-4:mse 200:1e-4:mse  # STEPS:LR:LOSS (l1 by default)
    python benchmarks/adaptation.py 500:5e-4 --data ../shared/data/val/T2w.nii.gz --device cuda
    python benchmarks/adaptation.py 0:0 200:5e-4 --crop 96 96 96  # a centred crop: faster inference

Scores are of the network alone (``super_resolve`` without the data-consistency projection), so the
shipped and the tuned network are compared like with like. ``--crop`` scores and adapts on a centred
crop of each reference (degraded after cropping): inference gets faster, the fine-tuning steps cost the
same and see less of the scan. ``--pairs N`` also scores each network on N held-out batches of 4
patches: ``own_pairs_gain``, its PSNR gain (dB, normalised units) over the cubic input on the scan's
own in-plane pairs (what adaptation trains on), and ``true_pairs_gain``, the same on patches of the
reference degraded by the protocol (the task adaptation is meant to improve); the same patches for
every setting.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from volsr.api import SuperResolver
from volsr.data.io import load_image, scan_stem
from volsr.evaluation.comparison import degrade, restore_baseline
from volsr.evaluation.metrics import compare
from volsr.geometry.grids import grid_factors
from volsr.geometry.meta import affine_of
from volsr.inference.sliding_window import grid_channels, super_resolve
from volsr.training.adaptation import adapt, adaptation_sampler
from volsr.training.data import PatchPairSampler
from volsr.transforms import build_degradation
from volsr.transforms.protocol import Protocol, ThickSlices

common = importlib.import_module(f"{__package__}.common" if __package__ else "common")

DEFAULT_DATA = [
    "../shared/data/val/T1_head_ext2.nii.gz",
    "../shared/data/val/T2w.nii.gz",
]


def pair_batches(
    hr: torch.Tensor, lr: torch.Tensor, sr: SuperResolver, protocol: ThickSlices, count: int
) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """``count`` held-out batches of 4 patch pairs: the scan's own in-plane pairs (``own``) and the
    reference degraded by ``protocol`` (``true``), normalised as the network's input."""
    encoded = grid_channels(sr.network) > 0
    scale = grid_factors(lr.shape[1:], hr.shape[1:])
    own = adaptation_sampler(lr, sr.normalizer, scale=scale, grid_encoding=encoded, seed=123)
    lo, hi = sr.normalizer.fit(hr.as_tensor())
    reference = MetaTensor(
        sr.normalizer.normalize(hr.as_tensor().float(), lo, hi), affine=torch.as_tensor(affine_of(hr))
    )
    slices = {"axis": [protocol.axis], "factor": protocol.factor, "profile": [protocol.profile]}
    degradation = build_degradation({"slice_thickness": slices}, seed=321)
    patch = min(32, *hr.shape[1:])  # as adaptation's own pairs: patches of one size still stack
    true = PatchPairSampler([reference], degradation, patch, seed=321, grid_encoding=encoded)
    return {name: [s.batch(4) for _ in range(count)] for name, s in (("own", own), ("true", true))}


def pairs_gain(network: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean PSNR gain (dB) of ``network`` over its cubic input (channel 0) on ``batches``."""
    gains = []
    device = next(network.parameters()).device
    with torch.no_grad():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            error = float(((network.eval()(x) - y) ** 2).mean())
            gains.append(10 * np.log10(float(((x[:, :1] - y) ** 2).mean()) / error))
    return round(float(np.mean(gains)), 3)


def run(
    path: str,
    settings: list[tuple[int, float]],
    protocol: Protocol,
    bundle: str,
    device: str,
    crop: Sequence[int] | None = None,
    pairs: int = 0,
) -> list[dict]:
    hr = load_image(path)
    if crop:
        hr = common.crop(hr, tuple(crop))
    lr = degrade(hr, protocol)
    scale = grid_factors(lr.shape[1:], hr.shape[1:])
    cubic = compare(restore_baseline(lr, hr.shape[1:], "cubic"), hr)["psnr"]
    sr = SuperResolver.from_bundle(bundle, device=device)
    batches = pair_batches(hr, lr, sr, protocol, pairs) if pairs else {}
    rows = []
    for steps, rate, loss in settings:
        t0 = time.perf_counter()
        network = sr.network
        if steps > 0:
            network = adapt(
                network, lr, sr.normalizer, scale=scale, steps=steps, lr=rate, loss=loss, device=device
            )
        seconds = time.perf_counter() - t0
        scores = compare(super_resolve(lr, network, sr.normalizer, scale=scale, device=device), hr)
        row = {
            "scan": scan_stem(path),
            "steps": steps,
            "lr": rate,
            "loss": loss,
            "psnr": round(scores["psnr"], 3),
            "gain": round(scores["psnr"] - cubic, 3),
            "ssim": round(scores["ssim"], 4),
            "adapt_s": round(seconds, 3),
            "crop": list(hr.shape[1:]) if crop else None,
            "consistency": False,
        }
        row.update({f"{name}_pairs_gain": pairs_gain(network, b) for name, b in batches.items()})
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def parse_setting(text: str) -> tuple[int, float, str]:
    """``STEPS:LR`` or ``STEPS:LR:LOSS`` (``l1``, the default, or ``mse``)."""
    steps, rate, *loss = text.split(":")
    return int(steps), float(rate), loss[0] if loss else "l1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="+", type=parse_setting, help="STEPS:LR[:LOSS] (0:0: as shipped)")
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    p.add_argument("--factor", type=float, default=4.0)
    p.add_argument("--axis", type=int, default=2)
    p.add_argument("--bundle", default="volsr_cnn3d")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--crop", type=int, nargs=3, metavar=("X", "Y", "Z"), help="a centred crop of each reference"
    )
    p.add_argument("--pairs", type=int, default=0, help="also score on N batches of held-out patch pairs")
    a = p.parse_args()
    protocol = ThickSlices(axis=a.axis, factor=a.factor)
    for path in a.data:
        if not Path(path).exists():
            raise SystemExit(f"{path}: no such file")
        run(path, a.settings, protocol, a.bundle, a.device, a.crop, a.pairs)


if __name__ == "__main__":
    main()
