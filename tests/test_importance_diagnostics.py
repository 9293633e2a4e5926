"""The importance-sampling diagnostics on weights whose answer is known in closed form."""

import math

import pytest
import torch

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
