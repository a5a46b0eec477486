"""Both shipped networks export (TorchScript scripted or traced, ONNX) and give the eager output on odd and
even sizes; the bundle README's export commands run from a copy of each bundle folder."""

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from volsr.networks.checkpoint import load_checkpoint

BUNDLES = ("volsr_cnn3d", "volsr_gan3d")
ODD, EVEN = (25, 24, 23), (16, 16, 16)  # odd sizes take the context branch's replicate padding
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def _shipped(bundle: str) -> torch.nn.Module:
    network, _, _ = load_checkpoint(REPO / "bundles" / bundle / "models" / "model.pt")
    cfg = network.config
    assert cfg.grid_channels == 9 and cfg.coarse_blocks > 0 and cfg.attention  # every branch is exercised
    return network


def _inputs(size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 10, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_scripted_and_traced_networks_match_eager_on_odd_and_even_sizes(bundle):
    net = _shipped(bundle)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        traced = torch.jit.trace(net, _inputs(EVEN, seed=9))  # traced at one size, run at others
        for size in (ODD, EVEN):
            x = _inputs(size)
            expected = net(x)  # eager, activations updated in place
            assert expected.shape == (1, 1, *size)
            assert torch.allclose(scripted(x), expected, atol=1e-5)
            assert torch.allclose(traced(x), expected, atol=1e-5)
    x = _inputs(ODD, seed=1)
    assert torch.allclose(scripted(x), net(x), atol=1e-5)  # the autograd (out-of-place) path too


def _readme_commands(bundle: str) -> list[list[str]]:
    """The ``python -m monai.bundle ...`` commands of the README's export section, as argument lists."""
    text = (REPO / "bundles" / bundle / "docs" / "README.md").read_text()
    section = text.split("## Export", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("python -m monai.bundle")]
    return [[sys.executable, *c[1:]] for c in commands]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_readme_export_commands_run_in_the_bundle_folder_and_match_eager(bundle, tmp_path):
    folder = tmp_path / bundle
    shutil.copytree(REPO / "bundles" / bundle / "configs", folder / "configs")
    (folder / "models").mkdir()
    shutil.copy(REPO / "bundles" / bundle / "models" / "model.pt", folder / "models")
    commands = _readme_commands(bundle)
    assert [c[3] for c in commands] == ["ckpt_export", "onnx_export"]
    if not HAS_ONNX:
        commands = commands[:1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for cmd in commands:
        result = subprocess.run(  # the ONNX exporter prints UTF-8 whatever the locale says
            cmd, cwd=folder, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]

    net = _shipped(bundle)
    extra = {"metadata.json": ""}
    exported = torch.jit.load(folder / "models" / "model.ts", _extra_files=extra)
    assert b'"network_data_format"' in extra["metadata.json"]  # the metadata rides along
    sizes = (ODD, EVEN)
    with torch.no_grad():
        expected = {size: net(_inputs(size)) for size in sizes}
        for size in sizes:
            assert torch.allclose(exported(_inputs(size)), expected[size], atol=1e-5)
    if not HAS_ONNX:
        pytest.skip("onnx, onnxscript or onnxruntime not installed: ONNX export not checked")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "models" / "model.onnx"))
    for size in sizes:
        (got,) = session.run(None, {"image": _inputs(size).numpy()})
        assert got.shape == (1, 1, *size)
        assert torch.allclose(torch.from_numpy(got), expected[size], atol=1e-4)
