"""Precision: one rule per device, stable on a machine, and correct in every dtype it may choose.

CUDA's dtypes are emulated with CPU autocast: no test needs a GPU.
"""

import json
import math

import pytest
import torch

from volsr.inference import devices


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch, tmp_path):
    monkeypatch.delenv("VOLSR_CPU_BF16", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    devices.measured_cpu_prefers_bf16.cache_clear()
    yield
    devices.measured_cpu_prefers_bf16.cache_clear()


@pytest.mark.parametrize(
    ("seconds_float32", "seconds_bfloat16", "expected"),
    [(2.0, 1.0, True), (1.3, 1.0, True), (1.2, 1.0, False), (1.0, 1.0, False), (1.0, 2.0, False)],
)
def test_bf16_must_win_by_the_margin(seconds_float32, seconds_bfloat16, expected):
    assert devices.bf16_wins(seconds_float32, seconds_bfloat16) is expected


def _fake_timings(monkeypatch, seconds: dict):
    calls = []

    def fake(dtype, repeats=3):
        calls.append(dtype)
        return seconds[dtype]

    monkeypatch.setattr(devices, "_time_conv3d", fake)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    return calls


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [({None: 2.0, torch.bfloat16: 1.0}, torch.bfloat16), ({None: 1.0, torch.bfloat16: 2.0}, torch.float32)],
)
def test_cpu_autocast_follows_the_measurement(monkeypatch, seconds, expected):
    calls = _fake_timings(monkeypatch, seconds)
    cpu = torch.device("cpu")
    assert devices.decide_precision(cpu, True) is expected
    assert devices.decide_precision(cpu, True) is expected
    assert calls == [None, torch.bfloat16]  # measured once per process, not per call
    assert devices.decide_precision(cpu, False) is torch.float32


@pytest.mark.parametrize(("value", "expected"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_environment_overrides_the_measurement(monkeypatch, value, expected):
    calls = _fake_timings(monkeypatch, {None: 1.0, torch.bfloat16: 1.0} if value == "1" else {})
    monkeypatch.setenv("VOLSR_CPU_BF16", value)
    assert devices.decide_precision(torch.device("cpu"), True) is expected
    assert calls == []


def test_no_bf16_without_the_instructions(monkeypatch):
    calls = _fake_timings(monkeypatch, {None: 10.0, torch.bfloat16: 1.0})
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.decide_precision(torch.device("cpu"), True) is torch.float32
    assert calls == []


def test_the_real_timing_is_a_positive_duration():
    assert 0 < devices._time_conv3d(None, repeats=1) < 60


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_cuda_autocasts_in_bfloat16_where_supported_else_float32(monkeypatch, bf16, expected):
    monkeypatch.setattr(devices, "cuda_supports_bf16", lambda device: bf16)
    cuda = torch.device("cuda")
    assert devices.decide_precision(cuda, True) is expected  # never float16: it overflows in the networks
    assert devices.decide_precision(cuda, False) is torch.float32
    assert devices.precision_name(devices.decide_precision(cuda, True)) == ("bfloat16" if bf16 else "float32")


def test_cpu_measurement_is_made_once_per_machine_and_read_back(monkeypatch, tmp_path):
    calls = _fake_timings(monkeypatch, {None: 2.0, torch.bfloat16: 1.0})
    cpu = torch.device("cpu")
    assert devices.decide_precision(cpu, True) is torch.bfloat16
    assert len(calls) == 2
    cached = json.loads(devices.precision_cache_file().read_text())
    assert list(cached.values()) == [True]
    devices.measured_cpu_prefers_bf16.cache_clear()  # as a new process would start
    _fake_timings(monkeypatch, {None: 1.0, torch.bfloat16: 2.0})  # the load changed: timings now disagree
    assert devices.decide_precision(cpu, True) is torch.bfloat16  # the machine's choice stands
    assert len(calls) == 2
    assert (
        devices.precision_name(torch.bfloat16) == "bfloat16"
        and devices.precision_name(torch.float32) == "float32"
    )


def test_cpu_without_a_writable_cache_stays_in_float32(monkeypatch, tmp_path):
    calls = _fake_timings(monkeypatch, {None: 2.0, torch.bfloat16: 1.0})
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert (
        devices.decide_precision(torch.device("cpu"), True) is torch.float32
    )  # a per-process timing could flip
    assert len(calls) == 2


def _possible_dtypes(monkeypatch) -> set:
    """Every dtype the rule can return on any device."""
    found = set()
    for cuda_bf16 in (True, False):
        monkeypatch.setattr(devices, "cuda_supports_bf16", lambda device, v=cuda_bf16: v)
        found.add(devices.decide_precision(torch.device("cuda"), True))
    for cpu_bf16 in ("0", "1"):
        monkeypatch.setenv("VOLSR_CPU_BF16", cpu_bf16)
        found.add(devices.decide_precision(torch.device("cpu"), True))
    monkeypatch.delenv("VOLSR_CPU_BF16")
    return found


def test_autocast_runs_in_the_precision_it_is_given():
    cpu, x = torch.device("cpu"), torch.ones(2, 2)
    with devices.autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
    with devices.autocast(cpu, torch.float32):
        assert (x @ x).dtype == torch.float32


def test_a_resolver_decides_its_precision_once_and_its_sidecar_names_that_one(monkeypatch, thick_image):
    """The precision travels as a value: a resolver made while bfloat16 was the machine's choice runs
    and records bfloat16 even after the choice changed, and its output is the bfloat16 output."""
    from volsr.api import SuperResolver
    from volsr.networks import ResidualSR3D

    torch.manual_seed(0)
    network = ResidualSR3D(features=4, num_blocks=1)
    with torch.no_grad():
        network.out.weight.normal_(0.0, 0.5)  # a residual that autocast's rounding shows in
    monkeypatch.setenv("VOLSR_CPU_BF16", "1")
    sr = SuperResolver(network, device="cpu", amp=True, roi=(16, 16, 16))
    assert sr.precision is torch.bfloat16
    monkeypatch.setenv("VOLSR_CPU_BF16", "0")  # the machine's choice changes after the resolver is made
    assert devices.decide_precision(torch.device("cpu"), True) is torch.float32
    out = sr(thick_image, scale=(1, 1, 4))
    assert sr.provenance("in.nii.gz", thick_image, out)["GeneratedBy"]["Options"]["precision"] == "bfloat16"
    float32 = SuperResolver(network, device="cpu", amp=True, roi=(16, 16, 16))(thick_image, scale=(1, 1, 4))
    assert not torch.equal(out.as_tensor(), float32.as_tensor())
    assert torch.allclose(out.as_tensor(), float32.as_tensor(), rtol=0.05, atol=0.05 * float(out.abs().max()))


def test_squeeze_excitation_pools_without_float16_overflow():
    """A 64^3 window's channel sum (~131,000) passes float16's 65,504: the pooling must not sum in it."""
    from volsr.networks.residual_sr import SqueezeExcitation3D

    torch.manual_seed(0)
    layer = SqueezeExcitation3D(3, 8, r=2).eval()
    x = torch.rand(1, 8, 64, 64, 64) + 0.5
    with torch.no_grad():
        expected = layer(x)
        got = layer(x.half())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, rtol=2e-3, atol=2e-3)


def _thick_crop(shared_data, smaller_where_bf16_is_emulated: bool = True):
    """An in-plane crop of T2w.nii.gz, thickened x4 along the slice axis, and its truth: 64 x 64 x 60,
    or 24 x 24 x 32 where the CPU emulates bfloat16 (no AVX512-BF16 or AMX: its conv3d runs about
    150 times slower than float32 there, and volsr never chooses it on such a CPU)."""
    from volsr.data.io import load_image
    from volsr.evaluation.comparison import degrade
    from volsr.transforms.protocol import ThickSlices

    hr = load_image(shared_data / "val" / "T2w.nii.gz")
    small = smaller_where_bf16_is_emulated and not devices.cpu_has_native_bf16()
    hr = hr[:, 100:124, 100:124, 14:46] if small else hr[:, 80:144, 80:144, :]
    return degrade(hr, ThickSlices(axis=2, factor=4.0)), hr


def _psnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    span = float(reference.max() - reference.min())
    return 10 * math.log10(span**2 / float(((x - reference) ** 2).mean()))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["volsr_cnn3d", "volsr_gan3d"])
def test_shipped_networks_are_correct_in_every_precision_volsr_chooses(monkeypatch, shared_data, bundle):
    from volsr.api import SuperResolver

    lr, hr = _thick_crop(shared_data)
    dtypes = _possible_dtypes(monkeypatch)
    assert dtypes == {torch.float32, torch.bfloat16}
    psnr = {}
    for dtype in dtypes:
        monkeypatch.setenv("VOLSR_CPU_BF16", "1" if dtype == torch.bfloat16 else "0")
        sr = SuperResolver.from_bundle(bundle, device="cpu", amp=True)  # decides its precision once
        assert sr.precision == dtype
        out = sr(lr, scale=[a / b for a, b in zip(hr.shape[1:], lr.shape[1:], strict=True)]).as_tensor()
        assert torch.isfinite(out).all(), dtype
        psnr[dtype] = _psnr(out, hr.as_tensor())
    assert psnr[torch.float32] > _psnr(hr.new_zeros(hr.shape), hr.as_tensor()) + 10  # a real restoration
    assert abs(psnr[torch.bfloat16] - psnr[torch.float32]) < 0.05, psnr


@pytest.mark.integration
@pytest.mark.slow
def test_training_steps_in_the_cuda_precision_stay_finite(monkeypatch, shared_data):
    """The shipped architecture, a few AdamW steps on real patches, in the dtype chosen for CUDA."""
    from volsr.geometry.grid_encoding import SamplePositions, with_grid_channels
    from volsr.geometry.interpolation import resample_array
    from volsr.networks.checkpoint import load_checkpoint
    from volsr.training.trainer import TrainConfig, loss_function, optimisation_setup, optimisation_step

    monkeypatch.setattr(devices, "cuda_supports_bf16", lambda device: True)
    cuda_dtype = devices.decide_precision(torch.device("cuda"), True)
    assert cuda_dtype == torch.bfloat16
    network, _, _ = load_checkpoint(_bundle_weights("volsr_cnn3d"))
    cfg = TrainConfig(data=[], output_dir="", lr=1e-3, warmup=0, amp=True)
    cpu = torch.device("cpu")
    network, optimizer = optimisation_setup(network.train(), cfg, cpu)
    lr, hr = _thick_crop(shared_data, smaller_where_bf16_is_emulated=False)  # crops of 24^3 inside it
    lo, hi = float(hr.min()), float(hr.max())
    x = resample_array((lr.as_tensor().float() - lo) / (hi - lo), hr.shape[1:], "cubic")[None]
    x = with_grid_channels(x, [SamplePositions.canonical(lr.shape[1:], hr.shape[1:], 2)])
    y = ((hr.as_tensor().float() - lo) / (hi - lo))[None]
    crops = [(slice(0, 24), slice(0, 24), slice(0, 24)), (slice(30, 54), slice(20, 44), slice(30, 54))]
    xb = torch.cat([x[(..., *c)] for c in crops])
    yb = torch.cat([y[(..., *c)] for c in crops])
    losses = [float(optimisation_step(network, optimizer, loss_function(cfg), xb, yb, cfg, cpu, cuda_dtype))
              for _ in range(3)]  # fmt: skip
    assert all(math.isfinite(v) for v in losses), losses
    assert all(torch.isfinite(p).all() for p in network.parameters())


def _bundle_weights(name: str):
    from volsr.api import find_bundle

    return find_bundle(name) / "models" / "model.pt"
