"""Invertible transforms of normalizing-flow posteriors with their log-determinants: pure
functions of tensors (the networks that produce their parameters are in :mod:`vaelab.models.flows`).

A flow maps z_0 ~ N(mean, diag(exp(log_var))) through z_k = f_k(z_{k-1}); the density of
z_K is log q_K(z_K) = log N(z_0) - sum_k log|det df_k/dz_{k-1}| (Rezende & Mohamed 2015, eq. 6).
Shapes: z [..., d]; each step's parameters broadcast against z.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def planar_u_hat(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a), and w^T u_hat =
    m(w^T u) >= -1, so that the planar step is invertible (Rezende & Mohamed, appendix A.1).
    w^T u_hat is returned as m(w^T u) itself: the dot product would round below -1."""
    wu = (w * u).sum(-1, keepdim=True)
    m = F.softplus(wu) - 1.0
    return u + (m - wu) * w / w.pow(2).sum(-1, keepdim=True), m.squeeze(-1)


def planar_step(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, w_u_hat: Tensor) -> tuple[Tensor, Tensor]:
    """f(z) = z + u_hat tanh(w^T z + b) and log|det df/dz| = log|1 + h'(w^T z + b) w^T u_hat|
    (Rezende & Mohamed eq. 10-12); ``b`` and ``w_u_hat`` are [...] (one per example), the rest [..., d]."""
    a = (w * z).sum(-1) + b
    h = torch.tanh(a)
    slope = 1.0 - h.pow(2)  # h'(a) for h = tanh, in (0, 1]
    # 1 + h' w^T u_hat >= 1 - h' >= 0 since w^T u_hat >= -1, so log1p needs no abs
    return z + u_hat * h.unsqueeze(-1), torch.log1p(slope * w_u_hat)


def planar_solve(z: Tensor, u_hat: Tensor, w: Tensor, b: Tensor, w_u_hat: Tensor, v: Tensor) -> Tensor:
    """J^{-1} v for J = df/dz of :func:`planar_step` at z: by Sherman-Morrison, J = I + u_hat psi^T
    with psi = h'(w^T z + b) w gives J^{-1} v = v - u_hat (psi^T v) / (1 + psi^T u_hat)."""
    slope = 1.0 - torch.tanh((w * z).sum(-1) + b).pow(2)
    coefficient = slope * (w * v).sum(-1) / (1.0 + slope * w_u_hat)
    return v - u_hat * coefficient.unsqueeze(-1)


def iaf_step(z: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """The numerically stable IAF update (Kingma et al. 2016, eq. 13-14 and section 3.2):
    sigma = sigmoid(s), z' = sigma * z + (1 - sigma) * m, with m and s autoregressive in z,
    so df/dz is triangular and log|det df/dz| = sum_i log sigma_i."""
    sigma = torch.sigmoid(s)
    return sigma * z + (1.0 - sigma) * m, F.logsigmoid(s).sum(-1)
