#!/usr/bin/env bash
# The same-budget comparison of likelihoods of grey-level MNIST (data.binarize=none) for
# docs/RESULTS.md, exactly as run for it on a 2-core CPU: each run trains the default model
# (20 latent dimensions, [500, 500] softplus, Adam 1e-3, batch 100) for the same epochs with
# seed 0, and vaelab.evaluate estimates log p(x) with 1000 importance samples per image on the
# first TEST_IMAGES test images. What the numbers mean: docs/evaluate.md#bits-per-dimension.
#   bash docs/same_budget_likelihoods.sh [OUT] [EPOCHS] [TEST_IMAGES]   (defaults: runs/likelihoods 3 200)
set -euo pipefail
OUT="${1:-runs/likelihoods}"
EPOCHS="${2:-3}"
BATCHES=$(( ${3:-200} / 100 ))
PY="${VAELAB_PYTHON:-uv run python}"
for run in "bernoulli bernoulli" "continuous_bernoulli cb" "logistic logistic1 model.mixtures=1" "logistic logistic5 model.mixtures=5"; do
  set -- $run
  $PY -m vaelab.fit model=$1 data.binarize=none seed=0 trainer.max_epochs=$EPOCHS trainer.progress_bar=false \
    eval.ll_samples=100 trainer.limit_test_batches=$BATCHES run.dir="$OUT/$2" "${@:3}"
  $PY -m vaelab.evaluate ckpt="$OUT/$2" eval.ll_samples=1000 trainer.limit_test_batches=$BATCHES
done
