#!/usr/bin/env bash
# The whole pipeline on tiny Shakespeare: prepare -> train -> eval -> sample.
#
#   examples/shakespeare.sh                 # downloads the corpus once (cached in ~/.cache/gptkit)
#   GPTKIT_SHAKESPEARE=path/to/tinyshakespeare.txt examples/shakespeare.sh   # offline: a local copy
#
# Each stage reads the previous stage's files; stdout carries only data (paths, metrics, text), so the
# stages chain with $(...) and pipes. Set DEVICE=cuda to train on a GPU; MAX_ITERS=20 for a quick check
# of the pipeline (the preset's own length otherwise: 2000 iterations on a CPU). The run folder is out/,
# the default --ckpt of eval, sample and export.
set -euo pipefail

DATA=${DATA:-data/shakespeare}
OUT=${OUT:-out}
DEVICE=${DEVICE:-auto}
MAX_ITERS=${MAX_ITERS:-}

data=$(gptkit prepare shakespeare --out "$DATA")                        # token shards + meta.json
ckpt=$(gptkit train --data "$data" --out "$OUT" --device "$DEVICE" --overwrite \
       ${MAX_ITERS:+--max-iters "$MAX_ITERS" --eval-interval "$MAX_ITERS"})  # ckpt.safetensors
gptkit eval --ckpt "$ckpt"                                              # loss, perplexity, bits/byte
echo "ROMEO:" | gptkit sample --ckpt "$ckpt" --max-new-tokens 400 --seed 1337
