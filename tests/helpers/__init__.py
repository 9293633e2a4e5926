"""What several test modules share: where the real datasets are and marks that skip a test
without them, tiny MNIST files of the real format, the words of a fit of a few seconds, several
``python -m vaelab.fit`` processes that share one start-up (``run_forked``), and linear-Gaussian
VAEs (one and two stochastic layers) whose marginal likelihood is known in closed form.
The SLURM cluster harness is in tests/helpers/slurm.py; fixtures are in tests/conftest.py."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D

from vaelab.config.schema import ModelConfig, StochasticLayerConfig
from vaelab.data.mnist import IMAGE_MAGIC, LABEL_MAGIC
from vaelab.models.vae import VAE
from vaelab.probability.densities import kl_to_standard_normal

PROJECT = Path(__file__).resolve().parents[2]

# --- the real datasets: $VAELAB_DATA_DIR as vaelab reads it, else beside the project ---------

SHARED_DATA = Path(os.environ.get("VAELAB_DATA_DIR") or PROJECT.parent / "shared" / "data")
MNIST_RAW = SHARED_DATA / "MNIST" / "raw"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FREY_FILE = SHARED_DATA / "FreyFaces" / "frey_rawface.mat"


def needs_real_data(missing: str | None) -> pytest.MarkDecorator:
    """A mark for a test of a real dataset: none when it is there; when ``missing`` says what is
    not, a skip, except under ``CI=true``, where tests/conftest.py fails the test: a green CI
    run must not hide untested data."""
    if missing is not None and os.environ.get("CI") != "true":
        return pytest.mark.skip(reason=missing)
    return pytest.mark.real_data(missing)


needs_mnist = needs_real_data(
    None
    if all((MNIST_RAW / name).is_file() for name in MNIST_FILES)
    else f"real MNIST not found: expected the 4 files {', '.join(MNIST_FILES)} in {MNIST_RAW} (set VAELAB_DATA_DIR)"
)
needs_frey = needs_real_data(
    None if FREY_FILE.is_file() else f"real Frey faces not found: expected {FREY_FILE} (set VAELAB_DATA_DIR)"
)

# --- tiny MNIST files of the real format (IDX, gzipped) ------------------------------------


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def write_idx_files(raw: Path, n_train: int, n_test: int, gz: bool, seed: int) -> dict[str, np.ndarray]:
    """Writes MNIST's four IDX files (names and layout, as Fashion-MNIST has them too) into the
    folder ``raw`` with contents seeded by ``seed``, and returns those contents."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, magic, array in (("images-idx3", IMAGE_MAGIC, images), ("labels-idx1", LABEL_MAGIC, labels)):
            name = f"{split}-{kind}-ubyte"
            content = idx_bytes(magic, array.shape, array.tobytes())
            (raw / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(content) if gz else content)
            arrays[name] = array
    return arrays


def write_mnist(root: Path, n_train: int = 7, n_test: int = 3, gz: bool = True) -> dict[str, np.ndarray]:
    """Writes the four IDX files of ``<root>/MNIST/raw`` with random contents and returns those contents."""
    return write_idx_files(root / "MNIST" / "raw", n_train, n_test, gz, seed=0)


# A fit of a few seconds on the real data: experiment=smoke with 3 training batches and 10
# importance samples per test image. Later words win: a module adds or changes what it needs.
TINY_FIT = [
    "experiment=smoke",
    "trainer.progress_bar=false",
    "trainer.limit_train_batches=3",
    "eval.ll_samples=10",
    f"data.root={SHARED_DATA}",
]

def exact_fit_words(epochs: int, steps_per_epoch: int, steps_per_call: int) -> list[str]:
    """A small deterministic fit on tiny MNIST (data.root added by the caller): ``epochs`` of
    ``steps_per_epoch`` minibatches of 50, ``steps_per_call`` per Lightning call, a row of
    metrics.csv per step; for the tests that interrupt a run and compare it with a whole one."""
    return [
        "experiment=smoke", "trainer.progress_bar=false", "data.val_size=100", "eval.ll_samples=10",
        f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={steps_per_epoch}", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1", f"trainer.steps_per_call={steps_per_call}", "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu", "trainer.deterministic=true", "trainer.compile=false", "model.hidden=[64]",
        "data.batch_size=50",
    ]


# --- a linear-Gaussian VAE: p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so p(x) = N(b, WW^T + s^2 I)

DATA_DIM, LATENT_DIM, SIGMA = 6, 3, 0.5


def linear_gaussian_vae() -> VAE:
    """The decoder is linear with orthogonal columns of W (so W^T W, hence the exact posterior
    covariance, is diagonal); the encoder is left as initialised (see :func:`set_posterior`)."""
    cfg = ModelConfig(decoder="gaussian", latent_dim=LATENT_DIM, hidden=[], sigma=SIGMA, sigmoid_mean=False)
    vae = VAE(cfg, DATA_DIM)
    q, _ = torch.linalg.qr(torch.randn(DATA_DIM, LATENT_DIM))
    with torch.no_grad():
        vae.decoder.likelihood.mean_head.weight.copy_(q * torch.tensor([2.0, 1.0, 0.5]))
        vae.decoder.likelihood.mean_head.bias.copy_(torch.randn(DATA_DIM))
    return vae


def set_posterior(vae: VAE, log_var_shift: float = 0.0, mean_shift: float = 0.0) -> None:
    """q(z|x) = p(z|x) (covariance (I + W^T W / s^2)^-1, mean cov W^T (x - b) / s^2) when
    the shifts are 0; otherwise a Gaussian near it."""
    W, b = vae.decoder.likelihood.mean_head.weight, vae.decoder.likelihood.mean_head.bias
    cov = torch.linalg.inv(torch.eye(LATENT_DIM) + W.T @ W / SIGMA**2)
    gain = cov @ W.T / SIGMA**2
    with torch.no_grad():
        vae.encoders[0].mean.weight.copy_(gain)
        vae.encoders[0].mean.bias.copy_(-gain @ b + mean_shift)
        vae.encoders[0].log_var.weight.zero_()
        vae.encoders[0].log_var.bias.copy_(torch.log(torch.diagonal(cov)) + log_var_shift)


def closed_form_log_likelihood(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log N(x; b, W W^T + s^2 I)."""
    W, b = vae.decoder.likelihood.mean_head.weight, vae.decoder.likelihood.mean_head.bias
    return D.MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(DATA_DIM)).log_prob(x)


def closed_form_elbo(vae: VAE, x: torch.Tensor, kl_weight: float = 1.0) -> torch.Tensor:
    """E_q[log p(x|z)] - kl_weight * KL(q || p) for the Gaussian q(z|x) = N(Gx + c, diag(v)) of
    the encoder: Gaussian expectations of a quadratic."""
    W, b = vae.decoder.likelihood.mean_head.weight, vae.decoder.likelihood.mean_head.bias
    mean, log_var = vae.encoders[0](x)
    residual = x - mean @ W.T - b
    trace = (torch.exp(log_var) * (W**2).sum(0)).sum(-1)  # tr(W diag(v) W^T)
    expected_log_lik = -0.5 * DATA_DIM * math.log(2 * math.pi * SIGMA**2) - ((residual**2).sum(-1) + trace) / (2 * SIGMA**2)
    return expected_log_lik - kl_weight * kl_to_standard_normal(mean, log_var)


# --- two stochastic layers, all linear: z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, diag(s1)),
# x | z1 ~ N(W z1 + b, s^2 I), so p(x) = N(W a + b, W (A A^T + diag(s1)) W^T + s^2 I).

Z1, Z2 = 3, 2


def two_layer_linear_vae() -> VAE:
    cfg = ModelConfig(
        decoder="gaussian", latent_dim=Z1, hidden=[], sigma=SIGMA, sigmoid_mean=False,
        upper_layers=[StochasticLayerConfig(hidden=[], latent_dim=Z2)],
    )
    vae = VAE(cfg, DATA_DIM)
    prior = vae.generative_layers[0]
    with torch.no_grad():
        prior.log_var.weight.zero_()  # p(z1|z2) has a fixed diagonal covariance
        prior.log_var.bias.copy_(torch.tensor([-1.0, -0.5, 0.2]))
        vae.decoder.likelihood.mean_head.weight.mul_(0.3)  # a broad posterior, near the prior
        # q(z1|x) = N(0, 9 I), q(z2|z1) = N(0, I): poor but wider than the posterior, so
        # importance sampling converges in these few dimensions
        for encoder in vae.encoders:
            for layer in (encoder.mean, encoder.log_var):
                layer.weight.zero_()
                layer.bias.zero_()
        vae.encoders[0].log_var.bias.fill_(math.log(9.0))
    return vae


def sample_x(vae: VAE, n: int) -> torch.Tensor:
    """Data from the model itself."""
    with torch.no_grad():
        z2 = torch.randn(n, Z2)
        mean, log_var = vae.generative_layers[0](z2)
        z1 = mean + torch.exp(0.5 * log_var) * torch.randn(n, Z1)
        return vae.decoder.mean(z1) + SIGMA * torch.randn(n, DATA_DIM)


# --- several `python -m <module>` processes for the price of one Python start-up ----------------

# One Python imports what vaelab's commands import (seconds of start-up), then forks a child per
# command; each child runs the module as __main__, as `python -m` does, in its own working
# directory, with its own argv, environment, stdout, stderr and exit status. Commands of a stage
# run at the same time; a stage starts when the one before it has ended.
_FORKING_DRIVER = """
import json, os, runpy, sys, traceback
import torch, pytorch_lightning  # noqa: F401  the start-up every command shares
import vaelab.config.compose, vaelab.data, vaelab.errors, vaelab.models.module  # noqa: F401


def child(command):
    os.chdir(command["cwd"])
    os.environ.update(command["env"])
    for fd, path in ((1, command["stdout"]), (2, command["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.argv = [command["module"], *command["argv"]]
    status = 1
    try:
        exec(command["before"], {"__name__": "__before__"})
        runpy.run_module(command["module"], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit:
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
        status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


statuses = []
for stage in json.loads(sys.argv[1]):
    children = []
    for command in stage:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child(command)
        children.append(pid)
    statuses += [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print(json.dumps(statuses))
"""


@dataclass
class Command:
    """``python -m <module> <argv>`` in ``cwd``; ``env`` is added to the environment and
    ``before`` (Python code) runs first, in the same process."""

    argv: list[str]
    cwd: Path
    module: str = "vaelab.fit"
    env: dict[str, str] = field(default_factory=dict)
    before: str = ""


def run_forked(stages: list[list[Command]], env: dict[str, str] | None = None, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Runs the commands as forked children of one Python (see ``_FORKING_DRIVER``); returns one
    result per command, in order, with Popen's exit status (minus the signal's number if a
    signal ended it) and the command's stdout and stderr."""
    with tempfile.TemporaryDirectory(prefix="forked-") as folder:
        plan, outputs = [], []
        for stage in stages:
            plan.append([])
            for command in stage:
                out, err = (Path(folder) / f"{len(outputs)}.{name}" for name in ("out", "err"))
                outputs.append((command, out, err))
                plan[-1].append({**asdict(command), "cwd": str(command.cwd), "stdout": str(out), "stderr": str(err)})
        driver = subprocess.run(
            [sys.executable, "-c", _FORKING_DRIVER, json.dumps(plan)],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert driver.returncode == 0, f"the forking driver failed:\n{driver.stderr[-3000:]}"
        statuses = json.loads(driver.stdout.splitlines()[-1])
        return [
            subprocess.CompletedProcess([command.module, *command.argv], status, out.read_text(), err.read_text())
            for (command, out, err), status in zip(outputs, statuses)
        ]


# metrics.csv columns added after older runs and the same-numbers reference were written: the
# ELBO's terms that every objective logs (docs/objectives.md); compared as absent there
ADDED_COLUMNS = frozenset({
    "train/reconstruction", "train/kl", "train/reconstruction_epoch", "train/kl_epoch", "val/reconstruction", "val/kl",
})


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def assert_same_training_state(a: dict, b: dict, context: object = None) -> None:
    """Two checkpoints hold bit-identical parameters and optimizer state; ``context`` goes in the failure."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), (context, name)
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert state_a.keys() == state_b.keys()
    for index, state in state_a.items():
        for key, value in state.items():
            assert torch.equal(value, state_b[index][key]), (context, index, key)
