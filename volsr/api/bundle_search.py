"""Finding bundles: a bundle named by path, or by name in ``./bundles``, the source tree or the install
prefix.

Example:
    >>> find_bundle("volsr_cnn3d") / "models" / "model.pt"      # the default bundle's weights
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["DEFAULT_BUNDLE", "bundle_search_path", "find_bundle_root", "find_bundle"]

DEFAULT_BUNDLE = "volsr_cnn3d"


def bundle_search_path() -> list[Path]:
    """Where bundle names are looked up, in order: ./bundles, the source tree, the install prefix."""
    return [
        Path.cwd() / "bundles",
        Path(__file__).resolve().parents[2] / "bundles",  # the source tree: volsr/api/bundle_search.py -> ./
        Path(sys.prefix) / "share" / "volsr" / "bundles",
    ]


def find_bundle_root(bundle: str | Path, need: str = "configs/metadata.json") -> Path:
    """A bundle folder from a path or a name in ``bundles/``, holding the file ``need``."""
    candidates = [Path(bundle)] + [d / str(bundle) for d in bundle_search_path()]
    for c in candidates:
        if (c / need).is_file():
            return c.resolve()
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{bundle}: no bundle with {need} found (looked in {searched})")


def find_bundle(bundle: str | Path) -> Path:
    """A bundle folder with trained weights (``models/model.pt``)."""
    return find_bundle_root(bundle, "models/model.pt")
