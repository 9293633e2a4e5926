#!/usr/bin/env bash
# The shortened, CPU-only runs behind docs/RESULTS.md (a 2-core machine, no GPU).
# Budgets are far below the papers': see RESULTS.md for each run's epochs and wall time.
#   bash docs/reproduce_cpu.sh [OUT]     (default OUT: runs/results)
set -euo pipefail
OUT="${1:-runs/results}"
FIT="uv run python -m vaelab.fit trainer.progress_bar=false"

for nz in 3 5 10 20 200; do
  $FIT experiment=kingma_mnist model.latent_dim=$nz trainer.max_epochs=10 eval.ll_samples=1000 eval.track_test=true \
    run.dir="$OUT/kingma_mnist-nz$nz"
done
for nz in 2 5 10 20; do
  $FIT experiment=kingma_frey model.latent_dim=$nz trainer.max_epochs=500 eval.ll_samples=1000 eval.track_test=true \
    run.dir="$OUT/kingma_frey-nz$nz"
done
for objective in elbo iwae; do
  for k in 1 5 50; do
    $FIT experiment=iwae_1layer model.objective=$objective model.k=$k trainer.max_epochs=3 \
      eval.ll_samples=1000 run.dir="$OUT/iwae_1layer-$objective-k$k"
  done
done
for run in "elbo 1" "iwae 50"; do
  set -- $run
  $FIT experiment=iwae_2layer model.objective=$1 model.k=$2 trainer.max_epochs=3 \
    eval.ll_samples=1000 run.dir="$OUT/iwae_2layer-$1-k$2"
done
