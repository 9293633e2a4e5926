"""Recognition model q(z|x): a diagonal Gaussian whose parameters an MLP computes."""

import torch
from torch import Tensor, nn

from vaelab.config.schema import Activation
from vaelab.models.mlp import mlp


class GaussianEncoder(nn.Module):
    """q(z|x) = N(z; mu(x), diag(sigma^2(x))) (Kingma & Welling eq. 9)."""

    def __init__(self, data_dim: int, hidden: list[int], latent_dim: int, activation: Activation):
        super().__init__()
        self.trunk = mlp(data_dim, hidden, activation)
        width = hidden[-1] if hidden else data_dim
        self.mean = nn.Linear(width, latent_dim)
        self.log_var = nn.Linear(width, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x), each [batch, latent_dim]."""
        h = self.trunk(x)
        return self.mean(h), self.log_var(h)


def reparameterize(mean: Tensor, log_var: Tensor, k: int) -> Tensor:
    """k samples z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling eq. 10): [k, batch, latent]."""
    eps = torch.randn((k, *mean.shape), dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * eps
