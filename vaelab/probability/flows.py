"""Invertible transforms of normalizing-flow posteriors with their log-determinants: pure
functions of tensors (the networks that produce their parameters are in :mod:`vaelab.models.posteriors`).

A flow maps z_0 ~ N(mean, diag(exp(log_var))) through z_k = f_k(z_{k-1}); the density of
z_K is log q_K(z_K) = log N(z_0) - sum_k log|det df_k/dz_{k-1}| (Rezende & Mohamed 2015, eq. 6).
Shapes: z [..., d]; each step's parameters broadcast against z.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def planar_u_hat(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a), so that
    w^T u_hat = m(w^T u) > -1 and the planar step is invertible (Rezende & Mohamed, appendix A.1).
    Returns u_hat and 1 + w^T u_hat = softplus(w^T u) itself: formed as a sum with -1 it would
    round to 0 for w^T u below about -17 (float32), where the log-determinant needs it."""
    wu = (w * u).sum(-1, keepdim=True)
    m = F.softplus(wu) - 1.0
    return u + (m - wu) * w / w.pow(2).sum(-1, keepdim=True), F.softplus(wu).squeeze(-1)


def _planar_det(a: Tensor, one_plus_w_u_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """tanh(a), h'(a) and det df/dz = 1 + h'(a) w^T u_hat, the last as h(a)^2 + h'(a) (1 + w^T u_hat):
    two terms >= 0, with none of the cancellation of 1 + h' (-1 + ...) where h' -> 1."""
    h = torch.tanh(a)
    slope = 1.0 - h.pow(2)  # h'(a) for h = tanh, in (0, 1]
    return h, slope, h.pow(2) + slope * one_plus_w_u_hat


def planar_step(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, one_plus_w_u_hat: Tensor) -> tuple[Tensor, Tensor]:
    """f(z) = z + u_hat tanh(w^T z + b) and log|det df/dz| = log|1 + h'(w^T z + b) w^T u_hat|
    (Rezende & Mohamed eq. 10-12); ``b`` and ``one_plus_w_u_hat`` are [...] (one per example), the rest [..., d]."""
    h, _, det = _planar_det((w * z).sum(-1) + b, one_plus_w_u_hat)
    return z + u_hat * h.unsqueeze(-1), torch.log(det)


def planar_solve(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, one_plus_w_u_hat: Tensor, v: Tensor) -> Tensor:
    """J^{-1} v for J = df/dz of :func:`planar_step` at z: by Sherman-Morrison, J = I + u_hat psi^T
    with psi = h'(w^T z + b) w gives J^{-1} v = v - u_hat (psi^T v) / (1 + psi^T u_hat)."""
    _, slope, det = _planar_det((w * z).sum(-1) + b, one_plus_w_u_hat)
    return v - u_hat * (slope * (w * v).sum(-1) / det).unsqueeze(-1)


def iaf_step(z: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """The numerically stable IAF update (Kingma et al. 2016, eq. 13-14 and section 3.2):
    sigma = sigmoid(s), z' = sigma * z + (1 - sigma) * m, with m and s autoregressive in z,
    so df/dz is triangular and log|det df/dz| = sum_i log sigma_i."""
    sigma = torch.sigmoid(s)
    return sigma * z + (1.0 - sigma) * m, F.logsigmoid(s).sum(-1)
