"""volsr: 3D super-resolution of anisotropic medical volumes, on MONAI.

>>> from volsr import SuperResolver
>>> sr = SuperResolver.from_bundle("volsr_cnn3d")
>>> out = sr("scan.nii.gz")  # MetaTensor, isotropic at the finest input spacing
"""

from typing import TYPE_CHECKING

__version__ = "0.11.0"

__all__ = ["SuperResolver", "load_image", "save_image", "save_dicom_series", "super_resolve", "__version__"]

if TYPE_CHECKING:  # what the names below are, for editors, type checkers and readers
    from volsr.api.resolver import SuperResolver
    from volsr.data.dicom_writer import save_dicom_series
    from volsr.data.io import load_image, save_image
    from volsr.inference.sliding_window import super_resolve

_LAZY = {
    "SuperResolver": "volsr.api.resolver",
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
