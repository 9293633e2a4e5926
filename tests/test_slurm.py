"""The SLURM scripts of ``slurm/`` on a real SLURM cluster: CPU only, DDP over gloo. The
harness (the cluster, submitting, waiting, held jobs) is tests/helpers/slurm.py.

Each job runs in its own directory (``sbatch --chdir``) and is submitted from the project
directory, as a user would, so ``runs/slurm-<job id>`` lands in that directory; the job finds
the project through ``$SLURM_SUBMIT_DIR``. A job still queued or running when the module ends
is cancelled.

The training jobs are submitted all at once, by one module fixture (``fit_jobs``), so that
SLURM runs them side by side while others wait for a requeue; each test then checks its own
jobs. They fit a tiny model on tiny MNIST files of the real format, a few seconds of training:
what is checked does not depend on size. Per layout (one task; two tasks on one node; one task
on each of two nodes) there is a job sent SIGUSR1 mid-epoch, held at a random optimizer step
inside an epoch until the signal has arrived, and the same run uninterrupted (for two nodes,
the two-task job: the same two gloo ranks).

What is checked: a fit job writes ``summary.json`` into ``runs/slurm-<job id>`` (with the Python
that ``uv run`` finds); a job sent SIGUSR1 mid-training (what ``--signal=USR1@90`` sends before
the time limit) is requeued and continues from its ``hpc_ckpt_1.ckpt``, written at the first
check for the signal after it, to the full number of epochs, no epoch trained twice from
scratch and none lost, and it ends bit for bit where the uninterrupted job ends (parameters,
optimizer state, every row of ``metrics.csv``, the test numbers); a job SLURM requeues without
that signal continues from ``checkpoints/last.ckpt``; ``multinode.sbatch`` trains one DDP run
across two nodes (two hostnames, two addresses), and does so again after SIGUSR1 and a requeue;
the two fit scripts find their shared body (``slurm/fit_job.sh``) when submitted from another
directory, and say so in one line where it is missing; the sweep agent array runs
``wandb agent --count 1 SWEEP`` once per task (with a stand-in Python: there is no W&B server here).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT, assert_same_training_state, metrics_rows, write_mnist
from tests.helpers.slurm import (
    SLURM,
    FitJob,
    cancel,
    cpu_env,
    default_partition,
    drive,
    ensure_cluster,
    load,
    log_text,
    submit,
    tail,
    two_node_partition,
    unavailable,
    validated_epochs,
    wait_done,
    write_held_fit,
)

SCRIPTS = ("fit.sbatch", "multinode.sbatch", "sweep_agent.sbatch")

# The jobs' fit: 3 epochs of 15 optimizer steps, minibatches of 20 images, a row of metrics.csv
# per step; data.root (tiny MNIST files) is added by the fit_jobs fixture.
EPOCHS, BATCHES = 3, 15
JOB_FIT = [
    "experiment=smoke",
    "trainer.accelerator=cpu",
    "model.hidden=[64]",
    "data.batch_size=20",
    "data.val_size=100",
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={BATCHES}",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "eval.ll_samples=10",
    "trainer.deterministic=true",
    "trainer.compile=false",
    "trainer.log_every_n_steps=1",
]
# 800 training images, 100 of them held out for validation: 17 minibatches per epoch on each
# of 2 ranks, so every epoch is BATCHES steps long; 100 test images, one test batch.
TINY_MNIST = {"n_train": 800, "n_test": 100}
# vaelab.fit checks for SIGUSR1 after every call that ends a multiple of 10 steps into an epoch
# (not after the epoch's last call): with 15-step epochs at steps 10, 25 and 40 in all.
SIGNAL_CHECKS = [epoch * BATCHES + 10 for epoch in range(EPOCHS)]
# The jobs' resources on the test cluster, overriding the scripts' GPU headers. --time=15: the
# time limit's own SIGUSR1 (90 s before it) must not come during the test.
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=15"]
TWO_NODE_JOB = [*CPU_JOB, "--nodes=2", "--ntasks-per-node=1"]
ALL_JOBS_TIMEOUT = 600  # seconds for all the training jobs together, requeues included (a loaded machine)


@pytest.fixture(scope="module")
def cluster() -> None:
    ensure_cluster()


@pytest.fixture(scope="module")
def two_nodes(cluster) -> str:
    partition, why_not = two_node_partition()
    if partition is None:
        unavailable(why_not)
    return partition


# ---------------------------------------------------------------- the scripts themselves (no cluster)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash_with_site_choices_left_open(script):
    path = SLURM / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0
    header = [line.split("#", 2)[1].strip() for line in path.read_text().splitlines() if line.startswith("#SBATCH")]
    options = dict(h.split(None, 1)[1].split("=", 1) if "=" in h else (h.split(None, 1)[1], "") for h in header)
    for site_specific in ("--partition", "--account", "--qos", "--mem"):
        assert site_specific not in options, f"{script} hard-codes {site_specific}"
    assert "--time" in options and "--cpus-per-task" in options
    if script != "sweep_agent.sbatch":
        assert options["--signal"] == "USR1@90", "SIGUSR1 must reach the srun tasks (no B:)"
        assert "--requeue" in options and options["--open-mode"] == "append"
        assert options["--ntasks-per-node"] == options["--gpus-per-node"]


def test_fit_and_multinode_share_one_body():
    """The two fit scripts differ only in their headers; the job itself is slurm/fit_job.sh (an
    #SBATCH line there would be ignored: only the submitted script's count)."""

    def after_header(name: str) -> str:
        text = (SLURM / name).read_text()
        return text[text.index("set -euo pipefail") :]

    assert after_header("fit.sbatch") == after_header("multinode.sbatch")
    assert "srun" not in after_header("fit.sbatch") and 'exec bash "$BODY" "$@"' in after_header("fit.sbatch")
    body = SLURM / "fit_job.sh"
    assert subprocess.run(["bash", "-n", str(body)], capture_output=True, check=False).returncode == 0
    assert "srun --kill-on-bad-exit=1" in body.read_text()
    assert not [line for line in body.read_text().splitlines() if line.startswith("#SBATCH")]


def no_slurm_env() -> dict[str, str]:
    """As outside any SLURM job: without SLURM_* and VAELAB_* variables."""
    return {k: v for k, v in cpu_env().items() if not k.startswith("SLURM_")}


@pytest.mark.parametrize("script", ["fit.sbatch", "multinode.sbatch"])
def test_fit_script_outside_slurm_finds_its_body_and_stops_with_one_line(script, tmp_path):
    """Run with bash from another directory: the body beside the script says it needs sbatch;
    a copy of the script without the body beside it says that the body is missing."""
    done = subprocess.run(["bash", str(SLURM / script)], cwd=tmp_path, capture_output=True, text=True,
                          env=no_slurm_env(), check=False)  # fmt: skip
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "vaelab-slurm: not in a SLURM job: submit slurm/fit.sbatch or slurm/multinode.sbatch with sbatch"
    ], done.stderr
    copy = tmp_path / script
    shutil.copy(SLURM / script, copy)
    done = subprocess.run(["bash", str(copy)], cwd=tmp_path, capture_output=True, text=True, env=no_slurm_env(), check=False)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("vaelab-slurm: no fit_job.sh beside") and "VAELAB_PROJECT" in done.stderr


def test_sweep_agent_without_a_sweep_id_stops_with_one_line(tmp_path):
    done = subprocess.run(
        ["bash", str(SLURM / "sweep_agent.sbatch")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cpu_env(),
        check=False,
    )
    assert done.returncode == 2
    assert "no sweep id" in done.stderr and "VAELAB_SWEEP" in done.stderr


# ---------------------------------------------------------------- short jobs on the cluster


@pytest.mark.slurm
def test_the_two_nodes_are_two_hosts_with_their_own_names_and_addresses(two_nodes, tmp_path):
    done = subprocess.run(
        ["srun", f"--partition={two_nodes}", "--nodes=2", "--ntasks-per-node=1", "--time=1",
         "bash", "-c", 'echo "$SLURMD_NODENAME $(hostname) $(hostname -I)"'],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = sorted(line.split() for line in done.stdout.splitlines())
    assert len(rows) == 2, done.stdout
    assert [row[0] for row in rows] == [row[1] for row in rows], rows  # each node's hostname is its name
    assert rows[0][0] != rows[1][0] and set(rows[0][2:]).isdisjoint(rows[1][2:]), rows


@pytest.mark.slurm
def test_sweep_agent_array_runs_one_agent_run_per_task(cluster, tmp_path):
    """A stand-in Python records how it is called: there is no W&B server to run an agent against."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'out="$SWEEP_TEST_OUT/task-$SLURM_ARRAY_TASK_ID.txt"\n'
        'echo "args: $*" > "$out"\n'
        'echo "python on PATH: $(command -v python)" >> "$out"\n'
    )
    fake.chmod(0o755)
    job = submit(
        "sweep_agent.sbatch",
        tmp_path,
        [*CPU_JOB, "--array=0-1"],
        ["me/vaelab/abc123"],
        cpu_env(VAELAB_PYTHON=str(fake), SWEEP_TEST_OUT=str(tmp_path)),
    )
    try:
        records = wait_done(job, tmp_path, timeout=60)
    finally:
        cancel([job])
    assert sorted(r.get("ArrayTaskId") for r in records) == ["0", "1"], records
    assert all(r["JobState"] == "COMPLETED" for r in records), f"{records}\n{log_text(tmp_path, job)}"
    for task in ("0", "1"):
        lines = (tmp_path / f"task-{task}.txt").read_text().splitlines()
        assert lines == ["args: -m wandb agent --count 1 me/vaelab/abc123", f"python on PATH: {fake}"], lines
    assert (tmp_path / f"slurm-{job}_0.out").is_file() and (tmp_path / f"slurm-{job}_1.out").is_file()


def stand_in_python(folder: Path) -> Path:
    """A stand-in for VAELAB_PYTHON that writes the arguments of each call to args-<task>.txt."""
    python = folder / "python"
    python.write_text('#!/bin/sh\necho "$*" > "$(dirname "$0")/args-${SLURM_PROCID:-x}.txt"\n')
    python.chmod(0o755)
    return python


@pytest.mark.slurm
@pytest.mark.parametrize("script", ["fit.sbatch", "multinode.sbatch"])
def test_fit_script_submitted_from_elsewhere_runs_its_body(cluster, script, tmp_path):
    """sbatch runs a copy of the script on the node: submitted from a directory that is not the
    project (with VAELAB_PYTHON, so no project is needed), it still finds slurm/fit_job.sh beside
    the submitted script and runs the fit with the job's arguments last."""
    python = stand_in_python(tmp_path)
    job = submit(script, tmp_path, [*CPU_JOB, "--nodes=1", "--ntasks-per-node=1"], ["model.k=3"],
                 cpu_env(VAELAB_PYTHON=str(python)), cwd=tmp_path)  # fmt: skip
    try:
        records = wait_done(job, tmp_path, timeout=60)
    finally:
        cancel([job])
    log = log_text(tmp_path, job)
    assert records[0]["JobState"] == "COMPLETED", f"{records}\n{log}"
    words = (tmp_path / "args-0.txt").read_text().split()
    assert words[:2] == ["-m", "vaelab.fit"] and words[-2:] == [f"run.dir=runs/slurm-{job}", "model.k=3"], words
    assert f"run directory runs/slurm-{job}; python {python}" in log, log


@pytest.mark.slurm
def test_fit_script_without_its_body_fails_with_one_line(cluster, tmp_path):
    """A copy of fit.sbatch alone, submitted from a directory that is not the project."""
    copy = tmp_path / "fit.sbatch"
    shutil.copy(SLURM / "fit.sbatch", copy)
    command = ["sbatch", "--parsable", f"--chdir={tmp_path}", *CPU_JOB, "--ntasks-per-node=1", str(copy)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=cpu_env(), check=False)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip().split(";")[0]
    try:
        records = wait_done(job, tmp_path, timeout=60)
    finally:
        cancel([job])
    log = log_text(tmp_path, job)
    assert records[0]["JobState"] == "FAILED" and records[0]["ExitCode"] == "2:0", f"{records}\n{log}"
    lines = [line for line in log.splitlines() if not line.startswith("==> ")]
    assert len(lines) == 1 and lines[0].startswith(f"vaelab-slurm: no fit_job.sh beside {copy} nor in {tmp_path}/slurm"), log


# ---------------------------------------------------------------- training jobs, all submitted at once

# layout -> (script, sbatch arguments, trainer.steps_per_call); partitions added by fit_jobs.
# Submitted in this order: the two-node jobs first, as they need both nodes of their partition.
LAYOUTS = {
    "2 nodes": ("multinode.sbatch", TWO_NODE_JOB, 5),
    "2 tasks": ("fit.sbatch", [*CPU_JOB, "--ntasks-per-node=2"], 1),
    "1 task": ("fit.sbatch", [*CPU_JOB, "--ntasks-per-node=1"], 1),
}
# The two-node run is two gloo ranks, as two tasks on one node are, and steps per call change
# no number: its signalled job must end where the two-task uninterrupted job ends.
UNINTERRUPTED = {"2 nodes": "2 tasks whole"}


def hold_steps(steps_per_call: int) -> list[int]:
    """Steps to hold a job at so that a signal is checked for after it, inside an epoch after
    the first (validated by then): the ends of calls from the first of epoch 1 to the last check."""
    return [s for s in range(BATCHES + steps_per_call, SIGNAL_CHECKS[-1] + 1) if s % steps_per_call == 0]


@pytest.fixture(scope="module")
def fit_jobs(cluster, tmp_path_factory) -> dict[str, FitJob]:
    """Submits every training job at once, signals or requeues each held one, waits for all.

    Jobs, by name: "<layout> signalled" for each layout and "<layout> whole" for those not in
    UNINTERRUPTED (the "2 tasks" whole job with the Python that `uv run` finds, the others with
    this one); "requeued": two
    tasks on one node through multinode.sbatch, requeued by `scontrol requeue` (no SIGUSR1)
    while held inside epoch 1. Two-node jobs only where a partition has two nodes.
    """
    root = tmp_path_factory.mktemp("slurm-jobs")
    write_mnist(root / "data", **TINY_MNIST)
    fit_words = [*JOB_FIT, f"data.root={root / 'data'}"]
    held_fit = write_held_fit(root / "held_fit", sys.executable)

    two_node, default = two_node_partition()[0], default_partition()
    # A one-node job may run in the default partition or on a node of the two-node one,
    # whichever has room first (SLURM chooses).
    one_node = [f"--partition={default},{two_node}"] if two_node and default and two_node != default else []
    planned = []
    for layout, (script, sbatch_args, steps_per_call) in LAYOUTS.items():
        if layout == "2 nodes":
            if two_node is None:
                continue
            sbatch_args = [*sbatch_args, f"--partition={two_node}"]
        else:
            sbatch_args = [*sbatch_args, *one_node]
        words = [*fit_words, f"trainer.steps_per_call={steps_per_call}"]
        folder = root / layout.replace(" ", "-")
        signalled = FitJob(f"{layout} signalled", folder / "signalled", script, sbatch_args, words, {})
        # the whole two-task job finds Python with `uv run`, as a user's job does
        python = {} if layout == "2 tasks" else {"VAELAB_PYTHON": sys.executable}
        planned.append(signalled.hold(held_fit, random.choice(hold_steps(steps_per_call)), "signal"))
        if layout in UNINTERRUPTED:
            continue  # its uninterrupted twin is another layout's whole job
        planned.append(FitJob(f"{layout} whole", folder / "whole", script, sbatch_args, words, cpu_env(**python)))
    one_node_two_tasks = [*CPU_JOB, "--nodes=1", "--ntasks-per-node=2", *one_node]
    requeued = FitJob("requeued", root / "requeued", "multinode.sbatch", one_node_two_tasks,
                      [*fit_words, "trainer.steps_per_call=5"], {})  # fmt: skip
    # submitted after the first two-task job, before the others: its requeue wait overlaps theirs
    planned.insert(min(3, len(planned)), requeued.hold(held_fit, random.choice([BATCHES + 5, BATCHES + 10]), "requeue"))

    jobs: dict[str, FitJob] = {}
    try:
        for job in planned:
            job.submit()
            jobs[job.name] = job
        drive(list(jobs.values()), ALL_JOBS_TIMEOUT)
        yield jobs
    finally:
        cancel([job.id for job in jobs.values()])


def fit_job(fit_jobs: dict[str, FitJob], name: str) -> FitJob:
    if name not in fit_jobs:  # a two-node job where no partition has two nodes
        unavailable(two_node_partition()[1])
    return fit_jobs[name]


def check_continued_from_hpc_checkpoint(job: FitJob) -> tuple[str, dict]:
    """What every job sent SIGUSR1 shows; returns its log and its hpc checkpoint."""
    log = job.completed(restarts=1)
    assert job.when_held and not job.when_held["summary.json"], f"not held before the end of training: {job.when_held}"
    assert f"job {job.id} (restart 0)" in log and f"job {job.id} (restart 1)" in log, tail(log)
    hpc_path = job.run_dir / "hpc_ckpt_1.ckpt"
    assert hpc_path.is_file(), f"no {hpc_path}: {sorted(p.name for p in job.run_dir.iterdir())}\n{tail(log)}"
    restored = re.findall(r"Restored all states from the checkpoint at (\S+)", log)
    assert [Path(p).name for p in restored if "hpc_ckpt" in p] == ["hpc_ckpt_1.ckpt"], restored
    assert "continued from" not in log  # Lightning's own resume, not the last.ckpt fallback
    assert "Traceback" not in log, tail(log)

    hpc = load(hpc_path)
    epoch, step = hpc["epoch"], hpc["global_step"]
    # saved at the first check for the signal after the step it arrived at: inside an epoch
    assert step == min(s for s in SIGNAL_CHECKS if s >= job.hold_at), (job.hold_at, step)
    assert 1 <= epoch < EPOCHS and step % BATCHES != 0, (job.hold_at, epoch, step)

    summary = job.summary()
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * BATCHES, summary
    validated = validated_epochs(job.run_dir / "metrics.csv")
    # None lost; none before the checkpoint trained again (so none from scratch); at most the
    # epoch cut by the signal validated twice.
    assert sorted(set(validated)) == list(range(EPOCHS)), validated
    assert all(validated.count(e) == 1 for e in range(epoch)), (epoch, validated)
    assert len(validated) <= EPOCHS + 1, validated
    return log, hpc


@pytest.mark.slurm
@pytest.mark.slow
def test_fit_job_writes_summary_into_run_dir_keyed_by_job_id(fit_jobs):
    """Two tasks, DDP over gloo, Python found by `uv run` from the submit directory."""
    job = fit_job(fit_jobs, "2 tasks whole")
    log = job.completed(restarts=0)
    summary = job.summary()
    assert summary["run_dir"] == f"runs/slurm-{job.id}"
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * BATCHES, summary
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, tail(log)
    assert f"2 task(s); run directory runs/slurm-{job.id}" in log
    assert not (PROJECT / "runs" / f"slurm-{job.id}").exists()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("tasks", [1, 2])
def test_sigusr1_mid_training_requeues_and_continues_from_hpc_checkpoint(fit_jobs, tasks):
    job = fit_job(fit_jobs, f"{tasks} task{'s' if tasks > 1 else ''} signalled")
    log, hpc = check_continued_from_hpc_checkpoint(job)
    assert f"{tasks} task(s); run directory runs/slurm-{job.id}" in log, tail(log)
    print(
        f"\njob {job.id}, {tasks} task(s): SIGUSR1 after step {job.hold_at}; hpc_ckpt_1.ckpt of epoch "
        f"{hpc['epoch']}, step {hpc['global_step']} restored; validated epochs {validated_epochs(job.run_dir / 'metrics.csv')}"
    )


@pytest.mark.slurm
@pytest.mark.slow
def test_job_requeued_by_slurm_continues_from_last_checkpoint(fit_jobs):
    """No SIGUSR1 (a node failure, preemption, or `scontrol requeue`), so no hpc checkpoint: the
    script copies checkpoints/last.ckpt to hpc_ckpt_1.ckpt and Lightning continues from it.
    Through multinode.sbatch, on one node, with two tasks, requeued inside epoch 1: SLURM's
    SIGTERM reaches both ranks, which save last.ckpt together at the step they were held at."""
    job = fit_job(fit_jobs, "requeued")
    log = job.completed(restarts=1)
    assert job.when_held == {"summary.json": False, "last.ckpt": True}, job.when_held
    copied = f"continued from runs/slurm-{job.id}/checkpoints/last.ckpt (copied to runs/slurm-{job.id}/hpc_ckpt_1.ckpt)"
    assert copied in log, tail(log)
    restored = re.findall(r"Restored all states from the checkpoint at (\S+)", log)
    assert [Path(p).name for p in restored if "hpc_ckpt" in p] == ["hpc_ckpt_1.ckpt"], restored
    assert sorted(p.name for p in job.run_dir.glob("hpc_ckpt_*")) == ["hpc_ckpt_1.ckpt"]
    assert load(job.run_dir / "hpc_ckpt_1.ckpt")["global_step"] == job.hold_at  # saved on SIGTERM
    summary = job.summary()
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * BATCHES, summary
    validated = validated_epochs(job.run_dir / "metrics.csv")
    assert sorted(set(validated)) == list(range(EPOCHS)) and validated.count(0) == 1, validated
    assert len(validated) <= EPOCHS + 1, validated


@pytest.mark.slurm
@pytest.mark.slow
def test_multinode_job_trains_one_ddp_run_across_two_nodes_and_continues_after_sigusr1(fit_jobs):
    """Rank 0 on the first node, rank 1 on the second; they meet at Lightning's MASTER_ADDR, the
    first node's hostname (SLURMEnvironment), over gloo, at both starts of the requeued job."""
    job = fit_job(fit_jobs, "2 nodes signalled")
    log, _ = check_continued_from_hpc_checkpoint(job)
    assert job.record["NumNodes"] == "2", job.record
    assert log.count(f"2 node(s) x 1 task(s); run directory runs/slurm-{job.id}") == 2, tail(log)
    for rank in (0, 1):
        assert log.count(f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2") == 2, tail(log)
    assert log.count("distributed_backend=gloo") == 2 and "Starting with 2 processes" in log, tail(log)
    # Each rank trains BATCHES minibatches of its own shard of the data per epoch, the two in lockstep.
    assert job.summary()["world_size"] == 2


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sigusr1_requeued_job_is_the_uninterrupted_job(fit_jobs, layout):
    """A job sent SIGUSR1 at a random step inside an epoch and requeued ends bit for bit
    where the same job never interrupted ends (CPU, deterministic algorithms): one process,
    two DDP processes on one node, and one process on each of two nodes (against the two
    processes on one node, run with five steps per call where that job runs one)."""
    signalled = fit_job(fit_jobs, f"{layout} signalled")
    whole = fit_job(fit_jobs, UNINTERRUPTED.get(layout, f"{layout} whole"))
    log = signalled.completed(restarts=1)
    whole.completed(restarts=0)
    at = signalled.hold_at
    hpc = load(signalled.run_dir / "hpc_ckpt_1.ckpt")
    assert hpc["global_step"] % BATCHES != 0, (at, hpc["global_step"], tail(log))  # mid-epoch

    a, b = load(whole.run_dir / "checkpoints" / "last.ckpt"), load(signalled.run_dir / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == EPOCHS * BATCHES
    assert_same_training_state(a, b, at)
    rows_a, rows_b = metrics_rows(whole.run_dir), metrics_rows(signalled.run_dir)
    assert rows_a == rows_b, at
    train_steps = [int(row["step"]) for row in rows_b if row.get("train/elbo")]
    assert train_steps == list(range(EPOCHS * BATCHES)), at  # each step's row once
    summary_a, summary_b = whole.summary(), signalled.summary()
    keys = ("test_elbo", "test_ll", "best_val_elbo", "steps", "epochs")
    assert {k: summary_a[k] for k in keys} == {k: summary_b[k] for k in keys}
