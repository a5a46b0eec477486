"""volsr: 3D super-resolution of anisotropic medical volumes, on MONAI.

>>> from volsr import SuperResolver
>>> sr = SuperResolver.from_bundle("volsr_cnn3d")
>>> out = sr("scan.nii.gz")  # MetaTensor, isotropic at the finest input spacing
"""

__version__ = "0.9.0"

__all__ = ["SuperResolver", "load_image", "save_image", "save_dicom_series", "super_resolve", "__version__"]

_LAZY = {
    "SuperResolver": "volsr.api",
    "load_image": "volsr.data.io",
    "save_image": "volsr.data.io",
    "save_dicom_series": "volsr.data.dicom_writer",
    "super_resolve": "volsr.inference.sliding_window",
}


def __getattr__(name: str):
    # lazy: `import volsr` (and `volsr --help`) must not pay for importing torch and MONAI
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volsr' has no attribute {name!r}")
