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

# Gradient estimators of the IWAE bound: reparam vs dreg, 1000 steps each (one torch thread
# per run), then reparam for 2000 steps (about dreg's wall time at k=5).
ESTIMATORS="trainer.max_epochs=1 eval.ll_samples=200 trainer.limit_test_batches=20"
for run in "5 0" "5 1" "50 0"; do
  set -- $run
  for estimator in reparam dreg; do
    OMP_NUM_THREADS=1 $FIT experiment=iwae_1layer model.k=$1 model.estimator=$estimator seed=$2 $ESTIMATORS \
      trainer.limit_train_batches=1000 run.dir="$OUT/iwae_1layer-k$1-$estimator-seed$2"
  done
done
for seed in 0 1; do
  OMP_NUM_THREADS=1 $FIT experiment=iwae_1layer model.k=5 model.estimator=reparam seed=$seed $ESTIMATORS \
    trainer.limit_train_batches=2000 run.dir="$OUT/iwae_1layer-k5-reparam-2000steps-seed$seed"
done
OMP_NUM_THREADS=1 uv run python benchmarks/gradient_snr.py --train-steps 3000 --draws 300 --batch 5 model.k=5
