#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds lorad, and runs the
# built-in example end to end on lorad's own documentation and sources as text:
#   1. `lorad prep` turns the text into byte-level tokens (HDF5);
#   2. `lorad init-model` writes a small random GPT-2 and `lorad train --mode full`
#      pretrains it briefly (the base model);
#   3. `lorad train` fine-tunes the base with LoRA and writes a PEFT adapter.
# Output goes to ${LORAD_QUICKSTART_OUT:-./quickstart-out}. LORAD_QUICKSTART_STEPS
# shortens the run (CI uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${LORAD_QUICKSTART_OUT:-$root/quickstart-out}
steps=${LORAD_QUICKSTART_STEPS:-300}

./deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
lorad=$root/build/lorad

mkdir -p "$out"
cat README.md storage/*.h worker/*.h coordinator/*.h > "$out/train.txt"
cat worker/*.c > "$out/val.txt"
"$lorad" prep --text "$out/train.txt" --out "$out/train.h5"
"$lorad" prep --text "$out/val.txt" --out "$out/val.h5"

echo "== pretraining a small GPT-2 base (full fine-tuning from random init)"
"$lorad" init-model --out "$out/init" --layers 2 --dim 64 --heads 4 --vocab 256 --positions 128
"$lorad" train --model "$out/init" --data "$out/train.h5" --out "$out/base" --mode full \
  --steps "$steps" --batch 8 --seq 64 --lr 3e-3 --schedule cosine --warmup 10 --clip 1

echo "== LoRA fine-tuning of the base"
"$lorad" train --model "$out/base/model" --data "$out/train.h5" --val "$out/val.h5" --out "$out/lora" \
  --targets c_attn,mlp.c_fc --rank 8 --alpha 16 --steps "$steps" --batch 8 --seq 64 --lr 2e-3 \
  --warmup 10 --eval-every 100 --eval-batches 8

echo "== done"
echo "metrics:      $out/lora/metrics.jsonl"
echo "PEFT adapter: $out/lora/adapter"
