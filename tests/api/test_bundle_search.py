"""One rule for finding bundles, the same from any folder: a name is the installed copy's, a path is
that folder; an install whose data went elsewhere than ``sys.prefix`` (``pip install --user``) is found
from the installer's record."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_tiny_bundle

from volsr.api.bundle_search import installed_bundles, locate_bundle
from volsr.api.resolver import SuperResolver

NAME = "volsr_cnn3d"


@pytest.fixture
def clone_like(tmp_path) -> Path:
    """A folder that looks like a clone: a ``bundles/volsr_cnn3d`` of its own, not the installed one."""
    make_tiny_bundle(tmp_path / "clone" / "bundles" / NAME)
    return tmp_path / "clone"


def test_a_name_is_the_installed_copy_from_any_folder(clone_like, tmp_path, monkeypatch):
    installed = (installed_bundles() / NAME).resolve()
    found = []
    for folder in (clone_like, tmp_path):  # a folder holding bundles/volsr_cnn3d, and one without
        monkeypatch.chdir(folder)
        found.append(locate_bundle(NAME, "models/model.pt"))
    assert [f.root for f in found] == [installed, installed]
    assert {f.origin for f in found} == {"installed"}
    assert found[0].describe() == f"installed copy: {installed}"


def test_a_path_names_that_folder(clone_like, monkeypatch):
    monkeypatch.chdir(clone_like)
    location = locate_bundle(f"bundles/{NAME}", "models/model.pt")
    assert location.root == (clone_like / "bundles" / NAME).resolve() != installed_bundles() / NAME
    assert location.origin == "path" and location.describe().startswith("path given: ")
    # the resolver runs the weights of the folder named: the tiny network's, not the shipped one's
    sr = SuperResolver.from_bundle(f"bundles/{NAME}", device="cpu")
    assert sr.info["bundle"] == str(location.root) and sr.info["step"] == 1


def test_a_bundle_only_here_is_refused_by_name_with_the_path_to_write(tmp_path, monkeypatch):
    make_tiny_bundle(tmp_path / "my_sr")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"no bundle of that name in the installed copy .*write \./my_sr"
    ):
        locate_bundle("my_sr")
    assert locate_bundle("./my_sr").root == (tmp_path / "my_sr").resolve()


def _user_install(home: Path) -> Path:
    """The layout ``pip install --user`` leaves: the package in ~/.local/lib/pythonX.Y/site-packages,
    the bundles in ~/.local/share/volsr/bundles, and a RECORD naming them relative to site-packages.
    Only the modules bundle_search needs are copied, so a plain interpreter (``-S``) can import them."""
    site = home / ".local" / "lib" / "python3" / "site-packages"
    for module in ("__init__.py", "errors.py", "api/__init__.py", "api/bundle_search.py"):
        (site / "volsr" / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "volsr" / module, site / "volsr" / module)
    bundle = home / ".local" / "share" / "volsr" / "bundles" / NAME
    make_tiny_bundle(bundle)
    info = site / "volsr-0.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: volsr\nVersion: 0.9.0\n")
    files = [p for p in bundle.rglob("*") if p.is_file()] + [p for p in (site / "volsr").rglob("*.py")]
    (info / "RECORD").write_text("".join(f"{os.path.relpath(p, site)},,\n" for p in files))
    return site


def test_a_user_install_finds_its_bundles_from_any_folder(clone_like, tmp_path):
    site = _user_install(tmp_path / "home")
    expected = (tmp_path / "home" / ".local" / "share" / "volsr" / "bundles" / NAME).resolve()
    script = (
        f"import sys; sys.path.insert(0, {str(site)!r}); "
        "from volsr.api.bundle_search import locate_bundle; print(locate_bundle('volsr_cnn3d').describe())"
    )
    for folder in (clone_like, tmp_path):
        done = subprocess.run(
            [sys.executable, "-S", "-c", script], cwd=folder, capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == f"installed copy: {expected}", done.stderr
