"""``python -m vaelab.evaluate ckpt=<checkpoint or run dir> [key=value ...]``: score a trained VAE.

On the test set of the run's data (``trainer.limit_test_batches`` batches of
``eval.batch_size`` images, as in the test of ``vaelab.fit``; ``trainer.limit_test_batches=null``
for all of them), in nats per image, each number the exact mean over the evaluated images of
per-image values (summed in float64; the model runs in float32 whatever ``trainer.precision``
was in training, with every constant of every density included):

* ``test_ll``: log p(x) estimated by importance sampling with ``eval.ll_samples`` samples of
  q(z|x) (default 5000, as Burda et al. section 5.1): the bound L_S = log (1/S) sum_s w_s,
  computed in chunks of ``eval.chunk_size`` samples, so memory does not grow with S. The same
  estimator gives ``vaelab.fit``'s ``test/ll``; with the same seed and max(``eval.iwae_k``) <= S
  both see the same samples and report the same number.
* ``test_elbo``: the ELBO, estimated by the mean log-weight of the same S samples.
* ``test_iwae``: the importance-weighted bound L_k (Burda et al. eq. 8) for each k of
  ``eval.iwae_k``, the mean over the consecutive groups of k samples of one stream of
  max(S, max k) samples per image (unbiased for E[L_k], with far less variance than one group;
  where k divides k', L_k <= L_k' per image). See ``vaelab.probability.bounds.ImportanceEstimates``.
* ``active_units``: per stochastic layer, the units u with Cov_x(E_{q(u|x)}[u]) above
  ``eval.active_threshold`` (0.01: Burda et al. section 5.2), the variance over the evaluated
  test images. For z_1, E_q[z_1|x] is the encoder's mean; for a higher layer it is averaged over
  ``eval.posterior_mean_samples`` draws of the layers below (``vaelab.evaluation.scores``).
* ``bits_per_dim``: -test_ll / (D log 2) for a likelihood that is a probability of the stored
  values (logistic on the 256 levels; bernoulli on binarized data), else null: see
  ``vaelab.evaluation.scores.discrete_bits_per_dim``.
* ``ais`` and ``bdmc`` (``eval.ais_steps`` > 0, ``eval.bdmc_images`` > 0): annealed importance
  sampling's stochastic lower bound of log p(x) on the first ``eval.ais_images`` images, and
  BDMC's lower and upper bounds on images simulated from the model (``vaelab.evaluation.ais_scores``).
* ``test_bits_per_dim``: grey levels (``data.binarize=none``) under a density on [0, 1]
  (gaussian, gaussian_learned, continuous_bernoulli), put on the 8-bit scale by convention: see
  ``vaelab.evaluation.scores.bits_per_dim``.

Pictures, PNG files in the run directory named ``eval_<name>.png`` (the fit's own
``samples.png`` and ``reconstructions.png`` are left alone): ``samples``, ``reconstructions``,
``interpolation_linear`` and ``interpolation_slerp`` (decoded paths between the top layer's
posterior means of pairs of test images), and for a 2-D top latent ``manifold`` (Kingma &
Welling's Figure 4) and ``latent_scatter`` (the evaluated test images' top-layer posterior
means, coloured by digit for MNIST). Runs that used ``logger=wandb`` get the numbers (summary,
under ``eval/``) and the pictures logged into the same W&B run.

Everything goes into ``eval.json`` in the run directory (written atomically) and a table on
stdout. ``ckpt=`` takes a ``.ckpt`` file or a run directory (then ``checkpoints/best-*.ckpt``,
else ``checkpoints/last.ckpt``); the keys after it are dotted overrides of the run's saved
``config.yaml``. Every user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

from vaelab.config.compose import compose_saved, parse_command_line, to_object
from vaelab.config.help import _key_lines
from vaelab.config.schema import AcceleratorKind, EvalConfig, FitConfig, LoggerKind
from vaelab.data import build_datamodule
from vaelab.errors import CheckpointError, ConfigError, ResultsWriteError, VaelabError, first_line, run_command, warn
from vaelab.models.module import VAEModule
from vaelab.models.vae import VAE
from vaelab.training.loggers import wandb_mode, wandb_run_id
from vaelab.evaluation.pictures import (
    hierarchy_grids, image_grids, interpolation_grids, latent_scatter, manifold_grid, manifold_problem, save_grids,
)
from vaelab.files.atomic import write_atomically
from vaelab.training.checkpoints import checkpoint_problem
from vaelab.evaluation.protocol import BY_VALIDATION, LAST_CHECKPOINT, protocol
from vaelab.training.run_dir import check_writable, find_checkpoint, load_saved_config
from vaelab.evaluation.ais_scores import annealed_bounds
from vaelab.evaluation.test_numbers import test_numbers
from vaelab.evaluation.scores import active_units, bound_order, bound_order_warning, mean, score

PROG = "vaelab.evaluate"
EVAL_FILE = "eval.json"
PICTURE_PREFIX = "eval_"
CKPT_KEY = "ckpt="

USAGE = """\
usage: python -m vaelab.evaluate ckpt=<run dir or file.ckpt> [key=value ...] [--help]

Score a trained VAE on its test set: log-likelihood (importance sampling), ELBO, IWAE bounds,
active units, bits/dim for continuous data; pictures of samples, reconstructions, latent
interpolations and, for a 2-D latent, the learned manifold. Writes eval.json and eval_*.png
into the run directory.
  ckpt=D         a run directory (checkpoints/best-*.ckpt, else last.ckpt) or a .ckpt file
  key=value      override one key of the run's saved config.yaml, e.g. eval.ll_samples=100
                 eval.iwae_k=[1,5,50] data.root=... trainer.limit_test_batches=null eval.device=cpu
"""


# ---------------------------------------------------------------- checkpoint, config, device


def load_config(run_dir: Path, overrides: list[str]) -> FitConfig:
    """The run's saved config with the dotted overrides applied, checked against the schema."""
    saved = load_saved_config(run_dir)
    for word in overrides:
        if word.split("=", 1)[0].startswith(("model.", "prior.", "net.", "posterior.")):
            raise ConfigError(f"the model comes from the checkpoint: drop the override '{word}'")
    line = parse_command_line(overrides, flags=())
    return to_object(compose_saved(saved, line, keeps="evaluation keeps the run's saved config"))


def choose_device(cfg: FitConfig) -> torch.device:
    """``eval.device``, else from ``trainer.accelerator`` (auto: CUDA, else MPS, else the CPU)."""
    name = cfg.eval.device
    key = "eval.device"
    if name is None:
        key = "trainer.accelerator"
        accelerator = cfg.trainer.accelerator
        if accelerator is AcceleratorKind.auto:
            if torch.cuda.is_available():
                name = "cuda"
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                name = "mps"
            else:
                name = "cpu"
        else:
            name = {"gpu": "cuda"}.get(accelerator.value, accelerator.value)
    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(f"{key} asks for {name} but torch sees {torch.cuda.device_count()} CUDA device(s); set eval.device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError(f"{key} asks for mps but it is not available; set eval.device=cpu")
    return torch.device(name)


def load_vae(checkpoint: Path, device: torch.device) -> tuple[VAE, int]:
    """The VAE of a vaelab.fit checkpoint, in eval mode on ``device``, and its data dimension."""
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise CheckpointError(f"cannot load checkpoint {checkpoint}: not a readable checkpoint of vaelab.fit (the file is {problem})")
    try:
        module = VAEModule.load_from_checkpoint(str(checkpoint), map_location=device)
    except VaelabError:
        raise
    except Exception as error:  # a truncated file, not a checkpoint, or not one of vaelab's
        raise CheckpointError(
            f"cannot load checkpoint {checkpoint}: not a readable checkpoint of vaelab.fit ({_load_problem(error)})"
        ) from error
    module.eval()
    return module.vae, int(module.hparams.data_dim)


def _load_problem(error: BaseException) -> str:
    """A short account of why torch or Lightning could not load a file."""
    text = " ".join(str(error).split())
    if "WeightsUnpickler error:" in text:  # torch's long weights_only notice; the reason is inside
        text = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation", 1)[0].strip()
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ---------------------------------------------------------------- the command


def evaluate(cfg: FitConfig, run_dir: Path, checkpoint: Path, why: str = "as given") -> dict:
    """Score ``checkpoint`` on the test set, write pictures and ``eval.json``; return eval.json's contents."""
    started = time.perf_counter()
    check_writable(run_dir, (EVAL_FILE,))  # an unwritable run directory fails now, not after the scoring
    device = choose_device(cfg)
    vae, model_dim = load_vae(checkpoint, device)
    data, test, labels = _test_images(cfg, model_dim)
    e = cfg.eval
    torch.manual_seed(cfg.seed)
    scores = score(vae, test, e.ll_samples, e.iwae_k, e.chunk_size, e.batch_size, e.posterior_mean_samples, e.compile)
    order = bound_order(mean(scores.elbo), {k: mean(v) for k, v in scores.iwae.items()}, mean(scores.ll), e.ll_samples)
    if bound_order_warning(order):
        warn(bound_order_warning(order))
    numbers = test_numbers(
        mean(scores.ll), mean(scores.elbo), e.ll_samples, math.prod(data.image_shape), type(vae.decoder.likelihood), cfg.data.binary,
        scores.ll, scores.ess, scores.pareto_k,
    )
    pictures = save_grids(_pictures(vae, test, labels, scores, data.image_shape, cfg), run_dir, prefix=PICTURE_PREFIX)
    annealed = annealed_bounds(vae, test, scores.ll, cfg) if e.ais_steps else {"ais": None, "bdmc": None}
    results = {
        "run_dir": str(run_dir), "checkpoint": str(checkpoint), "checkpoint_choice": why, "device": str(device),
        **_scores_json(cfg, vae, data, scores, numbers, order, _checkpoint_rule(checkpoint), len(test)),
        **annealed,
        "pictures": {name: str(path) for name, path in pictures.items()},
        "seconds": time.perf_counter() - started,
    }
    write_atomically(run_dir / EVAL_FILE, json.dumps(results, indent=2) + "\n")
    if cfg.logger.name is LoggerKind.wandb:
        _log_to_wandb(cfg, run_dir, results, pictures)
    return results


def _test_images(cfg: FitConfig, model_dim: int):
    """The data module, the test images to score (``trainer.limit_test_batches`` batches of them,
    or all) and their labels (None without); one line if the model takes other data."""
    data = build_datamodule(cfg.data, cfg.seed, cfg.eval.batch_size)
    data.prepare_data()
    data.setup("test")
    data_dim = math.prod(data.image_shape)
    if model_dim != data_dim:
        raise ConfigError(
            f"the checkpoint's model takes {model_dim}-dimensional data but data.name={cfg.data.name} "
            f"has {data_dim} dimensions; evaluate on the run's own data"
        )
    limit = cfg.trainer.limit_test_batches
    count = len(data.test_data) if limit is None else min(len(data.test_data), limit * cfg.eval.batch_size)
    labels = None if data.test_labels is None else data.test_labels[:count].cpu()
    return data, data.test_data[:count], labels


def _pictures(vae, test: torch.Tensor, labels, scores, image_shape, cfg: FitConfig) -> dict:
    """Samples, reconstructions and interpolations; with a 2-dimensional top layer, its manifold
    and the scatter of the test images' posterior means."""
    e = cfg.eval
    with torch.inference_mode():
        grids: dict = image_grids(vae, test, image_shape, e.num_images, cfg.seed)
        pairs = min(e.interpolation_pairs, len(test) // 2)
        grids.update(
            interpolation_grids(vae, test[: 2 * pairs], scores.posterior_means[-1][: 2 * pairs], image_shape, e.interpolation_steps)
        )
        if len(vae.latent_dims) > 1:
            grids.update(hierarchy_grids(vae, test, image_shape, cfg.seed))
        if vae.top_latent_dim == 2:
            problem = manifold_problem(vae)
            if problem is None:
                grids["manifold"] = manifold_grid(vae, image_shape, e.manifold_size)
            else:
                warn(f"no eval_manifold.png: {problem}")
            layer = len(scores.posterior_means)
            grids["latent_scatter"] = latent_scatter(
                scores.posterior_means[-1], labels, axis_names=(f"E_q[z{layer}|x]_1", f"E_q[z{layer}|x]_2"), seed=cfg.seed
            )
    return grids


def _scores_json(cfg: FitConfig, vae, data, scores, numbers: dict, order: dict, checkpoint_rule: str, count: int) -> dict:
    """eval.json's description of the data and its scores (``numbers``: :func:`test_numbers`'s)."""
    e = cfg.eval
    counts, variances = active_units(scores.posterior_means, e.active_threshold)
    return {
        "data": cfg.data.name,
        "binarize": cfg.data.binarize.value,
        "model": vae.cfg.decoder,
        "data_dim": math.prod(data.image_shape),
        "test_images": count,
        "test_set_size": len(data.test_data),
        "seed": cfg.seed,
        **numbers,
        "protocol": protocol(cfg, data, checkpoint_rule, count, data.source.binary),
        "test_iwae": {str(k): mean(v) for k, v in scores.iwae.items()},
        "test_kl": mean(scores.kl),
        "test_kl_per_layer": [mean(kl) for kl in scores.layer_kl],  # z_1 first
        "test_reconstruction": mean(scores.reconstruction),
        "bound_order": order,
        "active_units": counts,
        "latent_dims": [m.shape[1] for m in scores.posterior_means],
        "active_threshold": e.active_threshold,
        "unit_variances": [v.tolist() for v in variances],
    }


def _checkpoint_rule(checkpoint: Path) -> str:
    """What chose the checkpoint: the fit's validation ELBO for best-*.ckpt; else no selection."""
    if checkpoint.name.startswith("best-"):
        return BY_VALIDATION
    return LAST_CHECKPOINT if checkpoint.name == "last.ckpt" else f"as given ({checkpoint.name})"


def _wandb_id(run_dir: Path) -> str:
    """The id of the run's W&B run: from its folder in ``<run dir>/wandb/`` when there is one
    (a sweep agent's id, or a run directory moved since), else ``wandb_run_id(run_dir)``."""
    folders = [
        p for p in (run_dir / "wandb").glob("*run-*-*")
        if p.is_dir() and p.name.startswith(("run-", "offline-run-")) and p.name.count("-") >= 2
    ]
    newest = max(folders, key=lambda p: p.name.rsplit("-", 2)[1], default=None)  # by its timestamp
    return newest.name.rsplit("-", 1)[1] if newest is not None else wandb_run_id(run_dir)


def _log_to_wandb(cfg: FitConfig, run_dir: Path, results: dict, pictures: dict[str, Path]) -> None:
    """Resume the run's W&B run and add the numbers (summary, ``eval/...``) and the pictures."""
    mode = wandb_mode(cfg.logger)
    if mode == "disabled":
        return
    import wandb

    numbers = {f"eval/{k}": v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    numbers.update({f"eval/iwae_{k}": v for k, v in results["test_iwae"].items()})
    numbers.update({f"eval/active_units_layer{i + 1}": n for i, n in enumerate(results["active_units"])})
    try:
        run = wandb.init(
            project=cfg.logger.project, entity=cfg.logger.entity, id=_wandb_id(run_dir), resume="allow",
            dir=str(run_dir), mode=mode, name=f"{run_dir.parent.name}/{run_dir.name}",
        )
        run.log({f"eval/{name}": wandb.Image(str(path), caption=name) for name, path in pictures.items()})
        run.summary.update(numbers)
        run.finish()
    except Exception as error:  # eval.json is written; W&B trouble should not hide it
        warnings.warn(f"could not log the evaluation to W&B: {first_line(error)}", stacklevel=2)


def table_lines(results: dict) -> list[str]:
    """The printed summary: where, on what, and the numbers in nats per image."""
    s = results["ll_samples"]
    shown = f"{results['test_images']} of {results['test_set_size']}"
    lines = [
        f"checkpoint: {results['checkpoint']} ({results['checkpoint_choice']})",
        f"device: {results['device']}   test images: {shown}   data: {results['data']} "
        f"(binarize={results['binarize']})   model: {results['model']}",
        "",
        f"{'':<30}{'nats per image':>16}",
    ]
    se = results["test_ll_se"]
    lines.append(f"{f'log-likelihood L_{s}':<30}{results['test_ll']:>16.2f}" + (f"   (s.e. {se:.2f})" if se else ""))
    if results["pareto_k_max"] is not None:
        lines.append(
            f"{'  its effective sample size':<30}{results['ess_mean']:>16.1f}   (min {results['ess_min']:.1f} of {s})"
        )
        lines.append(f"{'  Pareto k-hat of its weights':<30}{results['pareto_k_mean']:>16.2f}   (max {results['pareto_k_max']:.2f})")
    lines.append(f"{f'ELBO ({s} samples)':<30}{results['test_elbo']:>16.2f}")
    lines.append(f"{'  its KL term':<30}{results['test_kl']:>16.2f}   (reconstruction {results['test_reconstruction']:.2f})")
    if len(results["test_kl_per_layer"]) > 1:
        per_layer = ", ".join(f"z{layer} {kl:.2f}" for layer, kl in enumerate(results["test_kl_per_layer"], start=1))
        lines.append(f"{'  ... per layer':<30}{per_layer:>16}")
    for k, value in results["test_iwae"].items():
        lines.append(f"{f'IWAE bound L_{k}':<30}{value:>16.2f}")
    order = results["bound_order"]
    lines.append(f"{'  ' + order['chain']:<30}{'holds' if order['holds'] else 'does NOT hold':>16}")
    if results["bits_per_dim"] is not None:
        lines.append(f"{'bits/dim (of the stored values)':<30}{results['bits_per_dim']:>16.3f}")
    if results["ais"] is not None:
        a = results["ais"]
        budget = f"{a['steps']} steps x {a['chains']} chains"
        lines.append(f"{f'AIS ({budget})':<30}{a['test_ll']:>16.2f}   (first {a['images']} images, where L_{s} is {a['ll_samples_same_images']:.2f})")
    if results["bdmc"] is not None:
        b = results["bdmc"]
        label = f"BDMC lower, {b['images']} simulated"
        lines.append(f"{label:<30}{b['lower']:>16.2f}   (upper {b['upper']:.2f}, gap {b['gap']:.2f})")
    if results["test_bits_per_dim"] is not None:
        lines.append(f"{'bits/dim (8-bit convention)':<30}{results['test_bits_per_dim']:>16.3f}")
    for layer, (active, dim) in enumerate(zip(results["active_units"], results["latent_dims"]), start=1):
        lines.append(f"{f'active units, layer {layer}':<30}{f'{active} of {dim}':>16}")
    lines += [
        "",
        f"results: {Path(results['run_dir']) / EVAL_FILE}",
        f"pictures: {', '.join(Path(p).name for p in results['pictures'].values())}",
    ]
    return lines


def help_text() -> str:
    keys = _key_lines(EvalConfig, "eval.")
    return "\n".join([USAGE, "eval keys (and every key of python -m vaelab.fit --help):", *keys])


def run(words: list[str]) -> int:
    if {"--help", "-h"} & set(words):
        print(help_text())
        return 0
    targets = [w[len(CKPT_KEY):] for w in words if w.startswith(CKPT_KEY)]
    overrides = [w for w in words if not w.startswith(CKPT_KEY)]
    if not targets or not targets[-1]:
        raise ConfigError("say which run to evaluate: ckpt=<run dir> or ckpt=<file.ckpt>; see --help")
    run_dir, checkpoint, why = find_checkpoint(targets[-1], key="ckpt", prefer_best=True)
    cfg = load_config(run_dir, overrides)
    try:
        results = evaluate(cfg, run_dir, checkpoint, why)
    except ResultsWriteError as error:
        raise error.with_fix(f"{error.remedy}, or copy the run directory elsewhere and pass ckpt=<the copy>") from error
    for line in table_lines(results):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, argv, memory_settings="eval.chunk_size or eval.batch_size")


if __name__ == "__main__":
    sys.exit(main())
