#!/usr/bin/env bash
# The body of slurm/fit.sbatch and slurm/multinode.sbatch, which differ only in their #SBATCH
# headers: one vaelab fit under srun, continued from its newest checkpoint when the job is
# requeued. Not submitted itself: those scripts run it with their arguments (`bash fit_job.sh ARGS`),
# in the job's environment. Its settings (VAELAB_PYTHON, VAELAB_PROJECT, VAELAB_RUNS, ...): the top of
# slurm/fit.sbatch.
set -euo pipefail

if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "vaelab-slurm: not in a SLURM job: submit slurm/fit.sbatch or slurm/multinode.sbatch with sbatch" >&2
  exit 2
fi
PROJECT="${VAELAB_PROJECT:-${SLURM_SUBMIT_DIR:-$PWD}}"
if [ -z "${VAELAB_PYTHON:-}" ]; then
  if ! command -v uv >/dev/null 2>&1; then
    echo "vaelab-slurm: uv is not on PATH: install uv, or set VAELAB_PYTHON to a Python with vaelab installed" >&2
    exit 2
  fi
  if [ ! -f "$PROJECT/pyproject.toml" ]; then
    echo "vaelab-slurm: no pyproject.toml in $PROJECT: submit from the vaelab project directory, or set VAELAB_PROJECT or VAELAB_PYTHON" >&2
    exit 2
  fi
  VAELAB_PYTHON=$(uv run --project "$PROJECT" python -c 'import sys; print(sys.executable)')
fi

RUN_DIR="${VAELAB_RUNS:-runs}/slurm-${SLURM_JOB_ID}"
DEVICES="${SLURM_NTASKS_PER_NODE:-${SLURM_NTASKS:-1}}"

# A job requeued by SLURM itself (node failure, preemption, `scontrol requeue` by hand) got no
# SIGUSR1, so its newest state is checkpoints/last.ckpt (vaelab.fit saves it on the SIGTERM
# SLURM sends first; after a node failure, the last epoch's end or interval checkpoint), not an
# hpc checkpoint. Copy it to the next hpc_ckpt_<n>.ckpt so that Lightning continues from
# it in the same way (vaelab's run.resume is no use here: it refuses group choices such as
# model=... among the arguments, which a requeued job passes again).
CONTINUED=""
LAST="$RUN_DIR/checkpoints/last.ckpt"
N=0 # the highest n of hpc_ckpt_<n>.ckpt: the one Lightning would continue from
for f in "$RUN_DIR"/hpc_ckpt_*.ckpt; do
  n=${f##*/hpc_ckpt_}
  n=${n%.ckpt}
  if [[ $n =~ ^[0-9]+$ ]] && ((10#$n > N)); then N=$((10#$n)); fi
done
if [ -f "$LAST" ] && { [ "$N" -eq 0 ] || [ "$LAST" -nt "$RUN_DIR/hpc_ckpt_$N.ckpt" ]; }; then
  HPC="$RUN_DIR/hpc_ckpt_$((N + 1)).ckpt"
  # -p keeps last.ckpt's time, so the copy is not taken for a newer state. Copied to a temporary
  # name (no "hpc_ckpt_" in it: Lightning would take it for one), then renamed: a copy cut short
  # is never found by Lightning (vaelab.fit removes such leftovers, .partial-*.tmp).
  TMP="$RUN_DIR/.partial-$$-hpc-copy.tmp"
  if cp -p "$LAST" "$TMP" && mv "$TMP" "$HPC"; then
    CONTINUED=", continued from $LAST (copied to $HPC)"
  else
    echo "vaelab-slurm: could not copy $LAST to $HPC: the run continues from an older checkpoint, if any" >&2
  fi
fi

echo "vaelab-slurm: job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}:" \
  "${SLURM_NNODES:-1} node(s) x ${DEVICES} task(s); run directory ${RUN_DIR}${CONTINUED}; python ${VAELAB_PYTHON}"

# srun does not pass --cpus-per-task on to the tasks by itself in every SLURM version.
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi

# The settings first, the job's arguments last: vaelab lets the last value of a key win.
srun --kill-on-bad-exit=1 "$VAELAB_PYTHON" -m vaelab.fit \
  trainer.accelerator="${VAELAB_ACCELERATOR:-gpu}" \
  trainer.strategy="${VAELAB_STRATEGY:-ddp}" \
  trainer.devices="$DEVICES" \
  trainer.num_nodes="${SLURM_NNODES:-1}" \
  trainer.progress_bar=false \
  run.dir="$RUN_DIR" \
  "$@"
