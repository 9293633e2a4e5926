"""Pictures of a trained VAE, as image tensors [3, H, W] in [0, 1] (torchvision's ``make_grid``).

* ``image_grids``: decoder means of prior samples, and test inputs above their reconstructions.
* ``interpolation_grids``: decoded paths between the top-layer posterior means of pairs of
  test images, linear and spherical (slerp).
* ``manifold_grid``: for a 2-D top latent, decoder means over a grid of the prior's quantiles,
  the learned data manifold of Kingma & Welling's Figure 4 (for a prior with a quantile
  function; :func:`manifold_problem` says why not otherwise).
* ``latent_scatter``: 2-D points (the test set's posterior means), coloured by label.
* ``hierarchy_grids``: for several stochastic layers, prior samples at temperatures, and
  reconstructions that keep q's draw for the top 1, 2, ... L layers only.

Every grid is written as a PNG by ``save_grids`` (atomically, so a reader never sees half a file).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid, save_image

from vaelab.models.vae import VAE
from vaelab.files.atomic import replace_atomically

PAD = 2  # pixels between the images of a grid, in white


def _as_images(x: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
    """Flat data [..., C*H*W] -> images [N, C, H, W] in [0, 1]: make_grid shows one channel as grey, three as RGB."""
    return x.reshape(-1, *image_shape).clamp(0, 1).float().cpu()


def _device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


def _dtype(vae: VAE) -> torch.dtype:
    return next(vae.parameters()).dtype


@torch.no_grad()
def image_grids(vae: VAE, test_images: Tensor, image_shape: tuple[int, int, int], count: int, seed: int) -> dict[str, Tensor]:
    """``samples``: decoder means E[x|z] for z from the prior; ``reconstructions``: rows of
    inputs above their reconstructions E[x | z = mu(x)]."""
    device = _device(vae)
    per_row = min(8, count)
    count -= count % per_row  # whole rows, so each input sits above its reconstruction
    samples = _as_images(vae.sample(count, torch.Generator().manual_seed(seed)), image_shape)
    inputs = test_images[:count].to(device, _dtype(vae))
    recon = _as_images(vae.reconstruct(inputs), image_shape)
    pairs = []
    for start in range(0, len(recon), per_row):
        pairs += [_as_images(inputs[start : start + per_row], image_shape), recon[start : start + per_row]]
    return {
        "samples": make_grid(samples, nrow=per_row, padding=PAD, pad_value=1.0),
        "reconstructions": make_grid(torch.cat(pairs), nrow=per_row, padding=PAD, pad_value=1.0),
    }


TEMPERATURES = (1.0, 0.85, 0.7, 0.5)  # rows of hierarchy_grids' samples, every layer at the row's


@torch.no_grad()
def hierarchy_grids(vae: VAE, test_images: Tensor, image_shape: tuple[int, int, int], seed: int) -> dict[str, Tensor]:
    """For several stochastic layers: ``temperatures``, a row of prior samples per temperature of
    TEMPERATURES (the same noise in every row); ``layer_reconstructions``, 8 test inputs above rows
    that keep q's draw for the top 1, 2, ... L layers and the means of p below (what each layer adds)."""
    layers, per_row = len(vae.latent_dims), min(8, len(test_images))
    rows = [
        _as_images(vae.sample_at_temperatures(per_row, [t] * layers, torch.Generator().manual_seed(seed)), image_shape)
        for t in TEMPERATURES
    ]
    inputs = test_images[:per_row].to(_device(vae), _dtype(vae))
    kept = [_as_images(vae.reconstruct_from_top_layers(inputs, top, seed), image_shape) for top in range(1, layers + 1)]
    return {
        "temperatures": make_grid(torch.cat(rows), nrow=per_row, padding=PAD, pad_value=1.0),
        "layer_reconstructions": make_grid(torch.cat([_as_images(inputs, image_shape), *kept]), nrow=per_row, padding=PAD, pad_value=1.0),
    }


def save_grids(grids: dict[str, Tensor | Image.Image], run_dir: Path, prefix: str = "") -> dict[str, Path]:
    """Write each grid (a tensor [C, H, W] in [0, 1], or a PIL image) to ``run_dir/<prefix><name>.png``."""
    paths = {}
    for name, grid in grids.items():
        path = paths[name] = Path(run_dir) / f"{prefix}{name}.png"
        if isinstance(grid, Image.Image):
            replace_atomically(path, lambda tmp, grid=grid: grid.save(tmp, format="PNG"))
        else:
            replace_atomically(path, lambda tmp, grid=grid: save_image(grid, tmp, format="png"))
    return paths


# ---------------------------------------------------------------- interpolation


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Straight line: (1 - t) z0 + t z1 for each t: [len(t), *z0.shape]."""
    t = t.reshape(-1, *([1] * z0.dim())).to(z0)
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation along the last dimension: [len(t), *z0.shape].

    The direction moves along the great circle from z0/|z0| to z1/|z1| at constant angular
    speed (Shoemake's slerp, used for generative models by White, *Sampling Generative
    Networks*, 2016) and the norm goes linearly from |z0| to |z1|; for vectors of equal norm
    this is White's formula sin((1-t)W)/sin(W) z0 + sin(tW)/sin(W) z1. A straight line between
    two points of a high-dimensional Gaussian's thin shell (norm about sqrt(d)) passes close to
    the origin, where the prior puts almost no mass; this path stays at the endpoints' norms.
    Where the two directions (nearly) coincide or are opposite the direction is undefined or
    degenerate, and the path falls back to the straight line.
    """
    t = t.reshape(-1, *([1] * z0.dim())).to(z0)
    r0, r1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    u0, u1 = z0 / r0.clamp_min(eps), z1 / r1.clamp_min(eps)
    omega = torch.arccos((u0 * u1).sum(-1, keepdim=True).clamp(-1, 1))
    sin = torch.sin(omega)
    degenerate = (sin < 1e-4) | (r0 < eps) | (r1 < eps)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    direction = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / safe_sin
    path = ((1 - t) * r0 + t * r1) * direction
    return torch.where(degenerate, lerp(z0, z1, t.flatten()), path)


@torch.no_grad()
def interpolation_grids(
    vae: VAE, inputs: Tensor, top_means: Tensor, image_shape: tuple[int, int, int], steps: int
) -> dict[str, Tensor]:
    """One row per pair (inputs[2i], inputs[2i+1]): the first input, the decoder means
    E[x | z_L] (``VAE.decode``) at ``steps`` points from the first image's top-layer
    posterior mean to the second's (ends included), then the second input.

    ``top_means``: E_q[z_L | x] of ``inputs``, [len(inputs), top_latent_dim].
    Returns ``interpolation_linear`` and ``interpolation_slerp``.
    """
    pairs = len(inputs) // 2
    if pairs == 0:
        return {}
    device, dtype = _device(vae), _dtype(vae)
    z = top_means[: 2 * pairs].to(device, dtype)
    z0, z1 = z[0::2], z[1::2]
    t = torch.linspace(0, 1, steps, dtype=dtype, device=device)
    grids = {}
    for name, path in (("interpolation_linear", lerp), ("interpolation_slerp", slerp)):
        points = path(z0, z1, t).transpose(0, 1)  # [pairs, steps, d]
        decoded = _as_images(vae.decode(points.reshape(pairs * steps, -1)), image_shape)
        decoded = decoded.reshape(pairs, steps, *image_shape)
        ends = _as_images(inputs[: 2 * pairs], image_shape).reshape(pairs, 2, *image_shape)
        rows = torch.cat([ends[:, :1], decoded, ends[:, 1:]], dim=1)  # [pairs, steps + 2, C, H, W]
        grids[name] = make_grid(rows.flatten(0, 1), nrow=steps + 2, padding=PAD, pad_value=1.0)
    return grids


# ---------------------------------------------------------------- 2-D latents


def manifold_points(size: int, icdf=torch.special.ndtri) -> Tensor:
    """The size x size grid of z in R^2 at which the manifold is decoded: [size, size, 2].

    The unit square's cell centres u = (i + 1/2) / size, mapped through the inverse CDF of
    the prior's marginal in each coordinate (N(0, 1): Kingma & Welling, Figure 4), so that the
    grid covers the prior evenly by probability. Row r, column c holds
    (z_1, z_2) = (F^-1(u_c), F^-1(u_{size-1-r})): z_1 grows to the right and z_2 upwards, as on a plot.
    """
    u = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    q = icdf(u)
    z1 = q.expand(size, size)
    z2 = q.flip(0).unsqueeze(1).expand(size, size)
    return torch.stack([z1, z2], dim=-1)


def manifold_problem(vae: VAE) -> str | None:
    """Why the manifold picture cannot be drawn for ``vae``, or None if it can."""
    if vae.top_latent_dim != 2:
        return f"the learned manifold needs a 2-D top latent, not {vae.top_latent_dim}-D"
    if vae.prior.icdf(torch.tensor([0.5], dtype=torch.float64)) is None:
        return f"the {type(vae.prior).__name__} has no quantile function per coordinate (a mixture does not factorise)"
    return None


@torch.no_grad()
def manifold_grid(vae: VAE, image_shape: tuple[int, int, int], size: int) -> Tensor:
    """Decoder means E[x | z_L] over ``manifold_points(size)`` of the prior's quantiles, tiled without gaps."""
    problem = manifold_problem(vae)
    if problem is not None:
        raise ValueError(problem)
    z = manifold_points(size, vae.prior.icdf).reshape(-1, 2).to(_dtype(vae)).to(_device(vae))  # cast first: mps has no float64
    images = _as_images(vae.decode(z), image_shape)
    return make_grid(images, nrow=size, padding=0)


# matplotlib's "tab10" colours, so the plot reads like the usual ones
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values inside [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


POINT_RADIUS = 1.6  # pixels: thousands of points on a 640-pixel plot stay distinguishable


def latent_scatter(
    points: Tensor,
    labels: Tensor | None = None,
    size: int = 640,
    axis_names: tuple[str, str] = ("z1", "z2"),
    seed: int = 0,
) -> Image.Image:
    """A scatter plot of 2-D points as an RGB PIL image, drawn with PIL alone (no matplotlib).

    With ``labels`` (integers; MNIST digits) each point takes its label's colour and a legend
    names them; without (Frey faces) every point is one colour. Points are drawn in a seeded
    random order so that no class hides another wholesale.
    """
    points = points.detach().double().cpu()
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"expected points of shape [N, 2], not {list(points.shape)}")
    font = ImageFont.load_default()
    legend = 0 if labels is None else 60
    left, right, top, bottom = 64, 16 + legend, 24, 44
    width, height = size + legend, size
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_w, plot_h = width - left - right, height - top - bottom

    finite = points[torch.isfinite(points).all(1)]
    low = finite.min(0).values if len(finite) else torch.zeros(2, dtype=torch.float64)
    high = finite.max(0).values if len(finite) else torch.ones(2, dtype=torch.float64)
    span = (high - low).clamp_min(1e-6)
    low, high = low - 0.05 * span, high + 0.05 * span

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - low[0].item()) / (high[0] - low[0]).item() * plot_w,
            top + (high[1].item() - y) / (high[1] - low[1]).item() * plot_h,
        )

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for value in _ticks(low[0].item(), high[0].item()):
        x, _ = to_pixel(value, 0.0)
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill="black")
        draw.text((x, top + plot_h + 6), f"{value:g}", fill="black", font=font, anchor="mt")
    for value in _ticks(low[1].item(), high[1].item()):
        _, y = to_pixel(0.0, value)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((left - 6, y), f"{value:g}", fill="black", font=font, anchor="rm")
    draw.text((left + plot_w / 2, height - 6), axis_names[0], fill="black", font=font, anchor="mb")
    draw.text((left, top - 4), axis_names[1], fill="black", font=font, anchor="lb")

    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    for index in order.tolist():
        x, y = points[index].tolist()
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        colour = PALETTE[0] if labels is None else PALETTE[int(labels[index]) % len(PALETTE)]
        px, py = to_pixel(x, y)
        draw.ellipse([px - POINT_RADIUS, py - POINT_RADIUS, px + POINT_RADIUS, py + POINT_RADIUS], fill=colour)

    if labels is not None:
        _draw_legend(draw, labels, width - legend - 4, top + 8, font)
    return image


def _draw_legend(draw: ImageDraw.ImageDraw, labels: Tensor, x: int, y: int, font) -> None:
    """One row per label from (x, y) down: its colour and its value."""
    for row, label in enumerate(sorted(set(int(v) for v in labels.tolist()))):
        row_y = y + 16 * row
        draw.rectangle([x, row_y - 5, x + 10, row_y + 5], fill=PALETTE[label % len(PALETTE)])
        draw.text((x + 16, row_y), str(label), fill="black", font=font, anchor="lm")
