#!/usr/bin/env bash
# The GPU check (docs/speed.md#the-gpu-check): what only a CUDA device can show, in one run of
# under 8 minutes for the few minutes a GPU is lent. Writes one report,
# ${OUT:-/tmp/gpu_check}/gpu_check.txt, one line per step (name, PASS|FAIL|TIMEOUT, seconds,
# detail), and each step's whole log in logs/<step>.log beside it. Every step runs, whatever
# the ones before gave; the exit status is 1 if any step did not PASS.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from the repository root
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh # the same steps on the CPU, tiny: the plumbing
#
# GPU_CHECK_PLANT_FAIL=<step>[,<step>...] / GPU_CHECK_PLANT_HANG=<step> replace those steps by a
# failure / a hang past a 3 s limit (tests/test_gpu_check.py checks the report and the exit status).
set -u -o pipefail  # no -e: a failed step must not stop the ones after it
cd "$(dirname "$0")/.."

export GPU_CHECK_DRY="${GPU_CHECK_DRY:-0}"
OUT_DIR="${OUT:-/tmp/gpu_check}"
REPORT="$OUT_DIR/gpu_check.txt"
LOGS="$OUT_DIR/logs"
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"  # all steps together; each step's limit is cut to what is left
mkdir -p "$LOGS"
: >"$REPORT"

export WORK DATA
WORK="$(mktemp -d)"  # tiny MNIST, run directories, carried wheels installed
DATA="$WORK/data"
trap 'rm -rf "$WORK"' EXIT
export VAELAB_DATA_DIR="$DATA" PYTHONUNBUFFERED=1

# The Python that runs vaelab: the project's .venv through uv where both are here (as .ci/run
# runs things), else the machine's python3 (on the GPU machine the image's, with torch, Lightning
# and pytest; the .venv is too large to carry there), with any wheels carried in .whl/.
if [[ -x .venv/bin/python ]] && command -v uv >/dev/null 2>&1; then
  PY="uv run --offline --no-sync python"
elif [[ -x .venv/bin/python ]]; then
  PY=".venv/bin/python"
else
  PY="python3"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # vaelab is not installed there: import it from here
  if compgen -G ".whl/*.whl" >/dev/null; then  # e.g. omegaconf, which the GPU image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl \
      >"$WORK/wheels.log" 2>&1 || { echo "installing .whl/*.whl failed:"; cat "$WORK/wheels.log"; }
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
  fi
fi
export PY

# Sizes: the GPU's, or tiny ones on the CPU for the dry mode.
if [[ "$GPU_CHECK_DRY" == 1 ]]; then
  export ACCELERATOR=cpu DEVICE=cpu THROUGHPUT_ARGS="--steps 3 --repeats 1 --only k=1" TRAIN_IMAGES=5400
  export BF16_WORDS="trainer.compile=false trainer.limit_train_batches=3 trainer.limit_val_batches=1 trainer.limit_test_batches=1 eval.ll_samples=10"
else
  export ACCELERATOR=gpu DEVICE=cuda THROUGHPUT_ARGS="--steps 100 --repeats 2" TRAIN_IMAGES=15000
  export BF16_WORDS="trainer.compile=true"  # the bf16 step captured as a CUDA graph, as a long run would
fi

# --- the steps: each a function, run in its own bash under its own timeout ---------------------

step_environment() {  # the GPU, and the versions of what runs on it
  if [[ "$GPU_CHECK_DRY" == 1 ]]; then echo "dry mode: no nvidia-smi"; else nvidia-smi || return 1; fi
  echo "python: $PY"
  $PY - <<'EOF'
import os, sys
import pytorch_lightning, torch
import vaelab  # noqa: F401  (vaelab and its dependencies import here)
print("python", sys.version.split()[0], sys.executable)
if not torch.cuda.is_available() and os.environ["GPU_CHECK_DRY"] != "1":
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (dry)"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"lightning {pytorch_lightning.__version__}, {gpu}")
EOF
}

step_data() {  # tiny MNIST of the real format: 5000 held out for validation, the rest trains
  $PY - "$DATA" "$TRAIN_IMAGES" <<'EOF'
import sys
from pathlib import Path
from tests.helpers import write_mnist
write_mnist(Path(sys.argv[1]), n_train=int(sys.argv[2]), n_test=1000)
print(f"tiny MNIST (random images, real format): {sys.argv[2]} training and 1000 test images")
EOF
}

run_cuda_pytest() {  # pytest -m cuda (and the step's -k); its summary line is the step's detail
  local files log="$WORK/pytest.$BASHPID.log" rc summary
  files=$(grep -l "pytest.mark.cuda" tests/test_*.py)  # only these: others import what the GPU image lacks
  # shellcheck disable=SC2086
  $PY -m pytest -p no:cacheprovider -q -rs -m cuda $files "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  summary=$(grep -E "[0-9]+ (passed|failed|skipped|deselected|errors?)|no tests ran" "$log" | tail -n 1 | tr -d '=')
  if [[ $rc == 0 && "$GPU_CHECK_DRY" != 1 ]] && grep -q "skipped" <<<"$summary"; then
    echo "tests were skipped on the GPU: ${summary}"  # a skip there means torch saw no GPU
    return 1
  fi
  echo "$summary"
  return "$rc"
}

step_cuda_tests() {  # the cuda tests but the two that have their own lines below
  run_cuda_pytest -k "not the_estimate_on_cuda and not fit_resumes"
}

step_estimate_gpu_vs_cpu() {  # the test-set estimate on the GPU against the CPU's, same samples
  run_cuda_pytest -k the_estimate_on_cuda
}

step_compiled_fit_resume() {  # vaelab.fit compiled as CUDA graphs: 2 epochs = 1 + resume to 2
  run_cuda_pytest -k fit_resumes
}

step_bf16_fit() {  # a bf16-mixed fit through the CLI, ending with finite numbers
  local run="$WORK/bf16"
  # shellcheck disable=SC2086
  $PY -m vaelab.fit experiment=smoke trainer.progress_bar=false "trainer.accelerator=$ACCELERATOR" \
    trainer.precision=bf16-mixed $BF16_WORDS "run.dir=$run" 2>&1 | tee "$WORK/bf16.out" || return 1
  grep -q "precision bf16-mixed" "$WORK/bf16.out" || { echo "the fit did not say it ran in bf16-mixed"; return 1; }
  $PY - "$run" <<'EOF'
import csv, json, math, sys
from pathlib import Path
run = Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
with open(run / "metrics.csv", newline="") as file:
    train = [float(row["train/elbo_epoch"]) for row in csv.DictReader(file) if row.get("train/elbo_epoch")]
numbers = {"train ELBO": train[-1] if train else math.nan, "test ELBO": summary["test_elbo"], "test ll": summary["test_ll"]}
words = ", ".join(f"{name} {value:.2f}" for name, value in numbers.items())
if not all(math.isfinite(value) for value in numbers.values()):
    sys.exit(f"not finite: {words}")
print(f"bf16-mixed: {words}")
EOF
}

step_throughput() {  # benchmarks/throughput.py on the device; its last line is the worst ratio
  # shellcheck disable=SC2086
  $PY benchmarks/throughput.py --device "$DEVICE" $THROUGHPUT_ARGS 2>&1 | tee "$WORK/throughput.out" || return 1
  echo "$(grep "^worst scenario" "$WORK/throughput.out"); $(tail -n 1 "$WORK/throughput.out")"
}

export -f run_cuda_pytest step_environment step_data step_cuda_tests step_estimate_gpu_vs_cpu \
  step_compiled_fit_resume step_bf16_fit step_throughput

# --- the runner ---------------------------------------------------------------------------------

failed=0
run_step() {  # run_step NAME LIMIT_S: runs step_NAME (- as _) under timeout, appends its line
  local name=$1 limit=$2 left rc status start seconds detail
  local command="step_${name//-/_}" log="$LOGS/$name.log"
  left=$((BUDGET_S - SECONDS))
  ((limit > left)) && limit=$left
  [[ ",${GPU_CHECK_PLANT_FAIL:-}," == *",$name,"* ]] && command="echo 'planted failure (GPU_CHECK_PLANT_FAIL)'; exit 1"
  [[ "${GPU_CHECK_PLANT_HANG:-}" == "$name" ]] && command="echo 'planted hang (GPU_CHECK_PLANT_HANG)'; sleep 60" limit=3
  start=$SECONDS
  if ((limit < 1)); then
    echo "the check's ${BUDGET_S} s were spent before this step" >"$log"
    rc=124
  else
    timeout -k 10 "$limit" bash -c "set -o pipefail; $command" >"$log" 2>&1 </dev/null
    rc=$?
  fi
  seconds=$((SECONDS - start))
  case $rc in
    0) status=PASS ;;
    124 | 137) status=TIMEOUT ;;  # timeout's status, or its SIGKILL after -k
    *) status=FAIL ;;
  esac
  [[ $status == PASS ]] || failed=$((failed + 1))
  detail=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//' | cut -c 1-160)
  [[ $status == TIMEOUT ]] && detail="after ${limit} s; last line: ${detail}"
  printf '%-20s %-7s %4d  %s\n' "$name" "$status" "$seconds" "$detail" | tee -a "$REPORT"
}

mode=$([[ "$GPU_CHECK_DRY" == 1 ]] && echo "dry (CPU)" || echo "GPU")
echo "# gpu_check, $mode, $(date -u +%Y-%m-%dT%H:%M:%SZ), python: $PY" | tee -a "$REPORT"
run_step environment 60
run_step data 60
run_step cuda-tests 150
run_step estimate-gpu-vs-cpu 60
run_step compiled-fit-resume 150
run_step bf16-fit 100
run_step throughput 300  # last: the longest, and timings rather than correctness
echo "# ${failed} of 7 steps did not pass; ${SECONDS} s in all; logs in $LOGS" | tee -a "$REPORT"
((failed == 0))
