"""Flow posteriors (``posterior=planar|iaf``), in float64 on models with a 3-dimensional z:

* log q_K(z|x) from the noise equals the brute-force change of variables, log N(z_0) minus
  log|det| of the autograd Jacobian of the whole flow (tolerance 1e-10: float64 rounding);
* the planar step's invertibility condition w^T u_hat = m(w^T u) >= -1 (Rezende & Mohamed,
  appendix A.1), also for w^T u far below -1;
* IAF's Jacobian of one step is triangular (autoregressive), in the reversed order for odd steps;
* the stopped log q of ``stl``/``dreg`` has the value of log q and the gradient in z of the
  exact log q(z) (brute force: J^{-T} grad_{z_0} of log N(z_0) - log|det J(z_0)|), and none to q's
  parameters directly (tolerance 1e-9);
* ``stl`` (ELBO) and ``dreg`` (IWAE) with a flow posterior have the mean gradient of ``reparam``
  in every parameter tensor (paired t of 12 groups of draws below 5, as tests/test_estimators.py;
  seeds fixed), and differ from it draw by draw in the posterior's tensors.
"""

import dataclasses

import math

import pytest
import torch

from tests.helpers.gradients import gradient_groups, paired_t

from vaelab.config.schema import (
    Estimator, KLMode, ModelConfig, PosteriorConfig, StochasticLayerConfig,
)
from vaelab.models.vae import VAE
from vaelab.probability.densities import gaussian_log_prob
from vaelab.probability.flows import planar_step, planar_u_hat

pytestmark = pytest.mark.usefixtures("float64")

LATENT, DATA, BATCH = 3, 4, 3


def flow_vae(name: str, length: int = 3) -> VAE:
    cfg = ModelConfig(decoder="gaussian", sigma=0.7, latent_dim=LATENT, hidden=[5], kl=KLMode.mc)
    posterior = PosteriorConfig(name=name, flow_length=length, iaf_hidden=[6, 6], context=2)
    torch.manual_seed(0)
    vae = VAE(cfg, DATA, posterior=posterior)
    with torch.no_grad():  # away from zero-initialised biases, so every step bends z
        for p in vae.encoders[0].parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae


def flow_map(q):
    """z_0 -> z_K along the flow of the distribution q."""
    def forward(z0):
        for step in q.steps:
            z0 = step.forward(z0)[0]
        return z0
    return forward


def jacobian_blocks(fn, z0: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """d z_K / d z_0 of each example, [batch, d, d] (the examples do not interact)."""
    full = torch.autograd.functional.jacobian(fn, z0, create_graph=create_graph)  # [B, d, B, d]
    return torch.stack([full[i, :, i, :] for i in range(len(z0))])


def brute_log_q(q, z0: torch.Tensor) -> torch.Tensor:
    """log N(z_0; mu, sigma^2) - log|det dz_K/dz_0|, the Jacobian by autograd."""
    jacobian = jacobian_blocks(flow_map(q), z0, create_graph=True)
    return gaussian_log_prob(z0, q.base.mean, q.base.log_var) - torch.linalg.slogdet(jacobian)[1]


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_log_q_is_the_change_of_variables_of_the_whole_flow(name):
    vae = flow_vae(name)
    x = torch.randn(BATCH, DATA)
    q = vae.encoders[0].distribution(vae.encode(x))
    z, noise = q.rsample()
    assert torch.allclose(flow_map(q)(noise.inputs[0]), z, atol=1e-12)
    expected = brute_log_q(q, noise.inputs[0])
    assert torch.allclose(q.log_prob_of_noise(noise), expected, rtol=0, atol=1e-10)
    assert not torch.allclose(expected, q.base.log_prob_of_noise(noise.eps), atol=1e-3)  # the log-dets matter


def test_planar_u_hat_keeps_w_u_hat_above_minus_one():
    u, w = torch.randn(1000, 5) * 3, torch.randn(1000, 5) * 3
    u[:500] = -5 * w[:500]  # w^T u far below -1: the raw u would make the step non-invertible
    wu = (w * u).sum(-1)
    u_hat, one_plus_w_u_hat = planar_u_hat(u, w)
    assert torch.allclose(1 + (w * u_hat).sum(-1), one_plus_w_u_hat, rtol=0, atol=1e-10 * (1 + wu.abs().max()))
    assert torch.equal(one_plus_w_u_hat, torch.nn.functional.softplus(wu))
    assert (one_plus_w_u_hat >= 0).all() and (wu[:500] < -1).all()
    assert (one_plus_w_u_hat[wu > -700] > 0).all()  # w^T u_hat > -1 strictly, until e^(w^T u) underflows


def test_a_nearly_singular_planar_step_keeps_a_finite_log_determinant_in_float32():
    # w^T u = -40 (1 + w^T u_hat = e^-40) at w^T z + b = 1e-5: det = h^2 + h' e^-40 ~ 1e-10, not 1 + (-1) = 0
    w = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
    u = torch.tensor([[-40.0, 0.0]], dtype=torch.float32)
    z = torch.tensor([[1e-5, 0.3]], dtype=torch.float32)
    u_hat, one_plus_w_u_hat = planar_u_hat(u, w)
    _, log_det = planar_step(z, u_hat, w, torch.zeros(1, dtype=torch.float32), one_plus_w_u_hat)
    assert log_det.dtype == torch.float32
    exact = math.log(math.tanh(1e-5) ** 2 + (1 - math.tanh(1e-5) ** 2) * math.exp(-40))
    assert torch.isfinite(log_det).all() and log_det.item() == pytest.approx(exact, rel=1e-5)


def test_iaf_steps_are_autoregressive_in_alternating_orders():
    vae = flow_vae("iaf", length=2)
    q = vae.encoders[0].distribution(vae.encode(torch.randn(BATCH, DATA)))
    z0 = q.base.rsample()[0]
    first = jacobian_blocks(lambda z: q.steps[0].forward(z)[0], z0)
    second = jacobian_blocks(lambda z: q.steps[1].forward(z)[0], z0)
    assert first.triu(1).abs().max() == 0 and first.tril(-1).abs().max() > 1e-3
    assert second.tril(-1).abs().max() == 0 and second.triu(1).abs().max() > 1e-3
    # log|det| = sum log sigma, the diagonal of the triangular Jacobian
    assert torch.allclose(torch.linalg.slogdet(first)[1], q.steps[0].forward(z0)[1], atol=1e-12)


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_stopped_log_q_has_the_exact_value_and_gradient_in_z(name):
    vae = flow_vae(name)
    q = vae.encoders[0].distribution(vae.encode(torch.randn(BATCH, DATA)))
    z, noise = q.rsample()
    z = z.detach().requires_grad_()
    stopped = q.stopped_log_prob(z, noise)
    assert torch.allclose(stopped, q.log_prob_of_noise(noise), rtol=0, atol=1e-10)
    parameters = list(vae.encoders[0].parameters())
    grads = torch.autograd.grad(stopped.sum(), [z, *parameters], allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in grads[1:]), "stopped log q reaches q's parameters"
    z0 = noise.inputs[0].detach().requires_grad_()
    (grad_z0,) = torch.autograd.grad(brute_log_q(q, z0).sum(), z0)
    jacobian = jacobian_blocks(flow_map(q), z0.detach())
    expected = torch.linalg.solve(jacobian.transpose(-1, -2), grad_z0.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(grads[0], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "name, estimator, objective, k",
    [("planar", "stl", "elbo", 3), ("planar", "dreg", "iwae", 4), ("iaf", "stl", "elbo", 3), ("iaf", "dreg", "iwae", 4)],
)
def test_estimator_has_the_mean_of_reparam_with_a_flow(name, estimator, objective, k):
    vae = flow_vae(name, length=2)
    x = torch.randn(2, DATA)
    cfg = dataclasses.replace(vae.cfg, objective=objective, k=k)
    reference = gradient_groups(vae, x, cfg, seed=1, groups=12, draws=150)
    candidate = gradient_groups(vae, x, dataclasses.replace(cfg, estimator=Estimator(estimator)), seed=1, groups=12, draws=150)
    failing = {n: round(float(t.abs().max()), 1) for n, t in paired_t(candidate, reference).items() if not t.abs().max() < 5}
    assert not failing, f"|t| >= 5 in: {failing}"
    posterior = [n for n in candidate if n.startswith("encoders.0.") and "trunk" not in n and "mask" not in n]
    same = [n for n in posterior if not (candidate[n] - reference[n]).abs().max() > 1e-4]
    assert not same, f"equal to reparam's draw by draw: {same}"


def test_in_a_hierarchy_the_flow_feeds_the_layer_above_and_the_top_kl_stays_closed_form():
    cfg = ModelConfig(
        decoder="gaussian", sigma=0.7, latent_dim=LATENT, hidden=[5], upper_layers=[StochasticLayerConfig(hidden=[4], latent_dim=2)]
    )
    vae = VAE(cfg, DATA, posterior=PosteriorConfig(name="planar", flow_length=2))
    assert vae.has_closed_form_kl and not flow_vae("planar").has_closed_form_kl
    x = torch.randn(BATCH, DATA)
    torch.manual_seed(1)
    sample = vae.sample_latents(x, 2)
    torch.manual_seed(1)
    q = vae.encoders[0].distribution(vae.encode(x))
    z1, noise = q.rsample(2)
    above = vae.encoders[1].distribution(vae.encoders[1](z1))
    z2, eps2 = above.rsample()
    assert torch.equal(sample.zs[0], z1) and torch.equal(sample.zs[1], z2)
    assert torch.allclose(sample.log_q, q.log_prob_of_noise(noise) + above.log_prob_of_noise(eps2), atol=1e-12)
    # the VampPrior's components follow the mean path: the flow of the base mean, then the layer above
    expected = vae.encoders[1](q.mean)
    along = vae.top_posterior_along_means(x)
    assert torch.equal(along.mean, expected[0]) and torch.equal(along.log_var, expected[1])
