import math

import torch

from volsr.evaluation.metrics import compare, foreground_mask, masked_psnr, masked_ssim


def test_psnr_of_known_error_inside_mask():
    ref = torch.zeros(1, 16, 16, 16)
    ref[0, 4:12, 4:12, 4:12] = 1.0
    mask = foreground_mask(ref)
    pred = ref.clone()
    pred[0][mask] += 0.1  # error 0.1 everywhere inside, MSE 0.01 -> 20 dB at range 1
    pred[0][~mask] += 5.0  # background errors are outside the mask and must not count
    assert math.isclose(masked_psnr(pred, ref, mask), 20.0, abs_tol=1e-4)


def test_ssim_is_one_for_identical_and_lower_for_noisy():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 20, 20, 20, generator=g)
    mask = torch.ones(20, 20, 20, dtype=torch.bool)
    assert math.isclose(masked_ssim(ref, ref, mask), 1.0, abs_tol=1e-5)
    noisy = ref + 0.3 * torch.randn(1, 20, 20, 20, generator=g)
    assert masked_ssim(noisy, ref, mask) < 0.9


def test_compare_is_invariant_to_intensity_units():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 16, 16, 16, generator=g) * 100
    pred = ref + torch.randn(1, 16, 16, 16, generator=g)
    a = compare(pred, ref)
    b = compare(pred * 7 + 3, ref * 7 + 3)  # scanner units change, scores must not
    assert math.isclose(a["psnr"], b["psnr"], rel_tol=1e-4)
    assert math.isclose(a["ssim"], b["ssim"], rel_tol=1e-4)


def test_sharpness_ratio_is_one_for_reference_and_below_one_when_blurred():
    from volsr.evaluation.metrics import sharpness_ratio

    g = torch.Generator().manual_seed(2)
    ref = torch.rand(1, 20, 20, 20, generator=g)
    mask = torch.ones(20, 20, 20, dtype=torch.bool)
    assert math.isclose(sharpness_ratio(ref, ref, mask), 1.0, rel_tol=1e-6)
    blurred = torch.nn.functional.avg_pool3d(ref[None], 3, stride=1, padding=1)[0]
    assert sharpness_ratio(blurred, ref, mask) < 0.6
    assert math.isclose(sharpness_ratio(2 * ref, ref, mask), 2.0, rel_tol=1e-6)  # gradients scale linearly


def test_error_rank_correlation_is_one_for_a_map_that_orders_the_errors_and_ignores_the_air():
    from volsr.evaluation.metrics import error_rank_correlation

    g = torch.Generator().manual_seed(0)
    ref = torch.zeros(1, 16, 16, 16)
    ref[0, 3:13, 3:13, 3:13] = 1.0 + torch.rand(10, 10, 10, generator=g)
    pred = ref + 0.2 * torch.randn(ref.shape, generator=g)
    error = (pred - ref).abs()
    inside = foreground_mask(ref / ref.max())
    wrong_outside = torch.where(inside, error, 5.0 - error)  # in the air the map says the opposite
    assert math.isclose(error_rank_correlation(wrong_outside, pred, ref), 1.0, abs_tol=1e-9)
    assert math.isclose(error_rank_correlation(-error, pred, ref), -1.0, abs_tol=1e-9)
    assert math.isclose(error_rank_correlation(7.0 * error.sqrt(), pred, ref), 1.0, abs_tol=1e-9)  # ranks
    unrelated = torch.rand(ref.shape, generator=g)
    assert abs(error_rank_correlation(unrelated, pred, ref)) < 0.1
    assert error_rank_correlation(torch.full_like(ref, 3.0), pred, ref) == 0.0  # orders nothing


def test_high_frequency_power_ratio_of_a_known_sum_of_cosines():
    from volsr.evaluation.metrics import high_frequency_power_ratio

    z = torch.arange(32, dtype=torch.float64)
    low, high = torch.cos(2 * math.pi * 2 * z / 32), torch.cos(2 * math.pi * 12 * z / 32)  # 1/16, 3/8 cycle
    ref = (10.0 + low + high).expand(1, 4, 4, 32).float()
    half = (10.0 + low + 0.5 * high).expand(1, 4, 4, 32).float()  # half the amplitude: a quarter the power
    assert math.isclose(high_frequency_power_ratio(ref, ref, axis=2, cutoff=0.125), 1.0, rel_tol=1e-9)
    assert math.isclose(high_frequency_power_ratio(half, ref, axis=2, cutoff=0.125), 0.25, rel_tol=1e-4)
