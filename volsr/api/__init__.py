"""The Python API, the one way in: the CLI and the bundle configs call this and nothing else.

- super-resolve: :class:`SuperResolver` (``sr(image)``, ``sr.predict_file(src)``), :class:`ResolverOptions`;
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

#: where each name lives; imported on first use, so ``import volsr.api`` stays light
_LAZY = {
    "SuperResolver": "volsr.api.resolver",
    "OutputTarget": "volsr.api.resolver",
    "uncertainty_path_for": "volsr.api.resolver",
    "ResolverOptions": "volsr.api.resolver",
    "checked_device": "volsr.api.resolver",
    "find_bundle": "volsr.api.resolver",
    "find_bundle_root": "volsr.api.resolver",
    "DEFAULT_BUNDLE": "volsr.api.resolver",
    "output_path_for": "volsr.api.resolver",
    "dicom_folder_for": "volsr.api.resolver",
    "series_outputs": "volsr.api.resolver",
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
    "infer_cohort": "volsr.api.cohort",
    "discard_temporaries": "volsr.data.temporaries",
    "console_logging": "volsr.training.engine",
    "require_torchrun": "volsr.training.engine",
    "CohortRequest": "volsr.api.cohort",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volsr.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
