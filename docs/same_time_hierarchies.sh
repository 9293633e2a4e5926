#!/usr/bin/env bash
# The same-time comparison of hierarchies in docs/RESULTS.md ("Top-down hierarchies"), as run
# for it on a 2-core CPU: Burda et al.'s MNIST architectures (tanh MLPs; one layer of 50 units,
# or z1 of 100 and z2 of 50) trained by the ELBO with one sample, Adam 1e-3 (eps 1e-4), batch
# 100, dynamic binarization, eager (no compiling, so that no run spends its minutes compiling),
# one thread each, two runs at a time, for MINUTES of training each (trainer.max_time); then
# vaelab.evaluate: L_5000 and the per-layer KL on the first TEST_IMAGES test images.
#   bash docs/same_time_hierarchies.sh [OUT] [MINUTES] [TEST_IMAGES]   (defaults: runs/hierarchies 5 500)
set -euo pipefail
OUT="${1:-runs/hierarchies}"
MINUTES="${2:-5}"
BATCHES=$(( ${3:-500} / 100 ))
PY="${VAELAB_PYTHON:-uv run python}"
COMMON=(model.objective=elbo model.k=1 model.kl=analytic data.batch_size=100 trainer.compile=false
        trainer.progress_bar=false trainer.max_epochs=1000 "trainer.max_time=00:00:$(printf %02d "$MINUTES"):00"
        eval.ll_samples=100 trainer.limit_test_batches=$BATCHES eval.collapse_diagnostics=true)
declare -A ROW=(
  [one-layer]="experiment=iwae_1layer"
  [bottom-up]="experiment=iwae_2layer"
  [ladder]="experiment=iwae_2layer hierarchy=topdown hierarchy.merge=precision"
  [residual]="experiment=iwae_2layer hierarchy=topdown hierarchy.merge=residual"
)
fit() { OMP_NUM_THREADS=1 $PY -m vaelab.fit ${ROW[$1]} "${COMMON[@]}" run.dir="$OUT/$1" > "$OUT/$1.log" 2>&1; }
mkdir -p "$OUT"
for pair in "bottom-up ladder" "one-layer residual"; do  # side by side: each pair shares the machine alike
  read -r a b <<< "$pair"
  fit "$a" & fit "$b" & wait
done
for row in one-layer bottom-up ladder residual; do
  OMP_NUM_THREADS=2 $PY -m vaelab.evaluate ckpt="$OUT/$row" eval.ll_samples=5000 trainer.limit_test_batches=$BATCHES 'eval.iwae_k=[1,50]' \
    | grep -E "log-likelihood|ELBO|per layer|active units" | sed "s/^/$row: /"
done
