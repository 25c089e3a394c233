#!/usr/bin/env bash
# The sample-quality screen on one GPU: every variant trained at once, each by its own train_variant.py process
# (same seed, same classifier, 1,000 samples each: raw, after one Tweedie step, and by MALA at beta 1.5 and 2).
#
#   bash bench/gpu_screen.sh OUT_DIR SECONDS        # results in OUT_DIR/runs/NAME.json, logs in OUT_DIR/logs/
#   QUICK=1 bash bench/gpu_screen.sh /tmp/s 120     # the quick preset: a smoke test of the script, on any device
#
# PYTHON picks the interpreter (default python3). A variant still running after SECONDS is stopped and leaves no results file. Checkpoints go to a temporary folder.
set -u
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}    # the GPU does the work: one CPU thread per process
out=$1
limit=$2
ck=$(mktemp -d)
mkdir -p "$out/logs" "$out/runs"
# the classifier first, once, so that every variant scores with the same one
${PYTHON:-python3} -c "
import sys; sys.path.insert(0, '.')
from bench.common import classifier, config, lib
quick = '${QUICK:-0}' == '1'
cfg = config(quick=quick)
path = '$ck/classifier_' + ('quick' if quick else 'full') + '.pt'
classifier(cfg, lib.mnist_splits(cfg, lib.pick_device()), path, lib.pick_device())
" > "$out/logs/classifier.log" 2>&1
while read -r name settings; do
  [ -z "$name" ] && continue
  # shellcheck disable=SC2086
  timeout "$limit" ${PYTHON:-python3} bench/train_variant.py "$name" $settings --quality --mala ${QUICK:+--quick} --out-dir "$out/runs" \
    --ckpt-dir "$ck" > "$out/logs/$name.log" 2>&1 &
done <<'VARIANTS'
base_20ep      epochs=20
s15_20ep       epochs=20 train_noise=1.5
s20_20ep       epochs=20 train_noise=2.0
s15_cb_20ep    epochs=20 train_noise=1.5 split=checkerboard
s15_an5_20ep   epochs=20 train_noise=1.5 noise_anneal=5
a05_s05_20ep   epochs=20 logit_alpha=0.05 train_noise=0.5
pix05_20ep     epochs=20 logit_alpha=None train_noise=0.05
pix10_20ep     epochs=20 logit_alpha=None train_noise=0.1
base_60ep      epochs=60
s15_60ep       epochs=60 train_noise=1.5
s15_an15_60ep  epochs=60 train_noise=1.5 noise_anneal=15
VARIANTS
wait
rm -rf "$ck"
