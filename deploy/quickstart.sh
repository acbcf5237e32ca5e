#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds lorad, and shows what
# LoRA does. The bundled base (examples/base: a 1.24 M-parameter byte-level GPT-2 that
# lorad pretrained on the King James Bible) is adapted with LoRA, on 2 ranks for a
# couple of minutes, to a different style: Ambrose Bierce's The Devil's Dictionary
# (examples/corpora). It ends with a summary (trainable parameters, validation loss of
# the base and of the adapted model, tokens/s, where the checkpoint and the PEFT adapter
# are), a greedy sample of each model from the same prompt, and a loss-curve PNG.
#   LORAD_QUICKSTART_OUT    output directory (default ./quickstart-out)
#   LORAD_QUICKSTART_STEPS  LoRA steps (default 400, about a minute; CI uses fewer)
#   LORAD_QUICKSTART_LORAD  an already built lorad: skip installing and building (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${LORAD_QUICKSTART_OUT:-$root/quickstart-out}
steps=${LORAD_QUICKSTART_STEPS:-400}
prompt="POLITICS, n."

if [ -n "${LORAD_QUICKSTART_LORAD:-}" ]; then
  lorad=$LORAD_QUICKSTART_LORAD
else
  ./deploy/install-deps.sh
  echo "== building lorad (build/)"
  ./deploy/build.sh release >/dev/null
  lorad=$root/build/lorad
fi
# Open MPI refuses to run as root without these (containers, CI); harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

rm -rf "$out/run"
mkdir -p "$out"
base=$root/examples/base
"$lorad" prep --text examples/corpora/devil-train.txt --out "$out/devil-train.h5" --overwrite >/dev/null
"$lorad" prep --text examples/corpora/devil-val.txt --out "$out/devil-val.h5" --overwrite >/dev/null

val_loss() {  # $@: extra eval flags; prints the validation loss of the Devil's Dictionary
  "$lorad" eval --model "$base" --data "$out/devil-val.h5" --seq 128 --json "$@" |
    sed -E 's/.*"loss": ([0-9.eE+-]+).*/\1/'
}
sample() {  # $@: extra generate flags; greedy, so the two samples differ only by the adapter
  "$lorad" generate --model "$base" --prompt "$prompt" --max-new 110 --temperature 0 "$@"
}

base_loss=$(val_loss)
echo "== the base model (examples/base), pretrained on the King James Bible, continues \"$prompt\":"
sample | tee "$out/sample-base.txt"
echo
echo "== LoRA on The Devil's Dictionary: mpirun -np 2 lorad train, $steps steps"
mpirun --oversubscribe -np 2 "$lorad" train --model "$base" --data "$out/devil-train.h5" \
  --val "$out/devil-val.h5" --out "$out/run" --targets c_attn --rank 4 --alpha 8 \
  --steps "$steps" --batch 8 --seq 128 --lr 1e-2 --warmup 10 --eval-every 50 --log-every 20

echo "== the adapted model continues \"$prompt\":"
sample --adapter "$out/run/adapter" | tee "$out/sample-adapted.txt"
echo

# metrics.jsonl -> "step loss val_loss" columns, "?" where a step has no evaluation;
# step 0 is the base
echo "0 ? $base_loss" > "$out/loss.dat"
awk '{ v = "?"
  match($0, /"step":[0-9]+/); s = substr($0, RSTART + 7, RLENGTH - 7)
  match($0, /"loss":[^,}]+/); l = substr($0, RSTART + 7, RLENGTH - 7)
  if (match($0, /"val_loss":[^,}]+/)) v = substr($0, RSTART + 11, RLENGTH - 11)
  print s, l, v }' "$out/run/metrics.jsonl" >> "$out/loss.dat"
gnuplot <<EOF
set terminal pngcairo size 800,480
set output "$out/loss.png"
set datafile missing "?"
set title "LoRA on The Devil's Dictionary (base: KJV-pretrained byte-level GPT-2)"
set xlabel "step"; set ylabel "cross-entropy (nats per byte)"; set grid
plot "$out/loss.dat" using 1:2 with lines title "training loss", \
     "" using 1:3 with linespoints pointtype 7 title "validation loss"
EOF

adapted_loss=$(val_loss --adapter "$out/run/adapter")
params=$(sed -nE 's/^lorad: ([0-9]+ trainable parameters \([0-9.]+% of [0-9]+\)).*/\1/p' "$out/run/train.log")
tok_s=$(tail -n 1 "$out/run/metrics.jsonl" | sed -E 's/.*"tokens_per_s":([0-9.]+).*/\1/')
cat <<EOF
== summary
trainable:          $params
val loss, base:     $base_loss nats per byte (The Devil's Dictionary, held out)
val loss, adapted:  $adapted_loss nats per byte
throughput:         ${tok_s%.*} tokens/s (2 ranks)
checkpoint:         $out/run/checkpoints/latest
PEFT adapter:       $out/run/adapter
loss curve:         $out/loss.png
samples:            $out/sample-base.txt, $out/sample-adapted.txt
EOF
