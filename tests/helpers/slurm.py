"""The SLURM cluster harness of tests/test_slurm.py: getting a cluster, submitting, waiting for
and cancelling jobs, reading their state and logs, and a fit job held at a chosen step.

As root, ``ensure_cluster`` first runs ``slurm/ci/start-cluster.sh``: it installs Debian's
slurm-wlm and starts a cluster unless one is up already (a one-node partition of 2 CPUs, the
default, and a partition of two nodes, each slurmd in its own network and UTS namespace on a
veth bridge); otherwise whatever cluster answers ``sinfo`` is used. Where no cluster can be had
the cluster tests skip, saying why; with ``CI=true`` they fail instead (``unavailable``). Every
wait is bounded.

A held job runs ``vaelab.fit`` through ``HELD_FIT`` as its ``$VAELAB_PYTHON``: held after a chosen
optimizer step until the signal has arrived, so the signal lands at that step however fast the
steps are; the signal, the checkpoint, the requeue and the restart are SLURM's and vaelab's own.
``drive`` signals or requeues each held job and waits for every job to end.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import PROJECT

SLURM = PROJECT / "slurm"
START_CLUSTER = SLURM / "ci" / "start-cluster.sh"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
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
USABLE = ("idle", "mix", "alloc", "completing")  # node states that can run a job
HOLD_TIMEOUT = 300  # seconds a held job waits for its signal before it trains on (and its test fails)

# `python -m vaelab.fit`, held after optimizer step $HOLD_AT_STEP (first start of the job only)
# until SIGUSR1 has set vaelab's requeue flag or SIGTERM (as when SLURM requeues a job) vaelab's
# interrupt flag; then vaelab's own checks for the signals run as usual: the SIGTERM checkpoint
# (vaelab.training.resume.SignalCheckpoint) right after that step, SlurmRequeue's at its next check.
# Rank 0 writes $HOLD_MARKER once held. Used as $VAELAB_PYTHON: slurm/*.sbatch run
# "$VAELAB_PYTHON -m vaelab.fit ...".
HELD_FIT = """\
#!{python}
import os, runpy, sys, time
from pathlib import Path

from vaelab.training import interrupts
from vaelab.training.slurm_requeue import SlurmRequeue
from vaelab.training.resume import SignalCheckpoint

hold_at, marker = int(os.environ["HOLD_AT_STEP"]), Path(os.environ["HOLD_MARKER"])
first_start = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
check_for_signal = SignalCheckpoint.on_train_batch_end  # runs before SlurmRequeue's, after each call


def hold_then_check(self, trainer, module, outputs, batch, batch_idx):
    if first_start and trainer.global_step == hold_at:
        if trainer.is_global_zero:
            marker.write_text(f"held after step {{hold_at}}\\n")
        requeue = next(c for c in trainer.callbacks if isinstance(c, SlurmRequeue))
        deadline = time.monotonic() + {timeout}
        while not (requeue.requested or interrupts.active().requested) and time.monotonic() < deadline:
            time.sleep(0.05)
    check_for_signal(self, trainer, module, outputs, batch, batch_idx)


SignalCheckpoint.on_train_batch_end = hold_then_check
assert sys.argv[1:3] == ["-m", "vaelab.fit"], sys.argv
sys.argv = ["vaelab.fit", *sys.argv[3:]]
runpy.run_module("vaelab.fit", run_name="__main__", alter_sys=True)
"""


def write_held_fit(path: Path, python: str) -> Path:
    """``HELD_FIT`` as an executable file that runs with ``python``."""
    path.write_text(HELD_FIT.format(python=python, timeout=HOLD_TIMEOUT))
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- the cluster


def unavailable(reason: str) -> None:
    """Skip; but under CI=true fail, so a CI machine without a cluster is noticed."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def cluster_answers() -> bool:
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
    return out.returncode == 0 and any(s.startswith(USABLE) for s in out.stdout.split())


def ensure_cluster() -> None:
    """A SLURM cluster that answers and can run 2 one-CPU tasks on one node, else ``unavailable``.

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
        if not cluster_answers():
            unavailable(
                f"slurm/ci/start-cluster.sh said the cluster is up, but sinfo gets no answer:\n{started.stdout}"
            )
    elif not cluster_answers():
        unavailable("no SLURM cluster answers sinfo, and only root can start one with slurm/ci/start-cluster.sh")
    cpus = subprocess.run(
        ["sinfo", "--noheader", "--responding", "--format=%c"], capture_output=True, text=True, check=False
    )
    if max((int(c.rstrip("+")) for c in cpus.stdout.split() if c.rstrip("+").isdigit()), default=0) < 2:
        unavailable(f"the SLURM cluster has no node with 2 CPUs (sinfo: {cpus.stdout.strip()!r})")


def two_node_partition() -> tuple[str | None, str]:
    """The first partition with two responding nodes (start-cluster.sh's: twonode), or None and why not."""
    out = subprocess.run(
        ["sinfo", "--noheader", "--responding", "--Node", "--format=%R %N %T"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    usable: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        partition, node, state = line.split()
        if state.startswith(USABLE):
            usable.setdefault(partition.rstrip("*"), set()).add(node)
    partition = next((p for p, nodes in usable.items() if len(nodes) >= 2), None)
    return partition, f"no SLURM partition has two responding nodes (sinfo: {out.stdout.strip()!r})"


def default_partition() -> str | None:
    out = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=20, check=False)
    return next((p.rstrip("*") for p in out.stdout.split() if p.endswith("*")), None)


# ---------------------------------------------------------------- jobs


def submit(script: str, workdir: Path, sbatch_args: list[str], args: list[str], env: dict, cwd: Path = PROJECT) -> str:
    """``sbatch`` of ``slurm/<script>`` from ``cwd`` (the project directory, as a user would), the
    job running in ``workdir``; returns the job id."""
    command = ["sbatch", "--parsable", f"--chdir={workdir}", *sbatch_args, str(SLURM / script), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, f"sbatch failed: {' '.join(command)}\n{done.stderr}"
    job = done.stdout.strip().split(";")[0]
    assert job.isdigit(), done.stdout
    return job


def cancel(jobs: list[str]) -> None:
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30, check=False)


def parse_records(text: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in text.splitlines() if line.strip()]


def job_records(job: str = "") -> list[dict[str, str]]:
    """``scontrol show job``, one dict per job record (several for an array; every job without ``job``)."""
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", *([job] if job else [])],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return parse_records(out.stdout)


def log_text(workdir: Path, job: str) -> str:
    logs = sorted(workdir.glob(f"slurm-{job}*.out"))
    return (
        "\n".join(f"==> {p.name}\n{p.read_text(errors='replace')}" for p in logs)
        or f"(no log slurm-{job}*.out in {workdir})"
    )


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def wait_done(job: str, workdir: Path, timeout: float) -> list[dict[str, str]]:
    """The job's records once every one has ended; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        records = job_records(job)
        if records and all(r.get("JobState") in TERMINAL for r in records):
            return records
        if time.monotonic() > deadline:
            states = [(r.get("JobId"), r.get("JobState"), r.get("Reason")) for r in records]
            pytest.fail(f"waited {timeout:.0f} s for job {job} to end: {states}\n{tail(log_text(workdir, job))}")
        time.sleep(0.5)


def cpu_env(**extra: str) -> dict[str, str]:
    """This environment without VAELAB_* settings; one thread per training process, as the
    jobs have one CPU per task (the same for the jobs that are compared bit for bit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAELAB_")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


# ---------------------------------------------------------------- what a fit job leaves


def validated_epochs(metrics: Path) -> list[int]:
    """The epoch of every validation row of metrics.csv, in file order."""
    try:
        with open(metrics, newline="") as file:
            rows = list(csv.DictReader(file))
    except (FileNotFoundError, csv.Error):
        return []
    return [int(row["epoch"]) for row in rows if row.get("val/elbo") and (row.get("epoch") or "").isdigit()]


def load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


@dataclass
class FitJob:
    """One training job and what became of it."""

    name: str
    workdir: Path
    script: str
    sbatch_args: list[str]
    words: list[str]
    env: dict[str, str]
    hold_at: int | None = None  # the optimizer step after which it is held
    action: str | None = None  # what drive() does once it is held: "signal" (SIGUSR1) or "requeue"
    id: str = ""
    acted: bool = False
    when_held: dict[str, bool] = field(default_factory=dict)  # files present when it was held
    record: dict[str, str] = field(default_factory=dict)  # its final `scontrol show job` record
    problem: str = ""  # why drive() stopped waiting for it, if it did

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / f"slurm-{self.id}"

    @property
    def marker(self) -> Path:
        return self.workdir / "held"

    def hold(self, held_fit: Path, hold_at: int, action: str) -> FitJob:
        """Run through ``held_fit`` (``write_held_fit``), held after step ``hold_at`` until ``drive``
        does ``action`` to it."""
        self.hold_at, self.action = hold_at, action
        self.env = cpu_env(VAELAB_PYTHON=str(held_fit), HOLD_AT_STEP=str(hold_at), HOLD_MARKER=str(self.marker))
        return self

    def submit(self) -> None:
        self.workdir.mkdir(parents=True)
        self.id = submit(self.script, self.workdir, self.sbatch_args, self.words, self.env)

    def log(self) -> str:
        return log_text(self.workdir, self.id)

    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    def completed(self, restarts: int) -> str:
        """Assert the job completed after ``restarts`` requeues; returns its log."""
        log = self.log()
        assert not self.problem, f"job {self.id} ({self.name}): {self.problem}\n{tail(log)}"
        state, reason = self.record.get("JobState"), self.record.get("Reason")
        assert state == "COMPLETED", f"job {self.id} ({self.name}): {state} {reason}\n{tail(log)}"
        assert int(self.record["Restarts"]) == restarts, f"job {self.id} restarted {self.record['Restarts']} times\n{tail(log)}"
        return log


def drive(jobs: list[FitJob], timeout: float) -> None:
    """Until every job has ended: signal or requeue each held job once it is held. A job still
    running after ``timeout`` seconds gets its ``problem`` set."""
    deadline = time.monotonic() + timeout
    running = {job.id: job for job in jobs}
    while running:
        for job in running.values():
            if job.action and not job.acted and job.marker.is_file():
                job.when_held = {
                    "summary.json": (job.run_dir / "summary.json").exists(),
                    "last.ckpt": (job.run_dir / "checkpoints" / "last.ckpt").is_file(),
                }
                if job.action == "signal":  # what --signal=USR1@90 does before the time limit: the srun tasks only
                    command = ["scancel", "--signal=USR1", job.id]
                else:
                    command = ["scontrol", "requeue", job.id]
                subprocess.run(command, check=True, timeout=30)
                job.acted = True
        records = {r.get("JobId"): r for r in job_records()}
        for id_, job in list(running.items()):
            if records.get(id_, {}).get("JobState") in TERMINAL:
                job.record = records[id_]
                del running[id_]
        if running and time.monotonic() > deadline:
            for id_, job in running.items():
                state = records.get(id_, {})
                job.problem = f"waited {timeout:.0f} s for it to end: {state.get('JobState')} {state.get('Reason')}"
            return
        time.sleep(0.5)
