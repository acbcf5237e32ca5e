#!/bin/sh
# run_fuzz.sh FUZZER CORPUS SCRATCH SECONDS [libFuzzer flags...]: one run of one fuzz
# target, the ctest entry's (tests/fuzz/CMakeLists.txt) and deploy/fuzz.sh's. Copies the
# committed seed corpus CORPUS into a fresh SCRATCH/corpus, which the run may grow, runs
# FUZZER for SECONDS with crash inputs saved under SCRATCH/, and exits non-zero when the
# fuzzer finds anything. With LORAD_FUZZ_RUNS=N in the environment it runs for at least
# N executions too, whichever ends later: first -runs=N, then, if time is left, a second
# pass for the rest of SECONDS on the grown corpus (each pass prints its final stats).
set -eu
fuzzer=$1 corpus=$2 scratch=$3 seconds=$4
shift 4
runs=${LORAD_FUZZ_RUNS:-0}
rm -rf "$scratch"
mkdir -p "$scratch/corpus"
cp "$corpus"/* "$scratch/corpus/"
cd "$scratch"

fuzz() {
  "$fuzzer" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$scratch/" "$@" "$scratch/corpus"
}

start=$(date +%s)
if [ "$runs" -gt 0 ]; then
  fuzz -runs="$runs" "$@"
fi
left=$((seconds - ($(date +%s) - start)))
if [ "$left" -gt 0 ]; then
  fuzz -max_total_time="$left" "$@"
fi
