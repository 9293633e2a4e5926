"""The SLURM scripts of ``slurm/`` on a real SLURM cluster: CPU only, DDP over gloo.

As root, ``slurm/ci/start-cluster.sh`` first makes sure there is a cluster: it installs Debian's
slurm-wlm and starts one unless one is up already: a one-node partition (2 CPUs, the default)
and a partition of two nodes, each slurmd in its own network and UTS namespace on a veth bridge;
otherwise the tests use whatever cluster answers ``sinfo`` (the two-node tests: its first
partition with two responding nodes).
Where no cluster can be had the cluster tests skip, saying why; with ``CI=true`` they fail
instead. Each job runs in its own ``tmp_path`` (``sbatch --chdir``) and is submitted from the
project directory, as a user would, so ``runs/slurm-<job id>`` lands in ``tmp_path``; the job
finds the project through ``$SLURM_SUBMIT_DIR``. Every wait is bounded; a job still queued or
running when its test ends is cancelled.

What is checked: a fit job writes ``summary.json`` into ``runs/slurm-<job id>``; a job sent
SIGUSR1 mid-training (what ``--signal=USR1@90`` sends before the time limit) is requeued by
Lightning and continues from its ``hpc_ckpt_1.ckpt`` to the full number of epochs, no epoch
trained twice from scratch and none lost; a job SLURM requeues without that signal continues
from ``checkpoints/last.ckpt``; ``multinode.sbatch`` trains one DDP run across two nodes (two
hostnames, two addresses), and does so again after SIGUSR1 and a requeue; the sweep agent array
runs ``wandb agent --count 1 SWEEP`` once per task (with a stand-in Python: there is no W&B
server here).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT, SHARED_DATA, needs_mnist

SLURM = PROJECT / "slurm"
START_CLUSTER = SLURM / "ci" / "start-cluster.sh"
SCRIPTS = ("fit.sbatch", "multinode.sbatch", "sweep_agent.sbatch")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

# A few seconds of training per job on the CPU: experiment=smoke, 10 importance samples per test image.
JOB_FIT = [
    "experiment=smoke",
    f"data.root={SHARED_DATA}",
    "trainer.accelerator=cpu",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "eval.ll_samples=10",
]
# The jobs' resources on the test cluster, overriding the scripts' GPU headers.
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=5"]
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}
JOB_TIMEOUT = 300  # seconds a job may take from submission to its end, requeue included (a loaded machine)


def unavailable(reason: str) -> None:
    """Skip; but under CI=true fail, so a CI machine without a cluster is noticed."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--responding", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and any(s.startswith(("idle", "mix", "alloc", "completing")) for s in out.stdout.split())


@pytest.fixture(scope="module")
def cluster() -> None:
    """A SLURM cluster that answers and can run 2 one-CPU tasks on one node.

    As root, slurm/ci/start-cluster.sh always runs first: it does nothing where its cluster is
    up (or another cluster answers) and otherwise installs or restarts it.
    """
    if os.geteuid() == 0:
        try:
            started = subprocess.run([str(START_CLUSTER)], capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            unavailable("slurm/ci/start-cluster.sh did not finish within 600 s")
        if started.returncode != 0:
            unavailable(f"slurm/ci/start-cluster.sh could not start a cluster:\n{started.stdout}{started.stderr}")
        if not _cluster_answers():
            unavailable(
                f"slurm/ci/start-cluster.sh said the cluster is up, but sinfo gets no answer:\n{started.stdout}"
            )
    elif not _cluster_answers():
        unavailable("no SLURM cluster answers sinfo, and only root can start one with slurm/ci/start-cluster.sh")
    cpus = subprocess.run(
        ["sinfo", "--noheader", "--responding", "--format=%c"], capture_output=True, text=True, check=False
    )
    if max((int(c.rstrip("+")) for c in cpus.stdout.split() if c.rstrip("+").isdigit()), default=0) < 2:
        unavailable(f"the SLURM cluster has no node with 2 CPUs (sinfo: {cpus.stdout.strip()!r})")


class Jobs:
    """Submits jobs from the project directory; cancels at the end whatever has not finished."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def submit(
        self, script: str, workdir: Path, sbatch_args: list[str], args: list[str], env: dict | None = None
    ) -> str:
        command = ["sbatch", "--parsable", f"--chdir={workdir}", *sbatch_args, str(SLURM / script), *args]
        done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=60, env=env, check=False)
        assert done.returncode == 0, f"sbatch failed: {' '.join(command)}\n{done.stderr}"
        job = done.stdout.strip().split(";")[0]
        assert job.isdigit(), done.stdout
        self.ids.append(job)
        return job

    def cancel_all(self) -> None:
        for job in self.ids:
            subprocess.run(["scancel", job], capture_output=True, timeout=30, check=False)


@pytest.fixture
def jobs(cluster):
    jobs = Jobs()
    yield jobs
    jobs.cancel_all()


def job_records(job: str) -> list[dict[str, str]]:
    """``scontrol show job``, one dict per job record (several for an array)."""
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job], capture_output=True, text=True, timeout=30, check=False
    )
    return [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in out.stdout.splitlines() if line.strip()]


def log_text(workdir: Path, job: str) -> str:
    logs = sorted(workdir.glob(f"slurm-{job}*.out"))
    return (
        "\n".join(f"==> {p.name}\n{p.read_text(errors='replace')}" for p in logs)
        or f"(no log slurm-{job}*.out in {workdir})"
    )


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def wait_until(condition, what: str, job: str, workdir: Path, timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            states = [(r.get("JobId"), r.get("JobState"), r.get("Reason")) for r in job_records(job)]
            pytest.fail(f"waited {timeout:.0f} s for {what}; job {job}: {states}\n{tail(log_text(workdir, job))}")
        time.sleep(every)


def wait_done(job: str, workdir: Path, timeout: float = JOB_TIMEOUT) -> list[dict[str, str]]:
    def done() -> bool:
        records = job_records(job)
        return bool(records) and all(r.get("JobState") in TERMINAL for r in records)

    wait_until(done, "the job to end", job, workdir, timeout, every=0.5)
    return job_records(job)


def assert_completed(job: str, workdir: Path, restarts: int, timeout: float = JOB_TIMEOUT) -> str:
    (record,) = wait_done(job, workdir, timeout)
    log = log_text(workdir, job)
    assert record["JobState"] == "COMPLETED", f"job {job}: {record['JobState']} {record.get('Reason')}\n{tail(log)}"
    assert int(record["Restarts"]) == restarts, f"job {job} restarted {record['Restarts']} times\n{tail(log)}"
    return log


def validated_epochs(metrics: Path) -> list[int]:
    """The epoch of every validation row of metrics.csv, in file order (a file being written is fine)."""
    try:
        with open(metrics, newline="") as file:
            rows = list(csv.DictReader(file))
    except (FileNotFoundError, csv.Error):
        return []
    return [int(row["epoch"]) for row in rows if row.get("val/elbo") and (row.get("epoch") or "").isdigit()]


def cpu_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAELAB_")}
    env.update(extra)
    return env


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


def test_fit_and_multinode_differ_only_in_their_headers():
    def body(name: str) -> str:
        text = (SLURM / name).read_text()
        return text[text.index("set -euo pipefail") :]

    assert body("fit.sbatch") == body("multinode.sbatch")


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


# ---------------------------------------------------------------- jobs on the cluster


@pytest.mark.slurm
@pytest.mark.slow
@needs_mnist
def test_fit_job_writes_summary_into_run_dir_keyed_by_job_id(jobs, tmp_path):
    """Two tasks, DDP over gloo, Python found by `uv run` from the submit directory."""
    job = jobs.submit(
        "fit.sbatch",
        tmp_path,
        [*CPU_JOB, "--ntasks-per-node=2"],
        [*JOB_FIT, "trainer.max_epochs=2", "trainer.limit_train_batches=5"],
        cpu_env(),
    )
    log = assert_completed(job, tmp_path, restarts=0)
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_dir"] == f"runs/slurm-{job}"
    assert summary["epochs"] == 2 and summary["steps"] == 2 * 5, summary
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, tail(log)
    assert f"2 task(s); run directory runs/slurm-{job}" in log
    assert not (PROJECT / "runs" / f"slurm-{job}").exists()


EPOCHS, BATCHES = 6, 40  # per requeue test: 240 steps, a few seconds of training


@pytest.mark.slurm
@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("tasks", [1, 2])
def test_sigusr1_mid_training_requeues_and_continues_from_hpc_checkpoint(jobs, tmp_path, tasks):
    import torch

    job = jobs.submit(
        "fit.sbatch",
        tmp_path,
        [*CPU_JOB, f"--ntasks-per-node={tasks}"],
        [*JOB_FIT, f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={BATCHES}", "trainer.steps_per_call=5"],
        cpu_env(VAELAB_PYTHON=sys.executable),
    )
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    metrics = run_dir / "metrics.csv"
    # Once epoch 0 is validated, Lightning's handlers are in place and training is under way.
    wait_until(lambda: 0 in validated_epochs(metrics), "epoch 0 to be validated", job, tmp_path, 90)
    assert not (run_dir / "summary.json").exists(), "training ended before the signal: raise EPOCHS or BATCHES"
    # What --signal=USR1@90 does before the time limit: SIGUSR1 to the srun tasks only.
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)

    log = assert_completed(job, tmp_path, restarts=1)
    assert f"job {job} (restart 0)" in log and f"job {job} (restart 1)" in log, tail(log)
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    assert hpc.is_file(), f"no {hpc}: {sorted(p.name for p in run_dir.iterdir())}\n{tail(log)}"
    restored = re.findall(r"Restoring states from the checkpoint path at (\S+)", log)
    assert [Path(p).name for p in restored if "hpc_ckpt" in p] == ["hpc_ckpt_1.ckpt"], restored
    assert "continued from" not in log  # Lightning's own resume, not the last.ckpt fallback

    state = torch.load(hpc, map_location="cpu", weights_only=False)
    epoch, step = state["epoch"], state["global_step"]
    assert 1 <= epoch < EPOCHS and BATCHES <= step < EPOCHS * BATCHES, (epoch, step)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * BATCHES, summary
    validated = validated_epochs(metrics)
    # None lost; none before the checkpoint trained again (so none from scratch); at most the
    # epoch cut by the signal validated twice.
    assert sorted(set(validated)) == list(range(EPOCHS)), validated
    assert all(validated.count(e) == 1 for e in range(epoch)), (epoch, validated)
    assert len(validated) <= EPOCHS + 1, validated
    print(
        f"\njob {job}, {tasks} task(s): SIGUSR1 in epoch {epoch} at step {step}; hpc_ckpt_1.ckpt restored; "
        f"{summary['epochs']} epochs, {summary['steps']} steps in all; validated epochs {validated}"
    )


@pytest.mark.slurm
@pytest.mark.slow
@needs_mnist
def test_job_requeued_by_slurm_continues_from_last_checkpoint(jobs, tmp_path):
    """No SIGUSR1 (a node failure, preemption, or `scontrol requeue`), so no hpc checkpoint: the
    script copies checkpoints/last.ckpt to hpc_ckpt_1.ckpt and Lightning continues from it.
    Through multinode.sbatch, on one node, with two tasks."""
    job = jobs.submit(
        "multinode.sbatch",
        tmp_path,
        [*CPU_JOB, "--nodes=1", "--ntasks-per-node=2"],
        [*JOB_FIT, f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={BATCHES}", "trainer.steps_per_call=5"],
        cpu_env(VAELAB_PYTHON=sys.executable),
    )
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_until(
        lambda: 0 in validated_epochs(run_dir / "metrics.csv") and last.is_file(), "last.ckpt", job, tmp_path, 90
    )
    assert not (run_dir / "summary.json").exists(), "training ended before the requeue: raise EPOCHS or BATCHES"
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)

    log = assert_completed(job, tmp_path, restarts=1)
    copied = f"continued from runs/slurm-{job}/checkpoints/last.ckpt (copied to runs/slurm-{job}/hpc_ckpt_1.ckpt)"
    assert copied in log, tail(log)
    restored = re.findall(r"Restoring states from the checkpoint path at (\S+)", log)
    assert [Path(p).name for p in restored if "hpc_ckpt" in p] == ["hpc_ckpt_1.ckpt"], restored
    assert sorted(p.name for p in run_dir.glob("hpc_ckpt_*")) == ["hpc_ckpt_1.ckpt"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["steps"] == EPOCHS * BATCHES, summary
    validated = validated_epochs(run_dir / "metrics.csv")
    assert sorted(set(validated)) == list(range(EPOCHS)) and validated.count(0) == 1, validated
    assert len(validated) <= EPOCHS + 1, validated


# ---------------------------------------------------------------- two nodes

TWO_NODE_TIMEOUT = 300  # seconds a two-node job may take, requeue included (DDP over gloo, a loaded machine)
# --time=10: the time limit's own SIGUSR1 (90 s before it) must not come during the test.
TWO_NODE_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=10", "--nodes=2", "--ntasks-per-node=1"]


@pytest.fixture(scope="module")
def two_nodes(cluster) -> str:
    """The first partition with two responding nodes (start-cluster.sh's: twonode)."""
    out = subprocess.run(
        ["sinfo", "--noheader", "--responding", "--Node", "--format=%R %N %T"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    usable: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        partition, node, state = line.split()
        if state.startswith(("idle", "mix", "alloc", "completing")):
            usable.setdefault(partition.rstrip("*"), set()).add(node)
    partition = next((p for p, nodes in usable.items() if len(nodes) >= 2), None)
    if partition is None:
        unavailable(f"no SLURM partition has two responding nodes (sinfo: {out.stdout.strip()!r})")
    return partition


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
@pytest.mark.slow
@needs_mnist
def test_multinode_job_trains_one_ddp_run_across_two_nodes(jobs, two_nodes, tmp_path):
    """Rank 0 on the first node, rank 1 on the second; they meet at Lightning's MASTER_ADDR, the
    first node's hostname (SLURMEnvironment), over gloo."""
    job = jobs.submit(
        "multinode.sbatch",
        tmp_path,
        [*TWO_NODE_JOB, f"--partition={two_nodes}"],
        [*JOB_FIT, "trainer.max_epochs=2", "trainer.limit_train_batches=5"],
        cpu_env(VAELAB_PYTHON=sys.executable),
    )
    log = assert_completed(job, tmp_path, restarts=0, timeout=TWO_NODE_TIMEOUT)
    (record,) = job_records(job)
    assert record["NumNodes"] == "2", record
    assert f"2 node(s) x 1 task(s); run directory runs/slurm-{job}" in log, tail(log)
    for rank in (0, 1):
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log, tail(log)
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, tail(log)
    summary = json.loads((tmp_path / "runs" / f"slurm-{job}" / "summary.json").read_text())
    # Each rank trains 5 batches of its own shard of the data per epoch, the two in lockstep.
    assert summary["world_size"] == 2 and summary["epochs"] == 2 and summary["steps"] == 2 * 5, summary
    assert "Traceback" not in log, tail(log)


TWO_NODE_EPOCHS, TWO_NODE_BATCHES = 4, 20


@pytest.mark.slurm
@pytest.mark.slow
@needs_mnist
def test_two_node_job_sent_sigusr1_requeues_and_continues_on_both_nodes(jobs, two_nodes, tmp_path):
    import torch

    job = jobs.submit(
        "multinode.sbatch",
        tmp_path,
        [*TWO_NODE_JOB, f"--partition={two_nodes}"],
        [
            *JOB_FIT, f"trainer.max_epochs={TWO_NODE_EPOCHS}", f"trainer.limit_train_batches={TWO_NODE_BATCHES}",
            "trainer.steps_per_call=5",
        ],
        cpu_env(VAELAB_PYTHON=sys.executable),
    )
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    metrics = run_dir / "metrics.csv"
    wait_until(lambda: 0 in validated_epochs(metrics), "epoch 0 to be validated", job, tmp_path, 180)
    assert not (run_dir / "summary.json").exists(), "training ended before the signal: raise TWO_NODE_EPOCHS"
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)

    log = assert_completed(job, tmp_path, restarts=1, timeout=TWO_NODE_TIMEOUT)
    assert f"job {job} (restart 1)" in log and log.count("2 node(s) x 1 task(s)") == 2, tail(log)
    restored = re.findall(r"Restoring states from the checkpoint path at (\S+)", log)
    assert [Path(p).name for p in restored if "hpc_ckpt" in p] == ["hpc_ckpt_1.ckpt"], restored
    # Both starts had both ranks.
    assert log.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2, tail(log)
    assert "Traceback" not in log, tail(log)
    state = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    assert 1 <= state["epoch"] < TWO_NODE_EPOCHS, state["epoch"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2, summary
    assert summary["epochs"] == TWO_NODE_EPOCHS and summary["steps"] == TWO_NODE_EPOCHS * TWO_NODE_BATCHES, summary
    validated = validated_epochs(metrics)
    assert sorted(set(validated)) == list(range(TWO_NODE_EPOCHS)), validated
    assert all(validated.count(e) == 1 for e in range(state["epoch"])), (state["epoch"], validated)


@pytest.mark.slurm
def test_sweep_agent_array_runs_one_agent_run_per_task(jobs, tmp_path):
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
    job = jobs.submit(
        "sweep_agent.sbatch",
        tmp_path,
        [*CPU_JOB, "--array=0-1"],
        ["me/vaelab/abc123"],
        cpu_env(VAELAB_PYTHON=str(fake), SWEEP_TEST_OUT=str(tmp_path)),
    )
    records = wait_done(job, tmp_path, timeout=60)
    assert sorted(r.get("ArrayTaskId") for r in records) == ["0", "1"], records
    assert all(r["JobState"] == "COMPLETED" for r in records), f"{records}\n{log_text(tmp_path, job)}"
    for task in ("0", "1"):
        lines = (tmp_path / f"task-{task}.txt").read_text().splitlines()
        assert lines == ["args: -m wandb agent --count 1 me/vaelab/abc123", f"python on PATH: {fake}"], lines
    assert (tmp_path / f"slurm-{job}_0.out").is_file() and (tmp_path / f"slurm-{job}_1.out").is_file()


EXACT_EPOCHS, EXACT_BATCHES = 4, 30  # 120 steps of 1 minibatch per call, a row per step
EXACT_FIT = [
    *JOB_FIT, f"trainer.max_epochs={EXACT_EPOCHS}", f"trainer.limit_train_batches={EXACT_BATCHES}",
    "trainer.deterministic=true", "trainer.compile=false", "trainer.steps_per_call=1", "trainer.log_every_n_steps=1",
]


def _train_steps(metrics: Path) -> list[int]:
    try:
        with open(metrics, newline="") as file:
            return [int(row["step"]) for row in csv.DictReader(file) if row.get("train/elbo")]
    except (FileNotFoundError, csv.Error, ValueError):
        return []


@pytest.mark.slurm
@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("layout", ["1 task", "2 tasks", "2 nodes"])
def test_sigusr1_requeued_job_is_the_uninterrupted_job(jobs, tmp_path, layout, request):
    """A job sent SIGUSR1 at a random step inside an epoch and requeued ends bit for bit
    where the same job never interrupted ends (CPU, deterministic algorithms): one process,
    two DDP processes on one node, and one process on each of two nodes."""
    import random

    import torch

    if layout == "2 nodes":
        script, args = "multinode.sbatch", [*TWO_NODE_JOB, f"--partition={request.getfixturevalue('two_nodes')}"]
    else:
        script, args = "fit.sbatch", [*CPU_JOB, f"--ntasks-per-node={layout[0]}"]
    whole_dir, signalled_dir = tmp_path / "whole", tmp_path / "signalled"
    whole_dir.mkdir(), signalled_dir.mkdir()
    env = cpu_env(VAELAB_PYTHON=sys.executable)
    # the signalled job first: with 2 tasks on a 2-CPU node the other waits for it
    signalled = jobs.submit(script, signalled_dir, args, EXACT_FIT, env)
    whole = jobs.submit(script, whole_dir, args, EXACT_FIT, env)
    run_dir = signalled_dir / "runs" / f"slurm-{signalled}"
    # a step inside epoch 1 or 2, away from its ends; the signal lands a few steps later
    at = random.randrange(1, 3) * EXACT_BATCHES + random.randrange(3, EXACT_BATCHES - 8)
    wait_until(lambda: max(_train_steps(run_dir / "metrics.csv"), default=-1) >= at, f"step {at}", signalled, signalled_dir, 240, every=0.05)
    subprocess.run(["scancel", "--signal=USR1", signalled], check=True, timeout=30)

    log = assert_completed(signalled, signalled_dir, restarts=1)
    assert_completed(whole, whole_dir, restarts=0)
    hpc = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    assert hpc["global_step"] % EXACT_BATCHES != 0, (at, hpc["global_step"], tail(log))  # mid-epoch

    whole_run = whole_dir / "runs" / f"slurm-{whole}"
    a = torch.load(whole_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == EXACT_EPOCHS * EXACT_BATCHES
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), (at, name)
    with open(whole_run / "metrics.csv", newline="") as file_a, open(run_dir / "metrics.csv", newline="") as file_b:
        assert list(csv.DictReader(file_a)) == list(csv.DictReader(file_b)), at
    summary_a, summary_b = (json.loads((run / "summary.json").read_text()) for run in (whole_run, run_dir))
    assert {k: summary_a[k] for k in ("test_elbo", "test_ll", "steps")} == {k: summary_b[k] for k in ("test_elbo", "test_ll", "steps")}
