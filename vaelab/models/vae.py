"""The variational autoencoder: encoder q(z|x), prior p(z) = N(0, I), decoder p(x|z)."""

from torch import Tensor, nn

from vaelab.config.schema import KLMode, ModelConfig, Objective
from vaelab.models.decoders import build_decoder
from vaelab.models.encoder import GaussianEncoder, reparameterize
from vaelab.models.mlp import glorot_init_
from vaelab.probability.bounds import importance_sampled_log_likelihood, iwae_bound
from vaelab.probability.densities import (
    gaussian_log_prob,
    kl_to_standard_normal,
    standard_normal_log_prob,
)


class VAE(nn.Module):
    """Auto-Encoding Variational Bayes model; every bound is per example, in nats."""

    def __init__(self, cfg: ModelConfig, data_dim: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = GaussianEncoder(data_dim, cfg.hidden, cfg.latent_dim, cfg.activation)
        self.decoder = build_decoder(cfg, data_dim)
        self.apply(glorot_init_)

    def log_weights(self, x: Tensor, k: int, posterior: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x) for k samples z ~ q(z|x): [k, batch]."""
        mean, log_var = self.encoder(x) if posterior is None else posterior
        z = reparameterize(mean, log_var, k)
        return self.decoder.log_prob(x, z) + standard_normal_log_prob(z) - gaussian_log_prob(z, mean, log_var)

    def elbo(self, x: Tensor, k: int, kl: KLMode) -> Tensor:
        """SGVB estimate of the ELBO averaged over k samples: [batch].

        ``analytic``: mean_k log p(x|z) - KL(q||p) (Kingma & Welling eq. 10);
        ``mc``: mean_k log w (eq. 7).
        """
        if kl is KLMode.mc:
            return self.log_weights(x, k).mean(0)
        mean, log_var = self.encoder(x)
        z = reparameterize(mean, log_var, k)
        return self.decoder.log_prob(x, z).mean(0) - kl_to_standard_normal(mean, log_var)

    def iwae(self, x: Tensor, k: int) -> Tensor:
        """Importance-weighted bound with k samples (Burda et al. eq. 8): [batch]."""
        return iwae_bound(self.log_weights(x, k))

    def training_bound(self, x: Tensor) -> Tensor:
        """The bound the configured objective maximises: [batch]."""
        if self.cfg.objective is Objective.iwae:
            return self.iwae(x, self.cfg.k)
        return self.elbo(x, self.cfg.k, self.cfg.kl)

    def log_likelihood(self, x: Tensor, num_samples: int, chunk_size: int) -> tuple[Tensor, Tensor]:
        """Importance-sampled estimates of log p(x) and of the ELBO, each [batch]."""
        posterior = self.encoder(x)
        return importance_sampled_log_likelihood(
            lambda n: self.log_weights(x, n, posterior), num_samples, chunk_size
        )

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean, E[x | z = mu(x)]."""
        return self.decoder.mean(self.encoder(x)[0])
