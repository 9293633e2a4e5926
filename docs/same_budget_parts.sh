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
for run in "standard mlp" "vamp mlp" "mog mlp" "standard conv" "vamp conv"; do
  set -- $run
  $PY -m vaelab.fit model=bernoulli prior=$1 net=$2 trainer.max_epochs=$EPOCHS trainer.progress_bar=false \
    eval.ll_samples=100 trainer.limit_test_batches=$BATCHES run.dir="$OUT/$1-$2"
  $PY -m vaelab.evaluate ckpt="$OUT/$1-$2" eval.ll_samples=5000 trainer.limit_test_batches=$BATCHES 'eval.iwae_k=[1,50]'
done
# The VampPrior with conv networks once more, with a one-epoch KL warm-up (it collapsed without).
$PY -m vaelab.fit model=bernoulli prior=vamp net=conv optim.kl_warmup_epochs=1 trainer.max_epochs=$EPOCHS \
  trainer.progress_bar=false eval.ll_samples=100 trainer.limit_test_batches=$BATCHES run.dir="$OUT/vamp-conv-warmup"
$PY -m vaelab.evaluate ckpt="$OUT/vamp-conv-warmup" eval.ll_samples=5000 trainer.limit_test_batches=$BATCHES 'eval.iwae_k=[1,50]'
