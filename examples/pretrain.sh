#!/usr/bin/env bash
# Reproduces the bundled base model examples/base/ from scratch with lorad alone:
# `lorad prep` turns the King James corpus (examples/corpora/, see PROVENANCE.md) into
# byte-level tokens, `lorad init-model` writes a random 6-layer, 128-wide GPT-2 with a
# 256-byte vocabulary (1.24 M parameters), and `mpirun -np 2 lorad train --mode full`
# pretrains it; the result replaces examples/base/ and the final validation loss is
# printed (examples/README.md records it). It took 25 minutes on 2 shared cores with the
# kernels of its day; other kernels round differently, so a rerun gives a base of the same
# quality, not the same bytes.
# Needs a built lorad (LORAD, default build/lorad); work files go to
# ${LORAD_PRETRAIN_WORK:-examples/pretrain-work}, which --resume auto lets an interrupted
# run continue from.
set -euo pipefail
cd "$(dirname "$0")/.."
lorad=${LORAD:-$PWD/build/lorad}
work=${LORAD_PRETRAIN_WORK:-$PWD/examples/pretrain-work}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$work"

"$lorad" prep --text examples/corpora/kjv-train.txt --out "$work/kjv-train.h5" --overwrite
"$lorad" prep --text examples/corpora/kjv-val.txt --out "$work/kjv-val.h5" --overwrite
"$lorad" init-model --out "$work/init" --layers 6 --dim 128 --heads 4 --vocab 256 --positions 128 --seed 42
mpirun --oversubscribe -np 2 "$lorad" train --model "$work/init" --mode full \
  --data "$work/kjv-train.h5" --val "$work/kjv-val.h5" --out "$work/run" --resume auto \
  --steps 1000 --batch 16 --seq 128 --lr 3e-3 --schedule cosine --warmup 30 --clip 1 \
  --eval-every 100 --eval-batches 16 --ckpt-every 100 --log-every 20

mkdir -p examples/base
cp "$work/run/model/config.json" "$work/run/model/model.safetensors" examples/base/
"$lorad" init-tokenizer --model examples/base --overwrite   # the byte-level tokenizer with ChatML's tokens
echo "pretrain: final validation loss on kjv-val (nats per byte):"
"$lorad" eval --model examples/base --data "$work/kjv-val.h5" --seq 128
