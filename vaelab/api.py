"""vaelab from Python (a notebook): train a run with the command line's words, load a run, and
sample, reconstruct, encode and score images with its trained model.

* :func:`train`: ``vaelab.train("model=bernoulli", "trainer.max_epochs=1")`` does what
  ``python -m vaelab.fit model=bernoulli trainer.max_epochs=1`` does (config, training, test,
  run directory) in this process and returns the finished :class:`Run`. (``vaelab.fit`` is
  the command's module, so the function has the verb's other name.)
* :func:`load_run`: a :class:`Run` from a run directory or a checkpoint file: its config,
  ``summary.json``, ``metrics.csv`` (:class:`Metrics`) and trained :class:`Model`.

Every user error is a :class:`~vaelab.errors.VaelabError` with a one-line message. Documented
in docs/python-api.md; examples/first_run.ipynb walks through it.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.config.compose import parse_command_line
from vaelab.config.schema import FitConfig
from vaelab.data import build_datamodule
from vaelab.errors import VaelabError
from vaelab.evaluate import EVAL_FILE, choose_device, load_config, load_vae
from vaelab.fit import compose_fit, fit
from vaelab.models.vae import VAE
from vaelab.training.run_dir import find_checkpoint
from vaelab.evaluation.scores import importance_scores
from vaelab.evaluation.summary import SUMMARY_FILE

METRICS_FILE = "metrics.csv"


class ImageError(VaelabError):
    """Images of a shape, type or range the model cannot take."""


class UnknownColumnError(VaelabError, KeyError):
    """A column that metrics.csv does not have (a KeyError too, as a mapping's missing key is)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def train(*words: str) -> Run:
    """Train, test and write a run directory, as ``python -m vaelab.fit <words>``; return the run.

    ``words`` are the command line's: group choices (``model=bernoulli``), dotted overrides
    (``trainer.max_epochs=1``, ``run.dir=...``, ``run.resume=<run dir>``), composed by
    :func:`vaelab.fit.compose_fit` as the command composes them, so the same words give the same
    config and the same numbers. A bad word raises
    :class:`~vaelab.errors.ConfigError` before anything is written. Training runs in this
    process (``trainer=ddp`` needs the command line). The run is loaded with :func:`load_run`.
    """
    checkpoint, cfg_node = compose_fit(parse_command_line(list(words), flags=()))
    summary = fit(cfg_node, checkpoint)
    return load_run(summary["run_dir"])


def load_run(path: str | Path, *overrides: str) -> Run:
    """The run of a run directory (its newest ``checkpoints/best-*.ckpt``, else ``last.ckpt``,
    as ``vaelab.evaluate`` chooses) or of a checkpoint file in one.

    ``overrides``: dotted overrides of the run's saved config, as after ``python -m
    vaelab.evaluate ckpt=<path>``, e.g. ``data.root=...`` where the data have moved or
    ``eval.device=cpu`` (the model goes to ``eval.device``, else to what ``trainer.accelerator``
    names: auto takes a GPU if there is one). The model's own keys come from the checkpoint.
    A missing or unreadable run raises :class:`~vaelab.errors.CheckpointError`.
    """
    run_dir, checkpoint, _ = find_checkpoint(str(path), key="path", prefer_best=True)
    config = load_config(run_dir, list(overrides))
    vae, _ = load_vae(checkpoint, choose_device(config))
    return Run(run_dir, checkpoint, config, Model(vae, config))


class Run:
    """A run directory of ``vaelab.fit`` and its trained model.

    ``dir``: the run directory. ``checkpoint``: the checkpoint file the model was loaded from.
    ``config``: the saved ``config.yaml`` with any overrides of :func:`load_run`, typed
    (:class:`~vaelab.config.schema.FitConfig`: ``run.config.model.latent_dim``, enums such as
    ``run.config.model.decoder``). ``model``: the trained :class:`Model`, in eval mode.
    ``summary``, ``evaluation`` and ``metrics`` read their files when asked, so they follow a
    run that is still training.
    """

    def __init__(self, dir: Path, checkpoint: Path, config: FitConfig, model: Model) -> None:
        self.dir = Path(dir)
        self.checkpoint = Path(checkpoint)
        self.config = config
        self.model = model

    @property
    def summary(self) -> dict | None:
        """``summary.json``: test_ll, test_elbo, epochs, ...; None for a run that has not finished."""
        return _read_json(self.dir / SUMMARY_FILE)

    @property
    def evaluation(self) -> dict | None:
        """``eval.json`` of ``python -m vaelab.evaluate``; None where it has not been run."""
        return _read_json(self.dir / EVAL_FILE)

    @property
    def metrics(self) -> Metrics:
        """``metrics.csv``: column name -> values per row (NaN where the row has none)."""
        return Metrics(self.dir / METRICS_FILE)

    def test_images(self, count: int | None = None) -> Tensor:
        """The run's test images as its test scored them: [n, C, H, W] on the CPU, binarized by
        the run's fixed draw where ``data.binarize`` is not none. ``count=None``: the images the
        test used (``trainer.limit_test_batches`` batches of ``eval.batch_size``; all if null),
        so ``log_likelihood(run.test_images(), seed=run.config.seed)`` gives the run's test_ll."""
        cfg = self.config
        data = build_datamodule(cfg.data, cfg.seed, cfg.eval.batch_size)
        data.prepare_data()
        data.setup("test")
        if count is None:
            limit = cfg.trainer.limit_test_batches
            count = len(data.test_data) if limit is None else limit * cfg.eval.batch_size
        return data.test_data[:count].reshape(-1, *self.model.image_shape).cpu()

    def __repr__(self) -> str:
        summary = self.summary or {}
        score = f"test_ll={summary['test_ll']:.2f}" if isinstance(summary.get("test_ll"), float) else "unfinished"
        return f"Run('{self.dir}', checkpoint='{self.checkpoint.name}', {score})"


class Model:
    """A trained VAE in eval mode, taking and giving images [n, C, H, W] in [0, 1].

    Images go in as [n, H, W] or [n, C, H, W], floats in [0, 1] or uint8 0..255 (divided by
    255), as tensors or numpy arrays; what comes out is on the CPU. ``vae``: the underlying
    :class:`~vaelab.models.vae.VAE` (flat data [n, C*H*W], on ``device``).

    The scores are nats per image. With ``model=bernoulli`` they are log-probabilities of binary
    images (0 or 1, as :meth:`Run.test_images` are); of grey levels x the Bernoulli "log p(x)"
    sum_d x_d log p_d + (1 - x_d) log(1 - p_d) is a cross-entropy, not the log-density of any
    normalised distribution, so it is not comparable with published nats (a warning says so,
    as ``vaelab.fit`` warns for such a run).
    """

    def __init__(self, vae: VAE, config: FitConfig) -> None:
        self.vae = vae
        self._eval = config.eval
        self.image_shape: tuple[int, int, int] = tuple(vae.image_shape)  # type: ignore[assignment]

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """n images from the model: the likelihood's means E[x | z] at z drawn from the prior (what
        samples.png shows), [n, C, H, W]. ``seed``: draws from a generator seeded with it (with the
        run's seed: the fit's samples.png), else from torch's global generator."""
        if not (isinstance(n, int) and n >= 1):
            raise VaelabError(f"sample(n) takes a number of images n >= 1, not {n!r}")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return self._images(self.vae.sample(n, generator))

    @torch.no_grad()
    def reconstruct(self, images) -> Tensor:
        """E[x | z_1 = E_q[z_1|x]]: the likelihood's mean at the posterior mean, [n, C, H, W]."""
        return self._images(self.vae.reconstruct(self._flat(images)))

    @torch.no_grad()
    def encode(self, images) -> Tensor:
        """The posterior means E_q[z_1|x], [n, latent_dim] (a flow posterior: the flow applied to its
        base mean; the layers above: ``model.vae.posterior_means``)."""
        x = self._flat(images)
        return self.vae.posterior_mean_of_first_layer(x).float().cpu()

    def log_likelihood(self, images, samples: int | None = None, seed: int | None = None) -> Tensor:
        """log p(x) per image in nats, [n]: the importance-sampled bound L_S = log (1/S) sum_s w_s
        with S = ``samples`` draws of q(z|x) per image (Burda et al. 2016, section 5.1), by the
        code of ``vaelab.evaluate`` and of the fit's test (``eval.batch_size`` images at a time,
        ``eval.chunk_size`` samples at a time, ``eval.compile`` of the run). ``samples=None``:
        the run's ``eval.ll_samples`` (5000 unless set: seconds per image on a CPU).
        ``seed``: torch's generator seeded with it inside the call and restored after (with the
        run's seed and samples, on the run's test images: the run's test_ll), else the global
        generator's next draws. For Bernoulli models on grey levels, see the class notes."""
        return self._scores(images, samples, seed)[0]

    def elbo(self, images, samples: int | None = None, seed: int | None = None) -> Tensor:
        """The ELBO per image in nats, [n]: the mean log-weight log p(x, z) - log q(z|x) of the
        same S samples as :meth:`log_likelihood` (with the same seed: the run's test_elbo)."""
        return self._scores(images, samples, seed)[1]

    def _scores(self, images, samples: int | None, seed: int | None) -> tuple[Tensor, Tensor]:
        x = self._flat(images)
        e = self._eval
        samples = e.ll_samples if samples is None else samples
        if not (isinstance(samples, int) and samples >= 1):
            raise VaelabError(f"samples={samples!r}: the number of importance samples per image must be an integer >= 1")
        if self.vae.decoder.likelihood.binary_data and not bool(((x == 0) | (x == 1)).all()):
            warnings.warn(
                "a Bernoulli model scored grey levels: these nats are a cross-entropy, not a normalised "
                "log-likelihood, and not comparable with published ones (score binary images, e.g. run.test_images())",
                stacklevel=3,
            )
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)  # as vaelab.evaluate seeds before scoring
            ll, elbo, *_ = importance_scores(self.vae, x, samples, (), e.chunk_size, e.batch_size, e.compile)
        return ll, elbo

    def _images(self, flat: Tensor) -> Tensor:
        return flat.reshape(-1, *self.image_shape).float().cpu()

    def _flat(self, images) -> Tensor:
        """Checked images as the VAE takes them: [n, C*H*W] on its device and in its dtype."""
        x = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
        c, h, w = self.image_shape
        accepted = [(h, w), (c, h, w)] if c == 1 else [(c, h, w)]
        if x.dim() < 3 or tuple(x.shape[1:]) not in accepted or len(x) == 0:
            one = " (one image: images[None])" if tuple(x.shape) in accepted else ""
            shapes = " or ".join(f"[n, {', '.join(map(str, shape))}]" for shape in accepted)
            raise ImageError(f"images of shape {list(x.shape)}: this model takes {shapes} with n >= 1{one}")
        if x.dtype == torch.uint8:
            x = x.float() / 255
        elif x.dtype == torch.bool:
            x = x.float()
        elif not x.is_floating_point():
            raise ImageError(f"images of dtype {x.dtype}: pass floats in [0, 1] or uint8 0..255")
        low, high = x.min().item(), x.max().item()
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 1:
            raise ImageError(
                f"image values from {low:g} to {high:g}: pass floats in [0, 1] (uint8 images 0..255 are divided by 255 for you)"
            )
        parameter = next(self.vae.parameters())
        return x.reshape(len(x), -1).to(parameter.device, parameter.dtype)

    def __repr__(self) -> str:
        cfg = self.vae.cfg
        return (
            f"Model(model={cfg.decoder}, prior={self.vae.prior_cfg.name}, net={self.vae.net_cfg.name}, "
            f"latent_dim={cfg.latent_dim}, image_shape={self.image_shape}, device={self.device})"
        )


class Metrics(Mapping):
    """A run's ``metrics.csv`` by column: name -> float array with a value per row, NaN where
    the row has none (rows of step metrics, of validation, of the test each fill some columns).

    ``curve(name)``: (steps, values) of the rows that have the column, ready for
    ``plt.plot(*run.metrics.curve("val/elbo"))``. No file (yet): no columns.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._columns: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with open(self.path, newline="") as file:
                reader = csv.DictReader(file)
                rows, names = list(reader), reader.fieldnames or []
            self._columns = {name: np.array([_number(row.get(name)) for row in rows], dtype=np.float64) for name in names}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._columns:
            raise UnknownColumnError(f"no column '{name}' in {self.path}; its columns: {', '.join(self._columns) or 'none'}")
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def curve(self, name: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
        """(x values, values) of ``name`` over the rows that have both: optimizer steps by default,
        ``x="epoch"`` for epochs."""
        values, at = self[name], self[x]
        keep = ~np.isnan(values) & ~np.isnan(at)
        return at[keep], values[keep]

    def __repr__(self) -> str:
        rows = len(next(iter(self._columns.values()))) if self._columns else 0
        return f"Metrics('{self.path}', {rows} rows: {', '.join(self._columns)})"


def _number(cell: str | None) -> float:
    return float(cell) if cell not in (None, "") else math.nan


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VaelabError(f"cannot read {path}: {error}") from error
