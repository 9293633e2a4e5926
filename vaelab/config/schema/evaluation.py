"""The settings of the test-set scores and diagnostics: ``eval.*``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vaelab.config.schema.fields import _help, _require


@dataclass
class EvalConfig:
    ll_samples: int = _help("importance samples per test image for log p(x) (Burda et al. use 5000)", 5000)
    chunk_size: int = _help("importance samples evaluated at once; bounds memory", 50)
    compile: Optional[bool] = _help(
        "torch.compile the log-weights of the importance-sampled estimates (same samples); "
        "null: on the CPU from 2*10^7 samples in all (images x ll_samples)", None
    )
    batch_size: int = _help("test images evaluated at once", 100)
    num_images: int = _help("images in the sample and reconstruction grids", 64)
    iwae_k: list[int] = _help(
        "vaelab.evaluate: report the IWAE bound L_k for each k (Burda et al. eq. 8), from groups of k samples", [1, 5, 50]
    )
    active_threshold: float = _help(
        "vaelab.evaluate: a latent unit is active if Cov_x(E_q[u|x]) exceeds this (Burda et al. section 5.2)", 0.01
    )
    posterior_mean_samples: int = _help(
        "vaelab.evaluate: samples of the layers below averaged for E_q[z_l|x] of layers l >= 2", 100
    )
    device: Optional[str] = _help("vaelab.evaluate: cpu, cuda, cuda:N or mps; null: from trainer.accelerator", None)
    interpolation_pairs: int = _help("vaelab.evaluate: pairs of test images interpolated, one row each", 8)
    interpolation_steps: int = _help("vaelab.evaluate: decoded points on each interpolation path, ends included", 10)
    manifold_size: int = _help("vaelab.evaluate: 2-D top latent: the learned manifold is an n x n grid", 20)
    ais_steps: int = _help(
        "vaelab.evaluate: annealed importance sampling (Wu et al. 2017) of log p(x), a stochastic lower bound, "
        "with this many intermediate distributions (sigmoid schedule); 0: off", 0
    )
    ais_chains: int = _help("vaelab.evaluate: AIS chains per image, started from the prior", 16)
    ais_leapfrog: int = _help("vaelab.evaluate: leapfrog steps per HMC transition of AIS", 10)
    ais_step_size: float = _help("vaelab.evaluate: initial HMC step size, adapted per chain toward acceptance 0.65", 0.05)
    ais_images: int = _help("vaelab.evaluate: AIS scores the first n of the evaluated test images", 100)
    bdmc_images: int = _help(
        "vaelab.evaluate: BDMC (Grosse et al. 2015) on n images simulated from the model, with the AIS settings: "
        "AIS's lower and reverse AIS's upper bound of their log p(x); 0: off", 0
    )

    track_test: bool = _help(
        "also score the test set's ELBO after every epoch (metric curve/test_elbo), for learning curves", False
    )
    collapse_diagnostics: bool = _help(
        "posterior-collapse diagnostics after every epoch on validation (docs/diagnostics.md): KL per stochastic "
        "layer, the reconstruction term, active units per layer, I_q(x; z_1); from their own seeded draws", False,
    )
    diagnostic_batches: Optional[int] = _help(
        "collapse diagnostics on the first n validation batches (null: all)", None
    )

    def __post_init__(self) -> None:
        _require(self.ll_samples >= 1, "eval.ll_samples", self.ll_samples, "an integer >= 1")
        _require(self.chunk_size >= 1, "eval.chunk_size", self.chunk_size, "an integer >= 1")
        _require(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        _require(self.num_images >= 1, "eval.num_images", self.num_images, "an integer >= 1")
        _require(all(k >= 1 for k in self.iwae_k), "eval.iwae_k", self.iwae_k, "a list of integers >= 1")
        _require(self.active_threshold >= 0, "eval.active_threshold", self.active_threshold, "a variance >= 0")
        _require(
            self.posterior_mean_samples >= 1, "eval.posterior_mean_samples", self.posterior_mean_samples, "an integer >= 1"
        )
        _require(
            self.device in (None, "cpu", "cuda", "mps") or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
            "eval.device", self.device, "cpu, cuda, cuda:N, mps or null",
        )
        _require(self.interpolation_pairs >= 1, "eval.interpolation_pairs", self.interpolation_pairs, "an integer >= 1")
        _require(self.interpolation_steps >= 2, "eval.interpolation_steps", self.interpolation_steps, "an integer >= 2")
        _require(self.manifold_size >= 2, "eval.manifold_size", self.manifold_size, "an integer >= 2")
        _require(self.ais_steps >= 0, "eval.ais_steps", self.ais_steps, "an integer >= 0 (0: no AIS)")
        _require(self.ais_chains >= 1, "eval.ais_chains", self.ais_chains, "an integer >= 1")
        _require(self.ais_leapfrog >= 1, "eval.ais_leapfrog", self.ais_leapfrog, "an integer >= 1")
        _require(self.ais_step_size > 0, "eval.ais_step_size", self.ais_step_size, "a step size > 0")
        _require(self.ais_images >= 1, "eval.ais_images", self.ais_images, "an integer >= 1")
        _require(self.bdmc_images >= 0, "eval.bdmc_images", self.bdmc_images, "an integer >= 0 (0: no BDMC)")
        _require(
            self.bdmc_images == 0 or self.ais_steps >= 1, "eval.bdmc_images", self.bdmc_images,
            "0 unless eval.ais_steps >= 1 (BDMC anneals with the AIS settings)",
        )
        batches = self.diagnostic_batches
        _require(batches is None or batches >= 1, "eval.diagnostic_batches", batches, "null or an integer >= 1")
