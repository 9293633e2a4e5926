"""What ``python -m vaelab.fit`` prints (vaelab/training/console.py), in a pipe and on a terminal.

A real fit of tiny MNIST files, in a new Python process: 35 training images in minibatches of 5
are 7 optimizer steps an epoch, taken 3 per Lightning call (3, 3 and a partial last call of 1),
so a count of calls (3 an epoch) differs from the count of steps. In a pipe: one plain line per
epoch with its step and the bounds metrics.csv holds, the parts of the model summed to the
VAE's parameters, no carriage return and none of Lightning's noise; resumed for an epoch more,
only that epoch's line and one line on what it continues from. Under a pseudo-terminal: a bar
of the epoch's 7 steps.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.helpers import PROJECT, metrics_rows, write_mnist
from vaelab.models.module import VAEModule

pytestmark = pytest.mark.slow

EPOCHS, STEPS_PER_EPOCH = 3, 7  # 40 images - 5 for validation = 35, minibatches of 5
WORDS = [
    "experiment=smoke", "data.val_size=5", "data.batch_size=5", "trainer.steps_per_call=3",
    f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=2", "eval.ll_samples=5", "eval.batch_size=3",
    "trainer.compile=false", "eval.compile=false", "eval.num_images=4",
    "trainer.checkpoint_every_n_steps=3",  # last.ckpt within each epoch too
]
# What Lightning prints that a user can do nothing about (and its model summary of metrics).
NOISE = [
    "💡", "litlogger", "GPU available", "TPU available", "`Trainer.fit` stopped", "Restoring states",
    "Loaded model weights", "LeafSpec", "srun", "MeanMetric", "Total Flops", "Sanity Checking", "Validation",
    "LOCAL_RANK", "Tensor Cores", "No CUDA runtime", "weights_only",
]
EPOCH_LINE = re.compile(
    rf"epoch (\d+)/{EPOCHS}  step (\d+)  train ELBO (-?\d+\.\d\d)  val ELBO (-?\d+\.\d\d) nats  time (\d+\.\d) s"
)


def fit_command(root: Path) -> tuple[list[str], dict[str, str]]:
    write_mnist(root / "data", n_train=40, n_test=6)
    words = [*WORDS, f"data.root={root / 'data'}", f"run.dir={root / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    env.pop("VAELAB_RUN_DIR", None)
    return [sys.executable, "-m", "vaelab.fit", *words], env


@pytest.fixture(scope="module")
def piped(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The fit with stdout and stderr to pipes, and its run directory."""
    root = tmp_path_factory.mktemp("piped")
    command, env = fit_command(root)
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, root / "run"


def test_a_pipe_gets_one_plain_line_per_epoch_with_its_optimizer_step_and_logged_bounds(piped):
    result, run_dir = piped
    assert "\r" not in result.stdout and "\r" not in result.stderr
    lines = [EPOCH_LINE.fullmatch(line) for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert all(lines), result.stdout
    assert [(int(m[1]), int(m[2])) for m in lines] == [(e, e * STEPS_PER_EPOCH) for e in range(1, EPOCHS + 1)]
    # the bounds of the epoch just ended, as metrics.csv has them (not the epoch before's)
    rows = metrics_rows(run_dir)
    train = [float(r["train/elbo_epoch"]) for r in rows if r.get("train/elbo_epoch")]
    val = [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]
    assert [float(m[3]) for m in lines] == [round(v, 2) for v in train]
    assert [float(m[4]) for m in lines] == [round(v, 2) for v in val]
    times = [float(m[5]) for m in lines]
    assert times == sorted(times) and times[-1] > 0


def test_a_pipe_gets_none_of_lightnings_noise_and_no_warning(piped):
    result, _ = piped
    for text in NOISE:
        assert text not in result.stdout and text not in result.stderr, text
    assert result.stderr == "", result.stderr


def test_the_parts_summary_counts_every_parameter_of_the_vae_once(piped):
    result, run_dir = piped
    out = result.stdout.splitlines()
    assert out.count("model parameters:") == 1
    start = out.index("model parameters:")
    end = next(i for i in range(start, len(out)) if out[i].strip().startswith("total "))
    assert end < next(i for i, line in enumerate(out) if line.startswith("epoch ")), "the summary comes first"
    rows = [re.fullmatch(r"  (.+?)\s+([\d,]+)", line) for line in out[start + 1 : end + 1]]
    assert all(rows), out[start : end + 1]
    counts = {m[1]: int(m[2].replace(",", "")) for m in rows}
    total = counts.pop("total")
    assert {"prior: N(0, I)", "likelihood (bernoulli): output layers of p(x|z1)"} <= counts.keys()
    assert sum(counts.values()) == total
    checkpoint = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    vae = VAEModule.load_from_checkpoint(checkpoint, map_location="cpu").vae
    assert total == sum(p.numel() for p in vae.parameters())
    assert any(line.startswith("training step: ") and "GFLOP" in line for line in out)


def test_a_resumed_run_prints_its_own_epochs_and_only_that_it_restored(piped, tmp_path):
    """Last of the tests of ``piped``: it adds an epoch to that run."""
    _, run_dir = piped
    command = [sys.executable, "-m", "vaelab.fit", f"run.resume={run_dir}", f"trainer.max_epochs={EPOCHS + 1}"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [line.split("  ")[:2] for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == [[f"epoch {EPOCHS + 1}/{EPOCHS + 1}", f"step {(EPOCHS + 1) * STEPS_PER_EPOCH}"]]
    # no warning that the run's own checkpoints/ is not empty; one line on what it continues from
    assert result.stderr.splitlines() == [f"Restored all states from the checkpoint at {run_dir / 'checkpoints' / 'last.ckpt'}"]


def test_a_terminal_gets_a_bar_of_the_epochs_optimizer_steps(tmp_path):
    command, env = fit_command(tmp_path)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0
    screen = b"".join(chunks).decode(errors="replace")
    # each redraw of the bar: "epoch 2/3:  43%|###   | 3/7 [00:00<00:00, 40.1 steps/s, train ELBO -280.12]"
    draws = re.findall(rf"epoch (\d)/{EPOCHS}: +\d+%\|[^|]*\| (\d+)/(\d+) \[[^\]]*steps/s", screen)
    assert draws, screen[-3000:]
    assert {int(total) for _, _, total in draws} == {STEPS_PER_EPOCH}
    for epoch in range(1, EPOCHS + 1):
        done = {int(n) for e, n, _ in draws if int(e) == epoch}
        assert done <= {0, 3, 6, 7} and 7 in done, (epoch, done)  # whole calls of 3 steps, then the last 1
    assert len(re.findall(r"^epoch \d/\d  step", screen.replace("\r", "\n"), flags=re.MULTILINE)) == EPOCHS
    for text in NOISE:
        assert text not in screen, text


def test_a_warning_is_one_line_with_the_command_s_name(tmp_path):
    """Python shows a warning as two lines (file:line: category: message, then the source line
    that warned); a command shows ``vaelab.fit: warning: <message>`` alone."""
    command, env = fit_command(tmp_path)
    command = [*command, "trainer.max_epochs=1", "trainer.limit_test_batches=1", "data.binarize=none"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        "vaelab.fit: warning: model=bernoulli on continuous data: the Bernoulli log-likelihood of grey levels "
        "is not a normalised density, so its nats are not comparable with published ones"
    ], result.stderr  # and Lightning's echo of limit_test_batches=1 is gone too
