"""Validation during training: a fixed degradation, sliding-window inference, masked scores.

The protocol (:mod:`volsr.transforms.protocol`) is ``TrainConfig.val_protocol``: by default the quality
bar's x4 boxcar thick slices along axis 2.
Each validation volume is degraded once; the cubic B-spline baseline is scored once; the network
is scored at every call. ``psnr_gain`` is the mean over volumes of network minus cubic PSNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from volsr.data.io import scan_stem
from volsr.data.normalization import PercentileNormalizer
from volsr.evaluation.comparison import degrade
from volsr.evaluation.metrics import compare
from volsr.geometry.grids import grid_factors
from volsr.geometry.interpolation import resample
from volsr.inference.sliding_window import super_resolve
from volsr.transforms.protocol import Protocol

__all__ = ["Validator"]


class Validator:
    def __init__(
        self, paths: Sequence[str], protocol: Protocol, loader: Callable[[str], torch.Tensor]
    ) -> None:
        self.cases = []
        for p in paths:
            hr = loader(p)
            lr = degrade(hr, protocol)
            scale = grid_factors(lr.shape[1:], hr.shape[1:])
            cubic = compare(resample(lr, scale=scale, mode="cubic"), hr)
            self.cases.append({"name": scan_stem(p), "hr": hr, "lr": lr, "scale": scale, "cubic": cubic})

    @torch.no_grad()
    def __call__(self, network: nn.Module, normalizer: PercentileNormalizer, device: torch.device) -> dict:
        was_training = network.training
        network.eval()
        record: dict = {}
        gains = []
        for case in self.cases:
            sr = super_resolve(case["lr"], network, normalizer, scale=case["scale"], device=device)
            scores = compare(sr, case["hr"])
            gain = scores["psnr"] - case["cubic"]["psnr"]
            gains.append(gain)
            n = case["name"]
            record[f"{n}/psnr"] = round(scores["psnr"], 3)
            record[f"{n}/ssim"] = round(scores["ssim"], 4)
            record[f"{n}/cubic_psnr"] = round(case["cubic"]["psnr"], 3)
            record[f"{n}/cubic_ssim"] = round(case["cubic"]["ssim"], 4)
            record[f"{n}/psnr_gain"] = round(gain, 3)
        record["psnr_gain"] = round(float(np.mean(gains)), 3)
        record["min_psnr_gain"] = round(float(np.min(gains)), 3)
        network.train(was_training)
        return record
