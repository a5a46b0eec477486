import pytest
import torch

from volsr.geometry.orientation import coarse_axis, from_canonical, to_canonical


@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_canonical_round_trip_and_coarse_axis_last(axis):
    x = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)
    c = to_canonical(x, axis)
    if axis is not None:
        assert c.shape[-1] == x.shape[2 + axis]
    assert torch.equal(from_canonical(c, axis), x)


def test_coarse_axis_picks_largest_factor_and_none_when_isotropic():
    assert coarse_axis([1.0, 1.0, 4.0]) == 2
    assert coarse_axis([2.5, 1.0, 1.0]) == 0
    assert coarse_axis([2.0, 2.0, 2.0]) is None
