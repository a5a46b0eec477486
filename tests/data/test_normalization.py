import numpy as np
import torch

from volsr.data.normalization import PercentileNormalizer


def test_percentiles_map_to_zero_and_one_and_invert_exactly():
    x = torch.arange(1001, dtype=torch.float32) * 2 - 500  # -500..1500, like CT in HU
    n = PercentileNormalizer(lower=0.5, upper=99.5)
    lo, hi = n.fit(x)
    assert np.isclose(lo, np.percentile(x.numpy(), 0.5)) and np.isclose(hi, np.percentile(x.numpy(), 99.5))
    y = n.normalize(x, lo, hi)
    assert torch.allclose(n.denormalize(y, lo, hi), x, atol=1e-3)


def test_constant_volume_does_not_divide_by_zero():
    n = PercentileNormalizer()
    lo, hi = n.fit(torch.full((10, 10), 3.0))
    assert hi > lo
    assert torch.isfinite(n.normalize(torch.full((10, 10), 3.0), lo, hi)).all()
