"""The mixture of diagonal Gaussians in matrix products (vaelab/probability/mixtures.py): the
direct formula's value and gradient in float64, and its rounding in float32."""

import math

import pytest
import torch
from torch import distributions as D

from vaelab.probability.densities import LOG_2PI, gaussian_log_prob
from vaelab.probability.mixtures import BLOCK_ROWS, diagonal_gaussian_mixture_log_prob

BOUND = 1e-4  # nats per point, float32 against the float64 direct formula


def direct(z, means, log_vars, log_weights):
    """log sum_k pi_k N(z; mu_k, .) by broadcasting z - mu_k over [..., K, d]: the reference."""
    return torch.logsumexp(gaussian_log_prob(z.unsqueeze(-2), means, log_vars) + log_weights, -1)


def expanded_without_float64(z, means, log_vars, log_weights):
    """The matrix-product form in z's own precision and uncentred: what the function must not be."""
    precisions = torch.exp(-log_vars)
    quadratic = (z * z) @ precisions.T - 2 * z @ (means * precisions).T + (means.pow(2) * precisions).sum(-1)
    log_norm = -0.5 * (z.shape[-1] * LOG_2PI + log_vars.sum(-1))
    return torch.logsumexp(log_weights + log_norm - 0.5 * quadratic, -1)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("shape", [(7,), (3, 400)], ids=["[batch, d]", "[k, batch, d] over blocks"])
def test_equals_the_direct_formula_and_torch_in_value_and_gradient(shape):
    K, d = 6, 4
    assert math.prod(shape) < BLOCK_ROWS or math.prod(shape) > 2 * BLOCK_ROWS  # one block, and several
    z = (2.0 * torch.randn(*shape, d)).requires_grad_()
    means, log_vars, logits = torch.randn(K, d), torch.randn(K, d), torch.randn(K)
    parameters = [z, *(t.requires_grad_() for t in (means, log_vars, logits))]
    got = diagonal_gaussian_mixture_log_prob(z, means, log_vars, torch.log_softmax(logits, 0))
    reference = direct(z, means, log_vars, torch.log_softmax(logits, 0))
    assert got.shape == shape and got.dtype == torch.float64
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-10)
    mixture = D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Normal(means, torch.exp(0.5 * log_vars)), 1))
    torch.testing.assert_close(got, mixture.log_prob(z), rtol=0, atol=1e-10)
    for grad, expected in zip(torch.autograd.grad(got.sum(), parameters), torch.autograd.grad(reference.sum(), parameters)):
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # the path that overwrites its blocks in place
        torch.testing.assert_close(diagonal_gaussian_mixture_log_prob(z, means, log_vars, torch.log_softmax(logits, 0)), got, rtol=0, atol=1e-12)


@pytest.mark.usefixtures("float64")
def test_unnormalised_and_zero_weights_are_added_as_given():
    z, means, log_vars = torch.randn(5, 3), torch.randn(4, 3), torch.randn(4, 3)
    log_weights = torch.tensor([0.3, -math.inf, 2.0, -1.0])  # a component of weight 0, a total not 1
    torch.testing.assert_close(
        diagonal_gaussian_mixture_log_prob(z, means, log_vars, log_weights), direct(z, means, log_vars, log_weights), rtol=0, atol=1e-10
    )
    nothing = torch.full((4,), -math.inf)
    assert (diagonal_gaussian_mixture_log_prob(z, means, log_vars, nothing) == -math.inf).all()


def mixture_case(log_var: float, spread: float, n: int = 2000, K: int = 500, d: int = 20):
    """K components N(mu_k, diag(exp(s_k))), mu ~ N(0, spread^2 I), s ~ log_var +- 0.5, the
    VampPrior's K and d, and n points each drawn from a component: z near a narrow component,
    where the expanded form's terms cancel."""
    generator = torch.Generator().manual_seed(0)
    means = spread * torch.randn(K, d, generator=generator)
    log_vars = log_var + 0.5 * torch.randn(K, d, generator=generator)
    pick = torch.randint(K, (n,), generator=generator)
    z = means[pick] + torch.exp(0.5 * log_vars[pick]) * torch.randn(n, d, generator=generator)
    return z, means, log_vars, torch.full((K,), -math.log(K))


CASES = [(-1.0, 1.0), (-4.0, 1.5), (-10.0, 3.0)]  # log-variance around, spread of the means


@pytest.mark.parametrize("log_var, spread", CASES, ids=[f"log_var {v}, spread {s}" for v, s in CASES])
def test_float32_is_within_the_bound_of_the_float64_direct_formula(log_var, spread):
    """Per point, float32 against the float64 direct formula: at most 1e-4 nats and one ulp of
    the result. Measured (docs/speed.md#mixture-priors: log-variances -10 to -2 and means spread
    1 to 3 at K=500, d=20, and 1-epoch VampPrior and mixture-prior models): half an ulp, at most
    3.8e-6 nats for |log p| < 64. The uncentred float32 expanded form exceeds 1e-4 from
    log-variances of about -2 (2.1 nats at -10, spread 3): the test can fail."""
    z, means, log_vars, log_weights = mixture_case(log_var, spread)
    reference = direct(z.double(), means.double(), log_vars.double(), log_weights.double())
    got = diagonal_gaussian_mixture_log_prob(z, means, log_vars, log_weights)
    assert got.dtype == torch.float32
    error = (got.double() - reference).abs()
    assert error.max() <= BOUND
    ulp = torch.nextafter(got.abs(), torch.tensor(math.inf)) - got.abs()
    assert (error <= ulp.double()).all()
    if log_var <= -4.0:
        naive = (expanded_without_float64(z, means, log_vars, log_weights).double() - reference).abs().max()
        assert naive > BOUND, naive
