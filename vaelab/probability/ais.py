"""Annealed importance sampling (Neal 2001) with HMC transitions, and its reverse for BDMC.

The intermediate distributions are pi_beta(z) ∝ p(z) p(x|z)^beta on a schedule
0 = beta_0 < ... < beta_T = 1: pi_0 is the prior, pi_1 the posterior p(z|x), and the product
of the ratios f_t(z_{t-1}) / f_{t-1}(z_{t-1}) = p(x|z_{t-1})^(beta_t - beta_{t-1}) along a
chain is an unbiased estimate of p(x) (Neal 2001 eq. 11), so its log, averaged over chains
inside the log, is a stochastic lower bound of log p(x) (Wu et al. 2017, "On the quantitative
analysis of decoder-based generative models", section 2). Run from beta = 1 to 0, started at an
exact posterior sample, the same product estimates 1/p(x): minus its log is a stochastic upper
bound (Grosse, Ghahramani & Adams 2015, BDMC, section 3).

Everything here is over two functions of a flat latent z [..., d] (d: all layers side by side):
``log_prior(z)`` and ``log_likelihood(z)``, each [...]; the VAE's are in
:mod:`vaelab.evaluation.ais_scores`. The random draws come from torch's global generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

LogDensity = Callable[[Tensor], Tensor]

TARGET_ACCEPTANCE = 0.65  # HMC's optimal acceptance rate (Neal 2011, section 4.4), Wu et al.'s target
ADAPTATION_RATE = 0.05  # log step size moves by this times (acceptance - target) per transition
STEP_SIZE_RANGE = (1e-4, 1.0)


def sigmoid_schedule(steps: int, delta: float = 4.0) -> Tensor:
    """beta_0 = 0, ..., beta_steps = 1 (float64): the sigmoid schedule of Grosse, Maddison &
    Salakhutdinov 2013 (section 6), sigma(delta (2t/T - 1)) rescaled to [0, 1], denser at both
    ends, where log p(x|z)^beta changes fastest."""
    if steps < 1:
        raise ValueError(f"an AIS schedule needs at least one step, got {steps}")
    s = torch.sigmoid(delta * (2.0 * torch.arange(steps + 1, dtype=torch.float64) / steps - 1.0))
    return (s - s[0]) / (s[-1] - s[0])


class AnnealingResult(NamedTuple):
    """Per chain ([chains, ...] each): the accumulated log-weight, the mean HMC acceptance
    probability over the transitions, the final step size; and the final states z."""

    log_weights: Tensor
    acceptance: Tensor
    step_size: Tensor
    z: Tensor


class Point(NamedTuple):
    """log p(z), log p(x|z) and their gradients at z, computed once per leapfrog position."""

    z: Tensor
    log_prior: Tensor
    log_likelihood: Tensor
    grad_prior: Tensor
    grad_likelihood: Tensor

    def potential(self, beta: float) -> Tensor:
        return -(self.log_prior + beta * self.log_likelihood)

    def grad_potential(self, beta: float) -> Tensor:
        return -(self.grad_prior + beta * self.grad_likelihood)


def point_at(z: Tensor, log_prior: LogDensity, log_likelihood: LogDensity) -> Point:
    # gradients w.r.t. z only, also when the caller runs under no_grad (inference_mode cannot be undone)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        prior, likelihood = log_prior(z), log_likelihood(z)
        grad_prior = (
            torch.autograd.grad(prior.sum(), z, retain_graph=True)[0] if prior.requires_grad else torch.zeros_like(z)
        )  # a prior that does not depend on z has none
        grad_likelihood = torch.autograd.grad(likelihood.sum(), z)[0]
    return Point(z.detach(), prior.detach(), likelihood.detach(), grad_prior, grad_likelihood)


def hmc_step(
    point: Point, beta: float, step_size: Tensor, leapfrog: int, log_prior: LogDensity, log_likelihood: LogDensity
) -> tuple[Point, Tensor]:
    """One HMC transition (Neal 2011, section 5.3) leaving pi_beta invariant: ``leapfrog`` steps
    of size ``step_size`` [..., 1] with momentum ~ N(0, I), then Metropolis. Returns the new
    point and each chain's acceptance probability [...]."""
    momentum = torch.randn_like(point.z)
    start_energy = point.potential(beta) + 0.5 * momentum.square().sum(-1)
    current = point
    p = momentum - 0.5 * step_size * current.grad_potential(beta)
    for step in range(leapfrog):
        current = point_at(current.z + step_size * p, log_prior, log_likelihood)
        p = p - (step_size if step < leapfrog - 1 else 0.5 * step_size) * current.grad_potential(beta)
    end_energy = current.potential(beta) + 0.5 * p.square().sum(-1)
    log_ratio = torch.nan_to_num(start_energy - end_energy, nan=-math.inf)  # a diverged trajectory is rejected
    acceptance = log_ratio.clamp(max=0.0).exp()
    accept = torch.rand_like(acceptance) < acceptance
    kept = (torch.where(accept.reshape(accept.shape + (1,) * (new.dim() - accept.dim())), new, old) for new, old in zip(current, point))
    return Point(*kept), acceptance


def anneal(
    z: Tensor,
    log_prior: LogDensity,
    log_likelihood: LogDensity,
    betas: Tensor,
    leapfrog: int = 10,
    step_size: float = 0.05,
    adapt: bool = True,
) -> AnnealingResult:
    """AIS along ``betas`` from the states ``z`` [chains, ..., d] (samples of pi_{betas[0]}).

    At each t: log w += (beta_t - beta_{t-1}) log p(x|z) at the current z, then one HMC transition
    for pi_{beta_t}. Increasing betas from 0 with z from the prior: forward AIS, E[exp(log w)] =
    p(x). Decreasing from 1 with z an exact posterior sample: reverse AIS, E[exp(log w)] = 1/p(x).
    With ``adapt``, each chain's step size moves toward an acceptance rate of 0.65 (Wu et al.):
    it depends only on that chain's past, so every transition still leaves its pi_beta invariant.
    """
    point = point_at(z, log_prior, log_likelihood)
    log_w = torch.zeros_like(point.log_likelihood)
    size = torch.full((*log_w.shape, 1), step_size, dtype=z.dtype, device=z.device)
    acceptance_sum = torch.zeros_like(log_w)
    schedule = betas.tolist()
    for previous, beta in zip(schedule[:-1], schedule[1:]):
        log_w = log_w + (beta - previous) * point.log_likelihood
        point, acceptance = hmc_step(point, beta, size, leapfrog, log_prior, log_likelihood)
        acceptance_sum = acceptance_sum + acceptance
        if adapt:
            size = (size * torch.exp(ADAPTATION_RATE * (acceptance - TARGET_ACCEPTANCE))[..., None]).clamp(*STEP_SIZE_RANGE)
    return AnnealingResult(log_w, acceptance_sum / (len(schedule) - 1), size[..., 0], point.z)


def log_mean_exp(log_w: Tensor, dim: int = 0) -> Tensor:
    """log (1/n) sum_i exp(log_w_i) along ``dim``, stably."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def ais_log_marginal(forward: AnnealingResult) -> Tensor:
    """log p-hat(x) from forward AIS: logmeanexp over the chains (dim 0), a stochastic lower bound."""
    return log_mean_exp(forward.log_weights)


def reverse_ais_upper_bound(reverse: AnnealingResult) -> Tensor:
    """-log (1/p)-hat(x) from reverse AIS: minus logmeanexp over the chains, a stochastic upper bound."""
    return -log_mean_exp(reverse.log_weights)
