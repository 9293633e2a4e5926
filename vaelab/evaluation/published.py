"""The papers' published test log-likelihoods that a preset's run can be set beside, each with its
source (paper, table, row and column), and which cell a run's saved config belongs to.

Only numbers quoted in docs/RESULTS.md are here: Burda et al. (2016) Table 1, MNIST columns, as
test log-likelihoods (the table gives negative log-likelihoods). Kingma & Welling (2014) give
their bounds as curves (Figure 2), not numbers; Tomczak & Welling's (2018) Table 2 is not quoted
in docs/RESULTS.md yet, so ``vampprior_mnist`` runs have no published cell. A cell is matched by
the config's values (config.yaml does not record the preset's name): the preset's architecture
and data, then the objective and k that pick the table's column.
"""

from __future__ import annotations

from dataclasses import dataclass

BURDA = "Burda, Grosse & Salakhutdinov (2016), Table 1, MNIST"

# The architecture and data of a preset, as its config.yaml holds them.
PRESET_MODELS: dict[str, dict] = {
    "iwae_1layer": {
        "data.name": "mnist", "data.binarize": "dynamic", "model.decoder": "bernoulli",
        "model.hidden": [200, 200], "model.activation": "tanh", "model.latent_dim": 50, "model.upper_layers": [],
    },
    "iwae_2layer": {
        "data.name": "mnist", "data.binarize": "dynamic", "model.decoder": "bernoulli",
        "model.hidden": [200, 200], "model.activation": "tanh", "model.latent_dim": 100,
        "model.upper_layers": [{"hidden": [100, 100], "latent_dim": 50}],
    },
}


@dataclass(frozen=True)
class PublishedNumber:
    """One table cell: the test log-likelihood in nats and where it is printed."""

    preset: str
    objective: str  # elbo (the paper's "VAE" rows) or iwae
    k: int
    test_ll: float
    source: str

    @property
    def cell(self) -> str:
        return f"{'IWAE' if self.objective == 'iwae' else 'VAE'}, k={self.k}"


def _burda(preset: str, layers: str, objective: str, k: int, nll: float) -> PublishedNumber:
    row = "IWAE" if objective == "iwae" else "VAE"
    return PublishedNumber(preset, objective, k, -nll, f"{BURDA}, {layers}, {row} k={k} (NLL {nll:.2f}, 3280 epochs, 5000 samples)")


PUBLISHED: tuple[PublishedNumber, ...] = (
    _burda("iwae_1layer", "1 stochastic layer", "elbo", 1, 86.76),
    _burda("iwae_1layer", "1 stochastic layer", "elbo", 50, 86.35),
    _burda("iwae_1layer", "1 stochastic layer", "iwae", 5, 85.54),
    _burda("iwae_1layer", "1 stochastic layer", "iwae", 50, 84.78),
    _burda("iwae_2layer", "2 stochastic layers", "iwae", 50, 82.90),
)


def _value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def preset_of(config: dict) -> str | None:
    """The preset whose architecture and data a saved config (config.yaml, as a dict) has."""
    for name, values in PRESET_MODELS.items():
        if all(_same(_value(config, key), want) for key, want in values.items()):
            return name
    return None


def _same(have, want) -> bool:
    if isinstance(want, list) and isinstance(have, list):
        return len(have) == len(want) and all(_same(h, w) for h, w in zip(have, want))
    if isinstance(want, dict) and isinstance(have, dict):
        return all(_same(have.get(key), value) for key, value in want.items())
    return have == want


def published_for(config: dict) -> PublishedNumber | None:
    """The published cell of a run's config: its preset's, for its objective and k; None if the
    run is of no preset or its cell is not quoted."""
    preset = preset_of(config)
    objective, k = _value(config, "model.objective"), _value(config, "model.k")
    if objective == "iwae" and k == 1:  # L_1 is the ELBO: the paper's IWAE k=1 row equals its VAE k=1 row
        objective = "elbo"
    for number in PUBLISHED:
        if (number.preset, number.objective, number.k) == (preset, objective, k):
            return number
    return None
