"""`train` killed with SIGKILL in the middle of a checkpoint save: what it leaves always loads (or is
absent), the next run removes the stray temporary file, and a resumed run reaches its target step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import torch
from conftest import REPO, smooth_volume

from volsr.networks.checkpoint import load_checkpoint
from volsr.training.trainer import TrainConfig, train_cnn

TINY = dict(
    batch_size=1, patch_size=12, warmup=1, checkpoint_every=1, device="cpu", progress=False, ema=0,
    network={"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1}},
    degradation={"slice_thickness": {"axis": [2], "factor": [2.0, 3.0]}},
)  # fmt: skip
RUN = (
    "import json, sys; from volsr.training.trainer import TrainConfig, train_cnn; "
    "train_cnn(TrainConfig(**json.loads(sys.argv[1])))"
)


def _killed_in_a_save(settings: dict, out, after_first: bool) -> None:
    """Start training, wait until a checkpoint's temporary file exists (with ``after_first``, once a
    checkpoint.pt is already there), SIGKILL it at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, json.dumps(settings)], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ready = out.is_dir() and (not after_first or (out / "checkpoint.pt").exists())
            if ready and any(p.name.endswith(".tmp") for p in out.iterdir()):
                break
            time.sleep(0.002)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_kill_mid_save_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Nifti1Image(smooth_volume((20, 20, 20)).astype(np.float32), np.eye(4)), data / "v.nii.gz")
    out = tmp_path / "out"
    settings = dict(TINY, data=str(data), output_dir=str(out), steps=10_000)
    for after_first in (False, True):  # in the very first save, then in a save over a checkpoint
        _killed_in_a_save(settings, out, after_first)
        for name in ("checkpoint.pt", "model.pt"):
            if (out / name).exists():  # never half a file: it loads whole
                load_checkpoint(out / name)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    target = state["step"] + 2
    train_cnn(TrainConfig(**dict(settings, steps=target)), resume=True)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == target
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "stray temporaries survived"
