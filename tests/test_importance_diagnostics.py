"""The importance-sampling diagnostics on weights whose answer is known in closed form."""

import math

import pytest
import torch

from vaelab.probability.bounds import ImportanceEstimates
from vaelab.probability.importance_diagnostics import effective_sample_size, pareto_k, tail_length


def test_effective_sample_size_of_equal_and_of_one_dominant_weight():
    equal = torch.zeros(50, 1)
    dominant = torch.tensor([[0.0], [-800.0], [-900.0]])  # would underflow exp in float64
    assert effective_sample_size(equal).item() == pytest.approx(50.0, rel=1e-12)
    assert effective_sample_size(dominant).item() == pytest.approx(1.0, rel=1e-12)
    assert effective_sample_size(equal + 1000.0).item() == pytest.approx(50.0, rel=1e-12)  # no overflow


def test_effective_sample_size_of_log_normal_weights_matches_its_limit():
    # log w ~ N(0, s^2): ESS / S -> E[w]^2 / E[w^2] = exp(-s^2); Monte Carlo error well under 2% at this S
    generator = torch.Generator().manual_seed(0)
    s = 0.8
    log_w = s * torch.randn(400_000, 3, generator=generator, dtype=torch.float64)
    fraction = effective_sample_size(log_w) / len(log_w)
    torch.testing.assert_close(fraction, torch.full((3,), math.exp(-s * s), dtype=torch.float64), rtol=0.02, atol=0)


def test_tail_length_is_psis_rule():
    assert [tail_length(s) for s in (10, 100, 5000)] == [2, 20, 213]


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_pareto_k_recovers_the_shape_of_generalized_pareto_weights(shape):
    # w = (U^-k - 1) / k is generalized Pareto with shape k; a fit on the ~950 largest of 10^5 is within 0.1
    generator = torch.Generator().manual_seed(1)
    u = torch.rand(100_000, 4, generator=generator, dtype=torch.float64)
    log_w = torch.log((u.pow(-shape) - 1) / shape)
    k_hat = pareto_k(log_w)
    assert k_hat.shape == (4,)
    assert (k_hat - shape).abs().max().item() < 0.1, k_hat


def test_pareto_k_separates_light_from_heavy_tails_at_5000_samples():
    generator = torch.Generator().manual_seed(2)
    light = 0.3 * torch.randn(5000, 8, generator=generator, dtype=torch.float64)  # all moments finite
    heavy = -1.25 * torch.log(torch.rand(5000, 8, generator=generator, dtype=torch.float64))  # Pareto, k = 1.25
    assert pareto_k(light).max().item() < 0.5
    assert pareto_k(heavy).min().item() > 0.7
    assert pareto_k(heavy + 700.0).allclose(pareto_k(heavy))  # scale-free, no overflow


def test_pareto_k_refuses_too_few_weights():
    with pytest.raises(ValueError, match="at least 10"):
        pareto_k(torch.zeros(9, 1))


def test_streamed_estimates_give_the_diagnostics_of_all_their_weights():
    # chunks of any size, and samples past S (for the L_k) that the diagnostics must not see
    generator = torch.Generator().manual_seed(3)
    log_w = 2.0 * torch.randn(530, 5, generator=generator, dtype=torch.float64)
    estimates = ImportanceEstimates(500, iwae_k=[530])
    for chunk in log_w.split(37):
        estimates.add(chunk)
    torch.testing.assert_close(estimates.ess, effective_sample_size(log_w[:500]), rtol=1e-12, atol=0)
    torch.testing.assert_close(estimates.pareto_k, pareto_k(log_w[:500]), rtol=1e-12, atol=0)
    assert not torch.allclose(estimates.pareto_k, pareto_k(log_w))


def test_too_few_samples_for_a_pareto_fit_give_none():
    estimates = ImportanceEstimates(5)
    estimates.add(torch.zeros(5, 2))
    assert estimates.pareto_k is None
    assert estimates.ess.tolist() == pytest.approx([5.0, 5.0])


def test_the_warning_names_the_heavy_tailed_images_and_the_remedy():
    from vaelab.evaluation.scores import importance_diagnostics, unreliable_estimate_warning

    k = torch.tensor([0.2, 0.75, 0.9, 0.5], dtype=torch.float64)
    diagnostics = importance_diagnostics(torch.tensor([3.0, 1.0, 4.0, 2.0]), k)
    assert diagnostics["ess_min"] == 1.0 and diagnostics["ess_mean"] == 2.5
    assert diagnostics["pareto_k_max"] == 0.9 and diagnostics["pareto_k_above_0.7"] == 2
    line = unreliable_estimate_warning(diagnostics, 5000, 4)
    assert "on 2 of 4 images" in line and "up to 0.90" in line and "eval.ll_samples" in line and "\\n" not in line
    assert unreliable_estimate_warning(importance_diagnostics(torch.ones(4), k.clamp(max=0.7)), 5000, 4) is None
    assert unreliable_estimate_warning(diagnostics, 99, 4) is None  # a tail of < 20 weights says too little
    assert unreliable_estimate_warning(diagnostics, 100, 4) is not None  # 100 samples: judged


def test_the_bound_order_is_checked_in_order_of_k_and_its_break_named():
    from vaelab.evaluation.scores import bound_order, bound_order_warning

    good = bound_order(-110.0, {50: -107.0, 5: -108.5}, -106.0, 5000)
    assert good["chain"] == "L_1 <= L_5 <= L_50 <= L_5000" and good["holds"] and bound_order_warning(good) is None
    assert list(good["values"].values()) == [-110.0, -108.5, -107.0, -106.0]
    bad = bound_order(-110.0, {50: -105.5}, -106.0, 5000)
    assert not bad["holds"]
    line = bound_order_warning(bad)
    assert "L_50 -105.50 > L_5000 -106.00" in line and "eval.ll_samples" in line
