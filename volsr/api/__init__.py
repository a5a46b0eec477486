"""The Python API, the one way in: the CLI and the bundle configs call this and nothing else.

- super-resolve: :class:`SuperResolver` (``sr(image)``, ``sr.predict_file(src)``), :class:`ResolverOptions`;
  a cohort: :func:`infer_cohort` with an :class:`InferRequest` (what to read, how, where to write);
- name outputs: :func:`output_path_for`, :func:`uncertainty_path_for`, ... (:mod:`volsr.api.outputs`);
- degrade: :func:`degrade_file` with a protocol, :class:`ThickSlices` or :class:`KSpace`;
- describe a scan: :func:`describe`;
- train or resume a bundle: :func:`train_bundle` (``volsr train``), :func:`train` for a config;
- evaluate: :func:`evaluate_files` (``volsr evaluate``);
- bundle properties for MONAI's tools: :func:`scan_dataset`, :class:`FileInference`,
  :class:`StepTrainer`, ... (:mod:`volsr.api.bundle`).

Example:
    >>> from volsr.api import SuperResolver, ThickSlices, degrade_file
    >>> sr = SuperResolver.from_bundle("volsr_cnn3d")
    >>> out = sr("scan.nii.gz", spacing=1.0)      # MetaTensor on a 1 mm grid, affine exact
    >>> sr.predict_file("scan.nii.gz")            # writes ./scan_sr.nii.gz, never over the input
    >>> degrade_file("scan.nii.gz", "thick.nii.gz", ThickSlices(axis=2, factor=4))
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names below are, for editors, type checkers and readers
    from volsr.api.bundle import (
        FileInference,
        StepTrainer,
        SuperResolutionInferer,
        scan_dataset,
        training_dataset,
    )
    from volsr.api.bundle_search import DEFAULT_BUNDLE, find_bundle, find_bundle_root
    from volsr.api.cohort.runner import CohortResult, infer_cohort
    from volsr.api.evaluation import evaluate_files
    from volsr.api.files import DegradedFile, degrade_file, describe
    from volsr.api.outputs import dicom_folder_for, output_path_for, series_outputs, uncertainty_path_for
    from volsr.api.request import InferRequest, OutputOptions, ResolverOptions, ScanSource
    from volsr.api.resolver import SuperResolver
    from volsr.api.training import GanConfig, TrainConfig, stored_config, train, train_bundle
    from volsr.data.dicom_writer import is_written_series
    from volsr.demo import run_demo
    from volsr.evaluation.report import summary_markdown
    from volsr.training.engine import require_torchrun
    from volsr.transforms.protocol import (
        QUALITY_BAR,
        KSpace,
        Protocol,
        ThickSlices,
        as_protocol,
        protocol_from_dict,
    )

#: where each name lives; imported on first use, so ``import volsr.api`` stays light (no torch)
_LAZY = {
    "SuperResolver": "volsr.api.resolver",
    "ResolverOptions": "volsr.api.request",
    "InferRequest": "volsr.api.request",
    "ScanSource": "volsr.api.request",
    "OutputOptions": "volsr.api.request",
    "infer_cohort": "volsr.api.cohort.runner",
    "CohortResult": "volsr.api.cohort.runner",
    "find_bundle": "volsr.api.bundle_search",
    "find_bundle_root": "volsr.api.bundle_search",
    "DEFAULT_BUNDLE": "volsr.api.bundle_search",
    "output_path_for": "volsr.api.outputs",
    "dicom_folder_for": "volsr.api.outputs",
    "uncertainty_path_for": "volsr.api.outputs",
    "series_outputs": "volsr.api.outputs",
    "evaluate_files": "volsr.api.evaluation",
    "degrade_file": "volsr.api.files",
    "DegradedFile": "volsr.api.files",
    "describe": "volsr.api.files",
    "ThickSlices": "volsr.transforms.protocol",
    "KSpace": "volsr.transforms.protocol",
    "Protocol": "volsr.transforms.protocol",
    "QUALITY_BAR": "volsr.transforms.protocol",
    "as_protocol": "volsr.transforms.protocol",
    "protocol_from_dict": "volsr.transforms.protocol",
    "train": "volsr.api.training",
    "train_bundle": "volsr.api.training",
    "stored_config": "volsr.api.training",
    "TrainConfig": "volsr.api.training",
    "GanConfig": "volsr.api.training",
    "scan_dataset": "volsr.api.bundle",
    "training_dataset": "volsr.api.bundle",
    "SuperResolutionInferer": "volsr.api.bundle",
    "FileInference": "volsr.api.bundle",
    "StepTrainer": "volsr.api.bundle",
    "is_written_series": "volsr.data.dicom_writer",
    "summary_markdown": "volsr.evaluation.report",
    "run_demo": "volsr.demo",
    "require_torchrun": "volsr.training.engine",  # the bundles' multi_gpu_train.json call it
}
__all__ = [
    "SuperResolver",
    "ResolverOptions",
    "InferRequest",
    "ScanSource",
    "OutputOptions",
    "infer_cohort",
    "CohortResult",
    "find_bundle",
    "find_bundle_root",
    "DEFAULT_BUNDLE",
    "output_path_for",
    "dicom_folder_for",
    "uncertainty_path_for",
    "series_outputs",
    "evaluate_files",
    "degrade_file",
    "DegradedFile",
    "describe",
    "ThickSlices",
    "KSpace",
    "Protocol",
    "QUALITY_BAR",
    "as_protocol",
    "protocol_from_dict",
    "train",
    "train_bundle",
    "stored_config",
    "TrainConfig",
    "GanConfig",
    "scan_dataset",
    "training_dataset",
    "SuperResolutionInferer",
    "FileInference",
    "StepTrainer",
    "is_written_series",
    "summary_markdown",
    "run_demo",
    "require_torchrun",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volsr.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
