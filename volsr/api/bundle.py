"""The objects a bundle's configs name for MONAI's bundle properties (``dataset``, ``inferer``,
``evaluator``, ``train#trainer``, ...), each a thin shell over the API, so ``monai.bundle run`` and
``ConfigWorkflow(...).check_properties()`` see the shape of the model zoo while the work is volsr's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import Dataset
from monai.inferers import Inferer
from torch import nn

from volsr.api.outputs import output_path_for
from volsr.api.resolver import SuperResolver
from volsr.api.training import TrainingRunConfig, train

__all__ = ["scan_dataset", "training_dataset", "SuperResolutionInferer", "FileInference", "StepTrainer"]


def scan_dataset(image: str | Path | None = None, dataset_dir: str | Path = ".") -> Dataset:
    """The scans to super-resolve, as ``[{"image": path}]``: ``image`` alone when given, else every
    NIfTI / MGH / NRRD / MetaImage file in ``dataset_dir`` (DICOM folders: give them as ``image``)."""
    from volsr.data.io import VOLUME_SUFFIXES

    if image:
        return Dataset([{"image": str(image)}])
    folder = Path(dataset_dir)
    found = sorted(p for p in folder.iterdir() if p.name.endswith(VOLUME_SUFFIXES)) if folder.is_dir() else []
    return Dataset([{"image": str(p)} for p in found])


def training_dataset(dataset_dir: str | Path) -> Dataset:
    """The high-resolution training scans the trainer reads from ``dataset_dir`` (a folder, image or
    datalist JSON: :func:`volsr.training.data.list_volumes`), as ``[{"hr": path}]``."""
    from volsr.training.data import list_volumes

    return Dataset(list_volumes(dataset_dir))


class SuperResolutionInferer(Inferer):
    """MONAI's inferer interface over volsr's whole-scan inference: ``inferer(image, network)``
    super-resolves a channel-first MetaTensor with fitted sliding windows
    (:func:`volsr.inference.sliding_window.super_resolve`), as validation during training does: the
    network's own output, without data consistency, so validation scores the network."""

    def __init__(
        self, scale: float | Sequence[float] | None = None, device: str | torch.device = "auto"
    ) -> None:
        self.scale, self.device = scale, device

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        return SuperResolver(network, device=self.device, consistency=False)(inputs, scale=self.scale)


class FileInference:
    """Super-resolve every item of ``dataset`` with ``inferer`` (a :class:`SuperResolver`) into
    ``output_dir``: ``<stem>_sr.nii.gz`` and its sidecar, or a DICOM series folder with ``dicom``."""

    def __init__(
        self,
        dataset: Dataset,
        inferer: SuperResolver,
        output_dir: str | Path = ".",
        spacing: float | Sequence[float | None] | None = None,
        dicom: bool = False,
        overwrite: bool = True,
    ) -> None:
        self.dataset, self.inferer, self.output_dir = dataset, inferer, output_dir
        self.spacing, self.dicom, self.overwrite = spacing, dicom, overwrite

    def run(self) -> list[Path]:
        """The paths written, one per scan."""
        written = []
        for item in self.dataset:
            dst = output_path_for(item["image"], self.output_dir, dicom=self.dicom)
            written.append(
                self.inferer.predict_file(
                    item["image"], dst, spacing=self.spacing, overwrite=self.overwrite, dicom=self.dicom
                )
            )
        return written


class StepTrainer:
    """A training run of ``config`` (:func:`volsr.api.train`). volsr trains in optimisation steps,
    not epochs: ``max_epochs`` (the MONAI property) is the number of steps, ``config.steps``."""

    def __init__(self, config: TrainingRunConfig, max_epochs: int, resume: bool = False) -> None:
        if max_epochs != config.steps:
            raise ValueError(
                f"max_epochs ({max_epochs}) is the number of steps, config.steps ({config.steps})"
            )
        self.config, self.max_epochs, self.resume = config, max_epochs, resume

    def run(self) -> dict:
        """The best validation record."""
        return train(self.config, resume=self.resume)
