"""volsr: 3D super-resolution of anisotropic medical volumes, on MONAI."""

__version__ = "0.1.0"
