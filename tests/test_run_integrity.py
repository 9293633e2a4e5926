"""Nothing corrupt, nothing lost: checkpoints written whole, broken ones named, one writer per run
directory, running out of memory in one line.

Real files and processes throughout: checkpoints are cut short or have a byte flipped, writers
are killed with SIGKILL, memory runs out on a real allocation request (hundreds of TiB, more
than any machine's address space, so the allocator refuses at once instead of swapping).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelab.config.compose import compose, parse_command_line
from vaelab.errors import CheckpointError, RunDirInUseError, out_of_memory_message
from vaelab.evaluate import main as evaluate_main
from vaelab.fit import build_run
from vaelab.fit import main as fit_main
from vaelab.files.atomic import PARTIAL_PREFIX, remove_leftovers
from vaelab.training.checkpoints import AtomicCheckpointIO, checkpoint_problem
from vaelab.training.run_dir import find_checkpoint
from vaelab.training.run_lock import LOCK_FILE, one_writer

from tests.helpers import MNIST_RAW, PROJECT, TINY_FIT, needs_mnist

# One epoch of 3 training batches: a few seconds.
TINY = [*TINY_FIT, "trainer.limit_val_batches=2", "trainer.limit_test_batches=1"]
HUGE = 10**11  # samples: one tensor of them takes hundreds of TiB


def error_line(stderr: str, prog: str) -> str:
    """The last line of stderr, checked to be the command's one-line error."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"{prog}: error: "), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[-1]


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def cut_short(path: Path) -> None:
    """What a kill or a full disk during a plain write leaves: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A run directory after a one-epoch fit (checkpoints/best-epoch0.ckpt and last.ckpt)."""
    if not (MNIST_RAW / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {MNIST_RAW}")  # needs_mnist does not reach fixtures
    run_dir = tmp_path_factory.mktemp("one-epoch") / "run"
    assert fit_main([*TINY, f"run.dir={run_dir}"]) == 0
    return run_dir


@pytest.fixture
def run_copy(one_epoch, tmp_path) -> Path:
    return Path(shutil.copytree(one_epoch, tmp_path / "run"))


# ---------------------------------------------------------------- atomic checkpoints


def test_a_failed_checkpoint_write_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.arange(10.0)}, path)
    before = path.read_bytes()
    # Pickling fails after the tensor is written: torch.save stops half-way through its file.
    with pytest.raises(Exception):
        io.save_checkpoint({"weights": torch.ones(10**6), "unpicklable": lambda: None}, path)
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(10.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


WRITER = """
import sys, torch
from pathlib import Path
from vaelab.training.checkpoints import AtomicCheckpointIO
io, path, i = AtomicCheckpointIO(), Path(sys.argv[1]), 0
while True:
    io.save_checkpoint({"step": i, "weights": torch.full((4_000_000,), float(i))}, path)
    i += 1
"""


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_leaves_a_whole_checkpoint(tmp_path):
    """SIGKILL while a 16 MB checkpoint is being written (its temporary file exists) over an older one."""
    path = tmp_path / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=PROJECT)
    try:
        deadline = time.monotonic() + 120
        killed_mid_write = False
        while time.monotonic() < deadline and writer.poll() is None:
            if path.exists() and any(tmp_path.glob(f"{PARTIAL_PREFIX}*")):  # a rewrite is under way
                writer.send_signal(signal.SIGKILL)
                killed_mid_write = True
                break
            time.sleep(0.001)
        assert killed_mid_write, f"never saw a write in progress (writer exit status {writer.poll()})"
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert checkpoint_problem(path) is None
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["weights"], torch.full((4_000_000,), float(state["step"])))
    left = sorted(tmp_path.glob(f"{PARTIAL_PREFIX}*"))
    assert sorted(remove_leftovers(tmp_path)) == left  # the dead writer's half-written files, and only those
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoint_problem_tells_truncated_and_corrupt_files_apart(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"weights": torch.randn(1000)}, path)
    assert checkpoint_problem(path) is None
    flip_a_byte(path)
    assert checkpoint_problem(path).startswith("corrupt (its member x/data/0 fails the CRC check")
    torch.save({"weights": torch.randn(1000)}, path)
    cut_short(path)
    assert checkpoint_problem(path).startswith("truncated or not a checkpoint")


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_every_checkpoint_of_a_fit_goes_through_the_atomic_writer(strategy, tmp_path):
    words = [*TINY, f"run.dir={tmp_path / 'run'}", f"trainer.strategy={strategy}", "trainer.accelerator=cpu"]
    run = build_run(compose(parse_command_line([*words, "trainer.devices=2" if strategy == "ddp" else "trainer.devices=1"])))
    assert type(run.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


@pytest.mark.slow
@needs_mnist
def test_a_fit_leaves_whole_checkpoints_and_no_temporary_files(one_epoch):
    files = [p.relative_to(one_epoch) for p in one_epoch.rglob("*")]
    assert not [f for f in files if f.name.startswith(PARTIAL_PREFIX)], files
    checkpoints = sorted(one_epoch.rglob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["best-epoch0.ckpt", "last.ckpt"]
    assert all(checkpoint_problem(p) is None for p in checkpoints)


# ---------------------------------------------------------------- finding a run's checkpoint


def test_a_run_dir_gives_its_newest_best_checkpoint_to_evaluate_and_last_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True)
    for age, name in enumerate(["best-epoch3.ckpt", "last.ckpt", "best-epoch1.ckpt"]):  # written in this order
        (folder / name).write_bytes(b"")
        os.utime(folder / name, (1000 + age, 1000 + age))
    assert find_checkpoint(str(run_dir), "ckpt", prefer_best=True) == (run_dir, folder / "best-epoch1.ckpt", "the newest of 2 best-*.ckpt")
    assert find_checkpoint(str(run_dir), "run.resume")[:2] == (run_dir, folder / "last.ckpt")
    for name in ("best-epoch1.ckpt", "best-epoch3.ckpt"):
        (folder / name).unlink()
    assert find_checkpoint(str(run_dir), "ckpt", prefer_best=True)[1] == folder / "last.ckpt"
    # a file: its run directory is the folder above checkpoints/, or the folder that holds it
    assert find_checkpoint(str(folder / "last.ckpt"), "ckpt", prefer_best=True) == (run_dir, folder / "last.ckpt", "as given")
    (tmp_path / "loose.ckpt").write_bytes(b"")
    assert find_checkpoint(str(tmp_path / "loose.ckpt"), "run.resume")[0] == tmp_path
    (folder / "last.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*checkpoints: expected last.ckpt; pass run.resume=<run dir>"):
        find_checkpoint(str(run_dir), "run.resume")


# ---------------------------------------------------------------- broken checkpoints: one line, or the previous one


@pytest.mark.slow
def test_a_broken_checkpoint_file_is_one_line_naming_it(run_copy, capsys):
    last = run_copy / "checkpoints" / "last.ckpt"
    cut_short(last)
    before = snapshot(run_copy)
    capsys.readouterr()
    assert fit_main([f"run.resume={last}", "trainer.max_epochs=2"]) == 2
    line = error_line(capsys.readouterr().err, "vaelab.fit")
    assert line.startswith(f"vaelab.fit: error: cannot resume from {last}: the file is truncated or not a checkpoint"), line
    assert "run.resume=<run dir>" in line
    assert fit_main([f"run.resume={last}"]) == 2

    flip_a_byte(best := run_copy / "checkpoints" / "best-epoch0.ckpt")
    capsys.readouterr()
    assert evaluate_main([f"ckpt={best}", "eval.device=cpu"]) == 2
    line = error_line(capsys.readouterr().err, "vaelab.evaluate")
    assert line.startswith(f"vaelab.evaluate: error: cannot load checkpoint {best}: "), line
    assert "the file is corrupt (its member " in line and "fails the CRC check" in line, line
    assert evaluate_main([f"ckpt={last}", "eval.device=cpu"]) == 2
    assert f"cannot load checkpoint {last}: " in capsys.readouterr().err
    del before[best]
    after = snapshot(run_copy)
    del after[best]
    assert after == before  # nothing written


@pytest.mark.slow
@needs_mnist
def test_resuming_a_run_dir_whose_last_checkpoint_is_cut_short_uses_the_previous_whole_one(run_copy, capsys):
    last, best = run_copy / "checkpoints" / "last.ckpt", run_copy / "checkpoints" / "best-epoch0.ckpt"
    cut_short(last)
    capsys.readouterr()
    assert fit_main([f"run.resume={run_copy}", "trainer.max_epochs=2"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vaelab.fit: warning:")]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"vaelab.fit: warning: {last} is truncated or not a checkpoint ("), warnings
    assert warnings[0].endswith(f": resuming from {best}, the newest whole checkpoint of the run"), warnings
    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 6  # epoch 0 from best-epoch0.ckpt, then epoch 1
    assert checkpoint_problem(last) is None
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6


# ---------------------------------------------------------------- one writer per run directory


def test_one_writer_refuses_a_second_and_removes_a_directory_it_made_for_nothing(tmp_path):
    run_dir = tmp_path / "run"
    with one_writer(run_dir):
        assert (run_dir / LOCK_FILE).read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
        with pytest.raises(RunDirInUseError, match=f"run directory {run_dir} is in use by another vaelab.fit"):
            with one_writer(run_dir):  # another open file description: flock refuses it as another process
                pass
        with one_writer(run_dir, is_writer=False):  # DDP ranks other than 0 take no lock
            pass
    assert not run_dir.exists()  # made by one_writer, nothing but the lock written in it
    run_dir.mkdir()
    with one_writer(run_dir):
        (run_dir / "config.yaml").write_text("seed: 0\n")
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE, "config.yaml"]


@pytest.mark.slow
@needs_mnist
def test_a_second_fit_is_refused_while_one_trains_and_a_killed_ones_lock_does_not_block(tmp_path, capsys):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    first = subprocess.Popen(
        [sys.executable, "-m", "vaelab.fit", *TINY, f"run.dir={run_dir}", "trainer.max_epochs=10000", "trainer.compile=false"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.is_file(), f"the first fit wrote no last.ckpt (exit status {first.poll()})"
        holder = f"pid {first.pid} on {socket.gethostname()}"
        assert (run_dir / LOCK_FILE).read_text().strip() == holder

        for words in ([*TINY, f"run.dir={run_dir}"], [f"run.resume={run_dir}", "trainer.max_epochs=1"]):
            capsys.readouterr()
            assert fit_main(words) == 2
            line = error_line(capsys.readouterr().err, "vaelab.fit")
            assert line == (
                f"vaelab.fit: error: run directory {run_dir} is in use by another vaelab.fit ({holder}): "
                "wait for it to end, or choose another run.dir"
            )
        assert first.poll() is None, "the refused fits disturbed the first one"
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)

    assert (run_dir / LOCK_FILE).read_text().strip() == holder  # the dead process's lock file is left
    epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert fit_main([f"run.resume={run_dir}", f"trainer.max_epochs={epoch + 2}"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == epoch + 2
    assert not list(run_dir.rglob(f"{PARTIAL_PREFIX}*"))


# ---------------------------------------------------------------- out of memory


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize(
    "words, settings",
    [
        ([f"model.k={HUGE}"], "model.k or data.batch_size"),  # in a training step
        ([f"eval.ll_samples={HUGE}", f"eval.chunk_size={HUGE}"], "eval.chunk_size or eval.batch_size"),  # in testing
    ],
    ids=["training", "test"],
)
def test_fit_out_of_memory_is_one_line_saying_what_to_lower(words, settings, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert fit_main([*TINY, f"run.dir={run_dir}", *words]) == 2
    line = error_line(capsys.readouterr().err, "vaelab.fit")
    assert line.startswith("vaelab.fit: error: out of CPU memory (an allocation of "), line
    assert line.endswith(f" GiB): lower {settings}"), line
    assert all(checkpoint_problem(p) is None for p in tmp_path.rglob("*.ckpt"))  # nothing half-written
    assert not (run_dir / "summary.json").exists()


@pytest.mark.slow
@needs_mnist
def test_evaluate_out_of_memory_is_one_line_saying_what_to_lower(run_copy, capsys):
    before = snapshot(run_copy)
    capsys.readouterr()
    assert evaluate_main([f"ckpt={run_copy}", "eval.device=cpu", f"eval.ll_samples={HUGE}", f"eval.chunk_size={HUGE}"]) == 2
    line = error_line(capsys.readouterr().err, "vaelab.evaluate")
    assert line.startswith("vaelab.evaluate: error: out of CPU memory (an allocation of "), line
    assert line.endswith(" GiB): lower eval.chunk_size or eval.batch_size"), line
    assert snapshot(run_copy) == before  # no eval.json, no pictures


def test_the_cuda_out_of_memory_message_is_read_too():
    """No GPU here: torch's CUDA message, as torch.OutOfMemoryError carries it, and other errors."""
    cuda = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.20 GiB is free."
    )
    assert out_of_memory_message(cuda, "eval.chunk_size") == "out of GPU memory (an allocation of 20.00 GiB): lower eval.chunk_size"
    assert out_of_memory_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "model.k") is None
    assert out_of_memory_message(ValueError("can't allocate memory"), "model.k") is None
