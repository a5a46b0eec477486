"""Finding bundles, by one rule that does not depend on the folder volsr runs from.

- A name (``volsr_cnn3d``: no folder separator) is a bundle of the installed copy: the bundles that
  came with the volsr that is running (:func:`installed_bundles`).
- A path (``bundles/volsr_cnn3d``, ``./my_bundle``, ``/data/bundle``, or a :class:`~pathlib.Path`)
  is that folder, relative to the current folder.

So ``--bundle volsr_cnn3d`` runs the same bundle from any folder, a clone's ``bundles/`` included;
``--bundle bundles/volsr_cnn3d`` names the clone's.

Example:
    >>> bundle_weights(find_bundle("volsr_cnn3d"))                # the default bundle's weights
    >>> locate_bundle("./my_bundle").origin                       # 'path'
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_BUNDLE",
    "BUNDLE_RULE",
    "BundleLocation",
    "installed_bundles",
    "is_bundle_path",
    "locate_bundle",
    "find_bundle_root",
    "find_bundle",
    "WEIGHTS",
    "bundle_weights",
]

DEFAULT_BUNDLE = "volsr_cnn3d"
#: the rule in one sentence, as ``volsr infer --help`` and the README state it
BUNDLE_RULE = (
    "a name is a bundle of the installed copy (the bundles that came with this volsr), the same from "
    "any folder; a path (with a /, e.g. bundles/volsr_cnn3d or ./my_bundle) names that folder"
)
#: a bundle's trained weights, relative to its folder (MONAI's bundle layout)
WEIGHTS = "models/model.pt"
_BUNDLES = ("share", "volsr", "bundles")  # where a wheel puts them, under its install prefix


@dataclass(frozen=True)
class BundleLocation:
    """A bundle folder (``root``, absolute and resolved) and how it was named: ``origin`` is
    ``"installed"`` (a name, found in :func:`installed_bundles`) or ``"path"`` (a folder given by path)."""

    root: Path
    origin: str

    def describe(self) -> str:
        """``installed copy: /.../volsr_cnn3d`` or ``path given: /.../my_bundle``."""
        return f"{'installed copy' if self.origin == 'installed' else 'path given'}: {self.root}"


def is_bundle_path(bundle: str | os.PathLike) -> bool:
    """Whether ``bundle`` names a folder rather than a bundle of the installed copy: a
    :class:`~pathlib.Path`, or a string with a folder separator, or one starting with ``.`` or ``~``."""
    if isinstance(bundle, os.PathLike):
        return True
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return any(s in bundle for s in separators) or bundle.startswith((".", "~"))


@functools.cache
def installed_bundles() -> Path:
    """The bundles that came with the running volsr.

    Run from a source tree (an editable install, or a checkout on ``sys.path``): the tree's
    ``bundles/``. Installed from a wheel: where the installer put the wheel's ``share/volsr/bundles``,
    read from its record of installed files, so a ``pip install --user`` (``~/.local/share``) or a
    ``--prefix`` install is found as well as a virtual environment's. The running package's own
    folder decides, never the current folder.
    """
    package = Path(__file__).resolve().parents[1]  # volsr/api/bundle_search.py -> volsr/
    tree = package.parent
    if (tree / "pyproject.toml").is_file() and (tree / "bundles").is_dir():
        return tree / "bundles"
    for dist in importlib.metadata.distributions(name="volsr", path=[str(tree)]):
        for file in dist.files or ():
            parts = file.parts
            for i in range(len(parts) - len(_BUNDLES)):
                if parts[i : i + len(_BUNDLES)] == _BUNDLES:
                    located = Path(str(dist.locate_file(file))).resolve()
                    return located.parents[len(parts) - i - len(_BUNDLES) - 1]
    return Path(sys.prefix) / Path(*_BUNDLES)  # none recorded: where a virtual environment's would be


def locate_bundle(bundle: str | os.PathLike, need: str = "configs/metadata.json") -> BundleLocation:
    """The bundle folder ``bundle`` names (module doc: a name is the installed copy's, a path is
    that folder), holding the file ``need``.

    Raises:
        FileNotFoundError: no such bundle, naming the folder looked in.
    """
    if is_bundle_path(bundle):
        root = Path(bundle).expanduser()
        if (root / need).is_file():
            return BundleLocation(root.resolve(), "path")
        raise FileNotFoundError(f"{bundle}: no bundle with {need} in that folder")
    installed = installed_bundles()
    root = installed / str(bundle)
    if (root / need).is_file():
        return BundleLocation(root.resolve(), "installed")
    held = _names(installed, need)
    here = f"; for the folder ./{bundle} here, write ./{bundle}" if (Path(bundle) / need).is_file() else ""
    raise FileNotFoundError(
        f"{bundle}: no bundle of that name in the installed copy ({installed}; it holds "
        f"{', '.join(held) or 'none'}){here}"
    )


def _names(installed: Path, need: str) -> list[str]:
    """The bundles in ``installed`` that hold ``need``."""
    if not installed.is_dir():
        return []
    return sorted(d.name for d in installed.iterdir() if (d / need).is_file())


def find_bundle_root(bundle: str | os.PathLike, need: str = "configs/metadata.json") -> Path:
    """The folder of the bundle ``bundle`` names (:func:`locate_bundle`), holding the file ``need``."""
    return locate_bundle(bundle, need).root


def find_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle folder with trained weights (:data:`WEIGHTS`)."""
    return find_bundle_root(bundle, WEIGHTS)


def bundle_weights(root: str | os.PathLike) -> Path:
    """The trained weights of the bundle folder ``root``."""
    return Path(root) / WEIGHTS
