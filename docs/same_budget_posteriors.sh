#!/usr/bin/env bash
# The same-budget comparison of posteriors in docs/RESULTS.md: the default model (MNIST, dynamic
# binarization, 20 latent dimensions, Adam 1e-3, batch 100) for the same epochs with the same seed,
# with q(z|x) a diagonal Gaussian, a planar flow (10 steps) and an IAF (2 steps); vaelab.evaluate
# estimates log p(x) with 5000 importance samples per image on the first TEST_IMAGES test images.
#   bash docs/same_budget_posteriors.sh [OUT] [EPOCHS] [TEST_IMAGES]   (defaults: runs/posteriors 3 200)
set -euo pipefail
OUT="${1:-runs/posteriors}"
EPOCHS="${2:-3}"
BATCHES=$(( ${3:-200} / 100 ))
PY="${VAELAB_PYTHON:-uv run python}"
for posterior in gaussian planar iaf; do
  $PY -m vaelab.fit model=bernoulli posterior=$posterior trainer.max_epochs=$EPOCHS trainer.progress_bar=false \
    eval.ll_samples=100 trainer.limit_test_batches=$BATCHES run.dir="$OUT/$posterior"
  $PY -m vaelab.evaluate ckpt="$OUT/$posterior" eval.ll_samples=5000 trainer.limit_test_batches=$BATCHES 'eval.iwae_k=[1,50]'
done
