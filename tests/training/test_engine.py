"""The training engine: weight decay groups, scalars logged once per interval, validation through
logging, TensorBoard closed however the run ends, resume at the saved step."""

import logging
import math

import pytest
import torch
from torch import nn

import volsr.training.engine as engine
from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import read_checkpoint
from volsr.training.engine import Distributed, TrainingTask, fit, load_state, parameter_groups
from volsr.training.gan import GanConfig, GanParts
from volsr.training.trainer import TrainConfig, optimisation_setup


class FakeWriter:
    """Records what a ``SummaryWriter`` is asked to do."""

    instances: list = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


@pytest.fixture
def writers(monkeypatch):
    import torch.utils.tensorboard

    FakeWriter.instances = []
    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", FakeWriter)
    return FakeWriter.instances


class CountingTask(TrainingTask):
    """Adds 1 to a weight per step and reports ``loss = step`` (a tensor, as a real step's loss)."""

    def __init__(self, fail_at: int | None = None):
        self.network = ResidualSR3D(features=4, num_blocks=1)
        self.steps, self.fail_at = [], fail_at

    @property
    def shipped(self) -> nn.Module:
        return self.network

    def step(self, step, x, y):
        if step == self.fail_at:
            raise RuntimeError("the step failed")
        self.steps.append(step)
        with torch.no_grad():
            self.network.out.bias += 1.0
        return {"loss": torch.tensor(float(step)), "lr": 0.1 * step}

    def checkpoint(self):
        return self.network, {"marker": "counting"}


def config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(
        data=[],
        output_dir=str(tmp_path / "out"),
        log_dir=str(tmp_path / "runs"),
        steps=5,
        log_every=2,
        checkpoint_every=2,
        progress=False,
    )
    return TrainConfig(**{**settings, **overrides})


def endless_batches():
    while True:
        yield torch.zeros(1), torch.zeros(1)


def run(task, cfg, **kwargs):
    return fit(task, cfg, endless_batches(), Distributed(), normalizer=PercentileNormalizer(), **kwargs)


def test_biases_and_norm_parameters_get_no_weight_decay():
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.InstanceNorm3d(4, affine=True), nn.Conv3d(4, 1, 1, bias=False))
    decayed, free = parameter_groups(net, 1e-4)
    assert decayed["weight_decay"] == 1e-4 and free["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in free["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}

    def decay_of(optimizer):
        return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}

    cnn_cfg = TrainConfig(data="x", output_dir="y", weight_decay=1e-3)
    gan_cfg = GanConfig(data="x", output_dir="y", weight_decay=1e-3)
    _, cnn_optimizer = optimisation_setup(
        ResidualSR3D(features=4, num_blocks=1), cnn_cfg, torch.device("cpu")
    )
    gan_optimizer = GanParts.create(
        ResidualSR3D(features=4, num_blocks=1), nn.Conv3d(1, 1, 1), gan_cfg
    ).g_optimizer
    for optimizer in (cnn_optimizer, gan_optimizer):
        network_params = [p for g in optimizer.param_groups for p in g["params"]]
        decay = decay_of(optimizer)
        assert all(decay[id(p)] == (1e-3 if p.ndim > 1 else 0.0) for p in network_params)
        assert any(p.ndim == 1 for p in network_params)  # biases exist, and are left alone


def test_an_optimiser_state_of_one_group_loads_into_the_two_groups():
    net = ResidualSR3D(features=4, num_blocks=1)
    old = torch.optim.AdamW(net.parameters(), lr=1e-3)  # one group over net.parameters()
    net(torch.rand(1, 1, 8, 8, 8)).mean().backward()
    old.step()
    new = torch.optim.AdamW(parameter_groups(net, 1e-4), lr=1e-3)
    engine.load_optimizer_state(new, old.state_dict(), net)
    for p in net.parameters():
        torch.testing.assert_close(new.state[p]["exp_avg"], old.state[p]["exp_avg"])
    assert [g["weight_decay"] for g in new.param_groups] == [1e-4, 0.0]


def test_scalars_are_means_over_the_logging_interval_and_the_writer_is_closed(tmp_path, writers):
    run(CountingTask(), config(tmp_path))
    (writer,) = writers
    assert writer.closed
    losses = [(value, step) for tag, value, step in writer.scalars if tag == "train/loss"]
    # steps 0..4 report loss 0..4; logged after steps 2, 4 and the last (5): means of (0, 1), (2, 3), (4)
    assert losses == [(0.5, 2), (2.5, 4), (4.0, 5)]
    lrs = [(value, step) for tag, value, step in writer.scalars if tag == "train/lr"]
    assert lrs == [(pytest.approx(0.1), 2), (pytest.approx(0.3), 4), (pytest.approx(0.4), 5)]  # the latest


class FakeBar:
    def __init__(self):
        self.n, self.postfix, self.closed = 0, None, False

    def update(self, n):
        self.n += n

    def set_postfix(self, values, refresh=True):
        self.postfix = dict(values)

    def close(self):
        self.closed = True


def test_the_bar_shows_loss_and_lr(tmp_path, writers, monkeypatch):
    bar = FakeBar()
    monkeypatch.setattr(engine, "progress_bar", lambda *args: bar)
    run(CountingTask(), config(tmp_path, steps=4, progress=True))
    assert (bar.n, bar.closed, bar.postfix) == (4, True, {"loss": "2.5000", "lr": "3.0e-01"})


def test_an_exception_in_a_step_still_closes_the_writer_and_the_bar(tmp_path, writers, monkeypatch):
    bar = FakeBar()
    monkeypatch.setattr(engine, "progress_bar", lambda *args: bar)
    with pytest.raises(RuntimeError, match="the step failed"):
        run(CountingTask(fail_at=3), config(tmp_path, progress=True))
    assert writers[0].closed and bar.closed and bar.n == 3


def test_resume_continues_at_the_saved_step(tmp_path, writers):
    cfg = config(tmp_path, steps=4)
    first = CountingTask()
    run(first, cfg)
    assert first.steps == [0, 1, 2, 3]
    state = load_state(cfg.output_dir, resume=True, device=torch.device("cpu"), steps=cfg.steps + 1)
    assert state["step"] == 4 and state["marker"] == "counting" and state["config"]["steps"] == 4
    assert load_state(cfg.output_dir, resume=False, device=torch.device("cpu"), steps=cfg.steps) is None

    cfg.steps = 7
    second = CountingTask()
    second.network.load_state_dict(state["model"])
    run(second, cfg, step=state["step"], best=state["best"])
    assert second.steps == [4, 5, 6]
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)["step"] == 7
    assert [step for tag, _, step in writers[1].scalars if tag == "train/loss"] == [6, 7]


def test_validation_goes_out_as_one_log_line_and_keeps_the_best(tmp_path, writers, caplog):
    gains = iter([0.5, 0.2, 0.7])

    def validator(network, normalizer, device):
        gain = next(gains)
        return {"scan/psnr": 30.0 + gain, "scan/ssim": 0.9, "psnr_gain": gain, "min_psnr_gain": gain}

    with caplog.at_level(logging.INFO, logger="volsr.training"):
        best = run(CountingTask(), config(tmp_path, steps=5, val_every=2), validator=validator)
    lines = [r.getMessage() for r in caplog.records if r.name == "volsr.training.engine"]
    assert lines == [
        "validation at step 2: PSNR gain over cubic +0.500 dB (lowest +0.500 dB); scan 30.50 dB / 0.900",
        "validation at step 4: PSNR gain over cubic +0.200 dB (lowest +0.200 dB); scan 30.20 dB / 0.900",
        "validation at step 5: PSNR gain over cubic +0.700 dB (lowest +0.700 dB); scan 30.70 dB / 0.900",
    ]
    assert best["step"] == 5 and best["psnr_gain"] == 0.7
    shipped = read_checkpoint(tmp_path / "out" / "model.pt")
    assert shipped["step"] == 5 and shipped["validation"]["psnr_gain"] == 0.7
    assert ("val/psnr_gain", 0.5, 2) in writers[0].scalars


def test_a_run_without_validation_ships_its_last_weights(tmp_path, writers):
    best = run(CountingTask(), config(tmp_path, steps=3))
    assert best == {"psnr_gain": -math.inf}
    weights = torch.load(tmp_path / "out" / "model.pt", weights_only=True)  # a bare state dict
    assert float(weights["out.bias"][0]) == pytest.approx(3.0)
    assert read_checkpoint(tmp_path / "out" / "model.pt")["step"] == 3  # from model_meta.json


def test_progress_shows_only_the_scalars_a_stretch_of_steps_has():
    # while only the discriminator trains there is no generator loss to show
    from volsr.training.engine import _log_scalars

    class Bar:
        postfix = None

        def set_postfix(self, values, refresh):
            self.postfix = values

    bar = Bar()
    _log_scalars({"d_loss": 0.25, "d_lr": 1e-4}, 10, None, bar, ["g_loss", "d_loss", "d_lr"])
    assert bar.postfix == {"d_loss": "0.2500", "d_lr": "1.0e-04"}
