"""What only a CUDA device can show: the compiled training step as a CUDA graph, a fit on the
GPU that resumes exactly, and the test-set estimate on the GPU against the CPU's.

Every test here is marked ``cuda`` and skipped without a CUDA device (they have never run in
CI, which has none); ``benchmarks/gpu_check.sh`` runs ``pytest -m cuda`` where a GPU is lent.
The data are made here (random binary images, tiny MNIST files of the real format), so nothing
depends on the real datasets being on the GPU machine.
"""

from __future__ import annotations

import statistics

import pytest
import torch
from torch._dynamo.utils import counters

from tests.helpers import assert_same_training_state, exact_fit_words, metrics_rows, write_mnist
from vaelab.config.plain import to_plain
from vaelab.config.schema import EvalConfig, ModelConfig, OptimConfig
from vaelab.fit import main
from vaelab.models.compiled import CompiledForBatchSize
from vaelab.models.module import VAEModule
from vaelab.evaluation.scores import importance_scores

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,  # each compiles or starts CUDA: seconds, over the fast tier's limit
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BATCH = 50
RANDN = torch.randn  # torch's own, whatever a test patched since


def small_module() -> VAEModule:
    """The default model's parts at a small size (784-64-4, Bernoulli, analytic-KL ELBO), on the GPU."""
    torch.manual_seed(0)
    module = VAEModule(
        model=to_plain(ModelConfig(latent_dim=4, hidden=[64])), optim=to_plain(OptimConfig()), eval=to_plain(EvalConfig()),
        data_dim=784, image_shape=(28, 28), compile=False,
    )
    return module.cuda()


def binary_batches(n: int, rows: int = BATCH, seed: int = 1) -> list[torch.Tensor]:
    """n different minibatches of binary images, drawn on the CPU and moved to the GPU."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.bernoulli(torch.full((rows, 784), 0.3), generator=generator).cuda() for _ in range(n)]


def loss_and_gradients(step, module: VAEModule, x: torch.Tensor) -> tuple[float, float, list[torch.Tensor]]:
    """One training step's loss, bound sum and gradients, as ``VAEModule.training_step`` takes them
    (grads set to None, the step's function, ``backward``), without the update."""
    for parameter in module.parameters():
        parameter.grad = None
    loss, bound_sum, _ = step(x, None)  # the third: the sums of the ELBO's terms
    loss.backward()
    return loss.item(), bound_sum.item(), [p.grad.clone() for p in module.parameters()]


def assert_ran_as_cuda_graphs() -> None:
    """Since ``counters.clear()``, dynamo compiled a graph and inductor declined none of the graphs
    it compiled as a CUDA graph (``cudagraph_skips``: such a graph runs uncaptured, silently, e.g.
    for a CPU tensor or a mutated input): the CUDA graph path was taken, not a silent fallback to
    eager or to uncaptured kernels. Both are counted when a graph is compiled, once for every
    later call that reuses it."""
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert counters["inductor"]["cudagraph_skips"] == 0, "inductor ran a compiled graph without CUDA graphs"


def test_a_compiled_cuda_step_computes_the_eager_step():
    """``CompiledForBatchSize`` on CUDA (``torch.compile`` mode ``reduce-overhead``: a CUDA graph,
    recorded on an early call and replayed after) gives the eager step's loss, bound and
    gradients on each of 8 different minibatches, within float32 rounding (rtol 1e-5 for the
    loss, 1e-4 with atol 1e-5 for the gradients). The compiled step draws its noise with
    inductor's own generator, not eager torch's, so the noise is switched off for this: q(z|x)'s
    log-variance is set to -30 (standard deviation 3e-7), which moves the loss by about 1e-6 nats.
    A graph that replayed its first input instead of copying in each new minibatch fails (the
    minibatches' losses differ by nats), and so does any term computed differently, or a step
    that silently ran without CUDA graphs (:func:`assert_ran_as_cuda_graphs`)."""
    module = small_module()
    encoder = module.vae.encoders[0]
    with torch.no_grad():
        encoder.log_var.weight.zero_()
        encoder.log_var.bias.fill_(-30.0)
    counters.clear()
    compiled = CompiledForBatchSize(module._loss_and_bound_sum, BATCH, torch.device("cuda"))
    losses = []
    for index, x in enumerate(binary_batches(8)):
        eager_loss, eager_bound, eager_grads = loss_and_gradients(module._loss_and_bound_sum, module, x)
        loss, bound, grads = loss_and_gradients(compiled, module, x)
        assert loss == pytest.approx(eager_loss, rel=1e-5), index
        assert bound == pytest.approx(eager_bound, rel=1e-5), index
        for (name, _), grad, eager_grad in zip(module.named_parameters(), grads, eager_grads):
            torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-5, msg=f"minibatch {index}: {name}")
        losses.append(loss)
    assert len(set(losses)) == len(losses)  # the minibatches differ, so do their losses
    assert_ran_as_cuda_graphs()


def test_cuda_graph_replays_draw_fresh_noise():
    """With the model's own posterior variance, 200 replays of the compiled step on one minibatch
    draw different noises: no two consecutive losses are equal and at least 180 of the 200 are
    distinct (a graph that replayed its recorded random numbers would repeat one loss; a few
    distinct draws do round to the same float32 loss, as they did on the CPU), and their mean loss is the eager step's mean over 200 draws within
    5 standard errors of the difference (a correct step fails with probability below 1e-6; the
    seed is fixed): the same estimator, with another generator's noise."""
    module = small_module()
    x = binary_batches(1)[0]
    compiled = CompiledForBatchSize(module._loss_and_bound_sum, BATCH, torch.device("cuda"))
    for _ in range(3):  # warm-up and recording
        loss_and_gradients(compiled, module, x)
    draws = 200
    eager = [loss_and_gradients(module._loss_and_bound_sum, module, x)[0] for _ in range(draws)]
    replayed = [loss_and_gradients(compiled, module, x)[0] for _ in range(draws)]
    assert all(a != b for a, b in zip(replayed, replayed[1:])), "two consecutive replays gave the same loss"
    assert len(set(replayed)) >= 0.9 * draws, f"{draws - len(set(replayed))} repeated losses among the replays"
    spread = (statistics.variance(eager) / draws + statistics.variance(replayed) / draws) ** 0.5
    assert abs(statistics.mean(replayed) - statistics.mean(eager)) <= 5 * spread, (statistics.mean(replayed), statistics.mean(eager), spread)


def cpu_noise(monkeypatch, seed: int) -> None:
    """Every ``torch.randn`` from now on draws from one CPU generator seeded with ``seed`` and is
    moved to the device asked for: the CPU and the GPU then see the same samples of q."""
    generator = torch.Generator().manual_seed(seed)

    def same_on_every_device(*shape, device=None, **kwargs):
        kwargs.pop("generator", None)
        return RANDN(*shape, generator=generator, **kwargs).to(device)

    monkeypatch.setattr(torch, "randn", same_on_every_device)


def test_the_estimate_on_cuda_is_the_cpus_on_the_same_samples(monkeypatch):
    """The importance-sampled log p(x) (L_500), its ELBO estimate and L_5 of 20 images, scored as
    ``vaelab.evaluate`` scores (``importance_scores``: 5 images a batch, 50 samples a chunk) on the
    GPU and on the CPU from the same samples of q (drawn on the CPU, see :func:`cpu_noise`), agree
    per image within float32 rounding: rtol 1e-5 (5e-3 nats at the -550 nats of an untrained
    model) and atol 1e-3. On the CPU, float32 against float64 on these samples differed by 1-2%
    of that tolerance; a second seed's samples move some image's L_500 by over 20 times it (375
    times, measured on the CPU), so the comparison does test that both devices compute the same
    function of the same samples."""
    vae = small_module().vae.eval()
    x = binary_batches(1, rows=20)[0].cpu()
    tolerance = {"rtol": 1e-5, "atol": 1e-3}

    def scores(device: str, seed: int = 0):
        cpu_noise(monkeypatch, seed)
        return importance_scores(vae.to(device), x, 500, iwae_k=[5], chunk_size=50, batch_size=5, compile=False)

    on_gpu, on_cpu = scores("cuda"), scores("cpu")
    torch.testing.assert_close(on_gpu.ll, on_cpu.ll, **tolerance)
    torch.testing.assert_close(on_gpu.elbo, on_cpu.elbo, **tolerance)
    torch.testing.assert_close(on_gpu.iwae[5], on_cpu.iwae[5], **tolerance)
    other = scores("cpu", seed=1)  # other samples: the comparison must be able to see them
    allowed = tolerance["atol"] + tolerance["rtol"] * on_cpu.ll.abs()
    moved = ((other.ll - on_cpu.ll).abs() / allowed).max().item()
    assert moved > 20, f"another seed moves L_500 by at most {moved:.1f} times the tolerance"


def test_a_compiled_cuda_fit_resumes_exactly(tmp_path):
    """``python -m vaelab.fit`` on the GPU with the step compiled as a CUDA graph and
    ``trainer.deterministic=true``: 2 epochs in one go, and 1 epoch then ``run.resume`` to 2,
    end with bit-identical parameters and optimizer state, the same test numbers and the same
    training bounds in metrics.csv (10 steps an epoch, 3 per call, tiny MNIST files). The
    resumed run's rows go on from step 10: the metrics continue. The fits' compiled
    steps ran as CUDA graphs (:func:`assert_ran_as_cuda_graphs`)."""
    write_mnist(tmp_path, n_train=600, n_test=100)
    words = [
        *[w for w in exact_fit_words(2, 10, 3) if not w.startswith(("trainer.accelerator=", "trainer.compile="))],
        "trainer.accelerator=gpu", "trainer.compile=true", f"data.root={tmp_path}",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    counters.clear()
    assert main([*words, f"run.dir={straight}"]) == 0
    assert main([*words, "trainer.max_epochs=1", f"run.dir={resumed}"]) == 0
    assert main([f"run.resume={resumed}", "trainer.max_epochs=2"]) == 0
    assert_ran_as_cuda_graphs()  # the later fits reuse the first one's compiled graph

    def last(run):
        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    assert_same_training_state(last(straight), last(resumed))

    def bounds(run):
        return [(row["step"], row["train/elbo"]) for row in metrics_rows(run) if row.get("train/elbo")]

    assert bounds(resumed) == bounds(straight) and len(bounds(straight)) == 20
    assert max(int(step) for step, _ in bounds(resumed)) == 19
    test_rows = [[row["test/ll"] for row in metrics_rows(run) if row.get("test/ll")] for run in (straight, resumed)]
    assert test_rows[0] and test_rows[0][-1] == test_rows[1][-1]
