"""An OS fault while writing results is one line naming the path and what to do, exit status 2,
and the last whole checkpoint is kept: before training (found before the data are read), during
it, in DDP, and in vaelab.evaluate and vaelab.sweep.

Real faults only: a file where a directory must be and the reverse; a read-only file system
(a read-only bind mount) and a full one (a small tmpfs), each mounted in a mount namespace of
its own (``unshare --mount``, as root) that ends with the test's commands.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import pytest
import torch

from tests.helpers import _FORKING_DRIVER, PROJECT, write_mnist
from vaelab.evaluate import main as evaluate_main
from vaelab.fit import main as fit_main
from vaelab.files.atomic import PARTIAL_PREFIX
from vaelab.training.checkpoints import checkpoint_problem
from vaelab.training.run_dir import RESULT_FILES

ELSEWHERE = "or pass run.dir=<a folder elsewhere>"
IN_THE_WAY = f"move it out of the way, {ELSEWHERE}"
EPOCHS = 2


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    """Tiny MNIST files: 4 training batches of 50 an epoch, 20 test images."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=200, n_test=20)
    return root


def fit_words(mnist_root: Path, run_dir: Path, *more: str) -> list[str]:
    """A fit of two epochs of a small MLP without validation (so epochN.ckpt is written each epoch)."""
    return [
        "experiment=smoke", "trainer.progress_bar=false", f"data.root={mnist_root}", "data.download=false",
        "data.val_size=0", "data.batch_size=50", "trainer.limit_train_batches=null",
        "trainer.limit_test_batches=null", f"trainer.max_epochs={EPOCHS}", "eval.ll_samples=5",
        "eval.num_images=8", "trainer.accelerator=cpu", "model.hidden=[32]", f"run.dir={run_dir}", *more,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(mnist_root, tmp_path_factory) -> Path:
    """The run directory of the whole fit, uninterrupted, on a disk with room."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert fit_main(fit_words(mnist_root, run_dir)) == 0
    return run_dir


def error_line(stderr: str, prog: str = "vaelab.fit") -> str:
    """The one ``<prog>: error:`` line of stderr, checked to be the only one, without a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_kept(run_dir: Path, epoch: int) -> None:
    """``last.ckpt`` is whole and holds the end of ``epoch``; no temporary file is left."""
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_problem(last) is None
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == epoch
    assert not [p for p in run_dir.rglob(f"{PARTIAL_PREFIX}*")], files(run_dir)
    assert not (run_dir / "summary.json").exists()


def assert_same_summary(run_dir: Path, reference: Path) -> None:
    """The run ended where the uninterrupted one did, with the same numbers."""
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    for key in ("epochs", "steps", "test_elbo", "test_ll"):
        assert summary[key] == expected[key], key


# ---------------------------------------------------------------- a file of the wrong kind in the way


def make_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory\n")
    return path


@pytest.mark.parametrize(
    "layout",
    ["run.dir's parent is a file", "run.dir is a file", "checkpoints is a file", "metrics.csv is a directory",
     "summary.json is a directory"],
)  # fmt: skip
def test_a_file_of_the_wrong_kind_fails_before_the_data_are_read(layout, tmp_path, capsys):
    run_dir = tmp_path / "run"
    if layout == "run.dir's parent is a file":
        run_dir = make_file(tmp_path / "parent") / "run"
        expected = f"cannot write {run_dir}: {run_dir.parent} is a file, not a directory"
    elif layout == "run.dir is a file":
        make_file(run_dir)
        expected = f"cannot write {run_dir}: it is a file, not a directory"
    elif layout == "checkpoints is a file":
        blocker = make_file(run_dir / "checkpoints")
        expected = f"cannot write {blocker}: it is a file, not a directory"
    else:
        blocker = run_dir / layout.split()[0]
        blocker.mkdir(parents=True)
        expected = f"cannot write {blocker}: it is a directory, not a file"
    before = files(tmp_path)
    # No data at data.root: the error is the run directory's, so it was found before any data were read.
    assert fit_main(fit_words(tmp_path / "no-data", run_dir)) == 2
    assert error_line(capsys.readouterr().err) == f"vaelab.fit: error: {expected}; {IN_THE_WAY}"
    assert files(tmp_path) - before <= {"run/.lock"}  # nothing written but the lock of a run directory that exists


@pytest.mark.slow
def test_a_directory_in_the_way_of_a_checkpoint_mid_run_keeps_the_last_whole_one(mnist_root, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    in_the_way = run_dir / "checkpoints" / "epoch1.ckpt"
    in_the_way.mkdir(parents=True)
    assert fit_main(fit_words(mnist_root, run_dir)) == 2
    last = run_dir / "checkpoints" / "last.ckpt"
    assert error_line(capsys.readouterr().err) == (
        f"vaelab.fit: error: cannot write {in_the_way}: it is a directory, not a file; {IN_THE_WAY} "
        f"(the last whole checkpoint, {last}, is kept: continue with run.resume={run_dir})"
    )
    assert_kept(run_dir, epoch=0)
    in_the_way.rmdir()
    assert fit_main([f"run.resume={run_dir}"]) == 0
    assert_same_summary(run_dir, reference)


@pytest.mark.slow
def test_under_ddp_a_write_fault_of_rank_0_is_one_line_and_no_rank_is_left_waiting(mnist_root, tmp_path):
    """Two CPU processes; rank 0 cannot write epoch1.ckpt while rank 1 waits for it in a barrier."""
    run_dir = tmp_path / "run"
    in_the_way = run_dir / "checkpoints" / "epoch1.ckpt"
    in_the_way.mkdir(parents=True)
    words = fit_words(mnist_root, run_dir, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=25")
    ended = subprocess.run(
        [sys.executable, "-m", "vaelab.fit", *words], cwd=tmp_path, env=subprocess_env(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ended.returncode == 2, ended.stderr[-3000:]
    assert error_line(ended.stderr).startswith(f"vaelab.fit: error: cannot write {in_the_way}: it is a directory, not a file; ")
    assert_kept(run_dir, epoch=0)
    deadline = time.monotonic() + 10  # SIGKILL is delivered, and the killed rank reaped, soon after
    while processes_naming(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_naming(run_dir), "a DDP rank outlived rank 0"


def processes_naming(path: Path) -> list[int]:
    """The live processes with ``path`` on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}


# ---------------------------------------------------------------- evaluate and sweep


def test_evaluate_into_a_run_dir_it_cannot_write_fails_before_scoring(mnist_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")  # never loaded: the check comes first
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "eval.json").mkdir()
    assert evaluate_main([f"ckpt={run_dir}", f"data.root={mnist_root}"]) == 2
    assert error_line(capsys.readouterr().err, "vaelab.evaluate") == (
        f"vaelab.evaluate: error: cannot write {run_dir / 'eval.json'}: it is a directory, not a file; "
        "move it out of the way, or copy the run directory elsewhere and pass ckpt=<the copy>"
    )


def sweep_file(folder: Path, mnist_root: Path) -> Path:
    """A grid of one run of the tiny fit."""
    words = [w for w in fit_words(mnist_root, folder) if not w.startswith("run.dir=")]
    path = folder / "grid.yaml"
    path.write_text(json.dumps({
        "method": "grid",
        "parameters": {"model.latent_dim": {"values": [2]}},
        "command": ["${env}", "${interpreter}", "-m", "vaelab.fit", *words, "${args_no_hyphens}"],
    }))  # fmt: skip
    return path


def test_a_sweep_folder_that_cannot_be_written_is_one_line_before_any_run(mnist_root, tmp_path, capsys):
    pytest.importorskip("sweeps", reason="W&B's sweep engine is not installed: uv sync --extra sweeps")
    from vaelab.sweep.cli import main as sweep_main

    sweep = sweep_file(tmp_path, mnist_root)
    parent = make_file(tmp_path / "parent")
    assert sweep_main([str(sweep), "--out", str(parent / "out")]) == 2
    assert error_line(capsys.readouterr().err, "vaelab.sweep") == (
        f"vaelab.sweep: error: cannot write {parent / 'out'}: {parent} is a file, not a directory; "
        "move it out of the way, or pass --out <a folder elsewhere>"
    )
    out = tmp_path / "out"
    (out / "results.json").mkdir(parents=True)  # found by the first table write, before the run starts
    assert sweep_main([str(sweep), "--out", str(out)]) == 2
    assert error_line(capsys.readouterr().err, "vaelab.sweep").startswith(
        f"vaelab.sweep: error: cannot write {out / 'results.json'}: it is a directory, not a file; "
    )
    assert not list(out.glob("run-*/output.log")) and not list(out.glob(f"{PARTIAL_PREFIX}*"))


# ---------------------------------------------------------------- read-only and full file systems


@cache
def mount_problem() -> str | None:
    """Why a tmpfs cannot be mounted in a mount namespace of its own here; None if it can."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    with tempfile.TemporaryDirectory() as folder:
        tried = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    return None if tried.returncode == 0 else (tried.stderr.strip() or f"exit status {tried.returncode}")


@pytest.fixture
def mounts():
    """Skip where mounts are impossible (not root, no CAP_SYS_ADMIN); CI runs as root, where they work."""
    problem = mount_problem()
    if problem is not None:
        message = f"needs a mount namespace (unshare --mount as root) to mount a tmpfs: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


# Run in a mount namespace of its own: `run NAME ARGS...` runs python ARGS, with its stdout,
# stderr and exit status in $OUT/NAME.{out,err,rc}.
PRELUDE = """
set -eu
run() {
  name=$1; shift
  "$PYTHON" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" && echo 0 > "$OUT/$name.rc" || echo $? > "$OUT/$name.rc"
}
"""


def in_namespace(script: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ended = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", PRELUDE + script],
        env={**subprocess_env(), "PYTHON": sys.executable, "OUT": str(out)},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert ended.returncode == 0, ended.stderr[-3000:]


def ran(out: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(name, int((out / f"{name}.rc").read_text()), (out / f"{name}.out").read_text(), (out / f"{name}.err").read_text())


def command(name: str, module: str, words: list[str]) -> str:
    """The script's line for ``python -m module words``."""
    return shlex.join(["run", name, "-m", module, *words])


def forked(out: Path, commands: dict[str, tuple[str, list[str]]]) -> str:
    """The script's line for ``python -m module words`` of each command at once, forked from one
    Python that has made the imports (tests/helpers: run_forked), each with its own stdout,
    stderr and exit status in $OUT/NAME.{out,err}, as ``command``'s; ``write_statuses`` then
    writes $OUT/NAME.rc."""
    plan = [[
        {"argv": words, "cwd": str(out), "module": module, "env": {}, "before": "",
         "stdout": str(out / f"{name}.out"), "stderr": str(out / f"{name}.err")}
        for name, (module, words) in commands.items()
    ]]  # fmt: skip
    driver = shlex.join(["-c", _FORKING_DRIVER, json.dumps(plan)])
    return f'"$PYTHON" {driver} > {shlex.quote(str(out / "forked.json"))}'


def write_statuses(out: Path, names: list[str]) -> None:
    """$OUT/NAME.rc of each command of ``forked``, from the driver's statuses."""
    statuses = json.loads((out / "forked.json").read_text().splitlines()[-1])
    for name, status in zip(names, statuses, strict=True):
        (out / f"{name}.rc").write_text(f"{status}\n")


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_last_whole_checkpoint_and_resume_continues(mounts, mnist_root, reference, tmp_path):
    """A tmpfs with room for epoch 0 (epoch0.ckpt, then last.ckpt beside it) but not for epoch1.ckpt
    beside those two; then it is made larger, and run.resume continues the run."""
    checkpoint = (reference / "checkpoints" / "last.ckpt").stat().st_size
    size_kib = (5 * checkpoint // 2 + 64 * 1024) // 1024  # 2.5 checkpoints and a few pages of small files
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    run_dir = disk / "run"
    in_namespace(
        f"mount -t tmpfs -o size={size_kib}k tmpfs {disk}\n"
        + command("fault", "vaelab.fit", fit_words(mnist_root, run_dir))
        + f"\ncp -a {run_dir} {out / 'after-fault'}\nmount -o remount,size=64m {disk}\n"
        + command("resumed", "vaelab.fit", [f"run.resume={run_dir}"])
        + f"\ncp -a {run_dir} {out / 'after-resume'}\n",
        out,
    )
    fault = ran(out, "fault")
    assert fault.returncode == 2, fault.stderr[-3000:]
    assert error_line(fault.stderr) == (
        f"vaelab.fit: error: cannot write {run_dir}/checkpoints/epoch1.ckpt: no space left on device; "
        f"free space on that disk, {ELSEWHERE} (the last whole checkpoint, {run_dir}/checkpoints/last.ckpt, "
        f"is kept: continue with run.resume={run_dir})"
    )
    assert_kept(out / "after-fault", epoch=0)
    resumed = ran(out, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_summary(out / "after-resume", reference)
    assert files(out / "after-resume") >= {*RESULT_FILES, "checkpoints/last.ckpt", "checkpoints/epoch1.ckpt"}


@pytest.mark.slow
def test_a_full_disk_leaves_no_half_row_in_metrics_csv(mounts, tmp_path):
    """Rows appended to metrics.csv on a 16 KiB tmpfs until the disk is full: the file keeps whole rows."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    fill = (
        "import csv, sys; from pathlib import Path; from vaelab.errors import ResultsWriteError; "
        "from vaelab.training.loggers import AppendingCSVLogger\n"
        "logger, step = AppendingCSVLogger(Path(sys.argv[1])), 0\n"
        "try:\n"
        "    while True:\n"
        "        logger.log_metrics({'train/elbo': -100.0 - step / 7}, step=step); logger.save(); step += 1\n"
        "except ResultsWriteError as error:\n"
        "    rows = list(csv.DictReader(open(Path(sys.argv[1]) / 'metrics.csv')))\n"
        "    print(step, len(rows), all(None not in r.values() and r['step'] for r in rows), error)\n"
    )
    (tmp_path / "fill.py").write_text(fill)
    in_namespace(f"mount -t tmpfs -o size=16k tmpfs {disk}\n" + shlex.join(["run", "fill", str(tmp_path / "fill.py"), str(disk)]), out)
    fill_ran = ran(out, "fill")
    assert fill_ran.returncode == 0, fill_ran.stderr[-3000:]
    steps, rows, whole, message = fill_ran.stdout.split(" ", 3)
    assert int(rows) == int(steps) > 100 and whole == "True"  # every save that returned wrote whole rows, and only those
    assert message.startswith(f"cannot write {disk / 'metrics.csv'}: no space left on device; "), message


@pytest.mark.slow
def test_a_read_only_file_system_is_one_line_before_any_work(mounts, mnist_root, reference, tmp_path):
    """run.dir on a read-only file system; a run resumed there; vaelab.evaluate and vaelab.sweep writing there."""
    read_only, out = tmp_path / "read-only", tmp_path / "out"
    read_only.mkdir()
    run_dir = Path(shutil.copytree(reference, read_only / "run"))
    (run_dir / "summary.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in read_only.rglob("*")}
    sweep = sweep_file(tmp_path, mnist_root)
    sweeps = importlib.util.find_spec("sweeps") is not None  # W&B's sweep engine, for vaelab.sweep
    commands = {
        "new": ("vaelab.fit", fit_words(mnist_root, read_only / "new")),
        "resumed": ("vaelab.fit", [f"run.resume={run_dir}", "trainer.max_epochs=3"]),
        "evaluate": ("vaelab.evaluate", [f"ckpt={run_dir}", "eval.device=cpu"]),
        **({"sweep": ("vaelab.sweep", [str(sweep), "--out", str(read_only / "sweep")])} if sweeps else {}),
    }
    out.mkdir(parents=True)
    # the four at once, forked from one Python (one start-up instead of four)
    in_namespace(f"mount --bind {read_only} {read_only}\nmount -o remount,bind,ro {read_only}\n" + forked(out, commands) + "\n", out)
    write_statuses(out, list(commands))
    last = run_dir / "checkpoints" / "last.ckpt"
    expected = {
        "new": f"vaelab.fit: error: cannot write {read_only / 'new'}: read-only file system; make it writable, {ELSEWHERE}",
        "resumed": f"vaelab.fit: error: cannot write {run_dir / '.lock'}: read-only file system; make it writable, "
        f"or copy the run directory elsewhere and resume the copy (the last whole checkpoint, {last}, is kept: "
        f"continue with run.resume={run_dir})",
        "evaluate": f"vaelab.evaluate: error: cannot write {run_dir}: read-only file system; make it writable, "
        "or copy the run directory elsewhere and pass ckpt=<the copy>",
        "sweep": f"vaelab.sweep: error: cannot write {read_only / 'sweep'}: read-only file system; make it writable, "
        "or pass --out <a folder elsewhere>",
    }
    for name, line in expected.items():
        if name == "sweep" and not sweeps:
            continue
        result = ran(out, name)
        assert result.returncode == 2, (name, result.stderr[-3000:])
        assert error_line(result.stderr, line.split(":")[0]) == line
    assert {p: p.stat().st_mtime_ns for p in read_only.rglob("*")} == before
