"""Precision choice: bfloat16 on CPU only where it is measured faster, with an override."""

import pytest
import torch

from volsr.inference import devices


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch):
    monkeypatch.delenv("VOLSR_CPU_BF16", raising=False)
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
    [({None: 2.0, torch.bfloat16: 1.0}, torch.bfloat16), ({None: 1.0, torch.bfloat16: 2.0}, None)],
)
def test_cpu_autocast_follows_the_measurement(monkeypatch, seconds, expected):
    calls = _fake_timings(monkeypatch, seconds)
    cpu = torch.device("cpu")
    assert devices.autocast_dtype(cpu, True) is expected
    assert devices.autocast_dtype(cpu, True) is expected
    assert calls == [None, torch.bfloat16]  # measured once per process, not per call
    assert devices.autocast_dtype(cpu, False) is None


@pytest.mark.parametrize(("value", "expected"), [("1", torch.bfloat16), ("0", None)])
def test_environment_overrides_the_measurement(monkeypatch, value, expected):
    calls = _fake_timings(monkeypatch, {None: 1.0, torch.bfloat16: 1.0} if value == "1" else {})
    monkeypatch.setenv("VOLSR_CPU_BF16", value)
    assert devices.autocast_dtype(torch.device("cpu"), True) is expected
    assert calls == []


def test_no_bf16_without_the_instructions(monkeypatch):
    calls = _fake_timings(monkeypatch, {None: 10.0, torch.bfloat16: 1.0})
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.autocast_dtype(torch.device("cpu"), True) is None
    assert calls == []


def test_the_real_timing_is_a_positive_duration():
    assert 0 < devices._time_conv3d(None, repeats=1) < 60
