#!/usr/bin/env bash
# The shortened, CPU-only runs behind docs/RESULTS.md (a 2-core machine, no GPU), exactly as
# run for it. Budgets are far below the papers': see RESULTS.md for each run's budget.
#   bash docs/reproduce_cpu.sh [OUT]     (default OUT: runs/results)
set -euo pipefail
OUT="${1:-runs/results}"
FIT="uv run python -m vaelab.fit trainer.progress_bar=false"

# Kingma & Welling: latent-size sweeps, the test-set ELBO scored after every epoch.
for nz in 2 5 10 20; do
  $FIT experiment=kingma_frey model.latent_dim=$nz trainer.max_epochs=500 eval.ll_samples=1000 eval.track_test=true \
    run.dir="$OUT/kingma_frey-nz$nz"
done
for nz in 3 5 10 20 200; do
  $FIT experiment=kingma_mnist model.latent_dim=$nz trainer.max_epochs=5 eval.ll_samples=1000 eval.track_test=true \
    run.dir="$OUT/kingma_mnist-nz$nz"
done

# Burda et al.: one epoch (3000 steps of 20 images) of each.
for run in "iwae_1layer elbo 1" "iwae_1layer elbo 50" "iwae_1layer iwae 5" "iwae_1layer iwae 50" "iwae_2layer iwae 50"; do
  set -- $run
  $FIT experiment=$1 model.objective=$2 model.k=$3 trainer.max_epochs=1 eval.ll_samples=1000 run.dir="$OUT/$1-$2-k$3"
done
