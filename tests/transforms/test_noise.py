"""Noise at a prescribed SNR, measured on a flat phantom."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from volsr.geometry.meta import affine_of
from volsr.transforms import Noise, Noised, RandNoise, RandNoised
from volsr.transforms.noise import foreground_mean

LEVEL = 100.0


def phantom(affine: np.ndarray | None = None) -> MetaTensor:
    """A 32^3 volume, zero outside a flat 24^3 cube of value LEVEL."""
    vol = np.zeros((32, 32, 32), dtype=np.float32)
    vol[4:28, 4:28, 4:28] = LEVEL
    aff = np.diag([0.8, 1.1, 2.0, 1.0]) if affine is None else affine
    aff[:3, 3] = (-10.0, 5.0, 3.0)
    return MetaTensor(torch.as_tensor(vol)[None], affine=torch.as_tensor(aff))


def cube(t: torch.Tensor) -> np.ndarray:
    return t[0, 4:28, 4:28, 4:28].numpy().astype(np.float64)


def test_foreground_mean_of_phantom():
    assert foreground_mean(phantom()) == pytest.approx(LEVEL)
    with pytest.raises(ValueError, match="foreground"):
        foreground_mean(torch.zeros(1, 4, 4, 4))


@pytest.mark.parametrize("kind", ["gaussian", "rician"])
@pytest.mark.parametrize("snr", [20.0, 50.0])
def test_measured_snr_matches_request(kind, snr):
    x = phantom()
    y = Noise(snr, kind, seed=1)(x)
    measured = LEVEL / np.std(cube(y) - cube(x))
    assert measured == pytest.approx(snr, rel=0.03)
    assert y.meta["degradation"][-1]["sigma"] == pytest.approx(LEVEL / snr)


def test_rician_is_non_negative_with_rayleigh_background():
    x = phantom()
    snr = 20.0
    y = Noise(snr, "rician", seed=2)(x)
    assert float(y.min()) >= 0.0
    background = y[0].numpy().astype(np.float64)
    background = background[x[0].numpy() == 0]
    # magnitude of pure complex noise: Rayleigh with mean sigma * sqrt(pi / 2)
    assert background.mean() == pytest.approx(LEVEL / snr * np.sqrt(np.pi / 2), rel=0.03)
    assert float(Noise(snr, "gaussian", seed=2)(x).min()) < 0.0


def test_seed_reproduces_and_geometry_kept():
    x = phantom()
    a, b = Noise(30, "rician", seed=5)(x), Noise(30, "rician", seed=5)(x)
    c = Noise(30, "rician", seed=6)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_allclose(affine_of(a), affine_of(x))
    assert a.meta["degradation"][-1] == {
        "name": "noise",
        "kind": "rician",
        "snr": 30.0,
        "sigma": LEVEL / 30,
        "seed": 5,
    }


def test_rand_noise_draws_and_reproduces():
    x = phantom()
    a = RandNoise(snr=(20, 60), kinds=("rician", "gaussian")).set_random_state(11)
    b = RandNoise(snr=(20, 60), kinds=("rician", "gaussian")).set_random_state(11)
    assert torch.equal(a(x), b(x)) and a.params == b.params
    assert 20 <= a.params["snr"] <= 60 and a.params["kind"] in ("rician", "gaussian")
    draws = set()
    for seed in range(4):
        r = RandNoise().set_random_state(seed)
        r.randomize()
        draws.add((r.params["snr"], r.params["seed"]))
    assert len(draws) == 4
    assert RandNoise(prob=0.0)(x) is x


def test_dict_equals_array():
    x = phantom()
    d = Noised(["a", "b"], 40, "gaussian", seed=3)({"a": x, "b": x})
    ref = Noise(40, "gaussian", seed=3)(x)
    assert torch.equal(d["a"], ref) and torch.equal(d["b"], ref)
    rd = RandNoised(["a", "b"], snr=(20, 30)).set_random_state(4)({"a": x, "b": x})
    ra = RandNoise(snr=(20, 30)).set_random_state(4)(x)
    assert torch.equal(rd["a"], ra) and torch.equal(rd["b"], ra)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (Noise, {"snr": 0}, "snr"),
        (Noise, {"snr": 30, "kind": "poisson"}, "kind"),
        (Noise, {"snr": 30, "seed": -1}, "seed"),
        (Noise, {"snr": 30, "seed": 1.5}, "seed"),
        (RandNoise, {"prob": 2.0}, "prob"),
        (RandNoise, {"snr": (60, 20)}, "snr"),
        (RandNoise, {"snr": (0, 20)}, "snr"),
        (RandNoise, {"kinds": []}, "kinds"),
    ],
)
def test_bad_arguments_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


def test_random_noise_leaves_an_image_without_foreground_as_it_is():
    # a training crop of empty air: the SNR has nothing to refer to, and one crop must not stop a run
    from volsr.transforms.noise import RandNoise

    air = torch.zeros(1, 8, 8, 8)
    out = RandNoise(prob=1.0, snr=30.0)(air)
    assert torch.equal(torch.as_tensor(out), air)
    with pytest.raises(ValueError, match="positive foreground"):
        Noise(30.0)(air)  # asked for by name, the missing foreground is still an error
