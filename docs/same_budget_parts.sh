#!/usr/bin/env bash
# The same-budget comparison of priors and networks in docs/RESULTS.md ("Priors and networks"),
# exactly as run for it on a 2-core CPU: each run trains the default model (MNIST, dynamic
# binarization, 20 latent dimensions, Adam 1e-3, batch 100) for the same epochs with the same
# seed, and vaelab.evaluate estimates log p(x) with 5000 importance samples per image on the
# first TEST_IMAGES test images.
#   bash docs/same_budget_parts.sh [OUT] [EPOCHS] [TEST_IMAGES]   (defaults: runs/parts 3 200)
set -euo pipefail
OUT="${1:-runs/parts}"
EPOCHS="${2:-3}"
BATCHES=$(( ${3:-200} / 100 ))
PY="${VAELAB_PYTHON:-uv run python}"
# ROWS picks rows by name (default: all); the last two are the conv trunks' former activation.
ROWS="${ROWS:-standard-mlp vamp-mlp mog-mlp standard-conv vamp-conv standard-conv-softplus vamp-conv-softplus}"
for row in $ROWS; do
  IFS=- read -r prior net activation <<< "$row"
  $PY -m vaelab.fit model=bernoulli prior=$prior net=$net ${activation:+net.activation=$activation} \
    trainer.max_epochs=$EPOCHS trainer.progress_bar=false eval.collapse_diagnostics=true \
    eval.ll_samples=100 trainer.limit_test_batches=$BATCHES run.dir="$OUT/$row"
  $PY -m vaelab.evaluate ckpt="$OUT/$row" eval.ll_samples=5000 trainer.limit_test_batches=$BATCHES 'eval.iwae_k=[1,50]'
done
