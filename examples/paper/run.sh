#!/usr/bin/env bash
# examples/paper/run.sh: the LoRA paper's findings (Hu et al., 2021), measured with lorad
# on the bundled base (examples/base, a 1.24 M-parameter byte-level GPT-2 pretrained on
# the King James Bible) adapted to The Devil's Dictionary (examples/corpora):
#   1. LoRA at r 1, 2, 4, 8, 64 on q,v against full fine-tuning: validation loss,
#      trainable parameters, step time and peak RSS;
#   2. one budget spent on different weights (the paper's Table 5);
#   3. subspace similarity of r 8 and r 64, and of two seeds at r 64 (Figures 3 and 4);
#   4. how ΔW relates to W (Table 7);
#   5. whether each claim held here.
# Every configuration runs with 3 seeds; report.py writes RESULTS.md (mean ± std) and
# its PNGs. The learning rates are picked first, on seed 0, for LoRA (q,v r 8) and full
# fine-tuning separately.
#   examples/paper/run.sh [--quick] [--out DIR]
#     --quick   10 steps and 2 seeds, no learning-rate sweep: a couple of minutes, for CI
#     --out     where RESULTS.md and the PNGs go (default examples/paper, with --quick
#               examples/paper/quick-out); the runs go to OUT/work, replaced on a rerun
#   LORAD       a built lorad binary; without it, deploy/build.sh release builds build/lorad
# Run it at low priority on a shared machine: nice -n 10 examples/paper/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
quick=0
out=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    *) echo "usage: examples/paper/run.sh [--quick] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "${LORAD:-}" ]; then
  echo "== building lorad (deploy/build.sh release)"
  "$root/deploy/build.sh" release >/dev/null
fi
lorad=${LORAD:-$root/build/lorad}
[ -x "$lorad" ] || { echo "run.sh: no lorad at $lorad" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "run.sh: /usr/bin/time is missing (deploy/install-deps.sh installs it)" >&2; exit 2; }
base=$root/examples/base
if [ $quick = 1 ]; then
  out=${out:-$here/quick-out}; seeds=(0 1); steps=10; warmup=2; eval_flags=(--eval-batches 2)
else
  out=${out:-$here}; seeds=(0 1 2); steps=600; warmup=20; eval_flags=()
fi
work=$out/work
# the work directory is the study's own: replaced only when it carries the study's marker
if [ -e "$work" ] && [ ! -e "$work/.lorad-paper-work" ]; then
  echo "run.sh: $work exists and is not a work directory of this study; remove it or pick another --out" >&2
  exit 2
fi
rm -rf "$work"
mkdir -p "$work/runs" "$work/analysis"
touch "$work/.lorad-paper-work"
uptime > "$work/load-start.txt"
date -u +%Y-%m-%dT%H:%M:%SZ > "$work/started.txt"
{ git -C "$root" rev-parse --short HEAD && git -C "$root" status --porcelain --untracked-files=no; } \
  > "$work/commit.txt" 2>/dev/null || echo unknown > "$work/commit.txt"

"$lorad" prep --text "$root/examples/corpora/devil-train.txt" --out "$work/train.h5" >/dev/null
"$lorad" prep --text "$root/examples/corpora/devil-val.txt" --out "$work/val.h5" >/dev/null

# One thread per run: on a machine shared with other work, OpenMP threads on busy cores
# lose more time waiting for each other than they gain, and the step times would say more
# about the load than about the configuration.
train() {  # NAME SEED LR FLAGS...: one run into work/runs/NAME, its peak RSS from /usr/bin/time
  local name=$1 seed=$2 lr=$3
  shift 3
  echo "== $name (seed $seed, lr $lr): $*"
  /usr/bin/time -v -o "$work/runs/$name.time" "$lorad" train --model "$base" --data "$work/train.h5" \
    --val "$work/val.h5" --out "$work/runs/$name" --steps $steps --batch 8 --seq 128 --lr "$lr" \
    --warmup $warmup --seed "$seed" --threads 1 --eval-every 0 "${eval_flags[@]}" --ckpt-every 0 --log-every 100 "$@" \
    2> "$work/runs/$name.log"
  rm -rf "$work/runs/$name/checkpoints"
}
lora() { echo --targets "$1" --rank "$2" --alpha 16; }  # TARGETS R: alpha fixed, as the paper's

# learning rates: LoRA q,v r 8 and full fine-tuning, seed 0; the best validation loss wins
lr_lora=1e-2
lr_full=1e-3
if [ $quick = 0 ]; then
  for lr in 3e-3 1e-2 3e-2; do train "sweep_lora_$lr" 0 $lr $(lora q,v 8); done
  for lr in 3e-4 1e-3 3e-3; do train "sweep_full_$lr" 0 $lr --mode full; done
  lr_lora=$(python3 "$here/report.py" best-lr "$work/runs" sweep_lora_)
  lr_full=$(python3 "$here/report.py" best-lr "$work/runs" sweep_full_)
fi
echo "$lr_lora $lr_full" > "$work/lr.txt"

# parts 1 and 2, seed by seed, the configurations interleaved so that each sees the
# machine's load alike
for s in "${seeds[@]}"; do
  for r in 1 2 4 8 64; do train "qv_r${r}_s$s" $s $lr_lora $(lora q,v $r); done
  train "full_s$s" $s $lr_full --mode full
  train "q_r8_s$s" $s $lr_lora $(lora q 8)
  train "k_r8_s$s" $s $lr_lora $(lora k 8)
  train "v_r8_s$s" $s $lr_lora $(lora v 8)
  train "o_r8_s$s" $s $lr_lora $(lora attn.c_proj 8)
  train "qk_r4_s$s" $s $lr_lora $(lora q,k 4)
  train "qkvo_r2_s$s" $s $lr_lora $(lora q,k,v,attn.c_proj 2)
done

# parts 3 and 4: lorad analyze
analyze() {  # NAME FLAGS...
  local name=$1
  shift
  echo "== analyze $name: $*"
  "$lorad" analyze --out "$work/analysis/$name" --json "$@" > /dev/null
}
for s in "${seeds[@]}"; do
  analyze "r8_r64_s$s" --adapter "$work/runs/qv_r8_s$s/adapter" --against "$work/runs/qv_r64_s$s/adapter"
  for r in 4 8 64; do
    analyze "amp_r${r}_s$s" --adapter "$work/runs/qv_r${r}_s$s/adapter" --model "$base" --seed "$s"
  done
done
n=${#seeds[@]}
for ((i = 0; i < n; i++)); do
  for ((j = i + 1; j < n; j++)); do
    a=${seeds[i]} b=${seeds[j]}
    analyze "r64_s${a}_s$b" --adapter "$work/runs/qv_r64_s$a/adapter" --against "$work/runs/qv_r64_s$b/adapter"
  done
done

uptime > "$work/load-end.txt"
python3 "$here/report.py" write --work "$work" --out "$out" --lorad "$lorad" --quick $quick
echo "== wrote $out/RESULTS.md"
