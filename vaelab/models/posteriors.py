"""A diagonal Gaussian whose mean and variance an MLP computes from its input.

It is the recognition model q(z|x) (Kingma & Welling eq. 9) and, in a hierarchy of
stochastic layers (Burda et al. section 5), each q(z_{l+1}|z_l) and each p(z_l|z_{l+1}).
"""

import torch
from torch import Tensor, nn

from vaelab.config.schema import Activation
from vaelab.models.mlp import mlp


class GaussianLayer(nn.Module):
    """N(mean(h), diag(exp(log_var(h)))) with an MLP trunk from the input h."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int, activation: Activation):
        super().__init__()
        self.trunk = mlp(in_features, hidden, activation)
        width = hidden[-1] if hidden else in_features
        self.mean = nn.Linear(width, out_features)
        self.log_var = nn.Linear(width, out_features)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance, each [..., out_features]."""
        h = self.trunk(h)
        return self.mean(h), self.log_var(h)


def reparameterize_with_noise(mean: Tensor, log_var: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
    """z = mean + sigma * eps, eps ~ N(0, I) (Kingma & Welling eq. 10), and eps.

    With ``k``, k samples stacked in a new leading dimension: [k, *mean.shape]; without,
    one sample of the same shape as ``mean`` (mean may already carry a sample dimension).
    """
    shape = mean.shape if k is None else (k, *mean.shape)
    eps = torch.randn(shape, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * eps, eps


def reparameterize(mean: Tensor, log_var: Tensor, k: int | None = None) -> Tensor:
    """z = mean + sigma * eps, as :func:`reparameterize_with_noise`, without eps."""
    return reparameterize_with_noise(mean, log_var, k)[0]
