"""Distributed data parallel in torchrun's environment: two CPU processes (gloo) train as one process."""

import json
import os
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO, smooth_volume

import volsr.training.engine as engine
import volsr.training.trainer as trainer
from volsr.data.normalization import PercentileNormalizer
from volsr.networks.checkpoint import build_network, save_checkpoint
from volsr.training.trainer import TrainConfig, train_cnn

GLOBAL_BATCH = 4
NETWORK = {"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1}}
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def fixed_batches(sampler, batch_size, seed, workers=0, pin_memory=False, rank=0):
    """Stands in for the patch sampler: global batch ``k`` depends on the step only (``seed`` is
    ``cfg.seed`` + the first step, as the trainer passes it), and rank ``r`` of ``n`` gets its
    ``r``-th share, so one process with the whole batch and ``n`` with a share each see the same data."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    assert batch_size * world == GLOBAL_BATCH
    share = slice(rank * batch_size, (rank + 1) * batch_size)
    step = seed
    while True:
        g = torch.Generator().manual_seed(step)
        x = torch.rand(GLOBAL_BATCH, 1, 12, 12, 12, generator=g)
        y = x.roll(1, dims=4) + 0.05 * torch.rand(GLOBAL_BATCH, 1, 12, 12, 12, generator=g)
        yield x[share], y[share]
        step += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_volume(path: Path, seed: int) -> str:
    nib.save(nib.Nifti1Image(smooth_volume((24, 24, 24), seed).astype(np.float32), np.eye(4)), path)
    return str(path)


def random_start(path: Path) -> str:
    """A checkpoint with every weight random: no zero-initialised layer, so no gradient is near 0,
    where Adam's step (g / (|g| + eps)) would blow float rounding up."""
    torch.manual_seed(0)
    network = build_network(NETWORK)
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0.0, 0.2)
    return str(save_checkpoint(path, network, PercentileNormalizer(), step=0))


def tiny_config(tmp_path: Path, out: str, batch_size: int, steps: int) -> TrainConfig:
    return TrainConfig(
        data=[write_volume(tmp_path / "hr.nii.gz", 0)],
        init=random_start(tmp_path / "init.pt"),
        val_data=[write_volume(tmp_path / "val.nii.gz", 5)],
        output_dir=str(tmp_path / out),
        log_dir=str(tmp_path / out / "runs"),
        network=NETWORK,
        batch_size=batch_size,
        patch_size=12,
        steps=steps,
        warmup=1,
        lr=1e-2,
        ema=0.5,
        checkpoint_every=1,
        val_every=2,
        device="cpu",
        amp=False,  # float32: bfloat16 would round the half and the whole batch differently
        progress=False,
    )


def rank_main(rank: int, world: int, ports: list[int], tmp_path: Path) -> None:
    """One torchrun rank: 2 steps, then a resumed run to 3; records the files this rank saved."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["LOCAL_WORLD_SIZE"] = str(world)
    trainer.patch_batches = fixed_batches
    saved = []
    real_save, real_save_model = engine.save_checkpoint, engine.save_model
    engine.save_checkpoint = lambda path, *a, **k: saved.append(Path(path).name) or real_save(path, *a, **k)
    engine.save_model = lambda path, *a, **k: saved.append(Path(path).name) or real_save_model(path, *a, **k)
    cfg = tiny_config(tmp_path, "ddp", GLOBAL_BATCH // world, steps=2)
    os.environ["MASTER_PORT"] = str(ports[0])
    train_cnn(cfg)
    cfg.steps = 3
    os.environ["MASTER_PORT"] = str(ports[1])
    best = train_cnn(cfg, resume=True)
    (tmp_path / f"rank{rank}.json").write_text(json.dumps({"saved": saved, "best": best}))


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(tmp_path, monkeypatch):
    """2 ranks x 2 patches give the weights (and their moving average) of 1 process x 4 patches, through
    a resume; only rank 0 writes files and validates; every rank returns rank 0's best record."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ports = [free_port(), free_port()]
    mp.start_processes(rank_main, args=(2, ports, tmp_path), nprocs=2, start_method="fork")

    monkeypatch.setattr(trainer, "patch_batches", fixed_batches)
    cfg = tiny_config(tmp_path, "one", GLOBAL_BATCH, steps=2)
    train_cnn(cfg)
    cfg.steps = 3  # the cosine schedule ends at cfg.steps: the same resume as the ranks'
    reference = train_cnn(cfg, resume=True)

    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    assert ddp["step"] == one["step"] == 3
    assert not torch.allclose(one["model"]["out.weight"], torch.zeros(()))  # it trained
    for key, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in one["ema"].items():
        torch.testing.assert_close(ddp["ema"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[1]["saved"] == []  # rank 1 writes nothing
    assert set(ranks[0]["saved"]) == {"checkpoint.pt", "model.pt"}
    # every step (checkpoint_every 1) and after each validation (steps 2 and 3)
    assert ranks[0]["saved"].count("checkpoint.pt") == 3 + 2
    lines = (tmp_path / "ddp" / "validation.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 3]  # once per check: rank 0 alone validates
    assert ranks[0]["best"]["step"] == ranks[1]["best"]["step"] == reference["step"]
    assert len(list((tmp_path / "ddp" / "runs").iterdir())) == 2  # one event file per run, rank 0's


def test_without_torchrun_the_process_trains_alone(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with engine.distributed("cpu") as dist:
        assert (dist.rank, dist.world_size, dist.active, dist.main) == (0, 1, False, True)
        network = torch.nn.Linear(2, 2)
        assert dist.replicate(network) is network
        assert not torch.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="torchrun"):
        engine.require_torchrun()


def test_multi_gpu_config_runs_the_train_config_in_a_process_group(tmp_path, monkeypatch):
    """configs/train.json + configs/multi_gpu_train.json under torchrun's variables (one CPU rank, gloo)."""
    from monai.bundle import run

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    configs = REPO / "bundles" / "volsr_cnn3d" / "configs"
    seen = []
    real_fit = engine.fit

    def fit(task, cfg, batches, dist, **kwargs):
        seen.append((dist.active, dist.world_size, type(task.replica)))
        return real_fit(task, cfg, batches, dist, **kwargs)

    monkeypatch.setattr(trainer, "fit", fit)
    run(
        config_file=[str(configs / "train.json"), str(configs / "multi_gpu_train.json")],
        bundle_root=str(tmp_path / "bundle"),
        dataset_dir=[write_volume(tmp_path / "hr.nii.gz", 0)],
        val_data=[],
        steps=1,
        device="cpu",
        **{
            "config#network": {"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1}},
            "config#patch_size": 12,
            "config#zoom": [1.0, 1.0],
            "config#progress": False,
        },
    )
    assert seen == [(True, 1, torch.nn.parallel.DistributedDataParallel)]
    assert torch.load(tmp_path / "bundle" / "models" / "checkpoint.pt", weights_only=False)["step"] == 1
    assert not torch.distributed.is_initialized()  # the group the engine opened is closed


def gan_rank_main(rank: int, port: int, tmp_path: Path) -> None:
    """One rank of a GAN run; saves both networks as this rank has them."""
    from conftest import make_image
    from test_gan import degradation, tiny_config

    from volsr.training.gan import GanParts, train_gan

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    kept = []
    real_replicate = GanParts.replicate
    GanParts.replicate = lambda parts, dist: kept.append(parts) or real_replicate(parts, dist)
    volumes = {f"vol{i}": make_image(smooth_volume((24, 24, 24), seed=i), np.eye(4)) for i in range(2)}
    # float32: in bfloat16 this tiny GAN's weights turn NaN within 3 steps (one process alike)
    cfg = tiny_config(
        tmp_path, volumes, tmp_path / "cnn.pt", steps=3, d_warmup=1, val_data=["vol0"], amp=False
    )
    train_gan(cfg, degradation=degradation(seed=rank), loader=volumes.__getitem__)
    parts = kept[0]
    state = {"g": parts.generator.state_dict(), "d": parts.discriminator.state_dict()}
    torch.save(state, tmp_path / f"gan_rank{rank}.pt")


def test_gan_ranks_drawing_different_patches_keep_identical_networks(tmp_path, monkeypatch):
    """Both networks train through DDP (the discriminator's two passes per step included): different
    patches on each rank, the same weights after every step."""
    from test_gan import tiny_generator

    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    start = save_checkpoint(tmp_path / "cnn.pt", tiny_generator(), PercentileNormalizer(1.0, 99.0), step=11)
    mp.start_processes(gan_rank_main, args=(free_port(), tmp_path), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"gan_rank{r}.pt", weights_only=False) for r in (0, 1)]
    before = torch.load(start, weights_only=False)["model"]
    assert not torch.equal(ranks[0]["g"]["out.weight"], before["out.weight"])  # the generator trained
    assert all(torch.isfinite(v).all() for v in ranks[0]["g"].values())
    for net in ("g", "d"):
        for key, value in ranks[0][net].items():
            torch.testing.assert_close(ranks[1][net][key], value, rtol=1e-5, atol=1e-6, msg=f"{net}: {key}")
    lines = (tmp_path / "run" / "validation.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 3]  # the warm start and the end, by rank 0
