#!/bin/sh
# run_fuzz.sh FUZZER CORPUS SCRATCH SECONDS [libFuzzer flags...]: the ctest entry of one
# fuzz target (tests/fuzz/CMakeLists.txt). Copies the committed seed corpus CORPUS into
# a fresh SCRATCH/corpus, which the run may grow, runs FUZZER for SECONDS with crash
# inputs saved under SCRATCH/, and exits non-zero when the fuzzer finds anything.
set -eu
fuzzer=$1 corpus=$2 scratch=$3 seconds=$4
shift 4
rm -rf "$scratch"
mkdir -p "$scratch/corpus"
cp "$corpus"/* "$scratch/corpus/"
cd "$scratch"
exec "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$scratch/" "$@" "$scratch/corpus"
