"""Scoring bundles against classical baselines on high-resolution scans (``volsr evaluate``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from volsr.api.bundle_search import find_bundle
from volsr.api.resolver import SuperResolver
from volsr.transforms.protocol import Protocol, as_protocol

__all__ = ["evaluate_files"]


class _AdaptedPerScan:
    """``sr`` fine-tuned on each scan it is given, once per scan for ``+adapt`` and ``+adapt+tta``."""

    def __init__(self, sr, steps: int) -> None:
        self.sr, self.steps = sr, steps
        self.scan, self.plain, self.averaged = None, None, None  # holding the scan: its identity is unique

    def _for(self, lr: torch.Tensor, scale: Sequence[float]) -> None:
        if self.scan is not lr:
            self.plain = self.sr.adapted(lr, scale=scale, steps=self.steps)
            self.averaged = self.plain.with_options(tta=True)
            self.scan = lr

    def __call__(self, lr: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
        self._for(lr, scale)
        return self.plain(lr, scale=scale)

    def with_tta(self, lr: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
        self._for(lr, scale)
        return self.averaged(lr, scale=scale)


def evaluate_files(
    paths: Sequence[str | Path],
    protocol: Protocol | Mapping,
    bundles: Sequence[str | Path] = (),
    out_dir: str | Path = "eval",
    device: str = "auto",
    baselines: Sequence[str] | None = None,
    consistency: bool = False,
    tta: bool = False,
    adapt: int = 0,
    progress: bool = False,
    uncertainty: bool = False,
) -> dict:
    """Evaluate every scan in ``paths``; write per-scan reports and ``summary.{json,md}``.

    ``baselines``: the classical methods scored beside the bundles (``nearest``, ``linear``, ``cubic``,
    ``fourier``); default :func:`volsr.evaluation.comparison.default_baselines` (cubic and linear for
    thick slices, cubic and zero-filled Fourier for a reduced k-space matrix).

    Each bundle is scored as ``volsr infer`` runs it (data consistency on, its model chosen per scan:
    :func:`volsr.inference.consistency_choice.decide_consistency`) and, with ``consistency=True``, also
    after the projection of the protocol's own forward model (method name suffixed ``+dc``); with
    ``tta=True`` also with test-time augmentation (``+tta``);
    with ``adapt`` > 0 also fine-tuned for ``adapt`` steps on each degraded scan (``+adapt``, and
    ``+adapt+tta`` with ``tta``: it sees the low-resolution input only, never the reference); with
    ``uncertainty=True`` the ``+tta`` output (added if need be) also makes its uncertainty map, scored
    by its Spearman correlation with the actual error and drawn in the montage.
    ``progress`` shows a bar over the scans on stderr.
    ``protocol`` is a :class:`~volsr.transforms.protocol.ThickSlices` or
    :class:`~volsr.transforms.protocol.KSpace`, or its dict form. Returns the summary dict.
    """
    from volsr.data.io import load_image, scan_stem
    from volsr.evaluation.comparison import evaluate
    from volsr.evaluation.report import summary_markdown, write_report

    protocol = as_protocol(protocol)

    resolvers = {}
    for b in bundles:
        name = find_bundle(b).name
        resolvers[name] = sr = SuperResolver.from_bundle(b, device=device)
        if tta or uncertainty:  # the same loaded network, averaged over flipped views
            resolvers[f"{name}+tta"] = sr.with_options(tta=True, uncertainty=uncertainty)
        if adapt:
            tuned = _AdaptedPerScan(sr, adapt)
            resolvers[f"{name}+adapt"] = tuned
            if tta:
                resolvers[f"{name}+adapt+tta"] = tuned.with_tta
    out = Path(out_dir)
    summary: dict = {"protocol": protocol.to_dict(), "protocol_name": protocol.name, "scans": {}}
    from tqdm import tqdm

    bar = tqdm(list(paths), desc="evaluate", unit="scan", disable=not progress, dynamic_ncols=True)
    for p in bar:
        bar.set_postfix_str(Path(p).name, refresh=True)
        report = evaluate(load_image(p), protocol, resolvers, baselines, consistency=consistency)
        report["name"] = scan_stem(p)
        files = write_report(report, out, name=report["name"])
        summary["scans"][report["name"]] = {
            "methods": report["methods"],
            "files": {k: str(v) for k, v in files.items()},
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary
